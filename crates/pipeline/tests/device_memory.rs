//! A sweep whose chains would not fit in the device's memory is refused before anything is
//! written: the error names the sizes and what to lower, and the sampler folder is not created,
//! so the rerun with smaller settings starts clean.

use std::sync::Arc;

use stagewise_cuda::host::HostDevice;
use stagewise_pipeline::calibrate::{CalibrateOptions, calibrate};
use stagewise_pipeline::device::Backend;
use stagewise_pipeline::llc::{LlcOptions, PerLaunch, SAMPLER_TINY, Sampler, StepSelection, llc};
use stagewise_pipeline::train::{TrainOptions, train};
use stagewise_pipeline::{Quiet, RunDir};

#[test]
fn sampling_that_does_not_fit_the_device_is_refused_before_anything_is_written() {
    let dir = std::env::temp_dir().join(format!("stagewise-devmem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = RunDir::local(&dir);
    let sets = [
        "num_steps=20",
        "checkpointer_config.checkpoint_steps.linear_space=3",
    ];
    train(
        &TrainOptions {
            out: Some(run.clone()),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            ..TrainOptions::default()
        },
        &Quiet,
    )
    .unwrap();
    let steps = run.checkpoint_steps().unwrap();
    let sampler = Sampler::from_text(
        "tight",
        SAMPLER_TINY,
        "test sampler",
        &[
            "num_draws=2".into(),
            "num_chains=2".into(),
            "grad_batch_size=32".into(),
            "eval_dataset_size=64".into(),
        ],
    )
    .unwrap();
    let card = |bytes: usize| Backend::Device(Arc::new(HostDevice::with_memory_limit(bytes)));
    let per_launch = PerLaunch {
        checkpoints: 2,
        chains: None,
    };
    let opts = LlcOptions {
        sampler: sampler.clone(),
        select: StepSelection {
            steps: steps[steps.len() - 2..].to_vec(),
            ..StepSelection::default()
        },
        device: card(1 << 20),
        per_launch: per_launch.clone(),
    };
    let err = format!(
        "{:#}",
        llc(&run, &opts, &Quiet).expect_err("1 MiB is too small")
    );
    assert!(
        err.contains("sampling 2 checkpoints x 2 chains per launch (grad_batch_size = 32, num_draws = 2) needs")
            && err.contains("of device memory, and the device has 1 MiB free of 1 MiB")
            && err.contains("lower --checkpoints-per-launch (now 2) or --chains-per-launch (now 2)"),
        "{err}"
    );
    assert!(
        !dir.join("llc").exists(),
        "the refused sweep wrote into llc/"
    );

    let cal = CalibrateOptions {
        sampler: sampler.clone(),
        eps: vec![1e-4],
        device: card(1 << 20),
        per_launch,
        ..CalibrateOptions::default()
    };
    let err = format!(
        "{:#}",
        calibrate(&run, &cal, &Quiet).expect_err("1 MiB is too small")
    );
    assert!(
        err.contains("sampling 1 checkpoint x 2 chains per launch"),
        "{err}"
    );
    assert!(
        !dir.join("llc").exists(),
        "the refused calibration wrote into llc/"
    );

    // A card that holds it: the sweep runs.
    let opts = LlcOptions {
        device: card(1 << 30),
        ..opts
    };
    let done = llc(&run, &opts, &Quiet).unwrap();
    assert_eq!(done.estimates.len(), 2);

    // Training on a card too small: refused before the run folder is made.
    let small = dir.join("small");
    let err = train(
        &TrainOptions {
            out: Some(RunDir::local(&small)),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            device: card(64 << 10),
            ..TrainOptions::default()
        },
        &Quiet,
    )
    .expect_err("64 KiB is too small");
    let err = format!("{err:#}");
    assert!(
        err.contains("training (batch_size = ")
            && err.contains("of device memory, and the device has 64 KiB free of 64 KiB")
            && err.ends_with("lower batch_size or eval_batch_size"),
        "{err}"
    );
    assert!(!small.join("config.yaml").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
