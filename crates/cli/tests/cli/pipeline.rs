//! `stagewise reproduce`, and device runs (on the emulator) against CPU runs.

use crate::common::*;

/// The whole pipeline on a tiny run; a second invocation resumes: training from its last
/// checkpoint (here one step before the end), every LLC checkpoint already done.
#[test]
fn reproduce_runs_the_pipeline_and_resumes() {
    let dir = scratch("reproduce");
    let cfg = write_config(&dir);
    let sampler = write_sampler(&dir, "tiny-sampler.yaml", 6);
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
    assert!(
        err.contains("training is complete; nothing to resume"),
        "{err}"
    );
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
    // The per-launch flags change nothing on the CPU, so there they are refused.
    let cr = cpu.to_str().unwrap();
    let per_launch = ["--checkpoints-per-launch", "2", "--chains-per-launch", "1"];
    let o = stagewise(
        &[
            &["llc", cr, "--config", s, "--steps", &steps][..],
            &per_launch,
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--checkpoints-per-launch applies to a device"),
        "{err}"
    );
    for (run, device) in [(&cpu, "cpu"), (&emu, "emulator")] {
        let r = run.to_str().unwrap();
        let mut args = vec![
            "llc", r, "--config", s, "--steps", &steps, "--device", device,
        ];
        if device == "emulator" {
            args.extend(per_launch);
        }
        let o = stagewise(&args);
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

    // Calibration runs on the device too: the same grid, the same estimates.
    let steps = last.to_string();
    for (run, device) in [(&cpu, "cpu"), (&emu, "emulator")] {
        let o = stagewise(&[
            "llc",
            "calibrate",
            run.to_str().unwrap(),
            "--config",
            s,
            "--steps",
            &steps,
            "--eps",
            "0.0001,0.0002",
            "--device",
            device,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let summary = |run: &Path| {
        stagewise_io::table::read_csv(&run.join("llc/calibrate-s/summary.csv")).unwrap()
    };
    let ((h, sc), (_, se)) = (summary(&cpu), summary(&emu));
    assert_eq!((sc.len(), se.len()), (2, 2));
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    for (a, b) in sc.iter().zip(&se) {
        assert_eq!(a[..4], b[..4], "the same grid");
        let (x, y) = (a[col("llc/mean")], b[col("llc/mean")]);
        assert!(
            (x - y).abs() <= 2e-3 * x.abs().max(1.0),
            "calibration llc/mean: cpu {x} vs emulator {y}"
        );
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

/// `reproduce --quick-lm` before the corpus is fetched: an error naming the corpus and the
/// script that fetches it, and no run folder that a later call would take for a started run;
/// `--quick-lm` with a config is refused.
#[test]
fn reproduce_quick_lm_without_the_corpus_says_how_to_fetch_it() {
    let dir = scratch("quick-lm");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stagewise"))
        .args(["reproduce", "--quick-lm"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("data/shakespeare/train") && err.contains("scripts/fetch-shakespeare.sh"),
        "{err}"
    );
    assert!(!dir.join("runs/lm-quick/config.yaml").exists());
    let out = stagewise(&["reproduce", "x.yaml", "--quick-lm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `check-device` on the emulator: every row of the parity table (training, Adam, SGLD with each
/// evaluation, the susceptibility batch, graphs) within tolerance, exit status 0.
#[test]
fn check_device_on_the_emulator_agrees_with_the_cpu() {
    let out = stagewise(&[
        "check-device",
        "--device",
        "emulator",
        "--examples",
        "4",
        "--batch",
        "16",
        "--chains",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("susceptibility batch (full + 2 heads): observed losses")
            && text.contains("device and CPU agree.")
            && !text.contains("FAIL"),
        "{text}"
    );
}
