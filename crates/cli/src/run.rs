//! A training run on disk:
//!
//! ```text
//! runs/<name>/config.yaml                    resolved config
//! runs/<name>/schedule.json                  checkpoint and logging steps
//! runs/<name>/checkpoints/<step>.safetensors model state dict (PyTorch names and shapes)
//! runs/<name>/optimizer/<step>.safetensors   Adam moments (the two newest checkpoints)
//! runs/<name>/metrics.csv, metrics.parquet  evaluations at the logging steps
//! runs/<name>/train.csv, train.parquet      batch loss and lr every 100 steps
//! runs/<name>/events.out.tfevents.*          TensorBoard scalars (both tables)
//! ```
//!
//! The CSV tables are the append-only log; their Parquet copies are rewritten at checkpoints
//! and at the end. Step `t`'s evaluation and table rows are written before its checkpoint, so a checkpoint
//! implies its rows; `--resume` restores the last complete checkpoint, cuts the tables back to
//! it and continues, giving the same weights and rows as an uninterrupted run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use stagewise_io::atomic::write_atomic;
use stagewise_io::checkpoint::{self, CheckpointMeta};
use stagewise_io::config::{LoadedConfig, load_train_config, resolve, to_yaml};
use stagewise_io::table::{CsvTable, read_csv};
use stagewise_io::tensorboard::EventWriter;
use stagewise_train::TrainConfig;
use stagewise_train::trainer::TrainState;

use crate::TrainArgs;
use crate::progress::Progress;

/// The built-in default config.
pub const QUICK_YAML: &str = include_str!("../../../configs/quick.yaml");

const TRAIN_LOG_EVERY: u64 = 100;

