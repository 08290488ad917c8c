//! Where runs live: a plain path or `file://` (the local filesystem) or `s3://bucket/prefix`
//! (Amazon S3 or any S3-compatible server, through `object_store`). Settings come from the
//! environment, or a `.env` file in the current folder for what the environment lacks: the
//! standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT` or `AWS_ENDPOINT_URL`, ...) and the reference's
//! `AWS_BUCKET_NAME` (the bucket of `s3:///prefix`, or of `s3://` alone) and `LOCAL_ROOT` (the
//! folder that relative local roots are under); `gs://bucket/prefix` with the `GOOGLE_*` and
//! `az://container/prefix` with the `AZURE_*` variables of `object_store`. Credentials are passed to the client only:
//! never printed, logged or written.

mod env;
pub mod mlflow;
mod s3;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use stagewise_io::storage::{LocalFs, Storage};
use stagewise_pipeline::{Folder, RunDir};

pub use env::Settings;
pub use s3::ObjectStorage;

/// A parsed location.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
    },
    /// `gs://bucket/prefix` (Google Cloud Storage).
    Gcs(String, String),
    /// `az://container/prefix` (Azure Blob Storage).
    Azure(String, String),
}

/// Parses `location`: `s3://bucket/prefix`, `file:///path`, or a path (relative ones under
/// `LOCAL_ROOT` when that is set).
pub fn parse(location: &str, settings: &Settings) -> Result<Location> {
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket = if bucket.is_empty() {
            match settings.get("AWS_BUCKET_NAME") {
                Some(b) => b.to_string(),
                None => bail!(
                    "{location}: no bucket: write s3://BUCKET/..., or set AWS_BUCKET_NAME (in the environment or .env)"
                ),
            }
        } else {
            bucket.to_string()
        };
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p == "." || p == "..") {
            bail!("{location}: `.` and `..` cannot appear in an object-store prefix");
        }
        return Ok(Location::S3 { bucket, prefix });
    }
    for (scheme, make) in [
        ("gs://", Location::Gcs as fn(String, String) -> Location),
        ("az://", Location::Azure),
        ("azure://", Location::Azure),
    ] {
        if let Some(rest) = location.strip_prefix(scheme) {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("{location}: no bucket (container) after {scheme}");
            }
            let prefix = prefix.trim_matches('/').to_string();
            if prefix.split('/').any(|p| p == "." || p == "..") {
                bail!("{location}: `.` and `..` cannot appear in an object-store prefix");
            }
            return Ok(make(bucket.to_string(), prefix));
        }
    }
    if let Some((scheme, _)) = location.split_once("://")
        && scheme != "file"
    {
        bail!(
            "{location}: unsupported scheme `{scheme}://`; expected a path, file://, s3://, gs:// or az://"
        );
    }
    let path = PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
    let path = match settings.get("LOCAL_ROOT") {
        Some(root) if path.is_relative() => PathBuf::from(root).join(path),
        _ => path,
    };
    Ok(Location::Local(path))
}

/// The storage and key prefix of `location`; an object store is checked on the way (the bucket
/// exists and takes the credentials), so a wrong setting fails here, before anything runs.
pub fn open(location: &str, settings: &Settings) -> Result<(Arc<dyn Storage>, String)> {
    match parse(location, settings)? {
        Location::Local(p) => Ok((Arc::new(LocalFs::new(p)), String::new())),
        Location::S3 { bucket, prefix } => {
            let store = ObjectStorage::s3(&bucket, settings)?;
            store.check(&prefix)?;
            Ok((Arc::new(store), prefix))
        }
        Location::Gcs(bucket, prefix) => {
            let store = ObjectStorage::gcs(&bucket, settings)?;
            store.check(&prefix)?;
            Ok((Arc::new(store), prefix))
        }
        Location::Azure(container, prefix) => {
            let store = ObjectStorage::azure(&container, settings)?;
            store.check(&prefix)?;
            Ok((Arc::new(store), prefix))
        }
    }
}

/// `location` as a folder (see [`open`]).
pub fn folder(location: &str, settings: &Settings) -> Result<Folder> {
    let (storage, prefix) = open(location, settings)?;
    Ok(Folder::new(storage, &prefix))
}

/// `location` as a run folder (see [`open`]).
pub fn run_dir(location: &str, settings: &Settings) -> Result<RunDir> {
    Ok(RunDir::new(folder(location, settings)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let none = Settings::from_pairs(&[]);
        assert_eq!(
            parse("s3://b/runs/x/", &none).unwrap(),
            Location::S3 {
                bucket: "b".into(),
                prefix: "runs/x".into()
            }
        );
        assert_eq!(
            parse("file:///tmp/r", &none).unwrap(),
            Location::Local("/tmp/r".into())
        );
        assert_eq!(
            parse("runs", &none).unwrap(),
            Location::Local("runs".into())
        );
        assert!(
            parse("s3:///runs", &none)
                .unwrap_err()
                .to_string()
                .contains("AWS_BUCKET_NAME")
        );
        assert_eq!(
            parse("gs://b/x/", &none).unwrap(),
            Location::Gcs("b".into(), "x".into())
        );
        assert_eq!(
            parse("az://c/x", &none).unwrap(),
            Location::Azure("c".into(), "x".into())
        );
        assert!(
            parse("hdfs://b/x", &none)
                .unwrap_err()
                .to_string()
                .contains("unsupported scheme")
        );
        assert!(parse("gs:///x", &none).is_err());
        assert!(parse("s3://b/a/../c", &none).is_err());
        let s = Settings::from_pairs(&[("AWS_BUCKET_NAME", "ref"), ("LOCAL_ROOT", "/data")]);
        assert_eq!(
            parse("s3:///runs", &s).unwrap(),
            Location::S3 {
                bucket: "ref".into(),
                prefix: "runs".into()
            }
        );
        assert_eq!(
            parse("runs", &s).unwrap(),
            Location::Local("/data/runs".into())
        );
        assert_eq!(parse("/abs", &s).unwrap(), Location::Local("/abs".into()));
    }
}
