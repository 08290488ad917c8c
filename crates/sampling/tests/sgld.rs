//! SGLD against the reference's golden two-step case, exact identities, determinism, failure
//! handling, and known learning coefficients.

use serde_json::Value;
use stagewise_models::golden::{golden_inputs, golden_params};
use stagewise_models::{RegressionConfig, RegressionTransformer};
use stagewise_sampling::chains::sample_with_noise;
use stagewise_sampling::regression::FixedBatch;
use stagewise_sampling::toy::Polynomial;
use stagewise_sampling::{
    BatchKey, ChainConfig, LlcEstimate, Method, Potential, PotentialWorker, Sgld, sample,
};

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        _ => vec![v.as_f64().unwrap()],
    }
}

#[test]
fn two_sgld_steps_match_the_reference_golden_case() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/reference/golden_vectors.json"
    );
    let g: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = &g["sgld_two_steps"];
    let sgld = Sgld::from_scales(
        case["gradient_scale"].as_f64().unwrap(),
        case["localization_scale"].as_f64().unwrap(),
        case["epsilon"].as_f64().unwrap(),
    );
    assert!((sgld.nbeta - 60.0).abs() < 1e-12 && (sgld.gamma - 6.0).abs() < 1e-12);
    let t = case["temperature_T"].as_f64().unwrap();
    let n = case["n"].as_f64().unwrap();
    let p1 = Sgld::from_temperature(1e-3, 6.0, t, n);
    assert!(
        (p1.nbeta - sgld.nbeta).abs() < 1e-9,
        "the two parametrisations agree"
    );

    let model = RegressionTransformer::new(RegressionConfig::l2h4(16)).unwrap();
    let w0 = golden_params(&model);
    let (b, k, d) = (2, 16, 4);
    let (xs, ys) = golden_inputs(b, k, d);
    let pot = FixedBatch {
        model: &model,
        toks: model.encode(&xs, &ys, b, k),
        ys,
        nseq: b,
        t: 2 * k,
    };
    let layout = model.layout.clone();
    // The golden noise: xi_q[j] = 0.5 cos(0.2 (j+1) + q + 10 s) for tensor q at step s.
    let noise = move |_chain: u32, step: u64, _z: &mut [f64], out: &mut [f64]| {
        for (q, info) in layout.params.iter().enumerate() {
            for (j, v) in out[info.range()].iter_mut().enumerate() {
                *v = 0.5 * (0.2 * (j + 1) as f64 + q as f64 + 10.0 * step as f64).cos();
            }
        }
    };
    // Three draws: the losses before steps 0 and 1, then the state after two steps (draw 1's
    // update) is read from the weights via the distance trace and a third step's loss.
    let cfg = ChainConfig::new(1, 2, 0);
    let traces = sample_with_noise(&pot, &w0, &sgld, None, &cfg, &noise);
    let want = flat(&case["batch_losses_before_each_step"]);
    for (got, want) in traces[0].losses.iter().zip(&want) {
        assert!(
            (got - want).abs() <= 1e-9 * want.abs(),
            "loss {got} vs {want}"
        );
    }
    let dist = traces[0].distances[1];
    let want_dist = case["l2_distance_from_w0_after_2_steps"].as_f64().unwrap();
    assert!(
        (dist - want_dist).abs() <= 1e-9 * want_dist,
        "distance {dist} vs {want_dist}"
    );

    // Weights after two steps, by applying the same two updates directly.
    let mut w = w0.clone();
    let mut grad = vec![0.0; w.len()];
    let mut worker = pot.worker();
    let mut xi = vec![0.0; w.len()];
    for s in 0..2 {
        worker.loss_and_grad(&w, BatchKey::grad(0, s), &mut grad);
        noise(0, s, &mut [], &mut xi);
        sgld.step(
            &mut w,
            &w0,
            &grad,
            &xi,
            None,
            &mut sgld.initial_state(0, &[]),
        );
    }
    let tok = &w[model
        .layout
        .get("token_sequence_transformer.token_embedding.weight")
        .unwrap()
        .range()];
    for (got, want) in tok
        .iter()
        .zip(flat(&case["token_embedding_weight_first5_after_2_steps"]))
    {
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1e-3),
            "{got} vs {want}"
        );
    }
    let ub = &w[model
        .layout
        .get("token_sequence_transformer.unembedding.1.bias")
        .unwrap()
        .range()];
    for (got, want) in ub.iter().zip(flat(&case["unembedding_bias_after_2_steps"])) {
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1e-3),
            "{got} vs {want}"
        );
    }
}

