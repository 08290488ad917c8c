//! Run and output locations as the user gives them: a path, `file://...` or `s3://bucket/prefix`
//! (settings from the environment or `./.env`; see `stagewise_store`).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Result;
use stagewise_pipeline::{Folder, RunDir};
use stagewise_store::Settings;

fn settings() -> Result<&'static Settings> {
    static S: OnceLock<Settings> = OnceLock::new();
    if let Some(s) = S.get() {
        return Ok(s);
    }
    let s = Settings::load()?;
    Ok(S.get_or_init(|| s))
}

fn text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

pub fn run_dir(p: &Path) -> Result<RunDir> {
    stagewise_store::run_dir(&text(p), settings()?)
}

pub fn folder(p: &Path) -> Result<Folder> {
    stagewise_store::folder(&text(p), settings()?)
}

/// Whether `p` names an object-store location rather than a local path.
pub fn is_url(p: &Path) -> bool {
    text(p).contains("://") && !text(p).starts_with("file://")
}
