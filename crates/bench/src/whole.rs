//! A whole `stagewise train` run for its first N steps (evaluations, tables, TensorBoard events
//! and checkpoints, as a user runs it) against the bare step rate of the same config, both in
//! this process on the same threads: what the run's bookkeeping costs at the dense start of
//! the log+linear schedule.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use stagewise_pipeline::train::{TrainOptions, train};
use stagewise_pipeline::{Quiet, RunDir};
use stagewise_train::Trainer;

#[derive(Clone, Debug, PartialEq)]
pub struct WholeOptions {
    /// Training config (a plain config or a sweep file, whose first run is used).
    pub config: PathBuf,
    /// Steps to run.
    pub steps: u64,
    /// Threads (a pool of its own, so what ran before cannot change it).
    pub threads: usize,
}

pub fn whole(o: &WholeOptions) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()?
        .install(|| run(o))
}

fn run(o: &WholeOptions) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("stagewise-bench-whole-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = RunDir::local(&dir);
    let opts = TrainOptions {
        config: Some(o.config.clone()),
        out: Some(run.clone()),
        sweep_index: Some(0),
        stop_after: Some(o.steps),
        ..TrainOptions::default()
    };
    let t0 = Instant::now();
    let done = train(&opts, &Quiet).with_context(|| format!("training {}", o.config.display()));
    let whole_s = t0.elapsed().as_secs_f64();
    let counts = done.and_then(|done| {
        let metrics = std::fs::read_to_string(dir.join("metrics.csv"))?;
        Ok((
            done,
            run.checkpoint_steps()?.len(),
            metrics.lines().count() - 1,
        ))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let (done, checkpoints, evals) = counts?;
    let steps = o.steps.min(done.num_steps);

    let mut tr = Trainer::<f32>::new(done.config.clone())?;
    let t0 = Instant::now();
    for _ in 0..steps {
        tr.step()?;
    }
    let bare_s = t0.elapsed().as_secs_f64();
    println!(
        "Whole run: `stagewise train {}` (first run of the file), its first {steps} of {} steps, \
         next to the bare training steps of the same config, {} threads",
        o.config.display(),
        done.num_steps,
        o.threads
    );
    println!(
        "| steps | checkpoints | evaluations | whole run (steps/s) | bare steps (steps/s) | cost of the rest |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let (w, b) = (steps as f64 / whole_s, steps as f64 / bare_s);
    println!(
        "| {steps} | {checkpoints} | {evals} | {w:.2} | {b:.2} | {:.1} % |",
        100.0 * (whole_s - bare_s) / bare_s
    );
    Ok(())
}
