//! Training multitask sparse parity runs: a config (plain, or a W&B sweep grid such as the
//! reference's `sweeps/parity/parity.yaml`) becomes one run folder per grid point, named as the
//! reference names its model (`multitask-parity-{tasks}-{features}-{bits}-{hidden}-{alpha}-
//! {steps}-{lr}-{seed}`); runs of the same shapes train together, one computation per step.
//! Checkpoints (PyTorch `state_dict` names `fc1.weight` ...), `metrics.csv` with the
//! reference's `Loss`, `Accuracy`, `Loss/t`, `Accuracy/t`, TensorBoard, resume and
//! `--stop-after` work as for the other runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use stagewise_io::config::{parse_yaml, resolve_document, typed_as};
use stagewise_io::table::CsvTable;
use stagewise_models::parity::ParityMlp;
use stagewise_train::parity::{ParityRuns, ParityTrainConfig};

use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::RunDir;
use crate::train::{mirror_to_tensorboard, newest_state, open_training_tables, save_checkpoint};

mod ed;
mod indicators;
mod llc;
pub use ed::{ed_parity, task_references};
pub use indicators::indicators_parity;
pub use llc::llc_parity;

/// A trained parity run: its config and model, and the steps of `select` among its
/// checkpoints (an error when it has none).
pub(crate) fn open_parity_run(
    run: &RunDir,
    select: &crate::llc::StepSelection,
) -> Result<(ParityTrainConfig, ParityMlp, Vec<u64>)> {
    let text = run
        .config_text()?
        .with_context(|| format!("cannot read {}", run.config_location()))?;
    let cfg = load_parity_configs(&text, &run.config_location(), &[], None)?
        .into_iter()
        .next()
        .context("no config")?;
    let model = ParityMlp::new(cfg.model())?;
    let steps = crate::llc::selected_checkpoints(run, cfg.num_steps, select)?;
    Ok((cfg, model, steps))
}

/// The built-in quick parity config (`configs/parity-quick.yaml`).
pub const PARITY_QUICK_YAML: &str = include_str!("../../../configs/parity-quick.yaml");

/// What to train and where.
#[derive(Clone, Debug, Default)]
pub struct ParityTrainOptions {
    /// Config file (plain or W&B sweep YAML); `None`: the built-in quick parity config.
    pub config: Option<PathBuf>,
    /// Field overrides, `key=value`.
    pub sets: Vec<String>,
    /// Folder of the runs (default `runs`); each run is `<root>/<model id>`.
    pub root: Option<PathBuf>,
    /// One run's folder (only with a single run: a plain config or `sweep_index`).
    pub out: Option<RunDir>,
    /// Which run of a sweep grid to train (default: all of them, together).
    pub sweep_index: Option<usize>,
    /// Continue runs that have checkpoints (runs already complete are left alone); without
    /// `config`, the config saved in `out`.
    pub resume: bool,
    /// Stop each run once this many of its steps are done, as a pre-empted job would.
    pub stop_after: Option<u64>,
    /// An already resolved config (a sweep task's), used in place of `config` and `sets`.
    pub resolved: Option<ParityTrainConfig>,
}

/// What a call did for one run.
#[derive(Clone, Debug)]
pub struct ParityTrainResult {
    pub run: RunDir,
    pub config: ParityTrainConfig,
    pub resumed_at: Option<u64>,
    /// The last evaluation of this call (`Loss`, `Accuracy`, per task), if any.
    pub last: Vec<(String, f64)>,
    pub checkpoints: usize,
}

/// Whether a config document is a parity config (it has `num_task_bits`).
pub fn is_parity_config(doc: &serde_json::Value) -> bool {
    let top = doc.get("parameters").unwrap_or(doc);
    top.get("num_task_bits").is_some()
}

/// The reference's model id (`str()` of its floats: `0.5`, `1.0`, `0.003`).
pub fn model_id(c: &ParityTrainConfig) -> String {
    let py = |f: f64| {
        let s = format!("{f}");
        if s.contains(['.', 'e', 'N', 'i']) {
            s
        } else {
            format!("{s}.0")
        }
    };
    format!(
        "multitask-parity-{}-{}-{}-{}-{}-{}-{}-{}",
        c.num_tasks,
        c.num_features,
        c.num_task_bits,
        c.hidden_dim,
        py(c.alpha),
        c.num_steps,
        py(c.lr),
        c.seed
    )
}

