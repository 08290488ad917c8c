//! The SGLD update and its two parametrisations in the reference.

use stagewise_engine::Float;

/// `w <- w - (eps/2) G [nbeta g + gamma (w - w*) + weight_decay w] + sqrt(eps G) noise_level xi`,
/// then clamped to `w* +- bounding_box`; `G = 1` for plain SGLD, or devinterp's RMSprop
/// preconditioner `G = 1/(sqrt(V) + eps_rms)` with `V <- alpha V + (1 - alpha) g^2`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sgld {
    /// Step size epsilon.
    pub epsilon: f64,
    /// n * beta: the weight of the minibatch-loss gradient (the reference's `num_samples /
    /// temperature`).
    pub nbeta: f64,
    /// Localization strength gamma (the reference's `elasticity`).
    pub gamma: f64,
    pub weight_decay: f64,
    pub noise_level: f64,
    pub bounding_box: Option<f64>,
    pub preconditioner: Preconditioner,
}

/// Per-coordinate step-size scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Preconditioner {
    None,
    /// devinterp's `rmsprop_sgld` (without the Gamma correction term).
    RmsProp {
        alpha: f64,
        eps: f64,
    },
}

impl Sgld {
    /// The reference's parametrisation 1: step `epsilon`, `gamma`, and `temperature` T with
    /// nbeta = n / T for a dataset of `n` samples.
    pub fn from_temperature(epsilon: f64, gamma: f64, temperature: f64, n: f64) -> Self {
        Sgld {
            epsilon,
            nbeta: n / temperature,
            gamma,
            weight_decay: 0.0,
            noise_level: 1.0,
            bounding_box: None,
            preconditioner: Preconditioner::None,
        }
    }

    /// The reference's parametrisation 2 (every shipped sweep): gradient coefficient
    /// (eps/2) nbeta = `gradient_scale`, localization coefficient (eps/2) gamma =
    /// `localization_scale`, noise variance eps = `noise_scale`.
    pub fn from_scales(gradient_scale: f64, localization_scale: f64, noise_scale: f64) -> Self {
        Sgld {
            epsilon: noise_scale,
            nbeta: 2.0 * gradient_scale / noise_scale,
            gamma: 2.0 * localization_scale / noise_scale,
            weight_decay: 0.0,
            noise_level: 1.0,
            bounding_box: None,
            preconditioner: Preconditioner::None,
        }
    }

    /// One update of `w` (centre `w0`, gradient `grad`, standard normal `xi`); coordinates with
    /// `mask[i] == false` are left unchanged. `state` is the preconditioner's running second
    /// moment (one value per coordinate, zero at the start of a chain; unused without one).
    #[allow(clippy::too_many_arguments)]
    pub fn step<T: Float>(
        &self,
        w: &mut [T],
        w0: &[T],
        grad: &[T],
        xi: &[T],
        mask: Option<&[bool]>,
        state: &mut [T],
    ) {
        let half = 0.5 * self.epsilon;
        let (nb, ga, wd) = (
            T::from_f64(self.nbeta),
            T::from_f64(self.gamma),
            T::from_f64(self.weight_decay),
        );
        let noise = self.epsilon.sqrt() * self.noise_level;
        let bbox = self.bounding_box.map(T::from_f64);
        for i in 0..w.len() {
            if mask.is_some_and(|m| !m[i]) {
                continue;
            }
            let (drift, diffusion) = match self.preconditioner {
                Preconditioner::None => (T::from_f64(half), T::from_f64(noise)),
                Preconditioner::RmsProp { alpha, eps } => {
                    let g = grad[i].to_f64();
                    let v = alpha * state[i].to_f64() + (1.0 - alpha) * g * g;
                    state[i] = T::from_f64(v);
                    let pre = 1.0 / (v.sqrt() + eps);
                    (T::from_f64(half * pre), T::from_f64(noise * pre.sqrt()))
                }
            };
            let mut dw = nb * grad[i];
            if self.weight_decay != 0.0 {
                dw += wd * w[i];
            }
            if self.gamma != 0.0 {
                dw += ga * (w[i] - w0[i]);
            }
            let mut v = w[i] - drift * dw;
            v += diffusion * xi[i];
            if let Some(b) = bbox {
                let (lo, hi) = (w0[i] - b, w0[i] + b);
                v = if v < lo {
                    lo
                } else if v > hi {
                    hi
                } else {
                    v
                };
            }
            w[i] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsprop_with_alpha_one_and_unit_eps_is_plain_sgld() {
        let plain = Sgld::from_temperature(1e-2, 2.0, 1.0, 30.0);
        let rms = Sgld {
            preconditioner: Preconditioner::RmsProp {
                alpha: 1.0,
                eps: 1.0,
            },
            ..plain.clone()
        };
        let w0 = [0.3f64, -0.2, 1.0];
        let (mut a, mut b) = (w0, w0);
        let (mut sa, mut sb) = ([0.0; 3], [0.0; 3]);
        for s in 0..5 {
            let g = [a[0] * 2.0, a[1] - 1.0, (s as f64).sin()];
            let xi = [0.1 * s as f64, -0.3, 0.7];
            plain.step(&mut a, &w0, &g, &xi, None, &mut sa);
            rms.step(&mut b, &w0, &g, &xi, None, &mut sb);
        }
        assert_eq!(a, b);
    }

    #[test]
    fn rmsprop_scales_drift_and_noise_by_the_running_second_moment() {
        let rms = Sgld {
            preconditioner: Preconditioner::RmsProp {
                alpha: 0.99,
                eps: 0.1,
            },
            ..Sgld::from_temperature(1e-2, 0.0, 1.0, 10.0)
        };
        let (mut w, mut v) = ([1.0f64], [0.0]);
        rms.step(&mut w, &[1.0], &[2.0], &[0.5], None, &mut v);
        let v1 = 0.01 * 4.0;
        let g = 1.0 / (v1.sqrt() + 0.1);
        assert!((v[0] - v1).abs() < 1e-15);
        assert!((w[0] - (1.0 - 0.005 * g * 10.0 * 2.0 + (1e-2 * g).sqrt() * 0.5)).abs() < 1e-12);
    }
}
