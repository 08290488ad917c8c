//! `stagewise bench train`: training steps per second of the reference's L2H4 model (K = 16 or
//! `--examples`, M = infinity, Adam + OneCycle), for each batch size and thread count, optionally next to the
//! PyTorch script `bench/torch_train.py` run in the same process tree on the same machine.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use stagewise_train::{TrainConfig, Trainer};

#[derive(Args)]
pub struct BenchTrainArgs {
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "256,1024")]
    batches: Vec<usize>,
    /// Thread counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// In-context examples K (16: the current reference; 8: the paper).
    #[arg(long, default_value_t = 16)]
    examples: usize,
    /// Timed steps per measurement (after 3 warm-up steps).
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Python interpreter with torch: also run bench/torch_train.py and print the ratio.
    #[arg(long)]
    torch: Option<PathBuf>,
    /// Path of the PyTorch script.
    #[arg(long, default_value = "bench/torch_train.py")]
    torch_script: PathBuf,
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

pub fn train(args: &BenchTrainArgs) -> Result<()> {
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

/// `stagewise bench sgld`: SGLD chain-draws per second of the L2H4 model (all chains of a
/// checkpoint batched in lockstep), optionally next to `bench/torch_sgld.py` (the reference's
/// one-chain-after-another sampler in PyTorch).
#[derive(Args)]
pub struct BenchSgldArgs {
    /// Chains.
    #[arg(long, default_value_t = 8)]
    chains: usize,
    /// Sequences per minibatch.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Thread counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Draws per chain timed.
    #[arg(long, default_value_t = 5)]
    draws: usize,
    /// In-context examples K.
    #[arg(long, default_value_t = 16)]
    examples: usize,
    /// Python interpreter with torch: also run bench/torch_sgld.py and print the ratio.
    #[arg(long)]
    torch: Option<PathBuf>,
    #[arg(long, default_value = "bench/torch_sgld.py")]
    torch_script: PathBuf,
}

fn ours_sgld(a: &BenchSgldArgs, threads: usize) -> Result<f64> {
    use stagewise_sampling::regression::Dataset;
    use stagewise_sampling::{ChainConfig, Sgld, sample};
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let cfg = TrainConfig::l2h4(a.examples, 0);
        let model = stagewise_models::RegressionTransformer::new(cfg.model_config())?;
        let w: Vec<f32> = model.init_params(0);
        let pot = Dataset::<f32>::new(&model, cfg.pretrain_distribution(), 16_384, a.batch, 0);
        let sgld = Sgld::from_scales(0.03, 0.003, 0.001);
        sample(&pot, &w, &sgld, None, &ChainConfig::new(a.chains, 1, 1));
        let t0 = Instant::now();
        sample(
            &pot,
            &w,
            &sgld,
            None,
            &ChainConfig::new(a.chains, a.draws, 2),
        );
        Ok((a.chains * a.draws) as f64 / t0.elapsed().as_secs_f64())
    })
}

fn torch_sgld(a: &BenchSgldArgs, python: &PathBuf, threads: usize) -> Result<f64> {
    let out = Command::new(python)
        .arg(&a.torch_script)
        .args([
            "--chains",
            &a.chains.to_string(),
            "--batch",
            &a.batch.to_string(),
        ])
        .args([
            "--threads",
            &threads.to_string(),
            "--draws",
            &a.draws.to_string(),
            "--k",
            &a.examples.to_string(),
        ])
        .output()
        .with_context(|| {
            format!(
                "cannot run {} {}",
                python.display(),
                a.torch_script.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            a.torch_script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("unexpected output {line:?}"))?;
    v["chain_draws_per_s"]
        .as_f64()
        .context("chain_draws_per_s missing")
}

pub fn sgld(a: &BenchSgldArgs) -> Result<()> {
    println!(
        "SGLD on L2H4 (K={}), {} chains x batch {}, float32; chain-draws/s over {} draws per chain",
        a.examples, a.chains, a.batch, a.draws
    );
    println!("| threads | stagewise (batched chains) | PyTorch (chains in sequence) | ratio |");
    println!("|---:|---:|---:|---:|");
    for &t in &a.threads {
        let s = ours_sgld(a, t)?;
        match &a.torch {
            Some(py) => {
                let p = torch_sgld(a, py, t)?;
                println!("| {t} | {s:.2} | {p:.2} | {:.2}x |", s / p);
            }
            None => println!("| {t} | {s:.2} | - | - |"),
        }
    }
    Ok(())
}
