//! Training on every code path this CPU supports: within a path the result does not depend on
//! the thread count (bit for bit) and a restored state continues exactly; across paths the
//! same run agrees to float32 rounding. This is the only test in its binary, so switching the
//! process-wide path disturbs no other test.

use stagewise_engine::simd::{self, Level};
use stagewise_train::Trainer;
use stagewise_train::config::TrainConfig;

fn config() -> TrainConfig {
    let mut c = TrainConfig::l2h4(8, 3);
    c.task_config.embed_size = 32;
    c.task_config.mlp_size = 32;
    c.num_steps = 100;
    c.batch_size = 48;
    c
}

fn run(threads: usize, steps: usize) -> (Vec<f32>, f64) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut tr = Trainer::<f32>::new(config()).unwrap();
        let mut loss = 0.0;
        for _ in 0..steps {
            loss = tr.step().unwrap();
        }
        (tr.state().unwrap().params, loss)
    })
}

#[test]
fn every_code_path_trains_thread_count_independently_and_agrees_with_the_others() {
    let supported = simd::supported();
    let mut results: Vec<(Level, Vec<f32>, f64)> = Vec::new();
    for level in Level::ALL {
        if !supported.contains(&level) {
            println!(
                "skipped {level} ({}): not supported by this CPU",
                level.name()
            );
            continue;
        }
        simd::force(Some(level)).unwrap();
        let (p1, l1) = run(1, 15);
        let (p3, l3) = run(3, 15);
        assert!(p1 == p3 && l1 == l3, "{level}: 1 and 3 threads differ");
        // Resume: 10 steps, save, restore into a fresh trainer, 5 more == 15 straight.
        let mut tr = Trainer::<f32>::new(config()).unwrap();
        for _ in 0..10 {
            tr.step().unwrap();
        }
        let mut resumed = Trainer::<f32>::new(config()).unwrap();
        resumed.restore(tr.state().unwrap()).unwrap();
        for _ in 0..5 {
            resumed.step().unwrap();
        }
        assert!(
            resumed.state().unwrap().params == p1,
            "{level}: resume differs"
        );
        println!(
            "checked {level} ({}): loss after 15 steps {l1}",
            level.name()
        );
        results.push((level, p1, l1));
    }
    simd::force(None).unwrap();
    let (first, p0, l0) = &results[0];
    let norm = p0.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    for (level, p, l) in &results[1..] {
        let diff = p0
            .iter()
            .zip(p)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            diff <= 1e-4 * norm,
            "{first} vs {level}: weights differ by {diff:e} (norm {norm})"
        );
        assert!(
            (l - l0).abs() <= 1e-4 * l0.abs(),
            "{first} vs {level}: loss {l0} vs {l}"
        );
    }
}
