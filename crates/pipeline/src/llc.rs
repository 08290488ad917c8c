//! The LLC over a run's checkpoints: SGLD chains at each selected checkpoint (on the chosen
//! chain engine), the estimate per checkpoint in `llc/<sampler>/llc.csv` (and Parquet), the
//! per-draw traces in `traces/<step>.csv`. Checkpoints already in the table are skipped, so a
//! killed sweep resumes where it stopped.

use anyhow::{Result, bail};
use stagewise_cuda::chains::DeviceChains;
use stagewise_cuda::sgld::DatasetSpec;
use stagewise_models::RegressionTransformer;
use stagewise_sampling::config::{GradBatchOrigin, SamplerConfig};
use stagewise_sampling::engine::{ChainEngine, EngineError};
use stagewise_sampling::estimator::running_llc;
use stagewise_sampling::regression::Dataset;
use stagewise_sampling::{ChainTrace, LlcEstimate};
use stagewise_train::TrainConfig;
use stagewise_train::steps::{SpaceSpec, Spaces, StepsSpec};

use crate::device::Backend;
use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::{LlcDir, RunDir};

mod sampler;
pub use sampler::{
    SAMPLER_LM_PAPER, SAMPLER_LM_QUICK, SAMPLER_PAPER, SAMPLER_PARITY, SAMPLER_TINY, Sampler,
    config_name,
};

/// Which checkpoints a stage works on: an explicit list, or the reference's log/linear
/// selection; none of them: every checkpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepSelection {
    /// Checkpoint steps.
    pub steps: Vec<u64>,
    /// The run's checkpoints in `int_logspace(1, num_steps, N)` (union with `linear_space`).
    pub log_space: Option<usize>,
    /// ... and in `int_linspace(0, num_steps, N)`.
    pub linear_space: Option<usize>,
}

impl StepSelection {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.log_space.is_none() && self.linear_space.is_none()
    }
}

/// A trained run: its config, its model and the steps it has checkpoints for.
pub struct Checkpoints {
    pub run: RunDir,
    pub config: TrainConfig,
    pub model: RegressionTransformer,
    pub available: Vec<u64>,
}

impl Checkpoints {
    /// Opens a run folder written by training; an error if it has no checkpoint.
    pub fn open(run: &RunDir) -> Result<Self> {
        let config = run.read_config()?;
        let model = RegressionTransformer::new(config.model_config())?;
        let available = run.checkpoint_steps()?;
        if available.is_empty() {
            bail!(
                "{}: no checkpoints (files <step>.safetensors); train the run first",
                run.checkpoints_location()
            );
        }
        Ok(Checkpoints {
            run: run.clone(),
            config,
            model,
            available,
        })
    }

    /// Checkpoint steps: an explicit list, the reference's log/linear selection (the run's
    /// checkpoints among `int_logspace(1, num_steps, log)` and `int_linspace(0, num_steps,
    /// lin)`), or by default every checkpoint.
    pub fn select(&self, sel: &StepSelection) -> Result<Vec<u64>> {
        select_steps(
            sel,
            self.config.num_steps,
            &self.available,
            &self.run.checkpoints_location(),
        )
    }

    pub fn weights(&self, step: u64) -> Result<Vec<f32>> {
        self.run.weights(&self.model, step)
    }

    /// The sampling potential: `n` sequences of the run's pretraining distribution.
    pub fn dataset(&self, sampler: &SamplerConfig) -> Dataset<'_, f32> {
        Dataset::new(
            &self.model,
            self.config.pretrain_distribution(),
            sampler.eval_dataset_size,
            sampler.grad_batch_size,
            sampler.init_seed,
        )
        .with_infinite_grad_batches(sampler.grad_batch_origin == GradBatchOrigin::InfiniteDataset)
    }

    /// The sampling potential's data set as the device generates it.
    pub fn dataset_spec(&self, sampler: &SamplerConfig) -> DatasetSpec {
        DatasetSpec {
            dist: self.config.pretrain_distribution(),
            n: sampler.eval_dataset_size,
            batch: sampler.grad_batch_size,
            seed: sampler.init_seed,
            infinite: sampler.grad_batch_origin == GradBatchOrigin::InfiniteDataset,
        }
    }

    /// The restriction mask of the sampler's include/exclude globs.
    pub fn mask(&self, sampler: &Sampler) -> Result<Option<Vec<bool>>> {
        sampler.mask(&self.model.layout)
    }

    /// The chain engine of `backend` for this run and sampler.
    pub fn chain_engine<'a>(
        &'a self,
        backend: &Backend,
        sampler: &SamplerConfig,
        per_launch: &PerLaunch,
    ) -> Box<dyn ChainEngine + 'a> {
        match backend {
            Backend::Cpu => Box::new(self.dataset(sampler)),
            Backend::Device(dev) => Box::new(DeviceChains {
                dev: dev.clone(),
                model: &self.model,
                data: self.dataset_spec(sampler),
                centres_per_call: per_launch.checkpoints.max(1),
                chains_per_launch: per_launch.chains,
            }),
        }
    }
}

