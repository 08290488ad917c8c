//! The tensor engine: explicit forward and backward kernels per layer, llm.c style.
//!
//! Every kernel works on plain row-major slices with the shapes written in its doc comment;
//! no autodiff, no tensor object. The kernels are single-threaded on purpose: callers split a
//! batch into fixed chunks and run the chunks in parallel, which keeps results independent of
//! the thread count (see `stagewise-train`).

pub mod attention;
pub mod float;
pub mod layernorm;
pub mod linear;
pub mod matmul;
pub mod reduce;
pub mod relu;
pub mod rng;
pub mod simd;
pub mod softmax;
#[cfg(target_arch = "x86_64")]
mod v16;

pub use float::Float;
