//! Structural indicators over a run's checkpoints (weight norm, LayerNorm statistics and
//! collapse, embedding spectra and alignment) and, optionally, the Hessian trace (Hutchinson)
//! and top eigenvalues (Lanczos) on a fixed batch.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use stagewise_analysis::hessian::Hessian;
use stagewise_analysis::structure::indicators as structure;
use stagewise_engine::rng::tag;
use stagewise_sampling::Potential;
use stagewise_sampling::regression::FixedBatch;
use stagewise_train::data::Batch;

use crate::llc::{Checkpoints, StepSelection};
use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::RunDir;

#[derive(Clone, Debug, PartialEq)]
pub struct IndicatorsOptions {
    pub select: StepSelection,
    /// Also the Hessian trace and top eigenvalues (costly: each Hessian-vector product is two
    /// float64 gradients of the batch).
    pub hessian: bool,
    /// Sequences of the fixed Hessian batch.
    pub hessian_sequences: usize,
    /// Top Hessian eigenvalues reported.
    pub top: usize,
    /// Lanczos iterations.
    pub lanczos_steps: usize,
    /// Most Hutchinson samples (stops earlier when the mean changes by < 1e-3 relative).
    pub hutchinson_samples: usize,
    pub seed: u64,
}

impl Default for IndicatorsOptions {
    fn default() -> Self {
        IndicatorsOptions {
            select: StepSelection::default(),
            hessian: false,
            hessian_sequences: 256,
            top: 3,
            lanczos_steps: 30,
            hutchinson_samples: 30,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct IndicatorsResult {
    pub table: String,
    /// Indicator columns (the step excluded).
    pub columns: Vec<String>,
    pub steps: Vec<u64>,
}

/// Computes the indicators at the selected checkpoints and writes `indicators.csv` (and its
/// Parquet copy).
pub fn indicators(
    run: &RunDir,
    a: &IndicatorsOptions,
    obs: &dyn Observer,
) -> Result<IndicatorsResult> {
    if a.hessian && (a.hessian_sequences == 0 || a.top == 0 || a.lanczos_steps < a.top) {
        bail!("--hessian-sequences and --top must be positive and --lanczos-steps at least --top");
    }
    if run.is_language_run() {
        return crate::lm::indicators_lm(run, a, obs);
    }
    if run.is_parity_run() {
        return crate::parity::indicators_parity(run, a, obs);
    }
    let ckpts = Checkpoints::open(run)?;
    let mut steps = ckpts.select(&a.select)?;
    steps.sort_unstable();
    let _lock = Lock::take(run.root(), "indicators.lock", "stagewise indicators")?;
    run.root().clean_interrupted(false)?;
    let model = &ckpts.model;
    let dist = ckpts.config.pretrain_distribution();
    let mut batch = Batch::<f64>::default();
    dist.sample_indexed_into(
        &mut batch,
        a.hessian_sequences,
        |i| i as u32,
        a.seed,
        tag::HESSIAN_PROBE,
        0,
    );
    let fixed = FixedBatch {
        model,
        toks: batch.toks.clone(),
        ys: batch.ys_t.clone(),
        nseq: a.hessian_sequences,
        t: 2 * dist.k,
    };
    tabulate(run, steps, obs, |step| {
        let w = ckpts.weights(step)?;
        let mut row = structure(&w, &model.layout)
            .with_context(|| format!("indicators of the checkpoint at step {step}"))?;
        if a.hessian {
            row.extend(hessian_row(&fixed, &w, a, step)?);
        }
        Ok(row)
    })
}

/// The Hessian trace (Hutchinson, with its standard error) and top eigenvalues (Lanczos) of
/// `potential`'s full-batch loss at `w`.
pub(crate) fn hessian_row<P: Potential<f64>>(
    potential: &P,
    w: &[f32],
    a: &IndicatorsOptions,
    step: u64,
) -> Result<Vec<(String, f64)>> {
    let w64: Vec<f64> = w.iter().map(|v| *v as f64).collect();
    let h = Hessian::new(potential, &w64);
    let samples = h.trace_samples(a.seed, 1e-3, a.hutchinson_samples);
    let sum: f64 = samples.iter().sum();
    let m = sum / samples.len() as f64;
    let var = samples.iter().map(|x| (x - m).powi(2)).sum::<f64>()
        / (samples.len() as f64 - 1.0).max(1.0);
    let mut row = vec![
        ("hessian/trace".into(), m),
        (
            "hessian/trace_se".into(),
            (var / samples.len() as f64).sqrt(),
        ),
        ("hessian/trace_sum".into(), sum),
        ("hessian/trace_samples".into(), samples.len() as f64),
    ];
    for (k, e) in h
        .top_eigenvalues(a.top, a.lanczos_steps, a.seed)
        .with_context(|| format!("Hessian eigenvalues at step {step}"))?
        .iter()
        .enumerate()
    {
        row.push((format!("hessian/evals/{k}"), *e));
    }
    Ok(row)
}

/// One row of named indicators per step, written as the run's indicator table.
pub(crate) fn tabulate(
    run: &RunDir,
    steps: Vec<u64>,
    obs: &dyn Observer,
    mut row_at: impl FnMut(u64) -> Result<Vec<(String, f64)>>,
) -> Result<IndicatorsResult> {
    let mut header: Vec<String> = vec![];
    let mut text = String::new();
    obs.start(0, steps.len() as u64, "checkpoints");
    for (i, step) in steps.iter().enumerate() {
        let row = row_at(*step)?;
        if header.is_empty() {
            header = row.iter().map(|(n, _)| n.clone()).collect();
            text.push_str("step");
            for h in &header {
                write!(text, ",{h}")?;
            }
            text.push('\n');
        }
        write!(text, "{step}")?;
        for (_, v) in &row {
            write!(text, ",{v:?}")?;
        }
        text.push('\n');
        obs.tick(i as u64 + 1, &|| format!("checkpoint {step}"));
    }
    obs.finish();
    run.write_indicators(&text)?;
    Ok(IndicatorsResult {
        table: run.indicators_location(),
        columns: header,
        steps,
    })
}
