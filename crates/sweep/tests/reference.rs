//! The reference's own sweep files expand as the reference runs them, and name their runs as
//! the reference does (hashes from `reference.md` 3.7).

use std::collections::BTreeSet;

use stagewise_sweep::{Kind, Sweep, SweepFile};

fn load(rel: &str) -> Sweep {
    let path = format!(
        "{}/../../sweeps/regression/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    Sweep::new(SweepFile::parse(&text, rel, "sweep", None, 0).unwrap()).unwrap()
}

const TASK_HASHES: [&str; 11] = [
    "f983ab", "d59054", "e64d98", "d86663", "158f34", "7c6962", "28bea1", "5e8527", "b73886",
    "e42996", "9c9061",
];

#[test]
fn the_training_sweep_expands_to_its_11_runs_with_the_reference_names() {
    let sweep = load("training-runs/L2H4Minf.yaml");
    assert_eq!((sweep.kind, sweep.len()), (Kind::Train, 11));
    for (seed, hash) in TASK_HASHES.iter().enumerate() {
        let t = sweep.task(seed).unwrap();
        assert_eq!(
            t.run,
            format!("M-inf-seed-{seed}-task-{hash}-opt-4f4cb7-sched-4bcc54")
        );
        assert_eq!(
            t.train.as_ref().unwrap().task_config.model_seed,
            Some(seed as u64)
        );
        assert_eq!(t.train.as_ref().unwrap().eval_batch_size, 1024);
        assert_eq!(t.train.as_ref().unwrap().num_steps, 500_000);
    }
    assert!(
        sweep
            .task(11)
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
}

#[test]
fn the_analysis_sweep_is_one_llc_task_per_seed_on_the_training_runs() {
    let train = load("training-runs/L2H4Minf.yaml");
    let sweep = load("analysis/0-L2H4-llcs-over-time.yaml");
    assert_eq!((sweep.kind, sweep.len()), (Kind::Llc, 10));
    for seed in 0..10 {
        let t = sweep.task(seed).unwrap();
        // The same task config finds the same training run.
        assert_eq!(t.run, train.task(seed).unwrap().run);
        let s = t.sampler.as_ref().unwrap();
        assert_eq!(
            (s.num_chains, s.num_draws, s.num_burnin_steps),
            (8, 500, 500)
        );
        assert_eq!(t.sampler_name.as_deref(), Some("L2H4Minf-llcs-over-time"));
        let steps = t
            .steps
            .as_ref()
            .unwrap()
            .expand(t.train.as_ref().unwrap().num_steps);
        assert!(steps.contains(&0) && steps.contains(&499_999) && steps.len() > 250);
    }
}

#[test]
fn the_calibration_grid_is_216_settings_each_at_the_8_checkpoints() {
    let sweep = load("calibration/0-L2H4-eps-temp-gamma.yaml");
    assert_eq!((sweep.kind, sweep.len()), (Kind::Calibrate, 216));
    let mut names = BTreeSet::new();
    let mut settings = BTreeSet::new();
    for i in 0..216 {
        let t = sweep.task(i).unwrap();
        assert_eq!(t.run, "M-inf-seed-0-task-d2d978-opt-4f4cb7-sched-4bcc54");
        let steps: Vec<u64> = t
            .steps
            .as_ref()
            .unwrap()
            .expand(500_000)
            .into_iter()
            .collect();
        assert_eq!(steps, [507, 1124, 3247, 9375, 27072, 59968, 121212, 499999]);
        let s = t.sampler.unwrap();
        settings.insert(format!(
            "{:?} {:?} {:?}",
            s.gradient_scale, s.localization_scale, s.noise_scale
        ));
        names.insert(t.sampler_name.unwrap());
    }
    assert_eq!((settings.len(), names.len()), (216, 216));
    // Last key fastest: tasks 0 and 1 differ in the noise scale only.
    let (a, b) = (sweep.task(0).unwrap(), sweep.task(1).unwrap());
    assert_eq!(a.params["sampler_config.noise_scale"], 0.0001);
    assert_eq!(b.params["sampler_config.noise_scale"], 0.0003);
    assert_eq!(
        a.params["sampler_config.gradient_scale"],
        b.params["sampler_config.gradient_scale"]
    );
}

#[test]
fn the_parity_sweep_expands_to_its_18_runs_with_the_reference_model_ids() {
    let rel = "parity/parity.yaml";
    let path = format!("{}/../../sweeps/{rel}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let sweep = Sweep::new(SweepFile::parse(&text, rel, "parity", None, 0).unwrap()).unwrap();
    assert_eq!((sweep.kind, sweep.len()), (Kind::Parity, 18));
    let runs: BTreeSet<String> = (0..18).map(|i| sweep.task(i).unwrap().run).collect();
    assert_eq!(runs.len(), 18);
    for tasks in [4, 8, 16] {
        for alpha in ["0.5", "0.8", "1.0", "2.0", "3.0", "4.0"] {
            let id = format!("multitask-parity-{tasks}-16-3-50-{alpha}-10000-0.003-0");
            assert!(runs.contains(&id), "{id}");
        }
    }
    let t = sweep.task(0).unwrap();
    let c = t.parity.unwrap();
    assert!(t.train.is_none());
    assert_eq!(
        (c.num_checkpoints(), c.batch_size, c.eval_batch_size, c.lr),
        (1000, 1024, 256, 0.003)
    );
}
