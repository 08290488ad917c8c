//! `stagewise run --sweep FILE` (one task of a sweep, its index from the scheduler) and
//! `stagewise collect ROOT` (every run in one long table).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use stagewise_pipeline::Backend;
use stagewise_pipeline::llc::PerLaunch;
use stagewise_sweep::{Outcome, RunOptions, run_task};

use crate::console::Console;
use crate::sweep::{RootArg, SweepSource};

/// `stagewise run --sweep FILE`: one task.
#[derive(Args)]
pub struct RunArgs {
    /// The sweep file.
    #[arg(long)]
    sweep: PathBuf,
    /// Task index (0-based); default: the scheduler's (SLURM_ARRAY_TASK_ID,
    /// JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX, or 1-based SGE_TASK_ID / LSB_JOBINDEX).
    #[arg(long)]
    task_index: Option<usize>,
    #[arg(long)]
    count: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    root: RootArg,
    /// Where to compute: cpu, cuda, cuda:N, emulator.
    #[arg(long, default_value = "cpu")]
    pub device: stagewise_cuda::DeviceSpec,
    #[command(flatten)]
    pub mlflow: crate::place::MlflowArg,
}

/// One task (`stagewise run --sweep FILE`).
pub fn run_one(a: &RunArgs) -> Result<()> {
    let source = SweepSource {
        file: a.sweep.clone(),
        count: a.count,
        seed: a.seed,
    };
    let sweep = source.load()?;
    let (index, from) = match a.task_index {
        Some(i) => (i, "--task-index".to_string()),
        None => match stagewise_sweep::exec::index_from_env(|k| std::env::var(k).ok())? {
            Some((i, var)) => (i, var.to_string()),
            None => bail!(
                "no task index: pass --task-index N (0..{}) or run under a scheduler that sets one ({})",
                sweep.len(),
                stagewise_sweep::exec::INDEX_VARIABLES
                    .iter()
                    .map(|v| v.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let task = sweep.task(index)?;
    let device = Backend::open(a.device, crate::tf32())?;
    let root = a.root.open()?;
    eprintln!(
        "task {index} (from {from}) of {} ({:?}): {}{}",
        sweep.name(),
        task.kind,
        root.run(&task).display(),
        task.sampler_name
            .as_ref()
            .map(|s| format!(", sampler folder llc/{s}"))
            .unwrap_or_default()
    );
    let opts = RunOptions {
        device,
        per_launch: PerLaunch::default(),
    };
    match run_task(&root, &task, &opts, &Console::default())? {
        Outcome::Skipped => eprintln!("task {index}: already done, nothing to run"),
        Outcome::Ran => eprintln!("task {index}: done"),
    }
    // The sweep's W&B `project` names the MLflow experiment unless one is given.
    let mut mlflow = a.mlflow.clone();
    if std::env::var("MLFLOW_EXPERIMENT_NAME").is_err()
        && mlflow.experiment == "stagewise"
        && let Some(p) = &sweep.file.project
    {
        mlflow.experiment = p.clone();
    }
    mlflow.export(&root.run(&task))
}

/// `stagewise collect ROOT --out FILE`.
#[derive(Args)]
pub struct CollectArgs {
    /// Folder (or `s3://bucket/prefix`) whose run folders to read.
    root: PathBuf,
    /// Output: Parquet, or CSV when the name ends in `.csv`.
    #[arg(long, default_value = "results.parquet")]
    out: PathBuf,
}

pub fn collect(a: &CollectArgs) -> Result<()> {
    let root = crate::place::folder(&a.root)?;
    let c = stagewise_sweep::collect::collect(&root)?;
    if c.runs == 0 {
        bail!(
            "{}: no run folders (folders with a config.yaml) directly inside",
            root.display()
        );
    }
    stagewise_sweep::collect::write(&c.columns, &a.out)?;
    println!(
        "{}: {} rows from {} runs ({} columns)",
        a.out.display(),
        c.rows,
        c.runs,
        c.columns.len()
    );
    Ok(())
}
