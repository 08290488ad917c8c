//! Essential dynamics: the model's outputs on a fixed evaluation set at each checkpoint,
//! stacked into a (checkpoints x features) matrix, PCA, optional variable-sigma smoothing of the
//! PC scores, and for every PC pair the osculating circles (evolute), vertices and the "forms"
//! where all pairs have one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Result, bail};
use stagewise_analysis::Pca;
use stagewise_analysis::curves::{
    evolute_cusps, evolute_jumps, forms, osculating_circles, vertices,
};
use stagewise_analysis::smoothing::{linspace, smooth_variable};
use stagewise_engine::rng::tag;
use stagewise_io::checkpoint::f32_tensors_to_bytes;
use stagewise_models::batch::ChunkedRunner;
use stagewise_train::data::Batch;

use crate::llc::{Checkpoints, StepSelection};
use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::{Folder, RunDir};

/// Which outputs are stacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Outputs {
    /// Every token output `[sequences, 2K, D+1]` (the paper's behavioural ED).
    #[default]
    Full,
    /// Only the predictions `y_hat[sequences, K]` (the reference's "just-ys").
    Ys,
}

impl Outputs {
    pub fn name(self) -> &'static str {
        match self {
            Outputs::Full => "full",
            Outputs::Ys => "ys",
        }
    }
}

/// Smoothing of the PC scores along the checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Smoothing {
    /// None (the paper).
    #[default]
    None,
    /// Gaussian widths rising linearly from `lo` to `hi` checkpoints (the exploratory version
    /// used 0.1 to 300 over 5000 checkpoints).
    Variable { lo: f64, hi: f64 },
}

impl std::str::FromStr for Smoothing {
    type Err = String;
    /// `none` or `LO:HI`.
    fn from_str(spec: &str) -> Result<Self, String> {
        if spec == "none" {
            return Ok(Smoothing::None);
        }
        let parsed = spec
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<f64>().ok()?, b.parse::<f64>().ok()?)));
        match parsed {
            Some((lo, hi)) if lo > 0.0 && hi >= lo && hi.is_finite() => {
                Ok(Smoothing::Variable { lo, hi })
            }
            _ => Err(format!(
                "--smooth {spec:?}: expected none or LO:HI with 0 < LO <= HI, e.g. 0.1:300"
            )),
        }
    }
}

/// Essential dynamics of a run.
#[derive(Clone, Debug)]
pub struct EdOptions {
    pub select: StepSelection,
    pub outputs: Outputs,
    /// Sequences in the fixed evaluation set (the paper: 8192).
    pub sequences: usize,
    /// Seed of the evaluation set.
    pub seed: u64,
    /// Principal components kept.
    pub components: usize,
    pub smooth: Smoothing,
    /// A vertex needs a curvature at least this multiple of the pair's median curvature.
    pub vertex_ratio: f64,
    /// Vertices and evolute cusps need the curve to move at least this multiple of its median
    /// speed (0 keeps true cusps, where the trajectory stops and turns back).
    pub min_speed: f64,
    /// Checkpoints within which the pairs' vertices count as one form.
    pub form_window: usize,
    /// Output folder (default: the run's `ed/<outputs>`).
    pub out: Option<Folder>,
}

impl Default for EdOptions {
    fn default() -> Self {
        EdOptions {
            select: StepSelection::default(),
            outputs: Outputs::Full,
            sequences: 1024,
            seed: 0,
            components: 4,
            smooth: Smoothing::None,
            vertex_ratio: 2.0,
            min_speed: 0.1,
            form_window: 2,
            out: None,
        }
    }
}

/// What essential dynamics found.
#[derive(Clone, Debug)]
pub struct EdResult {
    pub out: String,
    pub steps: Vec<u64>,
    pub explained_variance_ratio: Vec<f64>,
    /// PC pairs examined.
    pub pairs: usize,
    /// The form window used.
    pub form_window: usize,
    /// Steps where every PC pair has a vertex within the form window.
    pub forms: Vec<u64>,
}

