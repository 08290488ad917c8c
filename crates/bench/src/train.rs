//! `stagewise bench train`: training steps per second of the reference's L2H4 model (K = 16 or
//! `examples`, M = infinity, Adam + OneCycle) on the CPU, for each batch size and thread count,
//! optionally next to the PyTorch script `bench/torch_train.py` on the same machine.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use stagewise_train::{TrainConfig, Trainer};

#[derive(Clone, Debug, PartialEq)]
pub struct BenchTrainOptions {
    /// Batch sizes.
    pub batches: Vec<usize>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// In-context examples K (16: the current reference; 8: the paper).
    pub examples: usize,
    /// Timed steps per measurement (after 3 warm-up steps).
    pub steps: usize,
    /// Python interpreter with torch: also run bench/torch_train.py and print the ratio.
    pub torch: Option<PathBuf>,
    /// Path of the PyTorch script.
    pub torch_script: PathBuf,
}

impl Default for BenchTrainOptions {
    fn default() -> Self {
        BenchTrainOptions {
            batches: vec![256, 1024],
            threads: vec![1, 2],
            examples: 16,
            steps: 30,
            torch: None,
            torch_script: "bench/torch_train.py".into(),
        }
    }
}

fn ours(k: usize, batch: usize, threads: usize, steps: usize) -> Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let mut cfg = TrainConfig::l2h4(k, 0);
        cfg.batch_size = batch;
        let mut tr = Trainer::<f32>::new(cfg)?;
        for _ in 0..3 {
            tr.step()?;
        }
        let t0 = Instant::now();
        for _ in 0..steps {
            tr.step()?;
        }
        Ok(steps as f64 / t0.elapsed().as_secs_f64())
    })
}

fn torch(
    python: &PathBuf,
    script: &PathBuf,
    k: usize,
    batch: usize,
    threads: usize,
    steps: usize,
) -> Result<f64> {
    let out = Command::new(python)
        .arg(script)
        .args([
            "--k",
            &k.to_string(),
            "--batch",
            &batch.to_string(),
            "--threads",
            &threads.to_string(),
            "--steps",
            &steps.to_string(),
        ])
        .output()
        .with_context(|| format!("cannot run {} {}", python.display(), script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("unexpected output {line:?}"))?;
    v["steps_per_s"].as_f64().context("steps_per_s missing")
}

pub fn train(args: &BenchTrainOptions) -> Result<()> {
    println!(
        "L2H4 (D=4, K={}, C=64, H=4, L=2), Adam + OneCycle, float32; steps/s over {} steps",
        args.examples, args.steps
    );
    match &args.torch {
        Some(_) => {
            println!("| batch | threads | stagewise | PyTorch eager | ratio |");
            println!("|---:|---:|---:|---:|---:|");
        }
        None => {
            println!("| batch | threads | stagewise |");
            println!("|---:|---:|---:|");
        }
    }
    for &b in &args.batches {
        for &t in &args.threads {
            let s = ours(args.examples, b, t, args.steps)?;
            match &args.torch {
                Some(py) => {
                    let p = torch(py, &args.torch_script, args.examples, b, t, args.steps)?;
                    println!("| {b} | {t} | {s:.2} | {p:.2} | {:.2}x |", s / p);
                }
                None => println!("| {b} | {t} | {s:.2} |"),
            }
        }
    }
    Ok(())
}
