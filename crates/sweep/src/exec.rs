//! Running one task and reading a task's state back from its folders. Tasks are idempotent: a
//! finished one is skipped, an interrupted one resumes (training from its last checkpoint, an
//! LLC sweep from its last complete row), and the run and sampler folders' locks refuse a second
//! worker on the same task while the first holds them.

use anyhow::{Result, bail};
use stagewise_pipeline::llc::{LlcOptions, PerLaunch, Sampler, StepSelection, llc};
use stagewise_pipeline::lock::Lock;
use stagewise_pipeline::parity::{ParityTrainOptions, train_parity};
use stagewise_pipeline::train::{TrainOptions, checkpoint_schedule, train};
use stagewise_pipeline::{Backend, Folder, Observer, RunDir};

use crate::task::{Kind, Task};

/// Where a sweep's runs live: `ROOT/<run name>/`, the reference's run names (a local folder or
/// an object-store prefix).
#[derive(Clone, Debug)]
pub struct Root(pub Folder);

impl Root {
    pub fn run(&self, task: &Task) -> RunDir {
        RunDir::new(self.0.sub(&task.run))
    }
}

/// A task's state, from what its folders hold.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Done,
    /// Started, not finished: what is there so far.
    Partial(String),
    NotStarted,
    /// An LLC task whose training run is not finished.
    Waiting(String),
}

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            State::Done => "done",
            State::Partial(_) => "partial",
            State::NotStarted => "not started",
            State::Waiting(_) => "waiting",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            State::Partial(s) | State::Waiting(s) => s,
            _ => "",
        }
    }
}

/// How a training run stands: done, partial (last checkpoint of the schedule's last), or absent.
fn training_state(run: &RunDir) -> Result<State> {
    if !run.has_config() {
        return Ok(State::NotStarted);
    }
    if run.is_complete() {
        return Ok(State::Done);
    }
    let have = run.checkpoint_steps()?;
    if run.is_parity_run() {
        return Ok(State::Partial(match have.last() {
            Some(a) => format!("checkpoint {a}"),
            None => "config written, no checkpoint yet".into(),
        }));
    }
    let cfg = run.read_config()?;
    let last_due = checkpoint_schedule(&cfg).into_iter().next_back();
    Ok(State::Partial(match (have.last(), last_due) {
        (Some(a), Some(b)) => format!("checkpoint {a} of {b}, {} steps in all", cfg.num_steps),
        (Some(a), None) => format!("checkpoint {a}, {} steps in all", cfg.num_steps),
        (None, _) => "config written, no checkpoint yet".into(),
    }))
}

/// The checkpoints an LLC task samples on its (finished) training run.
fn llc_steps(task: &Task, run: &RunDir) -> Result<(Vec<u64>, usize)> {
    let cfg = run.read_config()?;
    let available = run.checkpoint_steps()?;
    Ok(match &task.steps {
        None => (available, 0),
        Some(spec) => {
            let wanted = spec.expand(cfg.num_steps);
            let missing: Vec<u64> = wanted
                .iter()
                .copied()
                .filter(|s| !available.contains(s))
                .collect();
            if task.kind == Kind::Calibrate && !missing.is_empty() {
                bail!(
                    "{}: no checkpoint for steps {missing:?}, which the calibration needs",
                    run.checkpoints_location()
                );
            }
            let steps: Vec<u64> = wanted
                .into_iter()
                .filter(|s| available.contains(s))
                .collect();
            (steps, missing.len())
        }
    })
}

/// The state of `task` under `root`.
pub fn state(root: &Root, task: &Task) -> Result<State> {
    let run = root.run(task);
    let trained = training_state(&run)?;
    if matches!(task.kind, Kind::Train | Kind::Parity) {
        return Ok(trained);
    }
    if trained != State::Done {
        return Ok(State::Waiting(format!(
            "training run {} is {}{}",
            task.run,
            trained.label(),
            match trained.detail() {
                "" => String::new(),
                d => format!(" ({d})"),
            }
        )));
    }
    let name = task.sampler_name.as_deref().unwrap_or_default();
    let table = run.llc(name).table()?;
    let (steps, _) = llc_steps(task, &run)?;
    let done: Vec<u64> = table
        .map(|t| t.rows.iter().map(|r| r[0] as u64).collect())
        .unwrap_or_default();
    let left = steps.iter().filter(|s| !done.contains(s)).count();
    Ok(match (done.len(), left) {
        (0, _) => State::NotStarted,
        (_, 0) => State::Done,
        (n, _) => State::Partial(format!(
            "{n} of {} checkpoints, last step {}",
            steps.len(),
            done.iter().max().copied().unwrap_or(0)
        )),
    })
}

