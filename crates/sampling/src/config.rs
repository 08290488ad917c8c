//! The sampler configuration, with the reference's `SamplerConfig` field names. The SGLD
//! hyperparameters come in one of the reference's two parametrisations (or `nbeta` directly):
//! `epsilon` + `gamma` + (`temperature` or `nbeta`), or `gradient_scale` +
//! `localization_scale` + `noise_scale`. Mixing them is an error.

use serde::{Deserialize, Serialize};

use crate::chains::{ChainConfig, EvalMethod};
use crate::sgld::{RMSPROP_ALPHA, RMSPROP_EPS, SGNHT_DIFFUSION, SamplingMethod, Sgld};

fn d_chains() -> usize {
    8
}
fn d_draws() -> usize {
    500
}
fn d_one() -> usize {
    1
}
fn d_batch() -> usize {
    1024
}
fn d_alpha() -> f64 {
    RMSPROP_ALPHA
}
fn d_rms_eps() -> f64 {
    RMSPROP_EPS
}
fn d_diffusion() -> f64 {
    SGNHT_DIFFUSION
}
fn d_eval_loss_fn() -> String {
    "mse".into()
}
fn d_include() -> Vec<String> {
    vec!["**".into()]
}
fn d_n() -> usize {
    1 << 20
}
fn d_metrics() -> Vec<String> {
    vec!["likelihood-derived".into()]
}
fn d_num_evals() -> usize {
    5
}

/// Where the SGLD gradient's minibatches come from (the reference's `grad_batch_origin`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GradBatchOrigin {
    /// Fresh sequences of the pretraining distribution at every step (the reference's
    /// default): sequence indices drawn from all 2^32 of the generator's, of which the n of the
    /// evaluation set are a fraction n / 2^32.
    #[default]
    InfiniteDataset,
    /// The n sequences of the evaluation set, drawn with replacement (the paper's sweeps).
    EvalDataset,
}

