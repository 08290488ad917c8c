// The emulator's side of the kernels: kernels.cu compiled for the host, and a table of
// launchers that run a grid one thread after another with cuLaunchKernel's argument convention
// (an array of pointers to the arguments).
#include <cstddef>
#include <type_traits>
#include <utility>

#include "host.h"

thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;

#include "kernels.cu"

template <typename... A, std::size_t... I>
static void call(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_reference_t<A>*>(args[I])...);
}

template <typename... A>
static void launch(void (*f)(A...), unsigned int grid, unsigned int block, void** args) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned int b = 0; b < grid; ++b) {
        for (unsigned int t = 0; t < block; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            call(f, args, std::index_sequence_for<A...>{});
        }
    }
}

// One letter per parameter type, so that the Rust side can check every launch's arguments
// against the kernel's signature (a mismatch would silently misread on the GPU too).
template <typename T> struct Code;
template <> struct Code<int> { static constexpr char v = 'i'; };
template <> struct Code<unsigned int> { static constexpr char v = 'u'; };
template <> struct Code<long long> { static constexpr char v = 'l'; };
template <> struct Code<unsigned long long> { static constexpr char v = 'q'; };
template <> struct Code<float> { static constexpr char v = 'f'; };
template <> struct Code<double> { static constexpr char v = 'd'; };
template <typename T> struct Code<T*> { static constexpr char v = 'p'; };

template <typename... A>
static const char* signature(void (*)(A...)) {
    static const char s[] = {Code<A>::v..., 0};
    return s;
}

struct HostKernel {
    const char* name;
    void (*launch)(unsigned int, unsigned int, void**);
    const char* (*signature)();
};

#define KERNEL(name)                                                           \
    {#name, [](unsigned int g, unsigned int b, void** a) { launch(name, g, b, a); }, \
     []() { return signature(name); }},

extern "C" const HostKernel stagewise_host_kernels[] = {
    KERNEL(gen_regression)
    KERNEL(fill_f32)
    KERNEL(copy_f32)
    KERNEL(copy_rows_f32)
    KERNEL(broadcast_f32)
    KERNEL(add_positions)
    KERNEL(layernorm_forward)
    KERNEL(attention_forward_hs4)
    KERNEL(attention_forward_hs8)
    KERNEL(attention_forward_hs16)
    KERNEL(attention_forward_hs32)
    KERNEL(attention_forward_hs64)
    KERNEL(add_f32)
    KERNEL(bias_relu)
    KERNEL(attention_residual)
    KERNEL(readout_loss)
    KERNEL(readout_backward)
    KERNEL(layernorm_backward)
    KERNEL(relu_backward)
    KERNEL(residual_backward)
    KERNEL(attention_backward_q_hs4)
    KERNEL(attention_backward_q_hs8)
    KERNEL(attention_backward_q_hs16)
    KERNEL(attention_backward_q_hs32)
    KERNEL(attention_backward_q_hs64)
    KERNEL(attention_backward_kv_hs4)
    KERNEL(attention_backward_kv_hs8)
    KERNEL(attention_backward_kv_hs16)
    KERNEL(attention_backward_kv_hs32)
    KERNEL(attention_backward_kv_hs64)
    KERNEL(positions_backward)
    KERNEL(scatter_rows)
    KERNEL(adam_step)
    KERNEL(sgld_step)
    KERNEL(sgnht_init)
    KERNEL(sgnht_step)
    KERNEL(sgnht_thermostat)
    KERNEL(record_draw)
    KERNEL(mala_point)
    KERNEL(mala_energy)
    KERNEL(mala_transition)
    KERNEL(mala_accept)
    KERNEL(copy_f64)
    KERNEL(record_window)
    KERNEL(advance_counter)
    {nullptr, nullptr, nullptr},
};