#[test]
fn zero_noise_and_localization_is_gradient_descent_and_masks_freeze() {
    let pot = Polynomial::new(vec![1, 2], 500, 0.3, None, 3);
    let w0 = vec![0.7f64, -0.4];
    let mut sgld = Sgld::from_temperature(1e-3, 0.0, 1.0, 50.0);
    sgld.noise_level = 0.0;
    let mut w = w0.clone();
    let mut gd = w0.clone();
    let mut grad = vec![0.0; 2];
    let mut worker = Potential::<f64>::worker(&pot);
    for s in 0..20 {
        worker.loss_and_grad(&w, BatchKey::grad(0, s), &mut grad);
        sgld.step(
            &mut w,
            &w0,
            &grad,
            &[1.0, -1.0],
            None,
            &mut sgld.initial_state(0, &[]),
        );
        let mut g2 = vec![0.0; 2];
        worker.loss_and_grad(&gd, BatchKey::grad(0, s), &mut g2);
        for i in 0..2 {
            gd[i] -= 0.5 * 1e-3 * 50.0 * g2[i];
        }
        assert_eq!(w, gd);
    }
    let mut sgld = Sgld::from_temperature(1e-2, 3.0, 1.0, 50.0);
    sgld.bounding_box = Some(0.05);
    let traces = sample(
        &pot,
        &w0,
        &sgld,
        Some(&[false, true]),
        &ChainConfig::new(2, 200, 9),
    );
    // The frozen coordinate stays exactly at w0 (distance = |w1 - w0_1| <= box).
    for t in &traces {
        assert!(t.distances.iter().all(|d| *d <= 0.05 + 1e-15));
    }
    let mut w = w0.clone();
    sgld.step(
        &mut w,
        &w0,
        &[5.0, 5.0],
        &[3.0, 3.0],
        Some(&[false, true]),
        &mut sgld.initial_state(0, &[]),
    );
    assert_eq!(w[0], w0[0]);
    // -0.4 - (0.01/2)(50 * 5) + sqrt(0.01) * 3 = -1.35, clamped to w0 - 0.05.
    assert!(
        (w[1] - (w0[1] - 0.05)).abs() < 1e-15,
        "clamped to the box: {}",
        w[1]
    );
}

#[test]
fn chains_are_the_same_batched_alone_and_on_any_thread_count() {
    let pot = Polynomial::new(vec![2, 1], 2000, 0.5, Some(64), 4);
    let w0 = vec![0.1f64, 0.2];
    let sgld = Sgld::from_temperature(1e-4, 10.0, 1.0, 200.0);
    let mut cfg = ChainConfig::new(4, 300, 11);
    cfg.burnin = 20;
    cfg.steps_between_draws = 2;
    let all = sample(&pot, &w0, &sgld, None, &cfg);
    assert_eq!(all[0].losses.len(), 300);
    for c in 0..4 {
        let mut one = cfg.clone();
        one.chains = 1;
        one.first_chain = c;
        let alone = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| sample(&pot, &w0, &sgld, None, &one));
        assert_eq!(alone[0], all[c as usize], "chain {c}");
    }
    assert_ne!(all[0].losses, all[1].losses);
}

