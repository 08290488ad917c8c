//! The CUDA backend's kernels and orchestration, run on the host emulator (the same kernels.cu
//! NVRTC compiles for the GPU), against the CPU engine.

use std::collections::BTreeSet;
use std::sync::Arc;

use stagewise_cuda::data::{DeviceData, Pick};
use stagewise_cuda::host::{HostDevice, host_kernel_names};
use stagewise_cuda::kernels::{KERNEL_NAMES, SOURCE};
use stagewise_cuda::model::GpuModel;
use stagewise_cuda::sgld::{DatasetSpec, sample_dataset};
use stagewise_cuda::train::{CudaEngine, DeviceAdam};
use stagewise_cuda::{Arg, Buf, Device};
use stagewise_engine::rng::{Stream, tag};
use stagewise_models::RegressionTransformer;
use stagewise_models::batch::ChunkedRunner;
use stagewise_sampling::chains::{ChainConfig, sample};
use stagewise_sampling::regression::Dataset;
use stagewise_sampling::sgld::{Sgld, StepState};
use stagewise_train::adam::Adam;
use stagewise_train::config::{NumTasks, TrainConfig};
use stagewise_train::data::{Batch, SequenceDistribution, TaskDistribution};
use stagewise_train::trainer::{CpuEngine, StepEngine};

/// Held by the tests that switch graphs off for a while (`USE_GRAPHS` is process-wide), so that
/// each of them runs its graph and its eager part as intended.
static GRAPH_FLAG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn emulator() -> Arc<dyn Device> {
    Arc::new(HostDevice::new())
}

/// A small model: D = 3, K = 4, C = 8, H = 2, M = 12, L = 2.
fn small_config(layer_norm: bool, include_output: bool) -> TrainConfig {
    let mut cfg = TrainConfig::l2h4(4, 3);
    let t = &mut cfg.task_config;
    t.task_size = 3;
    t.embed_size = 8;
    t.mlp_size = 12;
    t.num_heads = 2;
    t.layer_norm = layer_norm;
    t.include_output = include_output;
    t.sampling_seed = Some(11);
    cfg.batch_size = 6;
    cfg
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x - *y) as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

#[test]
fn kernel_lists_agree_with_the_source_and_the_emulator() {
    let listed: BTreeSet<String> = KERNEL_NAMES.iter().map(|s| s.to_string()).collect();
    let emulated: BTreeSet<String> = host_kernel_names().into_iter().collect();
    assert_eq!(emulated, listed);
    // Plain kernels by their definitions; attention kernels by their instantiations.
    for name in &listed {
        let plain = SOURCE.contains(&format!("__global__ void {name}("));
        let instance = name.rsplit_once("_hs").is_some_and(|(stem, hs)| {
            SOURCE.contains(&format!("void {stem}_hs##HS("))
                && SOURCE.contains(&format!("({hs})\n"))
        });
        assert!(plain || instance, "{name} is not defined in kernels.cu");
    }
    assert!(stagewise_cuda::kernels::attention_kernel("attention_forward", 12).is_err());
}

#[test]
fn device_data_is_the_cpu_data_bit_for_bit() {
    let dev = emulator();
    for tasks in [
        TaskDistribution::Gaussian { d: 3 },
        TaskDistribution::discrete(3, 5, 9),
        TaskDistribution::Singleton {
            task: vec![0.5, -1.0, 2.0],
        },
    ] {
        let dist = SequenceDistribution {
            tasks,
            k: 4,
            noise_variance: 0.125,
        };
        let data = DeviceData::new(&dev, &dist).unwrap();
        let (q, nseq) = (3, 7);
        let toks = Buf::<f32>::new(&dev, q * nseq * 8 * 4).unwrap();
        let ys = Buf::<f32>::new(&dev, q * nseq * 4).unwrap();
        // A plain range of sequences, as training batches are.
        data.generate(
            dev.as_ref(),
            toks.ptr,
            ys.ptr,
            1,
            nseq,
            5,
            tag::TRAIN_BATCH,
            17,
            Pick::Range { base: 0 },
            stagewise_cuda::Ptr::NULL,
        )
        .unwrap();
        let mut cpu = Batch::<f32>::default();
        dist.sample_into(&mut cpu, nseq, 5, tag::TRAIN_BATCH, 17);
        assert_eq!(toks.download_range(0, nseq * 32).unwrap(), cpu.toks);
        assert_eq!(ys.download_range(0, nseq * 4).unwrap(), cpu.ys_t);
        // Minibatches of three chains from a data set of n = 50, as the sampler draws them.
        let pick = Pick::Minibatch {
            seed: 5,
            tag: tag::SGLD_BATCH,
            a: 3,
            chain0: 2,
            chains: 3,
            shared: false,
            n: 50,
        };
        data.generate(
            dev.as_ref(),
            toks.ptr,
            ys.ptr,
            q,
            nseq,
            5,
            tag::LLC_DATASET,
            0,
            pick,
            stagewise_cuda::Ptr::NULL,
        )
        .unwrap();
        let got = toks.download().unwrap();
        for c in 0..q {
            let s = Stream::new(5, tag::SGLD_BATCH, 3, 2 + c as u32);
            dist.sample_indexed_into(
                &mut cpu,
                nseq,
                |j| s.below(j as u32, 50) as u32,
                5,
                tag::LLC_DATASET,
                0,
            );
            assert_eq!(
                &got[c * nseq * 32..(c + 1) * nseq * 32],
                &cpu.toks[..],
                "chain {c}"
            );
        }
    }
}

