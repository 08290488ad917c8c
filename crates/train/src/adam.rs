//! Adam exactly as `torch.optim.Adam` (bias-corrected, `amsgrad=False`, L2 `weight_decay`),
//! and AdamW as `torch.optim.AdamW` (the weight decay decoupled from the gradient).

use stagewise_engine::Float;

#[derive(Clone, Debug)]
pub struct Adam<T> {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW: `p *= 1 - lr * weight_decay` before the update, instead of adding
    /// `weight_decay * p` to the gradient.
    pub decoupled: bool,
    /// First and second moment estimates (`exp_avg`, `exp_avg_sq`).
    pub m: Vec<T>,
    pub v: Vec<T>,
    /// Updates taken so far (torch's `state['step']`).
    pub steps: u64,
}

impl<T: Float> Adam<T> {
    pub fn new(n: usize, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled: false,
            m: vec![T::ZERO; n],
            v: vec![T::ZERO; n],
            steps: 0,
        }
    }

    /// `torch.optim.AdamW` with these settings.
    pub fn adamw(n: usize, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        Adam {
            decoupled: true,
            ..Self::new(n, beta1, beta2, eps, weight_decay)
        }
    }

    /// One update of `params` with gradient `grad` at learning rate `lr`.
    pub fn step(&mut self, params: &mut [T], grad: &[T], lr: f64) {
        self.steps += 1;
        let bc1 = 1.0 - self.beta1.powi(self.steps as i32);
        let bc2 = 1.0 - self.beta2.powi(self.steps as i32);
        let step_size = T::from_f64(lr / bc1);
        let bc2_sqrt = T::from_f64(bc2.sqrt());
        let (b1, b2) = (T::from_f64(self.beta1), T::from_f64(self.beta2));
        let (one_b1, one_b2) = (T::from_f64(1.0 - self.beta1), T::from_f64(1.0 - self.beta2));
        let eps = T::from_f64(self.eps);
        let wd = T::from_f64(self.weight_decay);
        let decay = self.weight_decay != 0.0 && !self.decoupled;
        let shrink = T::from_f64(1.0 - lr * self.weight_decay);
        let decoupled = self.decoupled && self.weight_decay != 0.0;
        for i in 0..params.len() {
            if decoupled {
                params[i] *= shrink;
            }
            let g = if decay {
                grad[i] + wd * params[i]
            } else {
                grad[i]
            };
            let m = b1 * self.m[i] + one_b1 * g;
            let v = b2 * self.v[i] + one_b2 * g * g;
            self.m[i] = m;
            self.v[i] = v;
            params[i] -= step_size * (m / (v.sqrt() / bc2_sqrt + eps));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_parameter_by_lr() {
        // With m = (1-b1) g and v = (1-b2) g^2 the bias-corrected update is lr * g/(|g| + eps').
        let mut a = Adam::<f64>::new(3, 0.9, 0.999, 1e-8, 0.0);
        let mut p = vec![1.0, -2.0, 0.5];
        a.step(&mut p, &[0.3, -4.0, 1e-3], 1e-2);
        assert!((p[0] - (1.0 - 1e-2)).abs() < 1e-9);
        assert!((p[1] - (-2.0 + 1e-2)).abs() < 1e-9);
        assert!((p[2] - (0.5 - 1e-2 * 1e-3 / (1e-3 + 1e-8))).abs() < 1e-12);
    }

    #[test]
    fn adamw_decays_the_weights_apart_from_the_gradient() {
        // torch.optim.AdamW: p *= 1 - lr*wd, then the plain Adam update (here lr * sign(g)).
        let mut a = Adam::<f64>::adamw(2, 0.9, 0.999, 1e-8, 0.05);
        let mut p = vec![2.0, -1.0];
        a.step(&mut p, &[0.5, 0.0], 0.1);
        assert!((p[0] - (2.0 * (1.0 - 0.1 * 0.05) - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-12);
        assert!((p[1] - (-1.0 * (1.0 - 0.1 * 0.05))).abs() < 1e-15);
        // The moments saw the bare gradient.
        assert!((a.m[0] - 0.05).abs() < 1e-15 && a.m[1] == 0.0);
    }

    #[test]
    fn matches_a_hand_rolled_second_step() {
        let mut a = Adam::<f64>::new(1, 0.9, 0.999, 1e-8, 0.1);
        let mut p = vec![2.0];
        a.step(&mut p, &[1.0], 0.1);
        let p1 = p[0];
        a.step(&mut p, &[-0.5], 0.05);
        let (g1, g2) = (1.0 + 0.1 * 2.0, -0.5 + 0.1 * p1);
        let m = 0.9 * (0.1 * g1) + 0.1 * g2;
        let v = 0.999 * (0.001 * g1 * g1) + 0.001 * g2 * g2;
        let want =
            p1 - 0.05 / (1.0 - 0.81) * m / (v.sqrt() / (1.0f64 - 0.999f64.powi(2)).sqrt() + 1e-8);
        assert!((p[0] - want).abs() < 1e-14);
    }
}