/// Every run of a config file (or the built-in quick config): its grid points, resolved.
pub fn load_parity_configs(
    text: &str,
    origin: &str,
    sets: &[String],
    sweep_index: Option<usize>,
) -> Result<Vec<ParityTrainConfig>> {
    let doc = parse_yaml(text).map_err(|e| anyhow::anyhow!("{origin}: invalid YAML: {e}"))?;
    let one = |i: Option<usize>| -> Result<(ParityTrainConfig, usize)> {
        let (d, _, grid) = resolve_document(doc.clone(), origin, sets, i)?;
        Ok((typed_as(d, origin, ParityTrainConfig::validate)?, grid))
    };
    let (first, grid) = one(sweep_index.or(Some(0)))?;
    if sweep_index.is_some() || grid <= 1 {
        return Ok(vec![first]);
    }
    (0..grid).map(|i| Ok(one(Some(i))?.0)).collect()
}

/// The config text to train and where it came from: `opts.config`, the config saved in
/// `opts.out` when resuming without one, or the built-in quick config.
fn config_text(opts: &ParityTrainOptions) -> Result<(String, String)> {
    Ok(match (&opts.config, &opts.out, opts.resume) {
        (Some(p), _, _) => (
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
            p.display().to_string(),
        ),
        (None, Some(out), true) => (
            out.config_text()?.with_context(|| {
                format!(
                    "--resume: cannot read {}; is {} a stagewise run folder?",
                    out.config_location(),
                    out.display()
                )
            })?,
            out.config_location(),
        ),
        (None, _, _) => (
            PARITY_QUICK_YAML.to_string(),
            "built-in quick parity config".to_string(),
        ),
    })
}

/// Trains every run of the config (see the module documentation).
pub fn train_parity(
    opts: &ParityTrainOptions,
    obs: &dyn Observer,
) -> Result<Vec<ParityTrainResult>> {
    let configs = match &opts.resolved {
        Some(c) => {
            c.validate()
                .map_err(|e| anyhow::anyhow!("the resolved parity config: {e}"))?;
            vec![c.clone()]
        }
        None => {
            let (text, origin) = config_text(opts)?;
            load_parity_configs(&text, &origin, &opts.sets, opts.sweep_index)?
        }
    };
    if opts.out.is_some() && configs.len() > 1 {
        bail!(
            "--out names one run, but the config is a sweep of {} runs: give --sweep-index, or --root for all of them",
            configs.len()
        );
    }
    let root = opts.root.clone().unwrap_or_else(|| PathBuf::from("runs"));
    let mut runs = Vec::new();
    for c in &configs {
        let run = match &opts.out {
            Some(o) => o.clone(),
            None => RunDir::local(root.join(model_id(c))),
        };
        if runs
            .iter()
            .any(|(r, _): &(RunDir, _)| r.display() == run.display())
        {
            bail!(
                "two runs of the grid have the same model id {} (the id leaves out eval_batch_size, batch_size and num_checkpoints)",
                model_id(c)
            );
        }
        runs.push((run, c.clone()));
    }
    // Runs of the same shapes train together.
    let mut groups: BTreeMap<(usize, usize, usize), Vec<(RunDir, ParityTrainConfig)>> =
        BTreeMap::new();
    for (run, c) in runs {
        groups
            .entry((c.num_tasks, c.num_features, c.hidden_dim))
            .or_default()
            .push((run, c));
    }
    let mut results = Vec::new();
    for group in groups.into_values() {
        results.extend(train_group(group, opts, obs)?);
    }
    Ok(results)
}

/// One run's tables and where it stands.
struct Open {
    run: RunDir,
    _lock: Lock,
    metrics: CsvTable,
    train: CsvTable,
    tb: crate::rundir::Events,
    names: Vec<String>,
    checkpoints: Vec<u64>,
    resumed_at: Option<u64>,
    last: Vec<(String, f64)>,
    /// Steps this call may take (the run's num_steps + 1, or fewer with `stop_after`).
    end: u64,
    done: bool,
}

