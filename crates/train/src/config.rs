//! The training configuration, with the reference's field names (`RegressionConfig`) and
//! defaults. Unknown fields are errors.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stagewise_models::RegressionConfig;

use crate::data::{SequenceDistribution, TaskDistribution};
use crate::schedule::{Anneal, LrSchedule};
use crate::steps::StepsSpec;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field} = {value}: {expected}")]
pub struct ConfigError {
    pub field: String,
    pub value: String,
    pub expected: String,
}

pub(crate) fn invalid(field: &str, value: impl ToString, expected: impl ToString) -> ConfigError {
    ConfigError {
        field: field.into(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// M: `inf` (Gaussian tasks) or a positive number of discrete tasks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NumTasks {
    Infinite,
    Finite(u64),
}

impl Serialize for NumTasks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NumTasks::Infinite => s.serialize_str("inf"),
            NumTasks::Finite(m) => s.serialize_u64(*m),
        }
    }
}

impl<'de> Deserialize<'de> for NumTasks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Str(String),
        }
        let bad = |v: String| {
            serde::de::Error::custom(format!(
                "num_tasks = {v}: expected \"inf\" or a positive integer"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::Int(0) => Err(bad("0".into())),
            Raw::Int(m) => Ok(NumTasks::Finite(m)),
            Raw::Float(f) if f.is_infinite() && f > 0.0 => Ok(NumTasks::Infinite),
            Raw::Float(f) if f >= 1.0 && f.fract() == 0.0 && f < 9e15 => {
                Ok(NumTasks::Finite(f as u64))
            }
            Raw::Float(f) => Err(bad(f.to_string())),
            Raw::Str(s) if s == "inf" || s == ".inf" => Ok(NumTasks::Infinite),
            Raw::Str(s) => Err(bad(format!("{s:?}"))),
        }
    }
}

fn d_task_size() -> usize {
    8
}
fn d_max_examples() -> usize {
    16
}
fn d_noise_variance() -> f64 {
    0.25
}
fn d_width() -> usize {
    128
}
fn d_num_heads() -> usize {
    2
}
fn d_num_layers() -> usize {
    8
}
fn d_model_seed() -> Option<u64> {
    Some(0)
}
fn d_pretrain_seed() -> Option<u64> {
    Some(1)
}
fn d_true_seed() -> Option<u64> {
    Some(2)
}
fn d_sampling_seed() -> Option<u64> {
    Some(3)
}
fn d_true() -> bool {
    true
}
fn d_num_steps() -> u64 {
    500_000
}
fn d_batch_size() -> usize {
    256
}
fn d_eval_batch_size() -> usize {
    2048
}
pub(crate) fn d_lr() -> f64 {
    1e-3
}
pub(crate) fn d_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn d_adam() -> String {
    "Adam".into()
}
fn d_onecycle() -> String {
    "OneCycleLR".into()
}
fn d_pct_start() -> f64 {
    0.5
}
fn d_linear() -> Anneal {
    Anneal::Linear
}
fn d_steps() -> StepsSpec {
    StepsSpec::log_linear(100, 100)
}
fn d_scheduler() -> Option<SchedulerConfig> {
    Some(SchedulerConfig::default())
}

/// `RegressionTaskConfig`: data and model (class defaults of the reference).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    #[serde(default = "d_task_size")]
    pub task_size: usize,
    #[serde(default = "d_max_examples")]
    pub max_examples: usize,
    pub num_tasks: NumTasks,
    #[serde(default = "d_noise_variance")]
    pub noise_variance: f64,
    #[serde(default = "d_width")]
    pub embed_size: usize,
    #[serde(default = "d_width")]
    pub mlp_size: usize,
    #[serde(default = "d_num_heads")]
    pub num_heads: usize,
    #[serde(default = "d_num_layers")]
    pub num_layers: usize,
    #[serde(default = "d_model_seed")]
    pub model_seed: Option<u64>,
    #[serde(default = "d_pretrain_seed")]
    pub pretrain_seed: Option<u64>,
    #[serde(default = "d_true_seed")]
    pub true_seed: Option<u64>,
    #[serde(default = "d_sampling_seed")]
    pub sampling_seed: Option<u64>,
    #[serde(default = "d_true")]
    pub layer_norm: bool,
    #[serde(default)]
    pub include_output: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    #[serde(default = "d_adam")]
    pub optimizer_type: String,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_betas")]
    pub betas: [f64; 2],
    #[serde(default)]
    pub weight_decay: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            optimizer_type: d_adam(),
            lr: d_lr(),
            betas: d_betas(),
            weight_decay: 0.0,
        }
    }
}

