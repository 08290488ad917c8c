//! `stagewise train` of a multitask sparse parity config (or `--parity`).

use anyhow::Result;
use stagewise_pipeline::parity::{
    ParityTrainOptions, ParityTrainResult, is_parity_config, load_parity_configs, train_parity,
};

use crate::console::Console;
use crate::train::TrainArgs;

/// Whether `train` was asked for parity runs: `--parity`, a config with `num_task_bits`, or
/// `--resume` of a parity run folder.
pub fn is_parity_run(a: &TrainArgs) -> Result<bool> {
    if a.parity {
        if a.config.is_some() || a.lm {
            anyhow::bail!(
                "--parity selects the built-in quick parity config; give CONFIG, --lm or --parity, not two"
            );
        }
        return Ok(true);
    }
    if let Some(p) = &a.config {
        return Ok(is_parity_config(&crate::lm::config_doc(p)?));
    }
    if a.resume
        && let Some(out) = &a.out
    {
        return Ok(crate::place::run_dir(out)?.is_parity_run());
    }
    Ok(false)
}

/// Trains the runs; with a sweep of several runs (and no `--sweep-index`), `--out` is the
/// folder that holds them (default `runs`), each in `<out>/<model id>`.
pub fn train(a: &TrainArgs) -> Result<()> {
    if a.device != stagewise_cuda::DeviceSpec::Cpu {
        anyhow::bail!("sparse parity trains on the CPU only (--device cpu)");
    }
    let grid = match &a.config {
        Some(p) if a.sweep_index.is_none() => {
            let text = std::fs::read_to_string(p)?;
            load_parity_configs(&text, &p.display().to_string(), &a.sets, None)?.len()
        }
        _ => 1,
    };
    let (out, root) = match &a.out {
        Some(o) if grid > 1 => (None, Some(o.clone())),
        Some(o) => (Some(crate::place::run_dir(o)?), None),
        None => (None, None),
    };
    let opts = ParityTrainOptions {
        config: a.config.clone(),
        sets: a.sets.clone(),
        root,
        out,
        sweep_index: a.sweep_index,
        resume: a.resume,
        stop_after: a.stop_after,
        resolved: None,
    };
    for r in train_parity(&opts, &Console::default())? {
        print(&r);
        a.mlflow.export(&r.run)?;
    }
    Ok(())
}

/// What a parity training call did for one run, in one line.
pub fn print(r: &ParityTrainResult) {
    let get = |k: &str| r.last.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let last = match (get("Loss"), get("Accuracy")) {
        (Some(l), Some(acc)) => format!("last Loss {l:.4}, Accuracy {acc:.3}"),
        _ => "nothing left to train".into(),
    };
    eprintln!(
        "done: {} ({} steps), {last}; {} checkpoints in {}",
        r.run.display(),
        r.config.num_steps,
        r.checkpoints,
        r.run.checkpoints_location(),
    );
}

/// `stagewise bench parity`.
#[derive(clap::Args)]
pub struct BenchParityArgs {
    /// Runs trained together (and one by one).
    #[arg(long, default_value_t = 16)]
    runs: usize,
    /// Timed steps per run.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Thread counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Measurements per cell; the best is shown.
    #[arg(long, default_value_t = 2)]
    repeat: usize,
    /// Python interpreter with torch: also run bench/torch_parity.py and print the ratio.
    #[arg(long)]
    torch: Option<std::path::PathBuf>,
    #[arg(long, default_value = "bench/torch_parity.py")]
    torch_script: std::path::PathBuf,
}

impl BenchParityArgs {
    pub fn options(&self) -> stagewise_bench::BenchParityOptions {
        stagewise_bench::BenchParityOptions {
            runs: self.runs,
            steps: self.steps,
            threads: self.threads.clone(),
            repeat: self.repeat,
            torch: self.torch.clone(),
            torch_script: self.torch_script.clone(),
        }
    }
}