/// Forward and backward of two chains (different weights and data) against the CPU runner.
fn check_model(layer_norm: bool, include_output: bool) {
    check_model_split(layer_norm, include_output, None);
}

/// As `check_model`, with reductions over rows split as `GpuModel::with_split(rows, piece)`.
fn check_model_split(layer_norm: bool, include_output: bool, split: Option<(usize, usize)>) {
    let cfg = small_config(layer_norm, include_output);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let dist = cfg.pretrain_distribution();
    let dev = emulator();
    let (q, b, k) = (2, 5, 4);
    let p = model.num_params();
    let mut gpu = GpuModel::new(&dev, &model, q, b, 2 * k).unwrap();
    if let Some((rows, piece)) = split {
        gpu = gpu.with_split(rows, piece);
    }
    let mut params = Vec::new();
    let (mut toks, mut ys) = (Vec::new(), Vec::new());
    let mut batches = Vec::new();
    for c in 0..q {
        let mut w: Vec<f32> = model.init_params(40 + c as u64);
        // Move LayerNorm weights off 1 and biases off 0 so their gradients are exercised.
        for (i, v) in w.iter_mut().enumerate() {
            *v += 0.05 * ((i * 7 + c) % 11) as f32 / 11.0;
        }
        let mut batch = Batch::<f32>::default();
        dist.sample_into(&mut batch, b, 1, tag::TRAIN_BATCH, c as u32);
        params.extend_from_slice(&w);
        toks.extend_from_slice(&batch.toks);
        ys.extend_from_slice(&batch.ys_t);
        batches.push((w, batch));
    }
    let pb = Buf::from_host(&dev, &params).unwrap();
    let tb = Buf::from_host(&dev, &toks).unwrap();
    let yb = Buf::from_host(&dev, &ys).unwrap();
    let grad = Buf::<f32>::new(&dev, q * p).unwrap();
    gpu.forward(pb.ptr, tb.ptr, Some(yb.ptr)).unwrap();
    gpu.backward(pb.ptr, tb.ptr, grad.ptr).unwrap();
    let losses = gpu.losses().unwrap();
    let g = grad.download().unwrap();
    assert!(
        g.iter().all(|v| v.is_finite()),
        "unwritten or NaN gradient entries"
    );
    for (c, (w, batch)) in batches.iter().enumerate() {
        let mut runner = ChunkedRunner::<f32>::new(2);
        let mut cg = vec![0.0f32; p];
        let cl = runner
            .loss_and_grad(&model, w, &batch.toks, &batch.ys_t, b, 2 * k, &mut cg)
            .unwrap();
        let (gl, parts) = &losses[c];
        assert!(
            (gl - cl).abs() <= 1e-5 * cl,
            "chain {c}: loss {gl} vs cpu {cl}"
        );
        for (a, e) in parts.iter().zip(runner.token_losses()) {
            assert!((a - e).abs() <= 1e-5 * e.max(1e-3), "token loss {a} vs {e}");
        }
        let e = rel_err(&g[c * p..(c + 1) * p], &cg);
        assert!(e < 1e-5, "chain {c}: gradient relative error {e}");
        // Every tensor's gradient, not only the total, must match.
        for info in &model.layout.params {
            let r = info.range();
            let (gg, cc) = (&g[c * p + r.start..c * p + r.end], &cg[r]);
            let scale = cc.iter().map(|v| v.abs()).fold(0.0f32, f32::max).max(1e-6);
            let worst = gg
                .iter()
                .zip(cc)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-4 * scale,
                "{}: max |diff| {worst} at scale {scale}",
                info.name
            );
        }
    }
}

#[test]
fn forward_and_backward_match_the_cpu_model() {
    check_model(true, true);
}

#[test]
fn forward_and_backward_match_without_layer_norm_or_output_projection() {
    check_model(false, false);
}

