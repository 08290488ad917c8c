//! `stop_after` ends a training call as a pre-empted job would: what was written stays, the run
//! is not complete, and resuming it gives the same files as a run that never stopped.

use stagewise_pipeline::train::{TrainOptions, train};
use stagewise_pipeline::{Quiet, RunDir};

fn opts(run: &RunDir, stop_after: Option<u64>, resume: bool) -> TrainOptions {
    let sets = [
        "num_steps=60",
        "checkpointer_config.checkpoint_steps.linear_space=6",
    ];
    TrainOptions {
        out: Some(run.clone()),
        sets: if resume {
            Vec::new()
        } else {
            sets.iter().map(|s| s.to_string()).collect()
        },
        resume,
        stop_after,
        ..TrainOptions::default()
    }
}

#[test]
fn a_stopped_run_resumes_to_the_files_of_an_uninterrupted_one() {
    let dir = std::env::temp_dir().join(format!("stagewise-stop-after-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (whole, sliced) = (
        RunDir::local(dir.join("whole")),
        RunDir::local(dir.join("sliced")),
    );
    train(&opts(&whole, None, false), &Quiet).unwrap();
    assert!(whole.is_complete());

    let first = train(&opts(&sliced, Some(30), false), &Quiet).unwrap();
    assert!(
        !sliced.is_complete(),
        "a stopped run must not be marked complete"
    );
    let steps = sliced.checkpoint_steps().unwrap();
    assert!(
        steps.iter().all(|s| *s < 30),
        "checkpoints past the stop: {steps:?}"
    );
    assert!(first.last_loss.is_finite());
    train(&opts(&sliced, None, true), &Quiet).unwrap();
    assert!(sliced.is_complete());

    assert_eq!(
        whole.checkpoint_steps().unwrap(),
        sliced.checkpoint_steps().unwrap()
    );
    for name in ["metrics.csv", "train.csv"] {
        let a = std::fs::read(dir.join("whole").join(name)).unwrap();
        let b = std::fs::read(dir.join("sliced").join(name)).unwrap();
        assert!(a == b, "{name} differs after stop and resume");
    }
    for s in whole.checkpoint_steps().unwrap() {
        let file = format!("checkpoints/{s}.safetensors");
        let (a, b) = (
            dir.join("whole").join(&file),
            dir.join("sliced").join(&file),
        );
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{file}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
