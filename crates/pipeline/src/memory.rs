//! Memory a stage will need, estimated from its config before anything is allocated or written,
//! against what this machine has available (`MemAvailable` of /proc/meminfo): a config that
//! cannot fit is an error naming the value that makes it large, not an abort half way.
//!
//! The estimates count the float buffers the CPU engine allocates (parameters, optimizer
//! moments, per-chunk activations and gradients, data, chain states, ED's output matrix), in
//! `u128` so that no size overflows; they are upper bounds within a small factor.

use anyhow::{Result, bail};
use stagewise_models::RegressionConfig;
use stagewise_models::batch::ChunkedRunner;
use stagewise_sampling::config::SamplerConfig;
use stagewise_train::TrainConfig;
use stagewise_train::steps::{SpaceSpec, StepsSpec};

/// Bytes this machine can still allocate; `None` where that cannot be read.
pub fn available() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `bytes` as "12.3 GB".
pub fn show(bytes: u128) -> String {
    match bytes {
        b if b >= 1 << 40 => format!("{:.1} TB", b as f64 / 1e12),
        b if b >= 1 << 30 => format!("{:.1} GB", b as f64 / 1e9),
        b => format!("{:.0} MB", (b as f64 / 1e6).ceil()),
    }
}

/// The parameter count of a model config (as `RegressionTransformer::new` lays it out).
pub fn params(cfg: &RegressionConfig) -> u128 {
    let (d1, t, c, m, l) = (
        cfg.token_size() as u128,
        cfg.max_tokens() as u128,
        cfg.embed_size as u128,
        cfg.mlp_size as u128,
        cfg.num_layers as u128,
    );
    let block = 3 * c * c
        + if cfg.include_output { c * c } else { 0 }
        + 2 * m * c
        + m
        + c
        + if cfg.layer_norm { 4 * c } else { 0 };
    c * d1 + c * t + l * block + if cfg.layer_norm { 2 * c } else { 0 } + d1 * c + d1
}

/// Floats of one workspace of `seqs` sequences of `t` tokens (activations and gradient scratch).
pub fn workspace(cfg: &RegressionConfig, seqs: u128, t: u128) -> u128 {
    let (d1, c, m, h, l) = (
        cfg.token_size() as u128,
        cfg.embed_size as u128,
        cfg.mlp_size as u128,
        cfg.num_heads as u128,
        cfg.num_layers as u128,
    );
    let n = seqs * t;
    let per_block = 9 * n * c + 4 * n + seqs * h * t * t.next_multiple_of(8) + 2 * n * m;
    (l + 1) * n * c + l * per_block + 11 * n * c + 2 * n * m + 2 * n + 2 * n * d1 + t * c
}

/// Floats of a chunked runner over `seqs` sequences: its pooled workspaces (one per thread),
/// and a gradient per chunk if asked.
fn chunked(cfg: &RegressionConfig, seqs: u128, t: u128, grads: bool) -> u128 {
    let chunk = ChunkedRunner::<f32>::DEFAULT_CHUNK;
    let chunks = seqs.div_ceil(chunk as u128);
    let pooled = ChunkedRunner::<f32>::workspaces_for(seqs.min(usize::MAX as u128) as usize, chunk);
    pooled as u128 * workspace(cfg, (chunk as u128).min(seqs), t)
        + if grads { chunks * params(cfg) } else { 0 }
}

/// Points of a step spec (what expanding it allocates).
fn step_points(spec: &StepsSpec) -> u128 {
    match spec {
        StepsSpec::List(v) => v.len() as u128,
        StepsSpec::Spaces(s) => [&s.log_space, &s.linear_space]
            .into_iter()
            .map(|x| match x {
                Some(SpaceSpec::Count(n)) => *n as u128,
                Some(SpaceSpec::Range([_, _, n])) if n.is_finite() && *n > 0.0 => *n as u128,
                _ => 0,
            })
            .sum(),
    }
}

/// An error when `bytes` (for `what`, mostly from `cause`) exceed what is available.
pub fn check(what: &str, bytes: u128, cause: &str) -> Result<()> {
    if let Some(free) = available()
        && bytes > free
    {
        bail!(
            "{what} needs about {} of memory, and {} is available: lower {cause}",
            show(bytes),
            show(free)
        );
    }
    Ok(())
}

