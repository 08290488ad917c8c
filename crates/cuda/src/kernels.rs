//! The CUDA C source of every kernel (compiled by NVRTC on the GPU, by build.rs for the
//! emulator) and the names the backend launches.

pub const SOURCE: &str = include_str!("../kernels/kernels.cu");

/// Every kernel of `SOURCE` (a test checks this list against the source and the emulator).
pub const KERNEL_NAMES: &[&str] = &[
    "gen_regression",
    "fill_f32",
    "copy_f32",
    "broadcast_f32",
    "add_positions",
    "layernorm_forward",
    "attention_forward",
    "add_f32",
    "bias_relu",
    "double_residual",
    "readout_loss",
    "readout_backward",
    "layernorm_backward",
    "relu_backward",
    "residual_backward",
    "attention_backward_q",
    "attention_backward_kv",
    "positions_backward",
    "adam_step",
    "sgld_step",
];
