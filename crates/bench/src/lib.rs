//! Benchmarks, each next to PyTorch on the same machine when asked: training steps/s
//! ([`train`]) and SGLD chain-draws/s ([`sgld`]) on the CPU, and both on a CUDA device ([`gpu`]).
//! They print their tables; the `stagewise bench` commands only parse arguments into the options.

mod gpu;
mod sgld;
mod train;

pub use gpu::{BenchGpuOptions, flops_per_pass, gpu};
pub use sgld::{BenchSgldOptions, sgld};
pub use train::{BenchTrainOptions, train};
