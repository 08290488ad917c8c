//! Training the language model as the reference does (`src/icl/language/train.py`): AdamW at
//! a constant learning rate, batches taken in order from the training rows (a `DataLoader` with
//! `shuffle=False`, epoch after epoch, the last batch of an epoch short), checkpoints and
//! evaluations on log+linear step sets.

use serde::{Deserialize, Serialize};
use stagewise_models::language::LanguageConfig;

use crate::config::{CheckpointerConfig, ConfigError, LoggingConfig, OptimizerConfig, invalid};
use crate::steps::StepsSpec;

pub mod eval;
mod repeat;
mod trainer;

pub use eval::{LmEvaluator, NgramTables};
pub use repeat::{Repeat, RepeatedRows};
pub use stagewise_models::language::RowSource;
pub use trainer::{LmState, LmTrainer, evaluate_rows};

/// The model fields of the reference's `get_model_cfg` (TransformerLens'
/// `HookedTransformerConfig` names). The architecture fields TransformerLens has but the
/// reference fixes are accepted only with the reference's values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    #[serde(default = "d_layers")]
    pub n_layers: usize,
    #[serde(default = "d_model")]
    pub d_model: usize,
    #[serde(default = "d_head")]
    pub d_head: usize,
    #[serde(default = "d_heads")]
    pub n_heads: usize,
    #[serde(default = "d_ctx")]
    pub n_ctx: usize,
    #[serde(default = "d_vocab")]
    pub d_vocab: usize,
    /// The initialisation seed.
    #[serde(default)]
    pub seed: u64,
    /// Informational: the Hugging Face tokenizer the reference names (nothing is downloaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_name: Option<String>,
    #[serde(default = "d_ln")]
    pub normalization_type: String,
    #[serde(default = "d_true")]
    pub attn_only: bool,
    #[serde(default = "d_shortformer")]
    pub positional_embedding_type: String,
}

impl Default for TransformerConfig {
    fn default() -> Self {
        TransformerConfig {
            n_layers: d_layers(),
            d_model: d_model(),
            d_head: d_head(),
            n_heads: d_heads(),
            n_ctx: d_ctx(),
            d_vocab: d_vocab(),
            seed: 0,
            tokenizer_name: None,
            normalization_type: d_ln(),
            attn_only: true,
            positional_embedding_type: d_shortformer(),
        }
    }
}

impl TransformerConfig {
    pub fn model(&self) -> LanguageConfig {
        LanguageConfig {
            n_layers: self.n_layers,
            d_model: self.d_model,
            n_heads: self.n_heads,
            d_head: self.d_head,
            n_ctx: self.n_ctx,
            d_vocab: self.d_vocab,
        }
    }
}

fn d_layers() -> usize {
    2
}
fn d_model() -> usize {
    256
}
fn d_head() -> usize {
    32
}
fn d_heads() -> usize {
    8
}
fn d_ctx() -> usize {
    1024
}
fn d_vocab() -> usize {
    5000
}
fn d_ln() -> String {
    "LN".into()
}
fn d_true() -> bool {
    true
}
fn d_shortformer() -> String {
    "shortformer".into()
}
fn d_lm_steps() -> u64 {
    50_000
}
fn d_lm_batch() -> usize {
    100
}
fn d_adamw() -> OptimizerConfig {
    OptimizerConfig {
        optimizer_type: "AdamW".into(),
        lr: 1e-3,
        betas: [0.9, 0.999],
        weight_decay: 0.05,
    }
}
fn d_lm_checkpoints() -> CheckpointerConfig {
    CheckpointerConfig {
        checkpoint_steps: StepsSpec::log_linear(100, 2_000),
    }
}
fn d_lm_logging() -> LoggingConfig {
    LoggingConfig {
        logging_steps: StepsSpec::log_linear(100, 100),
    }
}
fn d_tokenizer() -> String {
    "train".into()
}