/// What running a task did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Already finished: nothing was run.
    Skipped,
    Ran,
}

/// Options of [`run_task`].
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub device: Backend,
    pub per_launch: PerLaunch,
}

/// Runs (or resumes, or skips) `task` under `root`.
pub fn run_task(
    root: &Root,
    task: &Task,
    opts: &RunOptions,
    obs: &dyn Observer,
) -> Result<Outcome> {
    let run = root.run(task);
    match task.kind {
        Kind::Train => {
            if training_state(&run)? == State::Done {
                Lock::clear_stale(run.root(), "lock");
                return Ok(Outcome::Skipped);
            }
            train(
                &TrainOptions {
                    out: Some(run.clone()),
                    resume: run.has_config(),
                    resolved: task.train.clone(),
                    device: opts.device.clone(),
                    ..TrainOptions::default()
                },
                obs,
            )?;
            Ok(Outcome::Ran)
        }
        Kind::Parity => {
            if training_state(&run)? == State::Done {
                Lock::clear_stale(run.root(), "lock");
                return Ok(Outcome::Skipped);
            }
            train_parity(
                &ParityTrainOptions {
                    out: Some(run.clone()),
                    resume: run.has_config(),
                    resolved: task.parity.clone(),
                    ..ParityTrainOptions::default()
                },
                obs,
            )?;
            Ok(Outcome::Ran)
        }
        Kind::Llc | Kind::Calibrate => {
            match training_state(&run)? {
                State::Done => {}
                s => bail!(
                    "task {} of {} samples the training run {}, which is {}{}: run the training sweep with the same task_config first",
                    task.index,
                    task.sweep,
                    run.display(),
                    s.label(),
                    match s.detail() {
                        "" => String::new(),
                        d => format!(" ({d})"),
                    }
                ),
            }
            if state(root, task)? == State::Done {
                if let Some(name) = &task.sampler_name {
                    let dir = match task.kind {
                        Kind::Calibrate => run.calibration(name),
                        _ => run.llc(name),
                    };
                    Lock::clear_stale(&dir.folder, "lock");
                }
                return Ok(Outcome::Skipped);
            }
            let (steps, missing) = llc_steps(task, &run)?;
            if missing > 0 {
                obs.message(&format!(
                    "{missing} of the requested steps have no checkpoint in {} and are skipped (the reference would stop at the first)",
                    run.checkpoints_location()
                ));
            }
            let config = task.sampler.clone().expect("LLC tasks have a sampler");
            let sgld = config.sgld()?;
            let sampler = Sampler {
                name: task
                    .sampler_name
                    .clone()
                    .expect("LLC tasks have a sampler folder"),
                config,
                sgld,
                origin: format!("task {} of sweep {}", task.index, task.sweep),
            };
            llc(
                &run,
                &LlcOptions {
                    sampler,
                    select: StepSelection {
                        steps,
                        ..StepSelection::default()
                    },
                    device: opts.device.clone(),
                    per_launch: opts.per_launch.clone(),
                },
                obs,
            )?;
            Ok(Outcome::Ran)
        }
    }
}

/// Schedulers' array-index variables, in the order they are read; 1-based ones are shifted.
pub const INDEX_VARIABLES: &[(&str, bool)] = &[
    ("SLURM_ARRAY_TASK_ID", false),
    ("JOB_COMPLETION_INDEX", false),
    ("AWS_BATCH_JOB_ARRAY_INDEX", false),
    ("SGE_TASK_ID", true),
    ("LSB_JOBINDEX", true),
];

/// The task index a scheduler gave this process: the first of [`INDEX_VARIABLES`] that is set,
/// with its name; an error when it is not a valid index.
pub fn index_from_env(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<(usize, &'static str)>> {
    for (var, one_based) in INDEX_VARIABLES {
        if let Some(v) = get(var) {
            let n: usize = v.trim().parse().map_err(|_| {
                anyhow::anyhow!("{var}={v:?}: expected a task index (a non-negative integer)")
            })?;
            let i = if *one_based {
                n.checked_sub(1)
                    .ok_or_else(|| anyhow::anyhow!("{var}=0: this scheduler counts tasks from 1"))?
            } else {
                n
            };
            return Ok(Some((i, var)));
        }
    }
    Ok(None)
}
