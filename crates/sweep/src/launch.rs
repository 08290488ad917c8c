//! Files that hand a sweep to a scheduler a cluster already has: the expanded task list, a Slurm
//! array script and a Kubernetes Indexed Job. Each array element runs
//! `stagewise run --sweep FILE`, which reads its index from the scheduler's variable.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use stagewise_io::atomic::write_atomic;

use crate::spec::Method;
use crate::task::{Kind, Sweep};

/// `--count N --seed S` for a random sweep (so every array element draws the same runs).
fn random_args(sweep: &Sweep) -> Vec<String> {
    match sweep.file.method {
        Method::Random { count, seed } => vec![
            "--count".into(),
            count.to_string(),
            "--seed".into(),
            seed.to_string(),
        ],
        Method::Grid => Vec::new(),
    }
}

/// `manifest.json` of an expanded sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    pub name: String,
    pub kind: Kind,
    pub tasks: usize,
    /// `tasks/task_NNNN.json`, in index order.
    pub files: Vec<String>,
    /// The sweep file it came from.
    pub source: String,
}

/// Writes every resolved task to `out/tasks/task_NNNN.json` and `out/manifest.json` (each file
/// atomically; the manifest last, so a manifest means a complete expansion).
pub fn expand(sweep: &Sweep, out: &Path) -> Result<Manifest> {
    let tasks_dir = out.join("tasks");
    std::fs::create_dir_all(&tasks_dir)
        .with_context(|| format!("{}: cannot create the folder", tasks_dir.display()))?;
    let width = sweep.len().saturating_sub(1).to_string().len().max(4);
    let mut files = Vec::new();
    for i in 0..sweep.len() {
        let task = sweep.task(i)?;
        let name = format!("tasks/task_{i:0width$}.json");
        let text = serde_json::to_string_pretty(&task)? + "\n";
        write_atomic(&out.join(&name), text.as_bytes())
            .with_context(|| format!("{}: cannot write", out.join(&name).display()))?;
        files.push(name);
    }
    let manifest = Manifest {
        name: sweep.name().to_string(),
        kind: sweep.kind,
        tasks: sweep.len(),
        files,
        source: sweep.file.origin.clone(),
    };
    let path = out.join("manifest.json");
    write_atomic(
        &path,
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
    )
    .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(manifest)
}

/// Settings of the Slurm array script.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    /// The `stagewise` binary the nodes run (absolute).
    pub binary: String,
    /// The sweep file (absolute; the nodes read it).
    pub sweep_file: String,
    /// `--root` of the runs (absolute, or an object-store URL).
    pub root: String,
    /// Most array tasks running at once (`--array=0-N%P`).
    pub parallel: Option<usize>,
    pub cpus_per_task: usize,
    /// `--time`, `--partition`, `--mem`, passed through when given.
    pub time: Option<String>,
    pub partition: Option<String>,
    pub mem: Option<String>,
    /// Where Slurm writes each task's output (`%A_%a.out` appended).
    pub log_dir: String,
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// An `sbatch` script with one array element per task.
pub fn slurm_script(sweep: &Sweep, o: &SlurmOptions) -> String {
    let n = sweep.len();
    let array = match o.parallel {
        Some(p) => format!("0-{}%{p}", n.saturating_sub(1)),
        None => format!("0-{}", n.saturating_sub(1)),
    };
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("#SBATCH --job-name={}\n", sh_quote(sweep.name()));
    s += &format!("#SBATCH --array={array}\n");
    s += &format!("#SBATCH --cpus-per-task={}\n", o.cpus_per_task.max(1));
    s += &format!(
        "#SBATCH --output={}\n",
        sh_quote(&format!("{}/%A_%a.out", o.log_dir))
    );
    for (key, v) in [
        ("time", &o.time),
        ("partition", &o.partition),
        ("mem", &o.mem),
    ] {
        if let Some(v) = v {
            s += &format!("#SBATCH --{key}={}\n", sh_quote(v));
        }
    }
    s += &format!(
        "# {} task(s) of sweep {} ({:?}); each runs one task, read from SLURM_ARRAY_TASK_ID.\n",
        n,
        sweep.name(),
        sweep.kind
    );
    s += "# A re-queued or repeated task skips what is done and resumes what is not.\n";
    s += "set -eu\n";
    let random: String = random_args(sweep).iter().map(|a| format!(" {a}")).collect();
    s += &format!(
        "exec {} --threads \"${{SLURM_CPUS_PER_TASK:-{}}}\" run --sweep {} --root {}{random}\n",
        sh_quote(&o.binary),
        o.cpus_per_task.max(1),
        sh_quote(&o.sweep_file),
        sh_quote(&o.root),
    );
    s
}

/// Settings of the Kubernetes Indexed Job.
#[derive(Clone, Debug, Default)]
pub struct K8sOptions {
    /// Container image with `stagewise` on its PATH.
    pub image: String,
    pub parallelism: usize,
    /// `--root` inside the container (a mounted volume path, or an object-store URL).
    pub root: String,
    pub cpus: usize,
    /// The sweep file's text (shipped in a ConfigMap next to the Job).
    pub sweep_text: String,
    /// Name of a Secret whose keys become environment variables (object-store credentials).
    pub env_secret: Option<String>,
}

fn k8s_name(name: &str) -> String {
    let mut out: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out = out.trim_matches('-').to_string();
    out.truncate(52);
    if out.is_empty() {
        "stagewise-sweep".into()
    } else {
        out
    }
}

/// A ConfigMap holding the sweep file and an Indexed Job with one completion per task; each pod
/// reads its index from `JOB_COMPLETION_INDEX`.
pub fn k8s_manifest(sweep: &Sweep, o: &K8sOptions) -> String {
    let name = k8s_name(sweep.name());
    let indent = |text: &str, n: usize| -> String {
        text.lines()
            .map(|l| format!("{}{l}\n", " ".repeat(n)))
            .collect()
    };
    let env_from = match &o.env_secret {
        Some(secret) => format!(
            "          envFrom:\n            - secretRef:\n                name: {secret}\n"
        ),
        None => String::new(),
    };
    format!(
        "# {tasks} task(s) of sweep {sweep_name} ({kind:?}): kubectl apply -f this file.\n\
apiVersion: v1\n\
kind: ConfigMap\n\
metadata:\n  name: {name}-sweep\n\
data:\n  sweep.yaml: |\n{body}\
---\n\
apiVersion: batch/v1\n\
kind: Job\n\
metadata:\n  name: {name}\n\
spec:\n  completionMode: Indexed\n  completions: {tasks}\n  parallelism: {par}\n  backoffLimitPerIndex: 3\n  maxFailedIndexes: {tasks}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: task\n          image: {image}\n          command: [\"stagewise\", \"--threads\", \"{cpus}\", \"run\", \"--sweep\", \"/sweep/sweep.yaml\", \"--root\", {root:?}{random}]\n          resources:\n            requests:\n              cpu: \"{cpus}\"\n{env_from}          volumeMounts:\n            - name: sweep\n              mountPath: /sweep\n      volumes:\n        - name: sweep\n          configMap:\n            name: {name}-sweep\n",
        tasks = sweep.len(),
        sweep_name = sweep.name(),
        kind = sweep.kind,
        body = indent(&o.sweep_text, 4),
        par = o.parallelism.max(1),
        image = o.image,
        root = o.root,
        cpus = o.cpus.max(1),
        random = random_args(sweep)
            .iter()
            .map(|a| format!(", {a:?}"))
            .collect::<String>(),
    )
}
