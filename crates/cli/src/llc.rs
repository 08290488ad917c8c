//! `stagewise llc`: LLC estimation over a run's checkpoints, and `stagewise llc check`:
//! estimated vs true learning coefficients on models with known answers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use stagewise_io::atomic::write_atomic;
use stagewise_io::checkpoint::{list_steps, load_model};
use stagewise_io::config::{load_plain, parse_plain};
use stagewise_io::table::{CsvTable, read_csv};
use stagewise_models::RegressionTransformer;
use stagewise_sampling::config::SamplerConfig;
use stagewise_sampling::estimator::running_llc;
use stagewise_sampling::mask::build_mask;
use stagewise_sampling::regression::Dataset;
use stagewise_sampling::toy::{Dln, Polynomial, dln_multiplicity};
use stagewise_sampling::{
    ChainConfig, ChainTrace, LlcEstimate, Method, Potential, Sgld, sample, sample_with_progress,
};

use crate::progress::Progress;
use stagewise_train::TrainConfig;
use stagewise_train::steps::{SpaceSpec, Spaces, StepsSpec};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KnownModel {
    /// `f(x) = x prod_i w_i^{p_i}` at the origin: learning coefficient min_i 1/(2 p_i).
    Polynomial,
    /// Reduced-rank regression `B A x` (`--dims M,H,N`, `--rank r`): Aoyagi-Watanabe formula.
    Rrr,
    /// Deep linear network `W_L ... W_1 x` (`--widths H0,H1,...,HL`, `--rank r`): Aoyagi's formula.
    Dln,
}

