//! SGLD, RMSprop-SGLD and SGNHT chains on the device against the CPU sampler, for every eval
//! method.

use crate::common::*;

#[test]
fn sgld_update_is_the_cpus_bit_for_bit() {
    let dev = emulator();
    let p = 23; // not a multiple of 4: the last thread's block is partial
    let w0: Vec<f32> = (0..p).map(|i| (i as f32 * 0.7).sin()).collect();
    let grad: Vec<f32> = (0..p).map(|i| (i as f32 * 0.3).cos()).collect();
    // A mask per weight set `[Q, P]`: each set freezes other coordinates.
    let masks: Vec<Vec<bool>> = (0..4)
        .map(|q| (0..p).map(|i| (i + q) % 5 != 2).collect())
        .collect();
    let sgld = Sgld {
        weight_decay: 0.01,
        bounding_box: Some(0.003),
        ..Sgld::from_temperature(1e-4, 30.0, 1.0, 50.0)
    };
    let (seed, step, chains) = (9u64, 6u32, 2usize);
    // Two checkpoints x two chains; centres differ per checkpoint.
    let mut w0s = Vec::new();
    for ck in 0..2 {
        for _ in 0..chains {
            w0s.extend(w0.iter().map(|v| v + ck as f32));
        }
    }
    let wb = Buf::from_host(&dev, &w0s).unwrap();
    let w0b = Buf::from_host(&dev, &w0s).unwrap();
    let gb = Buf::from_host(
        &dev,
        &[grad.clone(), grad.clone(), grad.clone(), grad.clone()].concat(),
    )
    .unwrap();
    let mb = Buf::from_host(
        &dev,
        &masks.concat().iter().map(|m| *m as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let d2 = Buf::<f32>::new(&dev, 4 * p).unwrap();
    dev.launch(
        "sgld_step",
        4 * p.div_ceil(4),
        &[
            wb.arg(),
            w0b.arg(),
            gb.arg(),
            mb.arg(),
            d2.arg(),
            Arg::I64(p as i64),
            Arg::U64(seed),
            Arg::U32(tag::SGLD_NOISE),
            Arg::U32(step),
            Arg::Ptr(stagewise_cuda::Ptr::NULL),
            Arg::U32(3),
            Arg::I32(chains as i32),
            Arg::F32((0.5 * sgld.epsilon) as f32),
            Arg::F32(sgld.epsilon.sqrt() as f32),
            Arg::F32(sgld.nbeta as f32),
            Arg::F32(sgld.gamma as f32),
            Arg::F32(sgld.weight_decay as f32),
            Arg::F32(0.003),
            Arg::I32(1),
            Arg::Ptr(stagewise_cuda::Ptr::NULL),
            Arg::F64(0.0),
            Arg::F64(0.0),
            Arg::F64(0.0),
            Arg::F64(0.0),
            Arg::F64(0.0),
            Arg::I64((4 * p.div_ceil(4)) as i64),
        ],
    )
    .unwrap();
    let got = wb.download().unwrap();
    let dist = d2.download().unwrap();
    for q in 0..4 {
        let centre: Vec<f32> = w0s[q * p..(q + 1) * p].to_vec();
        let mut w = centre.clone();
        let (mut z, mut xi) = (vec![0.0; p], vec![0.0f32; p]);
        stagewise_sampling::chains::philox_noise(
            seed,
            3 + (q % chains) as u32,
            step as u64,
            &mut z,
            &mut xi,
        );
        let mut st: StepState<f32> = sgld.initial_state(p, &[]);
        sgld.step(&mut w, &centre, &grad, &xi, Some(&masks[q]), &mut st);
        assert_eq!(&got[q * p..(q + 1) * p], &w[..], "weight set {q}");
        for i in 0..p {
            let d = w[i] - centre[i];
            assert_eq!(dist[q * p + i], d * d);
        }
    }
}

#[test]
fn batched_chains_follow_the_cpu_sampler() {
    let _flag = GRAPH_FLAG.lock().unwrap();
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let dist = cfg.pretrain_distribution();
    let w_a: Vec<f32> = model.init_params(1);
    let w_b: Vec<f32> = model.init_params(2);
    let sgld = Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0);
    let mut chain_cfg = ChainConfig::new(2, 4, 77);
    chain_cfg.burnin = 2;
    chain_cfg.steps_between_draws = 2;
    chain_cfg.first_chain = 1;
    let spec = DatasetSpec {
        dist: dist.clone(),
        n: 200,
        batch: 5,
        seed: 13,
        infinite: false,
    };
    let dev = emulator();
    let got = sample_dataset(
        &dev,
        &model,
        &spec,
        &[w_a.clone(), w_b.clone()],
        &sgld,
        None,
        &chain_cfg,
        &|_| {},
    )
    .unwrap();
    // The same run issued launch by launch instead of replaying the captured step.
    stagewise_cuda::sgld::USE_GRAPHS.store(false, std::sync::atomic::Ordering::Relaxed);
    let eager = sample_dataset(
        &dev,
        &model,
        &spec,
        &[w_a.clone(), w_b.clone()],
        &sgld,
        None,
        &chain_cfg,
        &|_| {},
    )
    .unwrap();
    stagewise_cuda::sgld::USE_GRAPHS.store(true, std::sync::atomic::Ordering::Relaxed);
    for (e, g) in eager.iter().flatten().zip(got.iter().flatten()) {
        assert_eq!(
            (&e.losses, &e.distances, &e.parts),
            (&g.losses, &g.distances, &g.parts)
        );
    }
    let full = stagewise_cuda::full_loss::full_losses(
        &dev,
        &model,
        &spec,
        &[w_a.clone(), w_b.clone()],
        64,
    )
    .unwrap();
    for (ci, w0) in [w_a, w_b].iter().enumerate() {
        let potential = Dataset::<f32>::new(&model, dist.clone(), 200, 5, 13);
        use stagewise_sampling::Potential;
        let (loss, parts) = potential.full_loss(w0);
        assert!(
            (full[ci].0 - loss).abs() <= 1e-5 * loss,
            "full loss {} vs {loss}",
            full[ci].0
        );
        for (a, b) in full[ci].1.iter().zip(&parts) {
            assert!((a - b).abs() <= 1e-5 * b);
        }
        let want = sample(&potential, w0, &sgld, None, &chain_cfg);
        for (c, (g, w)) in got[ci].iter().zip(&want).enumerate() {
            assert!(g.failure.is_none() && w.failure.is_none());
            assert_eq!(g.losses.len(), 4);
            for d in 0..4 {
                let (lg, lw) = (g.losses[d], w.losses[d]);
                assert!(
                    (lg - lw).abs() <= 1e-4 * lw,
                    "centre {ci} chain {c} draw {d}: {lg} vs {lw}"
                );
                let (dg, dw) = (g.distances[d], w.distances[d]);
                assert!((dg - dw).abs() <= 1e-3 * dw, "distance {dg} vs {dw}");
                for (a, b) in g.parts[d].iter().zip(&w.parts[d]) {
                    assert!((a - b).abs() <= 1e-4 * b.max(1e-3));
                }
                // MALA acceptance of the move into the draw's point (every draw here follows a
                // step, so all are defined).
                // Compared as log acceptances: this sampler's are often far from 1.
                let (ag, aw) = (g.mala[d].ln(), w.mala[d].ln());
                assert!(aw.is_finite() && aw <= 0.0, "cpu log acceptance {aw}");
                assert!(
                    (ag - aw).abs() <= 1e-3 * (1.0 + aw.abs()),
                    "log acceptance {ag} vs cpu {aw}"
                );
            }
        }
    }
}

/// eval_method dataset: each draw records L_n at the updated weights (the data set in chunks of
/// the minibatch size and a shorter last chunk), with and without graphs, as the CPU does; steps
/// between draws run without the data-set pass.
#[test]
fn dataset_draws_follow_the_cpu_sampler() {
    use stagewise_sampling::chains::EvalMethod;
    let _serial = GRAPH_FLAG.lock().unwrap_or_else(|e| e.into_inner());
    let sgld = Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0);
    let mut chain_cfg = ChainConfig::new(2, 3, 43);
    chain_cfg.burnin = 1;
    chain_cfg.steps_between_draws = 2;
    chain_cfg.eval = EvalMethod::Dataset;
    let (got, want) = device_and_cpu_chains_on(23, 5, 9, &sgld, None, &chain_cfg);
    assert_close_traces(&got, &want);
    stagewise_cuda::sgld::USE_GRAPHS.store(false, std::sync::atomic::Ordering::Relaxed);
    let (eager, _) = device_and_cpu_chains_on(23, 5, 9, &sgld, None, &chain_cfg);
    stagewise_cuda::sgld::USE_GRAPHS.store(true, std::sync::atomic::Ordering::Relaxed);
    for (e, g) in eager.iter().zip(&got) {
        assert_eq!((&e.losses, &e.parts), (&g.losses, &g.parts));
        assert_eq!(e.mala.len(), g.mala.len());
    }
    chain_cfg.eval = EvalMethod::GradMinibatch;
    let (_, grad_losses) = device_and_cpu_chains_on(23, 5, 9, &sgld, None, &chain_cfg);
    assert_every_draw_differs(
        &want,
        &grad_losses,
        "the data-set loss is not the minibatch's",
    );
}

