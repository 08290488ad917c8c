//! `stagewise report`: one self-contained HTML page (inline SVG) and PNG figures of a run:
//! test loss per token with the Bayes baselines, the LLC curve with its error band and the
//! stages shaded, the stage table, essential dynamics (PC scores over time, PC-pair
//! trajectories coloured by stage with forms marked, explained variance) and structural
//! indicators. Missing parts (no LLC sweep yet, no ED...) are named with the command that makes
//! them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use plotters::style::RGBColor;
use stagewise_io::atomic::write_atomic;
use stagewise_io::table::read_csv;
use stagewise_report::html::{Block, Section, render};
use stagewise_report::{Corner, LineChart, Series, Span, palette};
use stagewise_train::eval::Evaluator;

#[derive(Args)]
pub struct ReportArgs {
    /// Run folder.
    run: PathBuf,
    /// LLC sweep to show (folder under RUN/llc; default: the only one, or the one with stages).
    #[arg(long)]
    llc: Option<String>,
    /// Output folder (default: RUN/report).
    #[arg(long)]
    out: Option<PathBuf>,
}

const SIZE: (u32, u32) = (960, 540);
const STAGE_A: RGBColor = RGBColor(230, 120, 20);
const STAGE_B: RGBColor = RGBColor(40, 100, 200);

/// A CSV as (header, rows), or None when the file does not exist.
fn table(path: &Path) -> Result<Option<(Vec<String>, Vec<Vec<f64>>)>> {
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(read_csv(path)?))
}

fn column(t: &(Vec<String>, Vec<Vec<f64>>), name: &str) -> Option<Vec<f64>> {
    let i = t.0.iter().position(|h| h == name)?;
    Some(t.1.iter().map(|r| r[i]).collect())
}

struct Stage {
    start: f64,
    end: f64,
    kind: String,
    delta_loss: f64,
    delta_llc: f64,
}

fn read_stages(path: &Path) -> Result<Vec<Stage>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |j: usize| -> Result<f64> {
            f.get(j)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{}: line {}: bad field {j}", path.display(), i + 1))
        };
        out.push(Stage {
            start: num(1)?,
            end: num(2)?,
            delta_loss: num(3)?,
            delta_llc: num(4)?,
            kind: f.get(5).unwrap_or(&"").to_string(),
        });
    }
    Ok(out)
}

fn spans(stages: &[Stage]) -> Vec<Span> {
    stages
        .iter()
        .enumerate()
        .map(|(i, s)| Span {
            from: s.start + 1.0,
            to: s.end + 1.0,
            label: format!("S{} ({})", i + 1, s.kind),
            color: if s.kind == "A" { STAGE_A } else { STAGE_B },
        })
        .collect()
}

