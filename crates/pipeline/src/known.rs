//! Estimated vs true learning coefficients on models with known answers (`llc check`): a check
//! of the sampler and its settings before trusting it on a transformer.

use anyhow::{Result, bail};
use stagewise_sampling::sgld::{RMSPROP_ALPHA, RMSPROP_EPS, SGNHT_DIFFUSION};
use stagewise_sampling::toy::{Dln, Polynomial, dln_multiplicity};
use stagewise_sampling::{ChainConfig, LlcEstimate, Potential, SamplingMethod, Sgld, sample};

/// A model whose learning coefficient is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KnownModel {
    /// `f(x) = x prod_i w_i^{p_i}` at the origin: learning coefficient min_i 1/(2 p_i).
    #[default]
    Polynomial,
    /// Reduced-rank regression `B A x` (`dims` M,H,N, `rank` r): Aoyagi-Watanabe formula.
    Rrr,
    /// Deep linear network `W_L ... W_1 x` (`widths` H0,H1,...,HL, `rank` r): Aoyagi's formula.
    Dln,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KnownOptions {
    pub model: KnownModel,
    /// Powers p_i of the polynomial model.
    pub powers: Vec<u32>,
    /// Input, hidden and output dimensions of the reduced-rank regression.
    pub dims: Vec<usize>,
    /// Layer widths of the deep linear network, input first.
    pub widths: Vec<usize>,
    /// Rank of the true map (reduced-rank regression and deep linear network).
    pub rank: usize,
    /// Data size n.
    pub n: usize,
    /// Minibatch size (default: full batch).
    pub batch: Option<usize>,
    /// Standard deviation of the label noise.
    pub sigma: f64,
    /// SGLD step size.
    pub eps: f64,
    /// n * beta (default: n / ln n).
    pub nbeta: Option<f64>,
    /// Localization strength.
    pub gamma: f64,
    pub method: SamplingMethod,
    /// SGNHT's diffusion factor.
    pub diffusion_factor: f64,
    pub chains: usize,
    pub draws: usize,
    pub burnin: usize,
    pub seed: u64,
}

impl Default for KnownOptions {
    fn default() -> Self {
        KnownOptions {
            model: KnownModel::Polynomial,
            powers: vec![1, 2],
            dims: vec![5, 3, 5],
            widths: vec![4, 3, 5, 2],
            rank: 1,
            n: 1000,
            batch: None,
            sigma: 0.0,
            eps: 1e-3,
            nbeta: None,
            gamma: 1.0,
            method: SamplingMethod::Sgld,
            diffusion_factor: SGNHT_DIFFUSION,
            chains: 8,
            draws: 20_000,
            burnin: 1_000,
            seed: 0,
        }
    }
}

/// The check's answer.
#[derive(Clone, Debug)]
pub struct KnownResult {
    /// The model in words.
    pub label: String,
    pub nbeta: f64,
    pub true_lc: f64,
    pub estimate: LlcEstimate,
}