/// RMSprop-SGLD on the device (per-chain second moments in device memory) follows the CPU's.
#[test]
fn rmsprop_chains_follow_the_cpu_sampler() {
    let sgld = Sgld {
        method: stagewise_sampling::sgld::Method::RmsPropSgld {
            alpha: 0.99,
            eps: 0.1,
        },
        ..Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0)
    };
    let mut chain_cfg = ChainConfig::new(2, 5, 21);
    chain_cfg.burnin = 1;
    let (got, want) = device_and_cpu_chains(4, &sgld, None, &chain_cfg);
    assert_close_traces(&got, &want);
    // Plain SGLD from the same start moves differently: the preconditioner matters.
    let plain = Sgld {
        method: stagewise_sampling::sgld::Method::Sgld,
        ..sgld.clone()
    };
    let (_, unpreconditioned) = device_and_cpu_chains(4, &plain, None, &chain_cfg);
    for (w, u) in want.iter().zip(&unpreconditioned) {
        for d in 0..5 {
            let dw = w.distances[d];
            assert!(
                (dw - u.distances[d]).abs() > 1e-2 * dw,
                "the preconditioner had no effect"
            );
        }
    }
}

/// SGNHT on the device (momenta and thermostats per chain in device memory, the thermostat fed
/// by a per-chain sum of the momenta's squares) follows the CPU's, with a mask and a box.
#[test]
fn sgnht_chains_follow_the_cpu_sampler() {
    let sgld = Sgld {
        method: stagewise_sampling::sgld::Method::Sgnht {
            diffusion_factor: 0.01,
        },
        bounding_box: Some(0.02),
        ..Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0)
    };
    let p = RegressionTransformer::new(small_config(true, true).model_config())
        .unwrap()
        .num_params();
    let mask: Vec<bool> = (0..p).map(|i| i % 7 != 3).collect();
    let mut chain_cfg = ChainConfig::new(2, 6, 31);
    chain_cfg.burnin = 2;
    let (got, want) = device_and_cpu_chains(6, &sgld, Some(&mask), &chain_cfg);
    assert_close_traces(&got, &want);
    for (g, w) in got.iter().zip(&want) {
        assert!(
            g.mala.iter().chain(&w.mala).all(|a| a.is_nan()),
            "no MALA for SGNHT"
        );
    }
}

