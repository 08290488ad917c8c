//! `stagewise train` of a language-model config.

use anyhow::Result;
use stagewise_pipeline::lm::{LmTrainOptions, LmTrainResult, is_language_config, train_lm};

use crate::console::Console;
use crate::train::TrainArgs;

/// Whether `train` was asked for a language-model run: `--lm`, a config with a
/// `transformer_config`, or `--resume` of a language-model run folder.
pub fn is_language_run(a: &TrainArgs) -> Result<bool> {
    if a.lm {
        if a.config.is_some() {
            anyhow::bail!(
                "--lm selects the built-in quick language-model config; give CONFIG or --lm, not both"
            );
        }
        return Ok(true);
    }
    if let Some(p) = &a.config {
        return Ok(is_language_config(&config_doc(p)?));
    }
    if a.resume
        && let Some(out) = &a.out
    {
        return Ok(crate::place::run_dir(out)?.is_language_run());
    }
    Ok(false)
}

/// A config file's YAML document (to tell which kind of run it configures).
pub fn config_doc(p: &std::path::Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    stagewise_io::config::parse_yaml(&text)
        .map_err(|e| anyhow::anyhow!("{}: invalid YAML: {e}", p.display()))
}

pub fn train(a: &TrainArgs) -> Result<()> {
    if a.device != stagewise_cuda::DeviceSpec::Cpu {
        anyhow::bail!("the language model trains on the CPU only (--device cpu)");
    }
    let opts = LmTrainOptions {
        config: a.config.clone(),
        sets: a.sets.clone(),
        out: a.out.as_deref().map(crate::place::run_dir).transpose()?,
        resume: a.resume,
        sweep_index: a.sweep_index,
        stop_after: a.stop_after,
    };
    let r = train_lm(&opts, &Console::default())?;
    print(&r);
    a.mlflow.export(&r.run)
}

/// What a language-model training call did, in one line.
pub fn print(r: &LmTrainResult) {
    let last = if r.last_loss.is_finite() {
        format!(
            "last batch loss {:.4}, last test loss {:.4}",
            r.last_loss, r.last_test_loss
        )
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
