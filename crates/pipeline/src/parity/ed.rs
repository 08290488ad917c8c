//! Essential dynamics of a parity run as the reference computes it: per checkpoint, the
//! cross-entropy of every sample of the concatenated per-task evaluation sets (task 0's first),
//! PCA (`num_components` of the run's config), smoothing with sigma from `init_smoothing` to
//! `final_smoothing`; then the task references (ln 2 everywhere, 0 on the samples of tasks
//! 0..=t: "tasks 0 to t solved") projected into the PC space, and the form potentials (squared
//! distance of each checkpoint's loss vector to each reference).

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::{Result, bail};
use stagewise_train::parity::ParityRun;

use super::open_parity_run;
use crate::ed::{EdOptions, EdResult, analyse_with_pca};
use crate::lock::Lock;
use crate::observe::Observer;
use crate::rundir::RunDir;

/// A task counts as learned at the first checkpoint with at least this accuracy on its set.
pub const LEARNED_ACCURACY: f64 = 0.95;

/// The reference's task references: `[num_tasks, num_tasks * per_task]`, reference `t` zero on
/// the first `(t + 1) * per_task` entries and ln 2 after.
pub fn task_references(num_tasks: usize, per_task: usize) -> Vec<f32> {
    let n = num_tasks * per_task;
    let mut r = vec![std::f32::consts::LN_2; num_tasks * n];
    for t in 0..num_tasks {
        r[t * n..t * n + (t + 1) * per_task].fill(0.0);
    }
    r
}

/// Essential dynamics of a parity run into `ed/losses/` (see the module documentation), plus
/// `task_references.csv` (each reference's PC scores), `potentials.csv` (step, one column per
/// task) and `tasks.csv` (per task: its frequency, the first checkpoint at 95 % accuracy, and
/// the checkpoint nearest its reference).
pub fn ed_parity(run: &RunDir, a: &EdOptions, obs: &dyn Observer) -> Result<EdResult> {
    let (cfg, model, mut steps) = open_parity_run(run, &a.select)?;
    steps.sort_unstable();
    steps.dedup();
    if steps.len() < 3 {
        bail!(
            "essential dynamics needs at least 3 checkpoints, the selection has {}",
            steps.len()
        );
    }
    let out = a.out.clone().unwrap_or_else(|| run.ed("losses"));
    let _lock = Lock::take(&out, "lock", "stagewise ed")?;
    out.clean_interrupted(true)?;
    let mut data = ParityRun::<f32>::new(&cfg, &model)?;
    let (nt, per) = (cfg.num_tasks, cfg.eval_batch_size);
    let features = nt * per;
    let rows = steps.len();
    let mut x = vec![0.0f32; rows * features];
    let mut accuracy = vec![0.0f64; rows * nt];
    obs.start(0, rows as u64, "checkpoints");
    for (r, step) in steps.iter().enumerate() {
        let w = run.weights(&model, *step)?;
        let losses = data.sample_losses(&model, &w);
        if losses.iter().any(|v| !v.is_finite()) {
            bail!("checkpoint {step}: the model's losses are not finite");
        }
        for (d, l) in x[r * features..(r + 1) * features].iter_mut().zip(&losses) {
            *d = *l as f32;
        }
        let e = data.evaluate(&model, Some(&w));
        accuracy[r * nt..(r + 1) * nt].copy_from_slice(&e.task_accuracy);
        obs.tick(r as u64 + 1, &|| format!("checkpoint {step}"));
    }
    obs.finish();
    // Form potentials, in the full loss space.
    let refs = task_references(nt, per);
    let mut potentials = vec![0.0f64; rows * nt];
    for r in 0..rows {
        let row = &x[r * features..(r + 1) * features];
        for t in 0..nt {
            potentials[r * nt + t] = row
                .iter()
                .zip(&refs[t * features..(t + 1) * features])
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum();
        }
    }
    obs.message(&format!(
        "PCA of {rows} checkpoints x {features} features (losses of {per} samples of each of {nt} tasks)"
    ));
    obs.message(&format!(
        "a parity run's ED uses its config's num_components ({}) and smoothing ({} -> {}), as the reference does",
        cfg.num_components, cfg.init_smoothing, cfg.final_smoothing
    ));
    let opts = EdOptions {
        components: cfg.num_components,
        ..a.clone()
    };
    let sigma =
        stagewise_analysis::smoothing::linspace(cfg.init_smoothing, cfg.final_smoothing, rows);
    let meta = HashMap::from([
        ("steps".to_string(), format!("{steps:?}")),
        ("outputs".to_string(), "losses".to_string()),
    ]);
    let (result, pca) =
        analyse_with_pca(&out, steps.clone(), x, features, &opts, Some(sigma), meta)?;

    let k = pca.k();
    let projected = pca.transform(&refs, nt);
    let mut text = String::from("task");
    for j in 0..k {
        write!(text, ",pc{}", j + 1)?;
    }
    text.push('\n');
    for t in 0..nt {
        write!(text, "{t}")?;
        for j in 0..k {
            write!(text, ",{:?}", projected[t * k + j])?;
        }
        text.push('\n');
    }
    out.put("task_references.csv", text.as_bytes())?;
    let mut text = String::from("step");
    for t in 0..nt {
        write!(text, ",task_{t}")?;
    }
    text.push('\n');
    for (r, step) in steps.iter().enumerate() {
        write!(text, "{step}")?;
        for t in 0..nt {
            write!(text, ",{:?}", potentials[r * nt + t])?;
        }
        text.push('\n');
    }
    out.put("potentials.csv", text.as_bytes())?;
    let mut text = String::from("task,frequency,learned_step,nearest_step\n");
    for t in 0..nt {
        let learned = (0..rows)
            .find(|r| accuracy[r * nt + t] >= LEARNED_ACCURACY)
            .map_or("NaN".to_string(), |r| steps[r].to_string());
        let nearest = (0..rows)
            .min_by(|p, q| potentials[p * nt + t].total_cmp(&potentials[q * nt + t]))
            .map_or(0, |r| steps[r]);
        writeln!(
            text,
            "{t},{:?},{learned},{nearest}",
            data.data.frequencies[t]
        )?;
    }
    out.put("tasks.csv", text.as_bytes())?;
    Ok(result)
}
