//! A run folder: the one place that knows its layout.
//!
//! ```text
//! config.yaml                         resolved training config
//! schedule.json                       checkpoint and logging steps
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
//! Every file goes through a [`Storage`] (the local filesystem today), by key relative to the
//! run; every write is atomic, and the append-only tables are cut back on resume.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use stagewise_io::checkpoint::{self, CheckpointMeta};
use stagewise_io::storage::{LocalFs, Storage};
use stagewise_io::table::{CsvTable, Table};
use stagewise_io::tensorboard::EventWriter;
use stagewise_models::RegressionTransformer;
use stagewise_sampling::config::SamplerConfig;
use stagewise_train::TrainConfig;
use stagewise_train::trainer::TrainState;

const CONFIG: &str = "config.yaml";
const SCHEDULE: &str = "schedule.json";
const CHECKPOINTS: &str = "checkpoints";
const OPTIMIZER: &str = "optimizer";
const LLC: &str = "llc";
const ED: &str = "ed";
const STAGES: &str = "stages";
const REPORT: &str = "report";
const EVENTS_PREFIX: &str = "events.out.tfevents.";

/// A folder inside a storage: keys relative to it.
/// A name that becomes one path component of a run folder (a run, a sampler sweep): not empty,
/// not `.` or `..`, no `/` or `\\` (so no absolute path), no control character. `what` says
/// where the name came from in the error.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let bad = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it names a folder above or at the output root")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match bad {
        Some(why) => bail!(
            "{what} {name:?} cannot name a folder: {why}; rename it (a plain name such as `quick` or `sampler-paper`)"
        ),
        None => Ok(()),
    }
}

#[derive(Clone, Debug)]
pub struct Folder {
    storage: Arc<dyn Storage>,
    prefix: String,
}

