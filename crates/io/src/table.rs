//! Append-only CSV tables keyed by step (the run's metrics), crash-safe: each row is written
//! whole and flushed, and on resume the table is cut back to the rows at or before the resumed
//! checkpoint, dropping any partial last line.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::atomic::write_atomic;

pub struct CsvTable {
    path: PathBuf,
    file: File,
    columns: usize,
}

impl CsvTable {
    /// Opens `path` for appending rows with these columns (`step` first). An existing file must
    /// have the same header; its rows with `step <= keep_through` are kept (none when
    /// `keep_through` is `None`), and a torn last line is dropped.
    pub fn open(path: &Path, header: &[String], keep_through: Option<u64>) -> io::Result<Self> {
        let head = header.join(",");
        let mut kept = format!("{head}\n");
        if path.exists() {
            let mut lines = BufReader::new(File::open(path)?).lines();
            match lines.next() {
                Some(Ok(h)) if h == head => {}
                Some(Ok(_)) => {
                    return Err(io::Error::other(format!(
                        "{}: header differs from this run's columns (written by another config?)",
                        path.display()
                    )));
                }
                _ => {}
            }
            for line in lines {
                let line = line?;
                let complete = line.split(',').count() == header.len();
                let step = line.split(',').next().and_then(|s| s.parse::<u64>().ok());
                if let (true, Some(s), Some(k)) = (complete, step, keep_through)
                    && s <= k
                {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
        }
        write_atomic(path, kept.as_bytes())?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(CsvTable {
            path: path.into(),
            file,
            columns: header.len(),
        })
    }

    /// Appends one row (`step`, then values; shortest round-trip formatting) and flushes it.
    pub fn append(&mut self, step: u64, values: &[f64]) -> io::Result<()> {
        assert_eq!(
            values.len() + 1,
            self.columns,
            "row width for {}",
            self.path.display()
        );
        let mut line = step.to_string();
        for v in values {
            line.push(',');
            line.push_str(&format_value(*v));
        }
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }

    /// Makes the rows written so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

/// Reads a table written by `CsvTable`: header and rows.
pub fn read_csv(path: &Path) -> io::Result<(Vec<String>, Vec<Vec<f64>>)> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split(',')
        .map(String::from)
        .collect();
    let rows = lines
        .map(|l| {
            l.split(',')
                .map(|c| c.parse::<f64>().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    Ok((header, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_keeps_rows_through_the_step_and_drops_torn_lines() {
        let dir = std::env::temp_dir().join(format!("sw-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.csv");
        let header = vec!["step".to_string(), "loss".to_string()];
        let mut t = CsvTable::open(&p, &header, None).unwrap();
        for s in 0..5 {
            t.append(s, &[s as f64 * 0.5]).unwrap();
        }
        drop(t);
        // A kill mid-write leaves a torn last line.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"5,2.").unwrap();
        drop(f);
        let mut t = CsvTable::open(&p, &header, Some(2)).unwrap();
        t.append(3, &[0.1]).unwrap();
        let (h, rows) = read_csv(&p).unwrap();
        assert_eq!(h, header);
        assert_eq!(
            rows,
            vec![
                vec![0.0, 0.0],
                vec![1.0, 0.5],
                vec![2.0, 1.0],
                vec![3.0, 0.1]
            ]
        );
        let other = vec!["step".to_string(), "x".to_string()];
        assert!(CsvTable::open(&p, &other, Some(2)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
