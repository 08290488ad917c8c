//! What a CPU benchmark ran on: the CPU model, the code path the kernels take, and this CPU's
//! float32 GEMM peak measured in the same run, so that ratios and distances from the floor
//! can be read on any machine.

use std::time::Instant;

use anyhow::Result;
use rayon::prelude::*;
use stagewise_engine::matmul::matmul;
use stagewise_engine::simd::{self, Level};

/// The CPU model as the OS names it (`/proc/cpuinfo`), or the architecture.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    for key in ["model name", "Hardware", "Processor"] {
        let found = info.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
        });
        if let Some(v) = found {
            return v;
        }
    }
    std::env::consts::ARCH.to_string()
}

/// Float32 GFLOP/s of `threads` threads, each multiplying its own `n x n` matrices on one core
/// (as training and sampling run their chunks): the best of a few repetitions.
pub fn gemm_peak(threads: usize, n: usize) -> Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let a = vec![0.5f32; n * n];
    let b = vec![0.25f32; n * n];
    let mut cs = vec![vec![0.0f32; n * n]; threads];
    let flop = 2.0 * (n * n * n) as f64 * threads as f64;
    let mut best = 0.0f64;
    pool.install(|| {
        for _ in 0..8 {
            let t0 = Instant::now();
            cs.par_iter_mut()
                .for_each(|c| matmul(c, &a, &b, n, n, n, false, false, false));
            best = best.max(flop / t0.elapsed().as_secs_f64() / 1e9);
        }
    });
    Ok(best)
}

/// Prints the CPU, the code paths and the GEMM peak per thread count; returns the peaks
/// (GFLOP/s) in the order of `threads`.
pub fn describe(threads: &[usize]) -> Result<Vec<f64>> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let names: Vec<&str> = simd::supported().iter().map(|l| l.name()).collect();
    let how = match std::env::var("STAGEWISE_SIMD") {
        Ok(v) if !v.trim().is_empty() && v.trim() != "auto" => format!("STAGEWISE_SIMD={v}"),
        _ => "the best this CPU has".to_string(),
    };
    println!("CPU: {} ({cores} cores available)", cpu_model());
    println!(
        "code path: {} ({how}; this CPU supports {}); GEMMs on gemm's {} kernels",
        simd::active(),
        names.join(", "),
        gemm_kernels(simd::active())
    );
    let peaks: Vec<f64> = threads
        .iter()
        .map(|&t| gemm_peak(t, 512))
        .collect::<Result<_>>()?;
    let shown: Vec<String> = threads
        .iter()
        .zip(&peaks)
        .map(|(t, p)| format!("{t} thread{}: {p:.1}", if *t == 1 { "" } else { "s" }))
        .collect();
    println!(
        "GEMM peak (float32, 512^3 per thread, measured now, GFLOP/s): {}",
        shown.join(", ")
    );
    Ok(peaks)
}

fn gemm_kernels(l: Level) -> &'static str {
    match l {
        Level::Baseline => "scalar",
        Level::Avx2 => "AVX2+FMA",
        Level::Avx512 => "AVX-512",
        Level::Neon => "NEON",
    }
}

/// Runs a PyTorch baseline script (`python script args...`) and reads `key` from the JSON
/// object on its last line of output.
pub fn torch_json(
    python: &std::path::Path,
    script: &std::path::Path,
    args: &[String],
    key: &str,
) -> anyhow::Result<f64> {
    use anyhow::Context;
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("unexpected output {text:?}"))?;
    v[key].as_f64().with_context(|| format!("{key} missing"))
}
