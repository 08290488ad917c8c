//! `stagewise sweep slurm` and `stagewise sweep k8s`: launch files for a cluster's scheduler.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use stagewise_sweep::launch::{K8sOptions, SlurmOptions, k8s_manifest, slurm_script};

use crate::sweep::{RootArg, SweepSource, absolute};

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

pub fn k8s(a: &K8sArgs) -> Result<()> {
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

pub fn slurm(a: &SlurmArgs) -> Result<()> {
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
        println!("submitted job {}", stagewise_sweep::pool::sbatch(&out)?);
    }
    Ok(())
}
