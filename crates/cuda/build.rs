//! Compiles `kernels/kernels.cu` for the host with `kernels/host.h`: the emulator runs the very
//! kernels that NVRTC compiles for the GPU, one thread index at a time.

fn main() {
    println!("cargo:rerun-if-changed=kernels/kernels.cu");
    println!("cargo:rerun-if-changed=kernels/host.h");
    println!("cargo:rerun-if-changed=kernels/host.cpp");
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
