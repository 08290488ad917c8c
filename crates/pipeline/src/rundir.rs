//! A run folder: the one place that knows its layout.
//!
//! ```text
//! config.yaml                         resolved training config
//! schedule.json                       checkpoint and logging steps
//! complete.json                       written last, when training has run every step
//! checkpoints/<step>.safetensors      model state dict (PyTorch names and shapes)
//! optimizer/<step>.safetensors        Adam moments (the two newest checkpoints)
//! metrics.csv, metrics.parquet        evaluations at the logging steps
//! train.csv, train.parquet            batch loss and lr every 100 steps
//! events.out.tfevents.*               TensorBoard scalars (both tables)
//! llc/<sampler>/                      sampler.yaml, llc.csv, llc.parquet, traces/<step>.csv
//! llc/calibrate-<sampler>/            sampler.yaml, summary.csv, traces/<step>/<setting>.csv
//! ed/<outputs>/                       scores.csv, explained_variance.csv, components, evolutes...
//! stages/<sampler>/                   gp.csv, critical_points.csv, stages.csv
//! indicators.csv, indicators.parquet  structural indicators per checkpoint
//! report/                             index.html and PNG figures
//! ```
//!
//! Every file goes through a [`Storage`](stagewise_io::storage::Storage) (the local filesystem
//! today), by key relative to the run; every write is atomic, and the append-only tables are cut
//! back on resume.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use stagewise_io::checkpoint::{self, CheckpointMeta};
use stagewise_io::table::{CsvTable, Table};
use stagewise_io::tensorboard::EventWriter;
use stagewise_models::StateDict;
use stagewise_train::TrainConfig;
use stagewise_train::trainer::TrainState;

mod folder;
mod llc_dir;

pub use folder::{Folder, check_name};
pub use llc_dir::LlcDir;

const CONFIG: &str = "config.yaml";
const SCHEDULE: &str = "schedule.json";
const COMPLETE: &str = "complete.json";
const CHECKPOINTS: &str = "checkpoints";
const OPTIMIZER: &str = "optimizer";
const LLC: &str = "llc";
const ED: &str = "ed";
const STAGES: &str = "stages";
const REPORT: &str = "report";
const EVENTS_PREFIX: &str = "events.out.tfevents.";

/// Steps of the files `<step>.safetensors` in a folder listing, sorted.
fn steps_in(names: &[String]) -> Vec<u64> {
    let mut steps: Vec<u64> = names
        .iter()
        .filter_map(|n| n.strip_suffix(".safetensors")?.parse().ok())
        .collect();
    steps.sort_unstable();
    steps
}

/// A training run's folder.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: Folder,
}

