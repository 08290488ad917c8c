//! `stagewise ed` and `stagewise stages` on a run and on a synthetic LLC curve.

use crate::common::*;

#[test]
fn essential_dynamics_of_a_run() {
    let dir = scratch("ed");
    let (_, run) = train_tiny(&dir, 60);
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
    // The Hessian's flags without --hessian would change nothing: refused, saying so.
    let out = stagewise(&["indicators", r, "--top", "5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("--hessian"),
        "{err}"
    );
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
    if std::path::Path::new("/proc/meminfo").exists() {
        let out = stagewise(&[
            "ed",
            r,
            "--sequences",
            "100000000000",
            "--out",
            "/nonexistent/x",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains("essential dynamics needs about")
                && err.contains("--sequences"),
            "{err}"
        );
    }
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
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    // `--tf32` acts on a CUDA device only: on the command line elsewhere it is refused; the
    // environment variable (set for every command, say) is accepted as 1/0.
    let out = stagewise(&["--tf32", "stages", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("--tf32 applies to a CUDA device"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["stages", dir.to_str().unwrap()])
        .env("STAGEWISE_TF32", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, fit) = stagewise_io::table::read_csv(&dir.join("stages/synthetic/gp_fit.csv")).unwrap();
    assert_eq!((fit[0][3], fit[0][4]), (0.0, 0.0), "inside the bounds");
    // A short curve swinging far faster and wider than the kernel's bounds allow: the fit ends
    // at its bounds, and `stages` and the report say so.
    let rough = dir.join("rough");
    std::fs::create_dir_all(rough.join("llc/s")).unwrap();
    std::fs::write(
        rough.join("llc/s/llc.csv"),
        "step,llc/mean,llc/std\n0,0,1\n1,100,1\n6,-100,1\n19,100,1\n54,-100,1\n",
    )
    .unwrap();
    std::fs::write(
        rough.join("metrics.csv"),
        "step,pretrain/mse\n0,1\n54,0.5\n",
    )
    .unwrap();
    let out = stagewise(&["stages", rough.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: the GP fit's amplitude") && err.contains("upper bound 1000"),
        "{err}"
    );
    let out = stagewise(&["report", rough.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(rough.join("report/index.html")).unwrap();
    assert!(
        page.contains("Warning: the GP fit&#x27;s amplitude")
            || page.contains("Warning: the GP fit's amplitude")
    );
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