impl OptimizerConfig {
    /// The checks every optimizer config gets: lr positive and finite, betas in [0, 1),
    /// weight decay >= 0.
    pub fn validate_numbers(&self) -> Result<(), ConfigError> {
        let o = self;
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return Err(invalid(
                "optimizer_config.lr",
                o.lr,
                "expected a positive number",
            ));
        }
        for (i, b) in o.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(invalid(
                    &format!("optimizer_config.betas[{i}]"),
                    b,
                    "expected a value in [0, 1)",
                ));
            }
        }
        if !(o.weight_decay >= 0.0) {
            return Err(invalid(
                "optimizer_config.weight_decay",
                o.weight_decay,
                "expected a value >= 0",
            ));
        }
        Ok(())
    }
}

/// `OneCycleLR` settings; unset values take the reference's derived defaults
/// (`max_lr` = optimizer lr, `total_steps` = num_steps, both div factors = num_steps/2 - 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    #[serde(default = "d_onecycle")]
    pub scheduler_type: String,
    #[serde(default)]
    pub max_lr: Option<f64>,
    #[serde(default)]
    pub total_steps: Option<u64>,
    #[serde(default = "d_pct_start")]
    pub pct_start: f64,
    #[serde(default = "d_linear")]
    pub anneal_strategy: Anneal,
    #[serde(default)]
    pub div_factor: Option<f64>,
    #[serde(default)]
    pub final_div_factor: Option<f64>,
    #[serde(default)]
    pub cycle_momentum: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_type: d_onecycle(),
            max_lr: None,
            total_steps: None,
            pct_start: d_pct_start(),
            anneal_strategy: Anneal::Linear,
            div_factor: None,
            final_div_factor: None,
            cycle_momentum: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointerConfig {
    #[serde(default = "d_steps")]
    pub checkpoint_steps: StepsSpec,
}

impl Default for CheckpointerConfig {
    fn default() -> Self {
        CheckpointerConfig {
            checkpoint_steps: d_steps(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default = "d_steps")]
    pub logging_steps: StepsSpec,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            logging_steps: d_steps(),
        }
    }
}

/// A whole training run (`RegressionConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub task_config: TaskConfig,
    #[serde(default = "d_num_steps")]
    pub num_steps: u64,
    #[serde(default = "d_batch_size")]
    pub batch_size: usize,
    #[serde(default = "d_eval_batch_size")]
    pub eval_batch_size: usize,
    #[serde(default)]
    pub optimizer_config: OptimizerConfig,
    #[serde(default = "d_scheduler")]
    pub scheduler_config: Option<SchedulerConfig>,
    #[serde(default)]
    pub checkpointer_config: CheckpointerConfig,
    #[serde(default)]
    pub logging_config: LoggingConfig,
}

/// The seeds each random stream uses, after the reference's fallbacks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EffectiveSeeds {
    pub model: u64,
    pub pretrain: u64,
    pub eval: u64,
    pub sampling: u64,
}

impl TrainConfig {
    pub fn model_config(&self) -> RegressionConfig {
        let t = &self.task_config;
        RegressionConfig {
            task_size: t.task_size,
            max_examples: t.max_examples,
            embed_size: t.embed_size,
            mlp_size: t.mlp_size,
            num_heads: t.num_heads,
            num_layers: t.num_layers,
            layer_norm: t.layer_norm,
            include_output: t.include_output,
        }
    }

