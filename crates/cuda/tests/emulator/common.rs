//! What the emulator tests share: the emulator, a small model, errors, chains on the device and on
//! the CPU.

#![allow(unused_imports)]

pub use stagewise_cuda::data::{DeviceData, Pick};
pub use stagewise_cuda::host::{HostDevice, host_kernel_names};
pub use stagewise_cuda::kernels::{KERNEL_NAMES, SOURCE};
pub use stagewise_cuda::model::GpuModel;
pub use stagewise_cuda::sgld::{DatasetSpec, sample_dataset};
pub use stagewise_cuda::train::{CudaEngine, DeviceAdam};
pub use stagewise_cuda::{Arg, Buf, Device};
pub use stagewise_engine::rng::{Stream, tag};
pub use stagewise_models::RegressionTransformer;
pub use stagewise_models::batch::ChunkedRunner;
pub use stagewise_sampling::chains::{ChainConfig, sample};
pub use stagewise_sampling::regression::Dataset;
pub use stagewise_sampling::sgld::{Sgld, StepState};
pub use stagewise_train::adam::Adam;
pub use stagewise_train::config::{NumTasks, TrainConfig};
pub use stagewise_train::data::{Batch, SequenceDistribution, TaskDistribution};
pub use stagewise_train::trainer::{CpuEngine, StepEngine};
pub use std::collections::BTreeSet;
pub use std::sync::Arc;

/// Held by the tests that switch graphs off for a while (`USE_GRAPHS` is process-wide), so that
/// each of them runs its graph and its eager part as intended.
pub static GRAPH_FLAG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn emulator() -> Arc<dyn Device> {
    Arc::new(HostDevice::new())
}

/// A small model: D = 3, K = 4, C = 8, H = 2, M = 12, L = 2.
pub fn small_config(layer_norm: bool, include_output: bool) -> TrainConfig {
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

pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x - *y) as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

/// Chains of `sgld` from the small model's weights (seed `init`) on a data set of n = 100
/// sequences in batches of 5, on the emulator and on the CPU: (device traces, CPU traces).
pub fn device_and_cpu_chains(
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
pub fn device_and_cpu_chains_on(
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
        infinite: false,
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
pub fn assert_every_draw_differs(
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
pub fn assert_close_traces(
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
