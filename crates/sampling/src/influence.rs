//! Susceptibilities and Bayesian influence functions from observed chains
//! ([`crate::observed`]), as devinterp 2.0 defines them, with error bars from the chains.
//!
//! * Susceptibility of restriction C to observed value x: with `phi = P - L0`,
//!   `chi_C(x) = E_C[phi P] - E_C[phi l_x] - E_C[phi] (E_full[P] - E_full[l_x])`, expectations
//!   over all finished draws of all chains (devinterp's `compute_susceptibilities`). Computed in
//!   the equal, better conditioned form `-Cov_C(P, l_x - P) + E_C[phi] (E_C[P - l_x] -
//!   E_full[P - l_x])`.
//! * BIF(i, j) = `Corr(l_i, l_j)` over draws, the chains stacked or averaged per draw first
//!   (devinterp's `reduce_chain_dimension_method` "stack" / "mean").

use crate::moments::{Moments, ess};
use crate::observed::ObservedRestriction;

/// A restriction's susceptibility to each observed value.
#[derive(Clone, Debug, PartialEq)]
pub struct Susceptibility {
    /// Over all finished draws.
    pub value: Vec<f64>,
    /// Each finished chain's own estimate (its moments against the full restriction's pooled
    /// means), whose spread gives the standard error.
    pub per_chain: Vec<Vec<f64>>,
    /// Effective sample size of the driver `P`, summed over the finished chains.
    pub ess: f64,
    /// Draws the estimate pools.
    pub draws: u64,
}

/// `chi` of every value from restricted moments `c` and the full restriction's pooled `full`.
fn chi(c: &Moments, full: &Moments, init_loss: f64) -> Vec<f64> {
    let e_phi = c.mean_p - init_loss;
    (0..c.len())
        .map(|i| {
            let cov = c.cov_px(i) - c.var_p();
            let shift = (c.mean_p - c.mean_x[i]) - (full.mean_p - full.mean_x[i]);
            -cov + e_phi * shift
        })
        .collect()
}

/// The susceptibility of `restricted` given the unrestricted chains `full` (same observables)
/// and `init_loss` = L0, the loss at w* of the sampling task.
pub fn susceptibility(
    full: &ObservedRestriction,
    restricted: &ObservedRestriction,
    init_loss: f64,
) -> Susceptibility {
    let f = full.pooled();
    let c = restricted.pooled();
    let finished = restricted.chains.iter().filter(|c| c.finished());
    Susceptibility {
        value: chi(&c, &f, init_loss),
        per_chain: finished
            .clone()
            .map(|ch| chi(&ch.moments, &f, init_loss))
            .collect(),
        ess: finished
            .map(|ch| ess(&ch.driver))
            .filter(|e| e.is_finite())
            .sum(),
        draws: c.n,
    }
}

impl Susceptibility {
    /// Mean over the values in `range` (e.g. an observable's tokens) and its standard error
    /// over chains (NaN with fewer than two chains).
    pub fn mean_over(&self, range: std::ops::Range<usize>) -> (f64, f64) {
        self.mean_of(&range.collect::<Vec<_>>())
    }

    /// Mean over the values at `idx` and its standard error over chains.
    pub fn mean_of(&self, idx: &[usize]) -> (f64, f64) {
        let mean = |v: &[f64]| idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64;
        let per: Vec<f64> = self.per_chain.iter().map(|v| mean(v)).collect();
        (mean(&self.value), standard_error(&per))
    }

    /// The standard error of each value over chains.
    pub fn standard_errors(&self) -> Vec<f64> {
        (0..self.value.len())
            .map(|i| standard_error(&self.per_chain.iter().map(|v| v[i]).collect::<Vec<_>>()))
            .collect()
    }
}

/// Sample standard deviation over `values` divided by `sqrt(len)`; NaN for fewer than two.
pub fn standard_error(values: &[f64]) -> f64 {
    let k = values.len();
    if k < 2 {
        return f64::NAN;
    }
    let mean = values.iter().sum::<f64>() / k as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
    (var / k as f64).sqrt()
}

/// How chains combine into the BIF's draws (devinterp's `reduce_chain_dimension_method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChainReduce {
    /// Every (chain, draw) is a draw.
    #[default]
    Stack,
    /// Draw d is the mean over chains of their draw d.
    Mean,
}

impl std::str::FromStr for ChainReduce {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stack" => Ok(ChainReduce::Stack),
            "mean" => Ok(ChainReduce::Mean),
            other => Err(format!("{other:?}: expected \"stack\" or \"mean\"")),
        }
    }
}

/// A Bayesian influence matrix over `m` observed values.
#[derive(Clone, Debug, PartialEq)]
pub struct Bif {
    pub m: usize,
    /// Row-major `m x m`, exactly symmetric; the diagonal is 1 (for a correlation).
    pub value: Vec<f64>,
    /// Standard error of each entry over the chains' own matrices (stacked chains only).
    pub se: Option<Vec<f64>>,
    pub draws: u64,
}

/// The BIF (or, with `covariance`, the loss covariance) of a restriction's observed values;
/// needs the chains' full moments ([`crate::observed::ObserveConfig::full`]), and for
/// [`ChainReduce::Mean`] the chain-mean moments.
pub fn bif(r: &ObservedRestriction, reduce: ChainReduce, covariance: bool) -> Result<Bif, String> {
    let need = "the chains kept no full co-moment matrix (ObserveConfig::full)";
    let m = r.chains.first().map(|c| c.moments.len()).unwrap_or(0);
    match reduce {
        ChainReduce::Stack => {
            let pooled = r.pooled();
            if pooled.c_xx.is_none() {
                return Err(need.into());
            }
            let per: Vec<Vec<f64>> = r
                .chains
                .iter()
                .filter(|c| c.finished())
                .map(|c| c.moments.correlation(covariance))
                .collect();
            let se = (per.len() >= 2).then(|| {
                (0..m * m)
                    .map(|k| standard_error(&per.iter().map(|v| v[k]).collect::<Vec<_>>()))
                    .collect()
            });
            Ok(Bif {
                m,
                value: pooled.correlation(covariance),
                se,
                draws: pooled.n,
            })
        }
        ChainReduce::Mean => {
            let mo = r
                .chain_mean
                .as_ref()
                .ok_or("no chain-mean moments were kept (ObserveConfig::chain_mean)")?;
            if mo.c_xx.is_none() {
                return Err(need.into());
            }
            Ok(Bif {
                m,
                value: mo.correlation(covariance),
                se: None,
                draws: mo.n,
            })
        }
    }
}

/// Means of the `t x t` blocks of an `m x m` matrix (`m = n t`): the token-level BIF averaged
/// to one value per pair of samples (devinterp's `average_tokenwise_bif`), `n x n`.
pub fn block_mean(values: &[f64], m: usize, t: usize) -> Vec<f64> {
    assert!(t > 0 && m.is_multiple_of(t) && values.len() == m * m);
    let n = m / t;
    let mut out = vec![0.0; n * n];
    for i in 0..m {
        for j in 0..m {
            out[(i / t) * n + j / t] += values[i * m + j];
        }
    }
    out.iter_mut().for_each(|v| *v /= (t * t) as f64);
    out
}
