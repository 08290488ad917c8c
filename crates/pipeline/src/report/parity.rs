//! The sparse parity part of the report: loss and accuracy per task over training, and after
//! essential dynamics the trajectory in the PC1-PC2 plane with the task references marked,
//! the form potentials over time and the step each task is learned.

use anyhow::Result;
use stagewise_io::table::Table;
use stagewise_report::html::{Block, Section};
use stagewise_report::{Corner, Series, palette};

use super::{chart, figure, need, spans};
use crate::rundir::{Folder, RunDir};
use crate::stages::Stage;

/// Loss and accuracy per task.
pub fn loss_section(out: &Folder, metrics: &Table, stages: &[Stage]) -> Result<Section> {
    let steps: Vec<f64> = metrics.rows.iter().map(|r| r[0] + 1.0).collect();
    let tasks = (0..)
        .take_while(|t| metrics.position(&format!("Loss/{t}")).is_some())
        .count();
    let mut blocks = Vec::new();
    for (kind, title, y, name) in [
        ("Loss", "Loss per task", "cross-entropy (nats)", "loss"),
        ("Accuracy", "Accuracy per task", "accuracy", "accuracy"),
    ] {
        let mut c = chart(title, "step + 1", y, true);
        c.spans = spans(stages);
        c.legend = if kind == "Loss" {
            Corner::LowerLeft
        } else {
            Corner::UpperLeft
        };
        for t in 0..tasks {
            let v = need(metrics, &format!("{kind}/{t}"), "metrics.csv")?;
            c.series.push(Series::line(
                format!("task {t}"),
                steps.iter().copied().zip(v).collect(),
                palette(t),
            ));
        }
        if let Some(v) = metrics.column(kind) {
            let mut s = Series::line(
                format!("{kind} (frequency-weighted)"),
                steps.iter().copied().zip(v).collect(),
                stagewise_report::RGBColor(120, 120, 120),
            );
            s.dashed = true;
            c.series.push(s);
        }
        blocks.push(figure(
            out,
            name,
            &c,
            &format!("{title} on each task's fixed evaluation set (tasks in order of frequency, task 0 the most frequent), and the frequency-weighted {kind} (dashed); stages shaded"),
        )?);
    }
    Ok(Section {
        title: "Loss and accuracy per task".into(),
        blocks,
    })
}

/// The task references in PC space, the form potentials and the tasks table; empty before ED.
pub fn task_blocks(run: &RunDir, out: &Folder, stages: &[Stage]) -> Result<Vec<Block>> {
    let ed = run.ed("losses");
    let (Some(scores), Some(refs), Some(pot), Some(tasks)) = (
        ed.step_table(if ed.exists("scores_smoothed.csv") {
            "scores_smoothed.csv"
        } else {
            "scores.csv"
        })?,
        ed.table("task_references.csv")?,
        ed.step_table("potentials.csv")?,
        ed.table("tasks.csv")?,
    ) else {
        return Ok(vec![]);
    };
    let what = ed.describe("scores.csv");
    let mut blocks = Vec::new();
    if scores.header.len() >= 3 {
        let (a, b) = (need(&scores, "pc1", &what)?, need(&scores, "pc2", &what)?);
        let mut c = chart("PC1 vs PC2 with the task references", "PC1", "PC2", false);
        c.series.push(Series::line(
            "trajectory (smoothed)",
            a.into_iter().zip(b).collect(),
            palette(0),
        ));
        c.dots = refs.rows.iter().map(|r| (r[1], r[2])).collect();
        blocks.push(figure(
            out,
            "ed_task_references",
            &c,
            "The smoothed trajectory in the PC1-PC2 plane; circles: the task references (all tasks up to t solved: loss 0 on their samples, ln 2 on the rest), projected by the same PCA",
        )?);
    }
    let steps: Vec<f64> = need(&pot, "step", "potentials.csv")?
        .iter()
        .map(|s| s + 1.0)
        .collect();
    let mut c = chart("Form potentials", "step + 1", "squared distance", true);
    c.spans = spans(stages);
    c.legend = Corner::LowerLeft;
    for (t, h) in pot.header.iter().skip(1).enumerate() {
        let v = need(&pot, h, "potentials.csv")?;
        c.series.push(Series::line(
            format!("to reference {t}"),
            steps.iter().copied().zip(v).collect(),
            palette(t),
        ));
    }
    blocks.push(figure(
        out,
        "ed_potentials",
        &c,
        "Squared distance of each checkpoint's per-sample losses to each task reference; stages shaded",
    )?);
    blocks.push(Block::Table {
        header: [
            "task",
            "frequency",
            "first step at 95 % accuracy",
            "step nearest its reference",
        ]
        .map(String::from)
        .to_vec(),
        rows: tasks
            .rows
            .iter()
            .map(|r| {
                let step = |v: f64| {
                    if v.is_finite() {
                        format!("{v}")
                    } else {
                        "not reached".into()
                    }
                };
                vec![
                    format!("{}", r[0]),
                    format!("{:.3}", r[1]),
                    step(r[2]),
                    step(r[3]),
                ]
            })
            .collect(),
    });
    Ok(blocks)
}
