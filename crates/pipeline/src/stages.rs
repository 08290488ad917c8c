//! Developmental stages from a run's LLC curve: a GP fit in log time, its slope, the critical
//! points where the slope is near zero, and the stage table with the change in loss and LLC.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use stagewise_analysis::gp::{Gp, GpBounds};
use stagewise_analysis::stages::{critical_points, d_dt, stages as find_stages};

use crate::lock::Lock;
use crate::rundir::{RunDir, check_name};

/// The stage rule.
#[derive(Clone, Debug, PartialEq)]
pub struct StagesOptions {
    /// Which sweep: the folder name under the run's `llc/` (default: the only one).
    pub llc: Option<String>,
    /// LLC column (default: `llc/mean/mean` when the sweep has per-token LLCs, else
    /// `llc/mean`).
    pub column: Option<String>,
    /// Critical points need |dLLC/dlog t| below this (default: 20 % of the largest |slope|;
    /// the reference used 8 for its K = 8 runs).
    pub max_slope: Option<f64>,
    /// Stages changing the fitted LLC by less than this fraction of its range are merged.
    pub min_change: f64,
}

impl Default for StagesOptions {
    fn default() -> Self {
        StagesOptions {
            llc: None,
            column: None,
            max_slope: None,
            min_change: 0.05,
        }
    }
}

/// One developmental stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub start: u64,
    pub end: u64,
    /// Change in the loss, `pretrain/mse` (regression), `test/loss` (language model) or `Loss`
    /// (sparse parity), at the logged steps nearest to start and end.
    pub delta_loss: f64,
    /// Change in the fitted LLC.
    pub delta_llc: f64,
    /// "A" (LLC rises) or "B" (falls).
    pub kind: String,
}

/// The stage analysis of one sweep.
#[derive(Clone, Debug)]
pub struct StagesResult {
    pub out: String,
    pub column: String,
    pub gp_amplitude: f64,
    pub gp_length: f64,
    pub gp_log_marginal_likelihood: f64,
    pub max_slope: f64,
    /// Steps of the critical points.
    pub critical: Vec<u64>,
    pub stages: Vec<Stage>,
    /// What makes the result doubtful (a GP hyperparameter at its bound).
    pub warnings: Vec<String>,
}

/// The GP fit's hyperparameters and where they sit in their bounds (-1 lower, 1 upper, 0
/// inside), as `stages/<sweep>/gp_fit.csv` holds them.
pub const GP_FIT_HEADER: &str =
    "amplitude,length,log_marginal_likelihood,amplitude_at_bound,length_at_bound";

/// Warnings for a fit whose hyperparameters sit at their bounds (`at` as `GpBounds::at_bounds`).
pub fn bound_warnings(amplitude: f64, length: f64, at: [i8; 2]) -> Vec<String> {
    let mut out = Vec::new();
    for ((name, v, (lo, hi)), side) in [
        ("amplitude", amplitude, GpBounds::REFERENCE.amplitude),
        ("length", length, GpBounds::REFERENCE.length),
    ]
    .into_iter()
    .zip(at)
    {
        if side != 0 {
            let (which, b) = if side < 0 {
                ("lower", lo)
            } else {
                ("upper", hi)
            };
            out.push(format!(
                "the GP fit's {name} ({v:.4}) is at its {which} bound {b}: no optimum inside the bounds (a curve too short, too flat or too rough for the kernel); the stages are unreliable"
            ));
        }
    }
    out
}

/// The sweep to analyse: `name`, or the only sweep of the run.
pub fn pick_sweep(run: &RunDir, name: Option<&str>) -> Result<String> {
    if let Some(n) = name {
        check_name("--llc", n)?;
        if run.llc(n).table()?.is_none() {
            bail!(
                "{}: no llc.csv; run `stagewise llc` first",
                run.llc(n).display()
            );
        }
        return Ok(n.to_string());
    }
    let found = run.llc_sweeps()?;
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{}: no LLC sweeps; run `stagewise llc` first",
            run.llc_location()
        ),
        _ => bail!(
            "{}: several LLC sweeps ({}); choose one with --llc",
            run.llc_location(),
            found.join(", ")
        ),
    }
}

/// `pretrain/mse` at the logged step nearest to `step`.
fn loss_at(metrics: &[(u64, f64)], step: u64) -> f64 {
    metrics
        .iter()
        .min_by_key(|(s, _)| s.abs_diff(step))
        .map_or(f64::NAN, |m| m.1)
}

