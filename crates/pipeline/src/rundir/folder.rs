//! A folder inside a storage (keys relative to it), and the names that may become one.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use stagewise_io::storage::{LocalFs, Storage};
use stagewise_io::table::{CsvTable, Table};

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

/// A folder inside a storage: keys relative to it.
#[derive(Clone, Debug)]
pub struct Folder {
    pub(super) storage: Arc<dyn Storage>,
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

    pub(super) fn key(&self, name: &str) -> String {
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
