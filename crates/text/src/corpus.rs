//! Reading a corpus: plain text (a file is a document), a folder of such files (its `.txt`,
//! `.jsonl` and `.parquet` files in name order),
//! JSONL (one document per line, field `text` or the reference's `contents`, or a named one),
//! Parquet as Hugging Face datasets write it (a text column, or a pre-tokenised `tokens` column
//! of id lists), and pre-tokenised `.bin` shards (memory-mapped token streams).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt16Type, UInt32Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::TextError;
use crate::rows::TokenShard;

/// A corpus as read from disk.
pub enum Corpus {
    /// Documents of text, to be tokenised.
    Documents(Vec<String>),
    /// Rows of token ids already cut to a length (the reference's `timaeus/*-tokens` datasets).
    TokenRows { ids: Vec<u32>, row_len: usize },
    /// A stream of token ids (documents separated by EOS), memory-mapped.
    Shard(TokenShard),
}

/// Text fields a JSONL line or a Parquet file is read from when none is named.
pub const TEXT_FIELDS: [&str; 2] = ["text", "contents"];

/// Reads the corpus at `path` by its extension: `.txt`, `.jsonl` (or a folder of these and Parquet files),
/// `.parquet`, `.bin`. `field` names the text (or `tokens`) column; by default `text`, then
/// `contents`, and for Parquet a `tokens` column if neither exists.
pub fn read_corpus(path: &Path, field: Option<&str>) -> Result<Corpus, TextError> {
    let corpus = if path.is_dir() {
        // Every .txt, .jsonl and .parquet file of the folder, in name order (a Hugging Face
        // dataset's `data/train-0000N-of-0000M.parquet` files, or a folder of texts).
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| TextError::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "txt" || x == "jsonl" || x == "parquet")
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(TextError::content(
                path,
                "the folder has no .txt, .jsonl or .parquet files",
            ));
        }
        let mut docs = Vec::new();
        let mut rows: Option<(Vec<u32>, usize)> = None;
        for f in &files {
            match read_corpus(f, field) {
                Ok(Corpus::Documents(d)) => docs.extend(d),
                Ok(Corpus::TokenRows { ids, row_len }) => {
                    let (all, len) = rows.get_or_insert((Vec::new(), row_len));
                    if *len != row_len {
                        return Err(TextError::content(
                            f,
                            format!("rows of {row_len} tokens; earlier files have {len}"),
                        ));
                    }
                    all.extend(ids);
                }
                Ok(Corpus::Shard(_)) => unreachable!("no .bin files are listed"),
                // An empty file among others is skipped; every other error stops.
                Err(TextError::Content { msg, .. }) if msg.contains("is empty") => {}
                Err(e) => return Err(e),
            }
        }
        match rows {
            Some(_) if !docs.is_empty() => {
                return Err(TextError::content(
                    path,
                    "the folder mixes text and pre-tokenised files",
                ));
            }
            Some((ids, row_len)) => Corpus::TokenRows { ids, row_len },
            None => Corpus::Documents(docs),
        }
    } else {
        match path.extension().and_then(|e| e.to_str()) {
            Some("txt") | Some("text") | Some("md") => Corpus::Documents(vec![read_text(path)?]),
            Some("jsonl") => Corpus::Documents(read_jsonl(path, field)?),
            Some("parquet") => read_parquet(path, field)?,
            Some("bin") => Corpus::Shard(TokenShard::open(path)?),
            _ => {
                return Err(TextError::content(
                    path,
                    "unknown corpus format: expected a .txt, .jsonl, .parquet or .bin file, or a folder of .txt files",
                ));
            }
        }
    };
    let empty = match &corpus {
        Corpus::Documents(d) => d.iter().all(|d| d.trim().is_empty()),
        Corpus::TokenRows { ids, .. } => ids.is_empty(),
        Corpus::Shard(s) => s.len() == 0,
    };
    if empty {
        return Err(TextError::content(
            path,
            "the corpus is empty (no text or tokens)",
        ));
    }
    Ok(corpus)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, TextError> {
    std::fs::read(path).map_err(|e| TextError::io(path, e))
}

fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String, TextError> {
    String::from_utf8(bytes).map_err(|e| {
        TextError::content(
            path,
            format!(
                "not UTF-8 text: invalid byte sequence at byte {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

fn read_text(path: &Path) -> Result<String, TextError> {
    utf8(path, read_bytes(path)?)
}

fn read_jsonl(path: &Path, field: Option<&str>) -> Result<Vec<String>, TextError> {
    let text = read_text(path)?;
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| TextError::content(path, format!("line {}: not JSON: {e}", i + 1)))?;
        let names: Vec<&str> = field.map_or(TEXT_FIELDS.to_vec(), |f| vec![f]);
        let s = names
            .iter()
            .find_map(|n| v.get(n).and_then(|x| x.as_str()))
            .ok_or_else(|| {
                TextError::content(
                    path,
                    format!("line {}: no string field {}", i + 1, names.join(" or ")),
                )
            })?;
        docs.push(s.to_string());
    }
    Ok(docs)
}

fn read_parquet(path: &Path, field: Option<&str>) -> Result<Corpus, TextError> {
    let file = File::open(path).map_err(|e| TextError::io(path, e))?;
    let perr = |e: parquet::errors::ParquetError| TextError::content(path, format!("Parquet: {e}"));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?;
    let schema = builder.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let wanted: Vec<&str> = field.map_or(vec!["text", "contents", "tokens"], |f| vec![f]);
    let Some(col) = wanted
        .iter()
        .find_map(|w| names.iter().position(|n| n == w))
    else {
        return Err(TextError::content(
            path,
            format!(
                "no column {} (columns: {})",
                wanted.join(" or "),
                names.join(", ")
            ),
        ));
    };
    let name = names[col].to_string();
    let dtype = schema.field(col).data_type().clone();
    let mask = ProjectionMask::roots(builder.parquet_schema(), [col]);
    let reader = builder.with_projection(mask).build().map_err(perr)?;
    let mut docs = Vec::new();
    let mut ids = Vec::new();
    let mut row_len = None;
    for batch in reader {
        let batch = batch.map_err(|e| TextError::content(path, format!("Parquet: {e}")))?;
        let a = batch.column(0);
        match &dtype {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                let strings = arrow_cast_strings(a);
                docs.extend(strings.into_iter().flatten());
            }
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
                for i in 0..a.len() {
                    let row = list_row(path, &name, a, i)?;
                    if *row_len.get_or_insert(row.len()) != row.len() {
                        return Err(TextError::content(
                            path,
                            format!(
                                "column `{name}`: row {} has {} tokens, earlier rows {}",
                                ids.len() / row_len.unwrap_or(1),
                                row.len(),
                                row_len.unwrap_or(0)
                            ),
                        ));
                    }
                    ids.extend(row);
                }
            }
            other => {
                return Err(TextError::content(
                    path,
                    format!(
                        "column `{name}` has type {other}; expected strings or lists of token ids"
                    ),
                ));
            }
        }
    }
    Ok(match row_len {
        Some(row_len) => Corpus::TokenRows { ids, row_len },
        None => Corpus::Documents(docs),
    })
}

fn arrow_cast_strings(a: &ArrayRef) -> Vec<Option<String>> {
    match a.data_type() {
        DataType::Utf8 => a
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(String::from))
            .collect(),
        DataType::LargeUtf8 => a
            .as_string::<i64>()
            .iter()
            .map(|s| s.map(String::from))
            .collect(),
        _ => a
            .as_string_view()
            .iter()
            .map(|s| s.map(String::from))
            .collect(),
    }
}

/// Row `i` of a list column of integer token ids.
fn list_row(path: &Path, name: &str, a: &ArrayRef, i: usize) -> Result<Vec<u32>, TextError> {
    let values: ArrayRef = match a.data_type() {
        DataType::List(_) => a.as_list::<i32>().value(i),
        DataType::LargeList(_) => a.as_list::<i64>().value(i),
        _ => a.as_fixed_size_list().value(i),
    };
    let bad = |v: i64| {
        TextError::content(
            path,
            format!("column `{name}`: token id {v} in row {i} is not a valid id"),
        )
    };
    let conv = |v: i64| u32::try_from(v).map_err(|_| bad(v));
    match values.data_type() {
        DataType::Int64 => values
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|v| conv(*v))
            .collect(),
        DataType::Int32 => values
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .map(|v| conv(*v as i64))
            .collect(),
        DataType::UInt32 => Ok(values.as_primitive::<UInt32Type>().values().to_vec()),
        DataType::UInt16 => Ok(values
            .as_primitive::<UInt16Type>()
            .values()
            .iter()
            .map(|v| *v as u32)
            .collect()),
        other => Err(TextError::content(
            path,
            format!("column `{name}` holds lists of {other}; expected integer token ids"),
        )),
    }
}
