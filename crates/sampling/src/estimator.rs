//! The LLC estimate from chain traces: per chain `nbeta (mean draw loss - L(w*))`, their mean
//! and (unbiased) standard deviation over chains, the reference's likelihood-derived metrics
//! (pooled loss moments, WBIC, draw-level LLC spread), per-token LLCs, and diagnostics (R-hat
//! across chains, fraction of draws below the initial loss, MALA acceptance, distance from w*).

use crate::chains::ChainTrace;

#[derive(Clone, Debug, PartialEq)]
pub struct LlcEstimate {
    pub init_loss: f64,
    pub nbeta: f64,
    /// LLC of each chain (NaN for a chain that failed).
    pub per_chain: Vec<f64>,
    /// Mean and sample standard deviation over the chains that finished (devinterp's
    /// `llc/mean` and `llc/std`).
    pub mean: f64,
    pub std: f64,
    /// Mean and standard deviation (ddof 0) of all finished draws' losses (the reference's
    /// `loss/mean`, `loss/std`).
    pub loss_mean: f64,
    pub loss_std: f64,
    /// `nbeta * loss_std`: the reference's `llc/std` (spread of single draws, not of chains).
    pub draw_std: f64,
    /// `n E[L]` and `n std[L]` when the dataset size `n` is known.
    pub wbic: Option<f64>,
    pub wbic_std: Option<f64>,
    /// Each finished chain's draw-loss mean and standard deviation (the reference's
    /// `batch-loss/mean/{chain}`, `batch-loss/std/{chain}`; NaN for failed chains).
    pub chain_loss_mean: Vec<f64>,
    pub chain_loss_std: Vec<f64>,
    /// Per part (token): `L_k(w*)` and `nbeta (E[L_k] - L_k(w*))` pooled over finished draws.
    pub init_parts: Vec<f64>,
    pub per_part: Vec<f64>,
    /// Gelman-Rubin R-hat of the loss traces across finished chains.
    pub rhat: f64,
    /// Fraction of draws whose loss is below the initial loss.
    pub frac_below_init: f64,
    /// Mean MALA acceptance over the draws that have one (NaN if none).
    pub mala_accept: f64,
    /// Mean distance `|w - w*|` over all finished draws.
    pub distance_mean: f64,
    /// Failure messages of chains that stopped early; their results are excluded.
    pub failures: Vec<String>,
}

impl LlcEstimate {
    /// The estimate of `traces` against `L(w*) = init_loss` (and its parts `init_parts`, which
    /// may be empty).
    pub fn from_traces(
        traces: &[ChainTrace],
        init_loss: f64,
        init_parts: &[f64],
        nbeta: f64,
        n: Option<f64>,
    ) -> Self {
        let finished = |t: &&ChainTrace| t.failure.is_none() && !t.losses.is_empty();
        let ok: Vec<&ChainTrace> = traces.iter().filter(finished).collect();
        let per_chain_loss = |f: fn(&[f64]) -> f64| -> Vec<f64> {
            traces
                .iter()
                .map(|t| if finished(&t) { f(&t.losses) } else { f64::NAN })
                .collect()
        };
        let chain_loss_mean = per_chain_loss(mean);
        let chain_loss_std = per_chain_loss(pop_std);
        let per_chain: Vec<f64> = chain_loss_mean
            .iter()
            .map(|m| nbeta * (m - init_loss))
            .collect();
        let done: Vec<f64> = per_chain
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let all: Vec<f64> = ok.iter().flat_map(|t| t.losses.iter().copied()).collect();
        let loss_mean = mean(&all);
        let loss_std = pop_std(&all);
        let per_part = (0..init_parts.len())
            .map(|k| {
                let v: Vec<f64> = ok
                    .iter()
                    .flat_map(|t| t.parts.iter().filter_map(move |p| p.get(k).copied()))
                    .collect();
                nbeta * (mean(&v) - init_parts[k])
            })
            .collect();
        let mala: Vec<f64> = ok
            .iter()
            .flat_map(|t| t.mala.iter().copied().filter(|a| a.is_finite()))
            .collect();
        let dists: Vec<f64> = ok
            .iter()
            .flat_map(|t| t.distances.iter().copied())
            .collect();
        LlcEstimate {
            init_loss,
            nbeta,
            mean: mean(&done),
            std: sample_std(&done),
            loss_mean,
            loss_std,
            draw_std: nbeta * loss_std,
            wbic: n.map(|n| n * loss_mean),
            wbic_std: n.map(|n| n * loss_std),
            chain_loss_mean,
            chain_loss_std,
            init_parts: init_parts.to_vec(),
            per_part,
            rhat: rhat(&ok.iter().map(|t| t.losses.as_slice()).collect::<Vec<_>>()),
            frac_below_init: all.iter().filter(|v| **v < init_loss).count() as f64
                / all.len().max(1) as f64,
            mala_accept: mean(&mala),
            distance_mean: mean(&dists),
            failures: traces.iter().filter_map(|t| t.failure.clone()).collect(),
            per_chain,
        }
    }
}

