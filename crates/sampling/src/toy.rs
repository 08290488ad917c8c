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

/// Reduced-rank regression `f(x) = B A x` (`A: H x M`, `B: N x H`) with a true map `B0 A0` of
/// rank `r`, on `n` inputs `x ~ N(0, I_M)` with noise-free targets. The loss is
/// `L(A, B) = mean_x |(B A - B0 A0) x|^2`, minimal at the truth; its learning coefficient is
/// Aoyagi and Watanabe's (2005) formula ([`rrr_learning_coefficient`]). Parameters are
/// `[A (row-major), B (row-major)]`; [`Rrr::truth`] gives `w*`.
#[derive(Clone, Debug)]
pub struct Rrr {
    pub m: usize,
    pub h: usize,
    pub n_out: usize,
    pub rank: usize,
    /// Input second moment `(1/n) sum x x^T` (`M x M`).
    sigma: Vec<f64>,
    w0: Vec<f64>,
    truth_map: Vec<f64>,
}

impl Rrr {
    pub fn new(m: usize, h: usize, n_out: usize, rank: usize, n: usize, seed: u64) -> Self {
        assert!(
            rank <= h.min(m).min(n_out),
            "rank must not exceed min(M, H, N)"
        );
        let mut xs = vec![0.0; n * m];
        Stream::new(seed, tag::TOY_DATA, 2, 0).fill_normal(&mut xs);
        let mut sigma = vec![0.0; m * m];
        for x in xs.chunks_exact(m) {
            for i in 0..m {
                for j in 0..m {
                    sigma[i * m + j] += x[i] * x[j] / n as f64;
                }
            }
        }
        // A0 and B0: rank-r factors (first r hidden units carry the map, the rest are zero).
        let mut z = vec![0.0; h * m + n_out * h];
        Stream::new(seed, tag::TOY_DATA, 3, 0).fill_normal(&mut z);
        let mut w0 = vec![0.0; h * m + n_out * h];
        for u in 0..rank {
            for j in 0..m {
                w0[u * m + j] = z[u * m + j];
            }
            for i in 0..n_out {
                w0[h * m + i * h + u] = z[h * m + i * h + u];
            }
        }
        let mut rrr = Rrr {
            m,
            h,
            n_out,
            rank,
            sigma,
            w0,
            truth_map: vec![],
        };
        rrr.truth_map = rrr.map(&rrr.w0.clone());
        rrr
    }

    /// `w*`: the true factors.
    pub fn truth(&self) -> Vec<f64> {
        self.w0.clone()
    }

    pub fn learning_coefficient(&self) -> f64 {
        rrr_learning_coefficient(self.m, self.h, self.n_out, self.rank)
    }

    /// `W = B A` (`N x M`).
    fn map(&self, w: &[f64]) -> Vec<f64> {
        let (m, h, n) = (self.m, self.h, self.n_out);
        let (a, b) = w.split_at(h * m);
        let mut out = vec![0.0; n * m];
        for i in 0..n {
            for k in 0..h {
                let bik = b[i * h + k];
                for j in 0..m {
                    out[i * m + j] += bik * a[k * m + j];
                }
            }
        }
        out
    }
}

/// Aoyagi and Watanabe (2005), "Stochastic complexities of reduced rank regression in Bayesian
/// estimation": the learning coefficient of `B A` with input dimension `M`, hidden `H`, output
/// `N` and true rank `r`.
pub fn rrr_learning_coefficient(m: usize, h: usize, n: usize, r: usize) -> f64 {
    let (m, h, n, r) = (m as i64, h as i64, n as i64, r as i64);
    if m + h < n + r {
        (h * m - h * r + n * r) as f64 / 2.0
    } else if n + h < m + r {
        (h * n - h * r + m * r) as f64 / 2.0
    } else if m + n < h + r {
        (m * n) as f64 / 2.0
    } else {
        let base = 2 * (h + r) * (m + n) - (m - n) * (m - n) - (h + r) * (h + r);
        let odd = (m + h + n + r) % 2 != 0;
        (base + if odd { 1 } else { 0 }) as f64 / 8.0
    }
}

pub struct RrrWorker<'a> {
    model: &'a Rrr,
}

