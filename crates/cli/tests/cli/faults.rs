//! Fault injection: `train`, `llc`, `ed` and `report` killed with SIGKILL at 20 pseudo-random
//! moments each, rerun after every kill, end with the same files as an uninterrupted run; the
//! locks and temporaries the kills leave do not get in the way, and none is left at the end.

use crate::common::*;

/// Runs `args` and SIGKILLs it after a pseudo-random delay in [lo, hi) ms (a fixed LCG from
/// `seed`, so a failure replays), again and again until `kills` runs were killed, or one ran to
/// its end (a command that resumes has then nothing left to do; one that starts over, `restarts`,
/// is run again, for at most 2 x `kills` runs); then runs it to its end. Returns the runs killed.
fn kill_and_rerun(
    args: &dyn Fn() -> Vec<String>,
    seed: u64,
    (lo, hi): (u64, u64),
    kills: usize,
    restarts: bool,
) -> usize {
    let mut x = seed;
    let mut killed = 0;
    for _ in 0..2 * kills {
        if killed == kills {
            break;
        }
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = Duration::from_millis(lo + (x >> 33) % (hi - lo));
        let mut child = Command::new(BIN)
            .args(args())
            .env("STAGEWISE_THREADS", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_some() {
            if restarts {
                continue;
            }
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        killed += 1;
    }
    let out = Command::new(BIN)
        .args(args())
        .env("STAGEWISE_THREADS", "2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the last rerun: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    killed
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} differs from {}", b.display(), a.display());
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn sigkill_at_random_points_then_rerun_equals_an_uninterrupted_run() {
    let dir = scratch("faults");
    let cfg = write_config(&dir);
    let c = cfg.to_str().unwrap().to_string();
    let sampler = write_sampler(&dir, "s.yaml", 100);
    let s = sampler.to_str().unwrap().to_string();
    let (clean, faulty) = (dir.join("clean"), dir.join("faulty"));
    let run = |args: &[&str]| {
        let o = stagewise(args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let cl = clean.to_str().unwrap();
    run(&["train", &c, "--out", cl]);
    run(&["llc", cl, "--config", &s]);
    run(&["ed", cl, "--sequences", "256"]);
    run(&["stages", cl]);
    run(&["report", cl]);

    let fl = faulty.to_str().unwrap().to_string();
    let train = || {
        let mut v = strings(&["train", &c, "--out", &fl]);
        if faulty.join("config.yaml").exists() {
            v.push("--resume".into());
        }
        v
    };
    assert_eq!(
        kill_and_rerun(&train, 1, (10, 150), 20, false),
        20,
        "training ended first"
    );
    let model = model_of(&clean);
    let steps = list_steps(&clean.join("checkpoints"));
    assert_eq!(list_steps(&faulty.join("checkpoints")), steps);
    for st in &steps {
        let f = format!("{st}.safetensors");
        let (a, _) = load_model(&clean.join("checkpoints").join(&f), &model).unwrap();
        let (b, _) = load_model(&faulty.join("checkpoints").join(&f), &model).unwrap();
        assert!(a == b, "checkpoint {st} differs");
    }
    for table in ["metrics.csv", "train.csv"] {
        same_file(&clean.join(table), &faulty.join(table));
    }

    let llc = || strings(&["llc", &fl, "--config", &s]);
    assert_eq!(
        kill_and_rerun(&llc, 2, (10, 150), 20, false),
        20,
        "the sweep ended first"
    );
    same_file(&clean.join("llc/s/llc.csv"), &faulty.join("llc/s/llc.csv"));

    // ED and the report start over each time: killed anywhere in their work.
    let ed = || strings(&["ed", &fl, "--sequences", "256"]);
    assert_eq!(kill_and_rerun(&ed, 3, (5, 150), 20, true), 20);
    run(&["stages", &fl]);
    let report = || strings(&["report", &fl]);
    assert_eq!(kill_and_rerun(&report, 4, (1, 25), 20, true), 20);
    for f in [
        "ed/full/scores.csv",
        "ed/full/forms.csv",
        "stages/s/stages.csv",
    ] {
        same_file(&clean.join(f), &faulty.join(f));
    }
    // The page names its run: the same page but for that name.
    let page = |d: &Path| std::fs::read_to_string(d.join("report/index.html")).unwrap();
    assert_eq!(page(&clean), page(&faulty).replace("faulty", "clean"));
    // Nothing half-written or locked is left behind.
    let mut stack = vec![faulty.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains(".tmp-") && !name.ends_with("lock"),
                "{} left behind",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `reproduce` (train, llc, ed, stages, indicators, report in one command) killed 20 times at
/// pseudo-random moments and rerun ends with the files of an uninterrupted `reproduce`.
#[test]
fn sigkill_during_reproduce_then_rerun_equals_an_uninterrupted_run() {
    let dir = scratch("faults-reproduce");
    let cfg = write_config(&dir);
    let c = cfg.to_str().unwrap().to_string();
    let sampler = write_sampler(&dir, "s.yaml", 40);
    let s = sampler.to_str().unwrap().to_string();
    let (clean, faulty) = (dir.join("clean"), dir.join("faulty"));
    let args = |out: &Path| {
        strings(&[
            "reproduce",
            &c,
            "--sampler",
            &s,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = Command::new(BIN)
        .args(args(&clean))
        .env("STAGEWISE_THREADS", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let killed = kill_and_rerun(&|| args(&faulty), 5, (10, 300), 20, false);
    assert_eq!(killed, 20, "reproduce ended before 20 kills");
    for f in [
        "metrics.csv",
        "train.csv",
        "llc/s/llc.csv",
        "ed/full/scores.csv",
        "stages/s/stages.csv",
        "indicators.csv",
    ] {
        same_file(&clean.join(f), &faulty.join(f));
    }
    let model = model_of(&clean);
    for st in list_steps(&clean.join("checkpoints")) {
        let f = format!("{st}.safetensors");
        let (a, _) = load_model(&clean.join("checkpoints").join(&f), &model).unwrap();
        let (b, _) = load_model(&faulty.join("checkpoints").join(&f), &model).unwrap();
        assert!(a == b, "checkpoint {st} differs");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two writers of one run: a second `train --resume` while the first trains is refused, naming
/// the first; after the first is killed, the resume takes its lock over and goes on.
#[test]
fn a_second_train_of_the_same_run_is_refused_while_the_first_runs() {
    let dir = scratch("two-trains");
    let cfg = write_config(&dir);
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    let mut first = Command::new(BIN)
        .args(["train", cfg.to_str().unwrap(), "--out", r])
        .env("STAGEWISE_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !run.join("checkpoints/1.safetensors").exists() && t0.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = stagewise(&["train", "--out", r, "--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("in use by `stagewise train`")
            && err.contains(&format!("process {}", first.id())),
        "{err}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let out = stagewise(&["train", "--out", r, "--resume"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!run.join(".lock").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
