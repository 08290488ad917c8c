//! A run's tables sent to an MLflow tracking server over its REST API (`/api/2.0/mlflow/...`):
//! the config as params, `metrics.csv`, `train.csv` and every LLC table as metrics at their
//! steps. What was sent is recorded in the run folder (`mlflow.json`: server, run id, the rows
//! sent per table), so a later call sends only new rows to the same MLflow run: a resumed
//! training or a continued LLC sweep adds to it, never twice. Authentication from
//! `MLFLOW_TRACKING_TOKEN` (bearer) or `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use stagewise_io::table::Table;
use stagewise_pipeline::RunDir;

use crate::env::Settings;

const RECORD: &str = "mlflow.json";
/// The REST API's limits per `log-batch` call.
const METRICS_PER_BATCH: usize = 1000;
const PARAMS_PER_BATCH: usize = 100;

/// What [`export`] sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Exported {
    pub run_id: String,
    pub experiment_id: String,
    pub metrics: usize,
    pub params: usize,
}

struct Client {
    http: reqwest::Client,
    base: String,
    rt: tokio::runtime::Runtime,
    settings: Settings,
}

impl Client {
    fn new(uri: &str, settings: &Settings) -> Result<Self> {
        let base = uri.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--mlflow {uri}: expected the tracking server's http:// or https:// address");
        }
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()?,
            base,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            settings: settings.clone(),
        })
    }

    /// One API call; `Ok(Err(code))` for an MLflow error reply (e.g. RESOURCE_DOES_NOT_EXIST).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<std::result::Result<Value, String>> {
        let url = format!("{}/api/2.0/mlflow/{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(&url).query(
                &body
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            ),
            _ => self.http.post(&url).json(body),
        };
        if let Some(t) = self.settings.get("MLFLOW_TRACKING_TOKEN") {
            req = req.bearer_auth(t);
        } else if let Some(u) = self.settings.get("MLFLOW_TRACKING_USERNAME") {
            req = req.basic_auth(u, self.settings.get("MLFLOW_TRACKING_PASSWORD"));
        }
        let (status, text) = self
            .rt
            .block_on(async {
                let resp = req.send().await?;
                let status = resp.status();
                Ok::<_, reqwest::Error>((status, resp.text().await?))
            })
            .map_err(|e| anyhow::anyhow!("{}: cannot reach the MLflow server: {e}", self.base))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(Ok(v));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            bail!(
                "{}: the MLflow server refused the credentials (MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME / _PASSWORD; not shown)",
                self.base
            );
        }
        match v.get("error_code").and_then(Value::as_str) {
            Some(code) => Ok(Err(code.to_string())),
            None => bail!(
                "{url}: HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            ),
        }
    }

    fn ok(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        match self.call(method, path, body)? {
            Ok(v) => Ok(v),
            Err(code) => bail!("{}/api/2.0/mlflow/{path}: {code}", self.base),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sends what `run` holds and the server lacks to experiment `experiment` at `uri`.
pub fn export(run: &RunDir, uri: &str, experiment: &str, settings: &Settings) -> Result<Exported> {
    let c = Client::new(uri, settings)?;
    let record: Value = match run.file(RECORD)? {
        Some(b) => serde_json::from_slice(&b).with_context(|| {
            format!(
                "{}: not the record of an MLflow export",
                run.root().describe(RECORD)
            )
        })?,
        None => Value::Null,
    };
    let same_server = record.get("uri").and_then(Value::as_str) == Some(c.base.as_str());
    let mut sent: BTreeMap<String, u64> = if same_server {
        serde_json::from_value(record.get("rows").cloned().unwrap_or(json!({}))).unwrap_or_default()
    } else {
        BTreeMap::new()
    };
    let (experiment_id, run_id, fresh) =
        match (same_server, record.get("run_id").and_then(Value::as_str)) {
            (true, Some(id)) => (
                record["experiment_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                id.to_string(),
                false,
            ),
            _ => {
                let exp = match c.call(
                    "GET",
                    "experiments/get-by-name",
                    &json!({"experiment_name": experiment}),
                )? {
                    Ok(v) => v["experiment"]["experiment_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    Err(code) if code == "RESOURCE_DOES_NOT_EXIST" => c.ok(
                        "POST",
                        "experiments/create",
                        &json!({"name": experiment}),
                    )?["experiment_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    Err(code) => bail!("{}: experiments/get-by-name: {code}", c.base),
                };
                let created = c.ok(
                    "POST",
                    "runs/create",
                    &json!({
                        "experiment_id": exp,
                        "run_name": run.name(),
                        "start_time": now_ms(),
                        "tags": [{"key": "stagewise.run", "value": run.display()}],
                    }),
                )?;
                let id = created["run"]["info"]["run_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if id.is_empty() {
                    bail!("{}: runs/create answered no run id", c.base);
                }
                (exp, id, true)
            }
        };
    let mut params = 0;
    if fresh {
        let all: Vec<(String, String)> =
            stagewise_io::config::leaves(&serde_json::to_value(run.read_config()?)?, "")
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect();
        for chunk in all.chunks(PARAMS_PER_BATCH) {
            let ps: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            c.ok(
                "POST",
                "runs/log-batch",
                &json!({"run_id": run_id, "params": ps}),
            )?;
        }
        params = all.len();
    }
    // Tables: (name in the record, metric prefix, table).
    let mut tables: Vec<(String, String, Table)> = Vec::new();
    if let Some(t) = run.metrics()? {
        tables.push(("metrics".into(), String::new(), t));
    }
    if let Some(t) = run.train_table()? {
        tables.push(("train".into(), String::new(), t));
    }
    for s in run.llc_sweeps()? {
        if let Some(t) = run.llc(&s).table()? {
            tables.push((format!("llc/{s}"), format!("llc/{s}/"), t));
        }
    }
    let record_sent = |sent: &BTreeMap<String, u64>| -> Result<()> {
        let rec =
            json!({"uri": c.base, "experiment_id": experiment_id, "run_id": run_id, "rows": sent});
        run.put_file(
            RECORD,
            (serde_json::to_string_pretty(&rec)? + "\n").as_bytes(),
        )
    };
    let ts = now_ms();
    let mut metrics = 0;
    for (name, prefix, t) in &tables {
        let done = sent.get(name).copied().unwrap_or(0) as usize;
        let mut batch: Vec<Value> = Vec::new();
        let flush = |batch: &mut Vec<Value>| -> Result<()> {
            if !batch.is_empty() {
                c.ok(
                    "POST",
                    "runs/log-batch",
                    &json!({"run_id": run_id, "metrics": batch}),
                )?;
                batch.clear();
            }
            Ok(())
        };
        for row in t.rows.iter().skip(done) {
            for (col, key) in t.header.iter().enumerate().skip(1) {
                // JSON has no NaN or infinity: such values are left out.
                if row[col].is_finite() {
                    batch.push(json!({"key": format!("{prefix}{key}"), "value": row[col], "timestamp": ts, "step": row[0] as i64}));
                    metrics += 1;
                }
                if batch.len() == METRICS_PER_BATCH {
                    flush(&mut batch)?;
                }
            }
        }
        flush(&mut batch)?;
        sent.insert(name.clone(), t.rows.len() as u64);
        // Recorded table by table: a kill loses at most one table's progress (sent again).
        record_sent(&sent)?;
    }
    let finished = run.is_complete();
    c.ok(
        "POST",
        "runs/update",
        &json!({"run_id": run_id, "status": if finished { "FINISHED" } else { "RUNNING" }, "end_time": now_ms()}),
    )?;
    record_sent(&sent)?;
    Ok(Exported {
        run_id,
        experiment_id,
        metrics,
        params,
    })
}
