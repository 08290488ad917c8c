//! Sweeps: W&B sweep files expanded, run in a local pool, killed and rerun, read back by
//! `status`; the reference's own files expand to their runs; bad sweep files fail before
//! anything runs; scheduler launch files and index variables.

use crate::common::*;

const REF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sweeps/regression");

/// A training sweep of 2 seeds of the small model and an LLC sweep over them.
fn write_sweeps(dir: &Path) -> (PathBuf, PathBuf) {
    let task = "  task_config:\n    parameters:\n      task_size: {value: 3}\n      max_examples: {value: 4}\n      \
        num_tasks: {value: inf}\n      noise_variance: {value: 0.125}\n      embed_size: {value: 32}\n      \
        mlp_size: {value: 32}\n      num_heads: {value: 2}\n      num_layers: {value: 2}\n      \
        model_seed: {values: [5, 6]}\n      include_output: {value: true}\n  num_steps: {value: 3000}\n  \
        batch_size: {value: 32}\n  eval_batch_size: {value: 64}\n  optimizer_config:\n    parameters:\n      \
        lr: {value: 0.003}\n  checkpointer_config:\n    parameters:\n      checkpoint_steps:\n        \
        parameters:\n          log_space: {value: 20}\n          linear_space: {value: 6}\n";
    let train = dir.join("train.yaml");
    std::fs::write(
        &train,
        format!("name: t\nmethod: grid\nparameters:\n{task}"),
    )
    .unwrap();
    let llc = dir.join("llc.yaml");
    std::fs::write(
        &llc,
        format!(
            "name: l\nmethod: grid\nparameters:\n  sampler_config:\n    parameters:\n      \
             num_chains: {{value: 2}}\n      num_draws: {{value: 150}}\n      grad_batch_origin: {{value: eval-dataset}}\n      \
             grad_batch_size: {{value: 8}}\n      eval_dataset_size: {{value: 64}}\n      gradient_scale: {{value: 0.01}}\n      \
             localization_scale: {{value: 0.001}}\n      noise_scale: {{value: 0.0003}}\n{task}  steps:\n    \
             parameters:\n      log_space: {{value: 10}}\n      linear_space: {{value: 4}}\n"
        ),
    )
    .unwrap();
    (train, llc)
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir` (relative path -> bytes), except TensorBoard events (they hold wall
/// times) and the report.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                if !rel.contains("events.out.tfevents") {
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
    }
    out
}

#[test]
fn a_sweep_killed_midway_and_rerun_equals_an_uninterrupted_one() {
    use std::os::unix::process::CommandExt;
    let dir = scratch("sweep-kill");
    let (train, llc) = write_sweeps(&dir);
    let (t, l) = (train.to_str().unwrap(), llc.to_str().unwrap());
    let clean = dir.join("clean");
    let c = clean.to_str().unwrap();
    // The uninterrupted runs, timed: the kills below land at fractions of these times, so that
    // they catch the sweeps unfinished on a fast machine as on a slow one.
    let timed = |file: &str| {
        let t0 = Instant::now();
        ok(&stagewise(&[
            "sweep", "run", file, "--root", c, "--jobs", "2",
        ]));
        t0.elapsed().as_millis() as u64
    };
    let (train_ms, llc_ms) = (timed(t), timed(l));
    let status = ok(&stagewise(&["sweep", "status", l, "--root", c]));
    assert!(status.contains("2 done, 0 partial"), "{status}");

    // The same sweeps, the whole process group killed (as a pre-empted job is) 6 times.
    let faulty = dir.join("faulty");
    let f = faulty.to_str().unwrap();
    let mut x: u64 = 7;
    // Each kill at 5-25 % of the uninterrupted time: a run resumed after a kill needs less than
    // the whole, so later windows must stay short for the kills to land before the end.
    let window = |ms: u64| (ms / 20, (ms / 5).max(1));
    let ((tlo, tspan), (llo, lspan)) = (window(train_ms), window(llc_ms));
    for (file, kills, lo, span) in [(t, 4, tlo, tspan), (l, 3, llo, lspan)] {
        let mut interrupted = 0;
        for _ in 0..kills {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut child = Command::new(BIN)
                .args(["sweep", "run", file, "--root", f, "--jobs", "2"])
                .env("STAGEWISE_THREADS", "2")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(lo + (x >> 33) % span));
            let k = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                .status()
                .unwrap();
            assert!(k.success(), "kill failed");
            // Killed, or finished: never failed (a dead worker's lock must not block the next).
            let w = child.wait().unwrap();
            assert!(w.code().is_none() || w.success(), "the pool failed: {w:?}");
            let now = ok(&stagewise(&["sweep", "status", file, "--root", f]));
            if now.contains("\tpartial\t") || now.contains("\tnot started\t") {
                interrupted += 1;
            }
        }
        assert!(
            interrupted >= kills / 2,
            "only {interrupted} of {kills} kills caught the sweep unfinished"
        );
        ok(&stagewise(&[
            "sweep", "run", file, "--root", f, "--jobs", "2",
        ]));
    }
    let (a, b) = (files(&clean), files(&faulty));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (k, v) in &a {
        // Checkpoints hold the same tensors; their JSON header may order metadata alike.
        assert!(v == &b[k], "{k} differs after kills and reruns");
    }
    // Both roots collect into the same long table, with the parameters as columns.
    let (pc, pf) = (dir.join("clean.parquet"), dir.join("faulty.parquet"));
    ok(&stagewise(&["collect", c, "--out", pc.to_str().unwrap()]));
    ok(&stagewise(&["collect", f, "--out", pf.to_str().unwrap()]));
    let cols = stagewise_tables::read_columns(&pc).unwrap();
    assert_eq!(cols, stagewise_tables::read_columns(&pf).unwrap());
    let col = |name: &str| {
        &cols
            .iter()
            .find(|c| c.0 == name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .1
    };
    let (
        stagewise_tables::Column::Text(table),
        stagewise_tables::Column::Float(seed),
        stagewise_tables::Column::Float(draws),
    ) = (
        col("table"),
        col("task_config.model_seed"),
        col("sampler_config.num_draws"),
    )
    else {
        panic!("column types")
    };
    let llc_rows: Vec<usize> = (0..table.len())
        .filter(|&r| table[r].as_deref() == Some("llc/l"))
        .collect();
    assert!(!llc_rows.is_empty());
    for &r in &llc_rows {
        assert_eq!(draws[r], Some(150.0));
    }
    let seeds: std::collections::BTreeSet<i64> = seed.iter().map(|s| s.unwrap() as i64).collect();
    assert_eq!(seeds, [5, 6].into());
    // Rows: every metric of every row of every table of both runs.
    let mut expect = 0;
    for run in std::fs::read_dir(&clean).unwrap() {
        let run = run.unwrap().path();
        for t in ["metrics.csv", "train.csv", "llc/l/llc.csv"] {
            let text = std::fs::read_to_string(run.join(t)).unwrap();
            let mut lines = text.lines();
            let width = lines.next().unwrap().split(',').count() - 1;
            expect += width * lines.count();
        }
    }
    assert_eq!(table.len(), expect);
    // A finished sweep runs nothing again.
    let again = stagewise(&["sweep", "run", t, "--root", f, "--jobs", "2"]);
    ok(&again);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("0 of 2 task(s) to run"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_reference_sweeps_expand_to_their_runs() {
    let dir = scratch("sweep-expand");
    for (file, tasks, kind) in [
        ("training-runs/L2H4Minf.yaml", 11, "train"),
        ("analysis/0-L2H4-llcs-over-time.yaml", 10, "llc"),
        ("calibration/0-L2H4-eps-temp-gamma.yaml", 216, "calibrate"),
    ] {
        let out = dir.join(kind);
        ok(&stagewise(&[
            "sweep",
            "expand",
            &format!("{REF}/{file}"),
            "--out",
            out.to_str().unwrap(),
        ]));
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(
            (m["tasks"].as_u64(), m["kind"].as_str()),
            (Some(tasks), Some(kind))
        );
        let last: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(m["files"][tasks as usize - 1].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        assert_eq!(last["index"], tasks - 1);
    }
    let first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("train/tasks/task_0000.json")).unwrap())
            .unwrap();
    assert_eq!(
        first["run"],
        "M-inf-seed-0-task-f983ab-opt-4f4cb7-sched-4bcc54"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_sweep_files_fail_before_anything_runs() {
    let dir = scratch("sweep-bad");
    let root = dir.join("runs");
    let base = "  task_config:\n    parameters:\n      num_tasks: {value: inf}\n";
    for (body, expect) in [
        (
            format!("method: grid\nbogus: 1\nparameters:\n{base}"),
            "unknown sweep key `bogus`",
        ),
        (
            format!("method: grid\nparameters:\n{base}      model_seed: {{values: []}}\n"),
            "task_config.model_seed`: `values` is empty",
        ),
        (
            format!(
                "method: random\nrun_cap: 2\nparameters:\n{base}  optimizer_config:\n    parameters:\n      lr: {{distribution: log_uniform_values, min: 0.001}}\n"
            ),
            "optimizer_config.lr`: the distribution needs `max`",
        ),
        (
            format!("method: grid\nparameters:\n{base}      widht: {{value: 3}}\n"),
            "unknown field `widht`",
        ),
        (
            format!("method: random\nparameters:\n{base}"),
            "needs a run count",
        ),
        (
            format!("method: bayes\nparameters:\n{base}"),
            "W&B's sweep controller",
        ),
        (
            format!(
                "method: grid\nparameters:\n{base}  optimizer_config:\n    parameters:\n      lr: {{distribution: uniform, min: 0.1, max: 0.2}}\n"
            ),
            "a grid cannot enumerate",
        ),
        (
            format!(
                "method: grid\nparameters:\n{base}  sampler_config:\n    parameters:\n      eval_metrics: {{value: [hessian]}}\n      gradient_scale: {{value: 0.01}}\n      localization_scale: {{value: 0.001}}\n      noise_scale: {{value: 0.0003}}\n"
            ),
            "\"hessian\" is not supported",
        ),
    ] {
        let f = dir.join("bad.yaml");
        std::fs::write(&f, body).unwrap();
        for cmd in ["run", "status"] {
            let out = stagewise(&[
                "sweep",
                cmd,
                f.to_str().unwrap(),
                "--root",
                root.to_str().unwrap(),
            ]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && err.contains(expect),
                "{cmd}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
        assert!(!root.exists(), "a refused sweep wrote {}", root.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn random_sweeps_draw_the_same_runs_for_the_same_seed() {
    let dir = scratch("sweep-random");
    let f = dir.join("r.yaml");
    std::fs::write(
        &f,
        "method: random\nrun_cap: 20\nparameters:\n  task_config:\n    parameters:\n      num_tasks: {value: inf}\n      \
         model_seed: {distribution: int_uniform, min: 0, max: 9}\n  optimizer_config:\n    parameters:\n      \
         lr: {distribution: log_uniform_values, min: 0.0001, max: 0.01}\n  batch_size: {values: [64, 128]}\n",
    )
    .unwrap();
    let expand = |out: &str, seed: &str| {
        ok(&stagewise(&[
            "sweep",
            "expand",
            f.to_str().unwrap(),
            "--out",
            dir.join(out).to_str().unwrap(),
            "--seed",
            seed,
        ]));
        (0..20)
            .map(|i| {
                let t: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(dir.join(out).join(format!("tasks/task_{i:04}.json"))).unwrap(),
                )
                .unwrap();
                t["params"].clone()
            })
            .collect::<Vec<_>>()
    };
    let (a, b, c) = (expand("a", "0"), expand("b", "0"), expand("c", "1"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let mut seeds = std::collections::BTreeSet::new();
    for p in &a {
        let lr = p["optimizer_config.lr"].as_f64().unwrap();
        assert!((1e-4..=1e-2).contains(&lr), "{lr}");
        let s = p["task_config.model_seed"].as_u64().unwrap();
        assert!(s <= 9);
        seeds.insert(s);
        assert!([64, 128].contains(&p["batch_size"].as_u64().unwrap()));
    }
    assert!(seeds.len() > 3, "{seeds:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn launch_files_and_scheduler_indices() {
    let dir = scratch("sweep-launch");
    let (train, _) = write_sweeps(&dir);
    let t = train.to_str().unwrap();
    let root = dir.join("runs");
    let script = dir.join("t.sbatch");
    ok(&stagewise(&[
        "sweep",
        "slurm",
        t,
        "--root",
        root.to_str().unwrap(),
        "--out",
        script.to_str().unwrap(),
        "--parallel",
        "1",
        "--time",
        "00:10:00",
    ]));
    let text = std::fs::read_to_string(&script).unwrap();
    for want in [
        "#SBATCH --array=0-1%1",
        "#SBATCH --time=00:10:00",
        " run --sweep ",
        "--root ",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let k8s = dir.join("t.k8s.yaml");
    ok(&stagewise(&[
        "sweep",
        "k8s",
        t,
        "--image",
        "stagewise:1",
        "--out",
        k8s.to_str().unwrap(),
    ]));
    let text = std::fs::read_to_string(&k8s).unwrap();
    for want in [
        "completionMode: Indexed",
        "completions: 2",
        "image: stagewise:1",
        "sweep.yaml: |",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // Valid YAML whose ConfigMap holds the sweep file itself (where Python has PyYAML).
    let check = format!(
        "import yaml\nd = list(yaml.safe_load_all(open({k:?})))\nassert [x['kind'] for x in d] == ['ConfigMap', 'Job']\n\
         assert d[1]['spec']['completions'] == 2\nassert d[0]['data']['sweep.yaml'] == open({s:?}).read()\nprint('ok')\n",
        k = k8s.to_str().unwrap(),
        s = t
    );
    match Command::new("python3").args(["-c", &check]).output() {
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No module named 'yaml'") => {
            eprintln!("SKIPPED: the manifest's YAML check (no PyYAML)")
        }
        Ok(o) => assert!(
            String::from_utf8_lossy(&o.stdout).starts_with("ok"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("SKIPPED: the manifest's YAML check (no python3: {e})"),
    }
    // The index from the scheduler's variable: Kubernetes' 0-based, LSF's 1-based.
    let run = |var: &str, val: &str| {
        Command::new(BIN)
            .args(["run", "--sweep", t, "--root", root.to_str().unwrap()])
            .env("STAGEWISE_THREADS", "2")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env(var, val)
            .output()
            .unwrap()
    };
    let out = run("JOB_COMPLETION_INDEX", "1");
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("task 1 (from JOB_COMPLETION_INDEX)"));
    let out = run("LSB_JOBINDEX", "2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("task 1 (from LSB_JOBINDEX)"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already done"));
    let out = run("JOB_COMPLETION_INDEX", "2");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of range: the sweep has 2 tasks"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `stagewise train ${args}` as `wandb agent` calls it: the run in the reference's folder.
#[test]
fn train_takes_the_arguments_wandb_agent_passes() {
    let dir = scratch("sweep-wandb");
    let out = Command::new(BIN)
        .current_dir(&dir)
        .args([
            "train",
            "--task_config={'task_size': 4, 'max_examples': 16, 'num_tasks': 'inf', 'noise_variance': 0.125, 'embed_size': 64, 'mlp_size': 64, 'num_heads': 4, 'num_layers': 2, 'model_seed': 0, 'pretrain_seed': None, 'true_seed': None, 'sampling_seed': None, 'layer_norm': True, 'include_output': True}",
            "--optimizer_config={'lr': 0.003}",
            "--eval_batch_size=16",
            "--batch_size=8",
            "--num_steps=30",
        ])
        .env("STAGEWISE_THREADS", "2")
        .output()
        .unwrap();
    ok(&out);
    let runs: Vec<String> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0].starts_with("M-inf-seed-0-task-f983ab-opt-4f4cb7-sched-"),
        "{runs:?}"
    );
    let cfg = std::fs::read_to_string(dir.join("runs").join(&runs[0]).join("config.yaml")).unwrap();
    assert!(
        cfg.contains("num_steps: 30") && cfg.contains("batch_size: 8"),
        "{cfg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The S3 test server's environment for a child process, or `None` (skipped, said why).
fn s3_env() -> Option<Vec<(String, String)>> {
    let Ok(endpoint) = std::env::var("STAGEWISE_TEST_S3_ENDPOINT") else {
        eprintln!(
            "SKIPPED: no S3 test server (run `eval \"$(.ci/s3.sh)\"` first, as .ci/run does)"
        );
        return None;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    Some(vec![
        ("AWS_ENDPOINT_URL".into(), endpoint),
        ("AWS_ACCESS_KEY_ID".into(), var("STAGEWISE_TEST_S3_KEY")),
        (
            "AWS_SECRET_ACCESS_KEY".into(),
            var("STAGEWISE_TEST_S3_SECRET"),
        ),
        ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
        ("AWS_BUCKET_NAME".into(), var("STAGEWISE_TEST_S3_BUCKET")),
    ])
}

/// A training and an LLC sweep with `--root s3:///PREFIX` (the bucket from AWS_BUCKET_NAME):
/// run, status, a rerun that runs nothing; `stages` on a run in the bucket; a wrong secret and a
/// missing bucket fail cleanly without printing the secret.
#[test]
fn sweeps_run_in_the_bucket() {
    let Some(env) = s3_env() else { return };
    let dir = scratch("sweep-s3");
    let (train, llc) = write_sweeps(&dir);
    let root = format!(
        "s3:///sweeps-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let run = |args: &[&str], extra: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args(args).current_dir(&dir).env("STAGEWISE_THREADS", "2");
        for (k, v) in &env {
            c.env(k, v);
        }
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    for f in [&train, &llc] {
        let f = f.to_str().unwrap();
        ok(&run(
            &["sweep", "run", f, "--root", &root, "--jobs", "2"],
            &[],
        ));
        let status = ok(&run(&["sweep", "status", f, "--root", &root], &[]));
        assert!(status.contains("2 done, 0 partial"), "{status}");
    }
    let again = run(
        &["sweep", "run", train.to_str().unwrap(), "--root", &root],
        &[],
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 of 2 task(s) to run"));
    // The per-run commands take the same URLs.
    let status = ok(&run(
        &["sweep", "status", train.to_str().unwrap(), "--root", &root],
        &[],
    ));
    let name = status
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .nth(2)
        .unwrap()
        .to_string();
    let one = format!("{root}/{name}");
    ok(&run(&["stages", &one, "--llc", "l"], &[]));
    // Collected from the bucket: both runs, LLC rows included.
    let table = dir.join("bucket.csv");
    ok(&run(
        &["collect", &root, "--out", table.to_str().unwrap()],
        &[],
    ));
    let text = std::fs::read_to_string(&table).unwrap();
    let runs: std::collections::BTreeSet<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(text.lines().any(|l| l.contains(",llc/l,")));
    std::fs::remove_file(&table).unwrap();
    // Nothing of the sweep was written locally.
    assert!(!dir.join("runs").exists());
    let wrong = run(
        &["sweep", "status", train.to_str().unwrap(), "--root", &root],
        &[("AWS_SECRET_ACCESS_KEY", "wrong-secret-4242")],
    );
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && err.contains("refused the credentials"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret-4242"), "{err}");
    let missing = run(
        &[
            "sweep",
            "status",
            train.to_str().unwrap(),
            "--root",
            "s3://no-such-bucket-sw/x",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && err.contains("bucket does not exist"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A real single-node Slurm (`.ci/slurm.sh`): `sweep slurm --submit` submits the array, every
/// element runs its task (index from SLURM_ARRAY_TASK_ID), and `sweep status` then finds them
/// all done; a second submission runs nothing again.
#[test]
fn slurm_runs_an_array_sweep() {
    if std::env::var("STAGEWISE_TEST_SLURM").is_err() {
        eprintln!(
            "SKIPPED: no Slurm test cluster (run `eval \"$(.ci/slurm.sh)\"` as root first, as .ci/run does)"
        );
        return;
    }
    let dir = scratch("sweep-slurm");
    let (train, _) = write_sweeps(&dir);
    let t = train.to_str().unwrap();
    let root = dir.join("runs");
    let r = root.to_str().unwrap();
    let script = dir.join("t.sbatch");
    let submit = |what: &str| {
        let out = ok(&stagewise(&[
            "sweep",
            "slurm",
            t,
            "--root",
            r,
            "--out",
            script.to_str().unwrap(),
            "--cpus-per-task",
            "1",
            "--submit",
        ]));
        let id = out
            .lines()
            .find_map(|l| l.strip_prefix("submitted job "))
            .unwrap_or_else(|| panic!("{what}: no job id in {out}"))
            .trim()
            .to_string();
        // Wait (at most 5 minutes) until the array has left the queue.
        let t0 = Instant::now();
        loop {
            let q = Command::new("squeue")
                .args(["-h", "-j", &id])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&q.stdout).trim().is_empty() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "{what}: job {id} still queued"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        id
    };
    let id = submit("first");
    let status = ok(&stagewise(&["sweep", "status", t, "--root", r]));
    assert!(status.contains("2 done, 0 partial"), "{status}");
    for i in 0..2 {
        let log = std::fs::read_to_string(root.join(format!("slurm-logs/{id}_{i}.out"))).unwrap();
        assert!(
            log.contains(&format!("task {i} (from SLURM_ARRAY_TASK_ID)")),
            "{log}"
        );
        assert!(log.contains(&format!("task {i}: done")), "{log}");
    }
    let again = submit("second");
    for i in 0..2 {
        let log =
            std::fs::read_to_string(root.join(format!("slurm-logs/{again}_{i}.out"))).unwrap();
        assert!(log.contains("already done, nothing to run"), "{log}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
