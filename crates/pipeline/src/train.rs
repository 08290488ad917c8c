//! Training a run: the reference's loop with its log/eval/checkpoint schedule, written to a
//! run folder and resumable.
//!
//! Step `t`'s evaluation and table rows are written before its checkpoint, so a checkpoint
//! implies its rows; resuming restores the last complete checkpoint, cuts the tables back to it
//! and continues, giving the same weights and rows as an uninterrupted run.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use stagewise_io::checkpoint::CheckpointMeta;
use stagewise_io::config::{LoadedConfig, load_train_config, resolve};
use stagewise_train::TrainConfig;
use stagewise_train::trainer::TrainState;

use crate::device::Backend;
use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::{Events, RunDir, check_name};
use stagewise_io::table::CsvTable;

/// The built-in default config (`configs/quick.yaml`).
pub const QUICK_YAML: &str = include_str!("../../../configs/quick.yaml");

/// `batch/loss` and `lr` are logged every this many steps.
pub const TRAIN_LOG_EVERY: u64 = 100;

/// Optimizer states kept: resuming needs the newest; the one before covers a damaged newest
/// checkpoint. Older ones would cost as much disk as the model checkpoints themselves.
pub const OPTIMIZER_STATES_KEPT: usize = 2;

/// What to train and where.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Config file (plain or W&B sweep YAML); `None`: the built-in quick default.
    pub config: Option<PathBuf>,
    /// Field overrides, `key=value` (YAML values).
    pub sets: Vec<String>,
    /// Run folder (default: `runs/<config name>[-<sweep index>]`).
    pub out: Option<RunDir>,
    /// Continue the run in `out` from its last checkpoint (with no config and no sets, the
    /// run's own `config.yaml` is used).
    pub resume: bool,
    /// Which run of a sweep grid to train (0-based, grid in key order).
    pub sweep_index: Option<usize>,
    /// An already resolved config (a sweep task's), used instead of `config` and `sets`.
    pub resolved: Option<TrainConfig>,
    /// Where to train.
    pub device: Backend,
    /// Stop once this many steps of the run are done, as a pre-empted job would: the tables
    /// and checkpoints so far are kept, the run is not marked complete, `resume` continues it.
    pub stop_after: Option<u64>,
}

/// What a training call did.
#[derive(Clone, Debug)]
pub struct TrainResult {
    pub run: RunDir,
    pub config: TrainConfig,
    /// The checkpoint resumed from, if any.
    pub resumed_at: Option<u64>,
    /// Total steps of the run.
    pub num_steps: u64,
    /// The last batch loss of this call (NaN when nothing was left to train).
    pub last_loss: f64,
    /// Checkpoints in the run folder at the end.
    pub checkpoints: usize,
}

/// The config's name: its file stem, with the sweep index for a sweep's run.
fn load(opts: &TrainOptions) -> Result<(LoadedConfig, String)> {
    match &opts.config {
        Some(path) => {
            let loaded = load_train_config(path, &opts.sets, opts.sweep_index)?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            let name = match (loaded.grid_size, opts.sweep_index) {
                (g, Some(i)) if g > 1 => format!("{stem}-{i}"),
                _ => stem,
            };
            if opts.out.is_none() {
                check_name(&format!("{}: the run name", path.display()), &name)?;
            }
            Ok((loaded, name))
        }
        None => {
            let doc = stagewise_io::config::parse_yaml(QUICK_YAML)
                .map_err(|e| anyhow::anyhow!("built-in config: {e}"))?;
            Ok((
                resolve(doc, "built-in quick config", &opts.sets, opts.sweep_index)?,
                "quick".into(),
            ))
        }
    }
}

/// First field (dotted path) where two configs differ.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => first_difference(u, v, &p),
                    _ => Some(p),
                }
            })
        }
        _ if a != b => Some(format!("{path} ({a} vs {b})")),
        _ => None,
    }
}

/// The checkpoint steps a run of `cfg` writes (its last is where a finished run ends).
pub fn checkpoint_schedule(cfg: &TrainConfig) -> BTreeSet<u64> {
    steps_reached(&cfg.checkpointer_config.checkpoint_steps, cfg.num_steps)
}

