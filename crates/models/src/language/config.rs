//! The language model's architecture (TransformerLens `HookedTransformerConfig` fields the
//! reference sets), its validation, and the reference's and the quick demo's sizes.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Architecture of the attention-only "shortformer" transformer of the reference
/// (`src/icl/language/config.py::get_model_cfg`). Field names are TransformerLens'.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageConfig {
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub d_head: usize,
    /// Longest sequence; rows of the positional table.
    pub n_ctx: usize,
    pub d_vocab: usize,
}

impl LanguageConfig {
    /// The reference's model: 2 layers, d_model 256, 8 heads of 32, n_ctx 1024, vocabulary 5,000
    /// (3,355,016 parameters).
    pub fn reference() -> Self {
        LanguageConfig {
            n_layers: 2,
            d_model: 256,
            n_heads: 8,
            d_head: 32,
            n_ctx: 1024,
            d_vocab: 5000,
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        for (field, value) in [
            ("n_layers", self.n_layers),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("d_head", self.d_head),
            ("n_ctx", self.n_ctx),
            ("d_vocab", self.d_vocab),
        ] {
            if value == 0 {
                return Err(ModelError::Invalid {
                    field,
                    value: "0".into(),
                    expected: "a positive integer".into(),
                });
            }
        }
        if self.n_ctx < 2 {
            return Err(ModelError::Invalid {
                field: "n_ctx",
                value: self.n_ctx.to_string(),
                expected: "at least 2 (the loss predicts token t+1 from tokens up to t)".into(),
            });
        }
        if self.d_vocab > u32::MAX as usize {
            return Err(ModelError::Invalid {
                field: "d_vocab",
                value: self.d_vocab.to_string(),
                expected: "at most 2^32 token ids".into(),
            });
        }
        Ok(())
    }

    /// Width of the heads side by side, `n_heads * d_head`.
    pub fn attn_width(&self) -> usize {
        self.n_heads * self.d_head
    }

    /// Number of parameters, counted as TransformerLens does.
    pub fn num_params(&self) -> usize {
        let (c, a) = (self.d_model, self.attn_width());
        let block = 2 * c + 4 * c * a + 3 * a + c;
        self.d_vocab * c
            + self.n_ctx * c
            + self.n_layers * block
            + 2 * c
            + c * self.d_vocab
            + self.d_vocab
    }
}
