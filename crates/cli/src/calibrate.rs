//! `stagewise llc calibrate`: the LLC over a grid of SGLD settings at a few checkpoints.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use stagewise_pipeline::calibrate::{CalibrateOptions, calibrate as run_grid};
use stagewise_pipeline::llc::Sampler;

use crate::console::Console;
use crate::llc::{DeviceArgs, SelectArgs};

#[derive(Args)]
pub struct CalibrateArgs {
    /// Run folder written by `stagewise train`.
    run: PathBuf,
    /// Base sampler config: chains, draws, batch, dataset size, seed, method, restriction.
    #[arg(long)]
    config: PathBuf,
    /// Override a sampler field: `--set num_draws=1000` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Step sizes to try (default: the config's).
    #[arg(long, value_delimiter = ',')]
    eps: Vec<f64>,
    /// n * beta values to try (default: the config's).
    #[arg(long, value_delimiter = ',')]
    nbeta: Vec<f64>,
    /// Localization strengths to try (default: the config's).
    #[arg(long, value_delimiter = ',')]
    gamma: Vec<f64>,
    #[command(flatten)]
    select: SelectArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Writes `RUN/llc/calibrate-<config>/` and prints the whole summary, grouped by checkpoint.
impl CalibrateArgs {
    pub fn device(&self) -> stagewise_cuda::DeviceSpec {
        self.device.device
    }
}

pub fn calibrate(a: &CalibrateArgs) -> Result<()> {
    let run = crate::place::run_dir(&a.run)?;
    stagewise_pipeline::llc::Checkpoints::open(&run)?;
    let sampler = Sampler::load(&a.config, &a.sets)?;
    let (device, per_launch) = a.device.open()?;
    let opts = CalibrateOptions {
        sampler,
        eps: a.eps.clone(),
        nbeta: a.nbeta.clone(),
        gamma: a.gamma.clone(),
        select: a.select.selection(),
        device,
        per_launch,
    };
    let r = run_grid(&run, &opts, &Console::default())?;
    println!(
        "{:>8} {:>10} {:>10} {:>8} {:>10} {:>9} {:>6}  verdict",
        "step", "eps", "nbeta", "gamma", "llc", "std", "MALA"
    );
    for row in &r.rows {
        println!(
            "{:>8} {:>10} {:>10} {:>8} {:>10.3} {:>9.3} {:>6.3}  {}",
            row.step,
            row.epsilon,
            row.nbeta,
            row.gamma,
            row.llc_mean,
            row.llc_std,
            row.mala_accept,
            row.stability.verdict()
        );
    }
    println!("summary: {}", r.summary);
    Ok(())
}