#[derive(Args)]
pub struct CheckArgs {
    #[arg(long, value_enum, default_value = "polynomial")]
    model: KnownModel,
    /// Powers p_i of the polynomial model.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    powers: Vec<u32>,
    /// Input, hidden and output dimensions of the reduced-rank regression.
    #[arg(long, value_delimiter = ',', default_value = "5,3,5")]
    dims: Vec<usize>,
    /// Layer widths of the deep linear network, input first.
    #[arg(long, value_delimiter = ',', default_value = "4,3,5,2")]
    widths: Vec<usize>,
    /// Rank of the true map (reduced-rank regression and deep linear network).
    #[arg(long, default_value_t = 1)]
    rank: usize,
    /// Data size n.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Minibatch size (default: full batch).
    #[arg(long)]
    batch: Option<usize>,
    /// Standard deviation of the label noise.
    #[arg(long, default_value_t = 0.0)]
    sigma: f64,
    /// SGLD step size.
    #[arg(long, default_value_t = 1e-3)]
    eps: f64,
    /// n * beta (default: n / ln n).
    #[arg(long)]
    nbeta: Option<f64>,
    /// Localization strength.
    #[arg(long, default_value_t = 1.0)]
    gamma: f64,
    /// Sampler: sgld, rmsprop_sgld or sgnht.
    #[arg(long, default_value = "sgld")]
    method: String,
    /// SGNHT's diffusion factor.
    #[arg(long, default_value_t = 0.01)]
    diffusion_factor: f64,
    #[arg(long, default_value_t = 8)]
    chains: usize,
    #[arg(long, default_value_t = 20_000)]
    draws: usize,
    #[arg(long, default_value_t = 1_000)]
    burnin: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn check(a: &CheckArgs) -> Result<()> {
    for (name, v) in [("--eps", a.eps), ("--gamma", a.gamma), ("--sigma", a.sigma)] {
        if !(v >= 0.0 && v.is_finite()) {
            bail!("{name} = {v}: expected a finite value >= 0");
        }
    }
    if a.eps == 0.0 || a.n < 2 || a.chains == 0 || a.draws == 0 {
        bail!("--eps must be positive, --n at least 2, --chains and --draws at least 1");
    }
    let nbeta = a.nbeta.unwrap_or(a.n as f64 / (a.n as f64).ln());
    let sgld = Sgld {
        nbeta,
        method: match a.method.as_str() {
            "sgld" => Method::Sgld,
            "rmsprop_sgld" => Method::RmsPropSgld {
                alpha: 0.99,
                eps: 0.1,
            },
            "sgnht" => Method::Sgnht {
                diffusion_factor: a.diffusion_factor,
            },
            other => bail!("--method {other:?}: expected sgld, rmsprop_sgld or sgnht"),
        },
        ..Sgld::from_temperature(a.eps, a.gamma, 1.0, 1.0)
    };
    let mut cfg = ChainConfig::new(a.chains, a.draws, a.seed);
    cfg.burnin = a.burnin;
    let (label, truth, e) = match a.model {
        KnownModel::Polynomial => {
            if a.powers.is_empty() || a.powers.contains(&0) {
                bail!(
                    "--powers = {:?}: expected positive integers, e.g. 1,2",
                    a.powers
                );
            }
            let pot = Polynomial::new(a.powers.clone(), a.n, a.sigma, a.batch, a.seed);
            let w0 = vec![0.0f64; a.powers.len()];
            (
                format!("polynomial powers {:?}", a.powers),
                pot.learning_coefficient(),
                estimate(&pot, &w0, &sgld, &cfg, a.n),
            )
        }
        KnownModel::Rrr | KnownModel::Dln => {
            let (flag, widths) = match a.model {
                KnownModel::Rrr => ("--dims", a.dims.clone()),
                _ => ("--widths", a.widths.clone()),
            };
            let expect = if matches!(a.model, KnownModel::Rrr) {
                "three dimensions M,H,N"
            } else {
                "at least three widths H0,H1,...,HL"
            };
            let count_ok = match a.model {
                KnownModel::Rrr => widths.len() == 3,
                _ => widths.len() >= 3,
            };
            if !count_ok || widths.contains(&0) {
                bail!("{flag} = {widths:?}: expected {expect}, all positive");
            }
            let smallest = *widths.iter().min().unwrap();
            if a.rank > smallest {
                bail!(
                    "--rank {} exceeds the smallest width {smallest} of {flag} {widths:?}",
                    a.rank
                );
            }
            let pot = Dln::new(widths.clone(), a.rank, a.n, a.seed);
            let w0 = pot.truth();
            let name = if matches!(a.model, KnownModel::Rrr) {
                "rrr"
            } else {
                "dln"
            };
            (
                format!(
                    "{name} widths {widths:?} rank {} (multiplicity {})",
                    a.rank,
                    dln_multiplicity(&widths, a.rank)
                ),
                pot.learning_coefficient(),
                estimate(&pot, &w0, &sgld, &cfg, a.n),
            )
        }
    };
    if a.json {
        let v = serde_json::json!({
            "model": label, "method": a.method, "n": a.n, "nbeta": nbeta, "eps": a.eps, "gamma": a.gamma,
            "chains": a.chains, "draws": a.draws, "seed": a.seed, "true_lc": truth,
            "llc_mean": e.mean, "llc_std": e.std, "llc_per_chain": e.per_chain, "rhat": e.rhat,
            "mala_accept": if e.mala_accept.is_finite() { Some(e.mala_accept) } else { None },
            "failures": e.failures,
        });
        println!("{v}");
    } else {
        println!(
            "model: {label}, {}, n = {}, nbeta = {nbeta:.4}, eps = {}, gamma = {}",
            a.method, a.n, a.eps, a.gamma
        );
        println!("true learning coefficient: {truth:.4}");
        println!(
            "estimated LLC: {:.4} +- {:.4} (std over {} chains; R-hat {:.3})",
            e.mean, e.std, a.chains, e.rhat
        );
        if e.mala_accept.is_finite() {
            println!("MALA acceptance: {:.4}", e.mala_accept);
        }
        for f in &e.failures {
            println!("failed: {f}");
        }
    }
    Ok(())
}

fn estimate<P: Potential<f64>>(
    pot: &P,
    w0: &[f64],
    sgld: &Sgld,
    cfg: &ChainConfig,
    n: usize,
) -> LlcEstimate {
    let traces = sample(pot, w0, sgld, None, cfg);
    LlcEstimate::from_traces(&traces, pot.init_loss(w0), &[], sgld.nbeta, Some(n as f64))
}

/// `stagewise llc RUN_DIR --config SAMPLER.yaml`.
#[derive(Args)]
pub struct RunArgs {
    /// Run folder written by `stagewise train`.
    pub run: Option<PathBuf>,
    /// Sampler config (YAML, the reference's `SamplerConfig` fields).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a sampler field: `--set num_draws=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[command(flatten)]
    pub select: StepSelection,
    /// Where the chains run: cpu, cuda, cuda:N (an NVIDIA GPU; plain SGLD with grad-minibatch
    /// losses) or emulator (the CUDA kernels on the host, slow).
    #[arg(long, default_value = "cpu")]
    pub device: stagewise_cuda::DeviceSpec,
    /// On a device: checkpoints whose chains run together in one set of launches (Q =
    /// checkpoints x chains weight sets; more fills a large GPU better, at more memory).
    #[arg(long, default_value_t = 1)]
    pub checkpoints_per_launch: usize,
    /// On a device: chains per set of launches (default: all of a checkpoint's chains; fewer
    /// keeps each launch's working set in the GPU's L2 cache, see `bench gpu`).
    #[arg(long)]
    pub chains_per_launch: Option<usize>,
}

/// Estimates the LLC at a run's checkpoints. Results go to `RUN/llc/<sampler name>/`:
/// `sampler.yaml` (the resolved sampler config), `llc.csv` and `llc.parquet` (one row per
/// checkpoint, per-chain LLCs included) and `traces/<step>.csv` (per-chain draw losses).
/// Checkpoints already in `llc.csv` are skipped, so a killed sweep resumes where it stopped.
/// Which checkpoints a command works on: an explicit list, or the reference's log/linear
/// selection; none of them: every checkpoint.
#[derive(Args, Clone, Debug, Default)]
pub struct StepSelection {
    /// Checkpoint steps (default: every checkpoint of the run).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["log_space", "linear_space"])]
    pub steps: Vec<u64>,
    /// The run's checkpoints in `int_logspace(1, num_steps, N)`, like the reference's sweeps
    /// (union with --linear-space).
    #[arg(long)]
    pub log_space: Option<usize>,
    /// ... and in `int_linspace(0, num_steps, N)`.
    #[arg(long)]
    pub linear_space: Option<usize>,
}

impl StepSelection {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.log_space.is_none() && self.linear_space.is_none()
    }
}