    /// Checks every value a run depends on; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model_config().validate().map_err(|e| match e {
            stagewise_models::ModelError::Invalid {
                field,
                value,
                expected,
            } => invalid(&format!("task_config.{field}"), value, expected),
            other => invalid("task_config", "", other),
        })?;
        let t = &self.task_config;
        if !(t.noise_variance >= 0.0 && t.noise_variance.is_finite()) {
            return Err(invalid(
                "task_config.noise_variance",
                t.noise_variance,
                "expected a finite value >= 0",
            ));
        }
        if let NumTasks::Finite(m) = t.num_tasks
            && m > 1 << 26
        {
            return Err(invalid(
                "task_config.num_tasks",
                m,
                "expected at most 2^26 discrete tasks (or \"inf\")",
            ));
        }
        if self.num_steps == 0 || self.num_steps > u32::MAX as u64 {
            return Err(invalid(
                "num_steps",
                self.num_steps,
                "expected 1..=4294967295",
            ));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch_size", 0, "expected a positive integer"));
        }
        if self.eval_batch_size == 0 {
            return Err(invalid("eval_batch_size", 0, "expected a positive integer"));
        }
        let o = &self.optimizer_config;
        if o.optimizer_type != "Adam" {
            return Err(invalid(
                "optimizer_config.optimizer_type",
                &o.optimizer_type,
                "only \"Adam\" is supported",
            ));
        }
        o.validate_numbers()?;
        if let Some(s) = &self.scheduler_config {
            if s.scheduler_type != "OneCycleLR" {
                return Err(invalid(
                    "scheduler_config.scheduler_type",
                    &s.scheduler_type,
                    "only \"OneCycleLR\" is supported",
                ));
            }
            if !(s.pct_start > 0.0 && s.pct_start < 1.0) {
                return Err(invalid(
                    "scheduler_config.pct_start",
                    s.pct_start,
                    "expected a value in (0, 1)",
                ));
            }
            // PyTorch's OneCycleLR divides by these; where one is zero it raises (here the
            // learning rate would be NaN and training would stop as diverged).
            let half = self.num_steps as f64 / 2.0 - 1.0;
            for (field, v) in [
                ("scheduler_config.div_factor", s.div_factor.unwrap_or(half)),
                (
                    "scheduler_config.final_div_factor",
                    s.final_div_factor.unwrap_or(half),
                ),
            ] {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(invalid(
                        field,
                        v,
                        "expected a positive value (unset, it is num_steps / 2 - 1, as in the reference: num_steps must then be above 2)",
                    ));
                }
            }
            let total = s.total_steps.unwrap_or(self.num_steps) as f64;
            if s.pct_start * total - 1.0 == 0.0 || total <= 1.0 {
                return Err(invalid(
                    "scheduler_config.pct_start",
                    s.pct_start,
                    format!(
                        "with total_steps {total}, OneCycleLR's warm-up or annealing phase is empty (PyTorch divides by zero); use more steps"
                    ),
                ));
            }
            if s.cycle_momentum {
                return Err(invalid(
                    "scheduler_config.cycle_momentum",
                    true,
                    "only false is supported (Adam without momentum cycling)",
                ));
            }
            if let Some(ts) = s.total_steps
                && ts < self.num_steps
            {
                return Err(invalid(
                    "scheduler_config.total_steps",
                    ts,
                    format!("expected at least num_steps = {}", self.num_steps),
                ));
            }
            for (name, v) in [
                ("max_lr", s.max_lr),
                ("div_factor", s.div_factor),
                ("final_div_factor", s.final_div_factor),
            ] {
                if let Some(v) = v
                    && !(v > 0.0 && v.is_finite())
                {
                    return Err(invalid(
                        &format!("scheduler_config.{name}"),
                        v,
                        "expected a positive number",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The pretraining sequence distribution (discrete tasks drawn from the pretrain seed).
    pub fn pretrain_distribution(&self) -> SequenceDistribution {
        let t = &self.task_config;
        let tasks = match t.num_tasks {
            NumTasks::Infinite => TaskDistribution::Gaussian { d: t.task_size },
            NumTasks::Finite(m) => {
                TaskDistribution::discrete(t.task_size, m as usize, self.seeds().pretrain)
            }
        };
        SequenceDistribution {
            tasks,
            k: t.max_examples,
            noise_variance: t.noise_variance,
        }
    }

    pub fn lr_schedule(&self) -> LrSchedule {
        match &self.scheduler_config {
            None => LrSchedule::Constant(self.optimizer_config.lr),
            Some(s) => {
                let half = self.num_steps as f64 / 2.0 - 1.0;
                LrSchedule::one_cycle(
                    s.max_lr.unwrap_or(self.optimizer_config.lr),
                    s.total_steps.unwrap_or(self.num_steps),
                    s.pct_start,
                    s.anneal_strategy,
                    s.div_factor.unwrap_or(half),
                    s.final_div_factor.unwrap_or(half),
                )
            }
        }
    }

    /// Seeds with the reference's fallbacks: unset seeds follow `model_seed` (each stream keeps
    /// its own tag, so they stay independent); `sampling_seed` unset with `pretrain_seed` set
    /// is `pretrain_seed * num_steps`, as in the reference.
    pub fn seeds(&self) -> EffectiveSeeds {
        let t = &self.task_config;
        let model = t.model_seed.unwrap_or(0);
        let sampling = match (t.sampling_seed, t.pretrain_seed) {
            (Some(s), _) => s,
            (None, Some(p)) => p.wrapping_mul(self.num_steps),
            (None, None) => model,
        };
        EffectiveSeeds {
            model,
            pretrain: t.pretrain_seed.unwrap_or(model),
            eval: t.true_seed.unwrap_or(model),
            sampling,
        }
    }

    /// The reference's L2H4 M = infinity run: `max_examples` 8 (paper) or 16 (current).
    pub fn l2h4(max_examples: usize, model_seed: u64) -> Self {
        TrainConfig {
            task_config: TaskConfig {
                task_size: 4,
                max_examples,
                num_tasks: NumTasks::Infinite,
                noise_variance: 0.125,
                embed_size: 64,
                mlp_size: 64,
                num_heads: 4,
                num_layers: 2,
                model_seed: Some(model_seed),
                pretrain_seed: None,
                true_seed: None,
                sampling_seed: None,
                layer_norm: true,
                include_output: true,
            },
            num_steps: 500_000,
            batch_size: 256,
            eval_batch_size: 1024,
            optimizer_config: OptimizerConfig {
                lr: 0.003,
                ..OptimizerConfig::default()
            },
            scheduler_config: Some(SchedulerConfig::default()),
            checkpointer_config: CheckpointerConfig {
                checkpoint_steps: StepsSpec::log_linear(
                    100,
                    if max_examples == 8 { 100 } else { 10_000 },
                ),
            },
            logging_config: LoggingConfig::default(),
        }
    }
}