/// eval_method new-minibatch: each draw records the loss of a fresh minibatch at the updated
/// weights, as the CPU sampler does.
#[test]
fn new_minibatch_draws_follow_the_cpu_sampler() {
    let sgld = Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0);
    let mut chain_cfg = ChainConfig::new(2, 4, 41);
    chain_cfg.eval = stagewise_sampling::chains::EvalMethod::NewMinibatch;
    let (got, want) = device_and_cpu_chains(9, &sgld, None, &chain_cfg);
    assert_close_traces(&got, &want);
    chain_cfg.eval = stagewise_sampling::chains::EvalMethod::GradMinibatch;
    let (_, grad_losses) = device_and_cpu_chains(9, &sgld, None, &chain_cfg);
    assert_every_draw_differs(&want, &grad_losses, "the eval batch is another batch");
}

/// The two chain engines behind one trait: the device's (`DeviceChains`, two checkpoints per
/// call, chains in groups of one or all at once) and the CPU's (`Dataset`) give the same
/// full-data-set losses and chains, and the grouping changes no bit.
#[test]
fn chain_engines_agree_through_the_trait() {
    use stagewise_cuda::chains::DeviceChains;
    use stagewise_sampling::engine::ChainEngine;
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let dist = cfg.pretrain_distribution();
    let centres: Vec<Vec<f32>> = vec![model.init_params(1), model.init_params(2)];
    let spec = DatasetSpec {
        dist: dist.clone(),
        n: 40,
        batch: 5,
        seed: 8,
        infinite: false,
    };
    let cpu = Dataset::<f32>::new(&model, dist, 40, 5, 8);
    let device = |chains_per_launch| DeviceChains {
        dev: emulator(),
        model: &model,
        data: spec.clone(),
        centres_per_call: 2,
        chains_per_launch,
    };
    let engines: [(&str, Box<dyn ChainEngine + '_>); 3] = [
        ("cpu", Box::new(cpu)),
        ("device, all chains per launch", Box::new(device(None))),
        ("device, one chain per launch", Box::new(device(Some(1)))),
    ];
    let sgld = Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0);
    let chains = ChainConfig::new(3, 4, 1);
    let mut results = Vec::new();
    for (name, engine) in &engines {
        let full = engine.full_losses(&centres).unwrap();
        let traces = engine
            .sample(&centres, &sgld, None, &chains, &|_| {})
            .unwrap();
        assert_eq!((full.len(), traces.len()), (2, 2), "{name}");
        assert!(traces.iter().all(|t| t.len() == 3), "{name}");
        results.push((full, traces));
    }
    let (cpu_full, cpu_traces) = &results[0];
    for (full, traces) in &results[1..] {
        for ((l, parts), (lc, pc)) in full.iter().zip(cpu_full) {
            assert!((l - lc).abs() <= 1e-5 * lc, "full loss {l} vs cpu {lc}");
            assert_eq!(parts.len(), pc.len());
        }
        for (t, tc) in traces.iter().zip(cpu_traces) {
            assert_close_traces(t, tc);
        }
    }
    let (all, one) = (&results[1].1, &results[2].1);
    for (a, b) in all.iter().flatten().zip(one.iter().flatten()) {
        assert_eq!((&a.losses, &a.distances), (&b.losses, &b.distances));
    }
}