/// Reductions over rows (weight gradients, column sums) split into pieces that run as extra
/// batch entries and are added by a second GEMM: the same gradients. (40 rows per chain split
/// into 8 pieces, the last block's 20 into 4; the meter sees the extra GEMMs.)
#[test]
fn split_reductions_give_the_same_gradients() {
    check_model_split(true, true, Some((2, 2)));
    check_model_split(false, false, Some((2, 2)));
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let count = |split: bool| {
        let meter = Arc::new(stagewise_cuda::meter::Meter::dry());
        let dev: Arc<dyn Device> = meter.clone();
        let mut gpu = GpuModel::new(&dev, &model, 2, 5, 8).unwrap();
        if split {
            gpu = gpu.with_split(2, 2);
        }
        let (w, t, y, g) = (
            Buf::<f32>::new(&dev, 2 * model.num_params()).unwrap(),
            Buf::<f32>::new(&dev, 2 * 5 * 8 * 4).unwrap(),
            Buf::<f32>::new(&dev, 2 * 5 * 4).unwrap(),
            Buf::<f32>::new(&dev, 2 * model.num_params()).unwrap(),
        );
        gpu.forward(w.ptr, t.ptr, Some(y.ptr)).unwrap();
        gpu.backward(w.ptr, t.ptr, g.ptr).unwrap();
        meter.take().gemms
    };
    assert!(count(true) > count(false), "the split path did not run");
    // Accumulation (alpha, and beta = 1 onto what is there) through the split path: the
    // per-token error sums of 4 sequences, split into 4 pieces, added twice at half weight.
    let dev = emulator();
    let dist = cfg.pretrain_distribution();
    let (q, b, t) = (2, 4, 8);
    let mut batch = Batch::<f32>::default();
    dist.sample_into(&mut batch, q * b, 1, tag::TRAIN_BATCH, 0);
    let w: Vec<f32> = (0..q).flat_map(|c| model.init_params(c as u64)).collect();
    let (wb, tb, yb) = (
        Buf::from_host(&dev, &w).unwrap(),
        Buf::from_host(&dev, &batch.toks).unwrap(),
        Buf::from_host(&dev, &batch.ys_t).unwrap(),
    );
    let sums = |split: bool| {
        let mut gpu = GpuModel::new(&dev, &model, q, b, t).unwrap();
        if split {
            gpu = gpu.with_split(2, 1);
        }
        let dst = Buf::<f32>::new(&dev, q * t / 2).unwrap();
        gpu.forward(wb.ptr, tb.ptr, Some(yb.ptr)).unwrap();
        gpu.add_token_error_sums(dst.ptr, 0.5, 0.0).unwrap();
        gpu.add_token_error_sums(dst.ptr, 0.5, 1.0).unwrap();
        (dst.download().unwrap(), gpu.tok_loss.download().unwrap())
    };
    let ((split_sums, split_mean), (sums, mean)) = (sums(true), sums(false));
    assert!(rel_err(&split_sums, &sums) < 1e-6 && rel_err(&split_mean, &mean) < 1e-6);
    for (s, m) in sums.iter().zip(&mean) {
        assert!(
            (s - m * b as f32).abs() <= 1e-5 * s.abs(),
            "sum {s} vs {b} x mean {m}"
        );
    }
}

#[test]
fn adam_update_is_the_cpus_bit_for_bit() {
    let dev = emulator();
    let n = 37;
    let mut p: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let db = Buf::from_host(&dev, &p).unwrap();
    let mut cpu = Adam::<f32>::new(n, 0.9, 0.999, 1e-8, 0.01);
    let mut gpu = DeviceAdam::new(&dev, n, [0.9, 0.999], 0.01).unwrap();
    for s in 0..4 {
        let g: Vec<f32> = (0..n).map(|i| ((i + 3 * s) as f32 * 1.3).cos()).collect();
        let gb = Buf::from_host(&dev, &g).unwrap();
        cpu.step(&mut p, &g, 1e-2 / (s + 1) as f64);
        gpu.step(dev.as_ref(), &db, &gb, 1e-2 / (s + 1) as f64)
            .unwrap();
    }
    assert_eq!(db.download().unwrap(), p);
    assert_eq!(gpu.m.download().unwrap(), cpu.m);
    assert_eq!(gpu.v.download().unwrap(), cpu.v);
}

#[test]
fn sgld_update_is_the_cpus_bit_for_bit() {
    let dev = emulator();
    let p = 23; // not a multiple of 4: the last thread's block is partial
    let w0: Vec<f32> = (0..p).map(|i| (i as f32 * 0.7).sin()).collect();
    let grad: Vec<f32> = (0..p).map(|i| (i as f32 * 0.3).cos()).collect();
    let mask: Vec<bool> = (0..p).map(|i| i % 5 != 2).collect();
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
    let mb = Buf::from_host(&dev, &mask.iter().map(|m| *m as u8).collect::<Vec<_>>()).unwrap();
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
        sgld.step(&mut w, &centre, &grad, &xi, Some(&mask), &mut st);
        assert_eq!(&got[q * p..(q + 1) * p], &w[..], "weight set {q}");
        for i in 0..p {
            let d = w[i] - centre[i];
            assert_eq!(dist[q * p + i], d * d);
        }
    }
}