/// A language-model training run (the reference's `LanguageConfig`, plus where the data is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LmTrainConfig {
    /// The reference's run name (`{seed_greek}` becomes alpha, beta, ... by seed); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_name: Option<String>,
    #[serde(default = "d_lm_steps")]
    pub num_steps: u64,
    /// Sequences per batch.
    #[serde(default = "d_lm_batch")]
    pub batch_size: usize,
    #[serde(default)]
    pub transformer_config: TransformerConfig,
    #[serde(default = "d_adamw")]
    pub optimizer_config: OptimizerConfig,
    #[serde(default = "d_lm_checkpoints")]
    pub checkpointer_config: CheckpointerConfig,
    /// When the test loss and the other evaluations are logged.
    #[serde(default = "d_lm_logging")]
    pub logger_config: LoggingConfig,
    /// Training corpus: a `.txt` file or folder, `.jsonl`, `.parquet` or `.bin` (relative paths
    /// are relative to the working directory).
    pub trainset: String,
    /// Test corpus, the same formats.
    pub testset: String,
    /// A `tokenizer.json` to load, or `train`: a byte-level BPE of `d_vocab` ids trained on
    /// the training corpus and saved in the run folder.
    #[serde(default = "d_tokenizer")]
    pub tokenizer: String,
    /// The text field of JSONL / Parquet corpora (default `text`, then `contents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_field: Option<String>,
    /// Test rows evaluated (the first ones; default all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_test_rows: Option<usize>,
    /// Share of the training rows (chosen by seed) that repeat a span of their own text later
    /// in the row ([`RepeatedRows`]); not in the reference, whose value is 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeat_fraction: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl LmTrainConfig {
    /// The reference's settings for a model and the corpora at `trainset` and `testset`.
    pub fn new(transformer_config: TransformerConfig, trainset: &str, testset: &str) -> Self {
        LmTrainConfig {
            run_name: None,
            num_steps: d_lm_steps(),
            batch_size: d_lm_batch(),
            transformer_config,
            optimizer_config: d_adamw(),
            checkpointer_config: d_lm_checkpoints(),
            logger_config: d_lm_logging(),
            trainset: trainset.into(),
            testset: testset.into(),
            tokenizer: d_tokenizer(),
            text_field: None,
            num_test_rows: None,
            repeat_fraction: 0.0,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.transformer_config;
        for (field, want, got) in [
            ("normalization_type", "LN", t.normalization_type.as_str()),
            (
                "positional_embedding_type",
                "shortformer",
                t.positional_embedding_type.as_str(),
            ),
        ] {
            if got != want {
                return Err(invalid(
                    &format!("transformer_config.{field}"),
                    got,
                    format!("only {want:?} (the reference's model) is supported"),
                ));
            }
        }
        if !t.attn_only {
            return Err(invalid(
                "transformer_config.attn_only",
                false,
                "only attention-only models (the reference's) are supported",
            ));
        }
        t.model().validate().map_err(|e| match e {
            stagewise_models::ModelError::Invalid {
                field,
                value,
                expected,
            } => invalid(&format!("transformer_config.{field}"), value, expected),
            other => invalid("transformer_config", "", other.to_string()),
        })?;
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
        if !(0.0..=1.0).contains(&self.repeat_fraction) {
            return Err(invalid(
                "repeat_fraction",
                self.repeat_fraction,
                "a share of the training rows in [0, 1]",
            ));
        }
        if self.num_test_rows == Some(0) {
            return Err(invalid("num_test_rows", 0, "expected a positive integer"));
        }
        let o = &self.optimizer_config;
        if o.optimizer_type != "AdamW" && o.optimizer_type != "Adam" {
            return Err(invalid(
                "optimizer_config.optimizer_type",
                &o.optimizer_type,
                "\"AdamW\" (the reference's) or \"Adam\"",
            ));
        }
        o.validate_numbers()?;
        if self.trainset.is_empty() {
            return Err(invalid("trainset", "\"\"", "a corpus path"));
        }
        if self.testset.is_empty() {
            return Err(invalid("testset", "\"\"", "a corpus path"));
        }
        Ok(())
    }

    /// The reference's run name with `{seed_greek}` filled in.
    pub fn resolved_run_name(&self) -> Option<String> {
        const GREEK: [&str; 10] = [
            "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
        ];
        let seed = self.transformer_config.seed as usize;
        self.run_name.as_ref().map(|n| {
            let g = GREEK.get(seed).copied().unwrap_or("omega");
            n.replace("{seed_greek}", g)
        })
    }
}
