//! Essential dynamics of a language-model run (the reference's `notebooks/language.ipynb`):
//! per-token losses of a fixed test set at each checkpoint, stacked into a (checkpoints x
//! tokens) matrix, then the analysis every run shares (PCA, smoothing, evolutes, forms).

use std::collections::HashMap;

use anyhow::{Result, bail};
use stagewise_models::language::LmRunner;
use stagewise_train::lm::evaluate_rows;

use super::{lm_data, open_lm_run};
use crate::ed::{EdOptions, EdResult, Smoothing, analyse};
use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::RunDir;

/// Essential dynamics of an LM run: the features are the next-token losses of the first
/// `a.sequences` test rows (`sequences x (n_ctx - 1)` tokens); written to `ed/tokens`.
pub fn ed_lm(run: &RunDir, a: &EdOptions, obs: &dyn Observer) -> Result<EdResult> {
    let (cfg, model, mut steps) = open_lm_run(run, &a.select)?;
    steps.sort_unstable();
    steps.dedup();
    if steps.len() < 3 {
        bail!(
            "essential dynamics needs at least 3 checkpoints, the selection has {}",
            steps.len()
        );
    }
    if a.sequences == 0 || a.components == 0 {
        bail!("--sequences and --components must be at least 1");
    }
    let (_tok, _train, test) = lm_data(&cfg, run, obs)?;
    let n = a.sequences.min(test.len());
    let features = n * (model.config.n_ctx - 1);
    crate::memory::check(
        "essential dynamics (checkpoints x test tokens, float32)",
        4 * (steps.len() as u128) * features as u128,
        "--sequences",
    )?;
    let sigma = match a.smooth {
        Smoothing::None => None,
        Smoothing::Variable { lo, hi } => {
            Some(stagewise_analysis::smoothing::linspace(lo, hi, steps.len()))
        }
    };
    let out = a.out.clone().unwrap_or_else(|| run.ed("tokens"));
    let _lock = Lock::take(&out, "lock", "stagewise ed")?;
    out.clean_interrupted(true)?;
    let rows = steps.len();
    let mut x = vec![0.0f32; rows * features];
    let mut runner = LmRunner::<f32>::new();
    let mut losses = Vec::new();
    obs.start(0, rows as u64, "checkpoints");
    for (r, step) in steps.iter().enumerate() {
        let w = run.weights(&model, *step)?;
        evaluate_rows(
            &model,
            &w,
            &mut runner,
            &test,
            Some(n),
            cfg.batch_size,
            Some(&mut losses),
        )?;
        if losses.iter().any(|v| !v.is_finite()) {
            bail!("checkpoint {step}: the model's losses are not finite");
        }
        for (d, l) in x[r * features..(r + 1) * features].iter_mut().zip(&losses) {
            *d = *l as f32;
        }
        obs.tick(r as u64 + 1, &|| format!("checkpoint {step}"));
    }
    obs.finish();
    obs.message(&format!(
        "PCA of {rows} checkpoints x {features} features (next-token losses of {n} test rows)"
    ));
    let meta = HashMap::from([
        ("steps".to_string(), format!("{steps:?}")),
        ("outputs".to_string(), "tokens".to_string()),
        ("sequences".to_string(), n.to_string()),
    ]);
    analyse(&out, steps, x, features, a, sigma, meta)
}
