//! `stagewise ed`: essential dynamics. The model's outputs on a fixed evaluation set at each
//! checkpoint, stacked into a (checkpoints x features) matrix, PCA, optional variable-sigma
//! smoothing of the PC scores, and for every PC pair the osculating circles (evolute), vertices
//! and the "forms" where all pairs have one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use stagewise_analysis::Pca;
use stagewise_analysis::curves::{
    evolute_cusps, evolute_jumps, forms, osculating_circles, vertices,
};
use stagewise_analysis::smoothing::{linspace, smooth_variable};
use stagewise_engine::rng::tag;
use stagewise_io::atomic::write_atomic;
use stagewise_io::checkpoint::save_f32_tensors;
use stagewise_models::batch::ChunkedRunner;
use stagewise_train::data::Batch;

use crate::llc::{RunFolder, StepSelection};
use crate::progress::Progress;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Outputs {
    /// Every token output `[sequences, 2K, D+1]` (the paper's behavioural ED).
    Full,
    /// Only the predictions `y_hat[sequences, K]` (the reference's "just-ys").
    Ys,
}

#[derive(Args)]
pub struct EdArgs {
    /// Run folder written by `stagewise train`.
    run: PathBuf,
    #[command(flatten)]
    select: StepSelection,
    #[arg(long, value_enum, default_value = "full")]
    outputs: Outputs,
    /// Sequences in the fixed evaluation set (the paper: 8192).
    #[arg(long, default_value_t = 1024)]
    sequences: usize,
    /// Seed of the evaluation set.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Principal components kept.
    #[arg(long, default_value_t = 4)]
    components: usize,
    /// Smoothing of the PC scores along the checkpoints: `none` (the paper), or `LO:HI` for
    /// Gaussian widths rising linearly from LO to HI checkpoints (the exploratory version used
    /// 0.1:300 over 5000 checkpoints).
    #[arg(long, default_value = "none")]
    smooth: String,
    /// A vertex needs a curvature at least this multiple of the pair's median curvature.
    #[arg(long, default_value_t = 2.0)]
    vertex_ratio: f64,
    /// Vertices and evolute cusps need the curve to move at least this multiple of its median
    /// speed (0 keeps true cusps, where the trajectory stops and turns back).
    #[arg(long, default_value_t = 0.1)]
    min_speed: f64,
    /// Checkpoints within which the pairs' vertices count as one form.
    #[arg(long, default_value_t = 2)]
    form_window: usize,
    /// Output folder (default: RUN/ed/<outputs>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The sigma schedule of `--smooth` for `n` checkpoints.
fn parse_smooth(spec: &str, n: usize) -> Result<Option<Vec<f64>>> {
    if spec == "none" {
        return Ok(None);
    }
    let parsed = spec
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<f64>().ok()?, b.parse::<f64>().ok()?)));
    match parsed {
        Some((lo, hi)) if lo > 0.0 && hi >= lo && hi.is_finite() => Ok(Some(linspace(lo, hi, n))),
        _ => bail!("--smooth {spec:?}: expected none or LO:HI with 0 < LO <= HI, e.g. 0.1:300"),
    }
}

