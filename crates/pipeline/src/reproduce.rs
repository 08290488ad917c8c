//! The whole pipeline, train -> llc -> ed -> stages -> indicators -> report, each step
//! resumable (training resumes from its last checkpoint, the LLC sweep skips checkpoints
//! already estimated, the analyses are recomputed from the files).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use stagewise_io::config::parse_yaml;

use crate::device::Backend;
use crate::ed::{EdOptions, ed};
use crate::indicators::{IndicatorsOptions, indicators};
use crate::llc::{
    LlcOptions, SAMPLER_LM_PAPER, SAMPLER_LM_QUICK, SAMPLER_PAPER, SAMPLER_PARITY, SAMPLER_TINY,
    Sampler, StepSelection, llc,
};
use crate::lm::{LmTrainOptions, is_language_config, train_lm};
use crate::observe::{Observer, StageOutput};
use crate::parity::{ParityTrainOptions, is_parity_config, train_parity};
use crate::report::{ReportOptions, report};
use crate::rundir::{RunDir, check_name};
use crate::stages::{StagesOptions, stages};
use crate::train::{TrainOptions, train};

#[derive(Clone, Debug, Default)]
pub struct ReproduceOptions {
    /// Training config (plain or W&B sweep YAML; a regression or a language-model config);
    /// `None`: the built-in quick config (the quick language-model config with `lm`).
    pub config: Option<PathBuf>,
    /// Without `config`: the built-in quick language-model config.
    pub lm: bool,
    /// Without `config`: the built-in quick sparse parity config.
    pub parity: bool,
    /// The small pipeline: the tiny sampler (2 chains x 50 draws; for a language model the quick
    /// LM sampler) unless `sampler` is given.
    pub quick: bool,
    /// Sampler config file of the LLC sweep (default: the built-in tiny sampler with `quick`
    /// or the built-in quick config, the paper's otherwise, and their language-model
    /// counterparts for a language model; written into the run folder).
    pub sampler: Option<PathBuf>,
    /// Training field overrides.
    pub sets: Vec<String>,
    /// Run folder (default: `runs/<config name>`).
    pub out: Option<RunDir>,
    /// Which run of a sweep grid to train.
    pub sweep_index: Option<usize>,
    /// Checkpoints of the LLC sweep (default: every checkpoint).
    pub select: StepSelection,
    /// Also the Hessian indicators (costly).
    pub hessian: bool,
    /// Where training and the LLC sweep run.
    pub device: Backend,
}

/// Runs the pipeline; each stage's result goes to `obs.result` as it finishes.
pub fn reproduce(a: &ReproduceOptions, obs: &dyn Observer) -> Result<RunDir> {
    let name = match &a.config {
        Some(p) => {
            let stem = p
                .file_stem()
                .map_or("run".into(), |s| s.to_string_lossy().into_owned());
            match a.sweep_index {
                Some(i) => format!("{stem}-{i}"),
                None => stem,
            }
        }
        None if a.lm => "lm-quick".into(),
        None if a.parity => "parity-quick".into(),
        None => "quick".into(),
    };
    let (language, parity) = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let doc = parse_yaml(&text)
                .map_err(|e| anyhow::anyhow!("{}: invalid YAML: {e}", p.display()))?;
            (is_language_config(&doc), is_parity_config(&doc))
        }
        None => (a.lm, a.parity),
    };
    let run = match &a.out {
        Some(out) => out.clone(),
        None => {
            check_name("the run name (the config's file name)", &name)?;
            RunDir::local(PathBuf::from("runs").join(&name))
        }
    };
    let shown = run.display();

    obs.message(&format!("[1/6] train -> {shown}"));
    if parity {
        if a.device.device().is_some() {
            bail!("sparse parity trains on the CPU only (--device cpu)");
        }
        let opts = ParityTrainOptions {
            config: a.config.clone(),
            sets: a.sets.clone(),
            root: None,
            out: Some(run.clone()),
            sweep_index: a.sweep_index,
            resume: run.has_config(),
            stop_after: None,
            resolved: None,
        };
        for trained in train_parity(&opts, obs)? {
            obs.result(StageOutput::TrainParity(&trained));
        }
    } else if language {
        if a.device.device().is_some() {
            bail!("the language model trains on the CPU only (--device cpu)");
        }
        let trained = train_lm(
            &LmTrainOptions {
                config: a.config.clone(),
                sets: a.sets.clone(),
                out: Some(run.clone()),
                resume: run.has_config(),
                sweep_index: a.sweep_index,
                stop_after: None,
            },
            obs,
        )?;
        obs.result(StageOutput::TrainLm(&trained));
    } else {
        let trained = train(
            &TrainOptions {
                config: a.config.clone(),
                sets: a.sets.clone(),
                out: Some(run.clone()),
                resume: run.has_config(),
                sweep_index: a.sweep_index,
                resolved: None,
                device: a.device.clone(),
                stop_after: None,
            },
            obs,
        )?;
        obs.result(StageOutput::Train(&trained));
    }

    let (sampler, sampler_shown) = match &a.sampler {
        Some(p) => (Sampler::load(p, &[])?, p.display().to_string()),
        None => {
            // The built-in config is written into the run folder (once; an edited copy there
            // is what later calls use).
            let (stem, text) = match (language, a.quick || a.config.is_none()) {
                _ if parity => ("sampler-parity", SAMPLER_PARITY),
                (true, true) => ("sampler-lm-quick", SAMPLER_LM_QUICK),
                (true, false) => ("sampler-lm-paper", SAMPLER_LM_PAPER),
                (false, true) => ("sampler-tiny", SAMPLER_TINY),
                (false, false) => ("sampler-paper", SAMPLER_PAPER),
            };
            let file = format!("{stem}.yaml");
            if run.file(&file)?.is_none() {
                run.put_file(&file, text.as_bytes())?;
            }
            let origin = run.root().describe(&file);
            let bytes = run.file(&file)?.unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            (Sampler::from_text(stem, &text, &origin, &[])?, origin)
        }
    };
    let sweep = sampler.name.clone();
    obs.message(&format!("[2/6] llc {shown} --config {sampler_shown}"));
    let estimated = llc(
        &run,
        &LlcOptions {
            sampler,
            select: a.select.clone(),
            device: a.device.clone(),
            ..LlcOptions::default()
        },
        obs,
    )?;
    obs.result(StageOutput::Llc(&estimated));

    obs.message(&format!("[3/6] ed {shown}"));
    let dynamics = ed(&run, &EdOptions::default(), obs)?;
    obs.result(StageOutput::Ed(&dynamics));

    obs.message(&format!("[4/6] stages {shown} --llc {sweep}"));
    let found = stages(
        &run,
        &StagesOptions {
            llc: Some(sweep.clone()),
            ..StagesOptions::default()
        },
    )?;
    obs.result(StageOutput::Stages(&found));

    obs.message(&format!(
        "[5/6] indicators {shown}{}",
        if a.hessian { " --hessian" } else { "" }
    ));
    let ind = indicators(
        &run,
        &IndicatorsOptions {
            hessian: a.hessian,
            ..IndicatorsOptions::default()
        },
        obs,
    )?;
    obs.result(StageOutput::Indicators(&ind));

    obs.message(&format!("[6/6] report {shown}"));
    let page = report(
        &run,
        &ReportOptions {
            llc: Some(sweep),
            out: None,
        },
    )?;
    obs.result(StageOutput::Report(&page));
    Ok(run)
}