/// A potential whose chain 1 produces a NaN loss at step 5.
struct Faulty;
struct FaultyWorker;
impl Potential<f64> for Faulty {
    type Worker<'a> = FaultyWorker;
    fn dim(&self) -> usize {
        1
    }
    fn worker(&self) -> FaultyWorker {
        FaultyWorker
    }
}
impl PotentialWorker<f64> for FaultyWorker {
    fn loss_and_grad(&mut self, w: &[f64], key: BatchKey, grad: &mut [f64]) -> f64 {
        grad[0] = 2.0 * w[0];
        if key.chain == 1 && key.step == 5 {
            f64::NAN
        } else {
            w[0] * w[0]
        }
    }
}

#[test]
fn a_non_finite_loss_ends_that_chain_only_and_names_chain_and_draw() {
    let sgld = Sgld::from_temperature(1e-2, 1.0, 1.0, 10.0);
    let traces = sample(&Faulty, &[0.0], &sgld, None, &ChainConfig::new(3, 20, 1));
    assert_eq!(
        traces[1].failure.as_deref(),
        Some("chain 1: loss is NaN at step 5 (draw 5)")
    );
    assert_eq!(traces[1].losses.len(), 5);
    assert!(traces[0].failure.is_none() && traces[2].failure.is_none());
    let e = LlcEstimate::from_traces(&traces, 0.0, &[], 10.0, None);
    assert!(e.per_chain[1].is_nan() && e.per_chain[0].is_finite() && e.failures.len() == 1);
}

/// `E[A f(w)] / E[1]` under `exp(-A f(w) - gamma w^2 / 2)` by the trapezoid rule on [-10, 10].
fn expect_1d(weight: impl Fn(f64) -> f64, value: impl Fn(f64) -> f64) -> f64 {
    let (n, lo, hi) = (400_001, -10.0, 10.0);
    let h = (hi - lo) / (n - 1) as f64;
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..n {
        let w = lo + i as f64 * h;
        let c = if i == 0 || i == n - 1 { 0.5 } else { 1.0 };
        let p = weight(w);
        num += c * p * value(w);
        den += c * p;
    }
    num / den
}

/// Estimated learning coefficients of `c prod w_i^{2 p_i}` at the origin against the exact
/// expectation `nbeta E[L - L(w*)]` of the localized tempered posterior
/// `exp(-nbeta c prod w^{2p} - gamma |w|^2 / 2)` (computed by quadrature; for one power it is
/// 1/(2p) up to the localization, and all cases tend to the learning coefficient
/// `min 1/(2 p_i)` as nbeta grows). What remains is SGLD's discretisation bias (for the
/// quadratic the stationary variance is inflated by 1/(1 - eps a/4), a = 2 nbeta c: 1.5 % at
/// eps = 2e-4) and the chains' sampling error: the tolerance is 4 chain-to-chain standard errors
/// plus 2 %. (Measured: 0.505 vs 0.498, 0.245 vs 0.243, 0.156 vs 0.157, 0.208 vs 0.210.)
#[test]
fn estimates_known_learning_coefficients_of_normal_crossing_potentials() {
    for powers in [vec![1u32], vec![2], vec![3], vec![1, 2]] {
        let pot = Polynomial::new(powers.clone(), 1000, 0.0, None, 7);
        let n = 1000.0f64;
        let (nbeta, gamma) = (n / n.ln(), 1.0);
        let w0 = vec![0.0; powers.len()];
        let init = Potential::<f64>::init_loss(&pot, &w0);
        // L(w) = c prod w^{2p} exactly (noise-free data): read c off the loss at w = 1.
        let c = Potential::<f64>::init_loss(&pot, &vec![1.0; powers.len()]) - init;
        let a = nbeta * c;
        let exact = match powers.as_slice() {
            [p] => {
                let k = 2 * *p as i32;
                expect_1d(
                    |w| (-a * w.powi(k) - gamma * w * w / 2.0).exp(),
                    |w| a * w.powi(k),
                )
            }
            // w1 integrated out: with s = a w2^4 + gamma/2, the w1-marginal is s^{-1/2} and
            // E[a w1^2 w2^4 | w2] = a w2^4 / (2 s).
            [1, 2] => {
                let s = |w: f64| a * w.powi(4) + gamma / 2.0;
                expect_1d(
                    |w| s(w).powf(-0.5) * (-gamma * w * w / 2.0).exp(),
                    |w| a * w.powi(4) / (2.0 * s(w)),
                )
            }
            _ => unreachable!(),
        };
        // Flatter potentials mix slowly; they also tolerate a larger step.
        let epsilon = if powers == [1] { 2e-4 } else { 1e-3 };
        let sgld = Sgld {
            nbeta,
            ..Sgld::from_temperature(epsilon, gamma, 1.0, 1.0)
        };
        let mut cfg = ChainConfig::new(8, 50_000, 5);
        cfg.burnin = 5_000;
        let traces = sample(&pot, &w0, &sgld, None, &cfg);
        let e = LlcEstimate::from_traces(&traces, init, &[], nbeta, Some(n));
        let se = e.std / (cfg.chains as f64).sqrt();
        let tol = 4.0 * se + 0.02 * exact;
        assert!(
            (e.mean - exact).abs() <= tol,
            "powers {powers:?}: estimated {} +- {se}, exact {exact}, learning coefficient {}",
            e.mean,
            pot.learning_coefficient()
        );
        if powers.len() == 1 {
            assert!((exact - pot.learning_coefficient()).abs() < 0.01, "{exact}");
        }
        assert!(e.rhat < 1.1, "powers {powers:?}: R-hat {}", e.rhat);
    }
}

