//! What one task of a sweep is: a training run, or an LLC estimate over a trained run's
//! checkpoints (the reference's analysis and calibration sweeps), with every config resolved
//! and the run named as the reference names it.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stagewise_sampling::config::SamplerConfig;
use stagewise_train::TrainConfig;
use stagewise_train::parity::ParityTrainConfig;
use stagewise_train::steps::StepsSpec;

use crate::naming::{hash6, run_name};
use crate::spec::{Axis, SweepFile};

/// Which of the reference's sweep kinds a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `sweeps/regression/training-runs/*.yaml`: one training run per task.
    Train,
    /// `sweeps/regression/analysis/*.yaml` (`sampler_config` + `steps`): the LLC over a run's
    /// checkpoints.
    Llc,
    /// `sweeps/regression/calibration/*.yaml` (`sampler_config` + `step`): the LLC of one
    /// sampler setting at the listed checkpoints. The reference runs each (setting, step) as a
    /// W&B run; here a task is one setting at all its steps (its chains at every checkpoint
    /// share one sampler folder and, on a device, one launch).
    Calibrate,
    /// `sweeps/parity/parity.yaml` (a config with `num_task_bits`): one multitask sparse
    /// parity run per task.
    Parity,
}

/// Top-level keys of an analysis sweep that are not training config.
const ANALYSIS_KEYS: &[&str] = &["sampler_config", "steps", "step", "plotting_config"];

/// One fully resolved task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub index: usize,
    pub sweep: String,
    pub kind: Kind,
    /// The swept values of this task (dotted paths).
    pub params: Map<String, Value>,
    /// The training run's folder name (the reference's run name).
    pub run: String,
    /// Regression tasks: the training config (`None` for a parity task).
    pub train: Option<TrainConfig>,
    /// Parity tasks: the run's config.
    pub parity: Option<ParityTrainConfig>,
    /// `task_config` as the sweep gave it (what the run name hashes).
    pub raw_task_config: Value,
    /// LLC tasks: the sampler and the name of its folder under `RUN/llc/`.
    pub sampler: Option<SamplerConfig>,
    pub sampler_name: Option<String>,
    /// LLC tasks: the checkpoints to sample (`None`: every checkpoint of the run).
    pub steps: Option<StepsSpec>,
}

/// A sweep file with its kind: the tasks it expands to.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub file: SweepFile,
    pub kind: Kind,
    /// Calibration: the checkpoints every task samples (the file's `step` values).
    calibration_steps: Option<Vec<Value>>,
    /// Whether the sampler config changes between tasks (then each setting has its own folder).
    sampler_varies: bool,
}

impl Sweep {
    pub fn new(mut file: SweepFile) -> Result<Self> {
        let origin = file.origin.clone();
        let top = file.template.as_object().cloned().unwrap_or_default();
        let kind = if top.contains_key("num_task_bits") {
            for k in ANALYSIS_KEYS {
                if top.contains_key(*k) {
                    bail!("{origin}: `{k}` in a parity sweep: parity sweeps train runs only");
                }
            }
            Kind::Parity
        } else if top.contains_key("sampler_config") {
            match (top.contains_key("steps"), top.contains_key("step")) {
                (true, true) => bail!(
                    "{origin}: give `steps` (LLC over time) or `step` (calibration), not both"
                ),
                (_, true) => Kind::Calibrate,
                _ => Kind::Llc,
            }
        } else {
            for k in ANALYSIS_KEYS {
                if top.contains_key(*k) {
                    bail!(
                        "{origin}: `{k}` without `sampler_config`: an LLC sweep needs its sampler"
                    );
                }
            }
            Kind::Train
        };
        let mut calibration_steps = None;
        if kind == Kind::Calibrate {
            match file.axes.iter().position(|(p, _)| p == "step") {
                Some(i) => match file.axes.remove(i).1 {
                    Axis::Values(v, _) => calibration_steps = Some(v),
                    Axis::Dist(_) => bail!("{origin}: `step` must be a value or a list of values"),
                },
                None => calibration_steps = Some(vec![top["step"].clone()]),
            }
        }
        let sampler_varies = file
            .axes
            .iter()
            .any(|(p, _)| p.starts_with("sampler_config."));
        let sweep = Sweep {
            file,
            kind,
            calibration_steps,
            sampler_varies,
        };
        // Every task must resolve: bad values are found before anything runs.
        for i in 0..sweep.len() {
            sweep.task(i)?;
        }
        Ok(sweep)
    }

