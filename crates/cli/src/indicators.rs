//! `stagewise indicators`: structural indicators over a run's checkpoints (weight norm,
//! LayerNorm statistics and collapse, embedding spectra and alignment) and, with `--hessian`,
//! the Hessian trace (Hutchinson) and top eigenvalues (Lanczos) on a fixed batch.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use stagewise_analysis::hessian::Hessian;
use stagewise_analysis::structure::indicators;
use stagewise_engine::rng::tag;
use stagewise_io::atomic::write_atomic;
use stagewise_sampling::regression::FixedBatch;
use stagewise_train::data::Batch;

use crate::llc::{RunFolder, StepSelection};
use crate::progress::Progress;

#[derive(Args)]
pub struct IndicatorsArgs {
    /// Run folder written by `stagewise train`.
    run: PathBuf,
    #[command(flatten)]
    select: StepSelection,
    /// Also the Hessian trace and top eigenvalues (costly: each Hessian-vector product is two
    /// float64 gradients of the batch).
    #[arg(long)]
    hessian: bool,
    /// Sequences of the fixed Hessian batch.
    #[arg(long, default_value_t = 256)]
    hessian_sequences: usize,
    /// Top Hessian eigenvalues reported.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Lanczos iterations.
    #[arg(long, default_value_t = 30)]
    lanczos_steps: usize,
    /// Most Hutchinson samples (stops earlier when the mean changes by < 1e-3 relative).
    #[arg(long, default_value_t = 30)]
    hutchinson_samples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn indicators_cmd(a: &IndicatorsArgs) -> Result<()> {
    let folder = RunFolder::open(&a.run)?;
    let mut steps = folder.select(&a.select)?;
    steps.sort_unstable();
    if a.hessian && (a.hessian_sequences == 0 || a.top == 0 || a.lanczos_steps < a.top) {
        bail!("--hessian-sequences and --top must be positive and --lanczos-steps at least --top");
    }
    let model = &folder.model;
    let dist = folder.train_cfg.pretrain_distribution();
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
    let mut header: Vec<String> = vec![];
    let mut text = String::new();
    let progress = Progress::new(0, steps.len() as u64, "checkpoints");
    for (i, step) in steps.iter().enumerate() {
        let w = folder.weights(*step)?;
        let mut row = indicators(&w, &model.layout);
        if a.hessian {
            let w64: Vec<f64> = w.iter().map(|v| *v as f64).collect();
            let h = Hessian::new(&fixed, &w64);
            let samples = h.trace_samples(a.seed, 1e-3, a.hutchinson_samples);
            let sum: f64 = samples.iter().sum();
            let m = sum / samples.len() as f64;
            let var = samples.iter().map(|x| (x - m).powi(2)).sum::<f64>()
                / (samples.len() as f64 - 1.0).max(1.0);
            row.push(("hessian/trace".into(), m));
            row.push((
                "hessian/trace_se".into(),
                (var / samples.len() as f64).sqrt(),
            ));
            row.push(("hessian/trace_sum".into(), sum));
            row.push(("hessian/trace_samples".into(), samples.len() as f64));
            for (k, e) in h
                .top_eigenvalues(a.top, a.lanczos_steps, a.seed)
                .iter()
                .enumerate()
            {
                row.push((format!("hessian/evals/{k}"), *e));
            }
        }
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
        progress.tick(i as u64 + 1, || format!("checkpoint {step}"));
    }
    progress.finish();
    let path = a.run.join("indicators.csv");
    write_atomic(&path, text.as_bytes())?;
    stagewise_tables::csv_to_parquet(&path)?;
    println!(
        "{} indicators at {} checkpoints: {}",
        header.len(),
        steps.len(),
        path.display()
    );
    Ok(())
}
