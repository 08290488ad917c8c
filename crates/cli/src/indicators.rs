//! `stagewise indicators`: structural indicators over a run's checkpoints.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use stagewise_pipeline::indicators::{IndicatorsOptions, IndicatorsResult, indicators};

use crate::console::Console;
use crate::llc::SelectArgs;

#[derive(Args)]
pub struct IndicatorsArgs {
    /// Run folder written by `stagewise train`.
    run: PathBuf,
    #[command(flatten)]
    select: SelectArgs,
    /// Also the Hessian trace and top eigenvalues (costly: each Hessian-vector product is two
    /// float64 gradients of the batch).
    #[arg(long)]
    hessian: bool,
    /// Sequences of the fixed Hessian batch (this and the next three need --hessian).
    #[arg(long, default_value_t = 256, requires = "hessian")]
    hessian_sequences: usize,
    /// Top Hessian eigenvalues reported.
    #[arg(long, default_value_t = 3, requires = "hessian")]
    top: usize,
    /// Lanczos iterations.
    #[arg(long, default_value_t = 30, requires = "hessian")]
    lanczos_steps: usize,
    /// Most Hutchinson samples (stops earlier when the mean changes by < 1e-3 relative).
    #[arg(long, default_value_t = 30, requires = "hessian")]
    hutchinson_samples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl IndicatorsArgs {
    pub fn options(&self) -> IndicatorsOptions {
        IndicatorsOptions {
            select: self.select.selection(),
            hessian: self.hessian,
            hessian_sequences: self.hessian_sequences,
            top: self.top,
            lanczos_steps: self.lanczos_steps,
            hutchinson_samples: self.hutchinson_samples,
            seed: self.seed,
        }
    }
}

pub fn run(a: &IndicatorsArgs) -> Result<()> {
    let opts = a.options();
    print(&indicators(
        &crate::place::run_dir(&a.run)?,
        &opts,
        &Console::default(),
    )?);
    Ok(())
}

pub fn print(r: &IndicatorsResult) {
    println!(
        "{} indicators at {} checkpoints: {}",
        r.columns.len(),
        r.steps.len(),
        r.table
    );
}
