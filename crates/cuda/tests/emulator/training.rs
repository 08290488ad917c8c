//! Adam and training steps on the device against the CPU engine, one by one and in replayed
//! windows.

use crate::common::*;

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
