//! Calibration: the LLC over a grid of SGLD settings (eps x nbeta x gamma) at a few
//! checkpoints, as the reference's calibration sweeps, with a verdict per setting. Results go
//! to `llc/calibrate-<sampler>/`: `summary.csv` (one row per checkpoint and setting),
//! `traces/<step>/<setting>.csv` and `sampler.yaml`. Settings already in the summary are
//! skipped, so a killed calibration resumes.

use anyhow::{Result, bail};
use stagewise_io::table::Table;
use stagewise_sampling::calibration::Stability;
use stagewise_sampling::{LlcEstimate, Sgld};

use crate::device::Backend;
use crate::llc::{Checkpoints, PerLaunch, Sampler, StepSelection, traces_csv};
use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::{LlcDir, RunDir};

/// The columns of `summary.csv`.
pub const HEADER: [&str; 16] = [
    "step",
    "epsilon",
    "nbeta",
    "gamma",
    "llc/mean",
    "llc/std",
    "loss/init",
    "mala_accept",
    "rhat",
    "frac_below_init",
    "failed_chains",
    "llc/q3",
    "llc/q4",
    "plateaued",
    "non_negative",
    "stable",
];

/// A calibration grid. Empty lists take the sampler config's value.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Base sampler: chains, draws, batch, dataset size, seed, method, restriction.
    pub sampler: Sampler,
    /// Step sizes to try.
    pub eps: Vec<f64>,
    /// n * beta values to try.
    pub nbeta: Vec<f64>,
    /// Localization strengths to try.
    pub gamma: Vec<f64>,
    /// Checkpoints (default: those nearest to 1 %, 10 % and 100 % of training).
    pub select: StepSelection,
    pub device: Backend,
    pub per_launch: PerLaunch,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            sampler: Sampler::tiny(),
            eps: vec![],
            nbeta: vec![],
            gamma: vec![],
            select: StepSelection::default(),
            device: Backend::Cpu,
            per_launch: PerLaunch::default(),
        }
    }
}

/// One row of the summary.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    pub step: u64,
    pub epsilon: f64,
    pub nbeta: f64,
    pub gamma: f64,
    pub llc_mean: f64,
    pub llc_std: f64,
    pub mala_accept: f64,
    pub stability: Stability,
}

/// The whole summary after the call (earlier rows included), sorted by checkpoint and setting.
#[derive(Clone, Debug)]
pub struct CalibrateResult {
    pub summary: String,
    pub rows: Vec<SummaryRow>,
}

fn grid(given: &[f64], default: f64, flag: &str, zero_ok: bool) -> Result<Vec<f64>> {
    for v in given {
        if !(v.is_finite() && (*v > 0.0 || (zero_ok && *v == 0.0))) {
            bail!(
                "{flag} {v}: expected finite values > 0{}",
                if zero_ok { " (or 0)" } else { "" }
            );
        }
    }
    Ok(if given.is_empty() {
        vec![default]
    } else {
        given.to_vec()
    })
}

