//! `stagewise sweep ...` and `stagewise run --sweep FILE`: W&B-style sweep files expanded into
//! tasks, run one per scheduler array index, in a local pool, or handed to Slurm / Kubernetes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use stagewise_sweep::launch::expand;
use stagewise_sweep::{Root, Sweep, SweepFile};

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
    pub fn for_nodes(&self) -> Result<String> {
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
    Slurm(crate::launch::SlurmArgs),
    /// Writes a Kubernetes Indexed Job (and the ConfigMap with the sweep file).
    K8s(crate::launch::K8sArgs),
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

pub fn absolute(p: &Path) -> Result<String> {
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
        SweepCommand::Slurm(a) => crate::launch::slurm(a),
        SweepCommand::K8s(a) => crate::launch::k8s(a),
    }
}

fn status(sweep: &Sweep, root: &Root) -> Result<()> {
    print!("{}", stagewise_sweep::pool::status_report(sweep, root)?);
    Ok(())
}

/// The local pool: every task not done, `jobs` processes at a time.
fn pool(a: &PoolArgs) -> Result<()> {
    let sweep = a.source.load()?;
    let opts = stagewise_sweep::pool::PoolOptions {
        exe: std::env::current_exe().context("cannot find the stagewise binary")?,
        sweep_file: a.source.file.clone(),
        root: a.root.root.to_string_lossy().into_owned(),
        jobs: a.jobs,
        device: stagewise_pipeline::device::spec_name(a.device),
    };
    stagewise_sweep::pool::run_pool(&sweep, &a.root.open()?, &opts, &|l| eprintln!("{l}"))
}
