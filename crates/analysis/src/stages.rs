//! Developmental stages from the LLC curve (the paper's procedure, section 6.4 of the spec): fit
//! a GP to the LLC against `log(step + 1)`, take the slope, and call the strict local minima of
//! `|slope|` below a threshold the critical points. The reference indexes one checkpoint too
//! early (`np.where(cond[1:-1])` used directly); here the true minimum is reported. The paper
//! then chose boundaries among the candidates by hand; here stages whose LLC change is below a
//! fraction of the curve's range are merged into a neighbour, so noise at the first checkpoints
//! does not make stages.

/// The reference's `d_dt`: average of the backward and forward difference quotients inside,
/// endpoints copy their neighbour.
pub fn d_dt(x: &[f64], y: &[f64]) -> Vec<f64> {
    let n = x.len();
    assert_eq!(n, y.len());
    if n < 3 {
        let s = if n == 2 {
            (y[1] - y[0]) / (x[1] - x[0])
        } else {
            0.0
        };
        return vec![s; n];
    }
    let mut out = vec![0.0; n];
    for i in 1..n - 1 {
        out[i] =
            ((y[i + 1] - y[i]) / (x[i + 1] - x[i]) + (y[i] - y[i - 1]) / (x[i] - x[i - 1])) / 2.0;
    }
    out[0] = out[1];
    out[n - 1] = out[n - 2];
    out
}

