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