fn load(args: &TrainArgs) -> Result<(LoadedConfig, String)> {
    match &args.config {
        Some(path) => {
            let loaded = load_train_config(path, &args.sets, args.sweep_index)?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into());
            let name = match (loaded.grid_size, args.sweep_index) {
                (g, Some(i)) if g > 1 => format!("{stem}-{i}"),
                _ => stem,
            };
            Ok((loaded, name))
        }
        None => {
            let doc = stagewise_io::config::parse_yaml(QUICK_YAML)
                .map_err(|e| anyhow::anyhow!("built-in config: {e}"))?;
            Ok((
                resolve(doc, "built-in quick config", &args.sets, args.sweep_index)?,
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

fn steps_reached(spec: &stagewise_train::steps::StepsSpec, n: u64) -> BTreeSet<u64> {
    spec.expand(n).into_iter().filter(|s| *s < n).collect()
}

pub fn train(args: &TrainArgs) -> Result<()> {
    // A missing GPU is reported before anything is written.
    let dev = crate::device::open(args.device)?;
    // `--resume` with neither CONFIG nor --set continues with the run folder's own config.
    let saved_only = args.resume && args.config.is_none() && args.sets.is_empty();
    let (cfg, name) = if saved_only {
        (None, "quick".to_string())
    } else {
        let (loaded, name) = load(args)?;
        (Some(loaded.config), name)
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&name));
    let config_path = out.join("config.yaml");
    let exists_nonempty = out
        .read_dir()
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    let cfg = if args.resume {
        let text = std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "--resume: cannot read {}; is {} a stagewise run folder?",
                config_path.display(),
                out.display()
            )
        })?;
        let saved: TrainConfig = stagewise_io::config::parse_plain(&text, &config_path)?;
        if let Some(cfg) = cfg.filter(|c| *c != saved) {
            let diff = first_difference(
                &serde_json::to_value(&saved)?,
                &serde_json::to_value(&cfg)?,
                "",
            )
            .unwrap_or_else(|| "?".into());
            bail!(
                "--resume: the config differs from the run's {} at `{diff}`; pass the same config and --set values, or neither",
                config_path.display()
            );
        }
        saved
    } else if exists_nonempty {
        bail!(
            "{}: output folder exists and is not empty; pass --resume to continue that run, or choose another --out",
            out.display()
        );
    } else {
        cfg.expect("a config is loaded unless resuming from the saved one")
    };
    let ckpt_dir = out.join("checkpoints");
    let opt_dir = out.join("optimizer");
    for d in [&out, &ckpt_dir, &opt_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let checkpoint_steps = steps_reached(&cfg.checkpointer_config.checkpoint_steps, cfg.num_steps);
    let logging_steps = steps_reached(&cfg.logging_config.logging_steps, cfg.num_steps);
    if !args.resume {
        write_atomic(&config_path, to_yaml(&cfg).as_bytes())?;
        let schedule = serde_json::json!({ "checkpoint_steps": checkpoint_steps, "logging_steps": logging_steps });
        write_atomic(
            &out.join("schedule.json"),
            serde_json::to_string(&schedule)?.as_bytes(),
        )?;
    }

    let mut trainer = crate::device::trainer(&cfg, dev)?;
    let model = trainer.model.clone();
    let mut resumed_at = None;
    if args.resume {
        // The newest checkpoint must be complete: writes are atomic, so an unreadable file means
        // outside damage, and guessing past it could silently drop work. Stop and say so.
        if let Some(&step) = checkpoint::list_steps(&ckpt_dir).last() {
            let mpath = ckpt_dir.join(format!("{step}.safetensors"));
            let opath = opt_dir.join(format!("{step}.safetensors"));
            let hint = || {
                format!(
                    "cannot resume from checkpoint {step}; move the damaged file away to resume from the previous checkpoint"
                )
            };
            let (params, meta) = checkpoint::load_model(&mpath, &model).with_context(hint)?;
            let (m, v, steps_done) =
                checkpoint::load_optimizer(&opath, &model).with_context(hint)?;
            if meta.step != step || steps_done != step + 1 {
                bail!(
                    "{}: metadata says step {} after {steps_done} updates, but the file name says step {step}",
                    mpath.display(),
                    meta.step
                );
            }
            trainer.restore(TrainState {
                params,
                exp_avg: m,
                exp_avg_sq: v,
                steps_done,
            })?;
            resumed_at = Some(step);
        }
        match resumed_at {
            Some(s) => eprintln!(
                "resuming {} after step {s} ({} updates done)",
                out.display(),
                s + 1
            ),
            None => eprintln!(
                "no checkpoint in {}; starting from step 0",
                ckpt_dir.display()
            ),
        }
    }

    let evaluator = trainer.evaluator();
    let mut metric_names = evaluator.metric_names();
    metric_names.push("weight/norm".into());
    let header = |names: &[String]| -> Vec<String> {
        std::iter::once("step".to_string())
            .chain(names.iter().cloned())
            .collect()
    };
    let train_names = vec!["batch/loss".to_string(), "lr".to_string()];
    let metrics_path = out.join("metrics.csv");
    let train_path = out.join("train.csv");
    let mut metrics = CsvTable::open(&metrics_path, &header(&metric_names), resumed_at)
        .with_context(|| format!("cannot open {}", metrics_path.display()))?;
    let mut train_table = CsvTable::open(&train_path, &header(&train_names), resumed_at)
        .with_context(|| format!("cannot open {}", train_path.display()))?;
    let mut tb = open_events(
        &out,
        &[(&metrics_path, &metric_names), (&train_path, &train_names)],
    )?;

    let start = trainer.steps_done();
    let total = cfg.num_steps;
    let progress = Progress::new(start, total, "steps");
    let mut last_loss = f64::NAN;
    let mut tables_changed = true;
    let mut next = start;
    while next < total {
        // Run up to the next step that logs, evaluates or checkpoints in one call, so that a
        // device engine runs those steps without a host round trip each.
        let t = [
            Some(next.max(1).next_multiple_of(TRAIN_LOG_EVERY)),
            logging_steps.range(next..).next().copied(),
            checkpoint_steps.range(next..).next().copied(),
            Some(total - 1),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("total - 1 is a candidate");
        let losses = trainer
            .run_to(t + 1)
            .with_context(|| format!("training {}", out.display()))?;
        next = t + 1;
        let loss = *losses.last().expect("at least one step");
        last_loss = loss;
        if t % TRAIN_LOG_EVERY == 0 && t > 0 {
            let lr = trainer.schedule.lr(t);
            train_table.append(t, &[loss, lr])?;
            tables_changed = true;
            tb.scalars(t, &[("batch/loss", loss as f32), ("lr", lr as f32)])?;
        }
        if logging_steps.contains(&t) {
            let mut values = trainer.evaluate(&evaluator, t)?;
            values.push(trainer.weight_norm());
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
            progress.note(&format!("eval step {t}: pretrain/mse {mse:.4}"));
        }
        if checkpoint_steps.contains(&t) {
            tb.flush()?;
            metrics.sync()?;
            train_table.sync()?;
            let state = trainer.state();
            checkpoint::save_optimizer(&opt_dir.join(format!("{t}.safetensors")), &model, &state)?;
            let meta = CheckpointMeta {
                step: t,
                config_json: serde_json::to_string(&cfg)?,
            };
            checkpoint::save_model(
                &ckpt_dir.join(format!("{t}.safetensors")),
                &model,
                &state.params,
                &meta,
            )?;
            prune_optimizer_states(&opt_dir)?;
            if std::mem::take(&mut tables_changed) {
                export_parquet(&[&metrics_path, &train_path])?;
            }
        }
        progress.tick(t + 1, || format!("loss {loss:.4}"));
    }
    tb.flush()?;
    export_parquet(&[&metrics_path, &train_path])?;
    progress.finish();
    let last = if last_loss.is_finite() {
        format!("last batch loss {last_loss:.4}")
    } else {
        "nothing left to train".into()
    };
    eprintln!(
        "done: {} steps, {last}; {} checkpoints in {}, metrics in {}",
        total,
        checkpoint::list_steps(&ckpt_dir).len(),
        ckpt_dir.display(),
        metrics_path.display()
    );
    Ok(())
}

fn export_parquet(tables: &[&Path]) -> Result<()> {
    for csv in tables {
        stagewise_tables::csv_to_parquet(csv)
            .with_context(|| format!("cannot write the Parquet copy of {}", csv.display()))?;
    }
    Ok(())
}

/// Optimizer states kept: resuming needs the newest; the one before covers a damaged newest
/// checkpoint. Older ones would cost as much disk as the model checkpoints themselves.
const OPTIMIZER_STATES_KEPT: usize = 2;

fn prune_optimizer_states(opt_dir: &Path) -> Result<()> {
    let steps = checkpoint::list_steps(opt_dir);
    for step in &steps[..steps.len().saturating_sub(OPTIMIZER_STATES_KEPT)] {
        let path = opt_dir.join(format!("{step}.safetensors"));
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

/// A fresh TensorBoard file mirroring the (possibly cut back) tables; older event files are
/// removed so that TensorBoard never shows rows from beyond a resumed checkpoint.
fn open_events(out: &Path, tables: &[(&Path, &Vec<String>)]) -> Result<EventWriter> {
    for e in std::fs::read_dir(out)?.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
        {
            std::fs::remove_file(e.path())?;
        }
    }
    let mut tb = EventWriter::create(out)?;
    for (path, names) in tables {
        let (_, rows) = read_csv(path)?;
        for row in rows {
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
