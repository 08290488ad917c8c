//! The LLC over a language-model run's checkpoints: the sampler's data set is the first
//! `eval_dataset_size` training rows, as the run trained on them (`repeat_fraction`) (its minibatches `grad_batch_size` rows), the loss the
//! mean next-token cross-entropy, per-token parts the n_ctx - 1 positions; the sweep itself
//! (table, traces, resume) is the regression runs'.

use anyhow::{Result, bail};
use stagewise_models::LanguageModel;
use stagewise_models::language::RowSource;
use stagewise_sampling::config::{GradBatchOrigin, SamplerConfig};
use stagewise_sampling::language::LmDataset;

use super::{lm_data, open_lm_run, training_rows};
use crate::llc::{LlcOptions, LlcResult, Sweep};
use crate::observe::Observer;
use crate::rundir::RunDir;

/// Estimates the LLC at a language-model run's checkpoints (CPU only).
pub fn llc_lm(run: &RunDir, opts: &LlcOptions, obs: &dyn Observer) -> Result<LlcResult> {
    if opts.device.device().is_some() {
        bail!("the language model's LLC runs on the CPU only (--device cpu)");
    }
    let (cfg, model, steps) = open_lm_run(run, &opts.select)?;
    let sampler = &opts.sampler;
    let mask = sampler.mask(&model.layout)?;
    let (_tok, train_tokens, _test) = lm_data(&cfg, run, obs)?;
    let train_rows = training_rows(&cfg, &train_tokens);
    let pot = lm_potential(&model, &train_rows, &sampler.config);
    if pot.n < sampler.config.eval_dataset_size {
        obs.message(&format!(
            "the training set has {} rows: the sampler's data set is all of them (eval_dataset_size {})",
            pot.n, sampler.config.eval_dataset_size
        ));
    }
    let weights = |s: u64| run.weights(&model, s);
    Sweep {
        run,
        engine: &pot,
        steps,
        mask,
        positions: model.config.n_ctx - 1,
        weights: &weights,
    }
    .run(opts, obs)
}

/// The LM's sampling potential for a sampler config: the first `eval_dataset_size` of `rows`,
/// minibatches of `grad_batch_size` (from all rows with `infinite-dataset`).
pub(crate) fn lm_potential<'m>(
    model: &'m LanguageModel,
    rows: &'m dyn RowSource,
    sampler: &SamplerConfig,
) -> LmDataset<'m> {
    let mut pot = LmDataset::new(
        model,
        rows,
        sampler.eval_dataset_size,
        sampler.grad_batch_size,
        sampler.init_seed,
    );
    pot.infinite = sampler.grad_batch_origin == GradBatchOrigin::InfiniteDataset;
    pot
}
