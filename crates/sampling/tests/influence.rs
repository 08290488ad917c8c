//! Susceptibilities and Bayesian influence functions against analytical answers: covariances
//! of a Gaussian local posterior (exact for the SGLD chain's own stationary law), the cubic
//! potential's `Cov_t[w^2, w] = -2 alpha / (lambda^3 t^2)`, the streaming estimates against
//! the same formulas over stored draws, the BIF's symmetry and unit diagonal, and restrictions
//! batched against the same restrictions run alone.

use stagewise_sampling::influence::{ChainReduce, bif, block_mean, susceptibility};
use stagewise_sampling::observed::{
    ObserveConfig, ObservedRestriction, Observer, ObserverWorker, sample_observed,
};
use stagewise_sampling::{BatchKey, ChainConfig, Potential, PotentialWorker, Sgld};

/// `L(w) = 1/2 w^T H w + alpha/6 w_0^3` in `d = sqrt(h.len())` dimensions.
struct Poly {
    h: Vec<f64>,
    alpha: f64,
}

impl Poly {
    fn d(&self) -> usize {
        (self.h.len() as f64).sqrt() as usize
    }
    fn loss(&self, w: &[f64]) -> f64 {
        let d = self.d();
        let mut l = self.alpha / 6.0 * w[0].powi(3);
        for i in 0..d {
            for j in 0..d {
                l += 0.5 * w[i] * self.h[i * d + j] * w[j];
            }
        }
        l
    }
}

struct PolyWorker<'a>(&'a Poly);

impl Potential<f64> for Poly {
    type Worker<'a> = PolyWorker<'a>;
    fn dim(&self) -> usize {
        self.d()
    }
    fn worker(&self) -> PolyWorker<'_> {
        PolyWorker(self)
    }
}

impl PotentialWorker<f64> for PolyWorker<'_> {
    fn loss_and_grad(&mut self, w: &[f64], _key: BatchKey, grad: &mut [f64]) -> f64 {
        let p = self.0;
        let d = p.d();
        for i in 0..d {
            grad[i] = (0..d).map(|j| p.h[i * d + j] * w[j]).sum();
        }
        grad[0] += p.alpha / 2.0 * w[0] * w[0];
        p.loss(w)
    }
}

/// Observes `f(w)`: `len` values.
struct Observe<F> {
    len: usize,
    f: F,
}

impl<F: std::ops::Fn(&[f64], &mut [f64]) + Sync> Observer<f64> for Observe<F> {
    type Worker<'a>
        = &'a Observe<F>
    where
        F: 'a;
    fn len(&self) -> usize {
        self.len
    }
    fn worker(&self) -> &Observe<F> {
        self
    }
}

impl<F: std::ops::Fn(&[f64], &mut [f64]) + Sync> ObserverWorker<f64> for &Observe<F> {
    fn observe(&mut self, w: &[f64], out: &mut [f64]) -> bool {
        (self.f)(w, out);
        true
    }
}

fn sgld(epsilon: f64, t: f64) -> Sgld {
    Sgld {
        nbeta: t,
        ..Sgld::from_temperature(epsilon, 0.0, 1.0, 1.0)
    }
}

/// The stationary covariance of SGLD on `1/2 w^T H w` at inverse temperature t, step eps:
/// the chain is `w <- A w + sqrt(eps) xi` with `A = I - (eps t / 2) H`, so in H's eigenbasis
/// each variance is `eps / (1 - a_k^2)` (2 x 2 symmetric H).
fn discrete_covariance(h: [f64; 4], eps: f64, t: f64) -> [f64; 4] {
    let (a, b, d) = (h[0], h[1], h[3]);
    let mean = 0.5 * (a + d);
    let r = (0.25 * (a - d).powi(2) + b * b).sqrt();
    let mut out = [0.0; 4];
    for lam in [mean + r, mean - r] {
        // Unit eigenvector of [[a, b], [b, d]] for lam.
        let (x, y) = if b.abs() > 1e-15 {
            (b, lam - a)
        } else if (lam - a).abs() < (lam - d).abs() {
            (1.0, 0.0)
        } else {
            (0.0, 1.0)
        };
        let n = (x * x + y * y).sqrt();
        let v = [x / n, y / n];
        let ak = 1.0 - 0.5 * eps * t * lam;
        let s = eps / (1.0 - ak * ak);
        for i in 0..2 {
            for j in 0..2 {
                out[i * 2 + j] += s * v[i] * v[j];
            }
        }
    }
    out
}