#[test]
fn training_steps_follow_the_cpu_engine() {
    let mut cfg = small_config(true, true);
    cfg.task_config.num_tasks = NumTasks::Finite(4);
    cfg.validate().unwrap();
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let dist = cfg.pretrain_distribution();
    let mut cpu = CpuEngine::<f32>::new(&cfg, model.clone(), dist.clone());
    let mut gpu = CudaEngine::new(emulator(), &cfg, model, dist).unwrap();
    assert_eq!(
        gpu.state().unwrap(),
        cpu.state().unwrap(),
        "same initial state"
    );
    for t in 0..5 {
        let lc = cpu.step(t, 1e-3).unwrap();
        let lg = gpu.step(t, 1e-3).unwrap();
        assert!(
            (lc - lg).abs() <= 1e-4 * lc,
            "step {t}: loss {lg} vs cpu {lc}"
        );
    }
    let (sc, sg) = (cpu.state().unwrap(), gpu.state().unwrap());
    assert_eq!(sg.steps_done, 5);
    let e = rel_err(&sg.params, &sc.params);
    assert!(e < 1e-5, "weights after 5 steps differ by {e}");
    // Predictions for host tokens, and a restored state continues like the CPU.
    let mut batch = Batch::<f32>::default();
    cfg.pretrain_distribution()
        .sample_into(&mut batch, 3, 0, tag::EVAL_TRUE, 0);
    let (mut pc, mut pg) = (vec![0.0; 12], vec![0.0; 12]);
    cpu.predict(&batch.toks, 3, 8, &mut pc).unwrap();
    gpu.predict(&batch.toks, 3, 8, &mut pg).unwrap();
    assert!(rel_err(&pg, &pc) < 1e-5);
    gpu.restore(sc.clone()).unwrap();
    assert_eq!(gpu.state().unwrap(), sc);
    let (lc, lg) = (cpu.step(5, 1e-3).unwrap(), gpu.step(5, 1e-3).unwrap());
    assert!((lc - lg).abs() <= 1e-4 * lc);
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

/// NVRTC (the library alone, no GPU) compiles the kernels for Hopper. CI installs NVRTC and sets
/// STAGEWISE_REQUIRE_NVRTC=1; elsewhere the test is skipped when the library is missing.
#[test]
fn nvrtc_compiles_the_kernels_for_hopper() {
    match stagewise_cuda::kernels::compile("compute_90", &[]) {
        Ok((ptx, _)) => {
            for name in KERNEL_NAMES {
                assert!(
                    ptx.contains(&format!(".entry {name}(")),
                    "{name} missing from the PTX"
                );
            }
            // Compilations are kept per option set: another architecture is compiled anew.
            assert!(ptx.contains(".target sm_90"));
            let (again, _) = stagewise_cuda::kernels::compile("compute_90", &[]).unwrap();
            assert_eq!(again, ptx);
            let (ampere, _) = stagewise_cuda::kernels::compile("compute_80", &[]).unwrap();
            assert!(
                ampere.contains(".target sm_80"),
                "the cache ignored the architecture"
            );
        }
        Err(stagewise_cuda::GpuError::NoDevice(why)) => {
            assert!(
                std::env::var("STAGEWISE_REQUIRE_NVRTC").is_err(),
                "STAGEWISE_REQUIRE_NVRTC is set but {why}"
            );
            eprintln!("skipped: {why}");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
#[ignore = "prints ptxas's register and spill report; run with --ignored --nocapture where NVRTC is installed"]
fn print_resource_report() {
    println!(
        "{}",
        stagewise_cuda::kernels::resource_report("sm_90").unwrap()
    );
}

#[test]
fn launches_with_arguments_that_do_not_fit_the_kernel_are_refused() {
    let dev = emulator();
    let b = Buf::<f32>::new(&dev, 8).unwrap();
    // fill_f32(float*, float, long long): an int count would misread on the GPU too.
    let err = dev
        .launch("fill_f32", 8, &[b.arg(), Arg::F32(1.0), Arg::I32(8)])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("pfi do not match the parameters pfl"),
        "{err}"
    );
    assert!(dev.launch("no_such_kernel", 1, &[]).is_err());
    dev.launch("fill_f32", 8, &[b.arg(), Arg::F32(1.5), Arg::I64(8)])
        .unwrap();
    assert_eq!(b.download().unwrap(), vec![1.5; 8]);
    // Fresh memory is NaN, so reads of unwritten memory show.
    assert!(
        Buf::<f32>::new(&dev, 4)
            .unwrap()
            .download()
            .unwrap()
            .iter()
            .all(|v| v.is_nan())
    );
}

/// The LayerNorm and readout kernels' register path (rows of 8..64 floats, 16-byte aligned,
/// read with vector loads) gives the same bits as their generic path (taken for rows that are
/// not aligned), LayerNorm forward and backward in each of its three modes.
#[test]
fn layernorm_register_rows_equal_the_generic_loops() {
    let dev = emulator();
    let mut seq = 0;
    let mut fill = |n: usize| -> Vec<f32> {
        seq += 1;
        let mut z = vec![0.0f64; n];
        Stream::new(21, 0, seq, 0).fill_normal(&mut z);
        z.iter().map(|v| *v as f32).collect()
    };
    for c in [8usize, 64] {
        let rows = 6;
        let n = rows * c;
        // Parameters: w at 0, b at c (of p = 2c per set); one set.
        let params = Buf::from_host(&dev, &fill(2 * c)).unwrap();
        let inputs: Vec<Vec<f32>> = (0..4).map(|_| fill(n)).collect();
        // Each tensor at offset 0 (aligned rows) or 1 float (misaligned: the generic loops).
        let run = |shift: usize| -> Vec<Vec<f32>> {
            let up = |v: &[f32]| {
                let mut h = vec![0.0f32; shift];
                h.extend_from_slice(v);
                Buf::from_host(&dev, &h).unwrap()
            };
            let at = |b: &Buf<f32>| Arg::Ptr(b.ptr.add::<f32>(shift));
            let (x, dy, dxn) = (up(&inputs[0]), up(&inputs[1]), up(&inputs[2]));
            let out = up(&vec![0.0; n]);
            let (mean, rstd) = (
                Buf::<f32>::new(&dev, rows).unwrap(),
                Buf::<f32>::new(&dev, rows).unwrap(),
            );
            let fwd = [
                at(&out),
                mean.arg(),
                rstd.arg(),
                at(&x),
                params.arg(),
                Arg::I64(2 * c as i64),
                Arg::I64(0),
                Arg::I64(c as i64),
                Arg::I32(c as i32),
                Arg::F32(1e-5),
                Arg::I64(rows as i64),
                Arg::I64(rows as i64),
            ];
            dev.launch("layernorm_forward", rows, &fwd).unwrap();
            let mut got = vec![
                out.download().unwrap()[shift..].to_vec(),
                mean.download().unwrap(),
                rstd.download().unwrap(),
            ];
            // The readout of the normalised rows (a row's dot product with Wu's first row).
            let (pred, sq, dpred) = (
                Buf::<f32>::new(&dev, rows).unwrap(),
                Buf::<f32>::new(&dev, rows).unwrap(),
                Buf::<f32>::new(&dev, rows).unwrap(),
            );
            let ys = Buf::from_host(&dev, &inputs[3][..rows]).unwrap();
            let readout = [
                pred.arg(),
                sq.arg(),
                dpred.arg(),
                at(&x),
                ys.arg(),
                params.arg(),
                Arg::I64(2 * c as i64),
                Arg::I64(0),
                Arg::I64(c as i64),
                Arg::I32(1),
                Arg::I32(c as i32),
                Arg::I32(rows as i32),
                Arg::F32(0.5),
                Arg::I64(rows as i64),
            ];
            dev.launch("readout_loss", rows, &readout).unwrap();
            got.extend([pred.download().unwrap(), sq.download().unwrap()]);
            for mode in 0..3 {
                let (dx, dyxhat, dattn) = (up(&inputs[3]), up(&vec![0.0; n]), up(&vec![0.0; n]));
                let bwd = [
                    at(&dx),
                    at(&dyxhat),
                    at(&dy),
                    at(&x),
                    mean.arg(),
                    rstd.arg(),
                    params.arg(),
                    Arg::I64(2 * c as i64),
                    Arg::I64(0),
                    Arg::I32(c as i32),
                    Arg::I32(mode),
                    at(&dxn),
                    at(&dattn),
                    Arg::I64(rows as i64),
                    Arg::I64(rows as i64),
                ];
                dev.launch("layernorm_backward", rows, &bwd).unwrap();
                for b in [&dx, &dyxhat, &dattn] {
                    got.push(b.download().unwrap()[shift..].to_vec());
                }
            }
            got
        };
        let (vector, generic) = (run(0), run(1));
        for (i, (a, b)) in vector.iter().zip(&generic).enumerate() {
            let (a, b): (Vec<u32>, Vec<u32>) = (
                a.iter().map(|v| v.to_bits()).collect(),
                b.iter().map(|v| v.to_bits()).collect(),
            );
            assert_eq!(a, b, "C = {c}: output {i} differs between the two paths");
        }
        assert!(vector[0].iter().all(|v| v.is_finite()));
    }
}

/// The meter counts the same work whether it runs the kernels (around the emulator) or not
/// (dry), and its GEMM flops are the model's: 2 flops per multiply-add of every product.
#[test]
fn meter_counts_the_work_of_a_step_with_or_without_a_device() {
    use stagewise_cuda::meter::Meter;
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let count = |meter: Arc<Meter>| {
        let dev: Arc<dyn Device> = meter.clone();
        let mut e = CudaEngine::new(dev, &cfg, model.clone(), cfg.pretrain_distribution()).unwrap();
        e.step(0, 1e-3).unwrap();
        meter.take();
        e.step(1, 1e-3).unwrap();
        meter.take()
    };
    let wet = count(Arc::new(Meter::wrap(emulator())));
    let dry = count(Arc::new(Meter::dry()));
    assert_eq!((wet.launches, wet.gemms), (dry.launches, dry.gemms));
    assert_eq!((wet.gemm_flops, wet.bytes()), (dry.gemm_flops, dry.bytes()));
    // Rows R = B * T = 6 * 8; C = 8, M = 12, D+1 = 4, L = 2, K = 4. The last block's output
    // projection and MLP, the final LayerNorm and the unembedding run on the x rows, A = R / 2.
    let (r, c, m, d1, k, b) = (48.0, 8.0, 12.0, 4.0, 4.0, 6.0);
    let mut expect = 2.0 * 2.0 * r * d1 * c; // embedding forward and dW
    for active in [r, r / 2.0] {
        // forward, dW and dX of QKV (all rows) and of the rest (active rows)
        expect += 3.0 * 2.0 * (r * 3.0 * c * c + active * (c * c + 2.0 * c * m));
        // column sums: b2, b1, the MLP LayerNorm (active rows), the attention LayerNorm
        expect += 2.0 * (active * (c + m + 2.0 * c) + r * 2.0 * c);
    }
    expect += 2.0 * (r / 2.0) * (2.0 * c + c + 1.0); // final LayerNorm, unembedding row 0, bias
    expect += 2.0 * (r * c + k * b); // positions, per-token losses
    assert!(
        (wet.gemm_flops - expect).abs() < 1e-9 * expect,
        "{} vs {expect}",
        wet.gemm_flops
    );
    assert!(wet.per_kernel.contains_key("attention_forward_hs4"));
}

#[test]
fn emulator_profiles_each_operation() {
    let dev = emulator();
    let b = Buf::<f32>::new(&dev, 64).unwrap();
    assert!(dev.set_profiling(true));
    dev.launch("fill_f32", 64, &[b.arg(), Arg::F32(1.0), Arg::I64(64)])
        .unwrap();
    dev.gemm(&stagewise_cuda::Gemm {
        trans_a: false,
        trans_b: false,
        m: 8,
        n: 8,
        k: 8,
        alpha: 1.0,
        a: b.ptr,
        lda: 8,
        stride_a: 0,
        b: b.ptr,
        ldb: 8,
        stride_b: 0,
        beta: 0.0,
        c: b.ptr,
        ldc: 8,
        stride_c: 0,
        batch: 1,
    })
    .unwrap();
    let p = dev.take_profile().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].label, "fill_f32");
    assert_eq!(p[0].bytes, 256.0);
    assert_eq!(p[1].label, "gemm NN m=8 n=8 k=8 x1");
    assert_eq!(p[1].flops, 1024.0);
    assert_eq!(b.download().unwrap()[0], 8.0);
    dev.set_profiling(false);
    assert!(dev.take_profile().unwrap().is_empty());
}

/// `run` (windows of steps replayed from a captured graph, losses read back per window) takes
/// exactly the steps `step` takes one by one, across a window boundary, with or without graphs.
#[test]
fn windowed_training_runs_equal_single_steps() {
    let _flag = GRAPH_FLAG.lock().unwrap();
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let make =
        || CudaEngine::new(emulator(), &cfg, model.clone(), cfg.pretrain_distribution()).unwrap();
    let lrs: Vec<f64> = (0..131)
        .map(|i| 1e-3 * (1.0 + (i as f64 * 0.1).sin()))
        .collect();
    let mut single = make();
    let one: Vec<f64> = lrs
        .iter()
        .enumerate()
        .map(|(t, lr)| single.step(t as u64, *lr).unwrap())
        .collect();
    let mut windowed = make();
    let first = windowed.run(0, &lrs[..7]).unwrap();
    let rest = windowed.run(7, &lrs[7..]).unwrap();
    assert_eq!([first, rest].concat(), one);
    assert_eq!(windowed.state().unwrap(), single.state().unwrap());
    stagewise_cuda::sgld::USE_GRAPHS.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut eager = make();
    let all = eager.run(0, &lrs).unwrap();
    stagewise_cuda::sgld::USE_GRAPHS.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(all, one);
    assert_eq!(eager.state().unwrap(), single.state().unwrap());
}

/// A device whose graph capture fails after recording has begun (as a GPU's may, for an
/// operation it cannot capture): the sampler and the trainer fall back to launching each step.
struct FailingCapture(Arc<dyn Device>);

impl Device for FailingCapture {
    fn name(&self) -> String {
        self.0.name()
    }
    fn alloc(&self, bytes: usize) -> Result<stagewise_cuda::Ptr, stagewise_cuda::GpuError> {
        self.0.alloc(bytes)
    }
    fn free(&self, ptr: stagewise_cuda::Ptr) {
        self.0.free(ptr)
    }
    fn upload(&self, dst: stagewise_cuda::Ptr, src: &[u8]) -> Result<(), stagewise_cuda::GpuError> {
        self.0.upload(dst, src)
    }
    fn download(
        &self,
        src: stagewise_cuda::Ptr,
        dst: &mut [u8],
    ) -> Result<(), stagewise_cuda::GpuError> {
        self.0.download(src, dst)
    }
    fn launch(
        &self,
        name: &'static str,
        threads: usize,
        args: &[Arg],
    ) -> Result<(), stagewise_cuda::GpuError> {
        self.0.launch(name, threads, args)
    }
    fn gemm(&self, g: &stagewise_cuda::Gemm) -> Result<(), stagewise_cuda::GpuError> {
        self.0.gemm(g)
    }
    fn synchronize(&self) -> Result<(), stagewise_cuda::GpuError> {
        self.0.synchronize()
    }
    fn begin_capture(&self) -> Result<bool, stagewise_cuda::GpuError> {
        self.0.begin_capture()
    }
    fn end_capture(&self) -> Result<u64, stagewise_cuda::GpuError> {
        self.0.end_capture()?;
        Err(stagewise_cuda::GpuError::Unsupported(
            "capture invalidated".into(),
        ))
    }
}

/// A card too small for the chains: a clear out-of-memory error that says how much was asked
/// and how much was free, and everything allocated before it is freed again.
#[test]
fn a_full_device_is_a_clear_error_and_leaks_nothing() {
    let limit = 1 << 20;
    let dev: Arc<dyn Device> = Arc::new(HostDevice::with_memory_limit(limit));
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let spec = DatasetSpec {
        dist: cfg.pretrain_distribution(),
        n: 100,
        batch: 64,
        seed: 3,
    };
    let w: Vec<f32> = model.init_params(1);
    let sgld = Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0);
    let err = sample_dataset(
        &dev,
        &model,
        &spec,
        std::slice::from_ref(&w),
        &sgld,
        None,
        &ChainConfig::new(8, 2, 5),
        &|_| {},
    )
    .expect_err("8 chains of 64 sequences do not fit in 1 MiB");
    let msg = err.to_string();
    assert!(
        matches!(err, stagewise_cuda::GpuError::OutOfMemory { total: Some(t), .. } if t == limit)
            && msg.contains("out of memory")
            && msg.contains("free of 1 MiB"),
        "{msg}"
    );
    // Nothing of the failed run is still held: almost all of the card can be taken.
    let big = Buf::<f32>::new(&dev, (limit - 64) / 4);
    assert!(big.is_ok(), "memory of the failed run was not freed");
}

