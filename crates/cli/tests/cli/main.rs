//! End-to-end tests of the `stagewise` binary: a run killed with SIGKILL and resumed ends with
//! the same weights and tables as an uninterrupted run; bad input fails cleanly; Python reads
//! the checkpoints.

mod analysis;
mod common;
mod faults;
mod llc;
mod mlflow;
mod pipeline;
mod sweeps;
mod training;
