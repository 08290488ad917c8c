use stagewise_train::{TrainConfig, Trainer};
fn main() {
    let b: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(256);
    let mut c = TrainConfig::l2h4(16, 0);
    c.batch_size = b;
    let mut tr = Trainer::<f32>::new(c).unwrap();
    for _ in 0..3 {
        tr.step().unwrap();
    }
    let t0 = std::time::Instant::now();
    let n = 30;
    for _ in 0..n {
        tr.step().unwrap();
    }
    println!(
        "B={b} threads={} {:.2} steps/s",
        rayon::current_num_threads(),
        n as f64 / t0.elapsed().as_secs_f64()
    );
}