/// A run folder written by `stagewise train`: its config, model and checkpoints.
pub struct RunFolder {
    pub train_cfg: TrainConfig,
    pub model: RegressionTransformer,
    pub ckpt_dir: PathBuf,
    pub available: Vec<u64>,
}

impl RunFolder {
    pub fn open(dir: &Path) -> Result<Self> {
        let run_cfg_path = dir.join("config.yaml");
        let text = std::fs::read_to_string(&run_cfg_path).with_context(|| {
            format!(
                "cannot read {}; is {} a stagewise run folder?",
                run_cfg_path.display(),
                dir.display()
            )
        })?;
        let train_cfg = parse_plain(&text, &run_cfg_path)?;
        let model = RegressionTransformer::new(train_cfg.model_config())?;
        let ckpt_dir = dir.join("checkpoints");
        let available = list_steps(&ckpt_dir);
        if available.is_empty() {
            bail!(
                "{}: no checkpoints (files <step>.safetensors); train the run first",
                ckpt_dir.display()
            );
        }
        Ok(RunFolder {
            train_cfg,
            model,
            ckpt_dir,
            available,
        })
    }

    /// Checkpoint steps: an explicit list, the reference's log/linear selection (the run's
    /// checkpoints among `int_logspace(1, num_steps, log)` and `int_linspace(0, num_steps,
    /// lin)`), or by default every checkpoint.
    pub fn select(&self, sel: &StepSelection) -> Result<Vec<u64>> {
        let (steps, log, lin) = (&sel.steps, sel.log_space, sel.linear_space);
        let steps: Vec<u64> = if log.is_some() || lin.is_some() {
            let spec = StepsSpec::Spaces(Spaces {
                log_space: log.map(SpaceSpec::Count),
                linear_space: lin.map(SpaceSpec::Count),
                ..Spaces::default()
            });
            spec.expand(self.train_cfg.num_steps)
                .into_iter()
                .filter(|s| self.available.contains(s))
                .collect()
        } else if steps.is_empty() {
            self.available.clone()
        } else {
            steps.to_vec()
        };
        if steps.is_empty() {
            bail!(
                "{}: the step selection contains no checkpoint of the run",
                self.ckpt_dir.display()
            );
        }
        let missing: Vec<u64> = steps
            .iter()
            .copied()
            .filter(|s| !self.available.contains(s))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{}: no checkpoint for steps {missing:?}",
                self.ckpt_dir.display()
            );
        }
        Ok(steps)
    }

    pub fn weights(&self, step: u64) -> Result<Vec<f32>> {
        Ok(load_model(
            &self.ckpt_dir.join(format!("{step}.safetensors")),
            &self.model,
        )?
        .0)
    }

    /// The sampling potential: `n` sequences of the run's pretraining distribution.
    pub fn potential(&self, sampler: &SamplerConfig) -> Dataset<'_, f32> {
        Dataset::new(
            &self.model,
            self.train_cfg.pretrain_distribution(),
            sampler.eval_dataset_size,
            sampler.grad_batch_size,
            sampler.init_seed,
        )
    }

    /// The restriction mask of the sampler's include/exclude globs.
    pub fn mask(&self, sampler: &SamplerConfig, config: &Path) -> Result<Option<Vec<bool>>> {
        let tensors = self.model.layout.named_sizes();
        build_mask(&tensors, &sampler.include, &sampler.exclude)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))
    }
}

