//! `stagewise sweep ...` and `stagewise run --sweep FILE`: W&B-style sweep files expanded into
//! tasks, run one per scheduler array index, in a local pool, or handed to Slurm / Kubernetes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use stagewise_pipeline::Backend;
use stagewise_pipeline::llc::PerLaunch;
use stagewise_sweep::launch::{K8sOptions, SlurmOptions, expand, k8s_manifest, slurm_script};
use stagewise_sweep::{Outcome, Root, RunOptions, State, Sweep, SweepFile, run_task, state};

use crate::console::Console;

/// The sweep file and how random sweeps are drawn.
#[derive(Args, Clone)]
pub struct SweepSource {
    /// W&B sweep YAML (`method: grid | random`, nested `parameters:`).
    pub file: PathBuf,
    /// Runs of a `method: random` sweep (default: the file's `run_cap`).
    #[arg(long)]
    pub count: Option<usize>,
    /// Seed of a random sweep's draws (a task index always gives the same run).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SweepSource {
    pub fn load(&self) -> Result<Sweep> {
        let text = std::fs::read_to_string(&self.file)
            .with_context(|| format!("{}: cannot read the sweep file", self.file.display()))?;
        let stem = self
            .file
            .file_stem()
            .map_or("sweep".into(), |s| s.to_string_lossy().into_owned());
        let origin = self.file.display().to_string();
        Sweep::new(SweepFile::parse(
            &text, &origin, &stem, self.count, self.seed,
        )?)
    }
}

/// Where the runs live.
#[derive(Args, Clone)]
pub struct RootArg {
    /// Folder (or `s3://bucket/prefix`) of the sweep's runs, each named as the reference names
    /// it (`M-inf-seed-0-task-...`).
    #[arg(long, default_value = "runs", env = "STAGEWISE_ROOT")]
    pub root: PathBuf,
}

impl RootArg {
    pub fn open(&self) -> Result<Root> {
        Ok(Root(crate::place::folder(&self.root)?))
    }

    /// The root as the nodes of a cluster must see it: a URL as given, a path made absolute.
    fn for_nodes(&self) -> Result<String> {
        if crate::place::is_url(&self.root) {
            Ok(self.root.to_string_lossy().into_owned())
        } else {
            absolute(&self.root)
        }
    }
}

#[derive(Subcommand)]
pub enum SweepCommand {
    /// Every task of the sweep, fully resolved: DIR/tasks/task_NNNN.json and DIR/manifest.json.
    Expand(ExpandArgs),
    /// Runs every task on this machine, N at a time (each in its own process).
    Run(PoolArgs),
    /// Each task's state from what is in its folders: done, partial, not started.
    Status(StatusArgs),
    /// Writes (and with --submit, submits) an `sbatch --array` script, one element per task.
    Slurm(SlurmArgs),
    /// Writes a Kubernetes Indexed Job (and the ConfigMap with the sweep file).
    K8s(K8sArgs),
}