/// Samples the model at its true parameter and compares the LLC with the known answer.
pub fn check(a: &KnownOptions) -> Result<KnownResult> {
    for (name, v) in [("--eps", a.eps), ("--gamma", a.gamma), ("--sigma", a.sigma)] {
        if !(v >= 0.0 && v.is_finite()) {
            bail!("{name} = {v}: expected a finite value >= 0");
        }
    }
    if a.eps == 0.0 || a.n < 2 || a.chains == 0 || a.draws == 0 {
        bail!("--eps must be positive, --n at least 2, --chains and --draws at least 1");
    }
    let nbeta = a.nbeta.unwrap_or(a.n as f64 / (a.n as f64).ln());
    let method = a
        .method
        .method(RMSPROP_ALPHA, RMSPROP_EPS, a.diffusion_factor)
        .map_err(|(field, msg)| anyhow::anyhow!("--{}: {msg}", field.replace('_', "-")))?;
    let sgld = Sgld {
        nbeta,
        method,
        ..Sgld::from_temperature(a.eps, a.gamma, 1.0, 1.0)
    };
    let mut cfg = ChainConfig::new(a.chains, a.draws, a.seed);
    cfg.burnin = a.burnin;
    let (label, true_lc, estimate) = match a.model {
        KnownModel::Polynomial => {
            if !a.powers.iter().any(|p| *p > 0) {
                bail!(
                    "--powers = {:?}: expected non-negative integers, at least one positive, e.g. 1,2 (a zero is a flat direction)",
                    a.powers
                );
            }
            let pot = Polynomial::new(a.powers.clone(), a.n, a.sigma, a.batch, a.seed);
            let w0 = vec![0.0f64; a.powers.len()];
            (
                format!("polynomial powers {:?}", a.powers),
                pot.learning_coefficient(),
                estimate(&pot, &w0, &sgld, &cfg, a.n),
            )
        }
        KnownModel::Rrr | KnownModel::Dln => {
            let rrr = a.model == KnownModel::Rrr;
            // Their targets are noise-free and their loss is the full batch's.
            for (flag, given) in [("--sigma", a.sigma != 0.0), ("--batch", a.batch.is_some())] {
                if given {
                    bail!(
                        "{flag} applies to --model polynomial only; the {} check has noise-free targets and a full-batch loss",
                        if rrr { "rrr" } else { "dln" }
                    );
                }
            }
            let (flag, widths) = if rrr {
                ("--dims", a.dims.clone())
            } else {
                ("--widths", a.widths.clone())
            };
            let (count_ok, expect) = if rrr {
                (widths.len() == 3, "three dimensions M,H,N")
            } else {
                (widths.len() >= 3, "at least three widths H0,H1,...,HL")
            };
            if !count_ok || widths.contains(&0) {
                bail!("{flag} = {widths:?}: expected {expect}, all positive");
            }
            let smallest = widths.iter().copied().min().unwrap_or(0);
            if a.rank > smallest {
                bail!(
                    "--rank {} exceeds the smallest width {smallest} of {flag} {widths:?}",
                    a.rank
                );
            }
            let pot = Dln::new(widths.clone(), a.rank, a.n, a.seed);
            let w0 = pot.truth();
            (
                format!(
                    "{} widths {widths:?} rank {} (multiplicity {})",
                    if rrr { "rrr" } else { "dln" },
                    a.rank,
                    dln_multiplicity(&widths, a.rank)
                ),
                pot.learning_coefficient(),
                estimate(&pot, &w0, &sgld, &cfg, a.n),
            )
        }
    };
    Ok(KnownResult {
        label,
        nbeta,
        true_lc,
        estimate,
    })
}

fn estimate<P: Potential<f64>>(
    pot: &P,
    w0: &[f64],
    sgld: &Sgld,
    cfg: &ChainConfig,
    n: usize,
) -> LlcEstimate {
    let traces = sample(pot, w0, sgld, None, cfg);
    LlcEstimate::from_traces(&traces, pot.init_loss(w0), &[], sgld.nbeta, Some(n as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(model: KnownModel) -> KnownOptions {
        KnownOptions {
            model,
            draws: 20,
            burnin: 0,
            chains: 2,
            ..KnownOptions::default()
        }
    }

    #[test]
    fn flags_that_do_nothing_for_the_model_are_errors() {
        for model in [KnownModel::Rrr, KnownModel::Dln] {
            let sigma = check(&KnownOptions {
                sigma: 1.0,
                ..quick(model)
            });
            assert!(
                sigma
                    .unwrap_err()
                    .to_string()
                    .contains("--sigma applies to --model polynomial")
            );
            let batch = check(&KnownOptions {
                batch: Some(10),
                ..quick(model)
            });
            assert!(batch.unwrap_err().to_string().contains("--batch applies"));
        }
        check(&KnownOptions {
            sigma: 1.0,
            batch: Some(10),
            ..quick(KnownModel::Polynomial)
        })
        .unwrap();
    }

    #[test]
    fn zero_powers_are_accepted_and_all_zero_is_not() {
        let r = check(&KnownOptions {
            powers: vec![0, 2],
            ..quick(KnownModel::Polynomial)
        })
        .unwrap();
        assert_eq!(r.true_lc, 0.25);
        assert!(r.estimate.mean.is_finite());
        let e = check(&KnownOptions {
            powers: vec![0, 0],
            ..quick(KnownModel::Polynomial)
        })
        .unwrap_err();
        assert!(e.to_string().contains("at least one positive"), "{e}");
    }
}
