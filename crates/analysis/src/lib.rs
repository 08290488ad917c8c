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
