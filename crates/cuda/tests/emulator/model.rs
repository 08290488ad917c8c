//! The model's forward and backward on the device against the CPU runner, with split reductions,
//! and the device data.

use crate::common::*;

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
