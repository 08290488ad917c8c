//! `stagewise susceptibility RUN --config SAMPLER.yaml` and `stagewise bif RUN --config
//! SAMPLER.yaml`: devinterp 2.0's susceptibilities and Bayesian influence functions at a
//! regression run's checkpoints.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use stagewise_cuda::DeviceSpec;
use stagewise_pipeline::Backend;
use stagewise_pipeline::influence::{
    BifLevel, BifOptions, SusceptibilityOptions, bif, susceptibility,
};
use stagewise_pipeline::llc::Sampler;
use stagewise_sampling::influence::ChainReduce;

use crate::console::Console;
use crate::llc::SelectArgs;

/// `stagewise susceptibility RUN --config SAMPLER.yaml`: results go to
/// `RUN/susceptibility/<sampler name>/`.
#[derive(Args)]
pub struct SusceptibilityArgs {
    /// Run folder written by `stagewise train` (a regression run).
    pub run: PathBuf,
    /// Sampler config (YAML; the same fields as for `stagewise llc`).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a sampler field: `--set num_draws=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Weight restrictions, all run in one batch: `heads` (each attention head's QKV rows),
    /// `layers`, `embeddings`, a glob, or NAME=GLOB[;GLOB...] (repeatable).
    #[arg(long, default_value = "heads")]
    pub restrict: Vec<String>,
    /// Observables: pretrain, true, inputs:G, tasks:G (comma-separated), or reference (the
    /// reference's pretrain, true and inputs/tasks scaled by 3, 5, 10, 100).
    #[arg(long, default_value = "reference")]
    pub observables: Vec<String>,
    /// Fixed sequences per observable.
    #[arg(long, default_value_t = 64)]
    pub sequences: usize,
    /// Also write every draw's observed losses to `<step>.draws.parquet` (memory and disk grow
    /// with the draws; the estimates never need them).
    #[arg(long)]
    pub keep_draws: bool,
    /// Where the chains run: cpu, cuda, cuda:N (an NVIDIA GPU) or emulator (the CUDA kernels
    /// on the host, slow); a device takes regression runs.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run_susceptibility(a: &SusceptibilityArgs) -> Result<()> {
    let run = crate::place::run_dir(&a.run)?;
    let opts = SusceptibilityOptions {
        sampler: Sampler::load(&a.config, &a.sets)?,
        select: a.select.selection(),
        restrict: a.restrict.clone(),
        observables: a.observables.clone(),
        sequences: a.sequences,
        keep_draws: a.keep_draws,
        device: Backend::open(a.device, crate::tf32())?,
    };
    let r = susceptibility(&run, &opts, &Console::default())?;
    eprintln!("done: {}", r.folder);
    Ok(())
}

/// `stagewise bif RUN --config SAMPLER.yaml`: results go to `RUN/bif/<sampler name>/`.
#[derive(Args)]
pub struct BifArgs {
    /// Run folder written by `stagewise train` (a regression run).
    pub run: PathBuf,
    /// Sampler config (YAML; the same fields as for `stagewise llc`).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a sampler field: `--set num_draws=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// The samples: observables as for `susceptibility` (pretrain, true, inputs:G, tasks:G).
    #[arg(long, default_value = "pretrain")]
    pub samples: Vec<String>,
    /// Fixed sequences per observable.
    #[arg(long, default_value_t = 16)]
    pub sequences: usize,
    /// One weight restriction (a glob or NAME=GLOB[;GLOB...]); default: every weight moves.
    #[arg(long)]
    pub restrict: Option<String>,
    /// token: every example's loss against every other; sequence: the loss kernel.
    #[arg(long, default_value = "token")]
    pub level: BifLevel,
    /// stack: every (chain, draw) is a draw; mean: chains averaged per draw first.
    #[arg(long, default_value = "stack")]
    pub reduce: ChainReduce,
    /// The loss covariance instead of the correlation.
    #[arg(long)]
    pub covariance: bool,
    /// Where the chains run: cpu, cuda, cuda:N (an NVIDIA GPU) or emulator (the CUDA kernels
    /// on the host, slow); a device takes regression runs.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    #[command(flatten)]
    pub select: SelectArgs,
}

pub fn run_bif(a: &BifArgs) -> Result<()> {
    let run = crate::place::run_dir(&a.run)?;
    let opts = BifOptions {
        sampler: Sampler::load(&a.config, &a.sets)?,
        select: a.select.selection(),
        restrict: a.restrict.clone(),
        samples: a.samples.clone(),
        sequences: a.sequences,
        level: a.level,
        reduce: a.reduce,
        covariance: a.covariance,
        device: Backend::open(a.device, crate::tf32())?,
    };
    let r = bif(&run, &opts, &Console::default())?;
    eprintln!("done: {}", r.folder);
    Ok(())
}

/// `stagewise bench susceptibility`.
#[derive(Args)]
pub struct BenchSusceptibilityArgs {
    /// Chains per restriction.
    #[arg(long, default_value_t = 4)]
    chains: usize,
    /// Draws per chain.
    #[arg(long, default_value_t = 10)]
    draws: usize,
    /// Sequences per gradient minibatch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Fixed sequences per observable.
    #[arg(long, default_value_t = 96)]
    sequences: usize,
    /// Observables (the first is the sampling task).
    #[arg(long, default_value_t = 2)]
    observables: usize,
    /// Thread counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Measurements per row, alternating stagewise and PyTorch; the best is shown.
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// In-context examples K.
    #[arg(long, default_value_t = 16)]
    examples: usize,
    /// Python interpreter with torch: also run bench/torch_susceptibility.py and print the ratio.
    #[arg(long)]
    torch: Option<PathBuf>,
    #[arg(long, default_value = "bench/torch_susceptibility.py")]
    torch_script: PathBuf,
    /// Where stagewise's chains run: cpu, cuda, cuda:N or emulator (on cuda, PyTorch runs on
    /// the GPU too).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

impl BenchSusceptibilityArgs {
    pub fn options(&self) -> stagewise_bench::BenchSusceptibilityOptions {
        stagewise_bench::BenchSusceptibilityOptions {
            chains: self.chains,
            draws: self.draws,
            batch: self.batch,
            sequences: self.sequences,
            observables: self.observables,
            threads: self.threads.clone(),
            repeat: self.repeat,
            examples: self.examples,
            torch: self.torch.clone(),
            torch_script: self.torch_script.clone(),
            device: self.device,
        }
    }
}
