//! `stagewise llc check`: the LLC estimator on models whose learning coefficient is known.

use anyhow::Result;
use clap::{Args, ValueEnum};
use stagewise_pipeline::known::{KnownModel, KnownOptions, check as check_known};
use stagewise_sampling::SamplingMethod;

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

impl CheckArgs {
    pub fn options(&self) -> KnownOptions {
        KnownOptions {
            model: match self.model {
                Model::Polynomial => KnownModel::Polynomial,
                Model::Rrr => KnownModel::Rrr,
                Model::Dln => KnownModel::Dln,
            },
            powers: self.powers.clone(),
            dims: self.dims.clone(),
            widths: self.widths.clone(),
            rank: self.rank,
            n: self.n,
            batch: self.batch,
            sigma: self.sigma,
            eps: self.eps,
            nbeta: self.nbeta,
            gamma: self.gamma,
            method: self.method,
            diffusion_factor: self.diffusion_factor,
            chains: self.chains,
            draws: self.draws,
            burnin: self.burnin,
            seed: self.seed,
        }
    }
}

pub fn check(a: &CheckArgs) -> Result<()> {
    let r = check_known(&a.options())?;
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