/// Reduced-rank regression against Aoyagi and Watanabe's learning coefficient, at nbeta = 1000
/// with a small step (eps = 1e-5: the regular 3-3-3 case shows the remaining discretisation
/// bias, +3 %). Singular cases carry a finite-nbeta bias of order 1/log(nbeta) on top; the
/// tolerance is 10 % plus 4 chain-to-chain standard errors. (Measured with 200k draws: 4.65 vs
/// 4.5, 1.90 vs 2.0, 3.37 vs 3.5.)
#[test]
fn estimates_reduced_rank_regression_learning_coefficients() {
    use stagewise_sampling::toy::Dln;
    for (m, h, n_out, rank) in [(3, 3, 3, 3), (2, 2, 2, 1), (4, 2, 4, 0)] {
        let pot = Dln::rrr(m, h, n_out, rank, 1000, 0);
        let truth = pot.learning_coefficient();
        let sgld = Sgld {
            nbeta: 1000.0,
            ..Sgld::from_temperature(1e-5, 1.0, 1.0, 1.0)
        };
        let mut cfg = ChainConfig::new(8, 150_000, 1);
        cfg.burnin = 20_000;
        let w0 = pot.truth();
        let traces = sample(&pot, &w0, &sgld, None, &cfg);
        let e = LlcEstimate::from_traces(
            &traces,
            Potential::<f64>::init_loss(&pot, &w0),
            &[],
            1000.0,
            None,
        );
        let se = e.std / (cfg.chains as f64).sqrt();
        assert!(
            (e.mean - truth).abs() <= 0.10 * truth + 4.0 * se,
            "rrr {m}-{h}-{n_out} rank {rank}: estimated {} +- {se} vs {truth}",
            e.mean
        );
    }
}

