//! `stagewise stages`: developmental stages from a run's LLC curve.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use stagewise_pipeline::stages::{StagesOptions, StagesResult, stages};

#[derive(Args)]
pub struct StagesArgs {
    /// Run folder with an LLC sweep (`stagewise llc`).
    run: PathBuf,
    /// Which sweep: the folder name under RUN/llc (default: the only one).
    #[arg(long)]
    llc: Option<String>,
    /// LLC column (default: `llc/mean/mean` when the sweep has per-token LLCs, else `llc/mean`).
    #[arg(long)]
    column: Option<String>,
    /// Critical points need |dLLC/dlog t| below this (default: 20 % of the largest |slope|; the
    /// reference used 8 for its K = 8 runs).
    #[arg(long)]
    max_slope: Option<f64>,
    /// Stages changing the fitted LLC by less than this fraction of its range are merged.
    #[arg(long, default_value_t = 0.05)]
    min_change: f64,
}

impl StagesArgs {
    pub fn options(&self) -> StagesOptions {
        StagesOptions {
            llc: self.llc.clone(),
            column: self.column.clone(),
            max_slope: self.max_slope,
            min_change: self.min_change,
        }
    }
}

pub fn run(a: &StagesArgs) -> Result<()> {
    print(&stages(&crate::place::run_dir(&a.run)?, &a.options())?);
    Ok(())
}

pub fn print(r: &StagesResult) {
    println!(
        "GP fit of {} against log(step + 1): amplitude {:.4}, length {:.4}, log marginal likelihood {:.3}",
        r.column, r.gp_amplitude, r.gp_length, r.gp_log_marginal_likelihood
    );
    println!(
        "critical points (|dLLC/dlog t| < {:.3}): {:?}",
        r.max_slope, r.critical
    );
    println!(
        "{:>5} {:>9} {:>9} {:>10} {:>10} {:>4}",
        "stage", "start", "end", "d loss", "d LLC", "type"
    );
    for (k, s) in r.stages.iter().enumerate() {
        println!(
            "{:>5} {:>9} {:>9} {:>10.4} {:>10.3} {:>4}",
            k + 1,
            s.start,
            s.end,
            s.delta_loss,
            s.delta_llc,
            s.kind
        );
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    println!("results: {}", r.out);
}
