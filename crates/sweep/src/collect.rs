//! Every run under a root in one long table for pandas / polars: one row per (run, table,
//! step, metric) with its value, and the run's config (and an LLC sweep's sampler config) as
//! columns, so that a sweep's results group by any parameter.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde_json::Value;
use stagewise_io::table::Table;
use stagewise_pipeline::{Folder, RunDir};
use stagewise_tables::Column;

/// The long table and what went into it.
pub struct Collected {
    pub columns: Vec<(String, Column)>,
    pub runs: usize,
    pub rows: usize,
}

struct Long {
    run: Vec<Option<String>>,
    table: Vec<Option<String>>,
    step: Vec<Option<i64>>,
    metric: Vec<Option<String>>,
    value: Vec<Option<f64>>,
    /// Per row, the parameters in effect (shared maps: one per run or sampler).
    params: Vec<std::rc::Rc<BTreeMap<String, Value>>>,
}

impl Long {
    fn add(
        &mut self,
        run: &str,
        name: &str,
        t: &Table,
        params: &std::rc::Rc<BTreeMap<String, Value>>,
    ) {
        for row in &t.rows {
            for (c, metric) in t.header.iter().enumerate().skip(1) {
                self.run.push(Some(run.to_string()));
                self.table.push(Some(name.to_string()));
                self.step.push(Some(row[0] as i64));
                self.metric.push(Some(metric.clone()));
                self.value.push(Some(row[c]));
                self.params.push(params.clone());
            }
        }
    }
}

/// Reads every run folder directly under `root` (a folder with `config.yaml`).
pub fn collect(root: &Folder) -> Result<Collected> {
    let keys = root.list()?;
    let runs: BTreeSet<String> = keys
        .iter()
        .filter_map(|k| k.strip_suffix("/config.yaml"))
        .filter(|r| !r.contains('/'))
        .map(String::from)
        .collect();
    let mut long = Long {
        run: vec![],
        table: vec![],
        step: vec![],
        metric: vec![],
        value: vec![],
        params: vec![],
    };
    for name in &runs {
        let run = RunDir::new(root.sub(name));
        let cfg = run.read_config()?;
        let params: BTreeMap<String, Value> =
            stagewise_io::config::leaves(&serde_json::to_value(&cfg)?, "")
                .into_iter()
                .collect();
        let params = std::rc::Rc::new(params);
        if let Some(t) = run.metrics()? {
            long.add(name, "metrics", &t, &params);
        }
        if let Some(t) = run.train_table()? {
            long.add(name, "train", &t, &params);
        }
        for sweep in run.llc_sweeps()? {
            let dir = run.llc(&sweep);
            let Some(t) = dir.table()? else { continue };
            let mut with_sampler = (*params).clone();
            if let Some(bytes) = dir.folder.get("sampler.yaml")? {
                let text = String::from_utf8_lossy(&bytes);
                let doc = stagewise_io::config::parse_yaml(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", dir.folder.describe("sampler.yaml")))?;
                with_sampler.extend(stagewise_io::config::leaves(&doc, "sampler_config"));
            }
            long.add(
                name,
                &format!("llc/{sweep}"),
                &t,
                &std::rc::Rc::new(with_sampler),
            );
        }
    }
    // Parameter columns: numbers where every given value is one, text otherwise.
    let names: BTreeSet<&String> = long.params.iter().flat_map(|p| p.keys()).collect();
    let mut columns = vec![
        ("run".to_string(), Column::Text(long.run)),
        ("table".to_string(), Column::Text(long.table)),
        ("step".to_string(), Column::Int(long.step)),
        ("metric".to_string(), Column::Text(long.metric)),
        ("value".to_string(), Column::Float(long.value)),
    ];
    for n in names {
        let values: Vec<Option<&Value>> = long
            .params
            .iter()
            .map(|p| p.get(n).filter(|v| !v.is_null()))
            .collect();
        let numeric = values.iter().flatten().all(|v| v.is_number());
        let col = if numeric {
            Column::Float(values.iter().map(|v| v.and_then(Value::as_f64)).collect())
        } else {
            Column::Text(
                values
                    .iter()
                    .map(|v| {
                        v.map(|v| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                    })
                    .collect(),
            )
        };
        columns.push((n.clone(), col));
    }
    let rows = columns[0].1.len();
    Ok(Collected {
        columns,
        runs: runs.len(),
        rows,
    })
}

/// The long table as CSV (empty cells for missing values).
pub fn to_csv(columns: &[(String, Column)]) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = columns
        .iter()
        .map(|(n, _)| quote(n))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    let rows = columns.first().map_or(0, |c| c.1.len());
    for r in 0..rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, c)| match c {
                Column::Text(v) => v[r].as_deref().map(quote).unwrap_or_default(),
                Column::Int(v) => v[r].map(|x| x.to_string()).unwrap_or_default(),
                Column::Float(v) => v[r].map(|x| format!("{x:?}")).unwrap_or_default(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Writes the table to `path`: Parquet, or CSV when the name ends in `.csv` (atomically).
pub fn write(columns: &[(String, Column)], path: &std::path::Path) -> Result<()> {
    let bytes = if path.extension().is_some_and(|e| e == "csv") {
        to_csv(columns).into_bytes()
    } else {
        stagewise_tables::columns_parquet_bytes(columns)?
    };
    stagewise_io::atomic::write_atomic(path, &bytes)
        .with_context(|| format!("{}: cannot write", path.display()))
}
