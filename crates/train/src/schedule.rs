//! torch's `OneCycleLR` with two phases (`three_phase=False`), linear or cosine annealing.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anneal {
    Linear,
    Cos,
}

/// Learning rate per optimisation step.
#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    Constant(f64),
    OneCycle {
        initial: f64,
        max: f64,
        min: f64,
        end1: f64,
        end2: f64,
        anneal: Anneal,
    },
}

impl LrSchedule {
    /// `OneCycleLR(max_lr, total_steps, pct_start, anneal, div_factor, final_div_factor)`.
    pub fn one_cycle(
        max_lr: f64,
        total_steps: u64,
        pct_start: f64,
        anneal: Anneal,
        div_factor: f64,
        final_div_factor: f64,
    ) -> Self {
        let initial = max_lr / div_factor;
        LrSchedule::OneCycle {
            initial,
            max: max_lr,
            min: initial / final_div_factor,
            end1: pct_start * total_steps as f64 - 1.0,
            end2: total_steps as f64 - 1.0,
            anneal,
        }
    }

    /// The lr used by the `t`-th (0-based) `optimizer.step()`.
    pub fn lr(&self, t: u64) -> f64 {
        match *self {
            LrSchedule::Constant(lr) => lr,
            LrSchedule::OneCycle {
                initial,
                max,
                min,
                end1,
                end2,
                anneal,
            } => {
                let t = t as f64;
                let f = |start: f64, end: f64, pct: f64| match anneal {
                    Anneal::Linear => (end - start) * pct + start,
                    Anneal::Cos => {
                        end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
                    }
                };
                if t <= end1 {
                    f(initial, max, t / end1)
                } else {
                    f(max, min, (t - end1) / (end2 - end1))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_torch_values_from_the_reference() {
        let s = LrSchedule::one_cycle(0.003, 500_000, 0.5, Anneal::Linear, 249_999.0, 249_999.0);
        let cases = [
            (0, 1.2000048000192e-08),
            (1, 2.4000048e-08),
            (1000, 1.2012000047808192e-05),
            (124_999, 0.0015000000000240004),
            (249_999, 0.003),
            (250_000, 0.002999988),
            (375_000, 0.0014999880000240004),
            // reference.md prints this one rounded (1.2000048e-08); torch's float64 formula gives:
            (499_998, 1.2000047999987523e-08),
            (499_999, 4.8000232261147247e-14),
        ];
        for (t, want) in cases {
            let got = s.lr(t);
            assert!(
                (got - want).abs() <= 1e-15 * want.abs() + 1e-25,
                "lr({t}) = {got:e}, want {want:e}"
            );
        }
    }
}
