//! Append-only CSV tables keyed by step (the run's metrics), crash-safe: each row is appended
//! whole, and on resume the table is cut back to the rows at or before the resumed checkpoint,
//! dropping any partial last line. Readers parse strictly: a ragged row or a cell that is not a
//! number is an error naming the table, the line and the column.

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::storage::Storage;

/// An append-only table in a [`Storage`].
pub struct CsvTable {
    storage: Arc<dyn Storage>,
    key: String,
    columns: usize,
    torn: Option<String>,
}

impl CsvTable {
    /// Opens `key` for appending rows with these columns (`step` first). An existing table must
    /// have the same header; its rows with `step <= keep_through` are kept (none when
    /// `keep_through` is `None`), and a torn last line is dropped.
    pub fn open(
        storage: Arc<dyn Storage>,
        key: &str,
        header: &[String],
        keep_through: Option<u64>,
    ) -> io::Result<Self> {
        let head = header.join(",");
        let mut kept = format!("{head}\n");
        let mut torn = None;
        if let Some(bytes) = storage.get(key)?.filter(|b| !b.is_empty()) {
            let text = String::from_utf8_lossy(&bytes);
            match text.lines().next() {
                Some(h) if h == head => {}
                _ => {
                    return Err(io::Error::other(format!(
                        "{}: header differs from this run's columns (written by another config?)",
                        storage.describe(key)
                    )));
                }
            }
            // Every whole row must parse: damage is an error, not a silently dropped row.
            Table::parse_appended(&bytes, &storage.describe(key))?;
            if !text.ends_with('\n') {
                torn = text.rsplit('\n').next().map(String::from);
            }
            for line in whole_lines(&text).skip(1) {
                let step = line.split(',').next().and_then(|s| s.parse::<u64>().ok());
                if let (Some(s), Some(k)) = (step, keep_through)
                    && s <= k
                {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
        storage.put(key, kept.as_bytes())?;
        Ok(CsvTable {
            storage,
            key: key.into(),
            columns: header.len(),
            torn,
        })
    }

    /// The last line that `open` dropped because it had no line end (a write cut by a kill).
    pub fn torn_line(&self) -> Option<&str> {
        self.torn.as_deref()
    }

    /// Where the table is, for messages.
    pub fn location(&self) -> String {
        self.storage.describe(&self.key)
    }

    /// Appends one row (`step`, then values; shortest round-trip formatting).
    pub fn append(&mut self, step: u64, values: &[f64]) -> io::Result<()> {
        if values.len() + 1 != self.columns {
            return Err(io::Error::other(format!(
                "{}: a row of {} values for {} columns",
                self.storage.describe(&self.key),
                values.len() + 1,
                self.columns
            )));
        }
        let mut line = step.to_string();
        for v in values {
            line.push(',');
            line.push_str(&format_value(*v));
        }
        line.push('\n');
        self.storage.append(&self.key, line.as_bytes())
    }

    /// Makes the rows written so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.storage.sync(&self.key)
    }
}

pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{v:?}")
    }
}

/// The lines of `text` that end with a newline (an unterminated last line is a torn write).
fn whole_lines(text: &str) -> impl Iterator<Item = &str> {
    let end = text.rfind('\n').map_or(0, |i| i + 1);
    text[..end].lines()
}

/// Reads a table written by `CsvTable` leniently (cells that are not numbers become NaN):
/// header and rows.
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

/// A numeric table: a header and rows of the same width.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<f64>>,
}

impl Table {
    /// Parses CSV text strictly: every row as wide as the header, every cell a number (`NaN`,
    /// `inf` and `-inf` included). `what` names the table in errors.
    pub fn parse(bytes: &[u8], what: &str) -> io::Result<Table> {
        let bad =
            |msg: String| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {msg}"));
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        if !text.is_empty() && !text.ends_with('\n') {
            // Every row is written with its line end: a file without one was cut short, and
            // its last number may be a prefix of the real one.
            return Err(bad(format!(
                "the last line (line {}) has no line end: the file was cut short",
                text.lines().count()
            )));
        }
        let mut lines = text.lines();
        let header: Vec<String> = match lines.next() {
            Some(h) if !h.trim().is_empty() => h.split(',').map(String::from).collect(),
            _ => return Err(bad("empty (no header line)".into())),
        };
        let mut rows = Vec::new();
        for (i, line) in lines.enumerate() {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != header.len() {
                return Err(bad(format!(
                    "line {} has {} fields, the header {} (a torn or edited line?)",
                    i + 2,
                    cells.len(),
                    header.len()
                )));
            }
            let row = cells
                .iter()
                .zip(&header)
                .map(|(c, h)| {
                    c.trim().parse::<f64>().map_err(|_| {
                        bad(format!("line {}, column {h}: {c:?} is not a number", i + 2))
                    })
                })
                .collect::<io::Result<Vec<f64>>>()?;
            rows.push(row);
        }
        Ok(Table { header, rows })
    }

