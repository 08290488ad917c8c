//! Training parity runs from a sweep grid: one folder per run named by the reference's model
//! id, runs of the same shapes trained together, checkpoints loadable by name, and a stopped
//! and resumed sweep equal to an uninterrupted one.

use std::path::{Path, PathBuf};

use stagewise_models::parity::{ParityConfig, ParityMlp};
use stagewise_pipeline::parity::{ParityTrainOptions, model_id, train_parity};
use stagewise_pipeline::{Quiet, RunDir};
use stagewise_train::parity::{ParityRuns, ParityTrainConfig};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stagewise-parity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The reference's sweep file format, small: 2 x 2 runs of 40 steps.
fn sweep(dir: &Path) -> PathBuf {
    let p = dir.join("parity.yaml");
    std::fs::write(
        &p,
        "name: parity\nmethod: grid\ncommand: [\"python\", \"src/icl/other/parity.py\"]\n\
         project: multitask-parity\nparameters:\n  num_tasks:\n    values: [2, 3]\n\
         num_features:\n    value: 6\n  num_task_bits:\n    value: 2\n  hidden_dim:\n    value: 8\n\
         alpha:\n    values: [0.5, 2.0]\n  num_steps:\n    value: 40\n  batch_size:\n    value: 64\n\
         eval_batch_size:\n    value: 32\n  num_checkpoints:\n    value: 9\n  lr:\n    value: 0.003\n\
         seed:\n    value: 0\n  log_wandb:\n    value: True\n"
            .replace("\nnum_features", "\n  num_features")
            .replace("\nalpha", "\n  alpha")
            .replace("\neval_batch_size", "\n  eval_batch_size")
            .replace("\nseed", "\n  seed"),
    )
    .unwrap();
    p
}

fn opts(cfg: &Path, root: &Path) -> ParityTrainOptions {
    ParityTrainOptions {
        config: Some(cfg.to_path_buf()),
        root: Some(root.to_path_buf()),
        ..ParityTrainOptions::default()
    }
}