/// Training on the CPU (parameters, Adam, each chunk's activations and gradient, the training
/// and evaluation batches, the step sets); `on_device`: what the host holds while a device
/// trains (the parameters and Adam state it reads back, the evaluation batches, the step sets).
pub fn check_training(cfg: &TrainConfig, on_device: bool) -> Result<()> {
    let m = cfg.model_config();
    let t = m.max_tokens() as u128;
    let p = params(&m);
    let (b, e) = (cfg.batch_size as u128, cfg.eval_batch_size as u128);
    // What grows with the model: parameters and Adam's moments.
    let model = 4 * 4 * p;
    // What grows with both: a gradient per training chunk.
    let chunk = ChunkedRunner::<f32>::DEFAULT_CHUNK as u128;
    let grads = if on_device {
        0
    } else {
        4 * b.div_ceil(chunk) * p
    };
    // What grows with the batches: the pooled activations and the batches themselves.
    let batches = if on_device {
        4 * e * t * (m.token_size() as u128 + 2)
    } else {
        4 * (chunked(&m, b, t, false)
            + chunked(&m, e, t, false)
            + (b + e) * t * (m.token_size() as u128 + 1))
    };
    let steps = 64
        * (step_points(&cfg.checkpointer_config.checkpoint_steps)
            + step_points(&cfg.logging_config.logging_steps));
    let parts = [
        (
            model,
            format!("task_config.embed_size, mlp_size or num_layers ({p} parameters)"),
        ),
        (batches, "batch_size or eval_batch_size".to_string()),
        (
            grads,
            format!(
                "batch_size or task_config.embed_size, mlp_size or num_layers ({p} parameters)"
            ),
        ),
        (
            steps,
            "the log_space or linear_space of checkpointer_config or logging_config".to_string(),
        ),
    ];
    let total = parts.iter().map(|x| x.0).sum();
    let cause = parts
        .iter()
        .max_by_key(|x| x.0)
        .map_or("", |x| x.1.as_str());
    check("training", total, cause)
}

/// An LLC sweep on the CPU: each chain's state (weights, gradient, noise and optimizer
/// vectors) and its minibatch's chunked workspaces with gradients.
/// On a device (`centres_on_device` checkpoints per launch), the host holds each chain's
/// starting weights and the per-draw losses it reads back.
pub fn check_sampling(
    model: &RegressionConfig,
    s: &SamplerConfig,
    centres_on_device: Option<usize>,
) -> Result<()> {
    let t = model.max_tokens() as u128;
    let mut chains = s.num_chains as u128;
    let per_chain = match centres_on_device {
        Some(q) => {
            chains *= q.max(1) as u128;
            4 * (params(model) + s.num_draws as u128 * (t / 2 + 3))
        }
        None => 8 * 2 * params(model) + 4 * chunked(model, s.grad_batch_size as u128, t, true),
    };
    check(
        "the LLC sweep",
        chains * per_chain,
        match centres_on_device {
            Some(_) => "num_chains, num_draws or --checkpoints-per-launch",
            None => "num_chains or grad_batch_size",
        },
    )
}

/// Essential dynamics: the `[checkpoints, features]` output matrix and one forward pass.
pub fn check_ed(
    model: &RegressionConfig,
    sequences: usize,
    features_per_sequence: usize,
    checkpoints: usize,
) -> Result<()> {
    let n = sequences as u128;
    let t = model.max_tokens() as u128;
    let matrix = 4 * checkpoints as u128 * n * features_per_sequence as u128;
    let pass = 4 * (chunked(model, n, t, false) + n * t * (model.token_size() as u128 + 1));
    check(
        "essential dynamics",
        matrix + pass,
        "--sequences (or the checkpoints selected)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagewise_models::RegressionTransformer;

    #[test]
    fn the_parameter_formula_is_the_models_layout() {
        for (ln, out) in [(true, true), (false, true), (true, false), (false, false)] {
            let mut cfg = RegressionConfig::l2h4(8);
            cfg.layer_norm = ln;
            cfg.include_output = out;
            cfg.mlp_size = 48;
            let model = RegressionTransformer::new(cfg.clone()).unwrap();
            assert_eq!(params(&cfg), model.num_params() as u128);
        }
    }

    #[test]
    fn absurd_sizes_are_refused_and_the_paper_config_fits() {
        if available().is_none() {
            eprintln!("no /proc/meminfo: skipped");
            return;
        }
        let paper = TrainConfig::l2h4(8, 0);
        check_training(&paper, false).unwrap();
        check_training(&paper, true).unwrap();
        let mut big = paper.clone();
        big.task_config.embed_size = 1_000_000_000;
        for on_device in [false, true] {
            let e = check_training(&big, on_device).unwrap_err().to_string();
            assert!(
                e.contains("training needs about") && e.contains("embed_size"),
                "{e}"
            );
        }
        let mut batch = paper.clone();
        batch.batch_size = 1_000_000_000;
        let e = check_training(&batch, false).unwrap_err().to_string();
        assert!(e.contains("lower batch_size"), "{e}");
        // A device holds the training batch; the host only the evaluation batches.
        check_training(&batch, true).unwrap();
        batch.eval_batch_size = 1_000_000_000;
        let e = check_training(&batch, true).unwrap_err().to_string();
        assert!(e.contains("lower batch_size or eval_batch_size"), "{e}");
        let m = paper.model_config();
        let e = check_ed(&m, 100_000_000, 16 * 5, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--sequences"), "{e}");
        check_ed(&m, 1024, 16 * 5, 200).unwrap();
        let mut s = crate::llc::Sampler::tiny().config;
        check_sampling(&m, &s, None).unwrap();
        check_sampling(&m, &s, Some(8)).unwrap();
        s.num_chains = 100_000;
        let e = check_sampling(&m, &s, None).unwrap_err().to_string();
        assert!(e.contains("num_chains"), "{e}");
        s.num_draws = 1_000_000;
        let e = check_sampling(&m, &s, Some(8)).unwrap_err().to_string();
        assert!(e.contains("num_draws or --checkpoints-per-launch"), "{e}");
    }
}
