//! Config loading: the shipped sweep files, plain YAML, overrides and error messages.

use std::path::PathBuf;

use stagewise_io::config::{load_train_config, resolve};
use stagewise_train::TrainConfig;
use stagewise_train::config::NumTasks;

fn configs() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs"))
}

fn yaml(s: &str) -> serde_json::Value {
    serde_saphyr::from_str(s).unwrap()
}

#[test]
fn shipped_sweeps_resolve_to_the_reference_runs() {
    for (file, k, seeds) in [("l2h4-paper-k8.yaml", 8, 5), ("l2h4-head-k16.yaml", 16, 11)] {
        let path = configs().join(file);
        let err = load_train_config(&path, &[], None).unwrap_err().to_string();
        assert!(
            err.contains("--sweep-index") && err.contains(&format!("{seeds} runs")),
            "{err}"
        );
        let l = load_train_config(&path, &[], Some(3)).unwrap();
        assert_eq!(l.grid_size, seeds);
        let mut want = TrainConfig::l2h4(k, 3);
        assert_eq!(l.config, want, "{file}");
        let l = load_train_config(&path, &["task_config.model_seed=7".into()], None).unwrap();
        want.task_config.model_seed = Some(7);
        assert_eq!(l.config, want);
    }
    let quick = load_train_config(&configs().join("quick.yaml"), &[], None)
        .unwrap()
        .config;
    assert_eq!(quick.task_config.num_tasks, NumTasks::Infinite);
}

#[test]
fn plain_yaml_with_overrides_and_defaults() {
    let doc = yaml("task_config:\n  num_tasks: 64\n  embed_size: 32\nnum_steps: 1_000\n");
    let c = resolve(
        doc,
        "t.yaml",
        &[
            "optimizer_config.lr=0.01".into(),
            "task_config.layer_norm=false".into(),
        ],
        None,
    )
    .unwrap()
    .config;
    assert_eq!(c.task_config.num_tasks, NumTasks::Finite(64));
    assert_eq!(c.task_config.embed_size, 32);
    assert_eq!(c.task_config.mlp_size, 128, "class default");
    assert_eq!(c.num_steps, 1000);
    assert_eq!(c.optimizer_config.lr, 0.01);
    assert!(!c.task_config.layer_norm);
}

#[test]
fn errors_name_the_file_and_field() {
    let cases = [
        (
            "task_config:\n  num_tasks: inf\n  num_headz: 4\n",
            "task_config",
            "num_headz",
        ),
        (
            "task_config:\n  num_tasks: inf\n  num_heads: 3\n  embed_size: 64\n",
            "task_config.num_heads",
            "divide",
        ),
        (
            "task_config:\n  num_tasks: lots\n",
            "task_config.num_tasks",
            "inf",
        ),
        (
            "task_config:\n  num_tasks: inf\nbatch_size: -3\n",
            "batch_size",
            "",
        ),
        (
            "task_config:\n  num_tasks: inf\noptimizer_config:\n  lr: 0\n",
            "optimizer_config.lr",
            "positive",
        ),
        ("num_steps: 10\n", "task_config", "missing"),
        // The reference's OneCycleLR with div_factor = num_steps / 2 - 1 = 0.
        (
            "task_config:\n  num_tasks: inf\nnum_steps: 2\nscheduler_config:\n  scheduler_type: OneCycleLR\n",
            "scheduler_config.div_factor",
            "num_steps must then be above 2",
        ),
    ];
    for (text, field, word) in cases {
        let e = resolve(yaml(text), "bad.yaml", &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bad.yaml"), "{e}");
        assert!(e.contains(field) && e.contains(word), "{text:?} -> {e}");
    }
    let e = resolve(
        yaml("parameters:\n  num_steps:\n    valu: 3\n"),
        "s.yaml",
        &[],
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("num_steps") && e.contains("value"), "{e}");
    let e = resolve(
        yaml("task_config:\n  num_tasks: inf\n"),
        "x.yaml",
        &["nonsense".into()],
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("key=value"), "{e}");
    let missing = load_train_config(&configs().join("does-not-exist.yaml"), &[], None)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("does-not-exist.yaml"), "{missing}");
}

#[test]
fn resolved_yaml_round_trips() {
    for k in [8, 16] {
        let mut c = TrainConfig::l2h4(k, 2);
        c.scheduler_config = if k == 8 { None } else { c.scheduler_config };
        c.task_config.num_tasks = if k == 8 {
            NumTasks::Finite(1 << 20)
        } else {
            NumTasks::Infinite
        };
        let text = stagewise_io::config::to_yaml(&c);
        let back =
            stagewise_io::config::parse_plain(&text, std::path::Path::new("config.yaml")).unwrap();
        assert_eq!(back, c, "{text}");
    }
}
