//! Parquet copies of a run's CSV tables (`metrics.csv` -> `metrics.parquet`): column `step` as
//! int64, every metric as float64, Snappy-compressed, written atomically. The CSV stays the
//! crash-safe append log; the Parquet file is rewritten from it.

use std::io;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use stagewise_io::atomic::write_atomic;
use stagewise_io::table::read_csv;

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Writes `rows` (first value the step) under `header` (first name `step`) to `path`.
pub fn write_parquet(path: &Path, header: &[String], rows: &[Vec<f64>]) -> io::Result<()> {
    write_atomic(path, &parquet_bytes(header, rows)?)
}

/// The Parquet file of `rows` (first value the step) under `header` (first name `step`).
pub fn parquet_bytes(header: &[String], rows: &[Vec<f64>]) -> io::Result<Vec<u8>> {
    if let Some(r) = rows.iter().find(|r| r.len() != header.len()) {
        return Err(io::Error::other(format!(
            "a row of {} values for {} columns",
            r.len(),
            header.len()
        )));
    }
    let fields: Vec<Field> = header
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Field::new(
                name,
                if i == 0 {
                    DataType::Int64
                } else {
                    DataType::Float64
                },
                false,
            )
        })
        .collect();
    let columns: Vec<ArrayRef> = (0..header.len())
        .map(|i| -> ArrayRef {
            if i == 0 {
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r[0] as i64),
                ))
            } else {
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r[i])))
            }
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(other)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(other)?;
    writer.write(&batch).map_err(other)?;
    writer.close().map_err(other)?;
    Ok(buf)
}

/// Rewrites `<name>.parquet` next to `<name>.csv`.
pub fn csv_to_parquet(csv: &Path) -> io::Result<()> {
    let (header, rows) = read_csv(csv)?;
    write_parquet(&csv.with_extension("parquet"), &header, &rows)
}

/// Reads a table written by `write_parquet`: header and rows (the step as f64).
pub fn read_parquet(path: &Path) -> io::Result<(Vec<String>, Vec<Vec<f64>>)> {
    let file = std::fs::File::open(path)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(other)?
        .build()
        .map_err(other)?;
    let mut header = Vec::new();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(other)?;
        header = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let n = batch.num_rows();
        let mut block = vec![Vec::with_capacity(header.len()); n];
        for (c, col) in batch.columns().iter().enumerate() {
            for (r, row) in block.iter_mut().enumerate() {
                let v = if c == 0 {
                    col.as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| other("step column is not int64"))?
                        .value(r) as f64
                } else {
                    col.as_any()
                        .downcast_ref::<Float64Array>()
                        .ok_or_else(|| other("metric column is not float64"))?
                        .value(r)
                };
                row.push(v);
            }
        }
        rows.extend(block);
    }
    Ok((header, rows))
}

/// A column of a long table: text, integers or floats, each value possibly missing.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Text(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Float(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The Parquet file of named columns (utf8, int64, float64; nullable), Snappy-compressed.
pub fn columns_parquet_bytes(columns: &[(String, Column)]) -> io::Result<Vec<u8>> {
    let rows = columns.first().map_or(0, |c| c.1.len());
    if let Some((name, c)) = columns.iter().find(|c| c.1.len() != rows) {
        return Err(other(format!(
            "column {name} has {} values, not {rows}",
            c.len()
        )));
    }
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, c)| {
            let t = match c {
                Column::Text(_) => DataType::Utf8,
                Column::Int(_) => DataType::Int64,
                Column::Float(_) => DataType::Float64,
            };
            Field::new(name, t, true)
        })
        .collect();
    let arrays: Vec<ArrayRef> = columns
        .iter()
        .map(|(_, c)| -> ArrayRef {
            match c {
                Column::Text(v) => Arc::new(arrow_array::StringArray::from(v.clone())),
                Column::Int(v) => Arc::new(Int64Array::from(v.clone())),
                Column::Float(v) => Arc::new(Float64Array::from(v.clone())),
            }
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(other)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(other)?;
    writer.write(&batch).map_err(other)?;
    writer.close().map_err(other)?;
    Ok(buf)
}

fn downcast<T: 'static>(col: &ArrayRef) -> io::Result<&T> {
    col.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| other("a column's type does not match its schema"))
}

/// Reads the columns of a Parquet file written by [`columns_parquet_bytes`].
pub fn read_columns(path: &Path) -> io::Result<Vec<(String, Column)>> {
    read_columns_from(std::fs::File::open(path)?)
}

/// [`read_columns`] of a Parquet file's bytes (from any storage).
pub fn read_columns_bytes(bytes: Vec<u8>) -> io::Result<Vec<(String, Column)>> {
    read_columns_from(bytes::Bytes::from(bytes))
}

fn read_columns_from<R: parquet::file::reader::ChunkReader + 'static>(
    input: R,
) -> io::Result<Vec<(String, Column)>> {
    use arrow_array::StringArray;
    let reader = ParquetRecordBatchReaderBuilder::try_new(input)
        .map_err(other)?
        .build()
        .map_err(other)?;
    let mut out: Vec<(String, Column)> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(other)?;
        for (i, (f, col)) in batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .enumerate()
        {
            let part = match f.data_type() {
                DataType::Utf8 => Column::Text(
                    downcast::<StringArray>(col)?
                        .iter()
                        .map(|v| v.map(String::from))
                        .collect(),
                ),
                DataType::Int64 => Column::Int(downcast::<Int64Array>(col)?.iter().collect()),
                DataType::Float64 => Column::Float(downcast::<Float64Array>(col)?.iter().collect()),
                t => return Err(other(format!("column {}: unexpected type {t}", f.name()))),
            };
            if out.len() <= i {
                out.push((f.name().clone(), part));
            } else {
                match (&mut out[i].1, part) {
                    (Column::Text(a), Column::Text(b)) => a.extend(b),
                    (Column::Int(a), Column::Int(b)) => a.extend(b),
                    (Column::Float(a), Column::Float(b)) => a.extend(b),
                    _ => return Err(other("column types differ between batches")),
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_names_types_and_values() {
        let dir = std::env::temp_dir().join(format!("sw-parquet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.parquet");
        let header: Vec<String> = ["step", "pretrain/mse", "weight/norm"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rows = vec![
            vec![0.0, 4.317410288551029, 24.9],
            vec![499_999.0, f64::NAN, 1e-300],
        ];
        write_parquet(&p, &header, &rows).unwrap();
        let (h, r) = read_parquet(&p).unwrap();
        assert_eq!(h, header);
        assert_eq!(r[0], rows[0]);
        assert_eq!(r[1][0], 499_999.0);
        assert!(r[1][1].is_nan());
        assert_eq!(r[1][2], 1e-300);
        assert_eq!(&std::fs::read(&p).unwrap()[..4], b"PAR1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn columns_round_trip_with_missing_values() {
        let dir = std::env::temp_dir().join(format!("sw-columns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("long.parquet");
        let cols = vec![
            (
                "run".to_string(),
                Column::Text(vec![Some("a".into()), None]),
            ),
            (
                "step".to_string(),
                Column::Int(vec![Some(3), Some(499_999)]),
            ),
            ("value".to_string(), Column::Float(vec![Some(0.25), None])),
        ];
        std::fs::write(&p, columns_parquet_bytes(&cols).unwrap()).unwrap();
        assert_eq!(read_columns(&p).unwrap(), cols);
        let ragged = vec![
            ("a".to_string(), Column::Int(vec![Some(1)])),
            ("b".to_string(), Column::Int(vec![])),
        ];
        assert!(columns_parquet_bytes(&ragged).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
