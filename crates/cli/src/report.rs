//! `stagewise report`: one HTML page (inline SVG, no network) and PNG figures of a run.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use stagewise_pipeline::report::{ReportOptions, ReportResult, report};

#[derive(Args)]
pub struct ReportArgs {
    /// Run folder.
    run: PathBuf,
    /// LLC sweep to show (folder under RUN/llc; default: the only one, or the one with stages).
    #[arg(long)]
    llc: Option<String>,
    /// Output folder (default: RUN/report).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: &ReportArgs) -> Result<()> {
    let opts = ReportOptions {
        llc: a.llc.clone(),
        out: a.out.as_deref().map(crate::place::folder).transpose()?,
    };
    print(&report(&crate::place::run_dir(&a.run)?, &opts)?);
    Ok(())
}

pub fn print(r: &ReportResult) {
    println!("report: {}", r.index);
}
