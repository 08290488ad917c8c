//! Against a real S3-compatible server (SeaweedFS with credentials enforced, started by
//! `.ci/s3.sh`): object round trips, conditional creates, listing past 1,000 keys, a whole
//! training run with its LLC sweep written to and resumed from the bucket, and clear errors
//! for a wrong secret and a missing bucket. Skipped, with the reason printed, where no server
//! is configured.

use stagewise_io::storage::Storage;
use stagewise_pipeline::llc::{LlcOptions, SAMPLER_TINY, Sampler};
use stagewise_pipeline::train::{TrainOptions, train};
use stagewise_pipeline::{Quiet, RunDir};
use stagewise_store::{ObjectStorage, Settings};

/// The test server's settings, or `None` (with a note) when there is none.
fn server() -> Option<(Settings, String)> {
    let Ok(endpoint) = std::env::var("STAGEWISE_TEST_S3_ENDPOINT") else {
        eprintln!(
            "SKIPPED: no S3 test server (run `eval \"$(.ci/s3.sh)\"` first, as .ci/run does)"
        );
        return None;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let bucket = var("STAGEWISE_TEST_S3_BUCKET");
    let settings = Settings::from_pairs(&[
        ("AWS_ENDPOINT_URL", &endpoint),
        ("AWS_ACCESS_KEY_ID", &var("STAGEWISE_TEST_S3_KEY")),
        ("AWS_SECRET_ACCESS_KEY", &var("STAGEWISE_TEST_S3_SECRET")),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ]);
    Some((settings, bucket))
}

fn unique(name: &str) -> String {
    format!(
        "test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn objects_round_trip_and_listing_passes_1000_keys() {
    let Some((settings, bucket)) = server() else {
        return;
    };
    let s = ObjectStorage::s3(&bucket, &settings).unwrap();
    let root = unique("objects");
    let k = |n: &str| format!("{root}/{n}");
    assert_eq!(s.get(&k("absent")).unwrap(), None);
    s.put(&k("a.txt"), b"one").unwrap();
    assert_eq!(s.get(&k("a.txt")).unwrap().as_deref(), Some(&b"one"[..]));
    s.put(&k("a.txt"), b"two").unwrap();
    assert_eq!(s.get(&k("a.txt")).unwrap().as_deref(), Some(&b"two"[..]));
    // A conditional create happens once.
    assert!(s.put_new(&k(".lock"), b"me").unwrap());
    assert!(!s.put_new(&k(".lock"), b"other").unwrap());
    assert_eq!(s.get(&k(".lock")).unwrap().as_deref(), Some(&b"me"[..]));
    s.append(&k("log.csv"), b"step,x\n").unwrap();
    s.append(&k("log.csv"), b"1,2\n").unwrap();
    assert_eq!(
        s.get(&k("log.csv")).unwrap().as_deref(),
        Some(&b"step,x\n1,2\n"[..])
    );
    // More keys than one listing page (1,000) holds.
    let many = format!("{root}/ckpt");
    std::thread::scope(|scope| {
        for t in 0..8 {
            let (s, many) = (&s, &many);
            scope.spawn(move || {
                for i in (t..1100).step_by(8) {
                    s.put(&format!("{many}/{i}.safetensors"), b"x").unwrap();
                }
            });
        }
    });
    let listed = s.list(&format!("{many}/")).unwrap();
    assert_eq!(listed.len(), 1100);
    assert!(s.list(&format!("{root}/")).unwrap().len() == 1103);
    s.delete(&k("a.txt")).unwrap();
    s.delete(&k("a.txt")).unwrap();
    assert!(!s.exists(&k("a.txt")));
    assert_eq!(s.describe("x/y"), format!("s3://{bucket}/x/y"));
}

#[test]
fn a_run_trains_samples_and_resumes_in_the_bucket() {
    let Some((settings, bucket)) = server() else {
        return;
    };
    let prefix = unique("run");
    let run = stagewise_store::run_dir(&format!("s3://{bucket}/{prefix}"), &settings).unwrap();
    let sets: Vec<String> = [
        "num_steps=120",
        "batch_size=16",
        "eval_batch_size=32",
        "task_config.embed_size=16",
        "task_config.mlp_size=16",
        "task_config.num_heads=2",
        "checkpointer_config.checkpoint_steps.log_space=6",
        "checkpointer_config.checkpoint_steps.linear_space=3",
        "logging_config.logging_steps.log_space=6",
        "logging_config.logging_steps.linear_space=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let opts = TrainOptions {
        out: Some(run.clone()),
        sets: sets.clone(),
        ..TrainOptions::default()
    };
    let done = train(&opts, &Quiet).unwrap();
    let steps = run.checkpoint_steps().unwrap();
    assert_eq!(steps.len(), done.checkpoints);
    assert!(run.is_complete());
    // The same run in a local folder: the same checkpoints, byte for byte.
    let local_dir = std::env::temp_dir().join(unique("local"));
    let local = RunDir::local(&local_dir);
    train(
        &TrainOptions {
            out: Some(local.clone()),
            sets,
            ..TrainOptions::default()
        },
        &Quiet,
    )
    .unwrap();
    assert_eq!(local.checkpoint_steps().unwrap(), steps);
    for f in ["config.yaml", "metrics.csv", "checkpoints/0.safetensors"] {
        assert_eq!(run.file(f).unwrap(), local.file(f).unwrap(), "{f}");
    }
    // An LLC sweep reads the checkpoints from the bucket and writes its table there; a second
    // call finds every checkpoint done.
    let sampler = Sampler::from_text(
        "tiny",
        SAMPLER_TINY,
        "test",
        &[
            "num_draws=5".into(),
            "grad_batch_size=16".into(),
            "eval_dataset_size=64".into(),
        ],
    )
    .unwrap();
    let llc_opts = LlcOptions {
        sampler,
        ..LlcOptions::default()
    };
    let first = stagewise_pipeline::llc::llc(&run, &llc_opts, &Quiet).unwrap();
    assert_eq!(first.estimates.len(), steps.len());
    let again = stagewise_pipeline::llc::llc(&run, &llc_opts, &Quiet).unwrap();
    assert_eq!((again.done_before, again.estimates.len()), (steps.len(), 0));
    // No lock is left behind.
    assert!(!run.root().exists(".lock") && !run.llc("tiny").folder.exists(".lock"));
    std::fs::remove_dir_all(&local_dir).unwrap();
}

#[test]
fn a_wrong_secret_and_a_missing_bucket_are_clear_errors() {
    let Some((settings, bucket)) = server() else {
        return;
    };
    let endpoint = std::env::var("STAGEWISE_TEST_S3_ENDPOINT").unwrap();
    let wrong = Settings::from_pairs(&[
        ("AWS_ENDPOINT_URL", &endpoint),
        ("AWS_ACCESS_KEY_ID", "stagewise-test"),
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123"),
    ]);
    let e = format!(
        "{:#}",
        stagewise_store::run_dir(&format!("s3://{bucket}/x"), &wrong).unwrap_err()
    );
    assert!(e.contains("refused the credentials"), "{e}");
    assert!(
        !e.contains("not-the-secret-0123"),
        "the secret was printed: {e}"
    );
    let e = format!(
        "{:#}",
        stagewise_store::run_dir("s3://no-such-bucket-stagewise/x", &settings).unwrap_err()
    );
    assert!(e.contains("bucket does not exist"), "{e}");
}
