use stagewise_engine::attention::{AttnShape, attention_backward, attention_forward};
use stagewise_engine::layernorm::{layernorm_backward, layernorm_forward};
fn main() {
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
    let reps = 400;
    for stride in [1, 2] {
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            attention_forward(&mut o, &mut p, &qkv, s, stride);
        }
        let f = t0.elapsed().as_secs_f64() / reps as f64;
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            attention_backward(&mut d, &dout, &qkv, &p, s, stride);
        }
        let b = t0.elapsed().as_secs_f64() / reps as f64;
        println!(
            "stride {stride}: fwd {:.1} us, bwd {:.1} us per chunk (16 seq)",
            f * 1e6,
            b * 1e6
        );
    }
    let (mut out, mut mean, mut rstd) = (vec![0.0f32; n * 64], vec![0.0f32; n], vec![0.0f32; n]);
    let w = vec![1.1f32; 64];
    let bb = vec![0.1f32; 64];
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        layernorm_forward(&mut out, &mut mean, &mut rstd, &dout, &w, &bb, n, 64, 1e-5);
    }
    let f = t0.elapsed().as_secs_f64() / reps as f64;
    let (mut dx, mut dw, mut db) = (vec![0.0f32; n * 64], vec![0.0f32; 64], vec![0.0f32; 64]);
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        layernorm_backward(
            &mut dx, &mut dw, &mut db, &out, &dout, &mean, &rstd, &w, n, 64,
        );
    }
    let b = t0.elapsed().as_secs_f64() / reps as f64;
    println!(
        "layernorm 512x64: fwd {:.1} us, bwd {:.1} us",
        f * 1e6,
        b * 1e6
    );
}
