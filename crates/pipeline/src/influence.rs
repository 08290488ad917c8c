//! Susceptibilities and Bayesian influence functions at a run's checkpoints (regression runs):
//! the unrestricted chains and every restriction's chains run as one lockstep batch per
//! checkpoint, observing fixed sequences at each draw into streaming moments. Results go to
//! `susceptibility/<sampler>/` and `bif/<sampler>/`, one Parquet file per checkpoint written
//! atomically, so a killed call resumes at the first checkpoint without one.

use anyhow::{Result, bail};
use stagewise_sampling::Potential;
use stagewise_sampling::influence::{
    Susceptibility, bif as bif_of, block_mean, susceptibility as chi_of,
};
use stagewise_sampling::observed::{ObserveConfig, ObservedRestriction, sample_observed};

use crate::device::Backend;
use crate::llc::{Checkpoints, Sampler, StepSelection};
use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::{Folder, RunDir};

mod on_device;
pub mod spec;
mod tables;
use spec::{Observable, Restriction};
pub(crate) use tables::combine;
use tables::{draws_parquet, summary_parquet, tokens_parquet};

/// A susceptibility scan.
#[derive(Clone, Debug)]
pub struct SusceptibilityOptions {
    pub sampler: Sampler,
    pub select: StepSelection,
    /// Restriction specs (see [`spec::regression_restrictions`]).
    pub restrict: Vec<String>,
    /// Observable specs (see [`spec::observables`]).
    pub observables: Vec<String>,
    /// Fixed sequences per observable.
    pub sequences: usize,
    /// Also write every draw's observed losses (`<step>.draws.parquet`; memory and disk grow
    /// with the draws).
    pub keep_draws: bool,
    /// Where the chains run (regression runs only on a device).
    pub device: Backend,
}

impl Default for SusceptibilityOptions {
    fn default() -> Self {
        SusceptibilityOptions {
            sampler: Sampler::tiny(),
            select: StepSelection::default(),
            restrict: vec!["heads".into()],
            observables: vec!["reference".into()],
            sequences: 64,
            keep_draws: false,
            device: Backend::Cpu,
        }
    }
}

/// One summary value: a restriction's susceptibility to an observable at one example position
/// (`token`), or averaged over all positions (`token = None`), with its standard error.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    pub restriction: String,
    pub observable: String,
    pub token: Option<usize>,
    pub chi: f64,
    pub se: f64,
    /// Effective sample size of the restriction's driver, and the draws pooled.
    pub ess: f64,
    pub draws: u64,
}

/// What a scan did.
#[derive(Clone, Debug)]
pub struct SusceptibilityResult {
    pub folder: String,
    pub done_before: usize,
    /// The checkpoints computed by this call with their summaries.
    pub steps: Vec<(u64, Vec<SummaryRow>)>,
}

/// The folder of a scan, claimed for `setup` (an error if earlier results used another).
pub(crate) fn claim(folder: &Folder, setup: &str, command: &str) -> Result<()> {
    const SETUP: &str = "setup.yaml";
    match folder.text(SETUP)? {
        Some(old) if old != setup && has_results(folder)? => bail!(
            "{}: earlier results of `stagewise {command}` used another sampler, restriction or observable setup; use another sampler config name or move {} away",
            folder.describe(SETUP),
            folder.display()
        ),
        Some(old) if old == setup => Ok(()),
        _ => folder.put(SETUP, setup.as_bytes()),
    }
}

fn has_results(folder: &Folder) -> Result<bool> {
    Ok(!done_steps(folder)?.is_empty())
}

/// Checkpoints with a result file `<step>.parquet`.
pub(crate) fn done_steps(folder: &Folder) -> Result<Vec<u64>> {
    Ok(folder
        .list()?
        .iter()
        .filter_map(|k| k.strip_suffix(".parquet")?.parse::<u64>().ok())
        .collect())
}

/// What a scan needs from a run, whatever its model: the checkpoints, the tensors (for the
/// restriction masks), the restrictions, the observables' names (the sampling task first) and
/// values observed per sequence.
pub(crate) struct Subject {
    pub steps: Vec<u64>,
    pub tensors: Vec<(String, usize)>,
    pub restrictions: Vec<Restriction>,
    pub observables: Vec<String>,
    /// Values per sequence: K examples, or n_ctx - 1 next tokens.
    pub per_seq: usize,
    /// What one value is called in messages.
    pub unit: &'static str,
}