/// Deep linear networks against Aoyagi's formula, for networks whose learning coefficient has
/// multiplicity 1 (with multiplicity m > 1 a (m - 1) log log n term makes finite-nbeta estimates
/// low: 2-2-2-2 rank 0 (m = 3) gives 1.16 vs 1.5 at nbeta = 1000). Same tolerance as the RRR
/// test. (Measured: 4-3-5-2 rank 1: 3.37-3.60 vs 3.5 over seeds; 2-3-4-2 rank 1: 2.00-2.12 vs 2.)
#[test]
fn estimates_deep_linear_network_learning_coefficients() {
    use stagewise_sampling::toy::{Dln, dln_multiplicity};
    for (widths, rank) in [(vec![4, 3, 5, 2], 1), (vec![2, 3, 4, 2], 1)] {
        assert_eq!(dln_multiplicity(&widths, rank), 1);
        let pot = Dln::new(widths.clone(), rank, 1000, 0);
        let truth = pot.learning_coefficient();
        let sgld = Sgld {
            nbeta: 1000.0,
            ..Sgld::from_temperature(1e-5, 1.0, 1.0, 1.0)
        };
        let mut cfg = ChainConfig::new(8, 60_000, 2);
        cfg.burnin = 10_000;
        let w0 = pot.truth();
        let traces = sample(&pot, &w0, &sgld, None, &cfg);
        let e = LlcEstimate::from_traces(
            &traces,
            Potential::<f64>::init_loss(&pot, &w0),
            &[],
            1000.0,
            None,
        );
        let se = e.std / (cfg.chains as f64).sqrt();
        assert!(
            (e.mean - truth).abs() <= 0.10 * truth + 4.0 * se,
            "dln {widths:?} rank {rank}: estimated {} +- {se} vs {truth}",
            e.mean
        );
    }
}

/// On a deterministic potential, evaluating after the update ("dataset" or, with full batches,
/// "new-minibatch") records at draw d exactly what "grad-minibatch" records at draw d + 1: the
/// loss at the weights the update produced.
#[test]
fn evaluation_methods_record_the_loss_after_the_update() {
    use stagewise_sampling::EvalMethod;
    let pot = Polynomial::new(vec![1, 2], 500, 0.3, None, 2);
    let w0 = vec![0.2f64, -0.1];
    let sgld = Sgld::from_temperature(1e-3, 1.0, 1.0, 100.0);
    let mut cfg = ChainConfig::new(2, 50, 9);
    let grad = sample(&pot, &w0, &sgld, None, &cfg);
    for eval in [EvalMethod::Dataset, EvalMethod::NewMinibatch] {
        cfg.eval = eval;
        let after = sample(&pot, &w0, &sgld, None, &cfg);
        for c in 0..2 {
            assert_eq!(
                after[c].losses[..49],
                grad[c].losses[1..],
                "{eval:?} chain {c}"
            );
            assert_eq!(after[c].distances, grad[c].distances);
        }
    }
    // With minibatches, "new-minibatch" draws its own batches: other values, same trajectory.
    let mini = Polynomial::new(vec![1, 2], 500, 0.3, Some(32), 2);
    cfg.eval = EvalMethod::GradMinibatch;
    let g = sample(&mini, &w0, &sgld, None, &cfg);
    cfg.eval = EvalMethod::NewMinibatch;
    let n = sample(&mini, &w0, &sgld, None, &cfg);
    assert_eq!(g[0].distances, n[0].distances);
    assert_ne!(g[0].losses[..49], n[0].losses[1..]);
}

/// The MALA acceptance of SGLD on a Gaussian potential is near 1 for a small step and falls
/// as the step (and with it SGLD's discretisation bias) grows. Measured on `c w^2`, nbeta 145:
/// eps 2e-4: 0.9988 (LLC 0.51), 2e-3: 0.963 (0.59), 5e-3: 0.869 (0.80).
#[test]
fn mala_acceptance_tracks_the_step_size() {
    let pot = Polynomial::new(vec![1], 1000, 0.0, None, 7);
    let nbeta = 1000.0 / 1000f64.ln();
    let rate = |eps: f64| {
        let sgld = Sgld {
            nbeta,
            ..Sgld::from_temperature(eps, 1.0, 1.0, 1.0)
        };
        let mut cfg = ChainConfig::new(4, 5_000, 1);
        cfg.burnin = 500;
        let traces = sample(&pot, &[0.0], &sgld, None, &cfg);
        assert!(traces.iter().all(|t| t.mala.len() == 5_000));
        LlcEstimate::from_traces(&traces, 0.0, &[], nbeta, None).mala_accept
    };
    let (small, mid, large) = (rate(2e-4), rate(2e-3), rate(5e-3));
    assert!(small > 0.995, "{small}");
    assert!(
        small > mid + 0.02 && mid > large + 0.05,
        "{small} {mid} {large}"
    );
    // Other samplers have no MALA acceptance.
    let sgnht = Sgld {
        method: Method::Sgnht {
            diffusion_factor: 0.01,
        },
        ..Sgld::from_temperature(2e-4, 1.0, 1.0, 100.0)
    };
    let t = sample(&pot, &[0.0], &sgnht, None, &ChainConfig::new(1, 10, 1));
    assert!(t[0].mala.iter().all(|a| a.is_nan()));
}

