//! Sampling the local posterior around a checkpoint with SGLD and estimating the local learning
//! coefficient (LLC), as the reference (`timaeus-research/icl`) and devinterp do:
//!
//! `w <- w - (eps/2) [nbeta grad L_B(w) + gamma (w - w*) + lambda w] + sqrt(eps) sigma xi`,
//! `llc = nbeta (mean draw loss - L(w*))` per chain.
//!
//! Generic over any model with a minibatch loss and its gradient ([`Potential`]); chains advance
//! in lockstep so that one batched evaluation serves all of them.

pub mod calibration;
pub mod chains;
pub mod config;
pub mod engine;
pub mod estimator;
pub mod influence;
pub mod language;
pub mod mala;
pub mod mask;
pub mod moments;
pub mod observed;
pub mod parity;
pub mod potential;
pub mod regression;
pub mod sgld;
pub mod toy;

pub use chains::{ChainConfig, ChainTrace, EvalMethod, sample, sample_with_progress};
pub use engine::{ChainEngine, EngineError};
pub use estimator::LlcEstimate;
pub use potential::{BatchKey, Potential, PotentialWorker};
pub use sgld::{Method, SamplingMethod, Sgld, StepState};
