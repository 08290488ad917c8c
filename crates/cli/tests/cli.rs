//! End-to-end tests of the `stagewise` binary: a run killed with SIGKILL and resumed ends with
//! the same weights and tables as an uninterrupted run; bad input fails cleanly; Python reads
//! the checkpoints.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stagewise_io::checkpoint::{list_steps, load_model};
use stagewise_io::config::parse_plain;
use stagewise_models::RegressionTransformer;

const BIN: &str = env!("CARGO_BIN_EXE_stagewise");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stagewise-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small run: 2-layer model of width 32, K = 4, 3000 steps, checkpoints on a log+linear grid.
fn write_config(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.yaml");
    std::fs::write(
        &p,
        "task_config:\n  task_size: 3\n  max_examples: 4\n  num_tasks: inf\n  noise_variance: 0.125\n  \
         embed_size: 32\n  mlp_size: 32\n  num_heads: 2\n  num_layers: 2\n  model_seed: 5\n  \
         pretrain_seed: null\n  true_seed: null\n  sampling_seed: null\n  include_output: true\n\
         num_steps: 3000\nbatch_size: 32\neval_batch_size: 64\noptimizer_config:\n  lr: 0.003\n\
         checkpointer_config:\n  checkpoint_steps:\n    log_space: 40\n    linear_space: 31\n\
         logging_config:\n  logging_steps:\n    log_space: 30\n    linear_space: 16\n",
    )
    .unwrap();
    p
}

fn stagewise(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("STAGEWISE_THREADS", "2")
        .output()
        .unwrap()
}

