//! A Hugging Face `tokenizers` tokenizer with the ids the data pipeline needs (BOS, EOS, PAD):
//! trained here as a byte-level BPE (GPT-2 style, one `<|endoftext|>` special token used as
//! BOS and EOS), or loaded from any `tokenizer.json`.

use std::path::Path;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::TextError;

/// The special token of tokenizers trained here: the document separator, also BOS.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Special-token spellings tried, in order, for BOS and EOS of a loaded tokenizer.
const BOS_NAMES: [&str; 4] = [END_OF_TEXT, "<s>", "[BOS]", "<|begin_of_text|>"];
const EOS_NAMES: [&str; 4] = [END_OF_TEXT, "</s>", "[EOS]", "<|end_of_text|>"];

pub struct TextTokenizer {
    inner: Tokenizer,
    pub bos: u32,
    pub eos: u32,
}

fn tok_err(e: impl std::fmt::Display) -> TextError {
    TextError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Trains a byte-level BPE of `vocab_size` ids (the special token and the 256 byte symbols
    /// included) on `docs`. Deterministic for the same documents.
    pub fn train_bpe<S: AsRef<str> + Send>(
        docs: impl Iterator<Item = S> + Send,
        vocab_size: usize,
    ) -> Result<Self, TextError> {
        if vocab_size < 258 {
            return Err(TextError::Tokenizer(format!(
                "vocab_size {vocab_size}: a byte-level BPE needs at least 258 ids (256 bytes, {END_OF_TEXT}, one merge)"
            )));
        }
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(2)
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut tok = Tokenizer::new(BPE::default());
        tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        tok.with_decoder(Some(ByteLevel::default()));
        tok.train(&mut trainer, docs).map_err(tok_err)?;
        Self::from_tokenizer(tok, Path::new("(trained)"))
    }

    /// Loads a `tokenizer.json` (Hugging Face format). BOS and EOS are its first special
    /// tokens spelled as [`END_OF_TEXT`], `<s>`/`</s>`, `[BOS]`/`[EOS]` or Llama 3's.
    pub fn load(path: &Path) -> Result<Self, TextError> {
        let bytes = std::fs::read(path).map_err(|e| TextError::io(path, e))?;
        Self::from_json(&bytes, path)
    }

    /// As [`Self::load`], from the file's bytes; `path` names it in errors.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Self, TextError> {
        let tok = Tokenizer::from_bytes(bytes)
            .map_err(|e| TextError::content(path, format!("not a tokenizer.json: {e}")))?;
        Self::from_tokenizer(tok, path)
    }

    /// The `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String, TextError> {
        self.inner.to_string(false).map_err(tok_err)
    }

    fn from_tokenizer(inner: Tokenizer, path: &Path) -> Result<Self, TextError> {
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let (Some(bos), Some(eos)) = (find(&BOS_NAMES), find(&EOS_NAMES)) else {
            return Err(TextError::content(
                path,
                format!(
                    "the tokenizer has no BOS/EOS special token (looked for {BOS_NAMES:?} and {EOS_NAMES:?})"
                ),
            ));
        };
        Ok(TextTokenizer { inner, bos, eos })
    }

    /// Writes `tokenizer.json` (through a temporary file, so that it is never half-written).
    pub fn save(&self, path: &Path) -> Result<(), TextError> {
        let json = self.to_json()?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(|e| TextError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| TextError::io(path, e))
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, with no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TextError> {
        Ok(self
            .inner
            .encode_fast(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, TextError> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// The text of the EOS token (the separator `tokenize_and_concatenate` joins with).
    pub fn eos_text(&self) -> String {
        self.inner
            .id_to_token(self.eos)
            .unwrap_or_else(|| END_OF_TEXT.into())
    }
}
