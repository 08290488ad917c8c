//! Rows of `n_ctx` token ids, BOS first, as TransformerLens' `tokenize_and_concatenate` makes
//! them, and the memory-mapped token shards they can also be cut from.

use std::path::{Path, PathBuf};

use crate::corpus::Corpus;
use crate::{TextError, TextTokenizer};

/// Documents per tokenisation batch (`datasets.map`'s default `batch_size`).
pub const MAP_BATCH: usize = 1000;
/// Character chunks each batch's joined text is cut into before tokenising (TransformerLens).
pub const CHUNKS: usize = 20;

/// TransformerLens' `tokenize_and_concatenate(..., add_bos_token=True)` for one process: per
/// batch of [`MAP_BATCH`] documents, the documents are joined with the EOS text, the joined
/// text is cut into [`CHUNKS`] equal character slices (which may split a word; the reference
/// does the same), each slice is tokenised without special tokens, the ids are concatenated,
/// cut into rows of `n_ctx - 1` (the batch's remainder is dropped) and BOS is put in front of
/// each row. Returns the rows flat, `[rows, n_ctx]`.
pub fn tokenize_and_concatenate<S: AsRef<str>>(
    docs: &[S],
    tok: &TextTokenizer,
    n_ctx: usize,
) -> Result<Vec<u32>, TextError> {
    let seq = n_ctx - 1;
    let sep = tok.eos_text();
    let mut rows = Vec::new();
    for batch in docs.chunks(MAP_BATCH) {
        let full: Vec<&str> = batch.iter().map(|d| d.as_ref()).collect();
        let full = full.join(&sep);
        if full.trim().is_empty() {
            continue;
        }
        let chars: Vec<(usize, char)> = full.char_indices().collect();
        let chunk_len = (chars.len() - 1) / CHUNKS + 1;
        let mut ids = Vec::new();
        for c in 0..CHUNKS {
            let (a, b) = (c * chunk_len, ((c + 1) * chunk_len).min(chars.len()));
            if a >= b {
                continue;
            }
            let start = chars[a].0;
            let end = chars.get(b).map_or(full.len(), |x| x.0);
            ids.extend(tok.encode(&full[start..end])?);
        }
        for row in ids.chunks_exact(seq) {
            rows.push(tok.bos);
            rows.extend_from_slice(row);
        }
    }
    Ok(rows)
}

/// A pre-tokenised stream of token ids, memory-mapped: llm.c's `.bin` (a 256 x int32 header
/// with magic 20240520; version 1 holds uint16 ids, version 2 uint32) or nanoGPT's raw uint16.
pub struct TokenShard {
    path: PathBuf,
    map: memmap2::Mmap,
    offset: usize,
    width: usize,
    len: usize,
}

