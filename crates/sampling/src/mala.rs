//! The Metropolis-adjusted Langevin (MALA) acceptance probability of an SGLD transition: how far
//! the discretised chain is from an exact sampler of its target (devinterp's
//! `MalaAcceptanceRate`; Furman and Lau's step-size heuristic keeps it near 0.9-0.95).

use stagewise_engine::Float;

use crate::sgld::Sgld;

/// A point of a chain with its potential `U(w) = nbeta L(w) + gamma/2 |w - w*|^2 +
/// weight_decay/2 |w|^2` and drift `grad U(w)` (over the sampled coordinates).
#[derive(Clone, Debug, Default)]
pub struct MalaPoint<T> {
    pub w: Vec<T>,
    pub drift: Vec<T>,
    pub u: f64,
}

impl<T: Float> MalaPoint<T> {
    /// Sets the point to `w` with minibatch loss `loss` and gradient `grad`; masked coordinates
    /// get zero drift.
    pub fn set(
        &mut self,
        sgld: &Sgld,
        w: &[T],
        w0: &[T],
        loss: f64,
        grad: &[T],
        mask: Option<&[bool]>,
    ) {
        self.w.clear();
        self.w.extend_from_slice(w);
        self.drift.resize(w.len(), T::ZERO);
        let (mut dist2, mut norm2) = (0.0, 0.0);
        for i in 0..w.len() {
            if mask.is_some_and(|m| !m[i]) {
                self.drift[i] = T::ZERO;
                continue;
            }
            let (wi, d) = (w[i].to_f64(), (w[i] - w0[i]).to_f64());
            dist2 += d * d;
            norm2 += wi * wi;
            self.drift[i] = T::from_f64(
                sgld.nbeta * grad[i].to_f64() + sgld.gamma * d + sgld.weight_decay * wi,
            );
        }
        self.u = sgld.nbeta * loss + 0.5 * sgld.gamma * dist2 + 0.5 * sgld.weight_decay * norm2;
    }
}

/// `min(1, exp(U(a) - U(b) + log q(a | b) - log q(b | a)))` for the SGLD proposal
/// `q(b | a) = N(b; a - (eps/2) grad U(a), eps sigma^2 I)`.
pub fn acceptance<T: Float>(a: &MalaPoint<T>, b: &MalaPoint<T>, epsilon: f64, sigma: f64) -> f64 {
    let half = 0.5 * epsilon;
    let (mut fwd, mut back) = (0.0, 0.0);
    for i in 0..a.w.len() {
        let step = (b.w[i] - a.w[i]).to_f64();
        let f = step + half * a.drift[i].to_f64();
        let r = -step + half * b.drift[i].to_f64();
        fwd += f * f;
        back += r * r;
    }
    let var2 = 2.0 * epsilon * sigma * sigma;
    let log_ratio = a.u - b.u - back / var2 + fwd / var2;
    if log_ratio.is_nan() {
        f64::NAN
    } else {
        log_ratio.exp().min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(w: f64, a: f64, sgld: &Sgld) -> MalaPoint<f64> {
        // U = nbeta * (a w^2 / 2) with gamma = 0.
        let mut p = MalaPoint::default();
        p.set(sgld, &[w], &[0.0], a * w * w / 2.0, &[a * w], None);
        p
    }

    /// A 1-D Gaussian target `U = c w^2 / 2` by hand: from a = 1 to b = 0.5 with eps = 0.1,
    /// c = 2: U(a) = 1, U(b) = 0.25; forward residual 0.5 - 1 + 0.05 * 2 = -0.4, backward
    /// 1 - 0.5 + 0.05 * 1 = 0.55; log ratio = 0.75 - 0.3025/0.2 + 0.16/0.2 = 0.0375 -> 1.
    /// The reverse move has log ratio -0.0375.
    #[test]
    fn hand_computed_cases() {
        let sgld = Sgld::from_temperature(0.1, 0.0, 1.0, 1.0);
        let (a, b) = (point(1.0, 2.0, &sgld), point(0.5, 2.0, &sgld));
        assert_eq!(acceptance(&a, &b, 0.1, 1.0), 1.0);
        assert!((acceptance(&b, &a, 0.1, 1.0) - (-0.0375f64).exp()).abs() < 1e-12);
        // 0.3 -> -0.8: U 0.09 -> 0.64, drifts 0.6 and -1.6, residuals -1.07 and 1.02:
        // log ratio = -0.55 - 1.0404/0.2 + 1.1449/0.2 = -0.0275; the reverse move is accepted.
        let (c, d) = (point(0.3, 2.0, &sgld), point(-0.8, 2.0, &sgld));
        assert!((acceptance(&c, &d, 0.1, 1.0) - (-0.0275f64).exp()).abs() < 1e-12);
        assert_eq!(acceptance(&d, &c, 0.1, 1.0), 1.0);
        // A flat potential with zero drift: symmetric proposal, acceptance 1.
        let flat = Sgld::from_temperature(0.1, 0.0, 1.0, 1.0);
        let (e, f) = (point(0.0, 0.0, &flat), point(3.0, 0.0, &flat));
        assert_eq!(acceptance(&e, &f, 0.1, 1.0), 1.0);
    }

    /// Localization enters U and the drift: gamma/2 |w - w*|^2 with w* = 1.
    #[test]
    fn localization_is_part_of_the_potential() {
        let sgld = Sgld::from_temperature(0.2, 4.0, 1.0, 1.0);
        let mut p = MalaPoint::default();
        p.set(&sgld, &[3.0f64], &[1.0], 0.5, &[0.25], None);
        assert_eq!(p.u, 0.5 + 2.0 * 4.0);
        assert_eq!(p.drift, vec![0.25 + 4.0 * 2.0]);
        p.set(&sgld, &[3.0f64], &[1.0], 0.5, &[0.25], Some(&[false]));
        assert_eq!((p.u, p.drift[0]), (0.5, 0.0));
    }
}