/// Finds the stages of a run's LLC curve and writes `stages/<sweep>/`: `gp.csv`,
/// `critical_points.csv` and `stages.csv`.
pub fn stages(run: &RunDir, a: &StagesOptions) -> Result<StagesResult> {
    let name = pick_sweep(run, a.llc.as_deref())?;
    let sweep = run.llc(&name);
    let table = sweep
        .table()?
        .with_context(|| format!("{}: missing", sweep.table_location()))?;
    let column = a.column.clone().unwrap_or_else(|| {
        if table.position("llc/mean/mean").is_some() {
            "llc/mean/mean".into()
        } else {
            "llc/mean".into()
        }
    });
    let Some(col) = table.position(&column) else {
        bail!("{}: no column {column:?}", sweep.table_location());
    };
    let mut rows = table.rows;
    rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
    rows.retain(|r| r[col].is_finite());
    if rows.len() < 4 {
        bail!(
            "{}: {} checkpoints with a finite {column}; stages need at least 4",
            sweep.table_location(),
            rows.len()
        );
    }
    let steps: Vec<u64> = rows.iter().map(|r| r[0] as u64).collect();
    let x: Vec<f64> = steps.iter().map(|s| (*s as f64 + 1.0).ln()).collect();
    let y: Vec<f64> = rows.iter().map(|r| r[col]).collect();
    let gp = Gp::fit(&x, &y, GpBounds::REFERENCE)
        .context("the GP fit failed: the kernel matrix is singular for every hyperparameter")?;
    let fit = gp.predict(&x);
    let slope = d_dt(&x, &fit);
    let max_slope = a
        .max_slope
        .unwrap_or(0.2 * slope.iter().fold(0.0f64, |m, s| m.max(s.abs())));
    let cands = critical_points(&slope, max_slope);
    let found = find_stages(&fit, &slope, &cands, a.min_change);

    // The loss of a regression run is `pretrain/mse`; of a language-model run `test/loss`;
    // of a parity run `Loss` (the frequency-weighted task losses).
    let metrics: Vec<(u64, f64)> = match run.metrics()? {
        Some(t) => match t
            .position("pretrain/mse")
            .or_else(|| t.position("test/loss"))
            .or_else(|| t.position("Loss"))
        {
            Some(i) => t.rows.iter().map(|row| (row[0] as u64, row[i])).collect(),
            None => vec![],
        },
        None => vec![],
    };

    let out = run.stages(&name);
    let _lock = Lock::take(&out, "lock", "stagewise stages")?;
    out.clean_interrupted(true)?;
    let mut text = String::from("step,llc,llc_fit,dllc_dlogt,critical\n");
    for i in 0..steps.len() {
        writeln!(
            text,
            "{},{:?},{:?},{:?},{}",
            steps[i],
            y[i],
            fit[i],
            slope[i],
            u8::from(cands.contains(&i))
        )?;
    }
    out.put("gp.csv", text.as_bytes())?;
    let mut text = String::from("step,dllc_dlogt,reference_step\n");
    for &i in &cands {
        // The reference reports the checkpoint before each minimum.
        writeln!(text, "{},{:?},{}", steps[i], slope[i], steps[i - 1])?;
    }
    out.put("critical_points.csv", text.as_bytes())?;
    let mut text = String::from("stage,start,end,delta_loss,delta_llc,type\n");
    let mut table = Vec::new();
    for (k, s) in found.iter().enumerate() {
        let (s0, s1) = (steps[s.start], steps[s.end]);
        let dl = loss_at(&metrics, s1) - loss_at(&metrics, s0);
        writeln!(
            text,
            "{},{s0},{s1},{dl:?},{:?},{}",
            k + 1,
            s.delta_llc,
            s.kind()
        )?;
        table.push(Stage {
            start: s0,
            end: s1,
            delta_loss: dl,
            delta_llc: s.delta_llc,
            kind: s.kind().to_string(),
        });
    }
    out.put("stages.csv", text.as_bytes())?;
    let at = GpBounds::REFERENCE.at_bounds(&gp);
    let fit = format!(
        "{GP_FIT_HEADER}\n{:?},{:?},{:?},{},{}\n",
        gp.amplitude, gp.length, gp.log_marginal_likelihood, at[0], at[1]
    );
    out.put("gp_fit.csv", fit.as_bytes())?;
    Ok(StagesResult {
        warnings: bound_warnings(gp.amplitude, gp.length, at),
        out: out.display(),
        column,
        gp_amplitude: gp.amplitude,
        gp_length: gp.length,
        gp_log_marginal_likelihood: gp.log_marginal_likelihood,
        max_slope,
        critical: cands.iter().map(|i| steps[*i]).collect(),
        stages: table,
    })
}

/// Reads a stage table written by [`stages`]; an error names the file and line.
pub fn read_stages(run: &RunDir, sweep: &str) -> Result<Option<Vec<Stage>>> {
    let folder = run.stages(sweep);
    let Some(text) = folder.text("stages.csv")? else {
        return Ok(None);
    };
    let path = folder.describe("stages.csv");
    if !text.ends_with('\n') {
        bail!("{path}: the last line has no line end: the file was cut short");
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 6 {
            bail!(
                "{path}: line {} has {} fields, expected 6 (stage,start,end,delta_loss,delta_llc,type)",
                i + 1,
                f.len()
            );
        }
        let num = |j: usize| -> Result<f64> {
            f[j].parse()
                .ok()
                .with_context(|| format!("{path}: line {}: bad field {j}", i + 1))
        };
        let step = |j: usize| -> Result<u64> {
            f[j].parse()
                .ok()
                .with_context(|| format!("{path}: line {}: bad field {j}", i + 1))
        };
        out.push(Stage {
            start: step(1)?,
            end: step(2)?,
            delta_loss: num(3)?,
            delta_llc: num(4)?,
            kind: match f[5] {
                k @ ("A" | "B") => k.to_string(),
                k => bail!("{path}: line {}: type {k:?}, expected A or B", i + 1),
            },
        });
    }
    Ok(Some(out))
}