#[test]
fn gaussian_covariances_are_the_inverse_hessian_over_t() {
    let h = [2.0, 0.6, 0.6, 1.0];
    let pot = Poly {
        h: h.to_vec(),
        alpha: 0.0,
    };
    // eps t lambda / 2 = 0.07-0.23: the chain mixes in tens of steps; its stationary law is known
    // exactly (`discrete_covariance`), the continuous one within O(eps t lambda).
    let (eps, t) = (2e-3, 100.0);
    // Observed: L (the driver), w0, w1, a.w with a = (1, -2).
    let obs = Observe {
        len: 4,
        f: |w: &[f64], out: &mut [f64]| {
            out[0] = pot.loss(w);
            out[1] = w[0];
            out[2] = w[1];
            out[3] = w[0] - 2.0 * w[1];
        },
    };
    let mut cfg = ChainConfig::new(8, 40_000, 3);
    cfg.burnin = 500;
    let mut ocfg = ObserveConfig::new(0..1);
    ocfg.full = true;
    let r = sample_observed(
        &pot,
        &obs,
        &[0.0, 0.0],
        &sgld(eps, t),
        &[None],
        &cfg,
        &ocfg,
        &|_| {},
    );
    let all = r[0].pooled();
    assert_eq!(all.n, 8 * 40_000);
    let sigma = discrete_covariance(h, eps, t);
    // (1/t) H^{-1}: the identity's continuous answer, within the discretisation O(eps t).
    let det = h[0] * h[3] - h[1] * h[1];
    let inv = [
        h[3] / det / t,
        -h[1] / det / t,
        -h[1] / det / t,
        h[0] / det / t,
    ];
    for k in 0..4 {
        assert!(
            (sigma[k] - inv[k]).abs() < 0.15 * inv[0],
            "discrete {sigma:?} vs {inv:?}"
        );
    }
    let cov_aa = sigma[0] - 4.0 * sigma[1] + 4.0 * sigma[3];
    let cov_a0 = sigma[0] - 2.0 * sigma[1];
    for (i, j, want) in [
        (1, 1, sigma[0]),
        (1, 2, sigma[1]),
        (2, 2, sigma[3]),
        (3, 3, cov_aa),
        (1, 3, cov_a0),
    ] {
        let got = all.cov_xx(i, j);
        let scale = (all.cov_xx(i, i) * all.cov_xx(j, j)).sqrt();
        assert!(
            (got - want).abs() < 0.04 * scale,
            "Cov[{i},{j}] = {got}, expected {want}"
        );
    }
    // Cov[L, w_i] = 0 by symmetry; Var L = tr((H Sigma)^2) / 2.
    let hs = [
        h[0] * sigma[0] + h[1] * sigma[2],
        h[0] * sigma[1] + h[1] * sigma[3],
        h[2] * sigma[0] + h[3] * sigma[2],
        h[2] * sigma[1] + h[3] * sigma[3],
    ];
    let var_l = 0.5 * (hs[0] * hs[0] + 2.0 * hs[1] * hs[2] + hs[3] * hs[3]);
    assert!(
        (all.var_p() - var_l).abs() < 0.08 * var_l,
        "Var L {} vs {var_l}",
        all.var_p()
    );
    assert!(all.cov_px(1).abs() < 0.05 * (var_l * sigma[0]).sqrt());
    // The BIF of the observed values: symmetric with a unit diagonal, and the correlations.
    let b = bif(&r[0], ChainReduce::Stack, false).unwrap();
    for i in 0..4 {
        assert_eq!(b.value[i * 4 + i], 1.0);
        for j in 0..4 {
            assert_eq!(b.value[i * 4 + j], b.value[j * 4 + i]);
        }
    }
    let rho = sigma[1] / (sigma[0] * sigma[3]).sqrt();
    assert!(
        (b.value[4 + 2] - rho).abs() < 0.03,
        "corr {} vs {rho}",
        b.value[6]
    );
    let se = b.se.unwrap();
    assert!(se[6] > 0.0 && se[6] < 0.03, "standard error {}", se[6]);
}