impl TokenShard {
    pub fn open(path: &Path) -> Result<Self, TextError> {
        let file = std::fs::File::open(path).map_err(|e| TextError::io(path, e))?;
        // SAFETY: the file is opened read-only; a concurrent writer would be a user error that
        // can only change which ids are read, never memory safety of the u8 view.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| TextError::io(path, e))?;
        let word = |i: usize| {
            map.get(4 * i..4 * i + 4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
        };
        let (offset, width, len) = if word(0) == Some(20240520) {
            let width = match word(1) {
                Some(1) => 2,
                Some(2) => 4,
                v => {
                    return Err(TextError::content(
                        path,
                        format!("llm.c token file of unknown version {v:?} (expected 1 or 2)"),
                    ));
                }
            };
            let n = word(2).unwrap_or(-1);
            let need = 1024 + width * n.max(0) as usize;
            if n < 0 || map.len() < need {
                return Err(TextError::content(
                    path,
                    format!(
                        "llm.c header says {n} tokens but the file has {} bytes (truncated?)",
                        map.len()
                    ),
                ));
            }
            (1024, width, n as usize)
        } else {
            if map.len() % 2 != 0 {
                return Err(TextError::content(
                    path,
                    "a raw uint16 token file must have an even number of bytes",
                ));
            }
            (0, 2, map.len() / 2)
        };
        Ok(TokenShard {
            path: path.into(),
            map,
            offset,
            width,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token `i`.
    pub fn get(&self, i: usize) -> u32 {
        let o = self.offset + i * self.width;
        let b = &self.map[o..o + self.width];
        if self.width == 2 {
            u16::from_le_bytes([b[0], b[1]]) as u32
        } else {
            u32::from_le_bytes(b.try_into().unwrap())
        }
    }
}

/// The rows a language model trains or evaluates on.
pub enum TokenRows {
    /// Rows held in memory, `[rows, n_ctx]`.
    Owned { ids: Vec<u32>, n_ctx: usize },
    /// Row `i` is BOS then tokens `[i*(n_ctx-1), (i+1)*(n_ctx-1))` of the shard.
    Shard {
        shard: TokenShard,
        n_ctx: usize,
        bos: u32,
    },
}

impl TokenRows {
    /// Rows of `n_ctx` ids from a corpus: documents are tokenised with `tok` by
    /// [`tokenize_and_concatenate`]; pre-tokenised rows longer than `n_ctx` keep their first
    /// `n_ctx` ids; a shard is cut into rows with `tok`'s BOS (or `bos`) in front.
    pub fn from_corpus(
        corpus: Corpus,
        tok: Option<&TextTokenizer>,
        bos: Option<u32>,
        n_ctx: usize,
        path: &Path,
    ) -> Result<Self, TextError> {
        let rows = match corpus {
            Corpus::Documents(docs) => {
                let tok =
                    tok.ok_or_else(|| TextError::content(path, "a text corpus needs a tokenizer"))?;
                TokenRows::Owned {
                    ids: tokenize_and_concatenate(&docs, tok, n_ctx)?,
                    n_ctx,
                }
            }
            Corpus::TokenRows { ids, row_len } => {
                if row_len < n_ctx {
                    return Err(TextError::content(
                        path,
                        format!(
                            "its rows have {row_len} tokens; n_ctx = {n_ctx} needs at least that many"
                        ),
                    ));
                }
                let ids = ids
                    .chunks_exact(row_len)
                    .flat_map(|r| r[..n_ctx].iter().copied())
                    .collect();
                TokenRows::Owned { ids, n_ctx }
            }
            Corpus::Shard(shard) => {
                let bos = tok.map(|t| t.bos).or(bos).ok_or_else(|| {
                    TextError::content(
                        path,
                        "a token shard needs the BOS id (a tokenizer or --bos)",
                    )
                })?;
                TokenRows::Shard { shard, n_ctx, bos }
            }
        };
        if rows.is_empty() {
            return Err(TextError::content(
                path,
                format!("the corpus holds fewer tokens than one row of n_ctx = {n_ctx}"),
            ));
        }
        Ok(rows)
    }

    pub fn n_ctx(&self) -> usize {
        match self {
            TokenRows::Owned { n_ctx, .. } | TokenRows::Shard { n_ctx, .. } => *n_ctx,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            TokenRows::Owned { ids, n_ctx } => ids.len() / n_ctx,
            TokenRows::Shard { shard, n_ctx, .. } => shard.len() / (n_ctx - 1),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies row `i` into `out[..n_ctx]`.
    pub fn row_into(&self, i: usize, out: &mut [u32]) {
        match self {
            TokenRows::Owned { ids, n_ctx } => {
                out[..*n_ctx].copy_from_slice(&ids[i * n_ctx..(i + 1) * n_ctx])
            }
            TokenRows::Shard { shard, n_ctx, bos } => {
                out[0] = *bos;
                let s = i * (n_ctx - 1);
                for (j, o) in out[1..*n_ctx].iter_mut().enumerate() {
                    *o = shard.get(s + j);
                }
            }
        }
    }

    /// An error naming the row, position and id of the first id `>= d_vocab`.
    pub fn check_ids(&self, d_vocab: usize, path: &Path) -> Result<(), TextError> {
        let mut row = vec![0u32; self.n_ctx()];
        for r in 0..self.len() {
            self.row_into(r, &mut row);
            if let Some((j, id)) = row
                .iter()
                .enumerate()
                .find(|(_, id)| **id as usize >= d_vocab)
            {
                return Err(TextError::content(
                    path,
                    format!(
                        "token id {id} (row {r}, position {j}) is beyond the model's vocabulary of {d_vocab}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl stagewise_models::language::RowSource for TokenRows {
    fn len(&self) -> usize {
        TokenRows::len(self)
    }
    fn row_into(&self, i: usize, out: &mut [u32]) {
        TokenRows::row_into(self, i, out)
    }
}
