//! `stagewise llc check`: estimated vs true learning coefficients on models with known answers.

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use stagewise_sampling::toy::Polynomial;
use stagewise_sampling::{ChainConfig, LlcEstimate, Potential, Sgld, sample};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KnownModel {
    /// `f(x) = x prod_i w_i^{p_i}` at the origin: learning coefficient min_i 1/(2 p_i).
    Polynomial,
}

#[derive(Args)]
pub struct CheckArgs {
    #[arg(long, value_enum, default_value = "polynomial")]
    model: KnownModel,
    /// Powers p_i of the polynomial model.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    powers: Vec<u32>,
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

pub fn check(a: &CheckArgs) -> Result<()> {
    for (name, v) in [("--eps", a.eps), ("--gamma", a.gamma), ("--sigma", a.sigma)] {
        if !(v >= 0.0 && v.is_finite()) {
            bail!("{name} = {v}: expected a finite value >= 0");
        }
    }
    if a.eps == 0.0 || a.n < 2 || a.chains == 0 || a.draws == 0 {
        bail!("--eps must be positive, --n at least 2, --chains and --draws at least 1");
    }
    if a.powers.is_empty() || a.powers.contains(&0) {
        bail!(
            "--powers = {:?}: expected positive integers, e.g. 1,2",
            a.powers
        );
    }
    let KnownModel::Polynomial = a.model;
    let pot = Polynomial::new(a.powers.clone(), a.n, a.sigma, a.batch, a.seed);
    let nbeta = a.nbeta.unwrap_or(a.n as f64 / (a.n as f64).ln());
    let sgld = Sgld {
        epsilon: a.eps,
        nbeta,
        gamma: a.gamma,
        weight_decay: 0.0,
        noise_level: 1.0,
        bounding_box: None,
    };
    let mut cfg = ChainConfig::new(a.chains, a.draws, a.seed);
    cfg.burnin = a.burnin;
    let w0 = vec![0.0f64; a.powers.len()];
    let traces = sample(&pot, &w0, &sgld, None, &cfg);
    let e = LlcEstimate::from_traces(
        &traces,
        Potential::<f64>::init_loss(&pot, &w0),
        nbeta,
        Some(a.n as f64),
    );
    let truth = pot.learning_coefficient();
    if a.json {
        let v = serde_json::json!({
            "model": "polynomial", "powers": a.powers, "n": a.n, "nbeta": nbeta, "eps": a.eps,
            "gamma": a.gamma, "chains": a.chains, "draws": a.draws, "seed": a.seed,
            "true_lc": truth, "llc_mean": e.mean, "llc_std": e.std, "llc_per_chain": e.per_chain,
            "rhat": e.rhat, "failures": e.failures,
        });
        println!("{v}");
    } else {
        println!(
            "model: polynomial powers {:?}, n = {}, nbeta = {nbeta:.4}, eps = {}, gamma = {}",
            a.powers, a.n, a.eps, a.gamma
        );
        println!("true learning coefficient: {truth:.4}");
        println!(
            "estimated LLC: {:.4} +- {:.4} (std over {} chains; R-hat {:.3})",
            e.mean, e.std, a.chains, e.rhat
        );
        for f in &e.failures {
            println!("failed: {f}");
        }
    }
    Ok(())
}