    /// Parses a table written by appending rows: a last line without its newline (a write
    /// cut off by a kill) is dropped; everything before it is parsed strictly.
    pub fn parse_appended(bytes: &[u8], what: &str) -> io::Result<Table> {
        let whole = match bytes.iter().rposition(|b| *b == b'\n') {
            Some(i) => &bytes[..=i],
            None => bytes,
        };
        Table::parse(whole, what)
    }

    /// For a table with one row per step (`step` first): an error naming the table and the
    /// line where a step appears a second time.
    pub fn check_unique_steps(&self, what: &str) -> io::Result<()> {
        let mut seen = std::collections::HashMap::new();
        for (i, row) in self.rows.iter().enumerate() {
            if let Some(first) = seen.insert(row[0].to_bits(), i) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{what}: line {}: step {} appears again (first on line {})",
                        i + 2,
                        row[0],
                        first + 2
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Index of a column.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// A column's values, or `None` when there is no such column.
    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let i = self.position(name)?;
        Some(self.rows.iter().map(|r| r[i]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalFs;

    #[test]
    fn reopening_keeps_rows_through_the_step_and_drops_torn_lines() {
        let dir = std::env::temp_dir().join(format!("sw-table-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s: Arc<dyn Storage> = Arc::new(LocalFs::new(&dir));
        let header = vec!["step".to_string(), "loss".to_string()];
        let mut t = CsvTable::open(s.clone(), "m.csv", &header, None).unwrap();
        for step in 0..5 {
            t.append(step, &[step as f64 * 0.5]).unwrap();
        }
        assert!(t.append(5, &[1.0, 2.0]).is_err());
        drop(t);
        // A kill mid-write leaves a torn last line.
        s.append("m.csv", b"5,2.").unwrap();
        let mut t = CsvTable::open(s.clone(), "m.csv", &header, Some(2)).unwrap();
        assert_eq!(t.torn_line(), Some("5,2."));
        t.append(3, &[0.1]).unwrap();
        let (h, rows) = read_csv(&dir.join("m.csv")).unwrap();
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
        // A damaged whole row is an error naming the file, not a dropped row.
        s.append("m.csv", b"4,x\n").unwrap();
        let e = CsvTable::open(s.clone(), "m.csv", &header, Some(9))
            .err()
            .unwrap();
        assert!(e.to_string().contains("m.csv: line 6, column loss"), "{e}");
        let t = Table::parse_appended(b"step,a\n1,2\n3,", "t.csv").unwrap();
        assert_eq!(t.rows, vec![vec![1.0, 2.0]]);
        let other = vec!["step".to_string(), "x".to_string()];
        assert!(CsvTable::open(s.clone(), "m.csv", &other, Some(2)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn strict_parsing_names_the_line_and_column() {
        let t = Table::parse(b"step,a\n1,NaN\n2,-inf\n3,0.5\n", "t.csv").unwrap();
        assert_eq!(t.column("step").unwrap(), vec![1.0, 2.0, 3.0]);
        assert!(t.column("a").unwrap()[0].is_nan());
        let e = Table::parse(b"step,a\n1,2\n3\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.csv: line 3 has 1 fields"), "{e}");
        // `3,2` cut from `3,25`: a whole-looking row, but no line end.
        let e = Table::parse(b"step,a\n1,2\n3,2", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3) has no line end"), "{e}");
        let e = Table::parse(b"step,a\n1,x\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, column a: \"x\""), "{e}");
        assert!(Table::parse(b"", "t.csv").is_err());
        let dup = Table::parse(b"step,a\n1,2\n2,3\n1,4\n", "t.csv").unwrap();
        let e = dup.check_unique_steps("t.csv").unwrap_err().to_string();
        assert!(
            e.contains("t.csv: line 4: step 1 appears again (first on line 2)"),
            "{e}"
        );
        t.check_unique_steps("t.csv").unwrap();
        assert!(Table::parse(b"step,a\n\xff\n", "t.csv").is_err());
    }
}
