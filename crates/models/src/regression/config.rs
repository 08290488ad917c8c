//! The regression transformer's architecture (the model fields of the reference's
//! `RegressionTaskConfig`), its validation and its errors.

use serde::{Deserialize, Serialize};

/// Architecture of the regression transformer (the model fields of `RegressionTaskConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegressionConfig {
    /// D, the task dimension.
    pub task_size: usize,
    /// K, the most in-context examples a sequence may hold (T = 2K tokens).
    pub max_examples: usize,
    /// C, the residual width.
    pub embed_size: usize,
    /// Width of each block's MLP hidden layer.
    pub mlp_size: usize,
    /// H; must divide `embed_size`.
    pub num_heads: usize,
    /// L.
    pub num_layers: usize,
    /// Pre-LN LayerNorms in every block and before the unembedding.
    pub layer_norm: bool,
    /// Attention output projection.
    pub include_output: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("{field} = {value}: {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: String,
    },
    #[error("{0}")]
    Shape(String),
}

impl RegressionConfig {
    /// The L2H4 model of the paper and the reference (D = 4, C = 64, H = 4, L = 2, M = 64).
    pub fn l2h4(max_examples: usize) -> Self {
        RegressionConfig {
            task_size: 4,
            max_examples,
            embed_size: 64,
            mlp_size: 64,
            num_heads: 4,
            num_layers: 2,
            layer_norm: true,
            include_output: true,
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = [
            ("task_size", self.task_size),
            ("max_examples", self.max_examples),
            ("embed_size", self.embed_size),
            ("mlp_size", self.mlp_size),
            ("num_heads", self.num_heads),
            ("num_layers", self.num_layers),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ModelError::Invalid {
                    field,
                    value: "0".into(),
                    expected: "expected a positive integer".into(),
                });
            }
        }
        if !self.embed_size.is_multiple_of(self.num_heads) {
            return Err(ModelError::Invalid {
                field: "num_heads",
                value: self.num_heads.to_string(),
                expected: format!("must divide embed_size = {}", self.embed_size),
            });
        }
        if self.max_examples > 1 << 20 {
            return Err(ModelError::Invalid {
                field: "max_examples",
                value: self.max_examples.to_string(),
                expected: "expected at most 2^20".into(),
            });
        }
        Ok(())
    }

    pub fn token_size(&self) -> usize {
        self.task_size + 1
    }
    pub fn max_tokens(&self) -> usize {
        2 * self.max_examples
    }
    pub fn head_size(&self) -> usize {
        self.embed_size / self.num_heads
    }
}