/// SGNHT (devinterp's thermostat sampler, with localization) on the one-dimensional
/// normal-crossing potentials: the thermostat holds the kinetic temperature at 1, so the
/// estimate matches the quadrature answer (measured 0.5003 and 0.2444 vs 0.498 and 0.243).
/// Same tolerance as the SGLD test.
#[test]
fn sgnht_estimates_known_learning_coefficients() {
    for (power, eps) in [(1u32, 2e-4), (2, 1e-3)] {
        let pot = Polynomial::new(vec![power], 1000, 0.0, None, 7);
        let n = 1000.0f64;
        let (nbeta, gamma) = (n / n.ln(), 1.0);
        let init = Potential::<f64>::init_loss(&pot, &[0.0]);
        let a = nbeta * (Potential::<f64>::init_loss(&pot, &[1.0]) - init);
        let k = 2 * power as i32;
        let exact = expect_1d(
            |w| (-a * w.powi(k) - gamma * w * w / 2.0).exp(),
            |w| a * w.powi(k),
        );
        let sgnht = Sgld {
            nbeta,
            method: Method::Sgnht {
                diffusion_factor: 0.01,
            },
            ..Sgld::from_temperature(eps, gamma, 1.0, 1.0)
        };
        let mut cfg = ChainConfig::new(8, 50_000, 5);
        cfg.burnin = 5_000;
        let traces = sample(&pot, &[0.0], &sgnht, None, &cfg);
        let e = LlcEstimate::from_traces(&traces, init, &[], nbeta, None);
        let se = e.std / (cfg.chains as f64).sqrt();
        assert!(
            (e.mean - exact).abs() <= 4.0 * se + 0.02 * exact,
            "power {power}: estimated {} +- {se}, exact {exact}",
            e.mean
        );
    }
}

/// The regression potential's per-token losses: their mean is the loss, for minibatches with and
/// without the gradient and for the full dataset; the loss without gradient equals the loss with.
#[test]
fn per_token_losses_average_to_the_loss() {
    use stagewise_sampling::regression::Dataset;
    use stagewise_train::TrainConfig;
    let cfg = TrainConfig::l2h4(8, 0);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let w: Vec<f64> = model.init_params(3);
    let pot = Dataset::<f64>::new(&model, cfg.pretrain_distribution(), 100, 24, 5);
    let mut wk = pot.worker();
    let mut g = vec![0.0; w.len()];
    let mean = |p: &[f64]| p.iter().sum::<f64>() / p.len() as f64;
    for key in [BatchKey::grad(1, 4), BatchKey::eval(1, 4)] {
        let with = wk.loss_and_grad(&w, key, &mut g);
        let parts = wk.parts().to_vec();
        assert_eq!(parts.len(), 8);
        assert!((mean(&parts) - with).abs() <= 1e-12 * with);
        let without = wk.loss(&w, key);
        assert!(
            (without - with).abs() <= 1e-12 * with,
            "{without} vs {with}"
        );
        assert!(
            wk.parts()
                .iter()
                .zip(&parts)
                .all(|(a, b)| (a - b).abs() <= 1e-12 * b)
        );
    }
    assert_ne!(
        wk.loss(&w, BatchKey::grad(1, 4)),
        wk.loss(&w, BatchKey::eval(1, 4))
    );
    let (full, parts) = pot.full_loss(&w);
    assert!((mean(&parts) - full).abs() <= 1e-12 * full);
    // Later positions have more context: the last token's loss is not the first's.
    assert_ne!(parts[0], parts[7]);
}