#[test]
fn a_parity_sweep_trains_every_run_together_and_resumes_exactly() {
    let dir = scratch("sweep");
    let cfg = sweep(&dir);
    let whole = dir.join("whole");
    let results = train_parity(&opts(&cfg, &whole), &Quiet).unwrap();
    assert_eq!(results.len(), 4);
    let mut names: Vec<String> = results.iter().map(|r| model_id(&r.config)).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "multitask-parity-2-6-2-8-0.5-40-0.003-0",
            "multitask-parity-2-6-2-8-2.0-40-0.003-0",
            "multitask-parity-3-6-2-8-0.5-40-0.003-0",
            "multitask-parity-3-6-2-8-2.0-40-0.003-0",
        ]
    );
    // linspace(0, 40, 9) = 0, 5, ..., 40: nine checkpoints, the last after step 40's update.
    for r in &results {
        assert!(r.run.is_complete());
        assert_eq!(
            r.run.checkpoint_steps().unwrap(),
            [0, 5, 10, 15, 20, 25, 30, 35, 40]
        );
        let metrics =
            std::fs::read_to_string(whole.join(model_id(&r.config)).join("metrics.csv")).unwrap();
        let header = metrics.lines().next().unwrap();
        let want = if r.config.num_tasks == 2 {
            "step,Loss,Accuracy,Loss/0,Accuracy/0,Loss/1,Accuracy/1"
        } else {
            "step,Loss,Accuracy,Loss/0,Accuracy/0,Loss/1,Accuracy/1,Loss/2,Accuracy/2"
        };
        assert_eq!(header, want);
        assert_eq!(metrics.lines().count(), 10);
    }
    // A checkpoint is the run trained alone, read back by its PyTorch names.
    let c = &results[0].config;
    let mut alone = ParityRuns::<f32>::new(std::slice::from_ref(c)).unwrap();
    for _ in 0..=40 {
        let m = alone.model.clone();
        alone.runs[0].train_step(&m);
    }
    let model = ParityMlp::new(ParityConfig {
        num_tasks: c.num_tasks,
        num_features: 6,
        hidden_dim: 8,
    })
    .unwrap();
    assert_eq!(
        results[0].run.weights(&model, 40).unwrap(),
        alone.runs[0].params
    );

    // Stopped after 17 steps, then resumed: the same files.
    let sliced = dir.join("sliced");
    let mut o = opts(&cfg, &sliced);
    o.stop_after = Some(17);
    for r in train_parity(&o, &Quiet).unwrap() {
        assert!(!r.run.is_complete());
    }
    o.stop_after = None;
    o.resume = true;
    let again = train_parity(&o, &Quiet).unwrap();
    assert!(again.iter().all(|r| r.resumed_at == Some(15)));
    for name in &names {
        for f in ["metrics.csv", "checkpoints/40.safetensors", "config.yaml"] {
            assert_eq!(
                std::fs::read(sliced.join(name).join(f)).unwrap(),
                std::fs::read(whole.join(name).join(f)).unwrap(),
                "{name}/{f}"
            );
        }
    }
    // Training into a folder that has the run, without --resume, is refused.
    let e = train_parity(&opts(&cfg, &whole), &Quiet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
    // One run of the grid.
    let one = ParityTrainOptions {
        sweep_index: Some(3),
        out: Some(RunDir::local(dir.join("one"))),
        ..opts(&cfg, &whole)
    };
    let r = train_parity(&one, &Quiet).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(
        std::fs::read(dir.join("one/metrics.csv")).unwrap(),
        std::fs::read(whole.join(model_id(&r[0].config)).join("metrics.csv")).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_parity_configs_name_the_field() {
    let dir = scratch("bad");
    let p = dir.join("bad.yaml");
    std::fs::write(&p, "num_tasks: 4\nnum_features: 3\nnum_task_bits: 5\n").unwrap();
    let e = train_parity(&opts(&p, &dir), &Quiet).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("num_task_bits") && msg.contains("num_features = 3"),
        "{msg}"
    );
    std::fs::write(&p, "num_task_bits: 2\nnum_taks: 4\n").unwrap();
    let msg = format!("{:#}", train_parity(&opts(&p, &dir), &Quiet).unwrap_err());
    assert!(msg.contains("num_taks"), "{msg}");
    assert!(
        std::fs::read_dir(&dir).unwrap().count() == 1,
        "nothing written"
    );
    let _ = ParityTrainConfig::default();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn task_references_are_the_reference_vectors() {
    let l = std::f32::consts::LN_2;
    let r = stagewise_pipeline::parity::task_references(3, 2);
    assert_eq!(
        r,
        [[0.0, 0.0, l, l, l, l], [0.0, 0.0, 0.0, 0.0, l, l], [0.0; 6]].concat()
    );
}

/// Essential dynamics of a trained parity run: the potentials against a hand computation from
/// the checkpoint's losses, tasks learned in frequency order, the last task's reference
/// nearest at the end.
#[test]
fn parity_essential_dynamics_has_the_task_references_and_potentials() {
    use stagewise_models::StateDict;
    use stagewise_train::parity::ParityRun;
    let dir = scratch("ed");
    let p = dir.join("p.yaml");
    std::fs::write(
        &p,
        "num_tasks: 3\nnum_features: 10\nnum_task_bits: 2\nhidden_dim: 32\nalpha: 2.0\n\
         num_steps: 1500\nbatch_size: 256\neval_batch_size: 64\nnum_checkpoints: 31\n\
         num_components: 3\n",
    )
    .unwrap();
    let run = RunDir::local(dir.join("run"));
    let o = ParityTrainOptions {
        config: Some(p),
        out: Some(run.clone()),
        ..ParityTrainOptions::default()
    };
    let r = train_parity(&o, &Quiet).unwrap().remove(0);
    let e = stagewise_pipeline::ed::ed(&run, &Default::default(), &Quiet).unwrap();
    assert_eq!(e.explained_variance_ratio.len(), 3);
    let root = dir.join("run/ed/losses");
    let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap();
    let potentials = read("potentials.csv");
    let lines: Vec<&str> = potentials.lines().collect();
    assert_eq!(lines[0], "step,task_0,task_1,task_2");
    assert_eq!(lines.len(), 32);
    // Row of step 50 by hand.
    let row: Vec<f64> = lines
        .iter()
        .find(|l| l.starts_with("50,"))
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    let model = stagewise_models::ParityMlp::new(r.config.model()).unwrap();
    assert_eq!(model.num_params(), model.layout().len);
    let w = run.weights(&model, 50).unwrap();
    let mut fresh = ParityRun::<f32>::new(&r.config, &model).unwrap();
    let losses = fresh.sample_losses(&model, &w);
    let refs = stagewise_pipeline::parity::task_references(3, 64);
    for t in 0..3 {
        let want: f64 = losses
            .iter()
            .zip(&refs[t * 192..(t + 1) * 192])
            .map(|(a, b)| ((*a as f32) as f64 - *b as f64).powi(2))
            .sum();
        assert!((row[1 + t] - want).abs() < 1e-9 * want, "task {t}");
    }
    assert_eq!(read("task_references.csv").lines().count(), 4);
    let tasks = read("tasks.csv");
    let learned: Vec<u64> = tasks
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .nth(2)
                .unwrap()
                .parse()
                .expect("every task learned")
        })
        .collect();
    assert!(learned.windows(2).all(|w| w[0] <= w[1]), "{tasks}");
    let nearest_last: u64 = tasks
        .lines()
        .nth(3)
        .unwrap()
        .split(',')
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert!(nearest_last >= 1000, "{tasks}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The LLC over a parity run's checkpoints through the common sweep, and the stage table with
/// the change of `Loss` per stage.
#[test]
fn parity_llc_and_stages_run_on_a_trained_run() {
    let dir = scratch("llc");
    let p = dir.join("p.yaml");
    std::fs::write(
        &p,
        "num_tasks: 3\nnum_features: 8\nnum_task_bits: 2\nhidden_dim: 16\nalpha: 1.0\n\
         num_steps: 300\nbatch_size: 128\neval_batch_size: 32\nnum_checkpoints: 16\n",
    )
    .unwrap();
    let run = RunDir::local(dir.join("run"));
    let o = ParityTrainOptions {
        config: Some(p),
        out: Some(run.clone()),
        ..ParityTrainOptions::default()
    };
    train_parity(&o, &Quiet).unwrap();
    let sampler = stagewise_pipeline::llc::Sampler::from_text(
        "parity-tiny",
        "num_chains: 2\nnum_draws: 20\ngrad_batch_size: 64\neval_dataset_size: 2048\n\
         gradient_scale: 0.05\nlocalization_scale: 0.05\nnoise_scale: 0.001\n",
        "test sampler",
        &[],
    )
    .unwrap();
    let opts = stagewise_pipeline::llc::LlcOptions {
        sampler,
        ..Default::default()
    };
    let r = stagewise_pipeline::llc::llc(&run, &opts, &Quiet).unwrap();
    assert_eq!(r.estimates.len(), 16);
    // Half the parameter count bounds the LLC (d / 2 = 113 for 226 parameters).
    for (step, e) in &r.estimates {
        assert!(
            e.mean.is_finite() && e.mean < 219.0,
            "step {step}: {}",
            e.mean
        );
    }
    let s = stagewise_pipeline::stages::stages(
        &run,
        &stagewise_pipeline::stages::StagesOptions {
            llc: Some("parity-tiny".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!s.stages.is_empty());
    assert!(s.stages.iter().all(|st| st.delta_loss.is_finite()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `reproduce` on a parity config: every stage, and the report's parity panels.
#[test]
fn the_whole_pipeline_runs_on_a_parity_config() {
    use stagewise_pipeline::reproduce::{ReproduceOptions, reproduce};
    let dir = scratch("reproduce");
    let p = dir.join("p.yaml");
    std::fs::write(
        &p,
        "num_tasks: 3\nnum_features: 8\nnum_task_bits: 2\nhidden_dim: 16\nalpha: 1.0\n\
         num_steps: 200\nbatch_size: 128\neval_batch_size: 32\nnum_checkpoints: 21\n",
    )
    .unwrap();
    let sampler = dir.join("s.yaml");
    std::fs::write(
        &sampler,
        "num_chains: 2\nnum_draws: 10\ngrad_batch_size: 64\neval_dataset_size: 512\n\
         gradient_scale: 0.05\nlocalization_scale: 0.05\nnoise_scale: 0.001\n",
    )
    .unwrap();
    let run = RunDir::local(dir.join("run"));
    let opts = ReproduceOptions {
        config: Some(p),
        sampler: Some(sampler),
        out: Some(run.clone()),
        ..ReproduceOptions::default()
    };
    reproduce(&opts, &Quiet).unwrap();
    let page = std::fs::read_to_string(dir.join("run/report/index.html")).unwrap();
    for part in [
        "Loss per task",
        "Accuracy per task",
        "Local learning coefficient (s)",
        "PC1 vs PC2 with the task references",
        "Form potentials",
        "first step at 95 % accuracy",
    ] {
        assert!(page.contains(part), "report lacks {part:?}");
    }
    assert!(!page.contains("No LLC sweep yet") && !page.contains("No essential dynamics yet"));
    for f in [
        "stages/s/stages.csv",
        "indicators.csv",
        "report/ed_potentials.png",
    ] {
        assert!(dir.join("run").join(f).exists(), "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
