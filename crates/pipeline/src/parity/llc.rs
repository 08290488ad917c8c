//! The LLC over a parity run's checkpoints: the sampler's data set is `eval_dataset_size`
//! samples of the run's task mixture, its minibatches `grad_batch_size` of them, the loss the
//! mean cross-entropy; the sweep itself (table, traces, resume) is the other runs'.

use anyhow::{Result, bail};
use stagewise_sampling::config::GradBatchOrigin;
use stagewise_sampling::parity::ParityDataset;
use stagewise_train::parity::SparseParity;

use super::open_parity_run;
use crate::llc::{LlcOptions, LlcResult, Sweep};
use crate::observe::Observer;
use crate::rundir::RunDir;

/// Estimates the LLC at a parity run's checkpoints (CPU only).
pub fn llc_parity(run: &RunDir, opts: &LlcOptions, obs: &dyn Observer) -> Result<LlcResult> {
    if opts.device.device().is_some() {
        bail!("the parity model's LLC runs on the CPU only (--device cpu)");
    }
    let (cfg, model, steps) = open_parity_run(run, &opts.select)?;
    let sampler = &opts.sampler;
    let mask = sampler.mask(&model.layout)?;
    crate::memory::check(
        "the parity LLC's data set (samples x inputs, float32)",
        4 * sampler.config.eval_dataset_size as u128 * model.config.input_dim() as u128,
        "eval_dataset_size",
    )?;
    let data = SparseParity::from_config(&cfg);
    let mut pot = ParityDataset::new(
        &model,
        &data,
        sampler.config.eval_dataset_size,
        sampler.config.grad_batch_size,
        sampler.config.init_seed,
    );
    pot.infinite = sampler.config.grad_batch_origin == GradBatchOrigin::InfiniteDataset;
    let weights = |s: u64| run.weights(&model, s);
    Sweep {
        run,
        engine: &pot,
        steps,
        mask,
        positions: 0,
        weights: &weights,
    }
    .run(opts, obs)
}