#[test]
fn cubic_covariance_matches_the_second_order_identity() {
    // L = lambda/2 w^2 + alpha/6 w^3: Cov_t[w^2, w] = -2 alpha / (lambda^3 t^2) + O(t^-3).
    let (lambda, alpha, t) = (1.0, 1.5, 60.0);
    let pot = Poly {
        h: vec![lambda],
        alpha,
    };
    let obs = Observe {
        len: 2,
        f: |w: &[f64], out: &mut [f64]| {
            out[0] = w[0] * w[0];
            out[1] = w[0];
        },
    };
    // Quadrature of the target exp(-t L) (the barrier at w = -2 lambda/alpha is far).
    let (lo, hi, n) = (-1.2, 1.5, 200_000);
    let dw = (hi - lo) / n as f64;
    let (mut z, mut m1, mut m2, mut m3) = (0.0, 0.0, 0.0, 0.0);
    for k in 0..n {
        let w = lo + (k as f64 + 0.5) * dw;
        let p = (-t * pot.loss(&[w])).exp();
        z += p;
        m1 += p * w;
        m2 += p * w * w;
        m3 += p * w * w * w;
    }
    let (m1, m2, m3) = (m1 / z, m2 / z, m3 / z);
    let exact = m3 - m2 * m1;
    let formula = -2.0 * alpha / (lambda.powi(3) * t * t);
    assert!(
        (exact - formula).abs() < 0.15 * formula.abs(),
        "quadrature {exact} vs {formula}"
    );

    let eps = 2.0 * 0.04 / (t * lambda); // eps t lambda / 2 = 0.04: ~+3 % discretisation bias, 1.6 % noise
    let mut cfg = ChainConfig::new(16, 60_000, 11);
    cfg.steps_between_draws = 10;
    cfg.burnin = 1_000;
    let ocfg = ObserveConfig::new(0..1);
    let r = sample_observed(
        &pot,
        &obs,
        &[0.0],
        &sgld(eps, t),
        &[None],
        &cfg,
        &ocfg,
        &|_| {},
    );
    let all = r[0].pooled();
    let got = all.cov_px(1);
    // E[w^3] alone (no centring) would be off by E[w^2] E[w] ~ -alpha/(2 lambda^3 t^2): 25 %.
    assert!(
        (got - exact).abs() < 0.1 * exact.abs(),
        "SGLD Cov[w^2, w] = {got}, exact {exact}"
    );
}

