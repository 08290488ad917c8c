//! The local pool: every task of a sweep that is not done, run as `stagewise run --sweep FILE
//! --task-index I` processes, N at a time; a failed task is reported and the others go on.

use std::path::PathBuf;
use std::process::{Child, Command};

use anyhow::{Context, Result, bail};

use crate::exec::{Root, State, state};
use crate::spec::Method;
use crate::task::Sweep;

/// How the pool runs its tasks.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// The `stagewise` binary.
    pub exe: PathBuf,
    pub sweep_file: PathBuf,
    /// `--root` as the tasks are to get it (a path or a URL).
    pub root: String,
    /// Tasks at once.
    pub jobs: usize,
    /// `--device` of each task.
    pub device: String,
}

/// Runs every unfinished task of `sweep`; `say` receives progress lines.
pub fn run_pool(sweep: &Sweep, root: &Root, o: &PoolOptions, say: &dyn Fn(&str)) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let jobs = o.jobs.clamp(1, sweep.len().max(1));
    let threads = (cores / jobs).max(1);
    let mut todo = Vec::new();
    for i in 0..sweep.len() {
        if state(root, &sweep.task(i)?)? != State::Done {
            todo.push(i);
        }
    }
    say(&format!(
        "{}: {} of {} task(s) to run, {jobs} at a time with {threads} thread(s) each",
        sweep.name(),
        todo.len(),
        sweep.len()
    ));
    let spawn = |i: usize| -> Result<Child> {
        let mut c = Command::new(&o.exe);
        c.arg("--threads")
            .arg(threads.to_string())
            .args(["run", "--sweep"])
            .arg(&o.sweep_file)
            .args([
                "--task-index",
                &i.to_string(),
                "--root",
                &o.root,
                "--device",
                &o.device,
            ]);
        if let Method::Random { count, seed } = sweep.file.method {
            c.args(["--count", &count.to_string(), "--seed", &seed.to_string()]);
        }
        c.spawn().with_context(|| format!("cannot start task {i}"))
    };
    let (mut running, mut failed) = (Vec::<(usize, Child)>::new(), Vec::new());
    let mut queue = todo.into_iter();
    loop {
        while running.len() < jobs {
            match queue.next() {
                Some(i) => running.push((i, spawn(i)?)),
                None => break,
            }
        }
        if running.is_empty() {
            break;
        }
        let mut still = Vec::new();
        for (i, mut child) in running {
            match child.try_wait()? {
                Some(status) if status.success() => {}
                Some(status) => failed.push(format!("{i} ({status})")),
                None => still.push((i, child)),
            }
        }
        running = still;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !failed.is_empty() {
        bail!(
            "{} task(s) failed: {}; rerun to retry them (finished tasks are skipped)",
            failed.len(),
            failed.join(", ")
        );
    }
    say(&format!(
        "{}: all {} task(s) done",
        sweep.name(),
        sweep.len()
    ));
    Ok(())
}

/// `sweep status`: a tab-separated line per task and a summary line.
pub fn status_report(sweep: &Sweep, root: &Root) -> Result<String> {
    let mut counts = [0usize; 4];
    let mut out = String::from("task\tstate\trun\tdetail\n");
    for i in 0..sweep.len() {
        let task = sweep.task(i)?;
        let s = state(root, &task)?;
        counts[match s {
            State::Done => 0,
            State::Partial(_) => 1,
            State::NotStarted => 2,
            State::Waiting(_) => 3,
        }] += 1;
        out += &format!("{i}\t{}\t{}\t{}\n", s.label(), task.run, s.detail());
    }
    out += &format!(
        "{}: {} done, {} partial, {} not started, {} waiting for training, of {}\n",
        sweep.name(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        sweep.len()
    );
    Ok(out)
}

/// Runs `sbatch --parsable SCRIPT`: the job id.
pub fn sbatch(script: &std::path::Path) -> Result<String> {
    let o = Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .context("cannot run sbatch (is Slurm installed and on PATH?)")?;
    if !o.status.success() {
        bail!(
            "sbatch {} failed: {}",
            script.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}
