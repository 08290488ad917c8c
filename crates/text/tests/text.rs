//! Tokenizer training and loading, corpus readers, and the rows the model sees.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, UInt32Builder};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use stagewise_text::corpus::{Corpus, read_corpus};
use stagewise_text::rows::{TokenRows, tokenize_and_concatenate};
use stagewise_text::tokenizer::{END_OF_TEXT, TextTokenizer};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stagewise-text-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small synthetic English-like corpus: sentences from a fixed grammar.
fn synthetic_docs(n: usize) -> Vec<String> {
    let subj = ["the cat", "a dog", "the old king", "my friend", "the queen"];
    let verb = ["sees", "loves", "follows", "greets", "fears"];
    let obj = [
        "the moon",
        "a bird",
        "the river",
        "her brother",
        "the crown",
    ];
    (0..n)
        .map(|d| {
            (0..6)
                .map(|s| {
                    let k = d * 7 + s * 3;
                    format!(
                        "{} {} {}.",
                        subj[k % 5],
                        verb[(k / 5) % 5],
                        obj[(k / 25 + s) % 5]
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn a_trained_byte_level_bpe_round_trips_and_is_deterministic() {
    let docs = synthetic_docs(200);
    let tok = TextTokenizer::train_bpe(docs.iter(), 300).unwrap();
    assert!(
        tok.vocab_size() <= 300 && tok.vocab_size() > 257,
        "{}",
        tok.vocab_size()
    );
    assert_eq!(tok.bos, tok.eos);
    let text = "the old king greets her brother. Ünïcode and unseen words: zebra!";
    let ids = tok.encode(text).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // Merges learned: a frequent phrase takes fewer ids than bytes.
    assert!(tok.encode("the old king").unwrap().len() < "the old king".len());
    // The separator in text is the special token.
    let ids = tok.encode(&format!("a dog{END_OF_TEXT}the cat")).unwrap();
    assert!(ids.contains(&tok.eos));
    let again = TextTokenizer::train_bpe(docs.iter(), 300).unwrap();
    assert_eq!(again.encode(text).unwrap(), tok.encode(text).unwrap());
    let dir = scratch("tok");
    let path = dir.join("tokenizer.json");
    tok.save(&path).unwrap();
    let loaded = TextTokenizer::load(&path).unwrap();
    assert_eq!(loaded.encode(text).unwrap(), tok.encode(text).unwrap());
    assert_eq!(
        (loaded.bos, loaded.vocab_size()),
        (tok.bos, tok.vocab_size())
    );
    std::fs::write(&path, "{not json").unwrap();
    let err = TextTokenizer::load(&path).err().unwrap().to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("not a tokenizer.json"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn rows_are_bos_then_the_joined_documents_cut_to_n_ctx() {
    let docs = synthetic_docs(30);
    let tok = TextTokenizer::train_bpe(docs.iter(), 300).unwrap();
    let n_ctx = 16;
    let rows = tokenize_and_concatenate(&docs, &tok, n_ctx).unwrap();
    assert_eq!(rows.len() % n_ctx, 0);
    let nrows = rows.len() / n_ctx;
    assert!(nrows > 10);
    assert!(rows.chunks(n_ctx).all(|r| r[0] == tok.bos));
    // The rows' bodies are a prefix of the joined text's ids, tokenised in 20 slices.
    let full = docs.join(END_OF_TEXT);
    let chars: Vec<char> = full.chars().collect();
    let len = (chars.len() - 1) / 20 + 1;
    let mut ids = Vec::new();
    for c in chars.chunks(len) {
        ids.extend(tok.encode(&c.iter().collect::<String>()).unwrap());
    }
    let body: Vec<u32> = rows.chunks(n_ctx).flat_map(|r| r[1..].to_vec()).collect();
    assert_eq!(body[..], ids[..body.len()]);
    assert!(
        ids.len() - body.len() < n_ctx - 1,
        "only the remainder is dropped"
    );
    // EOS separates the documents.
    assert_eq!(
        body.iter().filter(|i| **i == tok.eos).count(),
        ids[..body.len()].iter().filter(|i| **i == tok.eos).count()
    );
    assert!(body.contains(&tok.eos));
}

fn write_parquet(path: &Path, name: &str, col: ArrayRef) {
    let batch = RecordBatch::try_from_iter([(name, col)]).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn every_corpus_format_reads_and_bad_input_names_the_file() {
    let dir = scratch("corpus");
    // JSONL with the reference's `contents` field.
    let jsonl = dir.join("train.jsonl");
    std::fs::write(
        &jsonl,
        "{\"contents\": \"first doc\"}\n\n{\"contents\": \"second\"}\n",
    )
    .unwrap();
    let Corpus::Documents(d) = read_corpus(&jsonl, None).unwrap() else {
        panic!("documents expected")
    };
    assert_eq!(d, ["first doc", "second"]);
    let err = read_corpus(&jsonl, Some("body")).err().unwrap().to_string();
    assert!(
        err.contains("train.jsonl") && err.contains("line 1: no string field body"),
        "{err}"
    );
    // Not UTF-8.
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, b"abc\xff\xfe").unwrap();
    let err = read_corpus(&bad, None).err().unwrap().to_string();
    assert!(
        err.contains("bad.txt") && err.contains("not UTF-8") && err.contains("byte 3"),
        "{err}"
    );
    // Empty.
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let err = read_corpus(&empty, None).err().unwrap().to_string();
    assert!(err.contains("empty.txt") && err.contains("empty"), "{err}");
    // A folder of .txt files, in name order.
    let folder = dir.join("texts");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("b.txt"), "second").unwrap();
    std::fs::write(folder.join("a.txt"), "first").unwrap();
    let Corpus::Documents(d) = read_corpus(&folder, None).unwrap() else {
        panic!()
    };
    assert_eq!(d, ["first", "second"]);
    // Parquet: a text column, then pre-tokenised rows.
    let pq = dir.join("text.parquet");
    write_parquet(&pq, "text", Arc::new(StringArray::from(vec!["one", "two"])));
    let Corpus::Documents(d) = read_corpus(&pq, None).unwrap() else {
        panic!()
    };
    assert_eq!(d, ["one", "two"]);
    let err = read_corpus(&pq, Some("contents"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("text.parquet") && err.contains("no column contents (columns: text)"),
        "{err}"
    );
    let tq = dir.join("tokens.parquet");
    let mut lb = ListBuilder::new(UInt32Builder::new());
    for r in 0..3u32 {
        for j in 0..6 {
            lb.values().append_value(r * 10 + j);
        }
        lb.append(true);
    }
    write_parquet(&tq, "tokens", Arc::new(lb.finish()));
    let corpus = read_corpus(&tq, None).unwrap();
    let rows = TokenRows::from_corpus(corpus, None, None, 4, &tq).unwrap();
    assert_eq!(rows.len(), 3);
    let mut r = [0u32; 4];
    rows.row_into(2, &mut r);
    assert_eq!(r, [20, 21, 22, 23]);
    let err = rows.check_ids(22, &tq).unwrap_err().to_string();
    assert!(
        err.contains("token id 22 (row 2, position 2)") && err.contains("vocabulary of 22"),
        "{err}"
    );
    let corpus = read_corpus(&tq, None).unwrap();
    let err = TokenRows::from_corpus(corpus, None, None, 8, &tq)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("rows have 6 tokens"), "{err}");
    // Token shards: nanoGPT's raw uint16 and llm.c's header format.
    let raw = dir.join("raw.bin");
    let ids: Vec<u16> = (0..10).collect();
    std::fs::write(
        &raw,
        ids.iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let rows =
        TokenRows::from_corpus(read_corpus(&raw, None).unwrap(), None, Some(99), 4, &raw).unwrap();
    assert_eq!(rows.len(), 3);
    rows.row_into(1, &mut r);
    assert_eq!(r, [99, 3, 4, 5]);
    let llmc = dir.join("llmc.bin");
    let mut bytes = vec![0u8; 1024];
    bytes[..4].copy_from_slice(&20240520i32.to_le_bytes());
    bytes[4..8].copy_from_slice(&2i32.to_le_bytes());
    bytes[8..12].copy_from_slice(&5i32.to_le_bytes());
    for v in [70_000u32, 1, 2, 3, 4] {
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(&llmc, &bytes).unwrap();
    let rows =
        TokenRows::from_corpus(read_corpus(&llmc, None).unwrap(), None, Some(0), 3, &llmc).unwrap();
    rows.row_into(0, &mut r);
    assert_eq!(r[..3], [0, 70_000, 1]);
    bytes.truncate(1030);
    std::fs::write(&llmc, &bytes).unwrap();
    let err = read_corpus(&llmc, None).err().unwrap().to_string();
    assert!(
        err.contains("llmc.bin") && err.contains("truncated"),
        "{err}"
    );
    let err = read_corpus(&dir.join("x.csv"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown corpus format"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
