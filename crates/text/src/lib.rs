//! Text for the language model: byte-level BPE tokenizers (trained here or loaded from any
//! `tokenizer.json`), corpora (plain text, JSONL, Parquet, pre-tokenised `.bin` shards) and the
//! rows of `n_ctx` token ids the model trains on (TransformerLens' `tokenize_and_concatenate`).
//! Nothing here downloads anything.

pub mod corpus;
pub mod rows;
pub mod tokenizer;

pub use corpus::{Corpus, read_corpus};
pub use rows::{TokenRows, tokenize_and_concatenate};
pub use tokenizer::TextTokenizer;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Bad content, naming the file and what was expected.
    #[error("{path}: {msg}")]
    Content { path: PathBuf, msg: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl TextError {
    pub(crate) fn content(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        TextError::Content {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TextError::Io {
            path: path.into(),
            source,
        }
    }
}
