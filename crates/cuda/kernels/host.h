// Host definitions that let kernels.cu compile as plain C++ for the emulator: the thread index
// variables the launcher sets, and the CUDA intrinsics the kernels use.
#pragma once
#include <cmath>
#include <cstdint>

struct dim3 {
    unsigned int x, y, z;
};
extern thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;

// CUDA's 16-byte vector type (its loads and stores need 16-byte alignment, as on the GPU).
struct alignas(16) float4 {
    float x, y, z, w;
};

#define __global__
#define __device__ static inline
#define __forceinline__

using std::cos;
using std::exp;
using std::log;
using std::sin;
using std::sqrt;

static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
