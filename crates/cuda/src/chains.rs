//! The CUDA backend as a [`ChainEngine`]: the chains of several checkpoints in one set of
//! launches, in groups of chains that bound each launch's memory.

use std::sync::Arc;

use stagewise_models::RegressionTransformer;
use stagewise_sampling::chains::{ChainConfig, ChainTrace};
use stagewise_sampling::engine::{ChainEngine, EngineError};
use stagewise_sampling::sgld::Sgld;

use crate::device::Device;
use crate::full_loss::full_losses;
use crate::sgld::{DatasetSpec, sample_dataset};

/// Sequences per chunk of the full-data-set loss.
const FULL_LOSS_CHUNK: usize = 8192;

/// Batched chains of the regression transformer on a device.
pub struct DeviceChains<'m> {
    pub dev: Arc<dyn Device>,
    pub model: &'m RegressionTransformer,
    pub data: DatasetSpec,
    /// Checkpoints whose chains run together (Q = checkpoints x chains weight sets).
    pub centres_per_call: usize,
    /// Chains per set of launches (`None`: all of a checkpoint's chains). Chain c's draws
    /// depend only on the seed and c, so the grouping does not change the result.
    pub chains_per_launch: Option<usize>,
}

impl ChainEngine for DeviceChains<'_> {
    fn full_losses(&self, centres: &[Vec<f32>]) -> Result<Vec<(f64, Vec<f64>)>, EngineError> {
        Ok(full_losses(
            &self.dev,
            self.model,
            &self.data,
            centres,
            FULL_LOSS_CHUNK,
        )?)
    }

    fn sample(
        &self,
        centres: &[Vec<f32>],
        sgld: &Sgld,
        mask: Option<&[bool]>,
        cfg: &ChainConfig,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<Vec<ChainTrace>>, EngineError> {
        let per = self
            .chains_per_launch
            .unwrap_or(cfg.chains)
            .clamp(1, cfg.chains.max(1));
        let mut traces: Vec<Vec<ChainTrace>> = vec![Vec::new(); centres.len()];
        let groups = cfg.chains.div_ceil(per);
        for g in 0..groups {
            let mut part = cfg.clone();
            part.first_chain = cfg.first_chain + (g * per) as u32;
            part.chains = per.min(cfg.chains - g * per);
            let done = g * cfg.total_steps();
            let got = sample_dataset(
                &self.dev,
                self.model,
                &self.data,
                centres,
                sgld,
                mask,
                &part,
                &|d| progress((done + d) / groups),
            )?;
            for (t, more) in traces.iter_mut().zip(got) {
                t.extend(more);
            }
        }
        Ok(traces)
    }

    fn centres_per_call(&self) -> usize {
        self.centres_per_call.max(1)
    }

    /// Runs the largest call on a counting device ([`crate::tally`]) and compares its peak
    /// memory with what the device has free.
    fn check_fits(
        &self,
        centres: usize,
        sgld: &Sgld,
        mask: Option<&[bool]>,
        cfg: &ChainConfig,
    ) -> Result<(), EngineError> {
        let q = centres.clamp(1, self.centres_per_call());
        let per = self
            .chains_per_launch
            .unwrap_or(cfg.chains)
            .clamp(1, cfg.chains.max(1));
        let mut part = cfg.clone();
        part.chains = per.min(cfg.chains);
        let zeros = vec![vec![0.0f32; self.model.num_params()]; q];
        let bytes = crate::tally::peak_bytes(|dev| {
            full_losses(dev, self.model, &self.data, &zeros, FULL_LOSS_CHUNK)?;
            sample_dataset(
                dev,
                self.model,
                &self.data,
                &zeros,
                sgld,
                mask,
                &part,
                &|_| (),
            )
        })?;
        let what = format!(
            "sampling {q} checkpoint{} x {} chain{} per launch (grad_batch_size = {}, num_draws = {})",
            if q == 1 { "" } else { "s" },
            part.chains,
            if part.chains == 1 { "" } else { "s" },
            self.data.batch,
            cfg.draws
        );
        Ok(crate::tally::check_fits(self.dev.as_ref(), &what, bytes)?)
    }
}
