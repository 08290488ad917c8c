//! The CUDA backend's kernels and orchestration, run on the host emulator (the same kernels.cu
//! NVRTC compiles for the GPU), against the CPU engine.

mod common;
mod kernels;
mod model;
mod observed;
mod runtime;
mod sampling;
mod training;
