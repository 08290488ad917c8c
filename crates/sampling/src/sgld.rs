//! The SGMCMC step (SGLD, RMSprop-preconditioned SGLD, SGNHT) and the reference's two
//! parametrisations of SGLD.

use stagewise_engine::Float;

/// One sampler step around the centre `w*`:
/// * SGLD: `w <- w - (eps/2) G [nbeta g + gamma (w - w*) + weight_decay w] + sqrt(eps G) noise_level xi`,
///   with `G = 1`, or devinterp's RMSprop preconditioner `G = 1/(sqrt(V) + eps_rms)`,
///   `V <- alpha V + (1 - alpha) g^2`;
/// * SGNHT (devinterp's legacy `SGNHT`): momentum `m <- m - eps F - xi_t m + sqrt(2 eps A) xi`,
///   `w <- w + m`, thermostat `xi_t <- xi_t + mean(m^2) - eps`, with the force
///   `F = nbeta g + gamma (w - w*) + weight_decay w` (devinterp's has no localization: `gamma = 0`).
///
/// Then `w` is clamped to `w* +- bounding_box` (SGNHT also reflects the momentum there).
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
    pub method: Method,
}

/// Which member of the SGMCMC family takes the step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    Sgld,
    /// devinterp's `rmsprop_sgld` (without the Gamma correction term).
    RmsPropSgld {
        alpha: f64,
        eps: f64,
    },
    /// Stochastic gradient Nose-Hoover thermostat with diffusion factor `A` (devinterp
    /// default 0.01); the thermostat starts at `A`, the momentum at `sqrt(eps) N(0, 1)`.
    Sgnht {
        diffusion_factor: f64,
    },
}

/// Which sampler a config asks for (the reference's `sampling_method`); its names are parsed
/// in one place ([`std::str::FromStr`]), which serde uses too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SamplingMethod {
    #[default]
    Sgld,
    RmspropSgld,
    Sgnht,
}

/// devinterp's RMSprop-SGLD defaults: the second moment's decay and the preconditioner's eps.
pub const RMSPROP_ALPHA: f64 = 0.99;
pub const RMSPROP_EPS: f64 = 0.1;
/// devinterp's SGNHT diffusion factor A.
pub const SGNHT_DIFFUSION: f64 = 0.01;

impl SamplingMethod {
    pub fn name(self) -> &'static str {
        match self {
            SamplingMethod::Sgld => "sgld",
            SamplingMethod::RmspropSgld => "rmsprop_sgld",
            SamplingMethod::Sgnht => "sgnht",
        }
    }

    /// The step's method with its hyperparameters, checked; an error names the bad field.
    pub fn method(
        self,
        rmsprop_alpha: f64,
        rmsprop_eps: f64,
        diffusion_factor: f64,
    ) -> Result<Method, (&'static str, String)> {
        Ok(match self {
            SamplingMethod::Sgld => Method::Sgld,
            SamplingMethod::RmspropSgld => {
                if !(rmsprop_alpha > 0.0 && rmsprop_alpha <= 1.0) {
                    return Err((
                        "rmsprop_alpha",
                        format!("{rmsprop_alpha}: expected a value in (0, 1]"),
                    ));
                }
                if !(rmsprop_eps > 0.0 && rmsprop_eps.is_finite()) {
                    return Err((
                        "rmsprop_eps",
                        format!("{rmsprop_eps}: expected a finite, positive number"),
                    ));
                }
                Method::RmsPropSgld {
                    alpha: rmsprop_alpha,
                    eps: rmsprop_eps,
                }
            }
            SamplingMethod::Sgnht => {
                let a = diffusion_factor;
                if !(a > 0.0 && a.is_finite()) {
                    return Err((
                        "diffusion_factor",
                        format!("{a}: expected a finite, positive number"),
                    ));
                }
                Method::Sgnht {
                    diffusion_factor: a,
                }
            }
        })
    }
}

impl std::fmt::Display for SamplingMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SamplingMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sgld" => Ok(SamplingMethod::Sgld),
            "rmsprop_sgld" => Ok(SamplingMethod::RmspropSgld),
            "sgnht" => Ok(SamplingMethod::Sgnht),
            other => Err(format!(
                "{other:?}: expected \"sgld\", \"rmsprop_sgld\" or \"sgnht\""
            )),
        }
    }
}

