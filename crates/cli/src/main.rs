//! `stagewise`: train in-context regression transformers the way the reference does, faster.

mod bench;
mod calibrate;
mod check;
mod console;
#[cfg(test)]
mod defaults;
mod device;
mod ed;
mod indicators;
mod influence;
mod launch;
mod llc;
mod lm;
mod parity;
mod place;
mod report;
mod reproduce;
mod stages;
mod sweep;
mod task;
mod train;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use llc::{LlcArgs, LlcCommand};

#[derive(Parser)]
#[command(
    name = "stagewise",
    version,
    about = "Developmental interpretability: train, checkpoint and evaluate in-context regression transformers"
)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true, env = "STAGEWISE_THREADS")]
    threads: Option<usize>,
    /// On a CUDA device, let cuBLAS run GEMMs in TF32 on the tensor cores (~1e-3 relative
    /// error, several times faster); default full float32 like PyTorch. The environment
    /// variable takes 1/0, true/false, yes/no, on/off.
    #[arg(long, global = true, env = "STAGEWISE_TF32", value_parser = clap::builder::BoolishValueParser::new())]
    tf32: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model from a config (plain YAML or W&B sweep YAML); without CONFIG, the built-in
    /// quick default (configs/quick.yaml).
    Train(train::TrainArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Local learning coefficient (LLC) over a run's checkpoints:
    /// `stagewise llc RUN_DIR --config SAMPLER.yaml`; or `stagewise llc check ...`.
    Llc(Box<LlcArgs>),
    /// Susceptibilities of weight restrictions (each attention head, layer...) to observables,
    /// all restrictions in one batch: `stagewise susceptibility RUN_DIR --config SAMPLER.yaml`.
    Susceptibility(influence::SusceptibilityArgs),
    /// Bayesian influence function (loss correlations over the local posterior) between
    /// fixed samples: `stagewise bif RUN_DIR --config SAMPLER.yaml`.
    Bif(influence::BifArgs),
    /// Essential dynamics: PCA of the model's outputs across checkpoints, evolutes, vertices
    /// and forms (`stagewise ed RUN_DIR`).
    Ed(ed::EdArgs),
    /// Developmental stages from a run's LLC curve (`stagewise stages RUN_DIR`).
    Stages(stages::StagesArgs),
    /// Structural indicators over checkpoints (weights, LayerNorms, embeddings; Hessian with
    /// `--hessian`): `stagewise indicators RUN_DIR`.
    Indicators(indicators::IndicatorsArgs),
    /// One HTML page (inline SVG, no network) and PNG figures of a run: `stagewise report RUN_DIR`.
    Report(report::ReportArgs),
    /// The whole pipeline: train -> llc -> ed -> stages -> indicators -> report, resumable
    /// (`stagewise reproduce --quick` runs a small version in a few minutes).
    Reproduce(reproduce::ReproduceArgs),
    /// The same training and SGLD steps on the CPU and on a device (`--device cuda`), from the
    /// same weights and data: the largest differences, and a non-zero exit beyond tolerance.
    CheckDevice(device::CheckDeviceArgs),
    /// W&B sweep files: expand, run locally, status, Slurm and Kubernetes launch files.
    #[command(subcommand)]
    Sweep(sweep::SweepCommand),
    /// One task of a sweep: `stagewise run --sweep FILE [--task-index N]` (the index defaults
    /// to the scheduler's: SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX, ...).
    Run(task::RunArgs),
    /// Every run under ROOT in one long table (run, table, step, metric, value, and the run's
    /// and sampler's config as columns): `stagewise collect ROOT --out results.parquet`.
    Collect(task::CollectArgs),
    /// Sends a run's config and tables (metrics, train, LLC) to an MLflow tracking server:
    /// `stagewise mlflow RUN --mlflow URI` (only rows not sent before).
    Mlflow(place::MlflowCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Training steps per second of the L2H4 model (K = 16), optionally next to PyTorch.
    Train(bench::BenchTrainArgs),
    /// SGLD chain-draws per second of the L2H4 model, optionally next to PyTorch.
    Sgld(bench::BenchSgldArgs),
    /// A per-head susceptibility scan at one checkpoint, batched, optionally next to PyTorch
    /// run devinterp's way (a sampling run per restriction).
    Susceptibility(influence::BenchSusceptibilityArgs),
    /// Training steps/s and batched SGLD chain-draws/s on a CUDA device, optionally next to
    /// PyTorch on the same card.
    Gpu(bench::BenchGpuArgs),
    /// Training steps per second of the language model, optionally next to PyTorch.
    Lm(bench::BenchLmArgs),
    /// Sparse parity runs trained together vs one by one (and PyTorch).
    Parity(parity::BenchParityArgs),
}

/// `--tf32` (global): GEMMs on a CUDA device may use TF32 tensor cores.
static TF32: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

pub fn tf32() -> bool {
    TF32.get().copied().unwrap_or(false)
}

/// `--key=value` arguments of `train` that are not its flags: what `wandb agent` passes for a
/// sweep's `${args}` (taken out before parsing; see [`train::run`]).
static AGENT_ARGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn main() {
    // Flags of `train` that take `--flag=value`; any other `--key=value` is an agent argument.
    const TRAIN_FLAGS: &[&str] = &[
        "set",
        "out",
        "resume",
        "sweep-index",
        "device",
        "threads",
        "tf32",
        "help",
        "version",
        "mlflow",
        "mlflow-experiment",
    ];
    let (argv, agent) =
        stagewise_sweep::wandb::split_agent_args(std::env::args().collect(), "train", TRAIN_FLAGS);
    let _ = AGENT_ARGS.set(agent);
    let matches = Cli::command().get_matches_from(argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The flag (not the environment variable, which may be set for every command) is refused
    // where it would change nothing.
    if matches.value_source("tf32") == Some(ValueSource::CommandLine) && !cli.command.on_device() {
        eprintln!(
            "error: --tf32 applies to a CUDA device (--device cuda or emulator); here it would change nothing"
        );
        std::process::exit(2);
    }
    let _ = TF32.set(cli.tf32);
    if let Err(e) = console::setup(cli.threads) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let result = match cli.command {
        Command::Train(args) => train::run(&args),
        Command::Bench(BenchCommand::Train(args)) => stagewise_bench::train(&args.options()),
        Command::Bench(BenchCommand::Lm(args)) => stagewise_bench::lm(&args.options()),
        Command::Bench(BenchCommand::Parity(args)) => stagewise_bench::parity(&args.options()),
        Command::Bench(BenchCommand::Sgld(args)) => stagewise_bench::sgld(&args.options()),
        Command::Bench(BenchCommand::Gpu(args)) => stagewise_bench::gpu(&args.options()),
        Command::Bench(BenchCommand::Susceptibility(args)) => {
            stagewise_bench::susceptibility(&args.options())
        }
        Command::Llc(args) => match *args {
            LlcArgs {
                command: Some(LlcCommand::Check(args)),
                ..
            } => check::check(&args),
            LlcArgs {
                command: Some(LlcCommand::Calibrate(args)),
                ..
            } => calibrate::calibrate(&args),
            LlcArgs { command: None, run } => llc::run(&run),
        },
        Command::Susceptibility(args) => influence::run_susceptibility(&args),
        Command::Bif(args) => influence::run_bif(&args),
        Command::Ed(args) => ed::ed(&args),
        Command::Stages(args) => stages::run(&args),
        Command::Indicators(args) => indicators::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Reproduce(args) => reproduce::run(&args),
        Command::CheckDevice(args) => device::check(&args),
        Command::Sweep(cmd) => sweep::run(&cmd),
        Command::Run(args) => task::run_one(&args),
        Command::Collect(args) => task::collect(&args),
        Command::Mlflow(args) => place::mlflow(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
