//! The report's susceptibilities (`stagewise susceptibility`): a restrictions x observables
//! heatmap at a few checkpoints, and each restriction's susceptibility over training.

use anyhow::{Context, Result};
use stagewise_report::html::Block;
use stagewise_report::{Heatmap, Series, palette};
use stagewise_tables::Column;

use super::{chart, figure, missing, spans};
use crate::rundir::{Folder, RunDir};
use crate::stages::Stage;

/// Mean-over-examples rows of a scan: (step, restriction, observable, chi, se).
type Rows = Vec<(u64, String, String, f64, f64)>;

fn read(folder: &Folder) -> Result<Rows> {
    let name = "susceptibility.parquet";
    let bytes = folder
        .get(name)?
        .with_context(|| format!("{}: missing", folder.describe(name)))?;
    let cols = stagewise_tables::read_columns_bytes(bytes)
        .with_context(|| format!("{}: not a readable Parquet file", folder.describe(name)))?;
    let col = |n: &str| {
        cols.iter()
            .find(|c| c.0 == n)
            .map(|c| &c.1)
            .with_context(|| format!("{}: no column {n:?}", folder.describe(name)))
    };
    let (
        Column::Int(step),
        Column::Text(r),
        Column::Text(o),
        Column::Int(t),
        Column::Float(chi),
        Column::Float(se),
    ) = (
        col("step")?,
        col("restriction")?,
        col("observable")?,
        col("token")?,
        col("chi")?,
        col("se")?,
    )
    else {
        anyhow::bail!("{}: unexpected column types", folder.describe(name));
    };
    Ok((0..step.len())
        .filter(|&i| t[i].is_none())
        .map(|i| {
            (
                step[i].unwrap_or(0) as u64,
                r[i].clone().unwrap_or_default(),
                o[i].clone().unwrap_or_default(),
                chi[i].unwrap_or(f64::NAN),
                se[i].unwrap_or(f64::NAN),
            )
        })
        .collect())
}

/// Names in order of first appearance.
fn distinct<'a>(it: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in it {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

/// Up to `k` steps: the first, the last and evenly spaced ones between.
fn pick(steps: &[u64], k: usize) -> Vec<u64> {
    if steps.len() <= k {
        return steps.to_vec();
    }
    let mut out: Vec<u64> = (0..k)
        .map(|i| steps[i * (steps.len() - 1) / (k - 1)])
        .collect();
    out.dedup();
    out
}

pub(super) fn blocks(
    run: &RunDir,
    out: &Folder,
    stages: &[Stage],
    run_name: &str,
) -> Result<Vec<Block>> {
    let root = run.root().sub("susceptibility");
    let scans = root.subfolders_with("susceptibility.parquet")?;
    if scans.is_empty() {
        return Ok(vec![missing(
            "susceptibilities",
            &format!("stagewise susceptibility {run_name} --config SAMPLER.yaml"),
        )]);
    }
    let mut blocks = Vec::new();
    for scan in &scans {
        blocks.extend(scan_blocks(&root.sub(scan), scan, out, stages)?);
    }
    Ok(blocks)
}

/// One scan's heatmaps and curves.
fn scan_blocks(folder: &Folder, scan: &str, out: &Folder, stages: &[Stage]) -> Result<Vec<Block>> {
    let rows = read(folder)?;
    let restrictions = distinct(rows.iter().map(|r| &r.1));
    let observables = distinct(rows.iter().map(|r| &r.2));
    let mut steps: Vec<u64> = rows.iter().map(|r| r.0).collect();
    steps.sort_unstable();
    steps.dedup();
    let value = |s: u64, r: &str, o: &str| {
        rows.iter()
            .find(|x| x.0 == s && x.1 == r && x.2 == o)
            .map_or(f64::NAN, |x| x.3)
    };
    let mut blocks = vec![Block::Paragraph(format!(
        "Susceptibilities of scan {scan:?} (devinterp 2.0's chi: how each restriction's local posterior responds to shifting the data towards an observable), averaged over each observable's sequences and examples; {} checkpoints, {} restrictions, {} observables. Tables: susceptibility/{scan}/.",
        steps.len(),
        restrictions.len(),
        observables.len()
    ))];
    for s in pick(&steps, 4) {
        let map = Heatmap {
            title: format!("Susceptibility at step {s} ({scan})"),
            rows: restrictions.clone(),
            cols: observables.clone(),
            values: restrictions
                .iter()
                .flat_map(|r| observables.iter().map(move |o| (r, o)))
                .map(|(r, o)| value(s, r, o))
                .collect(),
        };
        blocks.push(figure(
            out,
            &format!("susceptibility_{scan}_{s}"),
            &map,
            &format!(
                "Restrictions x observables at step {s} (red positive, blue negative, white zero)"
            ),
        )?);
    }
    if steps.len() > 1 {
        // Over training, for the first observable beyond the sampling task.
        let o = observables
            .get(1)
            .or(observables.first())
            .cloned()
            .unwrap_or_default();
        let mut c = chart(
            &format!("Susceptibility to {o} over training"),
            "step + 1",
            "chi",
            true,
        );
        // Only the stages the scanned steps reach (labels of others would pile up at an edge).
        let (lo, hi) = (steps[0] as f64 + 1.0, steps[steps.len() - 1] as f64 + 1.0);
        c.spans = spans(stages)
            .into_iter()
            .filter(|sp| sp.to > lo && sp.from < hi)
            .collect();
        for (i, r) in restrictions.iter().enumerate() {
            let mut line = Series::line(
                r.clone(),
                steps
                    .iter()
                    .map(|&s| (s as f64 + 1.0, value(s, r, &o)))
                    .collect(),
                palette(i),
            );
            line.band = rows
                .iter()
                .filter(|x| &x.1 == r && x.2 == o && x.4.is_finite())
                .map(|x| (x.0 as f64 + 1.0, x.3 - x.4, x.3 + x.4))
                .collect();
            c.series.push(line);
        }
        blocks.push(figure(
            out,
            &format!("susceptibility_{scan}_over_training"),
            &c,
            &format!("Each restriction's susceptibility to {o} over training (band: one standard error over chains), stages shaded"),
        )?);
    }
    Ok(blocks)
}