impl TryFrom<String> for SamplingMethod {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<SamplingMethod> for String {
    fn from(m: SamplingMethod) -> String {
        m.name().into()
    }
}

/// A chain's sampler state: RMSprop's running second moment or SGNHT's momentum (one value per
/// coordinate; empty for plain SGLD) and SGNHT's thermostat.
#[derive(Clone, Debug, PartialEq)]
pub struct StepState<T> {
    pub v: Vec<T>,
    pub thermostat: f64,
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
            method: Method::Sgld,
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
            method: Method::Sgld,
        }
    }

    /// The state a chain starts from; `xi` (standard normal, length `dim`) draws SGNHT's
    /// initial momentum and is ignored otherwise.
    pub fn initial_state<T: Float>(&self, dim: usize, xi: &[T]) -> StepState<T> {
        match self.method {
            Method::Sgld => StepState {
                v: Vec::new(),
                thermostat: 0.0,
            },
            Method::RmsPropSgld { .. } => StepState {
                v: vec![T::ZERO; dim],
                thermostat: 0.0,
            },
            Method::Sgnht { diffusion_factor } => {
                let s = T::from_f64(self.epsilon.sqrt());
                StepState {
                    v: xi.iter().map(|x| s * *x).collect(),
                    thermostat: diffusion_factor,
                }
            }
        }
    }

    /// One update of `w` (centre `w0`, gradient `grad`, standard normal `xi`); coordinates with
    /// `mask[i] == false` are left unchanged (and take no part in SGNHT's thermostat).
    #[allow(clippy::too_many_arguments)]
    pub fn step<T: Float>(
        &self,
        w: &mut [T],
        w0: &[T],
        grad: &[T],
        xi: &[T],
        mask: Option<&[bool]>,
        state: &mut StepState<T>,
    ) {
        let (nb, ga, wd) = (
            T::from_f64(self.nbeta),
            T::from_f64(self.gamma),
            T::from_f64(self.weight_decay),
        );
        let force = |i: usize, w: T| {
            let mut f = nb * grad[i];
            if self.weight_decay != 0.0 {
                f += wd * w;
            }
            if self.gamma != 0.0 {
                f += ga * (w - w0[i]);
            }
            f
        };
        let clamp = |i: usize, v: T| match self.bounding_box {
            None => (v, false),
            Some(b) => {
                let (lo, hi) = (w0[i] - T::from_f64(b), w0[i] + T::from_f64(b));
                if v < lo {
                    (lo, true)
                } else if v > hi {
                    (hi, true)
                } else {
                    (v, false)
                }
            }
        };
        let active = |i: usize| mask.is_none_or(|m| m[i]);
        if let Method::Sgnht { diffusion_factor } = self.method {
            let lr = T::from_f64(self.epsilon);
            let friction = T::from_f64(state.thermostat);
            let noise = T::from_f64((2.0 * self.epsilon * diffusion_factor).sqrt());
            let (mut energy, mut count) = (0.0, 0usize);
            for i in 0..w.len() {
                if !active(i) {
                    continue;
                }
                let mut m = state.v[i];
                m -= lr * force(i, w[i]);
                m -= friction * m;
                m += noise * xi[i];
                energy += m.to_f64() * m.to_f64();
                count += 1;
                // devinterp reflects the momentum of coordinates that end outside the box.
                let (v, hit) = clamp(i, w[i] + m);
                w[i] = v;
                state.v[i] = if hit { -m } else { m };
            }
            if count > 0 {
                state.thermostat += energy / count as f64 - self.epsilon;
            }
            return;
        }
        let half = 0.5 * self.epsilon;
        let noise = self.epsilon.sqrt() * self.noise_level;
        for i in 0..w.len() {
            if !active(i) {
                continue;
            }
            let (drift, diffusion) = match self.method {
                Method::RmsPropSgld { alpha, eps } => {
                    let g = grad[i].to_f64();
                    let v = alpha * state.v[i].to_f64() + (1.0 - alpha) * g * g;
                    state.v[i] = T::from_f64(v);
                    let pre = 1.0 / (v.sqrt() + eps);
                    (T::from_f64(half * pre), T::from_f64(noise * pre.sqrt()))
                }
                _ => (T::from_f64(half), T::from_f64(noise)),
            };
            let v = w[i] - drift * force(i, w[i]) + diffusion * xi[i];
            w[i] = clamp(i, v).0;
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
            method: Method::RmsPropSgld {
                alpha: 1.0,
                eps: 1.0,
            },
            ..plain.clone()
        };
        let w0 = [0.3f64, -0.2, 1.0];
        let (mut a, mut b) = (w0, w0);
        let (mut sa, mut sb) = (plain.initial_state(3, &[]), rms.initial_state(3, &[]));
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
            method: Method::RmsPropSgld {
                alpha: 0.99,
                eps: 0.1,
            },
            ..Sgld::from_temperature(1e-2, 0.0, 1.0, 10.0)
        };
        let mut w = [1.0f64];
        let mut state = rms.initial_state(1, &[]);
        rms.step(&mut w, &[1.0], &[2.0], &[0.5], None, &mut state);
        let v = state.v;
        let v1 = 0.01 * 4.0;
        let g = 1.0 / (v1.sqrt() + 0.1);
        assert!((v[0] - v1).abs() < 1e-15);
        assert!((w[0] - (1.0 - 0.005 * g * 10.0 * 2.0 + (1e-2 * g).sqrt() * 0.5)).abs() < 1e-12);
    }

    /// Two SGNHT steps by hand (devinterp's legacy update, plus localization).
    #[test]
    fn sgnht_follows_the_thermostat_update() {
        let sgnht = Sgld {
            method: Method::Sgnht {
                diffusion_factor: 0.01,
            },
            ..Sgld::from_temperature(0.04, 0.5, 1.0, 10.0)
        };
        let w0 = [1.0f64, -1.0, 0.0];
        let mut w = w0;
        let mut st = sgnht.initial_state(3, &[1.0, -0.5, 2.0]);
        assert_eq!(st.v, vec![0.2, -0.1, 0.4]);
        assert_eq!(st.thermostat, 0.01);
        // Coordinate 2 is frozen: no move, no momentum change, not in the thermostat.
        let mask = [true, true, false];
        let (lr, a) = (0.04, 0.01);
        let (mut wm, mut m, mut xi_t) = (w0, [0.2, -0.1], 0.01);
        for (step, (g, z)) in [([1.0, 2.0], [0.3, -0.7]), ([-0.5, 0.25], [1.1, 0.2])]
            .iter()
            .enumerate()
        {
            let grad = [g[0], g[1], 9.0];
            sgnht.step(&mut w, &w0, &grad, &[z[0], z[1], 5.0], Some(&mask), &mut st);
            let mut energy = 0.0;
            for i in 0..2 {
                let f = 10.0 * g[i] + 0.5 * (wm[i] - w0[i]);
                m[i] -= lr * f;
                m[i] -= xi_t * m[i];
                m[i] += (2.0 * lr * a).sqrt() * z[i];
                wm[i] += m[i];
                energy += m[i] * m[i];
            }
            xi_t += energy / 2.0 - lr;
            for i in 0..2 {
                assert!((w[i] - wm[i]).abs() < 1e-15, "step {step} coordinate {i}");
                assert!((st.v[i] - m[i]).abs() < 1e-15);
            }
            assert!((st.thermostat - xi_t).abs() < 1e-15);
            assert_eq!((w[2], st.v[2]), (0.0, 0.4));
        }
        // The bounding box clamps and reflects the momentum.
        let boxed = Sgld {
            bounding_box: Some(0.05),
            ..sgnht.clone()
        };
        let mut w = [0.0f64];
        let mut st = boxed.initial_state(1, &[1.0]);
        boxed.step(&mut w, &[0.0], &[0.0], &[0.0], None, &mut st);
        assert_eq!(w[0], 0.05);
        assert!(st.v[0] < 0.0);
    }
}
