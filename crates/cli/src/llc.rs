//! `stagewise llc RUN --config SAMPLER.yaml` and `stagewise llc check`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use stagewise_pipeline::known::{KnownModel, KnownOptions, check as check_known};
use stagewise_pipeline::llc::{LlcOptions, LlcResult, PerLaunch, Sampler, StepSelection, llc};
use stagewise_pipeline::{Backend, RunDir};
use stagewise_sampling::SamplingMethod;

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
    /// On a device: checkpoints whose chains run together in one set of launches (Q =
    /// checkpoints x chains weight sets; more fills a large GPU better, at more memory).
    #[arg(long, default_value_t = 1)]
    pub checkpoints_per_launch: usize,
    /// On a device: chains per set of launches (default: all of a checkpoint's chains; fewer
    /// keeps each launch's working set in the GPU's L2 cache, see `bench gpu`).
    #[arg(long)]
    pub chains_per_launch: Option<usize>,
}

impl DeviceArgs {
    pub fn open(&self) -> Result<(Backend, PerLaunch)> {
        let per = PerLaunch {
            checkpoints: self.checkpoints_per_launch,
            chains: self.chains_per_launch,
        };
        Ok((Backend::open(self.device, crate::tf32())?, per))
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
    let run = RunDir::local(run);
    // The run, the sampler and the selection are checked before a device is opened.
    let ckpts = stagewise_pipeline::llc::Checkpoints::open(&run)?;
    let sampler = Sampler::load(config, &a.sets)?;
    ckpts.select(&a.select.selection())?;
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

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Model {
    /// `f(x) = x prod_i w_i^{p_i}` at the origin: learning coefficient min_i 1/(2 p_i).
    Polynomial,
    /// Reduced-rank regression `B A x` (`--dims M,H,N`, `--rank r`): Aoyagi-Watanabe formula.
    Rrr,
    /// Deep linear network `W_L ... W_1 x` (`--widths H0,H1,...,HL`, `--rank r`): Aoyagi's formula.
    Dln,
}

#[derive(Args)]
pub struct CheckArgs {
    #[arg(long, value_enum, default_value = "polynomial")]
    model: Model,
    /// Powers p_i of the polynomial model.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    powers: Vec<u32>,
    /// Input, hidden and output dimensions of the reduced-rank regression.
    #[arg(long, value_delimiter = ',', default_value = "5,3,5")]
    dims: Vec<usize>,
    /// Layer widths of the deep linear network, input first.
    #[arg(long, value_delimiter = ',', default_value = "4,3,5,2")]
    widths: Vec<usize>,
    /// Rank of the true map (reduced-rank regression and deep linear network).
    #[arg(long, default_value_t = 1)]
    rank: usize,
    /// Data size n.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Minibatch size (default: full batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Standard deviation of the label noise.
    #[arg(long, default_value_t = 0.0)]
    sigma: f64,
    /// SGLD step size.
    #[arg(long, default_value_t = 1e-3)]
    eps: f64,
    /// n * beta (default: n / ln n).
    #[arg(long)]
    nbeta: Option<f64>,
    /// Localization strength.
    #[arg(long, default_value_t = 1.0)]
    gamma: f64,
    /// Sampler: sgld, rmsprop_sgld or sgnht.
    #[arg(long, default_value = "sgld", value_parser = parse_method)]
    method: SamplingMethod,
    /// SGNHT's diffusion factor.
    #[arg(long, default_value_t = 0.01)]
    diffusion_factor: f64,
    #[arg(long, default_value_t = 8)]
    chains: usize,
    #[arg(long, default_value_t = 20_000)]
    draws: usize,
    #[arg(long, default_value_t = 1_000)]
    burnin: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_method(s: &str) -> Result<SamplingMethod, String> {
    s.parse()
}

pub fn check(a: &CheckArgs) -> Result<()> {
    let r = check_known(&KnownOptions {
        model: match a.model {
            Model::Polynomial => KnownModel::Polynomial,
            Model::Rrr => KnownModel::Rrr,
            Model::Dln => KnownModel::Dln,
        },
        powers: a.powers.clone(),
        dims: a.dims.clone(),
        widths: a.widths.clone(),
        rank: a.rank,
        n: a.n,
        batch: a.batch,
        sigma: a.sigma,
        eps: a.eps,
        nbeta: a.nbeta,
        gamma: a.gamma,
        method: a.method,
        diffusion_factor: a.diffusion_factor,
        chains: a.chains,
        draws: a.draws,
        burnin: a.burnin,
        seed: a.seed,
    })?;
    let e = &r.estimate;
    if a.json {
        let v = serde_json::json!({
            "model": r.label, "method": a.method.name(), "n": a.n, "nbeta": r.nbeta, "eps": a.eps, "gamma": a.gamma,
            "chains": a.chains, "draws": a.draws, "seed": a.seed, "true_lc": r.true_lc,
            "llc_mean": e.mean, "llc_std": e.std, "llc_per_chain": e.per_chain, "rhat": e.rhat,
            "mala_accept": if e.mala_accept.is_finite() { Some(e.mala_accept) } else { None },
            "failures": e.failures,
        });
        println!("{v}");
    } else {
        println!(
            "model: {}, {}, n = {}, nbeta = {:.4}, eps = {}, gamma = {}",
            r.label, a.method, a.n, r.nbeta, a.eps, a.gamma
        );
        println!("true learning coefficient: {:.4}", r.true_lc);
        println!(
            "estimated LLC: {:.4} +- {:.4} (std over {} chains; R-hat {:.3})",
            e.mean, e.std, a.chains, e.rhat
        );
        if e.mala_accept.is_finite() {
            println!("MALA acceptance: {:.4}", e.mala_accept);
        }
        for f in &e.failures {
            println!("failed: {f}");
        }
    }
    Ok(())
}
