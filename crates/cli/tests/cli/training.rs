//! `stagewise train`: a killed run resumes to the same weights and tables, bad input fails cleanly,
//! Python reads the checkpoints, the built-in default writes every artifact.

use crate::common::*;

#[test]
fn killed_run_resumes_to_the_same_weights_and_tables() {
    let dir = scratch("resume");
    let cfg = write_config(&dir);
    let (full, killed) = (dir.join("full"), dir.join("killed"));
    let out = stagewise(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Start the same run and SIGKILL it once a few checkpoints exist.
    let mut child = Command::new(BIN)
        .args([
            "train",
            cfg.to_str().unwrap(),
            "--out",
            killed.to_str().unwrap(),
        ])
        .env("STAGEWISE_THREADS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let final_steps = list_steps(&full.join("checkpoints"));
    let last = *final_steps.last().unwrap();
    loop {
        let n = list_steps(&killed.join("checkpoints")).len();
        if n >= 45 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = list_steps(&killed.join("checkpoints"));
    assert!(
        !at_kill.contains(&last),
        "the run finished before it could be killed; make it longer"
    );
    assert!(at_kill.len() >= 45);

    // Without --resume the folder is protected.
    let out = stagewise(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        killed.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    // A truncated newest checkpoint stops the resume with a message naming it; nothing changes.
    let newest = killed
        .join("checkpoints")
        .join(format!("{}.safetensors", at_kill.last().unwrap()));
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let metrics_before = std::fs::read(killed.join("metrics.csv")).unwrap();
    let out = stagewise(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        killed.to_str().unwrap(),
        "--resume",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(newest.to_str().unwrap()) && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(killed.join("metrics.csv")).unwrap(),
        metrics_before
    );
    assert_eq!(list_steps(&killed.join("checkpoints")), at_kill);

    // Moving it away resumes from the checkpoint before it (with the run's own config.yaml).
    std::fs::rename(&newest, dir.join("damaged.safetensors")).unwrap();
    let out = stagewise(&["train", "--out", killed.to_str().unwrap(), "--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "resuming {} after step {}",
            killed.display(),
            at_kill[at_kill.len() - 2]
        )),
        "{err}"
    );

    let model = model_of(&full);
    assert_eq!(list_steps(&killed.join("checkpoints")), final_steps);
    assert_eq!(
        list_steps(&killed.join("optimizer")),
        final_steps[final_steps.len() - 2..]
    );
    for s in &final_steps {
        let f = format!("{s}.safetensors");
        let (a, ma) = load_model(&full.join("checkpoints").join(&f), &model).unwrap();
        let (b, mb) = load_model(&killed.join("checkpoints").join(&f), &model).unwrap();
        assert_eq!(ma, mb);
        assert!(a == b, "weights at checkpoint {s} differ after resume");
    }
    for table in ["metrics.csv", "train.csv"] {
        let a = std::fs::read_to_string(full.join(table)).unwrap();
        let b = std::fs::read_to_string(killed.join(table)).unwrap();
        assert!(a.lines().count() > 10);
        assert_eq!(a, b, "{table} differs after resume");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_fails_with_a_named_field_and_writes_nothing() {
    let dir = scratch("bad");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "task_config:\n  num_tasks: inf\n  embed_size: 64\n  num_heads: 5\n",
    )
    .unwrap();
    let run = dir.join("run");
    let out = stagewise(&[
        "train",
        bad.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("bad.yaml") && err.contains("task_config.num_heads"),
        "{err}"
    );
    assert!(
        !run.exists(),
        "nothing may be written for an invalid config"
    );

    std::fs::write(&bad, "task_config:\n  num_tasks: inf\n  colour: blue\n").unwrap();
    let err =
        String::from_utf8_lossy(&stagewise(&["train", bad.to_str().unwrap()]).stderr).to_string();
    assert!(err.contains("colour"), "{err}");

    // --resume with a changed config names the differing field.
    let cfg = write_config(&dir);
    let short = ["--set", "num_steps=20"];
    let mut args = vec![
        "train",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend(short);
    assert!(stagewise(&args).status.success());
    let out = stagewise(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--resume",
        "--set",
        "num_steps=30",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("num_steps"), "{err}");

    // Sizes the machine cannot hold are refused before anything is written (they used to panic
    // with "capacity overflow" or abort on allocation).
    if std::path::Path::new("/proc/meminfo").exists() {
        let big = dir.join("big");
        for set in [
            "task_config.embed_size=1000000000",
            "batch_size=1000000000",
            "checkpointer_config.checkpoint_steps.linear_space=1000000000000",
        ] {
            let out = stagewise(&[
                "train",
                cfg.to_str().unwrap(),
                "--out",
                big.to_str().unwrap(),
                "--set",
                set,
            ]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.code() == Some(1) && err.contains("training needs about"),
                "{set}: {err}"
            );
            assert!(!big.exists(), "{set}: nothing written");
        }
    }
    // A thread count the machine cannot hold is refused at once (it used to hang or panic).
    let out = Command::new(BIN)
        .args(["--threads", "100000", "train", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("--threads 100000"),
        "{err}"
    );
    // A config named `...yaml` (stem `..`) would put its run in `runs/..`, above the output
    // root: refused, naming the file, and nothing written (run from the scratch folder).
    let dots = dir.join("...yaml");
    std::fs::copy(&cfg, &dots).unwrap();
    let before = std::fs::read_dir(&dir).unwrap().count();
    let out = Command::new(BIN)
        .args(["train", "...yaml", "--set", "num_steps=20"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("...yaml: the run name \"..\" cannot name a folder"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        before,
        "nothing written"
    );
    // The same for a sampler config's name (it names RUN/llc/<name>).
    let out = stagewise(&[
        "llc",
        run.to_str().unwrap(),
        "--config",
        dots.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the sampler name \"..\""),
        "{err}"
    );
    assert!(!run.join("llc").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn python_reads_checkpoints_with_reference_names_shapes_and_values() {
    if std::env::var_os("STAGEWISE_SKIP_PYTHON").is_some() {
        eprintln!("STAGEWISE_SKIP_PYTHON set: skipping the Python read-back");
        return;
    }
    let dir = scratch("python");
    let (_, run) = train_tiny(&dir, 50);
    let model = model_of(&run);
    let step = *list_steps(&run.join("checkpoints")).last().unwrap();
    let ckpt = run.join("checkpoints").join(format!("{step}.safetensors"));
    let (params, _) = load_model(&ckpt, &model).unwrap();

    // Predictions of the checkpoint on a small batch, for the torch comparison.
    let (nseq, k, d) = (3usize, 4usize, 3usize);
    let xs: Vec<f32> = (0..nseq * k * d)
        .map(|i| ((i as f32) * 0.37).sin())
        .collect();
    let ys: Vec<f32> = (0..nseq * k).map(|i| ((i as f32) * 0.71).cos()).collect();
    let toks = model.encode(&xs, &ys, nseq, k);
    let mut ws = stagewise_models::Workspace::default();
    model
        .forward(
            &params,
            &toks,
            nseq,
            2 * k,
            &mut ws,
            stagewise_models::Readout::Predictions,
        )
        .unwrap();

    let mut names: Vec<String> = model.layout.params.iter().map(|p| p.name.clone()).collect();
    let mut shapes = serde_json::Map::new();
    let mut sums = serde_json::Map::new();
    let mut first = serde_json::Map::new();
    for p in &model.layout.params {
        let v = &params[p.range()];
        shapes.insert(p.name.clone(), serde_json::json!(p.shape));
        sums.insert(
            p.name.clone(),
            serde_json::json!(v.iter().map(|x| *x as f64).sum::<f64>()),
        );
        first.insert(
            p.name.clone(),
            serde_json::json!(
                v[..v.len().min(4)]
                    .iter()
                    .map(|x| *x as f64)
                    .collect::<Vec<_>>()
            ),
        );
    }
    for (n, s, _) in model.buffers() {
        shapes.insert(n.clone(), serde_json::json!(s));
        names.push(n);
    }
    let tokens: Vec<Vec<Vec<f32>>> = (0..nseq)
        .map(|b| {
            (0..2 * k)
                .map(|t| toks[(b * 2 * k + t) * (d + 1)..(b * 2 * k + t + 1) * (d + 1)].to_vec())
                .collect()
        })
        .collect();
    let ys_pred: Vec<Vec<f32>> = (0..nseq)
        .map(|b| ws.pred[b * k..(b + 1) * k].to_vec())
        .collect();
    let expected = serde_json::json!({
        "names": names, "shapes": shapes, "sums": sums, "first": first, "step": step,
        "tokens": tokens, "ys_pred": ys_pred, "task_size": d, "max_examples": k,
        "embed_size": model.config.embed_size, "mlp_size": model.config.mlp_size,
        "num_heads": model.config.num_heads, "num_layers": model.config.num_layers,
    });
    let exp_path = dir.join("expected.json");
    std::fs::write(&exp_path, serde_json::to_string(&expected).unwrap()).unwrap();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(&python)
        .current_dir(&root)
        .args([
            "tests/python/check_checkpoint.py",
            ckpt.to_str().unwrap(),
            exp_path.to_str().unwrap(),
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python}: {e} (set PYTHON, or STAGEWISE_SKIP_PYTHON=1)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{text}\n(the read-back needs `pip install safetensors numpy`; .ci/run installs them)"
    );
    assert!(text.contains("OK:"), "{text}");
    eprintln!("{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn built_in_default_trains_and_writes_every_artifact() {
    let dir = scratch("default");
    let run = dir.join("run");
    let out = stagewise(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--set",
        "num_steps=201",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["config.yaml", "schedule.json", "metrics.csv", "train.csv"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let events: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    assert_eq!(events.len(), 1);
    let records = stagewise_io::tensorboard::read_records(&events[0].path()).unwrap();
    let (header, rows) = stagewise_io::table::read_csv(&run.join("metrics.csv")).unwrap();
    let (_, train_rows) = stagewise_io::table::read_csv(&run.join("train.csv")).unwrap();
    // One version record, one event per metrics row and per train row.
    assert_eq!(records.len(), 1 + rows.len() + train_rows.len());
    assert_eq!(
        header.len(),
        1 + 2 + 7 * 9 + 1,
        "step, 2 + 7 (K+1) metrics, weight/norm"
    );
    assert_eq!(
        train_rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        vec![100.0, 200.0]
    );
    for table in ["metrics", "train"] {
        let csv = stagewise_io::table::read_csv(&run.join(format!("{table}.csv"))).unwrap();
        let pq = stagewise_tables::read_parquet(&run.join(format!("{table}.parquet"))).unwrap();
        assert_eq!(csv, pq, "{table}.parquet differs from {table}.csv");
    }
    let schedule: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("schedule.json")).unwrap()).unwrap();
    let ckpts: Vec<u64> = schedule["checkpoint_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(list_steps(&run.join("checkpoints")), ckpts);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The reference's parity sweep file, unchanged but shortened with `--set`: 18 run folders
/// named by the reference's model ids, each with its checkpoints; `--resume` finds them done.
#[test]
fn the_reference_parity_sweep_trains_all_its_runs() {
    let dir = scratch("parity-sweep");
    let sweep = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sweeps/parity/parity.yaml"
    );
    let args = [
        "train",
        sweep,
        "--set",
        "num_steps=12",
        "--set",
        "num_checkpoints=4",
        "--out",
        dir.to_str().unwrap(),
    ];
    let out = stagewise(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let mut runs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    assert_eq!(runs.len(), 18, "{runs:?}");
    assert_eq!(runs[0], "multitask-parity-16-16-3-50-0.5-12-0.003-0");
    for r in &runs {
        assert_eq!(
            list_steps(&dir.join(r).join("checkpoints")),
            [0, 4, 8, 12],
            "{r}"
        );
    }
    let out = stagewise(&[&args[..], &["--resume"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("training is complete").count(), 18, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A parity sweep through the sweep machinery (`sweep run`: one process per task, 2 at a time)
/// gives the same files as `train` of the same file (all runs in one computation), and
/// `sweep status` reads every task back as done.
#[test]
fn a_parity_sweep_runs_through_the_sweep_machinery() {
    let dir = scratch("parity-pool");
    let file = dir.join("p.yaml");
    std::fs::write(
        &file,
        "name: p\nmethod: grid\nparameters:\n  num_tasks:\n    values: [2, 3]\n  num_features:\n    value: 6\n  \
         num_task_bits:\n    value: 2\n  hidden_dim:\n    value: 8\n  alpha:\n    values: [0.5, 2.0]\n  \
         num_steps:\n    value: 30\n  batch_size:\n    value: 64\n  eval_batch_size:\n    value: 16\n  \
         num_checkpoints:\n    value: 4\n",
    )
    .unwrap();
    let (f, pool, one) = (
        file.to_str().unwrap(),
        dir.join("pool"),
        dir.join("together"),
    );
    let run = |args: &[&str]| {
        let out = stagewise(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        String::from_utf8_lossy(&out.stdout).into_owned() + &err
    };
    run(&[
        "sweep",
        "run",
        f,
        "--root",
        pool.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    run(&["train", f, "--out", one.to_str().unwrap()]);
    let status = run(&["sweep", "status", f, "--root", pool.to_str().unwrap()]);
    assert!(status.contains("p: 4 done, 0 partial"), "{status}");
    for name in [
        "multitask-parity-2-6-2-8-0.5-30-0.003-0",
        "multitask-parity-3-6-2-8-2.0-30-0.003-0",
    ] {
        for f in ["metrics.csv", "checkpoints/30.safetensors"] {
            assert_eq!(
                std::fs::read(pool.join(name).join(f)).unwrap(),
                std::fs::read(one.join(name).join(f)).unwrap(),
                "{name}/{f}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
