//! `stagewise ed`: essential dynamics of a run.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use stagewise_pipeline::Folder;
use stagewise_pipeline::ed::{EdOptions, EdResult, Outputs, Smoothing, ed as run_ed};

use crate::console::Console;
use crate::llc::SelectArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputsArg {
    /// Every token output `[sequences, 2K, D+1]` (the paper's behavioural ED).
    Full,
    /// Only the predictions `y_hat[sequences, K]` (the reference's "just-ys").
    Ys,
}

#[derive(Args)]
pub struct EdArgs {
    /// Run folder written by `stagewise train`.
    run: PathBuf,
    #[command(flatten)]
    select: SelectArgs,
    #[arg(long, value_enum, default_value = "full")]
    outputs: OutputsArg,
    /// Sequences in the fixed evaluation set (the paper: 8192).
    #[arg(long, default_value_t = 1024)]
    sequences: usize,
    /// Seed of the evaluation set.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Principal components kept.
    #[arg(long, default_value_t = 4)]
    components: usize,
    /// Smoothing of the PC scores along the checkpoints: `none` (the paper), or `LO:HI` for
    /// Gaussian widths rising linearly from LO to HI checkpoints (the exploratory version used
    /// 0.1:300 over 5000 checkpoints).
    #[arg(long, default_value = "none", value_parser = parse_smooth)]
    smooth: Smoothing,
    /// A vertex needs a curvature at least this multiple of the pair's median curvature.
    #[arg(long, default_value_t = 2.0)]
    vertex_ratio: f64,
    /// Vertices and evolute cusps need the curve to move at least this multiple of its median
    /// speed (0 keeps true cusps, where the trajectory stops and turns back).
    #[arg(long, default_value_t = 0.1)]
    min_speed: f64,
    /// Checkpoints within which the pairs' vertices count as one form.
    #[arg(long, default_value_t = 2)]
    form_window: usize,
    /// Output folder (default: RUN/ed/<outputs>).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_smooth(s: &str) -> Result<Smoothing, String> {
    s.parse()
}

impl EdArgs {
    pub fn options(&self) -> EdOptions {
        EdOptions {
            select: self.select.selection(),
            outputs: match self.outputs {
                OutputsArg::Full => Outputs::Full,
                OutputsArg::Ys => Outputs::Ys,
            },
            sequences: self.sequences,
            seed: self.seed,
            components: self.components,
            smooth: self.smooth,
            vertex_ratio: self.vertex_ratio,
            min_speed: self.min_speed,
            form_window: self.form_window,
            out: self.out.clone().map(Folder::local),
        }
    }
}

pub fn ed(a: &EdArgs) -> Result<()> {
    let mut opts = a.options();
    opts.out = a.out.as_deref().map(crate::place::folder).transpose()?;
    print(&run_ed(
        &crate::place::run_dir(&a.run)?,
        &opts,
        &Console::default(),
    )?);
    Ok(())
}

pub fn print(r: &EdResult) {
    let ratios: Vec<String> = r
        .explained_variance_ratio
        .iter()
        .map(|r| format!("{:.3}", r))
        .collect();
    println!("explained variance ratio: {}", ratios.join(", "));
    println!(
        "forms (a vertex in all {} PC pairs within {} checkpoints): {:?}",
        r.pairs, r.form_window, r.forms
    );
    println!("results: {}", r.out);
}