/// Sets up a scan of `run` for its model on `backend` and calls `scan` with the subject, the
/// sampling potential, the observed sequences (`sequences` per observable) and the weights
/// reader.
#[allow(clippy::too_many_arguments)]
pub(crate) fn with_model<R>(
    run: &RunDir,
    backend: &Backend,
    sampler: &Sampler,
    select: &StepSelection,
    restrict: &[String],
    observables: &[String],
    sequences: usize,
    obs: &dyn Observer,
    scan: &mut dyn FnMut(Subject, &dyn ScanModel) -> Result<R>,
) -> Result<R> {
    if run.is_parity_run() {
        bail!(
            "{}: susceptibilities and the BIF are implemented for the regression transformer and the language model",
            run.display()
        );
    }
    if sequences == 0 {
        bail!("--sequences must be at least 1");
    }
    let seed = sampler.config.init_seed;
    if run.is_language_run() {
        if let Backend::Device(d) = backend {
            bail!(
                "--device: the CUDA backend has no language model yet ({} asked); a language run's susceptibilities and BIF run on the CPU (--device cpu)",
                d.name()
            );
        }
        let (cfg, model, steps) = crate::lm::open_lm_run(run, select)?;
        let restrictions = spec::lm_restrictions(&model.config, restrict)?;
        let names = spec::lm_observables(observables)?;
        let (_tok, train_tokens, test_rows) = crate::lm::lm_data(&cfg, run, obs)?;
        let train_rows = crate::lm::training_rows(&cfg, &train_tokens);
        let pot = crate::lm::lm_potential(&model, &train_rows, &sampler.config);
        let set = spec::lm_observed_set(&model, &train_rows, &test_rows, &names, sequences, seed)?;
        let subject = Subject {
            steps,
            tensors: model.layout.named_sizes(),
            restrictions,
            observables: names,
            per_seq: model.config.n_ctx - 1,
            unit: "next tokens",
        };
        let weights = |s: u64| run.weights(&model, s);
        return scan(
            subject,
            &Model {
                pot: &pot,
                set: &set,
                weights: &weights,
            },
        );
    }
    let ckpts = Checkpoints::open(run)?;
    let steps = ckpts.select(select)?;
    crate::memory::check_sampling(&ckpts.model.config, &sampler.config, None)?;
    let restrictions = spec::regression_restrictions(&ckpts.model.config, restrict)?;
    let kinds = spec::observables(observables)?;
    let pot = ckpts.dataset(&sampler.config);
    let pretrain = ckpts.config.pretrain_distribution();
    let set = spec::observed_set(&ckpts.model, &pretrain, &kinds, sequences, seed);
    let subject = Subject {
        steps,
        tensors: ckpts.model.layout.named_sizes(),
        restrictions,
        observables: kinds.iter().map(Observable::name).collect(),
        per_seq: ckpts.config.task_config.max_examples,
        unit: "examples",
    };
    let weights = |s: u64| ckpts.weights(s);
    let cpu = Model {
        pot: &pot,
        set: &set,
        weights: &weights,
    };
    match backend {
        Backend::Cpu => scan(subject, &cpu),
        Backend::Device(dev) => scan(
            subject,
            &on_device::OnDevice {
                cpu: &cpu,
                dev: dev.clone(),
                model: &ckpts.model,
                data: ckpts.dataset_spec(&sampler.config),
                set: &set,
            },
        ),
    }
}

/// A model's sampling potential and observed sequences, behind one object-safe call.
pub(crate) trait ScanModel {
    fn weights(&self, step: u64) -> Result<Vec<f32>>;
    /// `L(w*)` of the sampling potential.
    fn init_loss(&self, w: &[f32]) -> Result<f64>;
    /// [`sample_observed`] with this model's potential and observer.
    fn sample(
        &self,
        w: &[f32],
        sampler: &Sampler,
        masks: &[Option<Vec<bool>>],
        ocfg: &ObserveConfig,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<ObservedRestriction>>;
}

struct Model<'a, P, O> {
    pot: &'a P,
    set: &'a O,
    weights: &'a dyn Fn(u64) -> Result<Vec<f32>>,
}

