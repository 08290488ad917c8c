//! `stagewise llc` over a run's checkpoints: resuming, calibration, per-token LLCs and bad input.

use crate::common::*;

#[test]
fn llc_over_checkpoints_resumes_and_rejects_bad_input() {
    let dir = scratch("llc");
    let (_, run) = train_tiny(&dir, 40);
    let sampler = dir.join("tiny-sampler.yaml");
    std::fs::write(
        &sampler,
        "num_chains: 2\nnum_draws: 10\nnum_burnin_steps: 2\ngrad_batch_origin: eval-dataset\ngrad_batch_size: 8\neval_dataset_size: 64\n\
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
    // A minibatch larger than the data set, and a step given twice.
    let out = stagewise(&["llc", r, "--config", s, "--set", "grad_batch_size=100000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("grad_batch_size")
            && err.contains("larger than the data set"),
        "{err}"
    );
    if std::path::Path::new("/proc/meminfo").exists() {
        let out = stagewise(&["llc", r, "--config", s, "--log-space", "1000000000000"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("the step selection needs about"),
            "{err}"
        );
        let out = stagewise(&["llc", r, "--config", s, "--set", "num_chains=100000000"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("the LLC sweep needs about"),
            "{err}"
        );
    }
    let out = stagewise(&["llc", r, "--config", s, "--steps", "0,0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("step 0 is given twice"),
        "{err}"
    );
    // A sweep that failed before its first estimate (an include glob matching nothing) leaves
    // nothing that blocks the corrected rerun under the same name.
    let fixme = dir.join("fixme.yaml");
    let good_text = std::fs::read_to_string(&sampler).unwrap();
    std::fs::write(
        &fixme,
        format!("{good_text}include: [\"no.such.tensor*\"]\n"),
    )
    .unwrap();
    let fx = fixme.to_str().unwrap();
    let first_step = steps[0].to_string();
    let out = stagewise(&["llc", r, "--config", fx, "--steps", &first_step]);
    assert!(!out.status.success(), "the glob matches nothing");
    std::fs::write(&fixme, &good_text).unwrap();
    let out = stagewise(&["llc", r, "--config", fx, "--steps", &first_step]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... but once it has results, another config under that name is refused.
    let out = stagewise(&["llc", r, "--config", fx, "--set", "num_draws=11"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("another sampler config"));
    // One writer per sweep folder: a second `llc` into it is refused while the first runs, and
    // the lock left by a killed run is taken over.
    let slow = dir.join("slow.yaml");
    std::fs::write(
        &slow,
        std::fs::read_to_string(&sampler)
            .unwrap()
            .replace("num_draws: 10", "num_draws: 1000000"),
    )
    .unwrap();
    let sl = slow.to_str().unwrap();
    let mut first = Command::new(BIN)
        .args(["llc", r, "--config", sl])
        .env("STAGEWISE_THREADS", "1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = run.join("llc/slow/.lock");
    let t0 = Instant::now();
    while !lock.exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lock.exists(), "the first run holds the lock");
    let out = stagewise(&["llc", r, "--config", sl]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("in use by `stagewise llc`")
            && err.contains(&format!("process {}", first.id())),
        "{err}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(lock.exists(), "SIGKILL leaves the lock");
    // The next run takes the stale lock over (and, the killed run having no estimate yet,
    // replaces its config).
    let out = stagewise(&[
        "llc",
        r,
        "--config",
        sl,
        "--set",
        "num_draws=5",
        "--steps",
        &first_step,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("LLC at 1 checkpoints"),
        "{err}"
    );
    assert!(!lock.exists(), "released");
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
fn susceptibility_and_bif_commands_write_tables_and_refuse_bad_input() {
    let dir = scratch("influence");
    let (_, run) = train_tiny(&dir, 40);
    let sampler = write_sampler(&dir, "s.yaml", 6);
    let steps = list_steps(&run.join("checkpoints"));
    let (r, s) = (run.to_str().unwrap(), sampler.to_str().unwrap());
    let step = steps[2].to_string();
    let common = ["--config", s, "--steps", &step, "--sequences", "2"];
    let out = stagewise(
        &[
            &["susceptibility", r, "--observables", "true,tasks:3"][..],
            &common,
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("4 restrictions") && err.contains("chi(true)"),
        "{err}"
    );
    assert!(
        run.join(format!("susceptibility/s/{step}.parquet"))
            .exists()
    );
    let out = stagewise(
        &[
            &["bif", r, "--level", "sequence", "--reduce", "mean"][..],
            &common,
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.join("bif/s/bif.parquet").exists());
    // The same scan with the CUDA backend's kernels (on the host emulator), in its own folder.
    let emu = write_sampler(&dir, "e.yaml", 6);
    let e = emu.to_str().unwrap();
    let out = stagewise(&[
        "susceptibility",
        r,
        "--observables",
        "true,tasks:3",
        "--device",
        "emulator",
        "--config",
        e,
        "--steps",
        &step,
        "--sequences",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("chi(true)"), "{err}");
    assert!(
        run.join(format!("susceptibility/e/{step}.parquet"))
            .exists()
    );
    // Bad input: a clear message and a non-zero exit, nothing written.
    for (args, want) in [
        (
            vec!["susceptibility", r, "--observables", "sideways"],
            "--observables \"sideways\"",
        ),
        (
            vec!["susceptibility", r, "--restrict", "x=nothing.here"],
            "--restrict x",
        ),
        (
            vec!["bif", r, "--level", "paragraph"],
            "expected \"token\" or \"sequence\"",
        ),
        (
            vec!["bif", r, "--reduce", "median"],
            "expected \"stack\" or \"mean\"",
        ),
        (
            vec!["bif", r, "--sequences", "0"],
            "--sequences must be at least 1",
        ),
        (
            vec!["bif", r, "--device", "tpu"],
            "expected cpu, cuda, cuda:N",
        ),
    ] {
        let sets = ["--set", "num_draws=3"];
        let other = write_sampler(&dir, "bad.yaml", 3);
        let o = other.to_str().unwrap();
        let out = stagewise(&[&args[..], &["--config", o, "--steps", &step], &sets[..]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
    assert!(
        !run.join("susceptibility/bad")
            .join(format!("{step}.parquet"))
            .exists()
    );
}