/// Two-pass formulas over stored draws, written as devinterp writes them.
fn stored(r: &ObservedRestriction) -> (Vec<f64>, Vec<Vec<f64>>) {
    let p: Vec<f64> = r.chains.iter().flat_map(|c| c.driver.clone()).collect();
    let x: Vec<Vec<f64>> = r.chains.iter().flat_map(|c| c.draws.clone()).collect();
    (p, x)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn streaming_estimates_equal_the_stored_draw_formulas_and_batches_equal_single_runs() {
    let h = [1.5, 0.4, 0.4, 0.8];
    let pot = Poly {
        h: h.to_vec(),
        alpha: 0.7,
    };
    // Six observed values, two "samples" of three "tokens"; the driver is sample 0.
    let obs = Observe {
        len: 6,
        f: |w: &[f64], out: &mut [f64]| {
            for (k, o) in out.iter_mut().enumerate() {
                let a = 0.3 * k as f64 - 0.5;
                *o = (w[0] - a).powi(2) + (1.0 + 0.1 * k as f64) * (w[1] + a * w[0]).powi(2);
            }
        },
    };
    let mut cfg = ChainConfig::new(3, 300, 5);
    cfg.burnin = 20;
    let mut ocfg = ObserveConfig::new(0..3);
    ocfg.full = true;
    ocfg.chain_mean = true;
    ocfg.store_draws = true;
    let masks = vec![None, Some(vec![true, false]), Some(vec![false, true])];
    let w0 = [0.05, -0.02];
    let s = sgld(1e-3, 80.0);
    let r = sample_observed(&pot, &obs, &w0, &s, &masks, &cfg, &ocfg, &|_| {});
    let init_loss = (0..3)
        .map(|k| {
            let mut o = [0.0; 6];
            (obs.f)(&w0, &mut o);
            o[k]
        })
        .sum::<f64>()
        / 3.0;

    // Susceptibility: devinterp's E[phi P] - E[phi l] - E[phi] (E_full[P] - E_full[l]).
    let (pf, xf) = stored(&r[0]);
    for (ri, restricted) in r.iter().enumerate().skip(1) {
        let chi = susceptibility(&r[0], restricted, init_loss);
        let (p, x) = stored(restricted);
        let phi: Vec<f64> = p.iter().map(|v| v - init_loss).collect();
        let e_phi_p = mean(&phi.iter().zip(&p).map(|(a, b)| a * b).collect::<Vec<_>>());
        for i in 0..6 {
            let li: Vec<f64> = x.iter().map(|d| d[i]).collect();
            let e_phi_l = mean(&phi.iter().zip(&li).map(|(a, b)| a * b).collect::<Vec<_>>());
            let full_l: Vec<f64> = xf.iter().map(|d| d[i]).collect();
            let want = e_phi_p - e_phi_l - mean(&phi) * (mean(&pf) - mean(&full_l));
            let got = chi.value[i];
            assert!(
                (got - want).abs() < 1e-9 * (want.abs() + 1e-6),
                "restriction {ri} value {i}: {got} vs {want}"
            );
        }
        assert_eq!(chi.per_chain.len(), 3);
        assert!(chi.ess > 0.0 && chi.ess.is_finite());
        let (avg, se) = chi.mean_over(0..3);
        assert!((avg - mean(&chi.value[0..3])).abs() < 1e-15 && se.is_finite());
    }

    // BIF, stacked: np.corrcoef over all (chain, draw) of the stored values.
    let b = bif(&r[0], ChainReduce::Stack, false).unwrap();
    let corr = |rows: &[Vec<f64>], i: usize, j: usize| {
        let a: Vec<f64> = rows.iter().map(|d| d[i]).collect();
        let c: Vec<f64> = rows.iter().map(|d| d[j]).collect();
        let (ma, mc) = (mean(&a), mean(&c));
        let cov = |u: &[f64], mu: f64, v: &[f64], mv: f64| {
            u.iter()
                .zip(v)
                .map(|(x, y)| (x - mu) * (y - mv))
                .sum::<f64>()
        };
        cov(&a, ma, &c, mc) / (cov(&a, ma, &a, ma) * cov(&c, mc, &c, mc)).sqrt()
    };
    for i in 0..6 {
        assert_eq!(b.value[i * 6 + i], 1.0);
        for j in 0..6 {
            assert_eq!(b.value[i * 6 + j], b.value[j * 6 + i]);
            assert!(
                (b.value[i * 6 + j] - corr(&xf, i, j)).abs() < 1e-10,
                "stack {i} {j}"
            );
        }
    }
    // BIF, chain-averaged draws first.
    let per_draw: Vec<Vec<f64>> = (0..cfg.draws)
        .map(|d| {
            (0..6)
                .map(|i| {
                    mean(
                        &r[0]
                            .chains
                            .iter()
                            .map(|c| c.draws[d][i])
                            .collect::<Vec<_>>(),
                    )
                })
                .collect()
        })
        .collect();
    let bm = bif(&r[0], ChainReduce::Mean, false).unwrap();
    assert_eq!(bm.draws, cfg.draws as u64);
    for i in 0..6 {
        for j in 0..6 {
            assert!(
                (bm.value[i * 6 + j] - corr(&per_draw, i, j)).abs() < 1e-10,
                "mean {i} {j}"
            );
        }
    }
    // The sequence-level kernel: values grouped per sample before the moments.
    let mut grouped = ocfg.clone();
    grouped.group = 3;
    let rg = sample_observed(&pot, &obs, &w0, &s, &masks[..1], &cfg, &grouped, &|_| {});
    let seq: Vec<Vec<f64>> = xf
        .iter()
        .map(|d| vec![mean(&d[0..3]), mean(&d[3..6])])
        .collect();
    let bs = bif(&rg[0], ChainReduce::Stack, false).unwrap();
    assert!((bs.value[1] - corr(&seq, 0, 1)).abs() < 1e-10);
    assert_eq!(
        block_mean(&b.value, 6, 3)[0],
        mean(&[
            b.value[0],
            b.value[1],
            b.value[2],
            b.value[6],
            b.value[7],
            b.value[8],
            b.value[12],
            b.value[13],
            b.value[14]
        ])
    );

    // Each restriction alone gives exactly its moments in the batch.
    for (ri, mask) in masks.iter().enumerate() {
        let alone = sample_observed(
            &pot,
            &obs,
            &w0,
            &s,
            std::slice::from_ref(mask),
            &cfg,
            &ocfg,
            &|_| {},
        );
        for (a, b) in alone[0].chains.iter().zip(&r[ri].chains) {
            assert_eq!(a.moments, b.moments, "restriction {ri}");
            assert_eq!(a.trace, b.trace);
        }
        assert_eq!(alone[0].chain_mean, r[ri].chain_mean);
    }
}

#[test]
fn the_regression_observer_sees_the_data_set_loss_per_sequence_and_example() {
    use stagewise_engine::rng::tag;
    use stagewise_models::{RegressionConfig, RegressionTransformer};
    use stagewise_sampling::regression::{Dataset, Observed};
    use stagewise_train::data::{Batch, SequenceDistribution, TaskDistribution};
    let model = RegressionTransformer::new(RegressionConfig::l2h4(8)).unwrap();
    let w: Vec<f32> = model.layout.init_params(3);
    let dist = SequenceDistribution {
        tasks: TaskDistribution::Gaussian { d: 4 },
        k: 8,
        noise_variance: 0.125,
    };
    let (n, seed) = (40, 9);
    // The data set's sequences i = 0..n, as its full loss reads them.
    let mut batch = Batch::<f32>::default();
    dist.sample_into(&mut batch, n, seed, tag::LLC_DATASET, 0);
    let set = Observed {
        model: &model,
        toks: batch.toks.clone(),
        ys: batch.ys.clone(),
        nseq: n,
        k: 8,
    };
    let mut out = vec![0.0; set.len()];
    assert!(set.worker().observe(&w, &mut out));
    let (loss, parts) = Dataset::new(&model, dist, n, 8, seed).full_loss(&w);
    for (t, part) in parts.iter().enumerate() {
        let mean = (0..n).map(|s| out[s * 8 + t]).sum::<f64>() / n as f64;
        assert!(
            (mean - part).abs() < 1e-9 * part.max(1.0),
            "example {t}: {mean} vs {part}"
        );
    }
    assert!((out.iter().sum::<f64>() / out.len() as f64 - loss).abs() < 1e-9 * loss.max(1.0));
}