/// Indices `i` (interior) where `|slope[i]|` is a strict local minimum and below `max_slope`.
pub fn critical_points(slope: &[f64], max_slope: f64) -> Vec<usize> {
    (1..slope.len().saturating_sub(1))
        .filter(|&i| {
            let a = slope[i].abs();
            a < slope[i - 1].abs() && a < slope[i + 1].abs() && a < max_slope
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// Indices into the checkpoint list.
    pub start: usize,
    pub end: usize,
    /// LLC change over the stage (of the fitted curve).
    pub delta_llc: f64,
}

impl Stage {
    /// "A" when the LLC rises over the stage, "B" when it falls.
    pub fn kind(&self) -> &'static str {
        if self.delta_llc >= 0.0 { "A" } else { "B" }
    }
}

/// Stages between the first and last checkpoint with boundaries at `candidates`; while a stage
/// changes the (fitted) LLC by less than `min_fraction` of the curve's range, it is merged into
/// a neighbour by dropping the boundary with the larger |slope| (the less critical one).
pub fn stages(fit: &[f64], slope: &[f64], candidates: &[usize], min_fraction: f64) -> Vec<Stage> {
    let n = fit.len();
    if n < 2 {
        return vec![];
    }
    let range = fit.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        - fit.iter().copied().fold(f64::INFINITY, f64::min);
    let mut bounds: Vec<usize> = std::iter::once(0)
        .chain(candidates.iter().copied().filter(|&c| c > 0 && c < n - 1))
        .chain(std::iter::once(n - 1))
        .collect();
    bounds.dedup();
    loop {
        let deltas: Vec<f64> = bounds
            .windows(2)
            .map(|w| (fit[w[1]] - fit[w[0]]).abs())
            .collect();
        let Some((small, d)) = deltas
            .iter()
            .copied()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            break;
        };
        if bounds.len() <= 2 || d >= min_fraction * range {
            break;
        }
        // Stage `small` spans bounds[small]..bounds[small + 1]; drop one of its interior ends.
        let (left, right) = (small, small + 1);
        let drop = if left == 0 {
            right
        } else if right == bounds.len() - 1 {
            left
        } else if slope[bounds[left]].abs() >= slope[bounds[right]].abs() {
            left
        } else {
            right
        };
        bounds.remove(drop);
    }
    bounds
        .windows(2)
        .map(|w| Stage {
            start: w[0],
            end: w[1],
            delta_llc: fit[w[1]] - fit[w[0]],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gp::{Gp, GpBounds};

    fn data() -> (Vec<f64>, Vec<f64>) {
        let steps = [
            0, 1, 2, 4, 7, 12, 20, 33, 54, 90, 148, 244, 403, 665, 1098, 1812, 2990, 4934, 8143,
            13439, 22180, 36606, 60412, 99700,
        ];
        let x: Vec<f64> = steps.iter().map(|s| (*s as f64 + 1.0).ln()).collect();
        let y = x
            .iter()
            .map(|x| {
                10.0 + 20.0 / (1.0 + (-(x - 5.0) * 2.0).exp())
                    - 5.0 / (1.0 + (-(x - 9.0) * 3.0).exp())
                    + 0.3 * (7.0 * x).sin()
            })
            .collect();
        (x, y)
    }

    #[test]
    fn d_dt_averages_the_two_difference_quotients() {
        let x = [0.0, 1.0, 3.0, 4.0];
        let y = [0.0, 2.0, 4.0, 10.0];
        // i=1: (2/1 + 2/2... (4-2)/2 = 1, (2-0)/1 = 2 -> 1.5; i=2: (6/1 + 1)/2 = 3.5.
        assert_eq!(d_dt(&x, &y), vec![1.5, 1.5, 3.5, 3.5]);
    }

    /// scikit-learn 1.9.1 on the same data (`GaussianProcessRegressor(ConstantKernel(1.0,
    /// (1e-3, 1e3)) * RBF(3, (0.5, 1e3)), n_restarts_optimizer=10, random_state=0)`): amplitude
    /// 219.2687, length 0.75913, log marginal likelihood -72.02904, predictions at
    /// (0.5, 3.3, 8, 11) = (8.92512, 10.80996, 29.56723, 25.29376). With fixed hyperparameters
    /// (200, 0.8): LML -75.27101227492615 and predictions (8.79819143673842, 10.805521144230624,
    /// 29.567317727069167, 25.295388973411747).
    #[test]
    fn gp_matches_scikit_learn() {
        let (x, y) = data();
        let xs = [0.5, 3.3, 8.0, 11.0];
        let fixed = Gp::with(&x, &y, 200.0, 0.8, 1e-10).unwrap();
        assert!((fixed.log_marginal_likelihood - -75.27101227492615).abs() < 1e-6);
        let want = [
            8.79819143673842,
            10.805521144230624,
            29.567317727069167,
            25.295388973411747,
        ];
        for (p, w) in fixed.predict(&xs).iter().zip(want) {
            assert!((p - w).abs() < 1e-6, "{p} vs {w}");
        }
        let gp = Gp::fit(&x, &y, GpBounds::REFERENCE).unwrap();
        assert!(
            gp.log_marginal_likelihood >= -72.02904 - 1e-4,
            "{}",
            gp.log_marginal_likelihood
        );
        assert!(
            (gp.amplitude / 219.2687 - 1.0).abs() < 1e-3,
            "{}",
            gp.amplitude
        );
        assert!((gp.length / 0.75913 - 1.0).abs() < 1e-3, "{}", gp.length);
        let want = [8.92512, 10.80996, 29.56723, 25.29376];
        for (p, w) in gp.predict(&xs).iter().zip(want) {
            assert!((p - w).abs() < 1e-3, "{p} vs {w}");
        }
        assert_eq!(GpBounds::REFERENCE.at_bounds(&gp), [0, 0]);
        // A short curve that swings by far more than the amplitude bound allows, faster than
        // the shortest length: both hyperparameters end at a bound.
        let (xb, yb) = (
            [0.0, 1.0, 2.0, 3.0, 4.0],
            [0.0, 100.0, -100.0, 100.0, -100.0],
        );
        let bad = Gp::fit(&xb, &yb, GpBounds::REFERENCE).unwrap();
        assert_eq!(GpBounds::REFERENCE.at_bounds(&bad), [1, -1], "{bad:?}");
    }

    /// The synthetic LLC rises 10 -> 30 around log-step 5, falls by 5 around 9: two stages,
    /// A then B, with the boundary at the LLC maximum between them.
    #[test]
    fn stages_of_a_rise_and_a_fall() {
        let (x, y) = data();
        let gp = Gp::fit(&x, &y, GpBounds::REFERENCE).unwrap();
        let fit = gp.predict(&x);
        let slope = d_dt(&x, &fit);
        let max = slope.iter().fold(0.0f64, |m, s| m.max(s.abs()));
        let cands = critical_points(&slope, 0.2 * max);
        assert!(!cands.is_empty());
        let st = stages(&fit, &slope, &cands, 0.1);
        let kinds: Vec<&str> = st.iter().map(|s| s.kind()).collect();
        assert_eq!(kinds, ["A", "B"], "{st:?}");
        // The boundary is near the maximum of the fitted curve (log-step ~7.5).
        assert!((x[st[0].end] - 7.5).abs() < 1.1, "{}", x[st[0].end]);
        assert!(st[0].delta_llc > 15.0 && st[1].delta_llc < -3.0);
        // Without merging, noise makes more stages.
        assert!(stages(&fit, &slope, &cands, 0.0).len() >= 2);
    }
}