impl Folder {
    /// A local folder.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Folder {
            storage: Arc::new(LocalFs::new(path)),
            prefix: String::new(),
        }
    }

    /// The folder `prefix` (no trailing `/`; "" for the root) of a storage.
    pub fn new(storage: Arc<dyn Storage>, prefix: &str) -> Self {
        Folder {
            storage,
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// The subfolder `name`.
    pub fn sub(&self, name: &str) -> Folder {
        Folder {
            storage: self.storage.clone(),
            prefix: self.key(name),
        }
    }

    fn key(&self, name: &str) -> String {
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => name.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{name}", self.prefix),
        }
    }

    /// Where a file is, as the user should see it.
    pub fn describe(&self, name: &str) -> String {
        self.storage.describe(&self.key(name))
    }

    /// The folder's own location, as the user should see it.
    pub fn display(&self) -> String {
        self.describe("")
    }

    pub fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.storage.get(&self.key(name))?)
    }

    /// Replaces a file atomically.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.storage
            .put(&self.key(name), bytes)
            .with_context(|| format!("cannot write {}", self.describe(name)))
    }

    /// Removes what interrupted writes left in this folder (and its subfolders with `below`).
    pub fn clean_interrupted(&self, below: bool) -> Result<()> {
        self.storage
            .clean_interrupted(&self.prefix, below)
            .with_context(|| format!("cannot clean {}", self.display()))?;
        Ok(())
    }

    /// Creates a file only if it is absent (`false`: it exists).
    pub fn put_new(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        self.storage
            .put_new(&self.key(name), bytes)
            .with_context(|| format!("cannot write {}", self.describe(name)))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.storage.exists(&self.key(name))
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        self.storage
            .delete(&self.key(name))
            .with_context(|| format!("cannot remove {}", self.describe(name)))
    }

    /// Files under the folder (relative names, at any depth, sorted).
    pub fn list(&self) -> Result<Vec<String>> {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(self
            .storage
            .list(&prefix)?
            .into_iter()
            .map(|k| k[prefix.len()..].to_string())
            .collect())
    }

    /// Whether the folder holds any file.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.list()?.is_empty())
    }

    /// Names of the subfolders that hold a file `file` (e.g. sweeps with an `llc.csv`), sorted.
    pub fn subfolders_with(&self, file: &str) -> Result<Vec<String>> {
        let suffix = format!("/{file}");
        Ok(self
            .list()?
            .into_iter()
            .filter_map(|k| {
                let dir = k.strip_suffix(&suffix)?;
                (!dir.contains('/')).then(|| dir.to_string())
            })
            .collect())
    }

    /// A UTF-8 text file, or `None` when absent.
    pub fn text(&self, name: &str) -> Result<Option<String>> {
        match self.get(name)? {
            None => Ok(None),
            Some(b) => Ok(Some(String::from_utf8(b).map_err(|_| {
                anyhow::anyhow!("{}: not UTF-8 text", self.describe(name))
            })?)),
        }
    }

    /// A numeric CSV table read strictly, or `None` when absent.
    pub fn table(&self, name: &str) -> Result<Option<Table>> {
        match self.get(name)? {
            None => Ok(None),
            Some(b) => Ok(Some(Table::parse(&b, &self.describe(name))?)),
        }
    }

    /// A table with one row per step: as [`Folder::table`], and a step that appears twice is
    /// an error naming the line.
    pub fn step_table(&self, name: &str) -> Result<Option<Table>> {
        let table = self.table(name)?;
        if let Some(t) = &table {
            t.check_unique_steps(&self.describe(name))?;
        }
        Ok(table)
    }

    /// An append-only table (see [`CsvTable::open`]).
    pub fn append_table(
        &self,
        name: &str,
        header: &[String],
        keep_through: Option<u64>,
    ) -> Result<CsvTable> {
        CsvTable::open(self.storage.clone(), &self.key(name), header, keep_through)
            .with_context(|| format!("cannot open {}", self.describe(name)))
    }

    /// Rewrites `<name>.parquet` from `<name>.csv`.
    pub fn parquet_copy(&self, csv: &str) -> Result<()> {
        let table = self
            .table(csv)?
            .with_context(|| format!("{}: missing", self.describe(csv)))?;
        let name = format!("{}.parquet", csv.trim_end_matches(".csv"));
        let bytes = stagewise_tables::parquet_bytes(&table.header, &table.rows)
            .with_context(|| format!("cannot write the Parquet copy of {}", self.describe(csv)))?;
        self.put(&name, &bytes)
    }
}

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

    /// A model checkpoint written for `model`.
    pub fn read_checkpoint(
        &self,
        model: &RegressionTransformer,
        step: u64,
    ) -> Result<(Vec<f32>, CheckpointMeta)> {
        let dir = self.root.sub(CHECKPOINTS);
        let name = Self::step_file(step);
        let path = PathBuf::from(dir.describe(&name));
        let bytes = dir
            .get(&name)?
            .ok_or_else(|| checkpoint::CheckpointError::Io {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
            })?;
        Ok(checkpoint::model_from_bytes(&bytes, &path, model)?)
    }

    /// The weights of checkpoint `step`.
    pub fn weights(&self, model: &RegressionTransformer, step: u64) -> Result<Vec<f32>> {
        Ok(self.read_checkpoint(model, step)?.0)
    }

    pub fn write_checkpoint(
        &self,
        model: &RegressionTransformer,
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
        model: &RegressionTransformer,
        step: u64,
    ) -> Result<(Vec<f32>, Vec<f32>, u64)> {
        let dir = self.root.sub(OPTIMIZER);
        let name = Self::step_file(step);
        let path = PathBuf::from(dir.describe(&name));
        let bytes = dir
            .get(&name)?
            .ok_or_else(|| checkpoint::CheckpointError::Io {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
            })?;
        Ok(checkpoint::optimizer_from_bytes(&bytes, &path, model)?)
    }

    pub fn write_optimizer(
        &self,
        model: &RegressionTransformer,
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

/// An LLC sweep's (or a calibration's) folder.
#[derive(Clone, Debug)]
pub struct LlcDir {
    pub folder: Folder,
}

impl LlcDir {
    pub const TABLE: &'static str = "llc.csv";
    pub const SUMMARY: &'static str = "summary.csv";
    const SAMPLER: &'static str = "sampler.yaml";

    pub fn display(&self) -> String {
        self.folder.display()
    }

    /// Claims the folder for `sampler`: writes its resolved config, or checks that the results
    /// already there were made with the same one.
    pub fn claim(&self, sampler: &SamplerConfig) -> Result<()> {
        let resolved = serde_saphyr::to_string(sampler)?;
        // The same config read back (e.g. `fixed-minibatch` written before it became `dataset`).
        let same = |old: &str| {
            old == resolved
                || serde_saphyr::from_str::<SamplerConfig>(old).is_ok_and(|o| o == *sampler)
        };
        match self.folder.text(Self::SAMPLER)? {
            Some(old) if !same(&old) && self.has_results()? => bail!(
                "{}: earlier results used another sampler config; use another config file name or move {} away",
                self.folder.describe(Self::SAMPLER),
                self.display()
            ),
            Some(old) if !same(&old) => {
                // An earlier call that failed before its first result: nothing to keep.
                for table in [Self::TABLE, Self::SUMMARY] {
                    self.folder.delete(table)?;
                }
                self.folder.put(Self::SAMPLER, resolved.as_bytes())
            }
            Some(_) => Ok(()),
            None => self.folder.put(Self::SAMPLER, resolved.as_bytes()),
        }
    }

    /// Whether the folder holds any estimate (a trace, or a table row).
    fn has_results(&self) -> Result<bool> {
        if self.folder.list()?.iter().any(|k| k.starts_with("traces/")) {
            return Ok(true);
        }
        for table in [Self::TABLE, Self::SUMMARY] {
            if let Some(bytes) = self.folder.get(table)?
                && bytes.iter().filter(|b| **b == b'\n').count() > 1
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn table_location(&self) -> String {
        self.folder.describe(Self::TABLE)
    }

    /// The sweep's table, or `None`.
    pub fn table(&self) -> Result<Option<Table>> {
        self.folder.step_table(Self::TABLE)
    }

    /// The whole rows of the results table `name` (a torn last line, left by a kill, is
    /// dropped; any other damage is an error), which must have `columns` columns.
    pub fn complete_rows(&self, name: &str, columns: usize) -> Result<Vec<Vec<f64>>> {
        let Some(bytes) = self.folder.get(name)?.filter(|b| !b.is_empty()) else {
            return Ok(vec![]);
        };
        let what = self.folder.describe(name);
        let table = Table::parse_appended(&bytes, &what)?;
        if table.header.len() != columns {
            bail!(
                "{what}: {} columns, this sampler config writes {columns} (written by another config?)",
                table.header.len()
            );
        }
        Ok(table.rows)
    }

    /// The results table `name`, opened for appending (rows kept, a torn line dropped).
    pub fn append_table(&self, name: &str, header: &[String]) -> Result<CsvTable> {
        self.folder.append_table(name, header, Some(u64::MAX))
    }

    /// Writes the per-draw traces of checkpoint `step`.
    pub fn write_traces(&self, step: u64, csv: &str) -> Result<()> {
        self.folder
            .put(&format!("traces/{step}.csv"), csv.as_bytes())
    }

    /// Writes the traces of one calibration setting at checkpoint `step`.
    pub fn write_setting_traces(&self, step: u64, setting: &str, csv: &str) -> Result<()> {
        self.folder
            .put(&format!("traces/{step}/{setting}.csv"), csv.as_bytes())
    }

    pub fn parquet_copy(&self, name: &str) -> Result<()> {
        self.folder.parquet_copy(name)
    }

    pub fn location(&self, name: &str) -> String {
        self.folder.describe(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_output_root() {
        for good in ["quick", "sampler-paper", "run-3", ".hidden", "a..b", "..."] {
            check_name("run name", good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "/abs", "..\\x", "a\nb", "tab\t"] {
            let e = check_name("run name", bad).unwrap_err().to_string();
            assert!(
                e.contains("run name") && e.contains("cannot name a folder"),
                "{e}"
            );
        }
    }
}