/// What CUDA forbids inside a stream capture (allocation, copies, synchronisation, a free)
/// fails the emulator's capture too, so a captured step that does it fails here, not on the GPU.
#[test]
fn the_emulator_refuses_what_a_capture_forbids() {
    let dev = emulator();
    let buf = Buf::from_host(&dev, &[1.0f32; 4]).unwrap();
    for what in ["alloc", "upload", "download", "synchronize", "free"] {
        let spare = Buf::<f32>::new(&dev, 4).unwrap();
        assert!(dev.begin_capture().unwrap());
        let refused = match what {
            "alloc" => Buf::<f32>::new(&dev, 4).is_err(),
            "upload" => buf.upload(&[2.0; 4]).is_err(),
            "download" => buf.download().is_err(),
            "synchronize" => dev.synchronize().is_err(),
            _ => {
                drop(spare);
                true
            }
        };
        assert!(refused, "{what} inside a capture");
        assert!(dev.end_capture().is_err(), "the capture survives {what}");
    }
    // A capture of launches alone still records and replays.
    assert!(dev.begin_capture().unwrap());
    dev.launch("fill_f32", 4, &[buf.arg(), Arg::F32(3.0), Arg::I64(4)])
        .unwrap();
    let g = dev.end_capture().unwrap();
    assert_eq!(buf.download().unwrap(), vec![1.0; 4], "recorded, not run");
    dev.replay(g).unwrap();
    assert_eq!(buf.download().unwrap(), vec![3.0; 4]);
}

