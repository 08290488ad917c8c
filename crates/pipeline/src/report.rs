//! The report: one self-contained HTML page (inline SVG) and PNG figures of a run: test loss
//! per token with the Bayes baselines, the LLC curve with its error band and the stages shaded,
//! the stage table, essential dynamics (PC scores over time, PC-pair trajectories coloured by
//! stage with forms marked, explained variance) and structural indicators. Missing parts (no
//! LLC sweep yet, no ED...) are named with the command that makes them.

use anyhow::{Context, Result, bail};
use stagewise_io::table::Table;
use stagewise_report::html::{Block, Section, render};
use stagewise_report::{Corner, Figure, LineChart, RGBColor, Series, Span, palette};
use stagewise_train::eval::Evaluator;

use crate::lock::Lock;
use crate::rundir::{Folder, RunDir, check_name};
use crate::stages::{Stage, read_stages};

mod influence;
mod lm;
mod parity;

#[derive(Clone, Debug, Default)]
pub struct ReportOptions {
    /// LLC sweep to show (folder under the run's `llc/`; default: the only one, or the one
    /// with stages).
    pub llc: Option<String>,
    /// Output folder (default: the run's `report/`).
    pub out: Option<Folder>,
}

#[derive(Clone, Debug)]
pub struct ReportResult {
    /// Where `index.html` is.
    pub index: String,
}

const SIZE: (u32, u32) = (960, 540);
const STAGE_A: RGBColor = RGBColor(230, 120, 20);
const STAGE_B: RGBColor = RGBColor(40, 100, 200);

fn spans(stages: &[Stage]) -> Vec<Span> {
    stages
        .iter()
        .enumerate()
        .map(|(i, s)| Span {
            from: s.start as f64 + 1.0,
            to: s.end as f64 + 1.0,
            label: format!("S{} ({})", i + 1, s.kind),
            color: if s.kind == "A" { STAGE_A } else { STAGE_B },
        })
        .collect()
}

/// Draws `chart` to `<out>/<name>.png` and returns the figure block.
fn figure(out: &Folder, name: &str, chart: &impl Figure, caption: &str) -> Result<Block> {
    out.put(&format!("{name}.png"), &chart.png_bytes(SIZE)?)?;
    Ok(Block::Figure {
        svg: chart.svg(SIZE)?,
        caption: caption.to_string(),
        png: format!("{name}.png"),
    })
}

fn chart(title: &str, x: &str, y: &str, log_x: bool) -> LineChart {
    LineChart {
        title: title.into(),
        x_label: x.into(),
        y_label: y.into(),
        log_x,
        series: vec![],
        spans: vec![],
        markers: vec![],
        dots: vec![],
        legend: Corner::MiddleLeft,
        y_range: None,
    }
}

fn missing(what: &str, command: &str) -> Block {
    Block::Paragraph(format!("No {what} yet: run `{command}`."))
}

/// A column that must be there; an error names the table.
fn need(t: &Table, name: &str, what: &str) -> Result<Vec<f64>> {
    t.column(name)
        .with_context(|| format!("{what}: no column {name:?}"))
}

/// The sweep to show: the given one, else the only sweep, else the one with a stage table.
fn pick_sweep(run: &RunDir, name: Option<&str>) -> Result<Option<String>> {
    if let Some(n) = name {
        check_name("--llc", n)?;
        return Ok(Some(n.to_string()));
    }
    let sweeps = run.llc_sweeps()?;
    Ok(match sweeps.as_slice() {
        [one] => Some(one.clone()),
        [] => None,
        _ => run
            .staged_sweeps()?
            .into_iter()
            .find(|s| sweeps.contains(s))
            .or_else(|| sweeps.first().cloned()),
    })
}

