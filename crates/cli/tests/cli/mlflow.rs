//! A real MLflow tracking server (`.ci/mlflow.sh`) receives a run's config and tables: `train
//! --mlflow`, then `stagewise mlflow` after an LLC sweep adds only the new rows to the same MLflow
//! run; MLflow's own Python client reads them back.

use crate::common::*;

#[test]
fn a_run_reaches_mlflow_once_per_row() {
    let (Ok(uri), Ok(python)) = (
        std::env::var("STAGEWISE_TEST_MLFLOW"),
        std::env::var("STAGEWISE_TEST_MLFLOW_PYTHON"),
    ) else {
        eprintln!(
            "SKIPPED: no MLflow test server (run `eval \"$(.ci/mlflow.sh)\"` first, as .ci/run does)"
        );
        return;
    };
    let dir = scratch("mlflow");
    let cfg = write_config(&dir);
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let experiment = format!("stagewise-test-{}", std::process::id());
    let out = stagewise(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        r,
        "--set",
        "num_steps=300",
        "--mlflow",
        &uri,
        "--mlflow-experiment",
        &experiment,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sampler = write_sampler(&dir, "s.yaml", 5);
    let out = stagewise(&["llc", r, "--config", sampler.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = || {
        let out = stagewise(&[
            "mlflow",
            r,
            "--mlflow",
            &uri,
            "--mlflow-experiment",
            &experiment,
        ]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        err
    };
    let second = export();
    let third = export();
    assert!(
        third.contains("mlflow: 0 metric values and 0 params"),
        "{third}"
    );
    assert!(!second.contains("mlflow: 0 metric values"), "{second}");
    // Expected counts from the tables themselves.
    let rows = |f: &str| {
        let text = std::fs::read_to_string(run.join(f)).unwrap();
        text.lines().count() - 1
    };
    let (metrics_rows, llc_rows) = (rows("metrics.csv"), rows("llc/s/llc.csv"));
    let check = format!(
        r#"
import mlflow, sys
from mlflow.tracking import MlflowClient
c = MlflowClient("{uri}")
exp = c.get_experiment_by_name("{experiment}")
runs = c.search_runs([exp.experiment_id])
assert len(runs) == 1, len(runs)
run = runs[0]
assert run.info.status == "FINISHED", run.info.status
assert run.data.params["task_config.model_seed"] == "5", run.data.params
h = c.get_metric_history(run.info.run_id, "pretrain/mse")
assert len(h) == {metrics_rows}, (len(h), {metrics_rows})
l = c.get_metric_history(run.info.run_id, "llc/s/llc/mean")
assert len(l) == {llc_rows}, (len(l), {llc_rows})
print("ok", len(h), len(l))
"#
    );
    let out = Command::new(&python).args(["-c", &check]).output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `scripts/wandb_replay.py` in W&B's offline mode: one W&B step per training step of the run's
/// tables, every key with a finite value, and a run that `wandb sync` would upload.
#[test]
fn the_wandb_script_replays_a_run_offline() {
    let Ok(python) = std::env::var("STAGEWISE_TEST_WANDB_PYTHON") else {
        eprintln!(
            "SKIPPED: no Python with wandb (STAGEWISE_TEST_WANDB_PYTHON; .ci/run installs one)"
        );
        return;
    };
    let dir = scratch("wandb");
    let (_, run) = train_tiny(&dir, 200);
    let sampler = write_sampler(&dir, "s.yaml", 5);
    let out = stagewise(&[
        "llc",
        run.to_str().unwrap(),
        "--config",
        sampler.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What the script should log, from the tables.
    let mut steps = std::collections::BTreeSet::new();
    let mut keys = std::collections::BTreeSet::new();
    for (file, prefix) in [
        ("metrics.csv", ""),
        ("train.csv", ""),
        ("llc/s/llc.csv", "llc/s/"),
    ] {
        let text = std::fs::read_to_string(run.join(file)).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        for line in lines {
            let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
            steps.insert(cells[0] as u64);
            for (k, v) in header.iter().zip(&cells).skip(1) {
                if v.is_finite() {
                    keys.insert(format!("{prefix}{k}"));
                }
            }
        }
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/wandb_replay.py");
    let out = Command::new(&python)
        .args([
            script,
            run.to_str().unwrap(),
            "--mode",
            "offline",
            "--project",
            "stagewise-test",
        ])
        .current_dir(&dir)
        .env("WANDB_SILENT", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["steps"], steps.len());
    assert_eq!(summary["keys"], keys.len());
    let id = summary["id"].as_str().unwrap();
    let wandb_dir = dir.join("wandb");
    let offline: Vec<_> = std::fs::read_dir(&wandb_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().ends_with(id))
        .collect();
    assert_eq!(offline.len(), 1);
    let data = offline[0].join(format!("run-{id}.wandb"));
    assert!(std::fs::metadata(&data).unwrap().len() > 1000);
    let wandb = std::path::Path::new(&python).with_file_name("wandb");
    let sync = Command::new(wandb)
        .args(["sync", "--dry-run", offline[0].to_str().unwrap()])
        .current_dir(&dir)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&sync.stdout),
        String::from_utf8_lossy(&sync.stderr)
    );
    assert!(said.contains("Would sync 1 run"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}
