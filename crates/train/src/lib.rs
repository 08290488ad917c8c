//! Training the in-context regression transformer as the reference does: task distributions
//! and batches, Adam, the OneCycle learning-rate schedule, log+linear step sets, evaluation
//! against the ridge and dMMSE baselines, and a resumable trainer; and the language model's
//! training (`lm`), and multitask sparse parity (`parity`).

pub mod adam;
pub mod baselines;
pub mod config;
pub mod data;
pub mod eval;
pub mod lm;
pub mod parity;
pub mod schedule;
pub mod steps;
pub mod trainer;

pub use config::{ConfigError, TrainConfig};
pub use trainer::Trainer;
