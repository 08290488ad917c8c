//! The SGLD update and its two parametrisations in the reference.

use stagewise_engine::Float;

/// `w <- w - (eps/2) [nbeta g + gamma (w - w*) + weight_decay w] + sqrt(eps) noise_level xi`,
/// then clamped to `w* +- bounding_box`.
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
        }
    }

    /// One update of `w` (centre `w0`, gradient `grad`, standard normal `xi`); coordinates with
    /// `mask[i] == false` are left unchanged.
    pub fn step<T: Float>(
        &self,
        w: &mut [T],
        w0: &[T],
        grad: &[T],
        xi: &[T],
        mask: Option<&[bool]>,
    ) {
        let half = T::from_f64(0.5 * self.epsilon);
        let (nb, ga, wd) = (
            T::from_f64(self.nbeta),
            T::from_f64(self.gamma),
            T::from_f64(self.weight_decay),
        );
        let noise = T::from_f64(self.epsilon.sqrt() * self.noise_level);
        let bbox = self.bounding_box.map(T::from_f64);
        for i in 0..w.len() {
            if mask.is_some_and(|m| !m[i]) {
                continue;
            }
            let mut dw = nb * grad[i];
            if self.weight_decay != 0.0 {
                dw += wd * w[i];
            }
            if self.gamma != 0.0 {
                dw += ga * (w[i] - w0[i]);
            }
            let mut v = w[i] - half * dw;
            v += noise * xi[i];
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