#[derive(Args)]
pub struct ExpandArgs {
    #[command(flatten)]
    source: SweepSource,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct PoolArgs {
    #[command(flatten)]
    source: SweepSource,
    #[command(flatten)]
    root: RootArg,
    /// Tasks at once (each gets cores / N threads).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Where the tasks compute: cpu, cuda, cuda:N, emulator.
    #[arg(long, default_value = "cpu")]
    device: stagewise_cuda::DeviceSpec,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    source: SweepSource,
    #[command(flatten)]
    root: RootArg,
}

#[derive(Args)]
pub struct SlurmArgs {
    #[command(flatten)]
    source: SweepSource,
    #[command(flatten)]
    root: RootArg,
    /// Script path (default: <sweep name>.sbatch).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run `sbatch` on the script and print the job id.
    #[arg(long)]
    submit: bool,
    /// Most tasks running at once (`--array=0-N%P`).
    #[arg(long)]
    parallel: Option<usize>,
    #[arg(long, default_value_t = 2)]
    cpus_per_task: usize,
    #[arg(long)]
    time: Option<String>,
    #[arg(long)]
    partition: Option<String>,
    #[arg(long)]
    mem: Option<String>,
    /// Folder of the tasks' output files (default: ROOT/slurm-logs, or ./slurm-logs when ROOT
    /// is in an object store).
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct K8sArgs {
    #[command(flatten)]
    source: SweepSource,
    /// Container image with `stagewise` on its PATH.
    #[arg(long)]
    image: String,
    /// `--root` inside the container (a mounted volume).
    #[arg(long, default_value = "/data/runs")]
    root: String,
    #[arg(long, default_value_t = 4)]
    parallelism: usize,
    #[arg(long, default_value_t = 2)]
    cpus: usize,
    /// A Secret whose keys become the pods' environment (object-store credentials).
    #[arg(long)]
    env_secret: Option<String>,
    /// Manifest path (default: <sweep name>.k8s.yaml).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `stagewise run --sweep FILE`: one task.
#[derive(Args)]
pub struct RunArgs {
    /// The sweep file.
    #[arg(long)]
    sweep: PathBuf,
    /// Task index (0-based); default: the scheduler's (SLURM_ARRAY_TASK_ID,
    /// JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX, or 1-based SGE_TASK_ID / LSB_JOBINDEX).
    #[arg(long)]
    task_index: Option<usize>,
    #[arg(long)]
    count: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    root: RootArg,
    /// Where to compute: cpu, cuda, cuda:N, emulator.
    #[arg(long, default_value = "cpu")]
    pub device: stagewise_cuda::DeviceSpec,
    #[command(flatten)]
    pub mlflow: crate::place::MlflowArg,
}

fn absolute(p: &Path) -> Result<String> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(abs.display().to_string())
}

pub fn run(cmd: &SweepCommand) -> Result<()> {
    match cmd {
        SweepCommand::Expand(a) => {
            let sweep = a.source.load()?;
            let m = expand(&sweep, &a.out)?;
            println!(
                "{} task(s) of {} ({:?}) in {}",
                m.tasks,
                m.name,
                m.kind,
                a.out.join("tasks").display()
            );
            Ok(())
        }
        SweepCommand::Status(a) => status(&a.source.load()?, &a.root.open()?),
        SweepCommand::Run(a) => pool(a),
        SweepCommand::Slurm(a) => slurm(a),
        SweepCommand::K8s(a) => {
            let sweep = a.source.load()?;
            let text = std::fs::read_to_string(&a.source.file)?;
            let manifest = k8s_manifest(
                &sweep,
                &K8sOptions {
                    image: a.image.clone(),
                    parallelism: a.parallelism,
                    root: a.root.clone(),
                    cpus: a.cpus,
                    sweep_text: text,
                    env_secret: a.env_secret.clone(),
                },
            );
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.k8s.yaml", sweep.name())));
            stagewise_io::atomic::write_atomic(&out, manifest.as_bytes())
                .with_context(|| format!("{}: cannot write", out.display()))?;
            println!(
                "{}: Indexed Job of {} task(s); kubectl apply -f {}",
                out.display(),
                sweep.len(),
                out.display()
            );
            Ok(())
        }
    }
}

fn status(sweep: &Sweep, root: &Root) -> Result<()> {
    let mut counts = [0usize; 4];
    println!("task\tstate\trun\tdetail");
    for i in 0..sweep.len() {
        let task = sweep.task(i)?;
        let s = state(root, &task)?;
        counts[match s {
            State::Done => 0,
            State::Partial(_) => 1,
            State::NotStarted => 2,
            State::Waiting(_) => 3,
        }] += 1;
        println!("{i}\t{}\t{}\t{}", s.label(), task.run, s.detail());
    }
    println!(
        "{}: {} done, {} partial, {} not started, {} waiting for training, of {}",
        sweep.name(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        sweep.len()
    );
    Ok(())
}

/// One task (`stagewise run --sweep FILE`).
pub fn run_one(a: &RunArgs) -> Result<()> {
    let source = SweepSource {
        file: a.sweep.clone(),
        count: a.count,
        seed: a.seed,
    };
    let sweep = source.load()?;
    let (index, from) = match a.task_index {
        Some(i) => (i, "--task-index".to_string()),
        None => match stagewise_sweep::exec::index_from_env(|k| std::env::var(k).ok())? {
            Some((i, var)) => (i, var.to_string()),
            None => bail!(
                "no task index: pass --task-index N (0..{}) or run under a scheduler that sets one ({})",
                sweep.len(),
                stagewise_sweep::exec::INDEX_VARIABLES
                    .iter()
                    .map(|v| v.0)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let task = sweep.task(index)?;
    let device = Backend::open(a.device, crate::tf32())?;
    let root = a.root.open()?;
    eprintln!(
        "task {index} (from {from}) of {} ({:?}): {}{}",
        sweep.name(),
        task.kind,
        root.run(&task).display(),
        task.sampler_name
            .as_ref()
            .map(|s| format!(", sampler folder llc/{s}"))
            .unwrap_or_default()
    );
    let opts = RunOptions {
        device,
        per_launch: PerLaunch::default(),
    };
    match run_task(&root, &task, &opts, &Console::default())? {
        Outcome::Skipped => eprintln!("task {index}: already done, nothing to run"),
        Outcome::Ran => eprintln!("task {index}: done"),
    }
    // The sweep's W&B `project` names the MLflow experiment unless one is given.
    let mut mlflow = a.mlflow.clone();
    if std::env::var("MLFLOW_EXPERIMENT_NAME").is_err()
        && mlflow.experiment == "stagewise"
        && let Some(p) = &sweep.file.project
    {
        mlflow.experiment = p.clone();
    }
    mlflow.export(&root.run(&task))
}

/// The local pool: every task not done, `jobs` processes at a time.
fn pool(a: &PoolArgs) -> Result<()> {
    let sweep = a.source.load()?;
    let root = a.root.open()?;
    let exe = std::env::current_exe().context("cannot find the stagewise binary")?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let jobs = a.jobs.clamp(1, sweep.len().max(1));
    let threads = (cores / jobs).max(1);
    let mut todo: Vec<usize> = Vec::new();
    for i in 0..sweep.len() {
        if state(&root, &sweep.task(i)?)? != State::Done {
            todo.push(i);
        }
    }
    eprintln!(
        "{}: {} of {} task(s) to run, {jobs} at a time with {threads} thread(s) each",
        sweep.name(),
        todo.len(),
        sweep.len()
    );
    let spawn = |i: usize| -> Result<std::process::Child> {
        let mut c = Command::new(&exe);
        c.arg("--threads")
            .arg(threads.to_string())
            .arg("run")
            .arg("--sweep")
            .arg(&a.source.file)
            .arg("--task-index")
            .arg(i.to_string())
            .arg("--seed")
            .arg(a.source.seed.to_string())
            .arg("--root")
            .arg(&a.root.root)
            .arg("--device")
            .arg(stagewise_pipeline::device::spec_name(a.device));
        if let Some(n) = a.source.count {
            c.arg("--count").arg(n.to_string());
        }
        c.spawn().with_context(|| format!("cannot start task {i}"))
    };
    let mut running: Vec<(usize, std::process::Child)> = Vec::new();
    let mut failed = Vec::new();
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
                Some(status) => failed.push((i, status)),
                None => still.push((i, child)),
            }
        }
        running = still;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed.iter().map(|(i, s)| format!("{i} ({s})")).collect();
        bail!(
            "{} task(s) failed: {}; rerun `stagewise sweep run` to retry them (finished tasks are skipped)",
            failed.len(),
            list.join(", ")
        );
    }
    eprintln!("{}: all {} task(s) done", sweep.name(), sweep.len());
    Ok(())
}

fn slurm(a: &SlurmArgs) -> Result<()> {
    let sweep = a.source.load()?;
    let exe = std::env::current_exe().context("cannot find the stagewise binary")?;
    let log_dir = match (&a.log_dir, crate::place::is_url(&a.root.root)) {
        (Some(d), _) => d.clone(),
        (None, false) => a.root.root.join("slurm-logs"),
        (None, true) => PathBuf::from("slurm-logs"),
    };
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("{}: cannot create the log folder", log_dir.display()))?;
    let script = slurm_script(
        &sweep,
        &SlurmOptions {
            binary: exe.display().to_string(),
            sweep_file: absolute(&a.source.file)?,
            root: a.root.for_nodes()?,
            parallel: a.parallel,
            cpus_per_task: a.cpus_per_task,
            time: a.time.clone(),
            partition: a.partition.clone(),
            mem: a.mem.clone(),
            log_dir: absolute(&log_dir)?,
        },
    );
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.sbatch", sweep.name())));
    stagewise_io::atomic::write_atomic(&out, script.as_bytes())
        .with_context(|| format!("{}: cannot write", out.display()))?;
    println!("{}: array of {} task(s)", out.display(), sweep.len());
    if a.submit {
        let o = Command::new("sbatch")
            .arg("--parsable")
            .arg(&out)
            .output()
            .context("cannot run sbatch (is Slurm installed and on PATH?)")?;
        if !o.status.success() {
            bail!(
                "sbatch {} failed: {}",
                out.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        println!(
            "submitted job {}",
            String::from_utf8_lossy(&o.stdout).trim()
        );
    }
    Ok(())
}

/// `stagewise collect ROOT --out FILE`.
#[derive(Args)]
pub struct CollectArgs {
    /// Folder (or `s3://bucket/prefix`) whose run folders to read.
    root: PathBuf,
    /// Output: Parquet, or CSV when the name ends in `.csv`.
    #[arg(long, default_value = "results.parquet")]
    out: PathBuf,
}

pub fn collect(a: &CollectArgs) -> Result<()> {
    let root = crate::place::folder(&a.root)?;
    let c = stagewise_sweep::collect::collect(&root)?;
    if c.runs == 0 {
        bail!(
            "{}: no run folders (folders with a config.yaml) directly inside",
            root.display()
        );
    }
    stagewise_sweep::collect::write(&c.columns, &a.out)?;
    println!(
        "{}: {} rows from {} runs ({} columns)",
        a.out.display(),
        c.rows,
        c.runs,
        c.columns.len()
    );
    Ok(())
}
