//! `stagewise bench lm`: training steps per second of the language model (the reference's size,
//! or the quick config's) on the CPU, optionally next to `bench/torch_lm.py` on the same
//! machine, with the step's FLOP count and its distance from this CPU's GEMM peak.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use stagewise_models::language::LanguageConfig;
use stagewise_train::lm::{LmTrainConfig, LmTrainer, TransformerConfig};

#[derive(Clone, Debug, PartialEq)]
pub struct BenchLmOptions {
    /// `reference` (2 layers, d_model 256, 8 x 32 heads, n_ctx 1024, vocabulary 5,000) or
    /// `quick` (configs/lm-quick.yaml's sizes: d_model 128, 4 x 32 heads, n_ctx 128, 2,048).
    pub model: String,
    /// Sequences per batch (default: 4 for the reference's size, 16 for the quick one).
    pub batch: Option<usize>,
    pub threads: Vec<usize>,
    /// Timed steps per measurement (after 2 warm-up steps).
    pub steps: usize,
    /// Measurements per cell, alternating stagewise and PyTorch; the best is shown.
    pub repeat: usize,
    /// Python interpreter with torch: also run the PyTorch script and print the ratio.
    pub torch: Option<PathBuf>,
    pub torch_script: PathBuf,
}

impl Default for BenchLmOptions {
    fn default() -> Self {
        BenchLmOptions {
            model: "reference".into(),
            batch: None,
            threads: vec![1, 2],
            steps: 3,
            repeat: 2,
            torch: None,
            torch_script: "bench/torch_lm.py".into(),
        }
    }
}

fn sizes(name: &str) -> Result<(LanguageConfig, usize)> {
    match name {
        "reference" => Ok((LanguageConfig::reference(), 4)),
        "quick" => Ok((
            LanguageConfig {
                n_layers: 2,
                d_model: 128,
                n_heads: 4,
                d_head: 32,
                n_ctx: 128,
                d_vocab: 2048,
            },
            16,
        )),
        other => bail!("--model {other:?}: expected reference or quick"),
    }
}

/// FLOPs of one training step of `nseq` sequences of n_ctx tokens, counted as PyTorch does the
/// work (forward x 3 for forward and backward; full T x T attention scores): per token and
/// layer, Q, K, V and the output projection (8 C A) and scores and weighted sum (4 T A); the
/// unembedding 2 C V.
pub fn lm_step_flops(c: &LanguageConfig, nseq: usize) -> f64 {
    let (cm, a, t, v) = (
        c.d_model as f64,
        c.attn_width() as f64,
        c.n_ctx as f64,
        c.d_vocab as f64,
    );
    let per_token = c.n_layers as f64 * (8.0 * cm * a + 4.0 * t * a) + 2.0 * cm * v;
    3.0 * per_token * t * nseq as f64
}

fn ours(cfg: &LanguageConfig, batch: usize, threads: usize, steps: usize) -> Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let tc = LmTrainConfig {
            num_steps: 1_000,
            batch_size: batch,
            transformer_config: TransformerConfig {
                n_layers: cfg.n_layers,
                d_model: cfg.d_model,
                d_head: cfg.d_head,
                n_heads: cfg.n_heads,
                n_ctx: cfg.n_ctx,
                d_vocab: cfg.d_vocab,
                ..TransformerConfig::default()
            },
            optimizer_config: stagewise_train::config::OptimizerConfig {
                optimizer_type: "AdamW".into(),
                lr: 1e-3,
                betas: [0.9, 0.999],
                weight_decay: 0.05,
            },
            ..LmTrainConfig::new(TransformerConfig::default(), "-", "-")
        };
        let mut tr = LmTrainer::<f32>::new(&tc)?;
        // Random token rows (as the PyTorch script's), enough for every step to differ.
        let nrows = batch * (steps + 2);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let ids: Vec<u32> = (0..nrows * cfg.n_ctx)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) % cfg.d_vocab as u64) as u32
            })
            .collect();
        let rows = (ids, cfg.n_ctx);
        for _ in 0..2 {
            tr.step(&rows)?;
        }
        let t0 = Instant::now();
        for _ in 0..steps {
            tr.step(&rows)?;
        }
        Ok(steps as f64 / t0.elapsed().as_secs_f64())
    })
}

fn torch(
    o: &BenchLmOptions,
    python: &PathBuf,
    c: &LanguageConfig,
    batch: usize,
    threads: usize,
) -> Result<f64> {
    let args: Vec<String> = [
        ("--layers", c.n_layers),
        ("--d-model", c.d_model),
        ("--heads", c.n_heads),
        ("--d-head", c.d_head),
        ("--ctx", c.n_ctx),
        ("--vocab", c.d_vocab),
        ("--batch", batch),
        ("--threads", threads),
        ("--steps", o.steps),
    ]
    .iter()
    .flat_map(|(k, v)| [k.to_string(), v.to_string()])
    .collect();
    crate::machine::torch_json(python, &o.torch_script, &args, "steps_per_s")
}

pub fn lm(o: &BenchLmOptions) -> Result<()> {
    let (cfg, default_batch) = sizes(&o.model)?;
    let batch = o.batch.unwrap_or(default_batch);
    let peaks = crate::machine::describe(&o.threads)?;
    let flop = lm_step_flops(&cfg, batch);
    println!(
        "language model ({}: L={}, C={}, {} heads x {}, n_ctx {}, vocabulary {}), AdamW, float32, batch {batch} x {} tokens: \
         {:.1} GFLOP per step (forward and backward as PyTorch does the work); steps/s over {} steps, best of {} runs \
         alternating with PyTorch's (scaled_dot_product_attention); 'of peak' divides GFLOP/s by the GEMM peak above",
        o.model,
        cfg.n_layers,
        cfg.d_model,
        cfg.n_heads,
        cfg.d_head,
        cfg.n_ctx,
        cfg.d_vocab,
        cfg.n_ctx,
        flop / 1e9,
        o.steps,
        o.repeat.max(1)
    );
    let with_torch = o.torch.is_some();
    println!(
        "| threads | stagewise (steps/s) | tokens/s | GFLOP/s | of peak |{}",
        if with_torch {
            " PyTorch eager | ratio |"
        } else {
            ""
        }
    );
    println!(
        "|---:|---:|---:|---:|---:|{}",
        if with_torch { "---:|---:|" } else { "" }
    );
    for (&th, peak) in o.threads.iter().zip(&peaks) {
        let (mut s, mut p) = (0.0f64, 0.0f64);
        for _ in 0..o.repeat.max(1) {
            s = s.max(ours(&cfg, batch, th, o.steps)?);
            if let Some(py) = &o.torch {
                p = p.max(torch(o, py, &cfg, batch, th)?);
            }
        }
        let g = s * flop / 1e9;
        let row = format!(
            "| {th} | {s:.3} | {:.0} | {g:.1} | {:.0} % |",
            s * (batch * cfg.n_ctx) as f64,
            100.0 * g / peak
        );
        match &o.torch {
            Some(_) => println!("{row} {p:.3} | {:.2}x |", s / p),
            None => println!("{row}"),
        }
    }
    Ok(())
}