impl<T: Float> Potential<T> for Rrr {
    type Worker<'a> = RrrWorker<'a>;
    fn dim(&self) -> usize {
        self.h * (self.m + self.n_out)
    }
    fn worker(&self) -> RrrWorker<'_> {
        RrrWorker { model: self }
    }
    fn tensors(&self) -> Vec<(String, usize)> {
        vec![
            ("a".into(), self.h * self.m),
            ("b".into(), self.n_out * self.h),
        ]
    }
}

impl<T: Float> PotentialWorker<T> for RrrWorker<'_> {
    /// `L = tr(D Sigma D^T)` with `D = B A - W0`; `dL/dW = 2 D Sigma`, `dA = B^T dW`, `dB = dW A^T`.
    fn loss_and_grad(&mut self, w: &[T], _key: BatchKey, grad: &mut [T]) -> f64 {
        let r = self.model;
        let (m, h, n) = (r.m, r.h, r.n_out);
        let w: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
        let mut d = r.map(&w);
        for (x, t) in d.iter_mut().zip(&r.truth_map) {
            *x -= t;
        }
        let mut ds = vec![0.0; n * m];
        for i in 0..n {
            for j in 0..m {
                ds[i * m + j] = (0..m).map(|k| d[i * m + k] * r.sigma[k * m + j]).sum();
            }
        }
        let loss: f64 = d.iter().zip(&ds).map(|(a, b)| a * b).sum();
        let (a, b) = w.split_at(h * m);
        for k in 0..h {
            for j in 0..m {
                let g: f64 = (0..n).map(|i| b[i * h + k] * 2.0 * ds[i * m + j]).sum();
                grad[k * m + j] = T::from_f64(g);
            }
        }
        for i in 0..n {
            for k in 0..h {
                let g: f64 = (0..m).map(|j| 2.0 * ds[i * m + j] * a[k * m + j]).sum();
                grad[h * m + i * h + k] = T::from_f64(g);
            }
        }
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrr_formula_covers_its_cases() {
        // Regular when H = min(M, N) and full rank: M H + N H - H^2 parameters, halved.
        assert_eq!(rrr_learning_coefficient(3, 3, 3, 3), 4.5);
        // Rank 0 of a 5-3-5 map (case 1, M+H+N+r = 13 odd): (2*3*10 - 0 - 9 + 1)/8 = 6.5.
        assert_eq!(rrr_learning_coefficient(5, 3, 5, 0), 6.5);
        // Rank 1 of a 4-2-4 map (case 1, 11 odd): (2*3*8 - 0 - 9 + 1)/8 = 5.
        assert_eq!(rrr_learning_coefficient(4, 2, 4, 1), 5.0);
        // Odd total: M=4, H=2, N=3, r=0 -> (2*2*7 - 1 - 4 + 1)/8 = 24/8.
        assert_eq!(rrr_learning_coefficient(4, 2, 3, 0), 3.0);
        // Wide hidden layer (M + N < H + r): MN/2.
        assert_eq!(rrr_learning_coefficient(2, 5, 2, 1), 2.0);
        // M + H < N + r: (HM - Hr + Nr)/2.
        assert_eq!(rrr_learning_coefficient(1, 1, 5, 1), 2.5);
    }

    #[test]
    fn rrr_gradient_matches_finite_differences() {
        let r = Rrr::new(3, 2, 4, 1, 200, 1);
        let mut w = r.truth();
        for (i, v) in w.iter_mut().enumerate() {
            *v += 0.1 * ((i * 37 % 11) as f64 - 5.0) / 5.0;
        }
        let mut wk = Potential::<f64>::worker(&r);
        let mut g = vec![0.0; w.len()];
        wk.loss_and_grad(&w, BatchKey { chain: 0, step: 0 }, &mut g);
        let mut scratch = vec![0.0; w.len()];
        for i in 0..w.len() {
            let mut p = w.clone();
            p[i] += 1e-6;
            let lp = wk.loss_and_grad(&p, BatchKey { chain: 0, step: 0 }, &mut scratch);
            p[i] -= 2e-6;
            let lm = wk.loss_and_grad(&p, BatchKey { chain: 0, step: 0 }, &mut scratch);
            assert!(((lp - lm) / 2e-6 - g[i]).abs() < 1e-6, "param {i}");
        }
        assert!(
            wk.loss_and_grad(&r.truth(), BatchKey { chain: 0, step: 0 }, &mut scratch)
                .abs()
                < 1e-24
        );
    }
}
