//! Analysis of a run's checkpoints: essential dynamics (PCA of model behaviour across
//! checkpoints, variable-sigma smoothing, osculating circles, evolutes, vertices and forms).

pub mod curves;
pub mod pca;
pub mod smoothing;

pub use pca::{Pca, PcaError};
