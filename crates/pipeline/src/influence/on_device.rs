//! A regression run's susceptibility or BIF chains on a CUDA device (or its emulator): every
//! restriction's chains in one set of launches, folded on the host into the CPU's moments.

use std::sync::Arc;

use anyhow::Result;
use stagewise_cuda::Device;
use stagewise_cuda::full_loss::full_losses;
use stagewise_cuda::observed::{check_fits, sample_observed};
use stagewise_cuda::sgld::DatasetSpec;
use stagewise_models::RegressionTransformer;
use stagewise_sampling::observed::{ObserveConfig, ObservedRestriction};
use stagewise_sampling::regression::Observed;

use super::ScanModel;
use crate::llc::Sampler;

/// Sequences per chunk of the initial loss on the device.
const FULL_LOSS_CHUNK: usize = 8192;

pub(super) struct OnDevice<'a> {
    /// The same run on the CPU (for the checkpoints' weights).
    pub cpu: &'a dyn ScanModel,
    pub dev: Arc<dyn Device>,
    pub model: &'a RegressionTransformer,
    pub data: DatasetSpec,
    pub set: &'a Observed<'a, f32>,
}

impl ScanModel for OnDevice<'_> {
    fn weights(&self, step: u64) -> Result<Vec<f32>> {
        self.cpu.weights(step)
    }

    fn init_loss(&self, w: &[f32]) -> Result<f64> {
        let centre = [w.to_vec()];
        let l = full_losses(&self.dev, self.model, &self.data, &centre, FULL_LOSS_CHUNK)?;
        Ok(l[0].0)
    }

    fn sample(
        &self,
        w: &[f32],
        sampler: &Sampler,
        masks: &[Option<Vec<bool>>],
        ocfg: &ObserveConfig,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<ObservedRestriction>> {
        let chains = sampler.config.chains();
        let (dev, sgld) = (&self.dev, &sampler.sgld);
        check_fits(dev, self.model, &self.data, self.set, sgld, masks, &chains)?;
        Ok(sample_observed(
            dev, self.model, &self.data, self.set, w, sgld, masks, &chains, ocfg, progress,
        )?)
    }
}
