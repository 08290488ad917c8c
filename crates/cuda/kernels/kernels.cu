// The CUDA kernels, by subject. NVRTC compiles the parts concatenated in this order
// (stagewise_cuda::kernels::SOURCE; a test checks the two lists agree) and build.rs compiles this
// file for the host emulator through kernels/host.cpp.
#include "common.cuh"
#include "rng.cuh"
#include "data.cuh"
#include "elementwise.cuh"
#include "forward.cuh"
#include "backward.cuh"
#include "optimizers.cuh"
#include "sampler.cuh"
