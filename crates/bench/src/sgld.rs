//! `stagewise bench sgld`: SGLD chain-draws per second of the L2H4 model on the CPU, optionally
//! next to the PyTorch script `bench/torch_sgld.py` on the same machine.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use stagewise_train::TrainConfig;

/// `stagewise bench sgld`: SGLD chain-draws per second of the L2H4 model (all chains of a
/// checkpoint batched in lockstep), optionally next to `bench/torch_sgld.py` (the reference's
/// one-chain-after-another sampler in PyTorch).
#[derive(Clone, Debug, PartialEq)]
pub struct BenchSgldOptions {
    /// Chains.
    pub chains: usize,
    /// Sequences per minibatch.
    pub batch: usize,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Draws per chain timed.
    pub draws: usize,
    /// Measurements per row, alternating stagewise and PyTorch; the best is shown.
    pub repeat: usize,
    /// In-context examples K.
    pub examples: usize,
    /// Python interpreter with torch: also run bench/torch_sgld.py and print the ratio.
    pub torch: Option<PathBuf>,
    pub torch_script: PathBuf,
}

impl Default for BenchSgldOptions {
    fn default() -> Self {
        BenchSgldOptions {
            chains: 8,
            batch: 1024,
            threads: vec![1, 2],
            draws: 5,
            repeat: 3,
            examples: 16,
            torch: None,
            torch_script: "bench/torch_sgld.py".into(),
        }
    }
}

fn ours_sgld(a: &BenchSgldOptions, threads: usize) -> Result<f64> {
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

fn torch_sgld(a: &BenchSgldOptions, python: &PathBuf, threads: usize) -> Result<f64> {
    let args: Vec<String> = [
        ("--chains", a.chains),
        ("--batch", a.batch),
        ("--threads", threads),
        ("--draws", a.draws),
        ("--k", a.examples),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    crate::machine::torch_json(python, &a.torch_script, &args, "chain_draws_per_s")
}

pub fn sgld(a: &BenchSgldOptions) -> Result<()> {
    let peaks = crate::machine::describe(&a.threads)?;
    let cfg = TrainConfig::l2h4(a.examples, 0).model_config();
    let t = 2 * a.examples;
    let flop = crate::flops_per_pass(&cfg, a.batch * t, t);
    let done = crate::flops_done_per_pass(&cfg, a.batch, t);
    println!(
        "SGLD on L2H4 (K={}), {} chains x batch {}, float32; chain-draws/s over {} draws per chain, \
         best of {} runs alternating with PyTorch's (GFLOP/s: a chain-draw is the full model's forward and backward over its batch; \
         GEMM peak, of peak and needed as in `bench train`)",
        a.examples,
        a.chains,
        a.batch,
        a.draws,
        a.repeat.max(1)
    );
    println!(
        "| threads | stagewise (batched chains) | GFLOP/s | GEMM peak | of peak | needed | PyTorch (chains in sequence) | ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (&t, &peak) in a.threads.iter().zip(&peaks) {
        // Best of `repeat` alternating runs, as in `bench train`.
        let (mut s, mut p, mut peak) = (0.0f64, 0.0f64, peak);
        for _ in 0..a.repeat.max(1) {
            s = s.max(ours_sgld(a, t)?);
            peak = peak.max(crate::machine::gemm_peak(t, 512)?);
            if let Some(py) = &a.torch {
                p = p.max(torch_sgld(a, py, t)?);
            }
        }
        let g = s * flop / 1e9;
        let row = format!(
            "| {t} | {s:.2} | {g:.1} | {peak:.1} | {:.0} % | {:.0} % |",
            100.0 * g / peak,
            100.0 * s * done / 1e9 / peak
        );
        match &a.torch {
            Some(_) => println!("{row} {p:.2} | {:.2}x |", s / p),
            None => println!("{row} - | - |"),
        }
    }
    Ok(())
}