/// Writes the report; see the module documentation.
pub fn report(run: &RunDir, a: &ReportOptions) -> Result<ReportResult> {
    let Some(metrics) = run.metrics()? else {
        bail!(
            "{}: no metrics.csv; is {} a stagewise run folder?",
            run.metrics_location(),
            run.display()
        );
    };
    if metrics.rows.is_empty() {
        bail!(
            "{}: no evaluations yet (only a header); train the run further first",
            run.metrics_location()
        );
    }
    let out = a.out.clone().unwrap_or_else(|| run.report());
    let _lock = Lock::take(&out, "lock", "stagewise report")?;
    out.clean_interrupted(true)?;
    let sweep = pick_sweep(run, a.llc.as_deref())?;
    let stages = match &sweep {
        Some(s) => read_stages(run, s)?.unwrap_or_default(),
        None => vec![],
    };
    let run_name = run.display();
    let mut sections = Vec::new();

    let (sections_first, sampler_hint, description) = if run.is_parity_run() {
        (
            vec![parity::loss_section(&out, &metrics, &stages)?],
            "SAMPLER.yaml",
            "Multitask sparse parity: loss and accuracy per task, local learning coefficient, essential dynamics with the task references and form potentials over training. Steps are shown as step + 1 on log axes.",
        )
    } else if run.is_language_run() {
        (
            lm::sections(&out, &metrics, &stages)?,
            "configs/sampler-lm-quick.yaml",
            "Developmental stages of a small attention-only language model: loss and n-gram scores, attention-head scores, local learning coefficient, essential dynamics and structural indicators over training. Steps are shown as step + 1 on log axes.",
        )
    } else {
        (
            vec![regression_loss(run, &out, &metrics, &stages)?],
            "configs/sampler-quick.yaml",
            "Developmental stages of an in-context linear regression transformer: loss, local learning coefficient, essential dynamics and structural indicators over training. Steps are shown as step + 1 on log axes.",
        )
    };
    sections.extend(sections_first);
    sections.push(Section {
        title: "LLC and stages".into(),
        blocks: llc_blocks(
            run,
            &out,
            sweep.as_deref(),
            &stages,
            &format!("stagewise llc {run_name} --config {sampler_hint}"),
        )?,
    });
    let mut ed = ed_blocks(run, &out, &stages, &run_name)?;
    if run.is_parity_run() {
        ed.extend(parity::task_blocks(run, &out, &stages)?);
    }
    sections.push(Section {
        title: "Essential dynamics".into(),
        blocks: ed,
    });
    if !run.is_parity_run() {
        sections.push(Section {
            title: "Susceptibilities".into(),
            blocks: influence::blocks(run, &out, &stages, &run_name)?,
        });
    }
    sections.push(Section {
        title: "Structural indicators".into(),
        blocks: indicator_blocks(run, &out, &stages, &run_name)?,
    });

    let page = render(
        &format!("stagewise report: {}", run.name()),
        description,
        &sections,
    );
    out.put("index.html", page.as_bytes())?;
    Ok(ReportResult {
        index: out.describe("index.html"),
    })
}

/// The LLC curve with the GP fit and the stage table.
fn llc_blocks(
    run: &RunDir,
    out: &Folder,
    sweep: Option<&str>,
    stages: &[Stage],
    llc_command: &str,
) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    let Some(s) = sweep else {
        blocks.push(missing("LLC sweep", llc_command));
        return Ok(blocks);
    };
    let run_name = run.display();
    let dir = run.llc(s);
    let t = dir
        .table()?
        .with_context(|| format!("{}: missing", dir.table_location()))?;
    let col = if t.position("llc/mean/mean").is_some() {
        "llc/mean/mean"
    } else {
        "llc/mean"
    };
    let mut rows: Vec<(f64, f64, f64)> =
        match (t.column("step"), t.column(col), t.column("llc/std")) {
            (Some(st), Some(m), Some(sd)) => st
                .into_iter()
                .zip(m.into_iter().zip(sd))
                .map(|(s, (m, d))| (s + 1.0, m, d))
                .collect(),
            _ => bail!(
                "{}: expected columns step, {col}, llc/std",
                dir.table_location()
            ),
        };
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut c = chart(
        &format!("Local learning coefficient ({s})"),
        "step + 1",
        "LLC",
        true,
    );
    c.spans = spans(stages);
    let mut line = Series::line(
        format!("{col} (band: std over chains)"),
        rows.iter().map(|r| (r.0, r.1)).collect(),
        palette(0),
    );
    line.band = rows
        .iter()
        .filter(|r| r.2.is_finite())
        .map(|r| (r.0, r.1 - r.2, r.1 + r.2))
        .collect();
    c.series.push(line);
    if let Some(g) = run.stages(s).step_table("gp.csv")?
        && let (Some(st), Some(f)) = (g.column("step"), g.column("llc_fit"))
    {
        let mut gp = Series::line(
            "GP fit",
            st.iter().map(|s| s + 1.0).zip(f).collect(),
            palette(5),
        );
        gp.dashed = true;
        c.series.push(gp);
    }
    blocks.push(figure(
        out,
        "llc",
        &c,
        "Estimated LLC over training (mean over chains, band: one standard deviation over chains), the GP fit used for the stages (dashed), stages shaded (orange: LLC rises, type A; blue: falls, type B)",
    )?);
    if let Some(fit) = run.stages(s).table("gp_fit.csv")?
        && let Some(row) = fit.rows.first()
        && row.len() == 5
    {
        let at = [row[3] as i8, row[4] as i8];
        for w in crate::stages::bound_warnings(row[0], row[1], at) {
            blocks.push(Block::Paragraph(format!("Warning: {w}.")));
        }
    }
    if stages.is_empty() {
        blocks.push(missing(
            "stage table",
            &format!("stagewise stages {run_name} --llc {s}"),
        ));
    } else {
        blocks.push(Block::Table {
            header: [
                "stage",
                "start",
                "end",
                "change in loss",
                "change in LLC",
                "type",
            ]
            .map(String::from)
            .to_vec(),
            rows: stages
                .iter()
                .enumerate()
                .map(|(i, st)| {
                    vec![
                        format!("S{}", i + 1),
                        format!("{}", st.start),
                        format!("{}", st.end),
                        format!("{:.4}", st.delta_loss),
                        format!("{:.2}", st.delta_llc),
                        st.kind.clone(),
                    ]
                })
                .collect(),
        });
    }
    Ok(blocks)
}

