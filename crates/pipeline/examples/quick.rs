//! The pipeline through the library API alone: train the built-in quick run, estimate the LLC
//! at a few of its checkpoints with the tiny sampler, and find the developmental stages.
//!
//! cargo run --release -p stagewise-pipeline --example quick -- [RUN_FOLDER] [key=value ...]
//!
//! `key=value` arguments override training fields, as `stagewise train --set` does.

use anyhow::Result;
use stagewise_pipeline::llc::{LlcOptions, Sampler, StepSelection, llc};
use stagewise_pipeline::stages::{StagesOptions, StagesResult, stages};
use stagewise_pipeline::train::{TrainOptions, train};
use stagewise_pipeline::{Observer, RunDir};

/// Prints what each stage says it is doing.
struct Print;

impl Observer for Print {
    fn message(&self, text: &str) {
        println!("{text}");
    }
}

/// Train -> LLC at about 12 checkpoints -> stages, all in `run`.
pub fn pipeline(run: &RunDir, sets: Vec<String>) -> Result<StagesResult> {
    let trained = train(
        &TrainOptions {
            out: Some(run.clone()),
            sets,
            ..TrainOptions::default()
        },
        &Print,
    )?;
    println!(
        "trained {} steps, {} checkpoints in {}",
        trained.num_steps,
        trained.checkpoints,
        run.display()
    );

    // Every k-th checkpoint, about 12 of them.
    let available = run.checkpoint_steps()?;
    let every = available.len().div_ceil(12);
    let steps = available.into_iter().step_by(every).collect();
    let sweep = llc(
        run,
        &LlcOptions {
            sampler: Sampler::tiny(),
            select: StepSelection {
                steps,
                ..StepSelection::default()
            },
            ..LlcOptions::default()
        },
        &Print,
    )?;
    for (step, e) in &sweep.estimates {
        println!("step {step:>5}: llc {:.3} +- {:.3}", e.mean, e.std);
    }

    let found = stages(run, &StagesOptions::default())?;
    for s in &found.stages {
        println!(
            "stage {}: steps {}-{}, dLLC {:+.2}",
            s.kind, s.start, s.end, s.delta_llc
        );
    }
    Ok(found)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let folder = args.next().unwrap_or_else(|| "runs/example".into());
    pipeline(&RunDir::local(folder), args.collect())?;
    Ok(())
}