/// `grad_batch_origin: infinite-dataset`: the device draws the same fresh minibatches as the CPU
/// (draw losses agree), and they are not the data set's (the losses differ from picks of it).
#[test]
fn infinite_dataset_minibatches_agree_with_the_cpu_and_leave_the_data_set() {
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let dist = cfg.pretrain_distribution();
    let w: Vec<f32> = model.init_params(1);
    let sgld = Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0);
    let chain_cfg = ChainConfig::new(2, 3, 5);
    let run = |infinite: bool| {
        let spec = DatasetSpec {
            dist: dist.clone(),
            n: 3,
            batch: 4,
            seed: 13,
            infinite,
        };
        let got = sample_dataset(
            &emulator(),
            &model,
            &spec,
            std::slice::from_ref(&w),
            &sgld,
            None,
            &chain_cfg,
            &|_| {},
        )
        .unwrap()
        .remove(0);
        let potential = Dataset::<f32>::new(&model, dist.clone(), 3, 4, 13)
            .with_infinite_grad_batches(infinite);
        let want = sample(&potential, &w, &sgld, None, &chain_cfg);
        for (g, w) in got.iter().zip(&want) {
            for (lg, lw) in g.losses.iter().zip(&w.losses) {
                assert!(
                    (lg - lw).abs() <= 1e-4 * lw,
                    "infinite {infinite}: {lg} vs {lw}"
                );
            }
        }
        want
    };
    let (fresh, picked) = (run(true), run(false));
    for (f, p) in fresh.iter().zip(&picked) {
        assert!(f.losses.iter().zip(&p.losses).all(|(a, b)| a != b));
    }
}