/// PC scores over time, PC-pair trajectories and the explained variance.
fn ed_blocks(run: &RunDir, out: &Folder, stages: &[Stage], run_name: &str) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    let ed = ["full", "ys", "tokens", "losses"]
        .iter()
        .map(|o| run.ed(o))
        .find(|f| f.exists("scores.csv"));
    let Some(ed) = ed else {
        blocks.push(missing(
            "essential dynamics",
            &format!("stagewise ed {run_name}"),
        ));
        return Ok(blocks);
    };
    let name = if ed.exists("scores_smoothed.csv") {
        "scores_smoothed.csv"
    } else {
        "scores.csv"
    };
    let what = ed.describe(name);
    let scores = ed
        .step_table(name)?
        .with_context(|| format!("{what}: missing"))?;
    let st = need(&scores, "step", &what)?;
    let kk = scores.header.len() - 1;
    let pcs = (1..=kk)
        .map(|j| need(&scores, &format!("pc{j}"), &what))
        .collect::<Result<Vec<_>>>()?;
    let forms: Vec<f64> = ed
        .table("forms.csv")?
        .map(|t| t.rows.iter().map(|r| r[0]).collect())
        .unwrap_or_default();
    let mut c = chart(
        "Essential dynamics: PC scores over training",
        "step + 1",
        "score",
        true,
    );
    c.spans = spans(stages);
    c.markers = forms.iter().map(|f| f + 1.0).collect();
    for (j, v) in pcs.iter().enumerate() {
        c.series.push(Series::line(
            format!("PC{}", j + 1),
            st.iter().map(|s| s + 1.0).zip(v.iter().copied()).collect(),
            palette(j),
        ));
    }
    blocks.push(figure(out, "ed_scores", &c, "Principal-component scores of the model's behaviour on a fixed evaluation set (its outputs; per-token losses for a language model), per checkpoint; dashed lines: forms (a vertex in every PC pair); stages shaded")?);
    for (i, j) in [(1, 2), (1, 3), (2, 3)] {
        if j > kk {
            continue;
        }
        let (a, b) = (&pcs[i - 1], &pcs[j - 1]);
        let mut c = chart(
            &format!("PC{i} vs PC{j}"),
            &format!("PC{i}"),
            &format!("PC{j}"),
            false,
        );
        if stages.is_empty() {
            c.series.push(Series::line(
                "trajectory",
                a.iter().copied().zip(b.iter().copied()).collect(),
                palette(0),
            ));
        } else {
            for (n, s) in stages.iter().enumerate() {
                let pts: Vec<(f64, f64)> = st
                    .iter()
                    .zip(a.iter().zip(b))
                    .filter(|(t, _)| **t >= s.start as f64 && **t <= s.end as f64)
                    .map(|(_, (x, y))| (*x, *y))
                    .collect();
                c.series.push(Series::line(
                    format!("S{} ({})", n + 1, s.kind),
                    pts,
                    palette(n),
                ));
            }
        }
        c.dots = forms
            .iter()
            .filter_map(|f| st.iter().position(|t| t == f).map(|r| (a[r], b[r])))
            .collect();
        blocks.push(figure(
            out,
            &format!("ed_pc{i}_pc{j}"),
            &c,
            &format!("Trajectory in the PC{i}-PC{j} plane, coloured by stage; circles: forms"),
        )?);
    }
    if let Some(ev) = ed.table("explained_variance.csv")? {
        if ev.header.len() < 3 {
            bail!(
                "{}: expected columns component, explained_variance, explained_variance_ratio",
                ed.describe("explained_variance.csv")
            );
        }
        blocks.push(Block::Table {
            header: ["component", "explained variance", "ratio"]
                .map(String::from)
                .to_vec(),
            rows: ev
                .rows
                .iter()
                .map(|r| {
                    vec![
                        format!("PC{}", r[0]),
                        format!("{:.4}", r[1]),
                        format!("{:.3}", r[2]),
                    ]
                })
                .collect(),
        });
    }
    Ok(blocks)
}

