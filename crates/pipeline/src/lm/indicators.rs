//! Structural indicators of a language-model run's checkpoints: weight norm, LayerNorm
//! statistics and collapse (`ln1` of each block, `ln_final`), the spectra of `W_E` and
//! `W_pos`, and on request the Hessian of the mean next-token loss on the first test rows.

use anyhow::{Context, Result};
use stagewise_analysis::structure::indicators as structure;
use stagewise_sampling::language::LmDataset;

use super::{lm_data, open_lm_run};
use crate::indicators::{IndicatorsOptions, IndicatorsResult, hessian_row, tabulate};
use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::RunDir;

/// The indicators at the selected checkpoints of a language-model run (`indicators.csv`); the
/// Hessian's fixed batch is the first `a.hessian_sequences` test rows.
pub fn indicators_lm(
    run: &RunDir,
    a: &IndicatorsOptions,
    obs: &dyn Observer,
) -> Result<IndicatorsResult> {
    let (cfg, model, mut steps) = open_lm_run(run, &a.select)?;
    steps.sort_unstable();
    steps.dedup();
    let _lock = Lock::take(run.root(), "indicators.lock", "stagewise indicators")?;
    run.root().clean_interrupted(false)?;
    let test = if a.hessian {
        Some(lm_data(&cfg, run, obs)?.2)
    } else {
        None
    };
    let fixed = test
        .as_ref()
        .map(|rows| LmDataset::new(&model, rows, a.hessian_sequences, 1, a.seed));
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
