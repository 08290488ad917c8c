//! Structural indicators of a parity run's checkpoints: the weight norm, and on request the
//! Hessian of the mean cross-entropy on `hessian_sequences` samples of the task mixture.

use anyhow::{Context, Result};
use stagewise_analysis::structure::indicators as structure;
use stagewise_sampling::parity::ParityDataset;
use stagewise_train::parity::SparseParity;

use super::open_parity_run;
use crate::indicators::{IndicatorsOptions, IndicatorsResult, hessian_row, tabulate};
use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::RunDir;

pub fn indicators_parity(
    run: &RunDir,
    a: &IndicatorsOptions,
    obs: &dyn Observer,
) -> Result<IndicatorsResult> {
    let (cfg, model, mut steps) = open_parity_run(run, &a.select)?;
    steps.sort_unstable();
    steps.dedup();
    let _lock = Lock::take(run.root(), "indicators.lock", "stagewise indicators")?;
    run.root().clean_interrupted(false)?;
    let data = SparseParity::from_config(&cfg);
    let fixed = a
        .hessian
        .then(|| ParityDataset::new(&model, &data, a.hessian_sequences, 1, a.seed));
    tabulate(run, steps, obs, |step| {
        let w = run.weights(&model, step)?;
        let mut row = structure(&w, &model.layout)
            .with_context(|| format!("indicators of the checkpoint at step {step}"))?;
        if let Some(f) = &fixed {
            row.extend(hessian_row(f, &w, a, step)?);
        }
        Ok(row)
    })
}