impl RunDir {
    /// The run folder at a local path.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        RunDir {
            root: Folder::local(path),
        }
    }

    /// A run folder in any storage.
    pub fn new(root: Folder) -> Self {
        RunDir { root }
    }

    pub fn root(&self) -> &Folder {
        &self.root
    }

    /// The run's location as the user should see it.
    pub fn display(&self) -> String {
        self.root.display()
    }

    /// The run's name (its last path component).
    pub fn name(&self) -> String {
        let d = self.display();
        Path::new(&d)
            .file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned())
    }

    // -- config and schedule --

    pub fn has_config(&self) -> bool {
        self.root.exists(CONFIG)
    }

    pub fn config_location(&self) -> String {
        self.root.describe(CONFIG)
    }

    /// The resolved training config; an error when the folder has none.
    pub fn read_config(&self) -> Result<TrainConfig> {
        let path = PathBuf::from(self.config_location());
        let text = self.root.text(CONFIG)?.with_context(|| {
            format!(
                "cannot read {}; is {} a stagewise run folder?",
                path.display(),
                self.display()
            )
        })?;
        Ok(stagewise_io::config::parse_plain(&text, &path)?)
    }

    /// The text of `config.yaml`, if the folder has one.
    pub fn config_text(&self) -> Result<Option<String>> {
        self.root.text(CONFIG)
    }

    /// Whether the run is a language-model run (its config has a `transformer_config`).
    pub fn is_language_run(&self) -> bool {
        self.config_text()
            .ok()
            .flatten()
            .is_some_and(|t| t.lines().any(|l| l.starts_with("transformer_config:")))
    }

    /// Whether the run is a multitask sparse parity run (its config has `num_task_bits`).
    pub fn is_parity_run(&self) -> bool {
        self.config_text()
            .ok()
            .flatten()
            .is_some_and(|t| t.lines().any(|l| l.starts_with("num_task_bits:")))
    }

    /// Writes `config.yaml` from YAML text (a language-model run's config).
    pub fn write_config_text(&self, yaml: &str) -> Result<()> {
        self.root.put(CONFIG, yaml.as_bytes())
    }

    pub fn write_config(&self, cfg: &TrainConfig) -> Result<()> {
        self.root
            .put(CONFIG, stagewise_io::config::to_yaml(cfg).as_bytes())
    }

    /// Removes what a killed training left half-written (in the run folder, its checkpoints
    /// and its optimizer states).
    pub fn clean_interrupted_training(&self) -> Result<()> {
        for folder in [
            self.root.clone(),
            self.root.sub(CHECKPOINTS),
            self.root.sub(OPTIMIZER),
        ] {
            folder.clean_interrupted(false)?;
        }
        Ok(())
    }

    /// Whether training ran to its last step (`complete.json`, written last).
    pub fn is_complete(&self) -> bool {
        self.root.exists(COMPLETE)
    }

    /// Marks the training as finished, after everything else is written.
    pub fn mark_complete(&self, num_steps: u64) -> Result<()> {
        self.root.put(
            COMPLETE,
            format!("{{\"num_steps\": {num_steps}}}\n").as_bytes(),
        )
    }

    /// `schedule.json`: the checkpoint and logging steps of the run.
    pub fn write_schedule(&self, checkpoint_steps: &[u64], logging_steps: &[u64]) -> Result<()> {
        let schedule = serde_json::json!({ "checkpoint_steps": checkpoint_steps, "logging_steps": logging_steps });
        self.root
            .put(SCHEDULE, serde_json::to_string(&schedule)?.as_bytes())
    }

    // -- checkpoints and optimizer states --

    /// Where the checkpoints are, for messages.
    pub fn checkpoints_location(&self) -> String {
        self.root.describe(CHECKPOINTS)
    }

    /// Steps with a model checkpoint, sorted.
    pub fn checkpoint_steps(&self) -> Result<Vec<u64>> {
        Ok(steps_in(&self.root.sub(CHECKPOINTS).list()?))
    }

    fn step_file(step: u64) -> String {
        format!("{step}.safetensors")
    }

    pub fn checkpoint_location(&self, step: u64) -> String {
        self.root.sub(CHECKPOINTS).describe(&Self::step_file(step))
    }

    /// The bytes of `<folder>/<step>.safetensors` and its location (for errors).
    fn step_bytes(&self, folder: &str, step: u64) -> Result<(Vec<u8>, PathBuf)> {
        let dir = self.root.sub(folder);
        let name = Self::step_file(step);
        let path = PathBuf::from(dir.describe(&name));
        let bytes = dir
            .get(&name)?
            .ok_or_else(|| checkpoint::CheckpointError::Io {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
            })?;
        Ok((bytes, path))
    }

    /// A model checkpoint written for `model`.
    pub fn read_checkpoint(
        &self,
        model: &dyn StateDict,
        step: u64,
    ) -> Result<(Vec<f32>, CheckpointMeta)> {
        let (bytes, path) = self.step_bytes(CHECKPOINTS, step)?;
        Ok(checkpoint::model_from_bytes(&bytes, &path, model)?)
    }

    /// The weights of checkpoint `step`.
    pub fn weights(&self, model: &dyn StateDict, step: u64) -> Result<Vec<f32>> {
        Ok(self.read_checkpoint(model, step)?.0)
    }

    pub fn write_checkpoint(
        &self,
        model: &dyn StateDict,
        params: &[f32],
        meta: &CheckpointMeta,
    ) -> Result<()> {
        let path = PathBuf::from(self.checkpoint_location(meta.step));
        let bytes = checkpoint::model_to_bytes(&path, model, params, meta)?;
        self.root
            .sub(CHECKPOINTS)
            .put(&Self::step_file(meta.step), &bytes)
    }

    /// Steps with an optimizer state, sorted.
    pub fn optimizer_steps(&self) -> Result<Vec<u64>> {
        Ok(steps_in(&self.root.sub(OPTIMIZER).list()?))
    }

    /// Adam's state saved with checkpoint `step`: `(exp_avg, exp_avg_sq, steps_done)`.
    pub fn read_optimizer(
        &self,
        model: &dyn StateDict,
        step: u64,
    ) -> Result<(Vec<f32>, Vec<f32>, u64)> {
        let (bytes, path) = self.step_bytes(OPTIMIZER, step)?;
        Ok(checkpoint::optimizer_from_bytes(&bytes, &path, model)?)
    }

    pub fn write_optimizer(
        &self,
        model: &dyn StateDict,
        step: u64,
        state: &TrainState<f32>,
    ) -> Result<()> {
        let dir = self.root.sub(OPTIMIZER);
        let name = Self::step_file(step);
        let bytes =
            checkpoint::optimizer_to_bytes(&PathBuf::from(dir.describe(&name)), model, state)?;
        dir.put(&name, &bytes)
    }

    /// Removes all but the `keep` newest optimizer states.
    pub fn prune_optimizer_states(&self, keep: usize) -> Result<()> {
        let steps = self.optimizer_steps()?;
        let dir = self.root.sub(OPTIMIZER);
        for step in &steps[..steps.len().saturating_sub(keep)] {
            dir.delete(&Self::step_file(*step))?;
        }
        Ok(())
    }

    // -- training tables and TensorBoard --

    /// The evaluation table, opened for appending (`keep_through`: see [`CsvTable::open`]).
    pub fn metrics_log(&self, header: &[String], keep_through: Option<u64>) -> Result<CsvTable> {
        self.root.append_table("metrics.csv", header, keep_through)
    }

    /// The batch-loss table, opened for appending.
    pub fn train_log(&self, header: &[String], keep_through: Option<u64>) -> Result<CsvTable> {
        self.root.append_table("train.csv", header, keep_through)
    }

    pub fn metrics_location(&self) -> String {
        self.root.describe("metrics.csv")
    }

    pub fn train_location(&self) -> String {
        self.root.describe("train.csv")
    }

    /// The evaluation table, or `None` when the run has none.
    pub fn metrics(&self) -> Result<Option<Table>> {
        self.root.step_table("metrics.csv")
    }

    /// The batch-loss table, or `None`.
    pub fn train_table(&self) -> Result<Option<Table>> {
        self.root.step_table("train.csv")
    }

    /// Rewrites the Parquet copies of the metrics and batch-loss tables.
    pub fn export_training_tables(&self) -> Result<()> {
        self.root.parquet_copy("metrics.csv")?;
        self.root.parquet_copy("train.csv")
    }

    /// A fresh TensorBoard event file; older ones are removed, so that TensorBoard never shows
    /// rows from beyond a resumed checkpoint.
    pub fn fresh_events(&self) -> Result<Events> {
        for name in self.root.list()? {
            if name.starts_with(EVENTS_PREFIX) && !name.contains('/') {
                self.root.delete(&name)?;
            }
        }
        let writer = EventWriter::new();
        let mut events = Events {
            folder: self.root.clone(),
            writer,
        };
        events.write()?;
        Ok(events)
    }

    // -- LLC sweeps --

    /// The folder of the LLC sweep with sampler config `name`.
    pub fn llc(&self, name: &str) -> LlcDir {
        LlcDir {
            folder: self.root.sub(LLC).sub(name),
        }
    }

    /// The folder of a calibration with sampler config `name`.
    pub fn calibration(&self, name: &str) -> LlcDir {
        self.llc(&format!("calibrate-{name}"))
    }

    /// Names of the LLC sweeps that have a table, sorted.
    pub fn llc_sweeps(&self) -> Result<Vec<String>> {
        self.root.sub(LLC).subfolders_with(LlcDir::TABLE)
    }

    pub fn llc_location(&self) -> String {
        self.root.describe(LLC)
    }

    // -- analyses --

    /// The essential-dynamics folder of one output kind (`full` or `ys`).
    pub fn ed(&self, outputs: &str) -> Folder {
        self.root.sub(ED).sub(outputs)
    }

    /// The stage folder of the LLC sweep `name`.
    pub fn stages(&self, name: &str) -> Folder {
        self.root.sub(STAGES).sub(name)
    }

    /// Names of the sweeps with a stage table.
    pub fn staged_sweeps(&self) -> Result<Vec<String>> {
        self.root.sub(STAGES).subfolders_with("stages.csv")
    }

    pub fn write_indicators(&self, csv: &str) -> Result<()> {
        self.root.put("indicators.csv", csv.as_bytes())?;
        self.root.parquet_copy("indicators.csv")
    }

    pub fn indicators_location(&self) -> String {
        self.root.describe("indicators.csv")
    }

    pub fn indicators(&self) -> Result<Option<Table>> {
        self.root.step_table("indicators.csv")
    }

    /// The report's folder.
    pub fn report(&self) -> Folder {
        self.root.sub(REPORT)
    }

    /// A file of the run's own (e.g. a sampler config written by `reproduce`).
    pub fn file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.root.get(name)
    }

    pub fn put_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.root.put(name, bytes)
    }
}

/// A TensorBoard event file of the run; each event is appended as it is added.
pub struct Events {
    folder: Folder,
    writer: EventWriter,
}

impl Events {
    /// One event holding all `scalars` at `step`.
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f32)]) -> Result<()> {
        self.writer.scalars(step, scalars);
        self.write()
    }

    fn write(&mut self) -> Result<()> {
        let bytes = self.writer.take();
        let key = self.folder.key(&self.writer.name);
        self.folder
            .storage
            .append(&key, &bytes)
            .with_context(|| format!("cannot write {}", self.folder.describe(&self.writer.name)))
    }

    /// Makes the events written so far durable.
    pub fn sync(&self) -> Result<()> {
        let key = self.folder.key(&self.writer.name);
        Ok(self.folder.storage.sync(&key)?)
    }
}
