//! An LLC sweep's (or a calibration's) folder: its sampler config, table and traces.

use anyhow::{Result, bail};
use stagewise_io::table::{CsvTable, Table};
use stagewise_sampling::config::SamplerConfig;

use super::Folder;

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