/// Runs essential dynamics on a run; see the module documentation.
pub fn ed(run: &RunDir, a: &EdOptions, obs: &dyn Observer) -> Result<EdResult> {
    if run.is_language_run() {
        return crate::lm::ed_lm(run, a, obs);
    }
    if run.is_parity_run() {
        return crate::parity::ed_parity(run, a, obs);
    }
    let ckpts = Checkpoints::open(run)?;
    let mut steps = ckpts.select(&a.select)?;
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
    let (k, d1) = (
        ckpts.config.task_config.max_examples,
        ckpts.model.config.token_size(),
    );
    let per_sequence = match a.outputs {
        Outputs::Full => 2 * k * d1,
        Outputs::Ys => k,
    };
    crate::memory::check_ed(&ckpts.model.config, a.sequences, per_sequence, steps.len())?;
    let sigma = match a.smooth {
        Smoothing::None => None,
        Smoothing::Variable { lo, hi } => Some(linspace(lo, hi, steps.len())),
    };
    let out = a.out.clone().unwrap_or_else(|| run.ed(a.outputs.name()));
    let _lock = Lock::take(&out, "lock", "stagewise ed")?;
    out.clean_interrupted(true)?;

    // The fixed evaluation set.
    let model = &ckpts.model;
    let dist = ckpts.config.pretrain_distribution();
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
    obs.start(0, rows as u64, "checkpoints");
    for (r, step) in steps.iter().enumerate() {
        let w = ckpts.weights(*step)?;
        let row = &mut x[r * features..(r + 1) * features];
        match a.outputs {
            Outputs::Full => runner.outputs(model, &w, &batch.toks, n, 2 * k, row)?,
            Outputs::Ys => runner.predict(model, &w, &batch.toks, n, 2 * k, row)?,
        }
        if row.iter().any(|v| !v.is_finite()) {
            bail!("checkpoint {step}: the model's outputs are not finite");
        }
        obs.tick(r as u64 + 1, &|| format!("checkpoint {step}"));
    }
    obs.finish();
    obs.message(&format!(
        "PCA of {rows} checkpoints x {features} features ({} outputs of {n} sequences)",
        match a.outputs {
            Outputs::Full => "token",
            Outputs::Ys => "prediction",
        }
    ));
    let meta = HashMap::from([
        ("steps".to_string(), format!("{steps:?}")),
        ("outputs".to_string(), a.outputs.name().to_string()),
        ("sequences".to_string(), n.to_string()),
        ("seed".to_string(), a.seed.to_string()),
    ]);
    analyse(&out, steps, x, features, a, sigma, meta)
}

/// PCA of the `(checkpoints x features)` matrix `x`, smoothing, evolutes, vertices and forms,
/// written to `out` (what every model's essential dynamics shares).
pub fn analyse(
    out: &Folder,
    steps: Vec<u64>,
    x: Vec<f32>,
    features: usize,
    a: &EdOptions,
    sigma: Option<Vec<f64>>,
    meta: HashMap<String, String>,
) -> Result<EdResult> {
    Ok(analyse_with_pca(out, steps, x, features, a, sigma, meta)?.0)
}

/// [`analyse`], also returning the fitted PCA (to project other points into its space).
pub fn analyse_with_pca(
    out: &Folder,
    steps: Vec<u64>,
    x: Vec<f32>,
    features: usize,
    a: &EdOptions,
    sigma: Option<Vec<f64>>,
    meta: HashMap<String, String>,
) -> Result<(EdResult, Pca)> {
    let rows = steps.len();
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
    out.put("explained_variance.csv", text.as_bytes())?;
    out.put("scores.csv", scores_csv(&steps, &pca.scores, kk).as_bytes())?;
    let curve_scores = match &sigma {
        Some(s) => {
            let smoothed = smooth_variable(&pca.scores, rows, kk, s, 4.0);
            out.put(
                "scores_smoothed.csv",
                scores_csv(&steps, &smoothed, kk).as_bytes(),
            )?;
            smoothed
        }
        None => pca.scores.clone(),
    };
    let comps: Vec<f32> = pca.components.iter().map(|v| *v as f32).collect();
    let mean: Vec<f32> = pca.mean.iter().map(|v| *v as f32).collect();
    let components_name = "components.safetensors";
    let bytes = f32_tensors_to_bytes(
        Path::new(&out.describe(components_name)),
        &[
            ("components", vec![kk, features], &comps),
            ("mean", vec![features], &mean),
        ],
        meta,
    )?;
    out.put(components_name, &bytes)?;

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
            out.put(
                &format!("evolutes/pc{}-pc{}.csv", i + 1, j + 1),
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
    out.put("vertices.csv", vertex_text.as_bytes())?;
    let found = if lists.is_empty() {
        vec![]
    } else {
        forms(&lists, a.form_window)
    };
    let mut form_text = String::from("step\n");
    for t in &found {
        writeln!(form_text, "{}", steps[*t])?;
    }
    out.put("forms.csv", form_text.as_bytes())?;
    let result = EdResult {
        out: out.display(),
        explained_variance_ratio: pca.explained_variance_ratio.clone(),
        pairs: lists.len(),
        form_window: a.form_window,
        forms: found.iter().map(|t| steps[*t]).collect(),
        steps,
    };
    Ok((result, pca))
}

/// `step, pc1, ..., pck`.
fn scores_csv(steps: &[u64], scores: &[f64], k: usize) -> String {
    let mut text = String::from("step");
    for j in 0..k {
        let _ = write!(text, ",pc{}", j + 1);
    }
    text.push('\n');
    for (r, step) in steps.iter().enumerate() {
        let _ = write!(text, "{step}");
        for j in 0..k {
            let _ = write!(text, ",{:?}", scores[r * k + j]);
        }
        text.push('\n');
    }
    text
}