/// The steps of `sel` among a run's checkpoints (`num_steps` its training length); an error
/// when the run has no checkpoint.
pub(crate) fn selected_checkpoints(
    run: &RunDir,
    num_steps: u64,
    sel: &StepSelection,
) -> Result<Vec<u64>> {
    let available = run.checkpoint_steps()?;
    if available.is_empty() {
        bail!(
            "{}: no checkpoints (files <step>.safetensors); train the run first",
            run.checkpoints_location()
        );
    }
    select_steps(sel, num_steps, &available, &run.checkpoints_location())
}

/// Checkpoint steps of a run of `num_steps` steps with checkpoints `available`: an explicit
/// list, the reference's log/linear selection (the run's checkpoints among `int_logspace(1,
/// num_steps, log)` and `int_linspace(0, num_steps, lin)`), or by default every checkpoint.
/// `location` names the checkpoints folder in errors.
pub fn select_steps(
    sel: &StepSelection,
    num_steps: u64,
    available: &[u64],
    location: &str,
) -> Result<Vec<u64>> {
    let (steps, log, lin) = (&sel.steps, sel.log_space, sel.linear_space);
    let steps: Vec<u64> = if log.is_some() || lin.is_some() {
        // Expanding the spaces holds every point: as much memory as training's step sets.
        let points = log.unwrap_or(0) as u128 + lin.unwrap_or(0) as u128;
        crate::memory::check(
            "the step selection",
            64 * points,
            "--log-space or --linear-space",
        )?;
        let spec = StepsSpec::Spaces(Spaces {
            log_space: log.map(SpaceSpec::Count),
            linear_space: lin.map(SpaceSpec::Count),
            ..Spaces::default()
        });
        spec.expand(num_steps)
            .into_iter()
            .filter(|s| available.contains(s))
            .collect()
    } else if steps.is_empty() {
        available.to_vec()
    } else {
        steps.to_vec()
    };
    let mut sorted = steps.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        bail!("--steps: step {} is given twice", w[0]);
    }
    if steps.is_empty() {
        bail!(
            "{}: the step selection contains no checkpoint of the run",
            location
        );
    }
    let missing: Vec<u64> = steps
        .iter()
        .copied()
        .filter(|s| !available.contains(s))
        .collect();
    if !missing.is_empty() {
        bail!("{}: no checkpoint for steps {missing:?}", location);
    }
    Ok(steps)
}

/// How a device batches a sweep's work.
#[derive(Clone, Debug, PartialEq)]
pub struct PerLaunch {
    /// Checkpoints whose chains run together in one set of launches (Q = checkpoints x chains
    /// weight sets; more fills a large GPU better, at more memory).
    pub checkpoints: usize,
    /// Chains per set of launches (`None`: all of a checkpoint's chains; fewer keeps each
    /// launch's working set in the GPU's L2 cache).
    pub chains: Option<usize>,
}

impl Default for PerLaunch {
    fn default() -> Self {
        PerLaunch {
            checkpoints: 1,
            chains: None,
        }
    }
}

impl PerLaunch {
    /// An engine error as the user sees it: out of device memory, with what to lower.
    pub fn explain(&self, e: EngineError, chains: usize) -> anyhow::Error {
        match e.downcast::<stagewise_cuda::GpuError>() {
            Ok(g) => crate::device::memory_hint(*g, || {
                let per = self.chains.unwrap_or(chains).clamp(1, chains.max(1));
                format!(
                    "lower --checkpoints-per-launch (now {}) or --chains-per-launch (now {per})",
                    self.checkpoints.max(1)
                )
            }),
            Err(e) => anyhow::anyhow!(e),
        }
    }
}

/// An LLC sweep over checkpoints.
#[derive(Clone, Debug)]
pub struct LlcOptions {
    pub sampler: Sampler,
    pub select: StepSelection,
    pub device: Backend,
    pub per_launch: PerLaunch,
}

impl Default for LlcOptions {
    fn default() -> Self {
        LlcOptions {
            sampler: Sampler::tiny(),
            select: StepSelection::default(),
            device: Backend::Cpu,
            per_launch: PerLaunch::default(),
        }
    }
}

/// What a sweep did.
#[derive(Clone, Debug)]
pub struct LlcResult {
    /// Where the table is.
    pub table: String,
    /// Checkpoints estimated by earlier calls.
    pub done_before: usize,
    /// The checkpoints estimated by this call, in order.
    pub estimates: Vec<(u64, LlcEstimate)>,
}