fn steps_reached(spec: &stagewise_train::steps::StepsSpec, n: u64) -> BTreeSet<u64> {
    spec.expand(n).into_iter().filter(|s| *s < n).collect()
}

/// The config to train with: the given one, or the run's saved one when resuming (which must
/// equal the given one, if any).
fn settle_config(opts: &TrainOptions) -> Result<(TrainConfig, RunDir)> {
    // Resuming with neither a config nor sets continues with the run folder's own config.
    let saved_only =
        opts.resume && opts.config.is_none() && opts.sets.is_empty() && opts.resolved.is_none();
    let (cfg, name) = if let Some(c) = &opts.resolved {
        c.validate()?;
        (Some(c.clone()), "run".to_string())
    } else if saved_only {
        (None, "quick".to_string())
    } else {
        let (loaded, name) = load(opts)?;
        (Some(loaded.config), name)
    };
    let run = opts
        .out
        .clone()
        .unwrap_or_else(|| RunDir::local(PathBuf::from("runs").join(&name)));
    let cfg = if opts.resume {
        let saved = run.read_config().map_err(|e| {
            anyhow::anyhow!(
                "--resume: cannot read {}; is {} a stagewise run folder? ({e:#})",
                run.config_location(),
                run.display()
            )
        })?;
        if let Some(cfg) = cfg.filter(|c| *c != saved) {
            let diff = first_difference(
                &serde_json::to_value(&saved)?,
                &serde_json::to_value(&cfg)?,
                "",
            )
            .unwrap_or_else(|| "?".into());
            bail!(
                "--resume: the config differs from the run's {} at `{diff}`; pass the same config and --set values, or neither",
                run.config_location()
            );
        }
        saved
    } else if !run.root().is_empty().unwrap_or(true) {
        bail!(
            "{}: output folder exists and is not empty; pass --resume to continue that run, or choose another --out",
            run.display()
        );
    } else {
        cfg.context("a config is loaded unless resuming from the saved one")?
    };
    Ok((cfg, run))
}