    pub fn len(&self) -> usize {
        self.file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn name(&self) -> &str {
        &self.file.name
    }

    /// Task `index`, resolved and validated.
    pub fn task(&self, index: usize) -> Result<Task> {
        let n = self.len();
        if index >= n {
            bail!(
                "{}: task index {index} is out of range: the sweep has {n} tasks (0..{n})",
                self.file.origin
            );
        }
        let origin = format!("{} (task {index})", self.file.origin);
        let doc = self.file.resolve(index)?;
        let params: Map<String, Value> = self.file.choice(index).into_iter().collect();
        if self.kind == Kind::Parity {
            let config = stagewise_io::config::typed_as(doc, &origin, ParityTrainConfig::validate)?;
            let run = stagewise_pipeline::parity::model_id(&config);
            stagewise_pipeline::rundir::check_name(&format!("{origin}: the run name"), &run)?;
            return Ok(Task {
                index,
                sweep: self.name().to_string(),
                kind: self.kind,
                params,
                run,
                train: None,
                parity: Some(config),
                raw_task_config: Value::Null,
                sampler: None,
                sampler_name: None,
                steps: None,
            });
        }
        let Value::Object(mut top) = doc else {
            unreachable!("a sweep's parameters are a mapping")
        };
        let sampler_doc = top.remove("sampler_config");
        let steps_doc = top.remove("steps");
        top.remove("step");
        top.remove("plotting_config");
        let raw_task_config = top.get("task_config").cloned().unwrap_or(Value::Null);
        let loaded = stagewise_io::config::resolve(Value::Object(top), &origin, &[], None)?;
        let train = loaded.config;
        let run = run_name(&raw_task_config, &train);
        let (sampler, sampler_name, steps) = match self.kind {
            Kind::Train | Kind::Parity => (None, None, None),
            Kind::Llc | Kind::Calibrate => {
                let doc = sampler_doc.unwrap_or(Value::Object(Map::new()));
                let config = sampler_config(&doc, &origin)?;
                config
                    .sgld()
                    .map_err(|e| anyhow::anyhow!("{origin}: sampler_config.{e}"))?;
                let name = if self.sampler_varies {
                    format!("{}-{}", self.name(), hash6(&serde_json::to_value(&config)?))
                } else {
                    self.name().to_string()
                };
                let steps = match self.kind {
                    Kind::Calibrate => {
                        let list = self.calibration_steps.clone().unwrap_or_default();
                        Some(steps_spec(&Value::Array(list), &origin, "step")?)
                    }
                    _ => match steps_doc {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(steps_spec(&v, &origin, "steps")?),
                    },
                };
                (Some(config), Some(name), steps)
            }
        };
        stagewise_pipeline::rundir::check_name(&format!("{origin}: the run name"), &run)?;
        if let Some(n) = &sampler_name {
            stagewise_pipeline::rundir::check_name(&format!("{origin}: the sampler folder"), n)?;
        }
        Ok(Task {
            index,
            sweep: self.name().to_string(),
            kind: self.kind,
            params,
            run,
            train: Some(train),
            parity: None,
            raw_task_config,
            sampler,
            sampler_name,
            steps,
        })
    }
}

fn sampler_config(doc: &Value, origin: &str) -> Result<SamplerConfig> {
    let text = serde_json::to_string(doc)?;
    stagewise_io::config::plain_from_text(&text, &format!("{origin}: sampler_config"), &[])
        .map_err(Into::into)
}

fn steps_spec(v: &Value, origin: &str, key: &str) -> Result<StepsSpec> {
    let mut v = v.clone();
    if let Value::Array(a) = &mut v {
        for x in a.iter_mut() {
            if let Some(f) = x.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0) {
                *x = Value::from(f as u64);
            }
        }
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrap {
        steps: StepsSpec,
    }
    let text = serde_json::to_string(&serde_json::json!({ "steps": v }))?;
    stagewise_io::config::plain_from_text::<Wrap>(&text, &format!("{origin}: {key}"), &[])
        .map(|w| w.steps)
        .with_context(|| {
            format!("{origin}: `{key}`: expected a list of steps or log_space / linear_space")
        })
}
