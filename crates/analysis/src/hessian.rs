//! Curvature of the loss at a checkpoint on a fixed batch: Hessian-vector products by central
//! differences of the gradient in float64 (`H v ~ (g(w + h v) - g(w - h v)) / 2h`, error
//! O(h^2), in place of pyhessian's double backward) with the ReLU pattern of `w` frozen, so the
//! result is autograd's Hessian and not spikes from units crossing zero, the Hutchinson trace estimate with
//! Rademacher vectors (pyhessian's stopping rule), and the top eigenvalues by Lanczos with full
//! reorthogonalisation.

use crate::{DecompositionError, check_finite};
use faer::{Mat, Side};
use stagewise_engine::rng::{Stream, tag};
use stagewise_sampling::{BatchKey, Potential, PotentialWorker};

/// Probe `sample` of the Hutchinson estimate: `n` random signs from `(seed, HESSIAN_PROBE)`.
fn rademacher(seed: u64, sample: usize, n: usize) -> Vec<f64> {
    let st = Stream::new(seed, tag::HESSIAN_PROBE, sample as u32, 0);
    (0..n)
        .map(|i| {
            if st.below(i as u32, 2) == 0 {
                -1.0
            } else {
                1.0
            }
        })
        .collect()
}

/// Hessian-vector products of a potential at `w` (on its full batch).
pub struct Hessian<'p, P: Potential<f64>> {
    pub potential: &'p P,
    pub w: Vec<f64>,
    /// Step of the central difference, relative to `|w| / |v|`.
    pub rel_step: f64,
}

impl<'p, P: Potential<f64>> Hessian<'p, P> {
    pub fn new(potential: &'p P, w: &[f64]) -> Self {
        Hessian {
            potential,
            w: w.to_vec(),
            rel_step: 1e-5,
        }
    }