/// Weight norm, LayerNorm collapse and the Hessian panels.
fn indicator_blocks(
    run: &RunDir,
    out: &Folder,
    stages: &[Stage],
    run_name: &str,
) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    let Some(t) = run.indicators()? else {
        blocks.push(missing(
            "structural indicators",
            &format!("stagewise indicators {run_name}"),
        ));
        return Ok(blocks);
    };
    let what = run.indicators_location();
    let st: Vec<f64> = need(&t, "step", &what)?.iter().map(|s| s + 1.0).collect();
    let panels: [(&str, &str, &str, Vec<&str>); 3] = [
        (
            "indicators_norm",
            "Weight norm",
            "L2 norm",
            vec!["weight/norm"],
        ),
        (
            "indicators_ln",
            "LayerNorm collapse (fraction of |weight| < 0.1)",
            "fraction",
            t.header
                .iter()
                .filter(|h| h.ends_with("/weight/collapsed"))
                .map(|h| h.as_str())
                .collect(),
        ),
        (
            "indicators_hessian",
            "Hessian: top eigenvalues and trace / 10",
            "curvature",
            t.header
                .iter()
                .filter(|h| h.starts_with("hessian/evals/"))
                .map(|h| h.as_str())
                .collect(),
        ),
    ];
    for (name, title, y, cols) in panels {
        if cols.is_empty() {
            continue;
        }
        let mut c = chart(title, "step + 1", y, true);
        c.spans = spans(stages);
        if name == "indicators_ln" {
            c.y_range = Some((-0.02, 1.02));
        }
        for (i, col) in cols.iter().enumerate() {
            let v = need(&t, col, &what)?;
            let label = col
                .trim_start_matches("ln/")
                .trim_end_matches("/weight/collapsed");
            c.series.push(Series::line(
                label,
                st.iter().copied().zip(v).collect(),
                palette(i),
            ));
        }
        if name == "indicators_hessian"
            && let Some(tr) = t.column("hessian/trace")
        {
            let mut s = Series::line(
                "trace / 10",
                st.iter()
                    .copied()
                    .zip(tr.iter().map(|v| v / 10.0))
                    .collect(),
                palette(7),
            );
            s.dashed = true;
            c.series.push(s);
        }
        blocks.push(figure(out, name, &c, title)?);
    }
    Ok(blocks)
}

/// Test loss per token of the regression transformer with the Bayes baselines.
fn regression_loss(
    run: &RunDir,
    out: &Folder,
    metrics: &Table,
    stages: &[Stage],
) -> Result<Section> {
    let steps: Vec<f64> = metrics.rows.iter().map(|r| r[0] + 1.0).collect();
    let mut loss = chart(
        "Test loss (pretraining distribution)",
        "step + 1",
        "MSE",
        true,
    );
    loss.spans = spans(stages);
    let k = (0..)
        .take_while(|t| {
            metrics
                .position(&format!("pretrain/mse/token/{t}"))
                .is_some()
        })
        .count();
    for (i, t) in [0, k / 2, k.saturating_sub(1)].into_iter().enumerate() {
        if let Some(v) = metrics.column(&format!("pretrain/mse/token/{t}")) {
            loss.series.push(Series::line(
                format!("token {t}"),
                steps.iter().copied().zip(v).collect(),
                palette(i + 1),
            ));
        }
    }
    if let Some(mse) = metrics.column("pretrain/mse") {
        loss.series.push(Series::line(
            "mean over tokens",
            steps.iter().copied().zip(mse.iter().copied()).collect(),
            palette(0),
        ));
        // The baselines' risks on the same fixed evaluation batch (recomputed from the config).
        if run.has_config() {
            let cfg = run.read_config()?;
            let dist = cfg.pretrain_distribution();
            let ev = Evaluator::<f32>::new(&dist, cfg.eval_batch_size, cfg.seeds().eval);
            let finite_m = dist.tasks.tasks().is_some();
            for (name, risk) in ev.baseline_risks() {
                let (label, color) = match name.as_str() {
                    "pretrain/ridge" => ("ridge (Bayes for M = inf)", RGBColor(90, 90, 90)),
                    "pretrain/dmmse" if finite_m => {
                        ("dMMSE (Bayes for finite M)", RGBColor(0, 0, 0))
                    }
                    _ => continue,
                };
                let mean = risk.iter().sum::<f64>() / risk.len() as f64;
                let (x0, x1) = (steps[0], steps[steps.len() - 1]);
                let mut s = Series::line(
                    format!("{label}: {mean:.3}"),
                    vec![(x0, mean), (x1, mean)],
                    color,
                );
                s.dashed = true;
                loss.series.push(s);
            }
        }
    }
    Ok(Section {
        title: "Loss".into(),
        blocks: vec![figure(
            out,
            "loss",
            &loss,
            "Test MSE of the first, middle and last token and the mean over tokens, with the Bayes-optimal baselines' MSE on the same batch (dashed: ridge, and dMMSE for finite M); stages shaded",
        )?],
    })
}