/// Trains (or resumes) a run; see the module documentation.
pub fn train(opts: &TrainOptions, obs: &dyn Observer) -> Result<TrainResult> {
    let (cfg, run) = settle_config(opts)?;
    crate::memory::check_training(&cfg, opts.device.device().is_some())?;
    let _lock = Lock::take(run.root(), "lock", "stagewise train")?;
    run.clean_interrupted_training()?;
    if opts.resume && run.is_complete() {
        obs.message(&format!(
            "{}: training is complete; nothing to resume",
            run.display()
        ));
        return Ok(TrainResult {
            checkpoints: run.checkpoint_steps()?.len(),
            run,
            num_steps: cfg.num_steps,
            config: cfg,
            resumed_at: None,
            last_loss: f64::NAN,
        });
    }
    let checkpoint_steps = steps_reached(&cfg.checkpointer_config.checkpoint_steps, cfg.num_steps);
    let logging_steps = steps_reached(&cfg.logging_config.logging_steps, cfg.num_steps);
    // The trainer (its buffers, on the device too) first: if it cannot be made, nothing of the
    // run is written and the fixed rerun starts clean.
    let mut trainer = opts.device.trainer(&cfg)?;
    let model = trainer.model.clone();
    if !opts.resume {
        run.write_config(&cfg)?;
        let c: Vec<u64> = checkpoint_steps.iter().copied().collect();
        let l: Vec<u64> = logging_steps.iter().copied().collect();
        run.write_schedule(&c, &l)?;
    }

    let resumed_at = if opts.resume {
        restore_newest(&run, &mut trainer, obs)?
    } else {
        None
    };

    let evaluator = trainer.evaluator();
    let mut metric_names = evaluator.metric_names();
    metric_names.push("weight/norm".into());
    let train_names = vec!["batch/loss".to_string(), "lr".to_string()];
    let (mut metrics, mut train_table) =
        open_training_tables(&run, &metric_names, &train_names, resumed_at, obs)?;
    if let Some(s) = resumed_at {
        check_rows_through(&run, s, &logging_steps)?;
    }
    let mut tb = mirror_to_tensorboard(&run, &metric_names, &train_names)?;

    let start = trainer.steps_done();
    let total = cfg.num_steps;
    obs.start(start, total, "steps");
    let mut last_loss = f64::NAN;
    let mut tables_changed = true;
    let end = opts.stop_after.map_or(total, |s| s.min(total));
    let mut next = start;
    while next < end {
        // Run up to the next step that logs, evaluates or checkpoints in one call, so that a
        // device engine runs those steps without a host round trip each.
        let t = [
            Some(next.max(1).next_multiple_of(TRAIN_LOG_EVERY)),
            logging_steps.range(next..).next().copied(),
            checkpoint_steps.range(next..).next().copied(),
            Some(end - 1),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(end - 1);
        let losses = trainer
            .run_to(t + 1)
            .with_context(|| format!("training {}", run.display()))?;
        next = t + 1;
        let loss = losses.last().copied().unwrap_or(f64::NAN);
        last_loss = loss;
        if t.is_multiple_of(TRAIN_LOG_EVERY) && t > 0 {
            let lr = trainer.schedule.lr(t);
            train_table.append(t, &[loss, lr])?;
            tables_changed = true;
            tb.scalars(t, &[("batch/loss", loss as f32), ("lr", lr as f32)])?;
        }
        if logging_steps.contains(&t) {
            let mut values = trainer.evaluate(&evaluator, t)?;
            values.push(trainer.weight_norm()?);
            metrics.append(t, &values)?;
            tables_changed = true;
            let tags: Vec<(&str, f32)> = metric_names
                .iter()
                .map(String::as_str)
                .zip(values.iter().map(|v| *v as f32))
                .collect();
            tb.scalars(t, &tags)?;
            let mse = values[metric_names
                .iter()
                .position(|n| n == "pretrain/mse")
                .unwrap_or(0)];
            obs.note(&format!("eval step {t}: pretrain/mse {mse:.4}"));
        }
        if checkpoint_steps.contains(&t) {
            tb.sync()?;
            metrics.sync()?;
            train_table.sync()?;
            let state = trainer.state()?;
            save_checkpoint(&run, &model, t, &state, serde_json::to_string(&cfg)?)?;
            if std::mem::take(&mut tables_changed) {
                run.export_training_tables()?;
            }
        }
        obs.tick(t + 1, &|| format!("loss {loss:.4}"));
    }
    tb.sync()?;
    run.export_training_tables()?;
    if end == total {
        run.mark_complete(total)?;
    }
    obs.finish();
    Ok(TrainResult {
        checkpoints: run.checkpoint_steps()?.len(),
        run,
        config: cfg,
        resumed_at,
        num_steps: total,
        last_loss,
    })
}

/// The metrics and batch-loss tables (`step` then `names`) opened for appending, cut back to
/// `resumed_at`; a torn last line (a write cut short) is dropped and reported.
pub(crate) fn open_training_tables(
    run: &RunDir,
    metric_names: &[String],
    train_names: &[String],
    resumed_at: Option<u64>,
    obs: &dyn Observer,
) -> Result<(CsvTable, CsvTable)> {
    let header = |names: &[String]| -> Vec<String> {
        std::iter::once("step".to_string())
            .chain(names.iter().cloned())
            .collect()
    };
    let metrics = run.metrics_log(&header(metric_names), resumed_at)?;
    let train_table = run.train_log(&header(train_names), resumed_at)?;
    for t in [&metrics, &train_table] {
        if let Some(line) = t.torn_line() {
            obs.message(&format!(
                "{}: dropped the torn last line {line:?} (a write cut short)",
                t.location()
            ));
        }
    }
    Ok((metrics, train_table))
}

/// A fresh TensorBoard file mirroring the (possibly cut back) tables.
pub(crate) fn mirror_to_tensorboard(
    run: &RunDir,
    metric_names: &[String],
    train_names: &[String],
) -> Result<Events> {
    let mut tb = run.fresh_events()?;
    for (table, names) in [
        (run.metrics()?, metric_names),
        (run.train_table()?, train_names),
    ] {
        for row in table.map(|t| t.rows).unwrap_or_default() {
            let tags: Vec<(&str, f32)> = names
                .iter()
                .map(String::as_str)
                .zip(row[1..].iter().map(|v| *v as f32))
                .collect();
            tb.scalars(row[0] as u64, &tags)?;
        }
    }
    Ok(tb)
}

/// Checkpoint `step`: the optimizer state first, then the weights (whose presence marks the
/// step resumable), then older optimizer states pruned.
pub(crate) fn save_checkpoint(
    run: &RunDir,
    model: &dyn stagewise_models::StateDict,
    step: u64,
    state: &TrainState<f32>,
    config_json: String,
) -> Result<()> {
    run.write_optimizer(model, step, state)?;
    let meta = CheckpointMeta { step, config_json };
    run.write_checkpoint(model, &state.params, &meta)?;
    run.prune_optimizer_states(OPTIMIZER_STATES_KEPT)
}

/// Restores the newest checkpoint and its optimizer state; `None` when there is none. The newest
/// checkpoint must be complete: writes are atomic, so an unreadable file means outside damage,
/// and guessing past it could silently drop work. Stop and say so.
fn restore_newest(
    run: &RunDir,
    trainer: &mut stagewise_train::Trainer<f32>,
    obs: &dyn Observer,
) -> Result<Option<u64>> {
    let model = trainer.model.clone();
    let Some((step, state)) = newest_state(run, &model, obs)? else {
        return Ok(None);
    };
    trainer.restore(state)?;
    Ok(Some(step))
}

/// The newest checkpoint's weights and optimizer state, checked against each other, for any
/// model; `None` (and a message) when the run has no checkpoint.
pub(crate) fn newest_state(
    run: &RunDir,
    model: &dyn stagewise_models::StateDict,
    obs: &dyn Observer,
) -> Result<Option<(u64, TrainState<f32>)>> {
    let Some(&step) = run.checkpoint_steps()?.last() else {
        obs.message(&format!(
            "no checkpoint in {}; starting from step 0",
            run.checkpoints_location()
        ));
        return Ok(None);
    };
    // Resuming needs a checkpoint and its optimizer state; only the newest few states are kept.
    let checkpoints = run.checkpoint_steps()?;
    let fallback = run
        .optimizer_steps()?
        .into_iter()
        .filter(|s| *s < step && checkpoints.contains(s))
        .max();
    let hint = || match fallback {
        Some(prev) => format!(
            "cannot resume from checkpoint {step}; move {} away to resume from checkpoint {prev}, which has its optimizer state",
            run.checkpoint_location(step)
        ),
        None => format!(
            "cannot resume from checkpoint {step}, and no earlier checkpoint has its optimizer state (the newest {OPTIMIZER_STATES_KEPT} are kept): this run cannot resume; train it again from step 0 into a new folder"
        ),
    };
    let (params, meta) = run.read_checkpoint(model, step).with_context(hint)?;
    let (m, v, steps_done) = run.read_optimizer(model, step).with_context(hint)?;
    if meta.step != step || steps_done != step + 1 {
        bail!(
            "{}: metadata says step {} after {steps_done} updates, but the file name says step {step}",
            run.checkpoint_location(step),
            meta.step
        );
    }
    obs.message(&format!(
        "resuming {} after step {step} ({} updates done)",
        run.display(),
        step + 1
    ));
    Ok(Some((
        step,
        TrainState {
            params,
            exp_avg: m,
            exp_avg_sq: v,
            steps_done,
        },
    )))
}

/// The checkpoint at step `s` implies every table row through `s`: a row missing there is lost
/// work (a damaged table), which resuming cannot recompute.
fn check_rows_through(run: &RunDir, s: u64, logging_steps: &BTreeSet<u64>) -> Result<()> {
    let logged: Vec<u64> = logging_steps.range(..=s).copied().collect();
    let trained: Vec<u64> = (1..=s / TRAIN_LOG_EVERY)
        .map(|i| i * TRAIN_LOG_EVERY)
        .collect();
    for (table, location, expected) in [
        (run.metrics()?, run.metrics_location(), logged),
        (run.train_table()?, run.train_location(), trained),
    ] {
        let have: Vec<u64> = table
            .map(|t| t.rows.iter().map(|r| r[0] as u64).collect())
            .unwrap_or_default();
        if let Some(missing) = expected.iter().find(|t| !have.contains(t)) {
            bail!(
                "{location}: no row for step {missing}, which checkpoint {s} implies (the table was damaged); restore it from a copy, resuming cannot recompute it"
            );
        }
    }
    Ok(())
}
