//! The CUDA C source of every kernel (compiled by NVRTC on the GPU, by build.rs for the
//! emulator) and the names the backend launches.

/// The parts of the source, by subject, in the order `kernels/kernels.cu` includes them.
pub const PARTS: &[&str] = &[
    "common",
    "rng",
    "data",
    "elementwise",
    "forward",
    "backward",
    "optimizers",
    "sampler",
];

/// The whole source as NVRTC compiles it: the parts of [`PARTS`], concatenated.
pub const SOURCE: &str = concat!(
    include_str!("../kernels/common.cuh"),
    include_str!("../kernels/rng.cuh"),
    include_str!("../kernels/data.cuh"),
    include_str!("../kernels/elementwise.cuh"),
    include_str!("../kernels/forward.cuh"),
    include_str!("../kernels/backward.cuh"),
    include_str!("../kernels/optimizers.cuh"),
    include_str!("../kernels/sampler.cuh"),
);

/// `kernels/kernels.cu`, which includes the parts for the host build.
pub const HOST_INCLUDES: &str = include_str!("../kernels/kernels.cu");

/// Head sizes the attention kernels are instantiated for (`attention_forward_hs16`, ...).
pub const HEAD_SIZES: &[usize] = &[4, 8, 16, 32, 64];

/// The attention kernel `prefix` for head size `hs`.
pub fn attention_kernel(prefix: &str, hs: usize) -> Result<&'static str, crate::GpuError> {
    KERNEL_NAMES
        .iter()
        .find(|n| n.strip_prefix(prefix).and_then(|r| r.strip_prefix("_hs")) == Some(&hs.to_string()))
        .copied()
        .ok_or_else(|| {
            crate::GpuError::Unsupported(format!(
                "head size {hs} (embed_size / num_heads): the CUDA attention kernels support {HEAD_SIZES:?}"
            ))
        })
}

/// Every kernel of `SOURCE` (tests check this list against the emulator's table and NVRTC's
/// PTX).
pub const KERNEL_NAMES: &[&str] = &[
    "gen_regression",
    "fill_f32",
    "copy_f32",
    "copy_rows_f32",
    "broadcast_f32",
    "add_positions",
    "layernorm_forward",
    "attention_forward_hs4",
    "attention_forward_hs8",
    "attention_forward_hs16",
    "attention_forward_hs32",
    "attention_forward_hs64",
    "add_f32",
    "bias_relu",
    "attention_residual",
    "readout_loss",
    "readout_backward",
    "layernorm_backward",
    "relu_backward",
    "residual_backward",
    "attention_backward_q_hs4",
    "attention_backward_q_hs8",
    "attention_backward_q_hs16",
    "attention_backward_q_hs32",
    "attention_backward_q_hs64",
    "attention_backward_kv_hs4",
    "attention_backward_kv_hs8",
    "attention_backward_kv_hs16",
    "attention_backward_kv_hs32",
    "attention_backward_kv_hs64",
    "positions_backward",
    "scatter_rows",
    "adam_step",
    "sgld_step",
    "sgnht_init",
    "sgnht_step",
    "sgnht_thermostat",
    "record_draw",
    "mala_point",
    "mala_energy",
    "mala_transition",
    "mala_accept",
    "copy_f64",
    "record_window",
    "advance_counter",
];

/// Compiles `SOURCE` with NVRTC for `arch` (for example "compute_90", or "sm_90" for machine
/// code); returns the PTX and NVRTC's log. Needs only the NVRTC library, no GPU or driver.
pub fn compile(arch: &str, extra: &[&str]) -> Result<(String, String), crate::GpuError> {
    // SAFETY: only probes whether the library can be loaded.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(crate::GpuError::NoDevice(
            "NVRTC (libnvrtc.so) was not found: install the CUDA 12/13 runtime libraries or add \
             their folder to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let mut options = vec![format!("--gpu-architecture={arch}")];
    options.extend(extra.iter().map(|s| s.to_string()));
    // One compilation per process and option set (a pipeline opens the device more than once).
    static CACHE: std::sync::Mutex<Vec<(Vec<String>, String)>> = std::sync::Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, ptx)) = cache.iter().find(|(o, _)| *o == options) {
        return Ok((ptx.clone(), String::new()));
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options: options.clone(),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts) {
        Ok(ptx) => {
            let ptx = ptx.to_src();
            cache.push((options, ptx.clone()));
            Ok((ptx, String::new()))
        }
        Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => {
            Err(crate::GpuError::Compile(log.to_string_lossy().into_owned()))
        }
        Err(e) => Err(crate::GpuError::Compile(format!("{e:?}"))),
    }
}

/// ptxas's resource report (registers, stack frame, spills per kernel) for machine code of
/// `arch` (for example "sm_90"), from NVRTC alone: no GPU needed.
pub fn resource_report(arch: &str) -> Result<String, crate::GpuError> {
    use cudarc::nvrtc::result as nvrtc;
    // SAFETY: only probes whether the library can be loaded.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(crate::GpuError::NoDevice(
            "NVRTC (libnvrtc.so) was not found".into(),
        ));
    }
    let src = std::ffi::CString::new(SOURCE).expect("no NUL in the source");
    let prog = nvrtc::create_program(&src, None)
        .map_err(|e| crate::GpuError::Compile(format!("{e:?}")))?;
    let options = [
        format!("--gpu-architecture={arch}"),
        "--ptxas-options=-v".to_string(),
    ];
    // SAFETY: `prog` was just created and is destroyed once below.
    unsafe {
        let compiled = nvrtc::compile_program(prog, &options);
        let log = nvrtc::get_program_log(prog)
            .map(|l| {
                let bytes: Vec<u8> = l
                    .iter()
                    .take_while(|c| **c != 0)
                    .map(|c| *c as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .unwrap_or_default();
        let _ = nvrtc::destroy_program(prog);
        compiled.map_err(|e| crate::GpuError::Compile(format!("{e:?}: {log}")))?;
        Ok(log)
    }
}