#[test]
fn a_failed_graph_capture_falls_back_to_launches() {
    let _flag = GRAPH_FLAG.lock().unwrap();
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let failing: Arc<dyn Device> = Arc::new(FailingCapture(emulator()));
    let lrs = [1e-3, 2e-3, 3e-3];
    let mut a = CudaEngine::new(
        failing.clone(),
        &cfg,
        model.clone(),
        cfg.pretrain_distribution(),
    )
    .unwrap();
    let mut b =
        CudaEngine::new(emulator(), &cfg, model.clone(), cfg.pretrain_distribution()).unwrap();
    assert_eq!(a.run(0, &lrs).unwrap(), b.run(0, &lrs).unwrap());
    assert_eq!(a.state().unwrap(), b.state().unwrap());
    let spec = DatasetSpec {
        dist: cfg.pretrain_distribution(),
        n: 100,
        batch: 4,
        seed: 3,
    };
    let w: Vec<f32> = model.init_params(1);
    let sgld = Sgld::from_temperature(1e-4, 100.0, 1.0, 200.0);
    let chains = ChainConfig::new(2, 3, 5);
    let run = |dev: &Arc<dyn Device>| {
        sample_dataset(
            dev,
            &model,
            &spec,
            std::slice::from_ref(&w),
            &sgld,
            None,
            &chains,
            &|_| {},
        )
        .unwrap()
    };
    let (x, y) = (run(&failing), run(&emulator()));
    for (p, q) in x.iter().flatten().zip(y.iter().flatten()) {
        assert_eq!((&p.losses, &p.distances), (&q.losses, &q.distances));
        // Without burn-in the first draw is the start: no move, no MALA acceptance.
        assert!(p.mala[0].is_nan() && p.mala[1].is_finite() && p.mala[1] == q.mala[1]);
    }
}