/// A sampler config file with `--set` overrides, validated.
pub fn load_sampler(config: &Path, sets: &[String]) -> Result<(SamplerConfig, Sgld)> {
    let sampler: SamplerConfig = load_plain(config, sets)?;
    let sgld = sampler
        .sgld()
        .map_err(|e| anyhow::anyhow!("{}: field `{}`", config.display(), e))?;
    Ok((sampler, sgld))
}

/// Creates `out` (with `traces/`) for results of `sampler`, refusing a folder that holds
/// results of another sampler config.
pub fn claim_output(out: &Path, sampler: &SamplerConfig) -> Result<()> {
    std::fs::create_dir_all(out.join("traces"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    let saved = out.join("sampler.yaml");
    let resolved = serde_saphyr::to_string(sampler)?;
    match std::fs::read_to_string(&saved) {
        Ok(old) if old != resolved => bail!(
            "{}: earlier results used another sampler config; use another config file name or move {} away",
            saved.display(),
            out.display()
        ),
        Ok(_) => Ok(()),
        Err(_) => Ok(write_atomic(&saved, resolved.as_bytes())?),
    }
}

/// The file stem of a config path (names the output folder).
pub fn config_name(config: &Path) -> String {
    config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sampler".into())
}

pub fn run(a: &RunArgs) -> Result<()> {
    let (Some(run), Some(config)) = (&a.run, &a.config) else {
        bail!(
            "usage: stagewise llc RUN_DIR --config SAMPLER.yaml (or: stagewise llc check|calibrate ...)"
        );
    };
    let folder = RunFolder::open(run)?;
    let (sampler, sgld) = load_sampler(config, &a.sets)?;
    let steps = folder.select(&a.select)?;
    let dev = crate::device::open(a.device)?;
    let out = run.join("llc").join(config_name(config));
    claim_output(&out, &sampler)?;
    let train_cfg = &folder.train_cfg;
    let c = sampler.num_chains;
    let k = train_cfg.task_config.max_examples;
    let header = table_header(c, sampler.per_token.then_some(k));
    let table_path = out.join("llc.csv");
    let done: Vec<u64> = if table_path.exists() {
        read_csv(&table_path)?
            .1
            .iter()
            .filter(|r| r.len() == header.len())
            .map(|r| r[0] as u64)
            .collect()
    } else {
        vec![]
    };
    let mut table = CsvTable::open(&table_path, &header, Some(u64::MAX))?;
    let todo: Vec<u64> = steps.into_iter().filter(|s| !done.contains(s)).collect();
    eprintln!(
        "LLC at {} checkpoints of {} ({} already done): {} chains x {} draws, {}, nbeta {:.4}, eps {}, gamma {:.4}, batch {} of n = {}",
        todo.len(),
        run.display(),
        done.len(),
        c,
        sampler.num_draws,
        sampler.sampling_method,
        sgld.nbeta,
        sgld.epsilon,
        sgld.gamma,
        sampler.grad_batch_size,
        sampler.eval_dataset_size
    );
    let mask = folder.mask(&sampler, config)?;
    let chains = sampler.chains();
    let group = if dev.is_some() {
        a.checkpoints_per_launch.max(1)
    } else {
        1
    };
    let per_ckpt = chains.total_steps() as u64;
    let progress = Progress::new(0, per_ckpt * todo.len() as u64, "SGLD steps");
    let mut finished = 0u64;
    for group_steps in todo.chunks(group) {
        let weights = group_steps
            .iter()
            .map(|s| folder.weights(*s))
            .collect::<Result<Vec<_>>>()?;
        let pot = folder.potential(&sampler);
        let label = match group_steps {
            [one] => format!("checkpoint {one}"),
            many => format!("checkpoints {}-{}", many[0], many[many.len() - 1]),
        };
        progress.note(&format!("{label}: initial loss"));
        let base = per_ckpt * finished;
        let tick = |d: usize| progress.tick(base + d as u64, || label.clone());
        let (inits, all_traces) = match &dev {
            None => {
                let w = &weights[0];
                let init = pot.full_loss(w);
                let traces = sample_with_progress(&pot, w, &sgld, mask.as_deref(), &chains, &tick);
                (vec![init], vec![traces])
            }
            Some(dev) => {
                let spec = stagewise_cuda::sgld::DatasetSpec {
                    dist: pot.dist.clone(),
                    n: pot.n,
                    batch: pot.batch,
                    seed: pot.seed,
                };
                let model = &folder.model;
                // Chains in groups of --chains-per-launch (chain c's draws depend only on the
                // seed and c, so the grouping does not change the result).
                let per = a
                    .chains_per_launch
                    .unwrap_or(chains.chains)
                    .clamp(1, chains.chains.max(1));
                let hint = || {
                    format!(
                        "lower --checkpoints-per-launch (now {group}) or --chains-per-launch \
                         (now {per})"
                    )
                };
                let inits =
                    stagewise_cuda::full_loss::full_losses(dev, model, &spec, &weights, 8192)
                        .map_err(|e| crate::device::memory_hint(e, hint))?;
                let mut traces: Vec<Vec<ChainTrace>> = vec![Vec::new(); weights.len()];
                let groups = chains.chains.div_ceil(per);
                for g in 0..groups {
                    let mut part = chains.clone();
                    part.first_chain = chains.first_chain + (g * per) as u32;
                    part.chains = per.min(chains.chains - g * per);
                    let done = g * chains.total_steps();
                    let got = stagewise_cuda::sgld::sample_dataset(
                        dev,
                        model,
                        &spec,
                        &weights,
                        &sgld,
                        mask.as_deref(),
                        &part,
                        &|d| tick((done + d) / groups * group_steps.len()),
                    )
                    .map_err(|e| crate::device::memory_hint(e, hint))?;
                    for (t, more) in traces.iter_mut().zip(got) {
                        t.extend(more);
                    }
                }
                (inits, traces)
            }
        };
        finished += group_steps.len() as u64;
        for ((step, (init, init_parts)), traces) in group_steps.iter().zip(inits).zip(all_traces) {
            if !init.is_finite() {
                bail!("checkpoint {step}: the initial loss is {init}");
            }
            let e = LlcEstimate::from_traces(
                &traces,
                init,
                &init_parts,
                sgld.nbeta,
                Some(sampler.eval_dataset_size as f64),
            );
            for f in &e.failures {
                progress.println(&format!("warning: checkpoint {step}: {f}"));
            }
            write_traces(
                &out.join("traces").join(format!("{step}.csv")),
                &traces,
                init,
                sgld.nbeta,
                sampler.per_token.then_some(k),
            )?;
            table.append(*step, &table_row(&e, sampler.per_token))?;
            table.sync()?;
            stagewise_tables::csv_to_parquet(&table_path)?;
            progress.println(&format!(
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
        }
    }
    progress.finish();
    eprintln!("done: {}", table_path.display());
    Ok(())
}

/// Columns of `llc.csv`: the estimate (devinterp's names for the chain mean and spread, the
/// reference's for its likelihood-derived and batch-loss metrics), diagnostics, per-chain values
/// and, with `per_token = Some(K)`, per-token LLCs.
fn table_header(chains: usize, per_token: Option<usize>) -> Vec<String> {
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

fn table_row(e: &LlcEstimate, per_token: bool) -> Vec<f64> {
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

/// Writes the traces of one checkpoint (see [`traces_csv`]).
fn write_traces(
    path: &Path,
    traces: &[ChainTrace],
    init_loss: f64,
    nbeta: f64,
    per_token: Option<usize>,
) -> Result<()> {
    write_atomic(
        path,
        traces_csv(traces, init_loss, nbeta, per_token).as_bytes(),
    )?;
    Ok(())
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
        for d in 0..t.losses.len() {
            text.push_str(&format!(
                "{c},{d},{:?},{:?},{:?},{:?}",
                t.losses[d], llc[d], t.distances[d], t.mala[d]
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