impl<P: Potential<f32>, O: stagewise_sampling::observed::Observer<f32>> ScanModel
    for Model<'_, P, O>
{
    fn weights(&self, step: u64) -> Result<Vec<f32>> {
        (self.weights)(step)
    }

    fn init_loss(&self, w: &[f32]) -> Result<f64> {
        Ok(self.pot.init_loss(w))
    }

    fn sample(
        &self,
        w: &[f32],
        sampler: &Sampler,
        masks: &[Option<Vec<bool>>],
        ocfg: &ObserveConfig,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<ObservedRestriction>> {
        let chains = sampler.config.chains();
        Ok(sample_observed(
            self.pot,
            self.set,
            w,
            &sampler.sgld,
            masks,
            &chains,
            ocfg,
            progress,
        ))
    }
}

/// Susceptibilities at a run's checkpoints; see the module documentation.
pub fn susceptibility(
    run: &RunDir,
    opts: &SusceptibilityOptions,
    obs: &dyn Observer,
) -> Result<SusceptibilityResult> {
    let sampler = &opts.sampler;
    with_model(
        run,
        &opts.device,
        sampler,
        &opts.select,
        &opts.restrict,
        &opts.observables,
        opts.sequences,
        obs,
        &mut |subject, model| scan_susceptibility(run, opts, obs, subject, model),
    )
}

fn scan_susceptibility(
    run: &RunDir,
    opts: &SusceptibilityOptions,
    obs: &dyn Observer,
    subject: Subject,
    model: &dyn ScanModel,
) -> Result<SusceptibilityResult> {
    let Subject {
        steps,
        tensors,
        restrictions,
        observables,
        per_seq: k,
        unit,
    } = subject;
    if restrictions.is_empty() {
        bail!("--restrict: no restriction given");
    }
    let mut masks = vec![None];
    masks.extend(spec::masks(&tensors, &restrictions)?);
    let sampler = &opts.sampler;
    let folder = run.root().sub("susceptibility").sub(&sampler.name);
    let _lock = Lock::take(&folder, "lock", "stagewise susceptibility")?;
    folder.clean_interrupted(false)?;
    let setup = setup_text(sampler, &restrictions, &observables, opts.sequences)?;
    claim(&folder, &setup, "susceptibility")?;
    let done = done_steps(&folder)?;
    let todo: Vec<u64> = steps.into_iter().filter(|s| !done.contains(s)).collect();
    let chains = sampler.config.chains();
    let n = opts.sequences;
    obs.message(&format!(
        "susceptibilities at {} checkpoints of {} ({} already done): {} restrictions + the full chains, {} chains x {} draws each, {} observables x {n} sequences x {k} {unit}",
        todo.len(),
        run.display(),
        done.len(),
        restrictions.len(),
        chains.chains,
        chains.draws,
        observables.len()
    ));
    if opts.keep_draws {
        // The stored draws of every chain, and their long table (~64 bytes a row).
        let values = (masks.len() * chains.chains * chains.draws) as u128
            * (observables.len() * n * k) as u128;
        crate::memory::check(
            "--keep-draws",
            72 * values,
            "--sequences, --observables or num_draws",
        )?;
    }
    let per_ckpt = chains.total_steps() as u64;
    obs.start(0, per_ckpt * todo.len() as u64, "SGLD steps");
    let mut out = Vec::new();
    for (i, &step) in todo.iter().enumerate() {
        let w = model.weights(step)?;
        obs.note(&format!("checkpoint {step}: initial loss"));
        let init = model.init_loss(&w)?;
        if !init.is_finite() {
            bail!("checkpoint {step}: the initial loss is {init}");
        }
        let ocfg = ObserveConfig {
            store_draws: opts.keep_draws,
            ..ObserveConfig::new(0..n * k)
        };
        let base = per_ckpt * i as u64;
        let tick = |d: usize| obs.tick(base + d as u64, &|| format!("checkpoint {step}"));
        let res = model.sample(&w, sampler, &masks, &ocfg, &tick)?;
        warn_failures(obs, step, "full", &res[0]);
        if opts.keep_draws {
            let names: Vec<&str> = std::iter::once("full")
                .chain(restrictions.iter().map(|r| r.name.as_str()))
                .collect();
            folder.put(
                &format!("{step}.draws.parquet"),
                &draws_parquet(step, &names, &res, &observables, n, k)?,
            )?;
        }
        let mut summary = Vec::new();
        let mut tokens: Vec<(usize, Susceptibility)> = Vec::new();
        for (ri, r) in restrictions.iter().enumerate() {
            warn_failures(obs, step, &r.name, &res[ri + 1]);
            let chi = chi_of(&res[0], &res[ri + 1], init);
            summary.extend(summarise(&r.name, &chi, &observables, n, k));
            tokens.push((ri, chi));
        }
        let names: Vec<&str> = restrictions.iter().map(|r| r.name.as_str()).collect();
        folder.put(
            &format!("{step}.tokens.parquet"),
            &tokens_parquet(step, &names, &tokens, &observables, n, k)?,
        )?;
        folder.put(
            &format!("{step}.parquet"),
            &summary_parquet(step, &summary)?,
        )?;
        combine(&folder, "susceptibility")?;
        obs.message(&format!(
            "step {step}: {}",
            headline(&summary, &restrictions)
        ));
        out.push((step, summary));
    }
    obs.finish();
    Ok(SusceptibilityResult {
        folder: folder.display(),
        done_before: done.len(),
        steps: out,
    })
}

pub(crate) fn warn_failures(obs: &dyn Observer, step: u64, name: &str, r: &ObservedRestriction) {
    for f in r.failures() {
        obs.message(&format!(
            "warning: checkpoint {step}, restriction {name}: {f}"
        ));
    }
}

/// The resolved setup a folder's results were made with.
fn setup_text(
    sampler: &Sampler,
    restrictions: &[Restriction],
    observables: &[String],
    sequences: usize,
) -> Result<String> {
    let mut s = format!(
        "sequences: {sequences}\nobservables: [{}]\nrestrictions:\n",
        observables
            .iter()
            .map(|o| format!("{o:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for r in restrictions {
        s.push_str(&format!("  {:?}: {:?}\n", r.name, r.include));
    }
    s.push_str("sampler:\n");
    for line in serde_saphyr::to_string(&sampler.config)?.lines() {
        s.push_str(&format!("  {line}\n"));
    }
    Ok(s)
}

/// Per observable, the mean over its sequences at each example position and over all.
fn summarise(
    name: &str,
    chi: &Susceptibility,
    observables: &[String],
    n: usize,
    k: usize,
) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for (oi, o) in observables.iter().enumerate() {
        let base = oi * n * k;
        let mut row = |token: Option<usize>, idx: Vec<usize>| {
            let (chi_v, se) = chi.mean_of(&idx);
            rows.push(SummaryRow {
                restriction: name.into(),
                observable: o.clone(),
                token,
                chi: chi_v,
                se,
                ess: chi.ess,
                draws: chi.draws,
            });
        };
        for t in 0..k {
            row(Some(t), (0..n).map(|s| base + s * k + t).collect());
        }
        row(None, (base..base + n * k).collect());
    }
    rows
}

/// One line per checkpoint: each restriction's susceptibility to the first observable after the
/// sampling task (or to the task), averaged over examples.
fn headline(rows: &[SummaryRow], restrictions: &[Restriction]) -> String {
    // The sampling task comes first; its mean susceptibility is zero by construction.
    let task = rows
        .first()
        .map(|r| r.observable.clone())
        .unwrap_or_default();
    let pick = rows
        .iter()
        .find(|r| r.observable != task)
        .map(|r| r.observable.clone())
        .unwrap_or(task);
    let parts: Vec<String> = restrictions
        .iter()
        .filter_map(|r| {
            rows.iter()
                .find(|x| x.restriction == r.name && x.observable == pick && x.token.is_none())
                .map(|x| format!("{} {:.3e}", r.name, x.chi))
        })
        .collect();
    format!("chi({pick}) {}", parts.join(", "))
}

pub use bif_cmd::{BifLevel, BifOptions, BifResult, bif};
mod bif_cmd;