/// Chains of `sgld` from the small model's weights (seed `init`) on a data set of n = 100
/// sequences in batches of 5, on the emulator and on the CPU: (device traces, CPU traces).
fn device_and_cpu_chains(
    init: u64,
    sgld: &Sgld,
    mask: Option<&[bool]>,
    chain_cfg: &ChainConfig,
) -> (
    Vec<stagewise_sampling::ChainTrace>,
    Vec<stagewise_sampling::ChainTrace>,
) {
    device_and_cpu_chains_on(100, 5, init, sgld, mask, chain_cfg)
}

/// As `device_and_cpu_chains`, on a data set of `n` sequences and minibatches of `batch`.
fn device_and_cpu_chains_on(
    n: usize,
    batch: usize,
    init: u64,
    sgld: &Sgld,
    mask: Option<&[bool]>,
    chain_cfg: &ChainConfig,
) -> (
    Vec<stagewise_sampling::ChainTrace>,
    Vec<stagewise_sampling::ChainTrace>,
) {
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let dist = cfg.pretrain_distribution();
    let w0: Vec<f32> = model.init_params(init);
    let spec = DatasetSpec {
        dist: dist.clone(),
        n,
        batch,
        seed: 8,
    };
    let centre = std::slice::from_ref(&w0);
    let mut got = sample_dataset(
        &emulator(),
        &model,
        &spec,
        centre,
        sgld,
        mask,
        chain_cfg,
        &|_| {},
    )
    .unwrap();
    let potential = Dataset::<f32>::new(&model, dist, n, batch, 8);
    (
        got.remove(0),
        sample(&potential, &w0, sgld, mask, chain_cfg),
    )
}

