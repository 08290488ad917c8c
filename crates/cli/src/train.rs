//! `stagewise train`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use stagewise_pipeline::train::{TrainOptions, TrainResult, train};
use stagewise_pipeline::{Backend, RunDir};

use crate::console::Console;

#[derive(Args)]
pub struct TrainArgs {
    /// Config file (a regression, a language-model or a sparse parity config, told apart by
    /// `transformer_config` and `num_task_bits`); omitted: the built-in quick default.
    pub config: Option<PathBuf>,
    /// Without CONFIG: the built-in quick language-model config (Shakespeare).
    #[arg(long)]
    pub lm: bool,
    /// Without CONFIG: the built-in quick multitask sparse parity config.
    #[arg(long)]
    pub parity: bool,
    /// Override a field: `--set task_config.model_seed=1` (repeatable; YAML values).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Run folder (default: runs/<config name>[-<sweep index>]).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint (with no CONFIG and no --set, the
    /// run's own config.yaml is used).
    #[arg(long)]
    pub resume: bool,
    /// Which run of a sweep grid to train (0-based, grid in key order).
    #[arg(long)]
    pub sweep_index: Option<usize>,
    /// Stop once this many steps of the run are done, as a pre-empted job would (a time slice
    /// on a cluster); `--resume` continues it.
    #[arg(long, value_name = "STEPS")]
    pub stop_after: Option<u64>,
    /// Where to train: cpu, cuda, cuda:N (an NVIDIA GPU), or emulator (the CUDA kernels on
    /// the host, slow; for checks without a GPU).
    #[arg(long, default_value = "cpu")]
    pub device: stagewise_cuda::DeviceSpec,
    #[command(flatten)]
    pub mlflow: crate::place::MlflowArg,
}

pub fn run(a: &TrainArgs) -> Result<()> {
    // A missing GPU is reported before anything is written.
    let device = Backend::open(a.device, crate::tf32())?;
    if crate::parity::is_parity_run(a)? {
        return crate::parity::train(a);
    }
    if crate::lm::is_language_run(a)? {
        return crate::lm::train(a);
    }
    let agent = crate::AGENT_ARGS.get().cloned().unwrap_or_default();
    if !agent.is_empty() {
        return run_agent(a, &agent, device);
    }
    let opts = TrainOptions {
        config: a.config.clone(),
        sets: a.sets.clone(),
        out: a.out.as_deref().map(crate::place::run_dir).transpose()?,
        resume: a.resume,
        sweep_index: a.sweep_index,
        resolved: None,
        device,
        stop_after: a.stop_after,
    };
    let done = train(&opts, &Console::default())?;
    print(&done);
    a.mlflow.export(&done.run)
}

pub fn print(r: &TrainResult) {
    let last = if r.last_loss.is_finite() {
        format!("last batch loss {:.4}", r.last_loss)
    } else {
        "nothing left to train".into()
    };
    eprintln!(
        "done: {} steps, {last}; {} checkpoints in {}, metrics in {}",
        r.num_steps,
        r.checkpoints,
        r.run.checkpoints_location(),
        r.run.metrics_location()
    );
}

/// `stagewise train ${args}` under `wandb agent`: the agent's `--key=value` arguments (over the
/// CONFIG when one is given, else over the reference's defaults, as its train.py does) in the
/// run folder the reference would name (`runs/M-...`); a folder that exists is resumed.
fn run_agent(a: &TrainArgs, agent: &[String], device: Backend) -> Result<()> {
    let mut doc = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            stagewise_io::config::parse_yaml(&text)
                .map_err(|e| anyhow::anyhow!("{}: invalid YAML: {e}", p.display()))?
        }
        None => serde_json::Value::Object(Default::default()),
    };
    if doc.get("parameters").is_some() {
        anyhow::bail!("with W&B agent arguments, CONFIG must be a plain config, not a sweep file");
    }
    let given = stagewise_sweep::wandb::agent_args_document(agent)?;
    merge(&mut doc, given);
    let raw_task = doc.get("task_config").cloned().unwrap_or_default();
    let cfg =
        stagewise_io::config::resolve(doc, "the W&B agent's arguments", &a.sets, None)?.config;
    let run = match &a.out {
        Some(p) => crate::place::run_dir(p)?,
        None => RunDir::local(
            PathBuf::from("runs").join(stagewise_sweep::naming::run_name(&raw_task, &cfg)),
        ),
    };
    let opts = TrainOptions {
        out: Some(run.clone()),
        resume: a.resume || run.has_config(),
        resolved: Some(cfg),
        device,
        ..TrainOptions::default()
    };
    let done = train(&opts, &Console::default())?;
    print(&done);
    a.mlflow.export(&done.run)
}

/// Sets every leaf of `from` in `into` (mappings merge; other values replace).
fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