pub fn ed(a: &EdArgs) -> Result<()> {
    let folder = RunFolder::open(&a.run)?;
    let mut steps = folder.select(&a.select)?;
    steps.sort_unstable();
    steps.dedup();
    if steps.len() < 3 {
        bail!(
            "essential dynamics needs at least 3 checkpoints, the selection has {}",
            steps.len()
        );
    }
    if a.sequences == 0 || a.components == 0 {
        bail!("--sequences and --components must be at least 1");
    }
    let sigma = parse_smooth(&a.smooth, steps.len())?;
    let out = a.out.clone().unwrap_or_else(|| {
        a.run.join("ed").join(match a.outputs {
            Outputs::Full => "full",
            Outputs::Ys => "ys",
        })
    });
    std::fs::create_dir_all(out.join("evolutes"))
        .with_context(|| format!("cannot create {}", out.display()))?;

    // The fixed evaluation set.
    let model = &folder.model;
    let dist = folder.train_cfg.pretrain_distribution();
    let (n, k, d1) = (a.sequences, dist.k, model.config.token_size());
    let mut batch = Batch::<f32>::default();
    dist.sample_indexed_into(&mut batch, n, |i| i as u32, a.seed, tag::ED_DATA, 0);
    let features = match a.outputs {
        Outputs::Full => n * 2 * k * d1,
        Outputs::Ys => n * k,
    };
    let rows = steps.len();
    let mut x = vec![0.0f32; rows * features];
    let mut runner = ChunkedRunner::<f32>::new(ChunkedRunner::<f32>::DEFAULT_CHUNK);
    let progress = Progress::new(0, rows as u64, "checkpoints");
    for (r, step) in steps.iter().enumerate() {
        let w = folder.weights(*step)?;
        let row = &mut x[r * features..(r + 1) * features];
        match a.outputs {
            Outputs::Full => runner.outputs(model, &w, &batch.toks, n, 2 * k, row)?,
            Outputs::Ys => runner.predict(model, &w, &batch.toks, n, 2 * k, row)?,
        }
        if row.iter().any(|v| !v.is_finite()) {
            bail!("checkpoint {step}: the model's outputs are not finite");
        }
        progress.tick(r as u64 + 1, || format!("checkpoint {step}"));
    }
    progress.finish();
    eprintln!(
        "PCA of {rows} checkpoints x {features} features ({} outputs of {n} sequences)",
        match a.outputs {
            Outputs::Full => "token",
            Outputs::Ys => "prediction",
        }
    );
    let pca = Pca::fit(&x, rows, features, a.components)?;
    drop(x);
    let kk = pca.k();

    let mut text = String::from("component,explained_variance,explained_variance_ratio\n");
    for j in 0..kk {
        writeln!(
            text,
            "{},{:?},{:?}",
            j + 1,
            pca.explained_variance[j],
            pca.explained_variance_ratio[j]
        )?;
    }
    write_atomic(&out.join("explained_variance.csv"), text.as_bytes())?;
    write_scores(&out.join("scores.csv"), &steps, &pca.scores, kk)?;
    let curve_scores = match &sigma {
        Some(s) => {
            let smoothed = smooth_variable(&pca.scores, rows, kk, s, 4.0);
            write_scores(&out.join("scores_smoothed.csv"), &steps, &smoothed, kk)?;
            smoothed
        }
        None => pca.scores.clone(),
    };
    let comps: Vec<f32> = pca.components.iter().map(|v| *v as f32).collect();
    let mean: Vec<f32> = pca.mean.iter().map(|v| *v as f32).collect();
    let meta = HashMap::from([
        ("steps".to_string(), format!("{steps:?}")),
        (
            "outputs".to_string(),
            format!("{:?}", a.outputs).to_lowercase(),
        ),
        ("sequences".to_string(), n.to_string()),
        ("seed".to_string(), a.seed.to_string()),
    ]);
    save_f32_tensors(
        &out.join("components.safetensors"),
        &[
            ("components", vec![kk, features], &comps),
            ("mean", vec![features], &mean),
        ],
        meta,
    )?;

    // Evolutes, vertices and forms for every PC pair.
    let mut vertex_text = String::from("pc_a,pc_b,kind,step,curvature\n");
    let mut lists = Vec::new();
    for i in 0..kk {
        for j in i + 1..kk {
            let curve: Vec<[f64; 2]> = (0..rows)
                .map(|r| [curve_scores[r * kk + i], curve_scores[r * kk + j]])
                .collect();
            let circles = osculating_circles(&curve);
            let mut ev = String::from("step,curvature,radius,centre_a,centre_b\n");
            for (t, o) in circles.iter().enumerate() {
                writeln!(
                    ev,
                    "{},{:?},{:?},{:?},{:?}",
                    steps[t + 1],
                    o.curvature,
                    o.radius,
                    o.centre[0],
                    o.centre[1]
                )?;
            }
            write_atomic(
                &out.join("evolutes")
                    .join(format!("pc{}-pc{}.csv", i + 1, j + 1)),
                ev.as_bytes(),
            )?;
            let v = vertices(&curve, a.vertex_ratio, a.min_speed);
            let cusps = evolute_cusps(&curve, a.vertex_ratio, a.min_speed);
            let jumps = evolute_jumps(&curve, a.vertex_ratio, a.min_speed);
            for (kind, list) in [
                ("vertex", &v),
                ("evolute_cusp", &cusps),
                ("evolute_jump", &jumps),
            ] {
                for &t in list {
                    writeln!(
                        vertex_text,
                        "{},{},{kind},{},{:?}",
                        i + 1,
                        j + 1,
                        steps[t],
                        circles[t - 1].curvature
                    )?;
                }
            }
            lists.push(v);
        }
    }
    write_atomic(&out.join("vertices.csv"), vertex_text.as_bytes())?;
    let found = if lists.is_empty() {
        vec![]
    } else {
        forms(&lists, a.form_window)
    };
    let mut form_text = String::from("step\n");
    for t in &found {
        writeln!(form_text, "{}", steps[*t])?;
    }
    write_atomic(&out.join("forms.csv"), form_text.as_bytes())?;

    let ratios: Vec<String> = pca
        .explained_variance_ratio
        .iter()
        .map(|r| format!("{:.3}", r))
        .collect();
    println!("explained variance ratio: {}", ratios.join(", "));
    println!(
        "forms (a vertex in all {} PC pairs within {} checkpoints): {:?}",
        lists.len(),
        a.form_window,
        found.iter().map(|t| steps[*t]).collect::<Vec<_>>()
    );
    println!("results: {}", out.display());
    Ok(())
}

/// `step, pc1, ..., pck`.
fn write_scores(path: &Path, steps: &[u64], scores: &[f64], k: usize) -> Result<()> {
    let mut text = String::from("step");
    for j in 0..k {
        write!(text, ",pc{}", j + 1)?;
    }
    text.push('\n');
    for (r, step) in steps.iter().enumerate() {
        write!(text, "{step}")?;
        for j in 0..k {
            write!(text, ",{:?}", scores[r * k + j])?;
        }
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())?;
    Ok(())
}
