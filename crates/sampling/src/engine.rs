//! The seam between the sampler and the hardware it runs on: a chain engine runs batched SGLD
//! chains from a set of centres (checkpoints) and measures the full-data-set loss there. The
//! CPU implementation is the [`Dataset`] potential itself; the CUDA backend implements it for
//! its device. Callers pick the engine once and never branch on the device again.

use crate::chains::{ChainConfig, ChainTrace, sample_with_progress};
use crate::potential::Potential;
use crate::regression::Dataset;
use crate::sgld::Sgld;

/// An engine's failure (a device error, an allocation the device could not satisfy...).
pub type EngineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Runs SGLD chains on the model's full-data-set potential.
pub trait ChainEngine {
    /// `L_n(w)` and its per-token parts at each centre.
    fn full_losses(&self, centres: &[Vec<f32>]) -> Result<Vec<(f64, Vec<f64>)>, EngineError>;

    /// The chains of `cfg` from each centre, `[centre][chain]`. `progress(d)` reports that the
    /// call is `d / cfg.total_steps()` done.
    fn sample(
        &self,
        centres: &[Vec<f32>],
        sgld: &Sgld,
        mask: Option<&[bool]>,
        cfg: &ChainConfig,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<Vec<ChainTrace>>, EngineError>;

    /// The most centres one `sample` call runs together (more is allowed, and is run in turn).
    fn centres_per_call(&self) -> usize {
        1
    }

    /// Checks, before any work, that `full_losses` and `sample` over `centres` centres fit in
    /// the engine's memory; an error saying what does not. Engines that cannot tell say yes.
    fn check_fits(
        &self,
        _centres: usize,
        _sgld: &Sgld,
        _mask: Option<&[bool]>,
        _cfg: &ChainConfig,
    ) -> Result<(), EngineError> {
        Ok(())
    }
}

/// The CPU engine of any potential: each centre's chains in lockstep, one centre after another.
pub fn cpu_sample<P: Potential<f32>>(
    pot: &P,
    centres: &[Vec<f32>],
    sgld: &Sgld,
    mask: Option<&[bool]>,
    cfg: &ChainConfig,
    progress: &dyn Fn(usize),
) -> Vec<Vec<ChainTrace>> {
    let q = centres.len().max(1);
    let total = cfg.total_steps();
    centres
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let tick = |d: usize| progress((i * total + d) / q);
            sample_with_progress(pot, w, sgld, mask, cfg, &tick)
        })
        .collect()
}

/// The CPU: each centre's chains in lockstep, one centre after another.
impl ChainEngine for Dataset<'_, f32> {
    fn full_losses(&self, centres: &[Vec<f32>]) -> Result<Vec<(f64, Vec<f64>)>, EngineError> {
        Ok(centres.iter().map(|w| self.full_loss(w)).collect())
    }

    fn sample(
        &self,
        centres: &[Vec<f32>],
        sgld: &Sgld,
        mask: Option<&[bool]>,
        cfg: &ChainConfig,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<Vec<ChainTrace>>, EngineError> {
        Ok(cpu_sample(self, centres, sgld, mask, cfg, progress))
    }
}
