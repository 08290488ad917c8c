//! `stagewise stages`: developmental stages from a run's LLC curve (GP fit in log time, slope,
//! critical points, stage table with the change in loss and LLC).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use stagewise_analysis::gp::{Gp, GpBounds};
use stagewise_analysis::stages::{critical_points, d_dt, stages};
use stagewise_io::atomic::write_atomic;
use stagewise_io::table::read_csv;

#[derive(Args)]
pub struct StagesArgs {
    /// Run folder with an LLC sweep (`stagewise llc`).
    run: PathBuf,
    /// Which sweep: the folder name under RUN/llc (default: the only one).
    #[arg(long)]
    llc: Option<String>,
    /// LLC column (default: `llc/mean/mean` when the sweep has per-token LLCs, else `llc/mean`).
    #[arg(long)]
    column: Option<String>,
    /// Critical points need |dLLC/dlog t| below this (default: 20 % of the largest |slope|; the
    /// reference used 8 for its K = 8 runs).
    #[arg(long)]
    max_slope: Option<f64>,
    /// Stages changing the fitted LLC by less than this fraction of its range are merged.
    #[arg(long, default_value_t = 0.05)]
    min_change: f64,
}

/// The sweep folder: `--llc`, or the only non-calibration sweep of the run.
fn sweep(run: &Path, name: Option<&str>) -> Result<PathBuf> {
    let root = run.join("llc");
    if let Some(n) = name {
        let p = root.join(n);
        if !p.join("llc.csv").is_file() {
            bail!("{}: no llc.csv; run `stagewise llc` first", p.display());
        }
        return Ok(p);
    }
    let found: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| {
            format!(
                "{}: no LLC sweeps; run `stagewise llc` first",
                root.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("llc.csv").is_file())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{}: no LLC sweeps; run `stagewise llc` first",
            root.display()
        ),
        _ => bail!(
            "{}: several LLC sweeps ({}); choose one with --llc",
            root.display(),
            found
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
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

pub fn stages_cmd(a: &StagesArgs) -> Result<()> {
    let dir = sweep(&a.run, a.llc.as_deref())?;
    let table = dir.join("llc.csv");
    let (header, mut rows) = read_csv(&table)?;
    let column = a.column.clone().unwrap_or_else(|| {
        if header.iter().any(|h| h == "llc/mean/mean") {
            "llc/mean/mean".into()
        } else {
            "llc/mean".into()
        }
    });
    let Some(col) = header.iter().position(|h| *h == column) else {
        bail!("{}: no column {column:?}", table.display());
    };
    rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
    rows.retain(|r| r[col].is_finite());
    if rows.len() < 4 {
        bail!(
            "{}: {} checkpoints with a finite {column}; stages need at least 4",
            table.display(),
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
    let found = stages(&fit, &slope, &cands, a.min_change);

    let metrics_path = a.run.join("metrics.csv");
    let metrics: Vec<(u64, f64)> = match read_csv(&metrics_path) {
        Ok((h, r)) => match h.iter().position(|c| c == "pretrain/mse") {
            Some(i) => r.iter().map(|row| (row[0] as u64, row[i])).collect(),
            None => vec![],
        },
        Err(_) => vec![],
    };

    let out = a.run.join("stages").join(dir.file_name().unwrap());
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
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
    write_atomic(&out.join("gp.csv"), text.as_bytes())?;
    let mut text = String::from("step,dllc_dlogt,reference_step\n");
    for &i in &cands {
        // The reference reports the checkpoint before each minimum.
        writeln!(text, "{},{:?},{}", steps[i], slope[i], steps[i - 1])?;
    }
    write_atomic(&out.join("critical_points.csv"), text.as_bytes())?;
    let mut text = String::from("stage,start,end,delta_loss,delta_llc,type\n");
    println!(
        "GP fit of {column} against log(step + 1): amplitude {:.4}, length {:.4}, log marginal likelihood {:.3}",
        gp.amplitude, gp.length, gp.log_marginal_likelihood
    );
    println!(
        "critical points (|dLLC/dlog t| < {max_slope:.3}): {:?}",
        cands.iter().map(|i| steps[*i]).collect::<Vec<_>>()
    );
    println!(
        "{:>5} {:>9} {:>9} {:>10} {:>10} {:>4}",
        "stage", "start", "end", "d loss", "d LLC", "type"
    );
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
        println!(
            "{:>5} {:>9} {:>9} {:>10.4} {:>10.3} {:>4}",
            k + 1,
            s0,
            s1,
            dl,
            s.delta_llc,
            s.kind()
        );
    }
    write_atomic(&out.join("stages.csv"), text.as_bytes())?;
    println!("results: {}", out.display());
    Ok(())
}