/// Estimates the LLC at a run's checkpoints; see the module documentation. A language-model
/// run (its config has a `transformer_config`) goes to [`crate::lm::llc_lm`], a parity run
/// (`num_task_bits`) to [`crate::parity::llc_parity`].
pub fn llc(run: &RunDir, opts: &LlcOptions, obs: &dyn Observer) -> Result<LlcResult> {
    if run.is_language_run() {
        return crate::lm::llc_lm(run, opts, obs);
    }
    if run.is_parity_run() {
        return crate::parity::llc_parity(run, opts, obs);
    }
    let ckpts = Checkpoints::open(run)?;
    let sampler = &opts.sampler;
    let steps = ckpts.select(&opts.select)?;
    let on_device = opts.device.device().map(|_| opts.per_launch.checkpoints);
    crate::memory::check_sampling(&ckpts.model.config, &sampler.config, on_device)?;
    let mask = ckpts.mask(sampler)?;
    let engine = ckpts.chain_engine(&opts.device, &sampler.config, &opts.per_launch);
    let sweep = Sweep {
        run,
        engine: engine.as_ref(),
        steps,
        mask,
        positions: ckpts.config.task_config.max_examples,
        weights: &|s| ckpts.weights(s),
    };
    sweep.run(opts, obs)
}

/// One LLC sweep, whatever the model: the chain engine, the checkpoints to estimate and how to
/// read their weights, the restriction mask and the number of per-token parts.
pub struct Sweep<'a> {
    pub run: &'a RunDir,
    pub engine: &'a dyn ChainEngine,
    pub steps: Vec<u64>,
    pub mask: Option<Vec<bool>>,
    /// Per-token parts of the loss (K for the regression model, n_ctx - 1 for the LM).
    pub positions: usize,
    pub weights: &'a dyn Fn(u64) -> Result<Vec<f32>>,
}

impl Sweep<'_> {
    /// Runs the sweep, writing and resuming `llc/<sampler>/`.
    pub fn run(self, opts: &LlcOptions, obs: &dyn Observer) -> Result<LlcResult> {
        let Sweep {
            run,
            engine,
            steps,
            mask,
            positions: k,
            weights: read_weights,
        } = self;
        let sampler = &opts.sampler;
        let chains = sampler.config.chains();
        let explain = |e: EngineError| opts.per_launch.explain(e, chains.chains);
        engine
            .check_fits(steps.len(), &sampler.sgld, mask.as_deref(), &chains)
            .map_err(explain)?;
        let out = run.llc(&sampler.name);
        let _lock = Lock::take(&out.folder, "lock", "stagewise llc")?;
        out.folder.clean_interrupted(true)?;
        out.claim(&sampler.config)?;
        let sgld = &sampler.sgld;
        let c = sampler.config.num_chains;
        let per_token = sampler.config.per_token;
        let header = table_header(c, per_token.then_some(k));
        let done: Vec<u64> = out
            .complete_rows(LlcDir::TABLE, header.len())?
            .iter()
            .map(|r| r[0] as u64)
            .collect();
        let mut table = out.append_table(LlcDir::TABLE, &header)?;
        if let Some(line) = table.torn_line() {
            obs.message(&format!(
                "{}: dropped the torn last line {line:?} (a write cut short); that checkpoint is estimated again",
                table.location()
            ));
        }
        let todo: Vec<u64> = steps.into_iter().filter(|s| !done.contains(s)).collect();
        obs.message(&format!(
            "LLC at {} checkpoints of {} ({} already done): {} chains x {} draws, {}, nbeta {:.4}, eps {}, gamma {:.4}, batch {} of n = {}",
            todo.len(),
            run.display(),
            done.len(),
            c,
            sampler.config.num_draws,
            sampler.config.sampling_method,
            sgld.nbeta,
            sgld.epsilon,
            sgld.gamma,
            sampler.config.grad_batch_size,
            sampler.config.eval_dataset_size
        ));
        let per_ckpt = chains.total_steps() as u64;
        obs.start(0, per_ckpt * todo.len() as u64, "SGLD steps");
        let mut finished = 0u64;
        let mut estimates = Vec::new();
        for group in todo.chunks(engine.centres_per_call()) {
            let weights = group
                .iter()
                .map(|s| read_weights(*s))
                .collect::<Result<Vec<_>>>()?;
            let label = match group {
                [one] => format!("checkpoint {one}"),
                many => format!("checkpoints {}-{}", many[0], many[many.len() - 1]),
            };
            obs.note(&format!("{label}: initial loss"));
            let base = per_ckpt * finished;
            let inits = engine.full_losses(&weights).map_err(explain)?;
            let tick = |d: usize| obs.tick(base + (d * group.len()) as u64, &|| label.clone());
            let all_traces = engine
                .sample(&weights, sgld, mask.as_deref(), &chains, &tick)
                .map_err(explain)?;
            finished += group.len() as u64;
            for ((step, (init, init_parts)), traces) in group.iter().zip(inits).zip(all_traces) {
                if !init.is_finite() {
                    bail!("checkpoint {step}: the initial loss is {init}");
                }
                let e = LlcEstimate::from_traces(
                    &traces,
                    init,
                    &init_parts,
                    sgld.nbeta,
                    Some(sampler.config.eval_dataset_size as f64),
                );
                for f in &e.failures {
                    obs.message(&format!("warning: checkpoint {step}: {f}"));
                }
                out.write_traces(
                    *step,
                    &traces_csv(&traces, init, sgld.nbeta, per_token.then_some(k)),
                )?;
                table.append(*step, &table_row(&e, per_token))?;
                table.sync()?;
                out.parquet_copy(LlcDir::TABLE)?;
                obs.message(&format!(
                    "step {step}: llc {:.3} +- {:.3} (init loss {init:.4}, R-hat {:.3}{})",
                    e.mean,
                    e.std,
                    e.rhat,
                    if e.mala_accept.is_finite() {
                        format!(", MALA acceptance {:.3}", e.mala_accept)
                    } else {
                        String::new()
                    }
                ));
                estimates.push((*step, e));
            }
        }
        obs.finish();
        Ok(LlcResult {
            table: out.table_location(),
            done_before: done.len(),
            estimates,
        })
    }
}

