//! Compiles `kernels/kernels.cu` (which includes the `.cuh` parts) for the host with
//! `kernels/host.h`: the emulator runs the very kernels that NVRTC compiles for the GPU, one
//! thread index at a time.

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    cc::Build::new()
        .cpp(true)
        .file("kernels/host.cpp")
        .flag_if_supported("-std=c++17")
        .flag_if_supported("-fno-fast-math")
        .flag_if_supported("-ffp-contract=off")
        .opt_level(2)
        .warnings(false)
        .compile("stagewise_cuda_host_kernels");
}
