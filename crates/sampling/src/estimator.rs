//! The LLC estimate from chain traces: per chain `nbeta (mean draw loss - L(w*))`, their mean
//! and (unbiased) standard deviation over chains, the pooled loss moments, WBIC, and
//! diagnostics (R-hat across chains, fraction of draws below the initial loss).

use crate::chains::ChainTrace;

#[derive(Clone, Debug, PartialEq)]
pub struct LlcEstimate {
    pub init_loss: f64,
    pub nbeta: f64,
    /// LLC of each chain (NaN for a chain that failed).
    pub per_chain: Vec<f64>,
    /// Mean and sample standard deviation over the chains that finished.
    pub mean: f64,
    pub std: f64,
    /// Mean and standard deviation of all finished draws' losses.
    pub loss_mean: f64,
    pub loss_std: f64,
    /// `n E[L]` when the dataset size `n` is known.
    pub wbic: Option<f64>,
    /// Gelman-Rubin R-hat of the loss traces across finished chains.
    pub rhat: f64,
    /// Fraction of draws whose loss is below the initial loss.
    pub frac_below_init: f64,
    /// Failure messages of chains that stopped early; their results are excluded.
    pub failures: Vec<String>,
}

impl LlcEstimate {
    pub fn from_traces(traces: &[ChainTrace], init_loss: f64, nbeta: f64, n: Option<f64>) -> Self {
        let ok: Vec<&ChainTrace> = traces
            .iter()
            .filter(|t| t.failure.is_none() && !t.losses.is_empty())
            .collect();
        let per_chain: Vec<f64> = traces
            .iter()
            .map(|t| match t.failure {
                None if !t.losses.is_empty() => nbeta * (mean(&t.losses) - init_loss),
                _ => f64::NAN,
            })
            .collect();
        let finished: Vec<f64> = per_chain
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let all: Vec<f64> = ok.iter().flat_map(|t| t.losses.iter().copied()).collect();
        let loss_mean = mean(&all);
        let loss_std = (all.iter().map(|v| (v - loss_mean).powi(2)).sum::<f64>()
            / all.len().max(1) as f64)
            .sqrt();
        LlcEstimate {
            init_loss,
            nbeta,
            mean: mean(&finished),
            std: sample_std(&finished),
            loss_mean,
            loss_std,
            wbic: n.map(|n| n * loss_mean),
            rhat: rhat(&ok.iter().map(|t| t.losses.as_slice()).collect::<Vec<_>>()),
            frac_below_init: all.iter().filter(|v| **v < init_loss).count() as f64
                / all.len().max(1) as f64,
            failures: traces.iter().filter_map(|t| t.failure.clone()).collect(),
            per_chain,
        }
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn sample_std(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return f64::NAN;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

/// Gelman-Rubin potential scale reduction over equal-length chains (NaN for fewer than 2).
pub fn rhat(chains: &[&[f64]]) -> f64 {
    let m = chains.len();
    let n = chains.iter().map(|c| c.len()).min().unwrap_or(0);
    if m < 2 || n < 2 {
        return f64::NAN;
    }
    let means: Vec<f64> = chains.iter().map(|c| mean(&c[..n])).collect();
    let grand = mean(&means);
    let b = n as f64 / (m - 1) as f64 * means.iter().map(|x| (x - grand).powi(2)).sum::<f64>();
    let w = chains
        .iter()
        .map(|c| sample_std(&c[..n]).powi(2))
        .sum::<f64>()
        / m as f64;
    let var_plus = (n - 1) as f64 / n as f64 * w + b / n as f64;
    (var_plus / w).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llc_is_nbeta_times_excess_loss_per_chain() {
        let t = |l: &[f64]| ChainTrace {
            losses: l.to_vec(),
            distances: vec![0.0; l.len()],
            failure: None,
        };
        let traces = vec![t(&[1.0, 1.2, 1.4]), t(&[1.0, 1.0, 1.3])];
        let e = LlcEstimate::from_traces(&traces, 1.0, 10.0, Some(100.0));
        assert!((e.per_chain[0] - 2.0).abs() < 1e-12 && (e.per_chain[1] - 1.0).abs() < 1e-12);
        assert!((e.mean - 1.5).abs() < 1e-12);
        assert!((e.std - (0.5f64).sqrt()).abs() < 1e-12);
        assert!((e.wbic.unwrap() - 100.0 * 6.9 / 6.0).abs() < 1e-9);
        assert_eq!(e.frac_below_init, 0.0);
        let mut failed = traces.clone();
        failed[1].failure = Some("chain 1: loss is NaN at step 2 (draw 2)".into());
        let e = LlcEstimate::from_traces(&failed, 1.0, 10.0, None);
        assert!(e.per_chain[1].is_nan() && (e.mean - 2.0).abs() < 1e-12 && e.failures.len() == 1);
    }

    #[test]
    fn rhat_is_one_for_identical_chains_and_large_for_separated_ones() {
        let a: Vec<f64> = (0..100).map(|i| (i as f64 * 0.7).sin()).collect();
        assert!((rhat(&[&a, &a]) - (99.0f64 / 100.0).sqrt()).abs() < 1e-12);
        let b: Vec<f64> = a.iter().map(|x| x + 10.0).collect();
        assert!(rhat(&[&a, &b]) > 5.0);
    }
}
