//! The device runtime: the meter and profile, graph capture and its fallback, a full device.

use crate::common::*;

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
        infinite: false,
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
        infinite: false,
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

/// The counting device's peak is exactly the smallest card the chains run on: with that much
/// memory they run, with one allocation granule less they do not (every sampling method and
/// evaluation, several centres, a restriction mask); and `check_fits` refuses the smaller card
/// before anything is allocated, naming the sizes.
#[test]
fn the_tally_peak_is_the_smallest_card_that_fits() {
    use stagewise_cuda::chains::DeviceChains;
    use stagewise_cuda::tally::peak_bytes;
    use stagewise_sampling::chains::EvalMethod;
    use stagewise_sampling::engine::ChainEngine;
    use stagewise_sampling::sgld::Method;
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let p = model.num_params();
    let spec = DatasetSpec {
        dist: cfg.pretrain_distribution(),
        n: 40,
        batch: 6,
        seed: 3,
        infinite: false,
    };
    let centres = vec![model.init_params(1), model.init_params(2)];
    let mask: Vec<bool> = (0..p).map(|i| i % 3 != 0).collect();
    let methods = [
        (Method::Sgld, EvalMethod::GradMinibatch),
        (Method::Sgld, EvalMethod::Dataset),
        (
            Method::RmsPropSgld {
                alpha: 0.99,
                eps: 0.1,
            },
            EvalMethod::NewMinibatch,
        ),
        (
            Method::Sgnht {
                diffusion_factor: 0.01,
            },
            EvalMethod::GradMinibatch,
        ),
    ];
    for (method, eval) in methods {
        let sgld = Sgld {
            method,
            ..Sgld::from_temperature(1e-4, 100.0, 1.0, 40.0)
        };
        let mut chain_cfg = ChainConfig::new(3, 4, 5);
        chain_cfg.eval = eval;
        let engine = |dev: Arc<dyn Device>| DeviceChains {
            dev,
            model: &model,
            data: spec.clone(),
            centres_per_call: 2,
            chains_per_launch: Some(2),
        };
        let run = |dev: &Arc<dyn Device>| {
            let e = engine(dev.clone());
            e.full_losses(&centres)?;
            e.sample(&centres, &sgld, Some(&mask), &chain_cfg, &|_| ())
        };
        let peak =
            peak_bytes(|dev| run(dev).map_err(|e| stagewise_cuda::GpuError::Driver(e.to_string())))
                .unwrap();
        let fits: Arc<dyn Device> = Arc::new(HostDevice::with_memory_limit(peak));
        engine(fits.clone())
            .check_fits(2, &sgld, Some(&mask), &chain_cfg)
            .unwrap();
        run(&fits).unwrap_or_else(|e| panic!("{method:?}: {peak} bytes should fit: {e}"));
        let small: Arc<dyn Device> = Arc::new(HostDevice::with_memory_limit(peak - 256));
        let err = engine(small.clone())
            .check_fits(2, &sgld, Some(&mask), &chain_cfg)
            .expect_err("one granule short")
            .to_string();
        assert!(
            err.contains("sampling 2 checkpoints x 2 chains per launch (grad_batch_size = 6, num_draws = 4) needs"),
            "{err}"
        );
        assert_eq!(
            small.memory(),
            Some((peak - 256, peak - 256)),
            "check_fits allocated"
        );
        match run(&small) {
            Err(e) if e.to_string().contains("out of memory") => {}
            other => panic!("{method:?}: {} bytes should not fit: {other:?}", peak - 256),
        }
    }
}

/// Training's counted peak is exactly the smallest card that takes a window of steps and an
/// evaluation of `eval_batch_size` sequences.
#[test]
fn the_training_peak_is_the_smallest_card_that_trains() {
    let cfg = small_config(true, true);
    let model = RegressionTransformer::new(cfg.model_config()).unwrap();
    let data = cfg.pretrain_distribution();
    let peak = CudaEngine::peak_bytes(&cfg, &model, &data).unwrap();
    let (n, t) = (cfg.eval_batch_size, 2 * data.k);
    let toks = vec![0.5f32; n * t * model.config.token_size()];
    let mut out = vec![0.0f32; n * data.k];
    let mut train = |limit: usize| -> Result<(), String> {
        let dev: Arc<dyn Device> = Arc::new(HostDevice::with_memory_limit(limit));
        let mut e =
            CudaEngine::new(dev, &cfg, model.clone(), data.clone()).map_err(|e| e.to_string())?;
        e.run(0, &[1e-3, 1e-3]).map_err(|e| e.to_string())?;
        e.predict(&toks, n, t, &mut out).map_err(|e| e.to_string())
    };
    train(peak).unwrap();
    let err = train(peak - 256).expect_err("one granule short");
    assert!(err.contains("out of memory"), "{err}");
}