fn train_group(
    group: Vec<(RunDir, ParityTrainConfig)>,
    opts: &ParityTrainOptions,
    obs: &dyn Observer,
) -> Result<Vec<ParityTrainResult>> {
    let configs: Vec<ParityTrainConfig> = group.iter().map(|(_, c)| c.clone()).collect();
    let mut batch = ParityRuns::<f32>::new(&configs)?;
    let model = batch.model.clone();
    let mut open = Vec::new();
    for ((run, cfg), r) in group.iter().zip(batch.runs.iter_mut()) {
        let lock = Lock::take(run.root(), "lock", "stagewise train")?;
        run.clean_interrupted_training()?;
        let resume = opts.resume && run.has_config();
        let total = cfg.num_steps + 1;
        if resume {
            let text = run.config_text()?.unwrap_or_default();
            let saved = load_parity_configs(&text, &run.config_location(), &[], None)?;
            if saved.first() != Some(cfg) {
                bail!(
                    "{}: the run was trained with another config; resume it with its own config, or train into a new folder",
                    run.config_location()
                );
            }
        } else if run.has_config() {
            bail!(
                "{}: the run folder already has a run; --resume continues it",
                run.display()
            );
        } else {
            let yaml = serde_saphyr::to_string(cfg).context("serialising the config")?;
            run.write_config_text(&yaml)?;
            let steps = cfg.checkpoint_steps();
            run.write_schedule(&steps, &steps)?;
        }
        let mut resumed_at = None;
        if resume && !run.is_complete() {
            if let Some((step, state)) = newest_state(run, &model, obs)? {
                r.restore(state)?;
                resumed_at = Some(step);
            }
        }
        let names: Vec<String> = std::iter::once("Loss".to_string())
            .chain(std::iter::once("Accuracy".to_string()))
            .chain((0..cfg.num_tasks).flat_map(|t| [format!("Loss/{t}"), format!("Accuracy/{t}")]))
            .collect();
        let train_names = vec!["batch/loss".to_string()];
        let (metrics, train) = open_training_tables(run, &names, &train_names, resumed_at, obs)?;
        let tb = mirror_to_tensorboard(run, &names, &train_names)?;
        let done = run.is_complete();
        if done {
            obs.message(&format!(
                "{}: training is complete; nothing to resume",
                run.display()
            ));
        }
        open.push(Open {
            run: run.clone(),
            _lock: lock,
            metrics,
            train,
            tb,
            names,
            checkpoints: cfg.checkpoint_steps(),
            resumed_at,
            last: vec![],
            end: opts.stop_after.map_or(total, |s| s.min(total)),
            done,
        });
    }
    let first = batch.runs.iter().map(|r| r.step).min().unwrap_or(0);
    let last = open.iter().map(|o| o.end).max().unwrap_or(0);
    obs.message(&format!(
        "training {} parity run{} of {} parameters together",
        open.len(),
        if open.len() == 1 { "" } else { "s" },
        model.num_params()
    ));
    obs.start(first, last, "steps");
    loop {
        let active: Vec<bool> = batch
            .runs
            .iter()
            .zip(&open)
            .map(|(r, o)| !o.done && r.step < o.end)
            .collect();
        if !active.iter().any(|a| *a) {
            break;
        }
        let losses = batch.train_step_where(&active);
        let mut shown = 0;
        for (i, (r, o)) in batch.runs.iter_mut().zip(open.iter_mut()).enumerate() {
            if !active[i] {
                continue;
            }
            let t = r.step - 1;
            shown = shown.max(r.step);
            if o.checkpoints.binary_search(&t).is_ok() {
                let e = r.evaluate(&model, None);
                let values: Vec<f64> = e.metrics().into_iter().map(|(_, v)| v).collect();
                o.metrics.append(t, &values)?;
                o.train.append(t, &[losses[i]])?;
                let tags: Vec<(&str, f32)> = o
                    .names
                    .iter()
                    .map(String::as_str)
                    .zip(values.iter().map(|v| *v as f32))
                    .chain(std::iter::once(("batch/loss", losses[i] as f32)))
                    .collect();
                o.tb.scalars(t, &tags)?;
                o.tb.sync()?;
                o.metrics.sync()?;
                o.train.sync()?;
                save_checkpoint(
                    &o.run,
                    &model,
                    t,
                    &r.state(),
                    serde_json::to_string(&r.config)?,
                )?;
                o.run.export_training_tables()?;
                o.last = e.metrics();
            }
            if r.step == r.config.num_steps + 1 {
                o.run.mark_complete(r.config.num_steps)?;
                o.done = true;
            }
        }
        obs.tick(shown, &|| String::new());
    }
    obs.finish();
    let mut results = Vec::new();
    for (o, r) in open.into_iter().zip(batch.runs) {
        o.run.export_training_tables()?;
        results.push(ParityTrainResult {
            checkpoints: o.run.checkpoint_steps()?.len(),
            run: o.run,
            config: r.config,
            resumed_at: o.resumed_at,
            last: o.last,
        });
    }
    Ok(results)
}