    /// `H v`.
    pub fn apply(&self, v: &[f64]) -> Vec<f64> {
        let vn = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if vn == 0.0 {
            return vec![0.0; v.len()];
        }
        let wn = self.w.iter().map(|x| x * x).sum::<f64>().sqrt().max(1.0);
        let h = self.rel_step * wn / vn;
        let mut worker = self.potential.worker();
        // Evaluate at w and freeze the activation pattern there (ReLU models), so both sides of
        // the difference lie on the same smooth piece.
        let mut g0 = vec![0.0; self.w.len()];
        worker.loss_and_grad(&self.w, BatchKey::FULL, &mut g0);
        worker.freeze_activation_pattern();
        let grad_at = |worker: &mut P::Worker<'_>, sign: f64| {
            let p: Vec<f64> = self
                .w
                .iter()
                .zip(v)
                .map(|(a, b)| a + sign * h * b)
                .collect();
            let mut g = vec![0.0; p.len()];
            worker.loss_and_grad(&p, BatchKey::FULL, &mut g);
            g
        };
        let gp = grad_at(&mut worker, 1.0);
        let gm = grad_at(&mut worker, -1.0);
        gp.iter()
            .zip(&gm)
            .map(|(a, b)| (a - b) / (2.0 * h))
            .collect()
    }

    /// Hutchinson's estimate of `tr H` from Rademacher probes: samples are drawn until the
    /// running mean changes by less than `tol` relative (pyhessian: 1e-3) or `max` samples.
    /// Returns the samples `v^T H v`.
    pub fn trace_samples(&self, seed: u64, tol: f64, max: usize) -> Vec<f64> {
        let n = self.w.len();
        let mut samples: Vec<f64> = Vec::new();
        let mut mean = 0.0;
        for s in 0..max {
            let v = rademacher(seed, s, n);
            let hv = self.apply(&v);
            samples.push(v.iter().zip(&hv).map(|(a, b)| a * b).sum());
            let new = samples.iter().sum::<f64>() / samples.len() as f64;
            if s > 0 && ((new - mean) / (mean.abs() + 1e-6)).abs() < tol {
                break;
            }
            mean = new;
        }
        samples
    }

    /// The `k` largest eigenvalues (descending) from `steps` Lanczos iterations; an error when
    /// the Hessian-vector products are not finite (NaN weights) or the eigensolver fails.
    pub fn top_eigenvalues(
        &self,
        k: usize,
        steps: usize,
        seed: u64,
    ) -> Result<Vec<f64>, DecompositionError> {
        let n = self.w.len();
        let m = steps.min(n).max(k);
        let mut q: Vec<Vec<f64>> = Vec::with_capacity(m + 1);
        let mut start = vec![0.0; n];
        Stream::new(seed, tag::HESSIAN_PROBE, u32::MAX, 1).fill_normal(&mut start);
        let norm = start.iter().map(|x| x * x).sum::<f64>().sqrt();
        q.push(start.iter().map(|x| x / norm).collect());
        let (mut alpha, mut beta) = (Vec::new(), Vec::new());
        for j in 0..m {
            let mut r = self.apply(&q[j]);
            let a: f64 = r.iter().zip(&q[j]).map(|(x, y)| x * y).sum();
            alpha.push(a);
            // Full reorthogonalisation (twice is enough).
            for _ in 0..2 {
                for qi in &q {
                    let d: f64 = r.iter().zip(qi).map(|(x, y)| x * y).sum();
                    r.iter_mut().zip(qi).for_each(|(x, y)| *x -= d * y);
                }
            }
            let b = r.iter().map(|x| x * x).sum::<f64>().sqrt();
            if j + 1 == m || b < 1e-10 {
                break;
            }
            beta.push(b);
            q.push(r.iter().map(|x| x / b).collect());
        }
        check_finite("the Lanczos tridiagonal (Hessian-vector products)", &alpha)?;
        check_finite("the Lanczos tridiagonal (Hessian-vector products)", &beta)?;
        let t = alpha.len();
        let tri = Mat::<f64>::from_fn(t, t, |i, j| {
            if i == j {
                alpha[i]
            } else if i == j + 1 {
                beta[j]
            } else if j == i + 1 {
                beta[i]
            } else {
                0.0
            }
        });
        let eig =
            tri.self_adjoint_eigen(Side::Lower)
                .map_err(|_| DecompositionError::NoConvergence {
                    what: "eigenvalues of the Lanczos tridiagonal".into(),
                })?;
        let s = eig.S().column_vector();
        let mut vals: Vec<f64> = (0..t).map(|i| s[i]).collect();
        vals.sort_by(|a, b| b.total_cmp(a));
        vals.truncate(k);
        Ok(vals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagewise_sampling::toy::Dln;

    /// A quadratic with a known Hessian: `L(w) = 1/2 sum_i d_i w_i^2`.
    struct Quadratic(Vec<f64>);
    struct QuadraticWorker<'a>(&'a [f64]);
    impl Potential<f64> for Quadratic {
        type Worker<'a> = QuadraticWorker<'a>;
        fn dim(&self) -> usize {
            self.0.len()
        }
        fn worker(&self) -> QuadraticWorker<'_> {
            QuadraticWorker(&self.0)
        }
    }
    impl PotentialWorker<f64> for QuadraticWorker<'_> {
        fn loss_and_grad(&mut self, w: &[f64], _key: BatchKey, grad: &mut [f64]) -> f64 {
            let mut l = 0.0;
            for i in 0..w.len() {
                grad[i] = self.0[i] * w[i];
                l += 0.5 * self.0[i] * w[i] * w[i];
            }
            l
        }
    }

    #[test]
    fn trace_and_eigenvalues_of_a_known_diagonal_hessian() {
        let d: Vec<f64> = (0..200)
            .map(|i| {
                if i < 3 {
                    50.0 - 10.0 * i as f64
                } else {
                    (i % 7) as f64 * 0.1
                }
            })
            .collect();
        let q = Quadratic(d.clone());
        let h = Hessian::new(&q, &vec![0.3; 200]);
        let hv = h.apply(&vec![1.0; 200]);
        for (a, b) in hv.iter().zip(&d) {
            assert!((a - b).abs() < 1e-6);
        }
        let top = h.top_eigenvalues(3, 40, 0).unwrap();
        for (a, b) in top.iter().zip([50.0, 40.0, 30.0]) {
            assert!((a - b).abs() < 1e-6, "{top:?}");
        }
        // Rademacher probes of a diagonal matrix give the trace exactly.
        let tr: f64 = d.iter().sum();
        let samples = h.trace_samples(0, 1e-3, 100);
        assert!(samples.iter().all(|s| (s - tr).abs() < 1e-5 * tr));
        assert_eq!(samples.len(), 2);
        // At a NaN weight the products are NaN: an error, not a panic in the eigensolver.
        let mut w = vec![0.3; 200];
        w[7] = f64::NAN;
        let err = Hessian::new(&q, &w).top_eigenvalues(3, 40, 0).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
    }

    /// On a deep linear network: Hv is symmetric (u^T H v = v^T H u) and matches a second
    /// difference of the loss along v.
    #[test]
    fn dln_hessian_vector_products_are_consistent() {
        let dln = Dln::new(vec![3, 4, 2], 1, 100, 2);
        let mut w = dln.truth();
        for (i, x) in w.iter_mut().enumerate() {
            *x += 0.05 * ((i * 13 % 7) as f64 - 3.0);
        }
        let h = Hessian::new(&dln, &w);
        let n = w.len();
        let u: Vec<f64> = (0..n).map(|i| ((i * 5 % 11) as f64 - 5.0) / 5.0).collect();
        let v: Vec<f64> = (0..n).map(|i| ((i * 3 % 7) as f64 - 3.0) / 3.0).collect();
        let (hu, hv) = (h.apply(&u), h.apply(&v));
        let uhv: f64 = u.iter().zip(&hv).map(|(a, b)| a * b).sum();
        let vhu: f64 = v.iter().zip(&hu).map(|(a, b)| a * b).sum();
        assert!(
            (uhv - vhu).abs() < 1e-6 * uhv.abs().max(1.0),
            "{uhv} vs {vhu}"
        );
        let loss = |t: f64| {
            let p: Vec<f64> = w.iter().zip(&v).map(|(a, b)| a + t * b).collect();
            Potential::<f64>::init_loss(&dln, &p)
        };
        let e = 1e-4;
        let second = (loss(e) - 2.0 * loss(0.0) + loss(-e)) / (e * e);
        let vhv: f64 = v.iter().zip(&hv).map(|(a, b)| a * b).sum();
        assert!(
            (second - vhv).abs() < 1e-4 * vhv.abs().max(1.0),
            "{second} vs {vhv}"
        );
    }

    /// On the regression transformer at initialisation: v^T H v from the Hessian-vector product
    /// equals the second difference of the loss along v (Rademacher v) on the ReLU pattern of
    /// w. (Without freezing, second differences at steps 1e-5..1e-4 swing between -318 and
    /// +435 where the Hessian gives 136-211: units crossing zero.)
    #[test]
    fn transformer_hvp_matches_the_second_difference_of_the_loss() {
        use stagewise_models::{RegressionConfig, RegressionTransformer};
        use stagewise_sampling::regression::FixedBatch;
        use stagewise_train::TrainConfig;
        use stagewise_train::data::Batch;
        let cfg = TrainConfig::l2h4(4, 0);
        let model = RegressionTransformer::new(RegressionConfig::l2h4(4)).unwrap();
        let mut batch = Batch::<f64>::default();
        cfg.pretrain_distribution().sample_indexed_into(
            &mut batch,
            32,
            |i| i as u32,
            1,
            tag::HESSIAN_PROBE,
            0,
        );
        let fixed = FixedBatch {
            model: &model,
            toks: batch.toks.clone(),
            ys: batch.ys_t.clone(),
            nseq: 32,
            t: 8,
        };
        let w: Vec<f64> = model.init_params(0);
        let h = Hessian::new(&fixed, &w);
        let samples = h.trace_samples(3, 0.0, 4);
        for (s, vhv) in samples.iter().enumerate() {
            let v = rademacher(3, s, w.len());
            // The second difference of the loss on the frozen ReLU pattern of w.
            let mut worker = fixed.worker();
            let mut g = vec![0.0; w.len()];
            worker.loss_and_grad(&w, BatchKey::FULL, &mut g);
            worker.freeze_activation_pattern();
            let mut loss = |t: f64| {
                let p: Vec<f64> = w.iter().zip(&v).map(|(a, b)| a + t * b).collect();
                worker.loss_and_grad(&p, BatchKey::FULL, &mut g)
            };
            let e = 1e-4;
            let second = (loss(e) - 2.0 * loss(0.0) + loss(-e)) / (e * e);
            assert!(
                (second - vhv).abs() < 1e-4 * vhv.abs().max(1.0),
                "{second} vs {vhv}"
            );
        }
    }
}
