//! `stagewise bench train`: training steps per second of the reference's L2H4 model (K = 16 or
//! `examples`, M = infinity, Adam + OneCycle) on the CPU, for each batch size and thread count,
//! optionally next to the PyTorch script `bench/torch_train.py` on the same machine.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
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
    /// Measurements per cell, alternating stagewise and PyTorch; the best is shown.
    pub repeat: usize,
    /// Python interpreter with torch: also run bench/torch_train.py and print the ratio.
    pub torch: Option<PathBuf>,
    /// Path of the PyTorch script.
    pub torch_script: PathBuf,
    /// Then time a whole `stagewise train` of `whole_config` for this many steps (0: skip), with
    /// the largest of `threads`.
    pub whole_steps: u64,
    /// The config of that run (the paper's, by default).
    pub whole_config: PathBuf,
}

impl Default for BenchTrainOptions {
    fn default() -> Self {
        BenchTrainOptions {
            batches: vec![256, 1024],
            threads: vec![1, 2],
            examples: 16,
            steps: 30,
            repeat: 3,
            torch: None,
            torch_script: "bench/torch_train.py".into(),
            whole_steps: 3000,
            whole_config: "configs/l2h4-paper-k8.yaml".into(),
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
    let args: Vec<String> = [
        ("--k", k),
        ("--batch", batch),
        ("--threads", threads),
        ("--steps", steps),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    crate::machine::torch_json(python, script, &args, "steps_per_s")
}

pub fn train(args: &BenchTrainOptions) -> Result<()> {
    let peaks = crate::machine::describe(&args.threads)?;
    let cfg = TrainConfig::l2h4(args.examples, 0).model_config();
    let t = 2 * args.examples;
    println!(
        "L2H4 (D=4, K={}, C=64, H=4, L=2), Adam + OneCycle, float32; steps/s over {} steps, best of {} \
         runs alternating with PyTorch's. GFLOP/s counts the full model's forward and backward (the work PyTorch does); \
         'of peak' divides it by the GEMM peak (the best of the one above and one measured after each of stagewise's \
         runs); 'needed' divides the work stagewise needs (no rows or keys the loss never reads) by the same peak: \
         100 % is the floor",
        args.examples,
        args.steps,
        args.repeat.max(1)
    );
    let with_torch = args.torch.is_some();
    println!(
        "| batch | threads | stagewise (steps/s) | GFLOP/s | GEMM peak | of peak | needed |{}",
        if with_torch {
            " PyTorch eager | ratio |"
        } else {
            ""
        }
    );
    println!(
        "|---:|---:|---:|---:|---:|---:|---:|{}",
        if with_torch { "---:|---:|" } else { "" }
    );
    for &b in &args.batches {
        let flop = crate::flops_per_pass(&cfg, b * t, t);
        let done = crate::flops_done_per_pass(&cfg, b, t);
        for (&th, &peak) in args.threads.iter().zip(&peaks) {
            // Best of `repeat` alternating runs: on a shared machine the best run is the one
            // least disturbed, for both; the peak likewise.
            let (mut s, mut p, mut peak) = (0.0f64, 0.0f64, peak);
            for _ in 0..args.repeat.max(1) {
                s = s.max(ours(args.examples, b, th, args.steps)?);
                peak = peak.max(crate::machine::gemm_peak(th, 512)?);
                if let Some(py) = &args.torch {
                    let r = torch(py, &args.torch_script, args.examples, b, th, args.steps)?;
                    p = p.max(r);
                }
            }
            let g = s * flop / 1e9;
            let row = format!(
                "| {b} | {th} | {s:.2} | {g:.1} | {peak:.1} | {:.0} % | {:.0} % |",
                100.0 * g / peak,
                100.0 * s * done / 1e9 / peak
            );
            match &args.torch {
                Some(_) => println!("{row} {p:.2} | {:.2}x |", s / p),
                None => println!("{row}"),
            }
        }
    }
    if args.whole_steps > 0 {
        crate::whole::whole(&crate::whole::WholeOptions {
            config: args.whole_config.clone(),
            steps: args.whole_steps,
            threads: args.threads.iter().copied().max().unwrap_or(1),
        })?;
    }
    Ok(())
}