/// `eval_metrics` values that are computed (`likelihood-derived`: the LLC, `batch-loss`: the
/// per-chain batch-loss means, both always in `llc.csv`), accepted without effect (`weights`),
/// or refused, with why.
const METRICS_DONE: &[&str] = &["likelihood-derived", "batch-loss"];
const METRICS_REFUSED: &[(&str, &str)] = &[
    (
        "covariance",
        "the reference itself refuses it (an assertion in check_evals)",
    ),
    (
        "hessian",
        "Hessian traces and top eigenvalues (pyhessian) are not implemented",
    ),
    (
        "singular-fluctuation",
        "it needs every sample's loss at every draw (n per draw); not implemented",
    ),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    #[serde(default = "d_chains")]
    pub num_chains: usize,
    #[serde(default = "d_draws")]
    pub num_draws: usize,
    #[serde(default)]
    pub num_burnin_steps: usize,
    #[serde(default = "d_one")]
    pub num_steps_bw_draws: usize,
    /// Sequences per SGLD minibatch.
    #[serde(default = "d_batch")]
    pub grad_batch_size: usize,
    /// n: sequences in the fixed dataset the minibatches come from (and the init loss is
    /// measured on).
    #[serde(default = "d_n")]
    pub eval_dataset_size: usize,
    #[serde(default)]
    pub epsilon: Option<f64>,
    #[serde(default)]
    pub gamma: Option<f64>,
    /// The reference's "temperature" T = 1/beta: nbeta = n / T.
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub nbeta: Option<f64>,
    #[serde(default)]
    pub gradient_scale: Option<f64>,
    #[serde(default)]
    pub localization_scale: Option<f64>,
    #[serde(default)]
    pub noise_scale: Option<f64>,
    #[serde(default)]
    pub bounding_box_size: Option<f64>,
    /// Seed of the dataset, the minibatches and the SGLD noise.
    #[serde(default)]
    pub init_seed: u64,
    /// All chains see the same minibatches (only their noise differs).
    #[serde(default)]
    pub shared_batches: bool,
    /// `sgld`, `rmsprop_sgld` (devinterp's RMSprop-preconditioned SGLD) or `sgnht`.
    #[serde(default)]
    pub sampling_method: SamplingMethod,
    #[serde(default = "d_alpha")]
    pub rmsprop_alpha: f64,
    #[serde(default = "d_rms_eps")]
    pub rmsprop_eps: f64,
    /// SGNHT's diffusion factor A.
    #[serde(default = "d_diffusion")]
    pub diffusion_factor: f64,
    /// Which loss each draw records: `grad-minibatch` (the gradient's minibatch, before the
    /// update), `new-minibatch` (a fresh minibatch after the update) or `dataset` (all n
    /// sequences after the update; `fixed-minibatch` is the reference's alias for it).
    #[serde(default)]
    pub eval_method: EvalMethod,
    /// Minibatch size of `new-minibatch`; must equal `grad_batch_size` when given.
    #[serde(default)]
    pub eval_batch_size: Option<usize>,
    /// `mse` (the only loss every reference sweep uses).
    #[serde(default = "d_eval_loss_fn")]
    pub eval_loss_fn: String,
    /// Also report the LLC of each token position's loss.
    #[serde(default)]
    pub per_token: bool,
    /// Restricted LLC: parameter tensors the sampler moves (globs over state-dict names).
    #[serde(default = "d_include")]
    pub include: Vec<String>,
    /// Tensors kept at w* even if included.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// `infinite-dataset` (fresh sequences each step; the reference's default) or
    /// `eval-dataset` (minibatches of the n-sequence evaluation set).
    #[serde(default)]
    pub grad_batch_origin: GradBatchOrigin,
    /// The reference's estimator list; see [`METRICS_DONE`] and [`METRICS_REFUSED`]. `weights`
    /// (every draw's flattened weights, for a PCA figure) is accepted and not recorded.
    #[serde(default = "d_metrics")]
    pub eval_metrics: Vec<String>,
    /// The reference's switch for per-draw traces; they are always written
    /// (`traces/<step>.csv`), so either value gives the same files.
    #[serde(default)]
    pub eval_online: bool,
    /// A cap on the init loss's batches; only `null` (all n sequences) is supported.
    #[serde(default)]
    pub num_init_loss_batches: Option<usize>,
    /// Eigenvalues for `hessian` / `covariance`, which are refused; no effect.
    #[serde(default = "d_num_evals")]
    pub num_evals: usize,
    /// The reference's process count (it refuses more than 1); chains here are batched over
    /// `--threads` or a device, so no effect.
    #[serde(default = "d_one")]
    pub cores: usize,
    /// The reference's device; here `--device` chooses, so no effect.
    #[serde(default)]
    pub device: Option<String>,
    /// Not a field of the reference's `SamplerConfig`, which ignores it, so its sweeps that set
    /// it (`num_burn_in: 1000` in the paper's) ran without burn-in; accepted and ignored the same
    /// way (the burn-in is `num_burnin_steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_burn_in: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {msg}")]
pub struct SamplerConfigError {
    pub field: String,
    pub msg: String,
}

/// Names of the fields that are set.
fn given(p: &[(&'static str, Option<f64>)]) -> Vec<&'static str> {
    p.iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| *n)
        .collect()
}

fn err(field: &str, msg: impl Into<String>) -> SamplerConfigError {
    SamplerConfigError {
        field: field.into(),
        msg: msg.into(),
    }
}

impl SamplerConfig {
    /// The SGLD step after checking that exactly one parametrisation is complete.
    pub fn sgld(&self) -> Result<Sgld, SamplerConfigError> {
        let p1 = [
            ("epsilon", self.epsilon),
            ("gamma", self.gamma),
            ("temperature", self.temperature),
            ("nbeta", self.nbeta),
        ];
        let p2 = [
            ("gradient_scale", self.gradient_scale),
            ("localization_scale", self.localization_scale),
            ("noise_scale", self.noise_scale),
        ];
        let (g1, g2) = (given(&p1), given(&p2));
        for (name, v) in p1.iter().chain(p2.iter()) {
            if let Some(v) = v {
                let ok = v.is_finite()
                    && if *name == "gamma" || *name == "localization_scale" {
                        *v >= 0.0
                    } else {
                        *v > 0.0
                    };
                if !ok {
                    return Err(err(
                        name,
                        format!("{v}: expected a finite, positive number"),
                    ));
                }
            }
        }
        if let Some(b) = self.bounding_box_size
            && !(b > 0.0 && b.is_finite())
        {
            return Err(err(
                "bounding_box_size",
                format!("{b}: expected a finite, positive number"),
            ));
        }
        let mut sgld = match (g1.is_empty(), g2.is_empty()) {
            (false, false) => {
                return Err(err(
                    g2[0],
                    format!(
                        "both parametrisations given ({} and {}); use epsilon/gamma/temperature (or nbeta) or gradient_scale/localization_scale/noise_scale",
                        g1.join(", "),
                        g2.join(", ")
                    ),
                ));
            }
            (true, true) => {
                return Err(err(
                    "epsilon",
                    "no SGLD step given: set epsilon, gamma and temperature (or nbeta), or gradient_scale, localization_scale and noise_scale",
                ));
            }
            (true, false) => {
                for (name, v) in p2 {
                    if v.is_none() {
                        return Err(err(
                            name,
                            "missing (the scale parametrisation needs all three scales)",
                        ));
                    }
                }
                Sgld::from_scales(
                    self.gradient_scale.unwrap(),
                    self.localization_scale.unwrap(),
                    self.noise_scale.unwrap(),
                )
            }
            (false, true) => {
                let eps = self.epsilon.ok_or_else(|| err("epsilon", "missing"))?;
                let gamma = self
                    .gamma
                    .ok_or_else(|| err("gamma", "missing (use 0 for no localization)"))?;
                let nbeta = match (self.temperature, self.nbeta) {
                    (Some(_), Some(_)) => {
                        return Err(err("nbeta", "give temperature or nbeta, not both"));
                    }
                    (Some(t), None) => self.eval_dataset_size as f64 / t,
                    (None, Some(nb)) => nb,
                    (None, None) => return Err(err("nbeta", "missing (or give temperature)")),
                };
                Sgld {
                    nbeta,
                    ..Sgld::from_temperature(eps, gamma, 1.0, 1.0)
                }
            }
        };
        sgld.bounding_box = self.bounding_box_size;
        sgld.method = self
            .sampling_method
            .method(self.rmsprop_alpha, self.rmsprop_eps, self.diffusion_factor)
            .map_err(|(field, msg)| err(field, msg))?;
        for (name, v) in [
            ("num_chains", self.num_chains),
            ("num_draws", self.num_draws),
            ("num_steps_bw_draws", self.num_steps_bw_draws),
            ("grad_batch_size", self.grad_batch_size),
            ("eval_dataset_size", self.eval_dataset_size),
        ] {
            if v == 0 {
                return Err(err(name, "0: expected a positive integer"));
            }
        }
        for m in &self.eval_metrics {
            if let Some((_, why)) = METRICS_REFUSED.iter().find(|(n, _)| n == m) {
                return Err(err(
                    "eval_metrics",
                    format!("{m:?} is not supported: {why}"),
                ));
            }
            if !METRICS_DONE.contains(&m.as_str()) && m != "weights" {
                return Err(err(
                    "eval_metrics",
                    format!(
                        "{m:?}: expected some of \"likelihood-derived\", \"batch-loss\", \"weights\""
                    ),
                ));
            }
        }
        if let Some(b) = self.num_init_loss_batches {
            return Err(err(
                "num_init_loss_batches",
                format!(
                    "{b}: the init loss is always measured on all eval_dataset_size sequences; use null, or lower eval_dataset_size"
                ),
            ));
        }
        let draws_from_set = self.grad_batch_origin == GradBatchOrigin::EvalDataset
            || self.eval_method == EvalMethod::NewMinibatch;
        if draws_from_set && self.grad_batch_size > self.eval_dataset_size {
            return Err(err(
                "grad_batch_size",
                format!(
                    "{}: larger than the data set (eval_dataset_size = {}); a minibatch is drawn from the data set",
                    self.grad_batch_size, self.eval_dataset_size
                ),
            ));
        }
        self.eval_method()?;
        if self.eval_dataset_size > u32::MAX as usize {
            return Err(err("eval_dataset_size", "expected at most 2^32 sequences"));
        }
        Ok(sgld)
    }

    /// The draw evaluation, checked against the batch sizes.
    pub fn eval_method(&self) -> Result<EvalMethod, SamplerConfigError> {
        let method = self.eval_method;
        if let Some(b) = self.eval_batch_size
            && method != EvalMethod::Dataset
            && b != self.grad_batch_size
        {
            return Err(err(
                "eval_batch_size",
                format!(
                    "{b}: minibatch evaluation uses grad_batch_size ({}); give one of them or equal values",
                    self.grad_batch_size
                ),
            ));
        }
        match self.eval_loss_fn.as_str() {
            "mse" => {}
            "subsequence-mse" => {
                return Err(err(
                    "eval_loss_fn",
                    "\"subsequence-mse\" is not supported: on a scalar loss the reference takes the mean of its first k in {0, 1} elements (NaN for k = 0), and every shipped sweep uses \"mse\"",
                ));
            }
            other => return Err(err("eval_loss_fn", format!("{other:?}: expected \"mse\""))),
        }
        Ok(method)
    }

    pub fn chains(&self) -> ChainConfig {
        ChainConfig {
            chains: self.num_chains,
            draws: self.num_draws,
            burnin: self.num_burnin_steps,
            steps_between_draws: self.num_steps_bw_draws,
            seed: self.init_seed,
            first_chain: 0,
            shared_batches: self.shared_batches,
            eval: self.eval_method,
        }
    }
}
