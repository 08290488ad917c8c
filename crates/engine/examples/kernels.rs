//! Micro-benchmarks of the engine's kernels at the L2H4 model's shapes (one 16-sequence chunk,
//! T = 32, C = 64, H = 4): GEMM throughput, attention and LayerNorm times.
//! Every code path this CPU supports is timed in turn, or the one `STAGEWISE_SIMD` names; each time
//! is the best of several trials, as a noisy machine only ever makes a trial slower.
//! Run with `cargo run --release -p stagewise-engine --example kernels [attention]` (the
//! argument times attention alone).

use stagewise_engine::attention::{AttnShape, LONG_T, attention_backward, attention_forward};
use stagewise_engine::layernorm::{layernorm_backward, layernorm_forward};
use stagewise_engine::linear::{linear_backward, linear_forward};
use stagewise_engine::matmul::matmul;

fn gemm(m: usize, n: usize, k: usize, ta: bool, tb: bool) {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let flop = 2.0 * (m * n * k) as f64;
    let reps = ((2e8 / flop) as usize).max(3);
    let dt = best_time(reps, || matmul(&mut c, &a, &b, m, n, k, ta, tb, true));
    println!(
        "gemm m={m:5} n={n:5} k={k:5} ta={ta:5} tb={tb:5}: {:.1} GFLOP/s",
        flop / dt / 1e9
    );
}

/// The weight gradient `dw[dout, din] += dy[n, dout]^T x[n, din]` as `linear_backward` runs it.
fn weight_grad(dout: usize, din: usize, n: usize) {
    let dy: Vec<f32> = (0..n * dout).map(|i| (i as f32 * 0.37).sin()).collect();
    let x: Vec<f32> = (0..n * din).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut dw = vec![0.0f32; dout * din];
    let flop = 2.0 * (dout * din * n) as f64;
    let reps = ((2e8 / flop) as usize).max(3);
    let dt = best_time(reps, || {
        linear_backward(None, false, &mut dw, None, &dy, &x, &[], n, din, dout)
    });
    println!(
        "linear dW  dout={dout:5} din={din:5} n={n:5}: {:.1} GFLOP/s",
        flop / dt / 1e9
    );
}

/// The forward `y = x w^T + b` and the input gradient `dx = dy w` as the layer runs them.
fn forward_and_dx(dout: usize, din: usize, n: usize) {
    let x: Vec<f32> = (0..n * din).map(|i| (i as f32 * 0.11).cos()).collect();
    let w: Vec<f32> = (0..dout * din).map(|i| (i as f32 * 0.23).sin()).collect();
    let b = vec![0.1f32; dout];
    let dy: Vec<f32> = (0..n * dout).map(|i| (i as f32 * 0.37).sin()).collect();
    let (mut y, mut dx) = (vec![0.0f32; n * dout], vec![0.0f32; n * din]);
    let flop = 2.0 * (dout * din * n) as f64;
    let reps = ((2e8 / flop) as usize).max(3);
    let fwd = best_time(reps, || {
        linear_forward(&mut y, &x, &w, Some(&b), n, din, dout)
    });
    let mut dw = vec![0.0f32; dout * din];
    let bwd = best_time(reps, || {
        linear_backward(
            Some(&mut dx),
            false,
            &mut dw,
            None,
            &dy,
            &x,
            &w,
            n,
            din,
            dout,
        )
    });
    let dwt = best_time(reps, || {
        linear_backward(None, false, &mut dw, None, &dy, &x, &w, n, din, dout)
    });
    println!(
        "linear fwd dout={dout:5} din={din:5} n={n:5}: {:.1} GFLOP/s; dx: {:.1} GFLOP/s",
        flop / fwd / 1e9,
        flop / (bwd - dwt).max(1e-9) / 1e9
    );
}

