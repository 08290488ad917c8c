//! Models with a known learning coefficient, to check the estimator end to end.

use stagewise_engine::Float;
use stagewise_engine::rng::{Stream, tag};

use crate::potential::{BatchKey, Potential, PotentialWorker};

/// Normal-crossing regression `f_w(x) = x * prod_i w_i^{p_i}` on `n` samples `x ~ N(0, 1)`,
/// `y = f_{w0}(x) + N(0, sigma^2)` with the true parameter `w0 = 0`. The population loss is
/// `K(w) = prod_i w_i^{2 p_i}` (times `E x^2 = 1`), whose learning coefficient at the origin is
/// `min_i 1/(2 p_i)` (devinterp's sampler-accuracy potentials).
#[derive(Clone, Debug)]
pub struct Polynomial {
    pub powers: Vec<u32>,
    xs: Vec<f64>,
    ys: Vec<f64>,
    /// Minibatch size (`None`: full batch).
    pub batch: Option<usize>,
    seed: u64,
}

impl Polynomial {
    pub fn new(powers: Vec<u32>, n: usize, sigma: f64, batch: Option<usize>, seed: u64) -> Self {
        assert!(
            !powers.is_empty() && powers.iter().all(|p| *p >= 1),
            "powers must be >= 1"
        );
        let mut xs = vec![0.0; n];
        let mut noise = vec![0.0; n];
        Stream::new(seed, tag::TOY_DATA, 0, 0).fill_normal(&mut xs);
        Stream::new(seed, tag::TOY_DATA, 1, 0).fill_normal(&mut noise);
        let ys = noise.iter().map(|e| sigma * e).collect();
        Polynomial {
            powers,
            xs,
            ys,
            batch,
            seed,
        }
    }

    /// `min_i 1/(2 p_i)`.
    pub fn learning_coefficient(&self) -> f64 {
        self.powers
            .iter()
            .map(|p| 1.0 / (2.0 * *p as f64))
            .fold(f64::INFINITY, f64::min)
    }

    pub fn n(&self) -> usize {
        self.xs.len()
    }

    /// Sufficient statistics `(sum y^2, sum x y, sum x^2, count)` of a minibatch.
    fn stats(&self, key: BatchKey) -> (f64, f64, f64, f64) {
        let n = self.xs.len();
        let mut s = (0.0, 0.0, 0.0, 0.0);
        let mut add = |i: usize| {
            let (x, y) = (self.xs[i], self.ys[i]);
            s.0 += y * y;
            s.1 += x * y;
            s.2 += x * x;
            s.3 += 1.0;
        };
        match self.batch {
            Some(b) if b < n && key.step != u64::MAX => {
                let st = Stream::new(self.seed, tag::SGLD_BATCH, key.step as u32, key.chain);
                for j in 0..b {
                    add(st.below(j as u32, n as u64) as usize);
                }
            }
            _ => (0..n).for_each(&mut add),
        }
        s
    }
}

pub struct PolynomialWorker<'a> {
    model: &'a Polynomial,
    full: (f64, f64, f64, f64),
}

impl<T: Float> Potential<T> for Polynomial {
    type Worker<'a> = PolynomialWorker<'a>;
    fn dim(&self) -> usize {
        self.powers.len()
    }
    fn worker(&self) -> PolynomialWorker<'_> {
        let full = self.stats(BatchKey {
            chain: 0,
            step: u64::MAX,
        });
        PolynomialWorker { model: self, full }
    }
}

impl<T: Float> PotentialWorker<T> for PolynomialWorker<'_> {
    fn loss_and_grad(&mut self, w: &[T], key: BatchKey, grad: &mut [T]) -> f64 {
        let m = self.model;
        let (syy, sxy, sxx, b) = match m.batch {
            Some(bs) if bs < m.n() && key.step != u64::MAX => m.stats(key),
            _ => self.full,
        };
        let w: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
        let f: f64 = w
            .iter()
            .zip(&m.powers)
            .map(|(wi, p)| wi.powi(*p as i32))
            .product();
        // L = mean (y - x f)^2 = (syy - 2 f sxy + f^2 sxx) / b ; dL/df = (2 f sxx - 2 sxy) / b
        let loss = (syy - 2.0 * f * sxy + f * f * sxx) / b;
        let dl_df = (2.0 * f * sxx - 2.0 * sxy) / b;
        for (k, g) in grad.iter_mut().enumerate() {
            let df: f64 = m.powers[k] as f64
                * w.iter()
                    .zip(&m.powers)
                    .enumerate()
                    .map(|(i, (wi, p))| {
                        if i == k {
                            wi.powi(*p as i32 - 1)
                        } else {
                            wi.powi(*p as i32)
                        }
                    })
                    .product::<f64>();
            *g = T::from_f64(dl_df * df);
        }
        loss
    }
}