/// Runs every grid point at every selected checkpoint; see the module documentation.
pub fn calibrate(
    run: &RunDir,
    opts: &CalibrateOptions,
    obs: &dyn Observer,
) -> Result<CalibrateResult> {
    let ckpts = Checkpoints::open(run)?;
    let (sampler, base) = (&opts.sampler, &opts.sampler.sgld);
    let eps = grid(&opts.eps, base.epsilon, "--eps", false)?;
    let nbeta = grid(&opts.nbeta, base.nbeta, "--nbeta", false)?;
    let gamma = grid(&opts.gamma, base.gamma, "--gamma", true)?;
    let steps = if opts.select.is_empty() {
        default_steps(&ckpts)
    } else {
        ckpts.select(&opts.select)?
    };
    let on_device = opts.device.device().map(|_| 1);
    crate::memory::check_sampling(&ckpts.model.config, &sampler.config, on_device)?;
    let mask = ckpts.mask(sampler)?;
    let chains = sampler.config.chains();
    let engine = ckpts.chain_engine(&opts.device, &sampler.config, &opts.per_launch);
    engine
        .check_fits(1, base, mask.as_deref(), &chains)
        .map_err(|e| opts.per_launch.explain(e, chains.chains))?;
    let out: LlcDir = run.calibration(&sampler.name);
    let _lock = Lock::take(&out.folder, "lock", "stagewise llc calibrate")?;
    out.folder.clean_interrupted(true)?;
    out.claim(&sampler.config)?;
    let done: Vec<[f64; 4]> = out
        .complete_rows(LlcDir::SUMMARY, HEADER.len())?
        .iter()
        .map(|r| [r[0], r[1], r[2], r[3]])
        .collect();
    let header: Vec<String> = HEADER.iter().map(|h| h.to_string()).collect();
    let mut table = out.append_table(LlcDir::SUMMARY, &header)?;
    let mut todo = Vec::new();
    for &step in &steps {
        for &e in &eps {
            for &nb in &nbeta {
                for &g in &gamma {
                    if !done.contains(&[step as f64, e, nb, g]) {
                        todo.push((
                            step,
                            Sgld {
                                epsilon: e,
                                nbeta: nb,
                                gamma: g,
                                ..base.clone()
                            },
                        ));
                    }
                }
            }
        }
    }
    obs.message(&format!(
        "calibration at checkpoints {steps:?}: {} settings x {} chains x {} draws ({} already done)",
        eps.len() * nbeta.len() * gamma.len(),
        sampler.config.num_chains,
        sampler.config.num_draws,
        done.len()
    ));
    let per_run = chains.total_steps() as u64;
    obs.start(0, per_run * todo.len() as u64, "SGLD steps");
    let mut current: Option<(u64, Vec<f32>, f64, Vec<f64>)> = None;
    for (i, (step, sgld)) in todo.iter().enumerate() {
        if current.as_ref().is_none_or(|c| c.0 != *step) {
            let w = ckpts.weights(*step)?;
            obs.note(&format!("checkpoint {step}: initial loss"));
            let (init, parts) = engine
                .full_losses(std::slice::from_ref(&w))
                .map_err(|e| opts.per_launch.explain(e, chains.chains))?
                .remove(0);
            if !init.is_finite() {
                bail!("checkpoint {step}: the initial loss is {init}");
            }
            current = Some((*step, w, init, parts));
        }
        let Some((_, w, init, parts)) = current.as_ref() else {
            unreachable!("set just above")
        };
        let label = setting_label(sgld);
        let base_pos = per_run * i as u64;
        let tick = |d: usize| {
            obs.tick(base_pos + d as u64, &|| {
                format!("checkpoint {step}, {label}")
            })
        };
        let traces = engine
            .sample(
                std::slice::from_ref(w),
                sgld,
                mask.as_deref(),
                &chains,
                &tick,
            )
            .map_err(|e| opts.per_launch.explain(e, chains.chains))?
            .remove(0);
        let e = LlcEstimate::from_traces(&traces, *init, parts, sgld.nbeta, None);
        let s = Stability::of(&traces, &e);
        out.write_setting_traces(*step, &label, &traces_csv(&traces, *init, sgld.nbeta, None))?;
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        table.append(
            *step,
            &[
                sgld.epsilon,
                sgld.nbeta,
                sgld.gamma,
                e.mean,
                e.std,
                *init,
                e.mala_accept,
                e.rhat,
                e.frac_below_init,
                e.failures.len() as f64,
                s.third_quarter,
                s.last_quarter,
                flag(s.plateaued),
                flag(s.non_negative),
                flag(s.stable()),
            ],
        )?;
        table.sync()?;
        obs.message(&format!(
            "step {step}, {label}: llc {:.3} +- {:.3}, MALA {:.3}: {}",
            e.mean,
            e.std,
            e.mala_accept,
            s.verdict()
        ));
    }
    obs.finish();
    let summary = out.folder.table(LlcDir::SUMMARY)?.unwrap_or_else(|| Table {
        header,
        rows: vec![],
    });
    Ok(CalibrateResult {
        summary: out.location(LlcDir::SUMMARY),
        rows: summary_rows(&summary),
    })
}

/// `eps=<e>_nbeta=<nb>_gamma=<g>` (names trace files).
fn setting_label(s: &Sgld) -> String {
    format!("eps={}_nbeta={}_gamma={}", s.epsilon, s.nbeta, s.gamma)
}

/// The checkpoints nearest to 1 %, 10 % and 100 % of training.
fn default_steps(ckpts: &Checkpoints) -> Vec<u64> {
    let total = ckpts.config.num_steps as f64;
    let mut steps: Vec<u64> = [0.01, 0.1, 1.0]
        .iter()
        .filter_map(|f| {
            ckpts
                .available
                .iter()
                .min_by(|a, b| {
                    let d = |s: &&u64| (**s as f64 - f * total).abs();
                    d(a).total_cmp(&d(b))
                })
                .copied()
        })
        .collect();
    steps.dedup();
    steps
}

/// The summary's rows, sorted by checkpoint and setting.
fn summary_rows(t: &Table) -> Vec<SummaryRow> {
    let mut rows = t.rows.clone();
    rows.sort_by(|a, b| {
        a[..4]
            .iter()
            .zip(&b[..4])
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    rows.iter()
        .map(|r| SummaryRow {
            step: r[0] as u64,
            epsilon: r[1],
            nbeta: r[2],
            gamma: r[3],
            llc_mean: r[4],
            llc_std: r[5],
            mala_accept: r[7],
            stability: Stability {
                finished: r[10] == 0.0,
                third_quarter: r[11],
                last_quarter: r[12],
                plateaued: r[13] == 1.0,
                non_negative: r[14] == 1.0,
            },
        })
        .collect()
}
