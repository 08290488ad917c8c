//! Is a sampler setting usable at a checkpoint? The authors' calibration lore as checks: the
//! chains finish (no NaN/Inf blow-up), the LLC trace has plateaued, and the LLC is not negative
//! (a negative LLC means the chains found lower loss than w*: too little localization, too
//! large nbeta, or a checkpoint that is not a local minimum).

use crate::chains::ChainTrace;
use crate::estimator::LlcEstimate;

#[derive(Clone, Debug, PartialEq)]
pub struct Stability {
    /// No chain stopped on a non-finite loss or weight.
    pub finished: bool,
    /// Mean over chains of `nbeta (L_draw - L(w*))` over the third and the last quarter of the
    /// draws.
    pub third_quarter: f64,
    pub last_quarter: f64,
    /// The last quarter differs from the third by at most 10 % (or two standard errors of the
    /// difference across chains, if that is larger).
    pub plateaued: bool,
    pub non_negative: bool,
}

impl Stability {
    pub fn of(traces: &[ChainTrace], estimate: &LlcEstimate) -> Self {
        let finished = estimate.failures.is_empty() && traces.iter().all(|t| !t.losses.is_empty());
        let (nbeta, init) = (estimate.nbeta, estimate.init_loss);
        // Per chain: mean excess loss in quarters 3 and 4.
        let quarters: Vec<(f64, f64)> = traces
            .iter()
            .filter(|t| t.failure.is_none() && t.losses.len() >= 4)
            .map(|t| {
                let n = t.losses.len();
                let q = |a: usize, b: usize| {
                    nbeta * (t.losses[a..b].iter().sum::<f64>() / (b - a) as f64 - init)
                };
                (q(n / 2, 3 * n / 4), q(3 * n / 4, n))
            })
            .collect();
        let c = quarters.len() as f64;
        let mean = |f: fn(&(f64, f64)) -> f64| quarters.iter().map(f).sum::<f64>() / c;
        let (q3, q4) = (mean(|q| q.0), mean(|q| q.1));
        let diffs: Vec<f64> = quarters.iter().map(|q| q.1 - q.0).collect();
        let dm = q4 - q3;
        let se = if quarters.len() > 1 {
            (diffs.iter().map(|d| (d - dm).powi(2)).sum::<f64>() / (c - 1.0) / c).sqrt()
        } else {
            0.0
        };
        Stability {
            finished,
            third_quarter: q3,
            last_quarter: q4,
            plateaued: !quarters.is_empty() && dm.abs() <= (0.1 * q4.abs()).max(2.0 * se),
            non_negative: estimate.mean >= 0.0,
        }
    }

    pub fn stable(&self) -> bool {
        self.finished && self.plateaued && self.non_negative
    }

    /// Why a setting is not stable ("" when it is).
    pub fn verdict(&self) -> String {
        let mut why = Vec::new();
        if !self.finished {
            why.push("chains blew up");
        }
        // Without a finished chain there is no trace to judge.
        if self.last_quarter.is_finite() {
            if !self.plateaued {
                why.push("trace not plateaued");
            }
            if !self.non_negative {
                why.push("negative LLC");
            }
        }
        if why.is_empty() {
            "stable".into()
        } else {
            why.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traces(f: impl Fn(usize, usize) -> f64) -> Vec<ChainTrace> {
        (0..4)
            .map(|c| ChainTrace {
                losses: (0..400).map(|d| f(c, d)).collect(),
                distances: vec![0.0; 400],
                parts: vec![vec![]; 400],
                mala: vec![f64::NAN; 400],
                failure: None,
            })
            .collect()
    }

    fn check(t: &[ChainTrace]) -> Stability {
        Stability::of(t, &LlcEstimate::from_traces(t, 1.0, &[], 10.0, None))
    }

    #[test]
    fn plateau_rise_negative_and_blow_up() {
        let noise = |c: usize, d: usize| 0.01 * ((c * 7919 + d * 104729) % 13) as f64 / 13.0;
        // Rises to 1.5 and stays there (with noise): stable.
        let flat = traces(|c, d| 1.5 - 0.5 * (-(d as f64) / 20.0).exp() + noise(c, d));
        let s = check(&flat);
        assert!(s.stable(), "{s:?}");
        assert!((s.last_quarter - 5.05).abs() < 0.05);
        // Still rising linearly: the last quarter is 1/3 above the third.
        let rising = traces(|c, d| 1.0 + d as f64 / 400.0 + noise(c, d));
        assert_eq!(check(&rising).verdict(), "trace not plateaued");
        // Below the initial loss.
        let below = traces(|c, d| 0.9 + noise(c, d));
        assert_eq!(check(&below).verdict(), "negative LLC");
        let mut failed = flat.clone();
        failed[2].failure = Some("chain 2: loss is NaN at step 9 (draw 9)".into());
        failed[2].losses.truncate(9);
        assert_eq!(check(&failed).verdict(), "chains blew up");
        for t in &mut failed {
            t.failure = Some("chain: loss is inf at step 3 (draw 3)".into());
        }
        assert_eq!(check(&failed).verdict(), "chains blew up");
    }
}