/// Draws `chart` to `<out>/<name>.png` and returns the figure block.
fn figure(out: &Path, name: &str, chart: &LineChart, caption: &str) -> Result<Block> {
    chart.png(&out.join(format!("{name}.png")), SIZE)?;
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

/// The sweep to show: `--llc`, else the only sweep, else the one with a stage table.
fn pick_sweep(run: &Path, name: Option<&str>) -> Option<String> {
    if let Some(n) = name {
        return Some(n.to_string());
    }
    let list = |dir: PathBuf, file: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().join(file).is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let sweeps = list(run.join("llc"), "llc.csv");
    match sweeps.as_slice() {
        [one] => Some(one.clone()),
        [] => None,
        _ => list(run.join("stages"), "stages.csv")
            .into_iter()
            .find(|s| sweeps.contains(s))
            .or_else(|| sweeps.first().cloned()),
    }
}

pub fn report(a: &ReportArgs) -> Result<()> {
    let run = &a.run;
    let Some(metrics) = table(&run.join("metrics.csv"))? else {
        bail!(
            "{}: no metrics.csv; is {} a stagewise run folder?",
            run.join("metrics.csv").display(),
            run.display()
        );
    };
    let out = a.out.clone().unwrap_or_else(|| run.join("report"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let sweep = pick_sweep(run, a.llc.as_deref());
    let stages = match &sweep {
        Some(s) if run.join("stages").join(s).join("stages.csv").is_file() => {
            read_stages(&run.join("stages").join(s).join("stages.csv"))?
        }
        _ => vec![],
    };
    let mut sections = Vec::new();

    // Test loss per token with the baselines.
    let steps: Vec<f64> = metrics.1.iter().map(|r| r[0] + 1.0).collect();
    let mut loss = chart(
        "Test loss (pretraining distribution)",
        "step + 1",
        "MSE",
        true,
    );
    loss.spans = spans(&stages);
    let k = (0..)
        .take_while(|t| {
            metrics
                .0
                .iter()
                .any(|h| *h == format!("pretrain/mse/token/{t}"))
        })
        .count();
    for (i, t) in [0, k / 2, k.saturating_sub(1)].into_iter().enumerate() {
        if let Some(v) = column(&metrics, &format!("pretrain/mse/token/{t}")) {
            loss.series.push(Series::line(
                format!("token {t}"),
                steps.iter().copied().zip(v).collect(),
                palette(i + 1),
            ));
        }
    }
    if let Some(mse) = column(&metrics, "pretrain/mse") {
        loss.series.push(Series::line(
            "mean over tokens",
            steps.iter().copied().zip(mse.iter().copied()).collect(),
            palette(0),
        ));
        // The baselines' risks on the same fixed evaluation batch (recomputed from the config).
        let cfg_path = run.join("config.yaml");
        if let Ok(text) = std::fs::read_to_string(&cfg_path) {
            let cfg = stagewise_io::config::parse_plain(&text, &cfg_path)?;
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
                let (x0, x1) = (steps[0], *steps.last().unwrap());
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
    sections.push(Section {
        title: "Loss".into(),
        blocks: vec![figure(
            &out,
            "loss",
            &loss,
            "Test MSE of the first, middle and last token and the mean over tokens, with the Bayes-optimal baselines' MSE on the same batch (dashed: ridge, and dMMSE for finite M); stages shaded",
        )?],
    });

    // LLC curve and stage table.
    let mut blocks = Vec::new();
    match &sweep {
        Some(s) => {
            let path = run.join("llc").join(s).join("llc.csv");
            let t = table(&path)?.with_context(|| format!("{}: missing", path.display()))?;
            let col = if t.0.iter().any(|h| h == "llc/mean/mean") {
                "llc/mean/mean"
            } else {
                "llc/mean"
            };
            let mut rows: Vec<(f64, f64, f64)> =
                match (column(&t, "step"), column(&t, col), column(&t, "llc/std")) {
                    (Some(st), Some(m), Some(sd)) => st
                        .into_iter()
                        .zip(m.into_iter().zip(sd))
                        .map(|(s, (m, d))| (s + 1.0, m, d))
                        .collect(),
                    _ => bail!("{}: expected columns step, {col}, llc/std", path.display()),
                };
            rows.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut c = chart(
                &format!("Local learning coefficient ({s})"),
                "step + 1",
                "LLC",
                true,
            );
            c.spans = spans(&stages);
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
            let fit = run.join("stages").join(s).join("gp.csv");
            if let Some(g) = table(&fit)? {
                if let (Some(st), Some(f)) = (column(&g, "step"), column(&g, "llc_fit")) {
                    let mut gp = Series::line(
                        "GP fit",
                        st.iter().map(|s| s + 1.0).zip(f).collect(),
                        palette(5),
                    );
                    gp.dashed = true;
                    c.series.push(gp);
                }
            }
            blocks.push(figure(
                &out,
                "llc",
                &c,
                "Estimated LLC over training (mean over chains, band: one standard deviation over chains), the GP fit used for the stages (dashed), stages shaded (orange: LLC rises, type A; blue: falls, type B)",
            )?);
            if stages.is_empty() {
                blocks.push(missing(
                    "stage table",
                    &format!("stagewise stages {} --llc {s}", run.display()),
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
        }
        None => blocks.push(missing(
            "LLC sweep",
            &format!(
                "stagewise llc {} --config configs/sampler-quick.yaml",
                run.display()
            ),
        )),
    }
    sections.push(Section {
        title: "LLC and stages".into(),
        blocks,
    });

    // Essential dynamics.
    let mut blocks = Vec::new();
    let ed = ["full", "ys"]
        .iter()
        .map(|o| run.join("ed").join(o))
        .find(|p| p.join("scores.csv").is_file());
    match ed {
        Some(ed) => {
            let smoothed = ed.join("scores_smoothed.csv");
            let raw = ed.join("scores.csv");
            let scores = table(if smoothed.is_file() { &smoothed } else { &raw })?.unwrap();
            let kk = scores.0.len() - 1;
            let st: Vec<f64> = column(&scores, "step").unwrap();
            let forms: Vec<f64> = table(&ed.join("forms.csv"))?
                .map(|t| t.1.iter().map(|r| r[0]).collect())
                .unwrap_or_default();
            let mut c = chart(
                "Essential dynamics: PC scores over training",
                "step + 1",
                "score",
                true,
            );
            c.spans = spans(&stages);
            c.markers = forms.iter().map(|f| f + 1.0).collect();
            for j in 0..kk {
                let v = column(&scores, &format!("pc{}", j + 1)).unwrap();
                c.series.push(Series::line(
                    format!("PC{}", j + 1),
                    st.iter().map(|s| s + 1.0).zip(v).collect(),
                    palette(j),
                ));
            }
            blocks.push(figure(&out, "ed_scores", &c, "Principal-component scores of the model's outputs on a fixed evaluation set, per checkpoint; dashed lines: forms (a vertex in every PC pair); stages shaded")?);
            for (i, j) in [(1, 2), (1, 3), (2, 3)] {
                if j > kk {
                    continue;
                }
                let a = column(&scores, &format!("pc{i}")).unwrap();
                let b = column(&scores, &format!("pc{j}")).unwrap();
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
                            .zip(a.iter().zip(&b))
                            .filter(|(t, _)| **t >= s.start && **t <= s.end)
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
                    &out,
                    &format!("ed_pc{i}_pc{j}"),
                    &c,
                    &format!(
                        "Trajectory in the PC{i}-PC{j} plane, coloured by stage; circles: forms"
                    ),
                )?);
            }
            if let Some(ev) = table(&ed.join("explained_variance.csv"))? {
                blocks.push(Block::Table {
                    header: ["component", "explained variance", "ratio"]
                        .map(String::from)
                        .to_vec(),
                    rows: ev
                        .1
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
        }
        None => blocks.push(missing(
            "essential dynamics",
            &format!("stagewise ed {}", run.display()),
        )),
    }
    sections.push(Section {
        title: "Essential dynamics".into(),
        blocks,
    });

    // Structural indicators.
    let mut blocks = Vec::new();
    match table(&run.join("indicators.csv"))? {
        Some(t) => {
            let st: Vec<f64> = column(&t, "step")
                .unwrap()
                .iter()
                .map(|s| s + 1.0)
                .collect();
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
                    t.0.iter()
                        .filter(|h| h.ends_with("/weight/collapsed"))
                        .map(|h| h.as_str())
                        .collect(),
                ),
                (
                    "indicators_hessian",
                    "Hessian: top eigenvalues and trace / 10",
                    "curvature",
                    t.0.iter()
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
                c.spans = spans(&stages);
                if name == "indicators_ln" {
                    c.y_range = Some((-0.02, 1.02));
                }
                for (i, col) in cols.iter().enumerate() {
                    let v = column(&t, col).unwrap();
                    let label = col
                        .trim_start_matches("ln/")
                        .trim_end_matches("/weight/collapsed");
                    c.series.push(Series::line(
                        label,
                        st.iter().copied().zip(v).collect(),
                        palette(i),
                    ));
                }
                if name == "indicators_hessian" {
                    if let Some(tr) = column(&t, "hessian/trace") {
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
                }
                blocks.push(figure(&out, name, &c, title)?);
            }
        }
        None => blocks.push(missing(
            "structural indicators",
            &format!("stagewise indicators {}", run.display()),
        )),
    }
    sections.push(Section {
        title: "Structural indicators".into(),
        blocks,
    });

    let page = render(
        &format!(
            "stagewise report: {}",
            run.file_name()
                .map_or("run".into(), |n| n.to_string_lossy().into_owned())
        ),
        "Developmental stages of an in-context linear regression transformer: loss, local learning coefficient, essential dynamics and structural indicators over training. Steps are shown as step + 1 on log axes.",
        &sections,
    );
    let index = out.join("index.html");
    write_atomic(&index, page.as_bytes())?;
    println!("report: {}", index.display());
    Ok(())
}
