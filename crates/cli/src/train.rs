//! `stagewise train`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use stagewise_pipeline::train::{TrainOptions, TrainResult, train};
use stagewise_pipeline::{Backend, RunDir};

use crate::console::Console;

#[derive(Args)]
pub struct TrainArgs {
    /// Config file; omitted: the built-in quick default.
    pub config: Option<PathBuf>,
    /// Override a field: `--set task_config.model_seed=1` (repeatable; YAML values).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Run folder (default: runs/<config name>[-<sweep index>]).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (with no CONFIG and no --set, the
    /// run's own config.yaml is used).
    #[arg(long)]
    pub resume: bool,
    /// Which run of a sweep grid to train (0-based, grid in key order).
    #[arg(long)]
    pub sweep_index: Option<usize>,
    /// Where to train: cpu, cuda, cuda:N (an NVIDIA GPU), or emulator (the CUDA kernels on
    /// the host, slow; for checks without a GPU).
    #[arg(long, default_value = "cpu")]
    pub device: stagewise_cuda::DeviceSpec,
}

pub fn run(a: &TrainArgs) -> Result<()> {
    // A missing GPU is reported before anything is written.
    let device = Backend::open(a.device, crate::tf32())?;
    let opts = TrainOptions {
        config: a.config.clone(),
        sets: a.sets.clone(),
        out: a.out.clone().map(RunDir::local),
        resume: a.resume,
        sweep_index: a.sweep_index,
        resolved: None,
        device,
    };
    print(&train(&opts, &Console::default())?);
    Ok(())
}

pub fn print(r: &TrainResult) {
    let last = if r.last_loss.is_finite() {
        format!("last batch loss {:.4}", r.last_loss)
    } else {
        "nothing left to train".into()
    };
    eprintln!(
        "done: {} steps, {last}; {} checkpoints in {}, metrics in {}",
        r.num_steps,
        r.checkpoints,
        r.run.checkpoints_location(),
        r.run.metrics_location()
    );
}
