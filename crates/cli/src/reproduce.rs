//! `stagewise reproduce`: the whole pipeline, train -> llc -> ed -> stages -> indicators ->
//! report, each step resumable (training resumes from its last checkpoint, the LLC sweep skips
//! checkpoints already estimated, the analyses are recomputed from the files).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser};
use stagewise_io::atomic::write_atomic;

use crate::TrainArgs;
use crate::llc::StepSelection;

pub const SAMPLER_TINY: &str = include_str!("../../../configs/sampler-tiny.yaml");
pub const SAMPLER_PAPER: &str = include_str!("../../../configs/sampler-paper.yaml");

#[derive(Args)]
pub struct ReproduceArgs {
    /// Training config (plain or W&B sweep YAML); omitted: the built-in quick config.
    config: Option<PathBuf>,
    /// The small pipeline: the built-in quick config and the tiny sampler (2 chains x 50 draws)
    /// at every checkpoint: a few minutes on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Sampler config of the LLC sweep (default: configs/sampler-tiny.yaml with --quick,
    /// configs/sampler-paper.yaml otherwise; both built in).
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
    select: StepSelection,
    /// Also the Hessian indicators (costly).
    #[arg(long)]
    hessian: bool,
    /// Where training and the LLC sweep run: cpu, cuda, cuda:N or emulator.
    #[arg(long, default_value = "cpu")]
    device: stagewise_cuda::DeviceSpec,
}

/// Parses a subcommand's arguments exactly as the command line would.
#[derive(Parser)]
struct Sub<A: Args> {
    #[command(flatten)]
    args: A,
}

fn parse<A: Args>(name: &str, args: &[String]) -> Result<A> {
    let argv = std::iter::once(name.to_string()).chain(args.iter().cloned());
    Ok(Sub::<A>::try_parse_from(argv)
        .with_context(|| format!("internal arguments of {name}: {args:?}"))?
        .args)
}

pub fn reproduce(a: &ReproduceArgs) -> Result<()> {
    let name = match &a.config {
        Some(p) => {
            let stem = p
                .file_stem()
                .map_or("run".into(), |s| s.to_string_lossy().into_owned());
            match a.sweep_index {
                Some(i) => format!("{stem}-{i}"),
                None => stem,
            }
        }
        None => "quick".into(),
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&name));
    let run = out.to_string_lossy().into_owned();

    eprintln!("[1/6] train -> {run}");
    let resume = out.join("config.yaml").is_file();
    crate::run::train(&TrainArgs {
        config: a.config.clone(),
        sets: a.sets.clone(),
        out: Some(out.clone()),
        resume,
        sweep_index: a.sweep_index,
        device: a.device,
    })?;

    let sampler = match &a.sampler {
        Some(p) => p.clone(),
        None => {
            let (file, text) = if a.quick || a.config.is_none() {
                ("sampler-tiny.yaml", SAMPLER_TINY)
            } else {
                ("sampler-paper.yaml", SAMPLER_PAPER)
            };
            let path = out.join(file);
            if !path.is_file() {
                write_atomic(&path, text.as_bytes())?;
            }
            path
        }
    };
    let sweep = crate::llc::config_name(&sampler);
    let llc = vec![
        run.clone(),
        "--config".into(),
        sampler.to_string_lossy().into_owned(),
    ];
    eprintln!("[2/6] llc {}", llc.join(" "));
    let mut llc_args = parse::<crate::llc::RunArgs>("llc", &llc)?;
    llc_args.select = a.select.clone();
    llc_args.device = a.device;
    crate::llc::run(&llc_args)?;

    eprintln!("[3/6] ed {run}");
    crate::ed::ed(&parse("ed", &[run.clone()])?)?;
    eprintln!("[4/6] stages {run} --llc {sweep}");
    crate::stages::stages_cmd(&parse(
        "stages",
        &[run.clone(), "--llc".into(), sweep.clone()],
    )?)?;
    let mut ind = vec![run.clone()];
    if a.hessian {
        ind.push("--hessian".into());
    }
    eprintln!("[5/6] indicators {}", ind.join(" "));
    crate::indicators::indicators_cmd(&parse("indicators", &ind)?)?;
    eprintln!("[6/6] report {run}");
    crate::report::report(&parse("report", &[run.clone(), "--llc".into(), sweep])?)?;
    Ok(())
}
