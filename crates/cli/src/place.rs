//! Run and output locations as the user gives them: a path, `file://...` or `s3://bucket/prefix`
//! (settings from the environment or `./.env`; see `stagewise_store`).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Result;
use stagewise_pipeline::{Folder, RunDir};
use stagewise_store::Settings;

fn settings() -> Result<&'static Settings> {
    static S: OnceLock<Settings> = OnceLock::new();
    if let Some(s) = S.get() {
        return Ok(s);
    }
    let s = Settings::load()?;
    Ok(S.get_or_init(|| s))
}

fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub fn run_dir(p: &Path) -> Result<RunDir> {
    stagewise_store::run_dir(&text(p), settings()?)
}

pub fn folder(p: &Path) -> Result<Folder> {
    stagewise_store::folder(&text(p), settings()?)
}

/// Whether `p` names an object-store location rather than a local path.
pub fn is_url(p: &Path) -> bool {
    text(p).contains("://") && !text(p).starts_with("file://")
}

/// `--mlflow URI`: after the command, send the run's tables to an MLflow tracking server.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MlflowArg {
    /// MLflow tracking server (http[s]://...) to send the run's config and metrics to when the
    /// command ends; only rows not sent before are sent.
    #[arg(long = "mlflow", env = "MLFLOW_TRACKING_URI", value_name = "URI")]
    pub uri: Option<String>,
    /// MLflow experiment (created if absent).
    #[arg(
        long = "mlflow-experiment",
        env = "MLFLOW_EXPERIMENT_NAME",
        default_value = "stagewise"
    )]
    pub experiment: String,
}

impl MlflowArg {
    pub fn export(&self, run: &RunDir) -> Result<()> {
        let Some(uri) = &self.uri else { return Ok(()) };
        let e = stagewise_store::mlflow::export(run, uri, &self.experiment, settings()?)?;
        eprintln!(
            "mlflow: {} metric values and {} params to run {} (experiment {}) at {uri}",
            e.metrics, e.params, e.run_id, e.experiment_id
        );
        Ok(())
    }
}

/// `stagewise mlflow RUN`.
#[derive(clap::Args)]
pub struct MlflowCommand {
    /// Run folder (or s3:// location).
    pub run: std::path::PathBuf,
    #[command(flatten)]
    pub mlflow: MlflowArg,
}

pub fn mlflow(a: &MlflowCommand) -> Result<()> {
    if a.mlflow.uri.is_none() {
        anyhow::bail!("no MLflow server: pass --mlflow URI or set MLFLOW_TRACKING_URI");
    }
    a.mlflow.export(&run_dir(&a.run)?)
}
