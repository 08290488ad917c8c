use stagewise_engine::matmul::matmul;
fn bench(m: usize, n: usize, k: usize, ta: bool, tb: bool) {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let flop = 2.0 * (m * n * k) as f64;
    let reps = ((2e9 / flop) as usize).max(3);
    let t0 = std::time::Instant::now();
    for _ in 0..reps {
        matmul(&mut c, &a, &b, m, n, k, ta, tb, true);
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "m={m:5} n={n:5} k={k:5} ta={ta:5} tb={tb:5}: {:.1} GFLOP/s",
        flop * reps as f64 / dt / 1e9
    );
}
fn main() {
    bench(1024, 1024, 1024, false, false);
    for rows in [512, 1024, 2048] {
        bench(rows, 192, 64, false, true); // qkv fwd
        bench(rows, 64, 64, false, true); // out/mlp fwd
        bench(rows, 64, 192, false, false); // dX = dY W
        bench(192, 64, rows, true, false); // dW = dY^T X
        bench(64, 64, rows, true, false);
    }
}
