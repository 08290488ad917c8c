//! `stagewise llc RUN --config SAMPLER.yaml`, and the arguments that pick checkpoints and a
//! device (shared with the other commands).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use stagewise_pipeline::Backend;
use stagewise_pipeline::llc::{LlcOptions, LlcResult, PerLaunch, Sampler, StepSelection, llc};

use crate::console::Console;

/// Which checkpoints a command works on: an explicit list, or the reference's log/linear
/// selection; none of them: every checkpoint.
#[derive(Args, Clone, Debug, Default)]
pub struct SelectArgs {
    /// Checkpoint steps (default: every checkpoint of the run).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["log_space", "linear_space"])]
    pub steps: Vec<u64>,
    /// The run's checkpoints in `int_logspace(1, num_steps, N)`, like the reference's sweeps
    /// (union with --linear-space).
    #[arg(long)]
    pub log_space: Option<usize>,
    /// ... and in `int_linspace(0, num_steps, N)`.
    #[arg(long)]
    pub linear_space: Option<usize>,
}

impl SelectArgs {
    pub fn selection(&self) -> StepSelection {
        StepSelection {
            steps: self.steps.clone(),
            log_space: self.log_space,
            linear_space: self.linear_space,
        }
    }
}

/// How a device batches the chains.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where the chains run: cpu, cuda, cuda:N (an NVIDIA GPU) or emulator (the CUDA kernels
    /// on the host, slow).
    #[arg(long, default_value = "cpu")]
    pub device: stagewise_cuda::DeviceSpec,
    /// On a device: checkpoints whose chains run together in one set of launches (default 1;
    /// Q = checkpoints x chains weight sets; more fills a large GPU better, at more memory).
    #[arg(long)]
    pub checkpoints_per_launch: Option<usize>,
    /// On a device: chains per set of launches (default: all of a checkpoint's chains; fewer
    /// keeps each launch's working set in the GPU's L2 cache, see `bench gpu`).
    #[arg(long)]
    pub chains_per_launch: Option<usize>,
}

impl DeviceArgs {
    pub fn per_launch(&self) -> PerLaunch {
        PerLaunch {
            checkpoints: self
                .checkpoints_per_launch
                .unwrap_or(PerLaunch::default().checkpoints),
            chains: self.chains_per_launch,
        }
    }

    /// The backend; the per-launch flags, which only a device has, are refused on the CPU.
    pub fn open(&self) -> Result<(Backend, PerLaunch)> {
        let backend = Backend::open(self.device, crate::tf32())?;
        if matches!(backend, Backend::Cpu) {
            for (flag, given) in [
                (
                    "--checkpoints-per-launch",
                    self.checkpoints_per_launch.is_some(),
                ),
                ("--chains-per-launch", self.chains_per_launch.is_some()),
            ] {
                if given {
                    bail!(
                        "{flag} applies to a device (--device cuda or emulator); on the CPU it would change nothing"
                    );
                }
            }
        }
        Ok((backend, self.per_launch()))
    }
}

/// `stagewise llc RUN_DIR --config SAMPLER.yaml`: results go to `RUN/llc/<sampler name>/`.
#[derive(Args)]
pub struct RunArgs {
    /// Run folder written by `stagewise train`.
    pub run: Option<PathBuf>,
    /// Sampler config (YAML, the reference's `SamplerConfig` fields).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a sampler field: `--set num_draws=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(a: &RunArgs) -> Result<()> {
    let (Some(run), Some(config)) = (&a.run, &a.config) else {
        bail!(
            "usage: stagewise llc RUN_DIR --config SAMPLER.yaml (or: stagewise llc check|calibrate ...)"
        );
    };
    let run = crate::place::run_dir(run)?;
    // The run, the sampler and the selection are checked before a device is opened (a
    // language-model or parity run checks them in `llc`, which runs on the CPU).
    let sampler = Sampler::load(config, &a.sets)?;
    if !run.is_language_run() && !run.is_parity_run() {
        let ckpts = stagewise_pipeline::llc::Checkpoints::open(&run)?;
        ckpts.select(&a.select.selection())?;
    }
    let (device, per_launch) = a.device.open()?;
    let opts = LlcOptions {
        sampler,
        select: a.select.selection(),
        device,
        per_launch,
    };
    print(&llc(&run, &opts, &Console::default())?);
    Ok(())
}

pub fn print(r: &LlcResult) {
    eprintln!("done: {}", r.table);
}

/// `stagewise llc ...`: a sweep over a run's checkpoints, or one of its subcommands.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LlcArgs {
    #[command(subcommand)]
    pub command: Option<LlcCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand)]
pub enum LlcCommand {
    /// Estimated vs true learning coefficient on a model with a known answer.
    Check(crate::check::CheckArgs),
    /// The LLC over a grid of eps, nbeta and gamma at a few checkpoints, with a verdict per
    /// setting (chains finished, trace plateaued, LLC not negative).
    Calibrate(crate::calibrate::CalibrateArgs),
}