fn model_of(run: &Path) -> RegressionTransformer {
    let text = std::fs::read_to_string(run.join("config.yaml")).unwrap();
    let cfg = parse_plain(&text, &run.join("config.yaml")).unwrap();
    RegressionTransformer::new(cfg.model_config()).unwrap()
}

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
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn python_reads_checkpoints_with_reference_names_shapes_and_values() {
    if std::env::var_os("STAGEWISE_SKIP_PYTHON").is_some() {
        eprintln!("STAGEWISE_SKIP_PYTHON set: skipping the Python read-back");
        return;
    }
    let dir = scratch("python");
    let cfg = write_config(&dir);
    let run = dir.join("run");
    let out = stagewise(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--set",
        "num_steps=50",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

#[test]
fn llc_over_checkpoints_resumes_and_rejects_bad_input() {
    let dir = scratch("llc");
    let cfg = write_config(&dir);
    let run = dir.join("run");
    let out = stagewise(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--set",
        "num_steps=40",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sampler = dir.join("tiny-sampler.yaml");
    std::fs::write(
        &sampler,
        "num_chains: 2\nnum_draws: 10\nnum_burnin_steps: 2\ngrad_batch_size: 8\neval_dataset_size: 64\n\
         gradient_scale: 0.01\nlocalization_scale: 0.001\nnoise_scale: 0.0003\ninit_seed: 3\n",
    )
    .unwrap();
    let steps = list_steps(&run.join("checkpoints"));
    let (r, s) = (run.to_str().unwrap(), sampler.to_str().unwrap());
    let first = format!("{},{}", steps[0], steps[3]);
    let out = stagewise(&["llc", r, "--config", s, "--steps", &first]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = stagewise(&["llc", r, "--config", s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("2 already done"),
        "{err}"
    );
    let table = run.join("llc/tiny-sampler/llc.csv");
    let (header, rows) = stagewise_io::table::read_csv(&table).unwrap();
    assert_eq!(header[..3], ["step", "llc/mean", "llc/std"]);
    assert_eq!(header.len(), 14 + 3 * 2);
    let mut got: Vec<u64> = rows.iter().map(|r| r[0] as u64).collect();
    got.sort_unstable();
    assert_eq!(got, steps, "one row per checkpoint");
    assert!(rows.iter().all(|r| r[1].is_finite() && r[3] > 0.0));
    // A fresh sweep over all checkpoints gives the same rows as the resumed one.
    let fresh_run = dir.join("fresh");
    std::fs::create_dir_all(&fresh_run).unwrap();
    for f in ["config.yaml", "checkpoints"] {
        let _ = Command::new("cp")
            .args([
                "-r",
                run.join(f).to_str().unwrap(),
                fresh_run.to_str().unwrap(),
            ])
            .status();
    }
    assert!(
        stagewise(&["llc", fresh_run.to_str().unwrap(), "--config", s])
            .status
            .success()
    );
    let (_, fresh) =
        stagewise_io::table::read_csv(&fresh_run.join("llc/tiny-sampler/llc.csv")).unwrap();
    let key = |v: &Vec<Vec<f64>>| {
        let mut v = v.clone();
        v.sort_by(|a, b| a[0].total_cmp(&b[0]));
        v
    };
    assert_eq!(key(&rows), key(&fresh));
    assert!(run.join("llc/tiny-sampler/llc.parquet").is_file());
    assert!(
        run.join(format!("llc/tiny-sampler/traces/{}.csv", steps[0]))
            .is_file()
    );

    // Per-token LLCs with "new-minibatch" evaluation: per-token columns, and long-format traces
    // whose last running LLC of each chain is that chain's LLC in the table.
    let tokens = dir.join("tokens.yaml");
    std::fs::write(
        &tokens,
        "num_chains: 3\nnum_draws: 7\ngrad_batch_size: 8\neval_dataset_size: 64\nper_token: true\n\
         eval_method: new-minibatch\nepsilon: 0.0003\ngamma: 6\nnbeta: 60\n",
    )
    .unwrap();
    let last = steps.last().unwrap().to_string();
    let out = stagewise(&[
        "llc",
        r,
        "--config",
        tokens.to_str().unwrap(),
        "--steps",
        &last,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (header, rows) = stagewise_io::table::read_csv(&run.join("llc/tokens/llc.csv")).unwrap();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let row = &rows[0];
    let per_token: Vec<f64> = (0..4).map(|t| row[col(&format!("llc/mean/{t}"))]).collect();
    let mean = per_token.iter().sum::<f64>() / 4.0;
    assert!((row[col("llc/mean/mean")] - mean).abs() < 1e-9 * mean.abs().max(1.0));
    let inits: Vec<f64> = (0..4)
        .map(|t| row[col(&format!("loss/init/{t}"))])
        .collect();
    assert!((inits.iter().sum::<f64>() / 4.0 - row[col("loss/init")]).abs() < 1e-6);
    // The LLC is linear in the losses: the mean of the per-token LLCs is the LLC.
    assert!((mean - row[col("llc/mean")]).abs() < 1e-6 * mean.abs().max(1.0));
    assert!(row[col("mala_accept")] > 0.0 && row[col("mala_accept")] <= 1.0);
    let (th, tr) =
        stagewise_io::table::read_csv(&run.join(format!("llc/tokens/traces/{last}.csv"))).unwrap();
    assert_eq!(
        th[..6],
        ["chain", "draw", "loss", "llc", "distance", "mala_accept"]
    );
    assert_eq!((th.len(), tr.len()), (6 + 4, 3 * 7));
    for c in 0..3 {
        let end = &tr[c * 7 + 6];
        assert_eq!((end[0], end[1]), (c as f64, 6.0));
        let want = row[col(&format!("llc/chain/{c}"))];
        assert!(
            (end[3] - want).abs() < 1e-9 * want.abs().max(1.0),
            "{} vs {want}",
            end[3]
        );
    }

    // Calibration: a grid with one step size that blows up; a rerun skips what is done.
    let cal = |extra: &[&str]| {
        let mut args = vec![
            "llc",
            "calibrate",
            r,
            "--config",
            s,
            "--eps",
            "0.0003,5",
            "--nbeta",
            "60",
            "--gamma",
            "6",
        ];
        args.extend_from_slice(extra);
        stagewise(&args)
    };
    let out = cal(&["--steps", &last]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("chains blew up"), "{text}");
    let summary = run.join("llc/calibrate-tiny-sampler/summary.csv");
    let (sh, srows) = stagewise_io::table::read_csv(&summary).unwrap();
    assert_eq!(sh[..4], ["step", "epsilon", "nbeta", "gamma"]);
    assert_eq!(srows.len(), 2);
    let blown = srows.iter().find(|r| r[1] == 5.0).unwrap();
    assert!(blown[10] > 0.0 && blown[15] == 0.0, "{blown:?}");
    let small = srows.iter().find(|r| r[1] == 0.0003).unwrap();
    assert!(small[10] == 0.0 && small[4].is_finite(), "{small:?}");
    assert!(
        run.join(format!(
            "llc/calibrate-tiny-sampler/traces/{last}/eps=0.0003_nbeta=60_gamma=6.csv"
        ))
        .is_file()
    );
    let out = cal(&["--steps", &last]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 already done"));
    assert_eq!(stagewise_io::table::read_csv(&summary).unwrap().1.len(), 2);
    let out = stagewise(&["llc", "calibrate", r, "--config", s, "--gamma=-1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--gamma -1"));

    // A log/linear selection picks the run's checkpoints in that set (all done already).
    let out = stagewise(&[
        "llc",
        r,
        "--config",
        s,
        "--log-space",
        "10",
        "--linear-space",
        "3",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("LLC at 0 checkpoints"),
        "{err}"
    );

    // Bad input: both parametrisations, a changed sampler under the same name, no checkpoints.
    let bad = dir.join("bad-sampler.yaml");
    std::fs::write(
        &bad,
        "epsilon: 0.001\ngamma: 1\nnbeta: 10\nnoise_scale: 0.001\n",
    )
    .unwrap();
    let err =
        String::from_utf8_lossy(&stagewise(&["llc", r, "--config", bad.to_str().unwrap()]).stderr)
            .to_string();
    assert!(
        err.contains("bad-sampler.yaml") && err.contains("both parametrisations"),
        "{err}"
    );
    let out = stagewise(&["llc", r, "--config", s, "--set", "num_draws=11"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("another sampler config")
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(empty.join("checkpoints")).unwrap();
    std::fs::copy(run.join("config.yaml"), empty.join("config.yaml")).unwrap();
    let err = String::from_utf8_lossy(
        &stagewise(&["llc", empty.to_str().unwrap(), "--config", s]).stderr,
    )
    .to_string();
    assert!(err.contains("no checkpoints"), "{err}");
    // Checkpoints of another architecture than the run's config.
    let text = std::fs::read_to_string(fresh_run.join("config.yaml")).unwrap();
    assert!(text.contains("embed_size: 32"));
    std::fs::write(
        fresh_run.join("config.yaml"),
        text.replace("embed_size: 32", "embed_size: 16"),
    )
    .unwrap();
    std::fs::remove_dir_all(fresh_run.join("llc")).unwrap();
    let err = String::from_utf8_lossy(
        &stagewise(&["llc", fresh_run.to_str().unwrap(), "--config", s]).stderr,
    )
    .to_string();
    assert!(
        err.contains("another architecture") && err.contains(".safetensors"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn essential_dynamics_of_a_run() {
    let dir = scratch("ed");
    let cfg = write_config(&dir);
    let run = dir.join("run");
    let out = stagewise(&[
        "train",
        cfg.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--set",
        "num_steps=60",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps = list_steps(&run.join("checkpoints"));
    let r = run.to_str().unwrap();
    for (outputs, smooth) in [("full", "none"), ("ys", "0.5:3")] {
        let out = stagewise(&[
            "ed",
            r,
            "--outputs",
            outputs,
            "--sequences",
            "32",
            "--components",
            "3",
            "--smooth",
            smooth,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ed = run.join("ed").join(outputs);
        let (_, ev) = stagewise_io::table::read_csv(&ed.join("explained_variance.csv")).unwrap();
        assert_eq!(ev.len(), 3);
        assert!(ev.windows(2).all(|w| w[0][1] >= w[1][1]), "{ev:?}");
        assert!(ev.iter().map(|r| r[2]).sum::<f64>() <= 1.0 + 1e-9);
        let (header, scores) = stagewise_io::table::read_csv(&ed.join("scores.csv")).unwrap();
        assert_eq!(header, ["step", "pc1", "pc2", "pc3"]);
        assert_eq!(
            scores.iter().map(|r| r[0] as u64).collect::<Vec<_>>(),
            steps
        );
        // Scores are centred and their variance is the explained variance.
        for j in 0..3 {
            let col: Vec<f64> = scores.iter().map(|r| r[j + 1]).collect();
            let n = col.len() as f64;
            assert!(col.iter().sum::<f64>().abs() < 1e-6 * n * ev[0][1].sqrt());
            let var = col.iter().map(|v| v * v).sum::<f64>() / (n - 1.0);
            assert!(
                (var - ev[j][1]).abs() < 1e-6 * ev[0][1],
                "{var} vs {}",
                ev[j][1]
            );
        }
        assert!(ed.join("components.safetensors").is_file());
        assert!(
            ed.join("evolutes/pc1-pc2.csv").is_file() && ed.join("evolutes/pc2-pc3.csv").is_file()
        );
        let (_, evo) = stagewise_io::table::read_csv(&ed.join("evolutes/pc1-pc3.csv")).unwrap();
        assert_eq!(evo.len(), steps.len() - 2);
        assert_eq!(ed.join("scores_smoothed.csv").is_file(), smooth != "none");
        assert!(ed.join("forms.csv").is_file() && ed.join("vertices.csv").is_file());
    }
    // Structural indicators, with the Hessian at two checkpoints.
    let two = format!("{},{}", steps[0], steps[steps.len() - 1]);
    let out = stagewise(&[
        "indicators",
        r,
        "--steps",
        &two,
        "--hessian",
        "--hessian-sequences",
        "8",
        "--top",
        "2",
        "--lanczos-steps",
        "6",
        "--hutchinson-samples",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (h, ind) = stagewise_io::table::read_csv(&run.join("indicators.csv")).unwrap();
    let col = |n: &str| {
        h.iter()
            .position(|c| c == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    assert_eq!(ind.len(), 2);
    assert!(ind.iter().all(|r| r[col("weight/norm")] > 0.0));
    assert!(
        ind.iter()
            .all(|r| r[col("hessian/evals/0")] >= r[col("hessian/evals/1")])
    );
    assert!(ind.iter().all(|r| r[col("hessian/trace_samples")] >= 2.0));
    assert!(h.iter().any(|c| c == "ln/unembedding.0/weight/collapsed"));
    assert!(h.iter().any(|c| c == "embed/in_postn_span/0"));
    assert!(run.join("indicators.parquet").is_file());
    // The report: every figure as PNG and inline SVG; the page renders in headless Chromium
    // without console messages and the screenshot is not blank.
    let out = stagewise(&["report", r]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(run.join("report/index.html")).unwrap();
    for png in ["loss", "ed_scores", "ed_pc1_pc2", "indicators_norm"] {
        assert!(run.join(format!("report/{png}.png")).is_file(), "{png}");
        assert!(page.contains(&format!("href=\"{png}.png\"")), "{png}");
    }
    assert!(page.matches("<svg").count() >= 6 && !page.contains("<script"));
    assert!(
        page.contains("No LLC sweep yet"),
        "the missing sweep is named"
    );
    check_in_browser(&run.join("report/index.html"));
    let out = stagewise(&["ed", r, "--smooth", "3:1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--smooth"));
    let out = stagewise(&["ed", r, "--steps", &steps[0].to_string()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("at least 3"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Stages from an LLC table: a curve that rises 10 -> 30 around log-step 5 and falls by 5
/// around 9 gives an "A" stage then a "B" stage; the loss change comes from metrics.csv.
#[test]
fn stages_from_an_llc_curve() {
    let dir = scratch("stages");
    let sweep = dir.join("llc/synthetic");
    std::fs::create_dir_all(&sweep).unwrap();
    let steps = [
        0u64, 1, 2, 4, 7, 12, 20, 33, 54, 90, 148, 244, 403, 665, 1098, 1812, 2990, 4934, 8143,
        13439, 22180, 36606, 60412, 99700,
    ];
    let mut llc = String::from("step,llc/mean,llc/std\n");
    let mut metrics = String::from("step,pretrain/mse\n");
    for s in steps {
        let x = (s as f64 + 1.0).ln();
        let y = 10.0 + 20.0 / (1.0 + (-(x - 5.0) * 2.0).exp())
            - 5.0 / (1.0 + (-(x - 9.0) * 3.0).exp())
            + 0.3 * (7.0 * x).sin();
        llc.push_str(&format!("{s},{y},1.0\n"));
        metrics.push_str(&format!("{s},{}\n", 4.0 - 0.2 * x));
    }
    std::fs::write(sweep.join("llc.csv"), llc).unwrap();
    std::fs::write(dir.join("metrics.csv"), metrics).unwrap();
    let out = stagewise(&["stages", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (h, rows) =
        stagewise_io::table::read_csv(&dir.join("stages/synthetic/stages.csv")).unwrap();
    assert_eq!(
        h,
        ["stage", "start", "end", "delta_loss", "delta_llc", "type"]
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let text = std::fs::read_to_string(dir.join("stages/synthetic/stages.csv")).unwrap();
    let kinds: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    assert_eq!(kinds, ["A", "B"]);
    assert_eq!((rows[0][1], rows[1][2]), (0.0, 99700.0));
    assert_eq!(rows[0][2], rows[1][1]);
    // delta_loss = -0.2 (ln(end + 1) - ln(start + 1)).
    let want = -0.2 * ((rows[0][2] + 1.0).ln() - 1f64.ln());
    assert!((rows[0][3] - want).abs() < 1e-9, "{} vs {want}", rows[0][3]);
    assert!(rows[0][4] > 15.0 && rows[1][4] < -3.0);
    let (_, gp) = stagewise_io::table::read_csv(&dir.join("stages/synthetic/gp.csv")).unwrap();
    assert_eq!(gp.len(), steps.len());
    // Two sweeps: the command asks which.
    std::fs::create_dir_all(dir.join("llc/other")).unwrap();
    std::fs::copy(sweep.join("llc.csv"), dir.join("llc/other/llc.csv")).unwrap();
    let out = stagewise(&["stages", dir.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--llc"));
    let out = stagewise(&[
        "stages",
        dir.to_str().unwrap(),
        "--llc",
        "other",
        "--column",
        "nope",
    ]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("\"nope\""));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Renders `page` in headless Chromium (Debian's `chromium`, or `$CHROMIUM`): no console
/// messages, and a screenshot with more than one colour in it. Skipped (with a note) when no
/// Chromium is installed; `.ci/run` installs it.
fn check_in_browser(page: &Path) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    if Command::new(&chromium).arg("--version").output().is_err() {
        eprintln!("note: {chromium} not found; the browser check of the report is skipped");
        return;
    }
    let shot = page.with_file_name("screenshot.png");
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,2400",
            "--enable-logging=stderr",
            "--log-level=0",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels = &buf[..info.buffer_size()];
    let px = info.color_type.samples();
    let first = &pixels[..px];
    let differ = pixels.chunks(px).filter(|p| p != &first).count();
    assert!(
        differ > pixels.len() / px / 20,
        "the screenshot is (nearly) blank: {differ} pixels differ from the first"
    );
}

/// The whole pipeline on a tiny run; a second invocation resumes: training from its last
/// checkpoint (here one step before the end), every LLC checkpoint already done.
#[test]
fn reproduce_runs_the_pipeline_and_resumes() {
    let dir = scratch("reproduce");
    let cfg = write_config(&dir);
    let sampler = dir.join("tiny-sampler.yaml");
    std::fs::write(
        &sampler,
        "num_chains: 2\nnum_draws: 6\ngrad_batch_size: 8\neval_dataset_size: 64\n\
         gradient_scale: 0.01\nlocalization_scale: 0.001\nnoise_scale: 0.0003\n",
    )
    .unwrap();
    let run = dir.join("run");
    let args = [
        "reproduce",
        cfg.to_str().unwrap(),
        "--set",
        "num_steps=60",
        "--sampler",
        sampler.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    let out = stagewise(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "checkpoints",
        "llc/tiny-sampler/llc.csv",
        "ed/full/scores.csv",
        "stages/tiny-sampler/stages.csv",
        "indicators.csv",
        "report/index.html",
        "report/llc.png",
    ] {
        assert!(run.join(f).exists(), "{f}");
    }
    let n = list_steps(&run.join("checkpoints")).len();
    let out = stagewise(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming"), "{err}");
    assert_eq!(list_steps(&run.join("checkpoints")).len(), n);
    assert!(
        err.contains(&"LLC at 0 checkpoints".to_string())
            && err.contains(&format!("({n} already done)")),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--device emulator` runs the CUDA backend's kernels on the host: training and the LLC sweep
/// follow the CPU run; unsupported sampler settings and a missing GPU are clear errors that
/// leave nothing behind.
#[test]
fn device_runs_follow_the_cpu_runs() {
    let dir = scratch("device");
    let cfg = write_config(&dir);
    let c = cfg.to_str().unwrap();
    let short = ["--set", "num_steps=40"];
    let (cpu, emu) = (dir.join("cpu"), dir.join("emu"));
    for (out, device) in [(&cpu, "cpu"), (&emu, "emulator")] {
        let o = stagewise(
            &[
                &[
                    "train",
                    c,
                    "--out",
                    out.to_str().unwrap(),
                    "--device",
                    device,
                ],
                &short[..],
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let model = model_of(&cpu);
    let last = *list_steps(&cpu.join("checkpoints")).last().unwrap();
    assert_eq!(
        list_steps(&emu.join("checkpoints")),
        list_steps(&cpu.join("checkpoints"))
    );
    let file = format!("{last}.safetensors");
    let (wc, _) = load_model(&cpu.join("checkpoints").join(&file), &model).unwrap();
    let (we, _) = load_model(&emu.join("checkpoints").join(&file), &model).unwrap();
    let num: f64 = wc
        .iter()
        .zip(&we)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = wc.iter().map(|a| (*a as f64).powi(2)).sum();
    assert!(
        (num / den).sqrt() < 1e-3,
        "weights after 40 steps differ by {}",
        (num / den).sqrt()
    );
    let (_, mc) = stagewise_io::table::read_csv(&cpu.join("metrics.csv")).unwrap();
    let (_, me) = stagewise_io::table::read_csv(&emu.join("metrics.csv")).unwrap();
    assert_eq!(mc.len(), me.len());
    for (a, b) in mc.iter().zip(&me) {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-3 * x.abs().max(1e-2),
                "metrics {x} vs {y}"
            );
        }
    }

    let sampler = dir.join("s.yaml");
    std::fs::write(
        &sampler,
        "num_chains: 2\nnum_draws: 6\nnum_burnin_steps: 1\ngrad_batch_size: 8\neval_dataset_size: 64\n\
         epsilon: 0.0001\ngamma: 100\nnbeta: 30\n",
    )
    .unwrap();
    let s = sampler.to_str().unwrap();
    let steps = format!("0,{last}");
    for (run, device) in [(&cpu, "cpu"), (&emu, "emulator")] {
        let r = run.to_str().unwrap();
        let o = stagewise(&[
            "llc",
            r,
            "--config",
            s,
            "--steps",
            &steps,
            "--device",
            device,
            "--checkpoints-per-launch",
            "2",
            "--chains-per-launch",
            "1",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (h, lc) = stagewise_io::table::read_csv(&cpu.join("llc/s/llc.csv")).unwrap();
    let (_, le) = stagewise_io::table::read_csv(&emu.join("llc/s/llc.csv")).unwrap();
    assert_eq!(lc.len(), 2);
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    for (a, b) in lc.iter().zip(&le) {
        assert_eq!(a[0], b[0]);
        for name in ["loss/init", "loss/mean", "llc/mean"] {
            let (x, y) = (a[col(name)], b[col(name)]);
            assert!(
                (x - y).abs() <= 2e-3 * x.abs().max(1.0),
                "{name}: cpu {x} vs emulator {y}"
            );
        }
    }

    // eval_method dataset (L_n at every draw, the data set in chunks on the device).
    let full = dir.join("full.yaml");
    std::fs::write(
        &full,
        "num_chains: 2\nnum_draws: 3\ngrad_batch_size: 8\neval_dataset_size: 20\n\
         epsilon: 0.0001\ngamma: 100\nnbeta: 30\neval_method: dataset\n",
    )
    .unwrap();
    let steps = last.to_string();
    for (run, device) in [(&cpu, "cpu"), (&emu, "emulator")] {
        let o = stagewise(&[
            "llc",
            run.to_str().unwrap(),
            "--config",
            full.to_str().unwrap(),
            "--steps",
            &steps,
            "--device",
            device,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (h, lc) = stagewise_io::table::read_csv(&cpu.join("llc/full/llc.csv")).unwrap();
    let (_, le) = stagewise_io::table::read_csv(&emu.join("llc/full/llc.csv")).unwrap();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    assert_eq!((lc.len(), le.len()), (1, 1));
    for name in ["loss/init", "loss/mean", "llc/mean"] {
        let (x, y) = (lc[0][col(name)], le[0][col(name)]);
        assert!(
            (x - y).abs() <= 2e-3 * x.abs().max(1.0),
            "dataset {name}: cpu {x} vs emulator {y}"
        );
    }

    // No GPU here (CI): a clear error, and no run folder.
    let gpu = dir.join("gpu");
    let o = stagewise(&[
        "train",
        c,
        "--out",
        gpu.to_str().unwrap(),
        "--device",
        "cuda",
    ]);
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--device cuda") && err.contains("no usable CUDA device"),
            "{err}"
        );
        assert!(!gpu.exists());
    }
    let o = stagewise(&["train", c, "--device", "tpu"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected cpu, cuda, cuda:N"));
}
