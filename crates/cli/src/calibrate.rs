//! `stagewise llc calibrate`: the LLC over a grid of SGLD settings (eps x nbeta x gamma) at a
//! few checkpoints, as the reference's calibration sweeps, with a verdict per setting.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use stagewise_io::atomic::write_atomic;
use stagewise_io::table::{CsvTable, read_csv};
use stagewise_sampling::calibration::Stability;
use stagewise_sampling::{LlcEstimate, Potential, Sgld, sample_with_progress};

use crate::llc::{RunFolder, StepSelection, claim_output, config_name, load_sampler, traces_csv};
use crate::progress::Progress;

#[derive(Args)]
pub struct CalibrateArgs {
    /// Run folder written by `stagewise train`.
    run: PathBuf,
    /// Base sampler config: chains, draws, batch, dataset size, seed, method, restriction.
    #[arg(long)]
    config: PathBuf,
    /// Override a sampler field: `--set num_draws=1000` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Step sizes to try (default: the config's).
    #[arg(long, value_delimiter = ',')]
    eps: Vec<f64>,
    /// n * beta values to try (default: the config's).
    #[arg(long, value_delimiter = ',')]
    nbeta: Vec<f64>,
    /// Localization strengths to try (default: the config's).
    #[arg(long, value_delimiter = ',')]
    gamma: Vec<f64>,
    #[command(flatten)]
    select: StepSelection,
}

const HEADER: [&str; 16] = [
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

/// Runs every grid point at every selected checkpoint; writes `RUN/llc/calibrate-<config>/`:
/// `summary.csv` (one row per checkpoint and setting), `traces/<step>/<setting>.csv` and
/// `sampler.yaml`. Settings already in the summary are skipped, so a killed calibration resumes.
pub fn calibrate(a: &CalibrateArgs) -> Result<()> {
    let folder = RunFolder::open(&a.run)?;
    let (sampler, base) = load_sampler(&a.config, &a.sets)?;
    let grid = |given: &[f64], default: f64, flag: &str, zero_ok: bool| -> Result<Vec<f64>> {
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
    };
    let eps = grid(&a.eps, base.epsilon, "--eps", false)?;
    let nbeta = grid(&a.nbeta, base.nbeta, "--nbeta", false)?;
    let gamma = grid(&a.gamma, base.gamma, "--gamma", true)?;
    let steps = if a.select.is_empty() {
        default_steps(&folder)
    } else {
        folder.select(&a.select)?
    };
    let out = a
        .run
        .join("llc")
        .join(format!("calibrate-{}", config_name(&a.config)));
    claim_output(&out, &sampler)?;
    let path = out.join("summary.csv");
    let done: Vec<[f64; 4]> = if path.exists() {
        read_csv(&path)?
            .1
            .iter()
            .filter(|r| r.len() == HEADER.len())
            .map(|r| [r[0], r[1], r[2], r[3]])
            .collect()
    } else {
        vec![]
    };
    let header: Vec<String> = HEADER.iter().map(|h| h.to_string()).collect();
    let mut table = CsvTable::open(&path, &header, Some(u64::MAX))?;
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
    eprintln!(
        "calibration at checkpoints {steps:?}: {} settings x {} chains x {} draws ({} already done)",
        eps.len() * nbeta.len() * gamma.len(),
        sampler.num_chains,
        sampler.num_draws,
        done.len()
    );
    let mask = folder.mask(&sampler, &a.config)?;
    let chains = sampler.chains();
    let per_run = chains.total_steps() as u64;
    let progress = Progress::new(0, per_run * todo.len() as u64, "SGLD steps");
    let mut current: Option<(u64, Vec<f32>, f64, Vec<f64>)> = None;
    for (i, (step, sgld)) in todo.iter().enumerate() {
        if current.as_ref().is_none_or(|c| c.0 != *step) {
            let w = folder.weights(*step)?;
            progress.note(&format!("checkpoint {step}: initial loss"));
            let (init, parts) = folder.potential(&sampler).full_loss(&w);
            if !init.is_finite() {
                bail!("checkpoint {step}: the initial loss is {init}");
            }
            current = Some((*step, w, init, parts));
        }
        let (_, w, init, parts) = current.as_ref().unwrap();
        let pot = folder.potential(&sampler);
        let label = setting_label(sgld);
        let base_pos = per_run * i as u64;
        let traces = sample_with_progress(&pot, w, sgld, mask.as_deref(), &chains, &|d| {
            progress.tick(base_pos + d as u64, || {
                format!("checkpoint {step}, {label}")
            })
        });
        let e = LlcEstimate::from_traces(&traces, *init, parts, sgld.nbeta, None);
        let s = Stability::of(&traces, &e);
        let dir = out.join("traces").join(step.to_string());
        std::fs::create_dir_all(&dir)?;
        write_atomic(
            &dir.join(format!("{label}.csv")),
            traces_csv(&traces, *init, sgld.nbeta, None).as_bytes(),
        )?;
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
        progress.println(&format!(
            "step {step}, {label}: llc {:.3} +- {:.3}, MALA {:.3}: {}",
            e.mean,
            e.std,
            e.mala_accept,
            s.verdict()
        ));
    }
    progress.finish();
    print_summary(&path)?;
    Ok(())
}

/// `eps=<e>_nbeta=<nb>_gamma=<g>` (names trace files).
fn setting_label(s: &Sgld) -> String {
    format!("eps={}_nbeta={}_gamma={}", s.epsilon, s.nbeta, s.gamma)
}

/// The checkpoints nearest to 1 %, 10 % and 100 % of training.
fn default_steps(folder: &RunFolder) -> Vec<u64> {
    let total = folder.train_cfg.num_steps as f64;
    let mut steps: Vec<u64> = [0.01, 0.1, 1.0]
        .iter()
        .map(|f| {
            *folder
                .available
                .iter()
                .min_by(|a, b| {
                    let d = |s: &&u64| (**s as f64 - f * total).abs();
                    d(a).total_cmp(&d(b))
                })
                .unwrap()
        })
        .collect();
    steps.dedup();
    steps
}

/// The whole summary as a table on stdout, grouped by checkpoint.
fn print_summary(path: &std::path::Path) -> Result<()> {
    let (_, mut rows) = read_csv(path)?;
    rows.sort_by(|a, b| {
        a[..4]
            .iter()
            .zip(&b[..4])
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    println!(
        "{:>8} {:>10} {:>10} {:>8} {:>10} {:>9} {:>6}  verdict",
        "step", "eps", "nbeta", "gamma", "llc", "std", "MALA"
    );
    for r in rows {
        let s = Stability {
            finished: r[10] == 0.0,
            third_quarter: r[11],
            last_quarter: r[12],
            plateaued: r[13] == 1.0,
            non_negative: r[14] == 1.0,
        };
        println!(
            "{:>8} {:>10} {:>10} {:>8} {:>10.3} {:>9.3} {:>6.3}  {}",
            r[0] as u64,
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[7],
            s.verdict()
        );
    }
    println!("summary: {}", path.display());
    Ok(())
}
