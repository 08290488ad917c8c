//! `stagewise reproduce`: the whole pipeline, train -> llc -> ed -> stages -> indicators ->
//! report, each step resumable.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use stagewise_pipeline::Backend;
use stagewise_pipeline::reproduce::{ReproduceOptions, reproduce};

use crate::console::Console;
use crate::llc::SelectArgs;

#[derive(Args)]
pub struct ReproduceArgs {
    /// Training config (plain or W&B sweep YAML; a regression or a language-model config);
    /// omitted: the built-in quick config.
    config: Option<PathBuf>,
    /// The small pipeline: the built-in quick config and the tiny sampler (2 chains x 50 draws)
    /// at every checkpoint: a few minutes on 2 cores.
    #[arg(long)]
    quick: bool,
    /// The small language-model pipeline: the built-in quick LM config (Shakespeare; fetch it
    /// with scripts/fetch-shakespeare.sh) and the quick LM sampler at every checkpoint.
    #[arg(long, conflicts_with = "config")]
    quick_lm: bool,
    /// The small sparse parity pipeline: the built-in quick parity config and the parity
    /// sampler at every checkpoint (under a minute on 2 cores).
    #[arg(long, conflicts_with_all = ["config", "quick_lm"])]
    quick_parity: bool,
    /// Sampler config of the LLC sweep (default: configs/sampler-tiny.yaml with --quick,
    /// configs/sampler-paper.yaml otherwise; for a language model sampler-lm-quick.yaml and
    /// sampler-lm-paper.yaml; all built in).
    #[arg(long)]
    sampler: Option<PathBuf>,
    /// Override a training field (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run folder (default: runs/<config name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Which run of a sweep grid to train.
    #[arg(long)]
    sweep_index: Option<usize>,
    /// Checkpoints of the LLC sweep (default: every checkpoint).
    #[command(flatten)]
    select: SelectArgs,
    /// Also the Hessian indicators (costly).
    #[arg(long)]
    hessian: bool,
    /// Where training and the LLC sweep run: cpu, cuda, cuda:N or emulator.
    #[arg(long, default_value = "cpu")]
    device: stagewise_cuda::DeviceSpec,
}

impl ReproduceArgs {
    pub fn device(&self) -> stagewise_cuda::DeviceSpec {
        self.device
    }
}

pub fn run(a: &ReproduceArgs) -> Result<()> {
    let opts = ReproduceOptions {
        config: a.config.clone(),
        quick: a.quick || a.quick_lm || a.quick_parity,
        lm: a.quick_lm,
        parity: a.quick_parity,
        sampler: a.sampler.clone(),
        sets: a.sets.clone(),
        out: a.out.as_deref().map(crate::place::run_dir).transpose()?,
        sweep_index: a.sweep_index,
        select: a.select.selection(),
        hessian: a.hessian,
        // The device is opened once, before anything is written.
        device: Backend::open(a.device, crate::tf32())?,
    };
    reproduce(&opts, &Console::default())?;
    Ok(())
}
