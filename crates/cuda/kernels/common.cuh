// Kernels of the regression transformer, Adam, SGLD and data generation for the CUDA backend:
// what every part needs (this part comes first).
//
// NVRTC compiles the parts for the GPU at start-up; build.rs compiles the same parts for the host
// (kernels/host.h supplies blockIdx, __umulhi and the rounding intrinsics) so that the emulator
// runs these very kernels in the CPU-only tests. Every kernel is one independent piece of work
// per thread (no shared memory, no barriers, no atomics), so running the threads one after
// another on the host computes exactly what the GPU computes, up to floating-point rounding.
//
// Layouts (row-major): Q weight sets ("chains"; 1 for training) of P parameters each, B
// sequences per chain, T tokens, C residual width, H heads of hs = C/H, N = B*T rows per chain.
// Activations are [Q, N, width]; a chain's parameter `off + i` is params[q*P + off + i].

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
#ifndef NAN
#define NAN __longlong_as_double(0x7ff8000000000000ULL)
#endif

#define THREAD_INDEX ((long long)blockIdx.x * blockDim.x + threadIdx.x)

// Index arithmetic of the per-element kernels: a 32-bit division when both operands fit (a few
// instructions on the GPU), the 64-bit one (a long software routine there) only past 2^32.
__device__ __forceinline__ long long idiv(long long a, long long b) {
    return ((unsigned long long)(a | b) >> 32) == 0 ? (long long)((unsigned int)a / (unsigned int)b)
                                                     : a / b;
}