/// Columns of `llc.csv`: the estimate (devinterp's names for the chain mean and spread, the
/// reference's for its likelihood-derived and batch-loss metrics), diagnostics, per-chain values
/// and, with `per_token = Some(K)`, per-token LLCs.
pub fn table_header(chains: usize, per_token: Option<usize>) -> Vec<String> {
    let mut h: Vec<String> = [
        "step",
        "llc/mean",
        "llc/std",
        "loss/init",
        "loss/mean",
        "loss/std",
        "wbic/mean",
        "wbic/std",
        "llc/std/draws",
        "rhat",
        "frac_below_init",
        "mala_accept",
        "distance/mean",
        "failed_chains",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for prefix in ["llc/chain", "batch-loss/mean", "batch-loss/std"] {
        h.extend((0..chains).map(|i| format!("{prefix}/{i}")));
    }
    if let Some(k) = per_token {
        h.extend((0..k).map(|t| format!("loss/init/{t}")));
        h.extend((0..k).map(|t| format!("llc/mean/{t}")));
        h.extend(["llc/mean/mean".to_string(), "llc/mean/std".to_string()]);
    }
    h
}

/// One row of `llc.csv` (after the step), in [`table_header`]'s order.
pub fn table_row(e: &LlcEstimate, per_token: bool) -> Vec<f64> {
    let mut row = vec![
        e.mean,
        e.std,
        e.init_loss,
        e.loss_mean,
        e.loss_std,
        e.wbic.unwrap_or(f64::NAN),
        e.wbic_std.unwrap_or(f64::NAN),
        e.draw_std,
        e.rhat,
        e.frac_below_init,
        e.mala_accept,
        e.distance_mean,
        e.failures.len() as f64,
    ];
    row.extend(&e.per_chain);
    row.extend(&e.chain_loss_mean);
    row.extend(&e.chain_loss_std);
    if per_token {
        row.extend(&e.init_parts);
        row.extend(&e.per_part);
        let m = e.per_part.iter().sum::<f64>() / e.per_part.len() as f64;
        let var = e.per_part.iter().map(|v| (v - m).powi(2)).sum::<f64>() / e.per_part.len() as f64;
        row.extend([m, var.sqrt()]);
    }
    row
}

/// One row per (chain, draw): the draw's loss, the chain's running LLC (the online trace),
/// the distance from w*, the MALA acceptance and, with `per_token = Some(K)`, the per-token
/// losses. Rows of a failed chain stop at its failure.
pub fn traces_csv(
    traces: &[ChainTrace],
    init_loss: f64,
    nbeta: f64,
    per_token: Option<usize>,
) -> String {
    let mut text = String::from("chain,draw,loss,llc,distance,mala_accept");
    for t in 0..per_token.unwrap_or(0) {
        text.push_str(&format!(",loss/{t}"));
    }
    text.push('\n');
    for (c, t) in traces.iter().enumerate() {
        let llc = running_llc(&t.losses, init_loss, nbeta);
        for (d, (loss, llc)) in t.losses.iter().zip(&llc).enumerate() {
            text.push_str(&format!(
                "{c},{d},{loss:?},{llc:?},{:?},{:?}",
                t.distances[d], t.mala[d]
            ));
            if per_token.is_some() {
                for v in &t.parts[d] {
                    text.push_str(&format!(",{v:?}"));
                }
            }
            text.push('\n');
        }
    }
    text
}