/// `nbeta (running mean of the draw losses - L(w*))` after each draw: the online LLC trace.
pub fn running_llc(losses: &[f64], init_loss: f64, nbeta: f64) -> Vec<f64> {
    let mut sum = 0.0;
    losses
        .iter()
        .enumerate()
        .map(|(i, l)| {
            sum += l;
            nbeta * (sum / (i + 1) as f64 - init_loss)
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn pop_std(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
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
            distances: vec![0.5; l.len()],
            // Two parts whose mean is the loss.
            parts: l.iter().map(|v| vec![v - 0.1, v + 0.1]).collect(),
            mala: vec![f64::NAN, 0.5, 1.0],
            failure: None,
        };
        let traces = vec![t(&[1.0, 1.2, 1.4]), t(&[1.0, 1.0, 1.3])];
        let e = LlcEstimate::from_traces(&traces, 1.0, &[0.8, 1.2], 10.0, Some(100.0));
        // Pooled loss 6.9/6 = 1.15: per part 10 (1.05 - 0.8) and 10 (1.25 - 1.2).
        assert!((e.per_part[0] - 2.5).abs() < 1e-12 && (e.per_part[1] - 0.5).abs() < 1e-12);
        assert!((e.mala_accept - 0.75).abs() < 1e-12 && e.distance_mean == 0.5);
        assert!((e.chain_loss_mean[0] - 1.2).abs() < 1e-12);
        assert!((e.chain_loss_std[1] - (0.02f64).sqrt()).abs() < 1e-12);
        let var = [1.0, 1.2, 1.4, 1.0, 1.0, 1.3]
            .iter()
            .map(|x| (x - 1.15f64).powi(2))
            .sum::<f64>()
            / 6.0;
        assert!((e.draw_std - 10.0 * var.sqrt()).abs() < 1e-12);
        assert!((e.wbic_std.unwrap() - 100.0 * var.sqrt()).abs() < 1e-9);
        let run = running_llc(&[1.0, 1.2, 1.4], 1.0, 10.0);
        assert!(
            run.iter()
                .zip([0.0, 1.0, 2.0])
                .all(|(a, b)| (a - b).abs() < 1e-12)
        );
        assert!((e.per_chain[0] - 2.0).abs() < 1e-12 && (e.per_chain[1] - 1.0).abs() < 1e-12);
        assert!((e.mean - 1.5).abs() < 1e-12);
        assert!((e.std - (0.5f64).sqrt()).abs() < 1e-12);
        assert!((e.wbic.unwrap() - 100.0 * 6.9 / 6.0).abs() < 1e-9);
        assert_eq!(e.frac_below_init, 0.0);
        let mut failed = traces.clone();
        failed[1].failure = Some("chain 1: loss is NaN at step 2 (draw 2)".into());
        let e = LlcEstimate::from_traces(&failed, 1.0, &[], 10.0, None);
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
