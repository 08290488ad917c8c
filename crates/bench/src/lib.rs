//! Benchmarks, each next to PyTorch on the same machine when asked: training steps/s
//! ([`train`], then a whole `stagewise train` run against the bare step rate) and SGLD
//! chain-draws/s ([`sgld`]) on the CPU, with the CPU, code path and GEMM peak ([`machine`]);
//! and both on a CUDA device ([`gpu`]). They print their tables; the `stagewise bench`
//! commands only parse arguments into the options.

mod flops;
mod gpu;
mod lm;
pub mod machine;
pub mod parity;
mod sgld;
mod susceptibility;
mod train;
mod whole;

pub use flops::{flops_done_per_pass, flops_per_pass};
pub use gpu::{BenchGpuOptions, gpu};
pub use lm::{BenchLmOptions, lm, lm_step_flops};
pub use parity::{BenchParityOptions, parity};
pub use sgld::{BenchSgldOptions, sgld};
pub use susceptibility::{BenchSusceptibilityOptions, susceptibility};
pub use train::{BenchTrainOptions, train};