fn main() {
    let only_attention = std::env::args().nth(1).as_deref() == Some("attention");
    // `STAGEWISE_SIMD` names one path to time; unset, every path this CPU has.
    let levels = match stagewise_engine::simd::from_env() {
        Ok(Some(level)) => vec![level],
        Ok(None) => stagewise_engine::simd::supported(),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    for level in levels {
        stagewise_engine::simd::force(Some(level)).unwrap();
        println!("== {level}");
        kernels(only_attention);
    }
}

/// Seconds per call of `f`: the best of 10 trials of `reps` calls.
fn best_time(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..10)
        .map(|_| {
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            t0.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn kernels(only_attention: bool) {
    if !only_attention {
        gemm(1024, 1024, 1024, false, false);
        gemm(512, 192, 64, false, true); // QKV forward
        gemm(512, 64, 192, false, false); // its dX
        gemm(192, 64, 512, true, false); // its dW
        gemm(64, 192, 512, true, false); // its dW, transposed
        gemm(256, 64, 512, true, false); // MLP in dW (= MLP out dW, transposed)
        gemm(64, 256, 512, true, false); // MLP out dW (= MLP in dW, transposed)
        gemm(64, 64, 512, true, false); // output projection dW
        weight_grad(192, 64, 512); // QKV dW as the model computes it
        weight_grad(64, 64, 512); // MLP and output projection dW
        forward_and_dx(192, 64, 512); // QKV
        forward_and_dx(64, 64, 512); // MLP and output projection
    }
    let s = AttnShape {
        nseq: 16,
        t: 32,
        c_model: 64,
        heads: 4,
    };
    let n = s.nseq * s.t;
    let qkv: Vec<f32> = (0..n * 192)
        .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.8)
        .collect();
    let dout: Vec<f32> = (0..n * 64).map(|i| (i as f32 * 0.13).sin()).collect();
    let mut o = vec![0.0f32; n * 64];
    let mut p = vec![0.0f32; 16 * 4 * 32 * 32];
    let mut d = vec![0.0f32; n * 192];
    let reps = 50;
    for stride in [1, 2] {
        let f = best_time(reps, || attention_forward(&mut o, &mut p, &qkv, s, stride));
        let b = best_time(reps, || {
            attention_backward(&mut d, &dout, &qkv, &p, s, stride)
        });
        println!(
            "attention query stride {stride}: forward {:.1} us, backward {:.1} us",
            f * 1e6,
            b * 1e6
        );
    }
    long_attention();
    if only_attention {
        return;
    }
    let (mut out, mut mean, mut rstd) = (vec![0.0f32; n * 64], vec![0.0f32; n], vec![0.0f32; n]);
    let (w, bias) = (vec![1.1f32; 64], vec![0.1f32; 64]);
    let f = best_time(reps, || {
        layernorm_forward(
            &mut out, &mut mean, &mut rstd, &dout, &w, &bias, n, 64, 1e-5,
        )
    });
    let (mut dx, mut dw, mut db) = (vec![0.0f32; n * 64], vec![0.0f32; 64], vec![0.0f32; 64]);
    let b = best_time(reps, || {
        layernorm_backward(
            &mut dx, &mut dw, &mut db, &out, &dout, &mean, &rstd, &w, n, 64,
        )
    });
    println!(
        "layernorm 512 x 64: forward {:.1} us, backward {:.1} us",
        f * 1e6,
        b * 1e6
    );
}

/// A language model's attention (C = 256, 8 heads of 32, every query row) at growing lengths:
/// the lane-parallel kernel below `LONG_T` tokens, on the 16 sequences it takes side by side
/// (fewer would leave lanes idle), the blocked-GEMM one from there, on one sequence; GFLOP/s
/// counts the causal half only.
fn long_attention() {
    for t in [64, LONG_T - 1, LONG_T, 256, 1024] {
        let nseq = if t < LONG_T { 16 } else { 1 };
        let s = AttnShape {
            nseq,
            t,
            c_model: 256,
            heads: 8,
        };
        let n = nseq * t;
        let qkv: Vec<f32> = (0..n * 768)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.8)
            .collect();
        let dout: Vec<f32> = (0..n * 256).map(|i| (i as f32 * 0.13).sin()).collect();
        let (mut o, mut p, mut d) = (
            vec![0.0f32; n * 256],
            vec![0.0f32; s.probs_len(1)],
            vec![0.0f32; n * 768],
        );
        // Two products forward, four backward, each 2 (t^2 / 2) 32 FLOPs per head.
        let flop = (nseq * t * t * 32 * 8) as f64;
        let reps = (2e8 / flop).max(2.0) as usize;
        let f = best_time(reps, || attention_forward(&mut o, &mut p, &qkv, s, 1));
        let b = best_time(reps, || attention_backward(&mut d, &dout, &qkv, &p, s, 1));
        let kernel = if t < LONG_T { "lanes" } else { "blocked" };
        let line = format!(
            "attention t={t:4} C=256 8x32, {nseq:2} seq, {kernel}: fwd {:.0} us ({:.0} GFLOP/s) bwd {:.0} us ({:.0} GFLOP/s)",
            f * 1e6,
            2.0 * flop / f / 1e9,
            b * 1e6,
            4.0 * flop / b / 1e9
        );
        println!("{line}");
    }
}