/// Every draw's loss of `a` differs from `b`'s by more than 1e-3 (relative): another evaluation.
fn assert_every_draw_differs(
    a: &[stagewise_sampling::ChainTrace],
    b: &[stagewise_sampling::ChainTrace],
    what: &str,
) {
    for (x, y) in a.iter().zip(b) {
        assert!(!x.losses.is_empty() && x.losses.len() == y.losses.len());
        for (lx, ly) in x.losses.iter().zip(&y.losses) {
            assert!((lx - ly).abs() > 1e-3 * ly, "{what}: {lx} vs {ly}");
        }
    }
}

/// Losses and distances of every draw agree within 1e-4 (relative).
fn assert_close_traces(
    got: &[stagewise_sampling::ChainTrace],
    want: &[stagewise_sampling::ChainTrace],
) {
    for (g, w) in got.iter().zip(want) {
        assert!(g.failure.is_none() && w.failure.is_none());
        assert_eq!(g.losses.len(), w.losses.len());
        for d in 0..w.losses.len() {
            let (dg, dw) = (g.distances[d], w.distances[d]);
            assert!((dg - dw).abs() <= 1e-4 * dw, "distance {dg} vs cpu {dw}");
            let (lg, lw) = (g.losses[d], w.losses[d]);
            assert!((lg - lw).abs() <= 1e-4 * lw, "loss {lg} vs cpu {lw}");
            for (a, b) in g.parts[d].iter().zip(&w.parts[d]) {
                assert!((a - b).abs() <= 1e-4 * b.max(1e-3));
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
