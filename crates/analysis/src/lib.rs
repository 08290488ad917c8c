//! Analysis of a run's checkpoints: essential dynamics (PCA of model behaviour across
//! checkpoints, variable-sigma smoothing, osculating circles, evolutes, vertices and forms) and
//! developmental stages from the LLC curve (GP fit, slope, critical points), and structural
//! indicators (weights, LayerNorms, embeddings, Hessian trace and top eigenvalues).

pub mod curves;
pub mod gp;
pub mod hessian;
pub mod pca;
pub mod smoothing;
pub mod stages;
pub mod structure;

pub use pca::{Pca, PcaError};

/// A decomposition that cannot be computed: its input holds NaN or infinity, or it did not
/// converge.
#[derive(Debug, thiserror::Error)]
pub enum DecompositionError {
    #[error("{what} holds a non-finite value (NaN or infinity) at index {index}")]
    NonFinite { what: String, index: usize },
    #[error("the {what} did not converge")]
    NoConvergence { what: String },
}

/// `Err(NonFinite)` naming the first NaN or infinity of `x`.
pub fn check_finite<T: Into<f64> + Copy>(what: &str, x: &[T]) -> Result<(), DecompositionError> {
    match x.iter().position(|v| !(*v).into().is_finite()) {
        Some(index) => Err(DecompositionError::NonFinite {
            what: what.to_string(),
            index,
        }),
        None => Ok(()),
    }
}
