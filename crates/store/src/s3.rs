//! [`Storage`] on an object store: atomic whole-object puts, conditional creates for locks,
//! paginated listing (any number of keys), append as read + write (under the folder's lock).

use std::io;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use stagewise_io::storage::Storage;

use crate::env::Settings;

/// Objects under a bucket; keys are `/`-separated.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
    /// `s3://bucket`, for messages.
    url: String,
    /// The settings, to hide their secrets in messages.
    settings: Settings,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectStorage({})", self.url)
    }
}

impl ObjectStorage {
    /// The bucket `bucket` of S3 or an S3-compatible server, configured by the `AWS_*` settings
    /// (`AWS_ENDPOINT_URL` is read as `AWS_ENDPOINT`; an `http://` endpoint allows plain HTTP).
    pub fn s3(bucket: &str, settings: &Settings) -> Result<Self> {
        let mut b = AmazonS3Builder::new().with_bucket_name(bucket);
        for (k, v) in settings.with_prefix("AWS_") {
            let key = match k {
                "AWS_ENDPOINT_URL" | "AWS_ENDPOINT_URL_S3" => "aws_endpoint".to_string(),
                "AWS_BUCKET_NAME" => continue,
                other => other.to_ascii_lowercase(),
            };
            if let Ok(key) = key.parse::<AmazonS3ConfigKey>() {
                b = b.with_config(key, v);
            }
        }
        let endpoint = settings
            .get("AWS_ENDPOINT")
            .or(settings.get("AWS_ENDPOINT_URL"))
            .or(settings.get("AWS_ENDPOINT_URL_S3"));
        if endpoint.is_some_and(|e| e.starts_with("http://")) {
            b = b.with_allow_http(true);
        }
        if settings.get("AWS_DEFAULT_REGION").is_none() && settings.get("AWS_REGION").is_none() {
            b = b.with_region("us-east-1");
        }
        let store = b
            .build()
            .map_err(|e| anyhow::anyhow!("s3://{bucket}: {}", settings.redact(&e.to_string())))?;
        Self::new(Arc::new(store), format!("s3://{bucket}"), settings)
    }

    /// The bucket `bucket` of Google Cloud Storage, configured by the `GOOGLE_*` settings
    /// (`GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_APPLICATION_CREDENTIALS`, ...).
    pub fn gcs(bucket: &str, settings: &Settings) -> Result<Self> {
        let mut b = GoogleCloudStorageBuilder::new().with_bucket_name(bucket);
        for (k, v) in settings.with_prefix("GOOGLE_") {
            if let Ok(key) = k.to_ascii_lowercase().parse::<GoogleConfigKey>() {
                b = b.with_config(key, v);
            }
        }
        let store = b
            .build()
            .map_err(|e| anyhow::anyhow!("gs://{bucket}: {}", settings.redact(&e.to_string())))?;
        Self::new(Arc::new(store), format!("gs://{bucket}"), settings)
    }

    /// The container `container` of Azure Blob Storage, configured by the `AZURE_*` settings
    /// (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, ...).
    pub fn azure(container: &str, settings: &Settings) -> Result<Self> {
        let mut b = MicrosoftAzureBuilder::new().with_container_name(container);
        for (k, v) in settings.with_prefix("AZURE_") {
            if let Ok(key) = k.to_ascii_lowercase().parse::<AzureConfigKey>() {
                b = b.with_config(key, v);
            }
        }
        let store = b.build().map_err(|e| {
            anyhow::anyhow!("az://{container}: {}", settings.redact(&e.to_string()))
        })?;
        Self::new(Arc::new(store), format!("az://{container}"), settings)
    }

    fn new(store: Arc<dyn ObjectStore>, url: String, settings: &Settings) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start the object-store client's runtime")?;
        Ok(ObjectStorage {
            store,
            rt,
            url,
            settings: settings.clone(),
        })
    }

    /// One request to the bucket: a clear error when it does not exist or refuses the
    /// credentials.
    pub fn check(&self, prefix: &str) -> Result<()> {
        let p = ObjPath::from(prefix);
        let r = self.rt.block_on(self.store.list_with_delimiter(Some(&p)));
        match r {
            Ok(_) => Ok(()),
            Err(e) => bail!("{}", self.explain(&e)),
        }
    }

    /// An object-store error as a user should read it (no secret in it).
    fn explain(&self, e: &object_store::Error) -> String {
        let text = self.settings.redact(&e.to_string());
        let hint = if text.contains("NoSuchBucket")
            || text.contains("does not exist") && text.contains("bucket")
        {
            "the bucket does not exist (create it, or fix the bucket name / AWS_BUCKET_NAME)"
        } else if [
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
            "403",
        ]
        .iter()
        .any(|s| text.contains(s))
        {
            "the server refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (in the environment or .env; their values are not shown)"
        } else if text.contains("error sending request")
            || text.contains("Connection refused")
            || text.contains("dns error")
        {
            "cannot reach the server: check AWS_ENDPOINT / AWS_ENDPOINT_URL and the network"
        } else {
            ""
        };
        if hint.is_empty() {
            format!("{}: {text}", self.url)
        } else {
            format!("{}: {hint} ({text})", self.url)
        }
    }

    fn io_err(&self, key: &str, e: object_store::Error) -> io::Error {
        io::Error::other(format!("{}/{key}: {}", self.url, self.explain(&e)))
    }

    fn path(key: &str) -> ObjPath {
        ObjPath::from(key)
    }
}

impl Storage for ObjectStorage {
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let p = Self::path(key);
        let r = self.rt.block_on(async {
            match self.store.get(&p).await {
                Ok(got) => got.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        r.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| self.io_err(key, e))
    }

    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let p = Self::path(key);
        let payload = PutPayload::from(bytes.to_vec());
        self.rt
            .block_on(self.store.put(&p, payload))
            .map(drop)
            .map_err(|e| self.io_err(key, e))
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        let p = Self::path(key);
        let payload = PutPayload::from(bytes.to_vec());
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.rt.block_on(self.store.put_opts(&p, payload, opts)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.io_err(key, e)),
        }
    }

    fn append(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        // Objects cannot grow in place: read and write back whole (the caller holds the lock).
        let mut all = self.get(key)?.unwrap_or_default();
        all.extend_from_slice(bytes);
        self.put(key, &all)
    }

    fn sync(&self, _key: &str) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let p = ObjPath::from(prefix.trim_end_matches('/'));
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store.list(Some(&p)).try_collect())
            .map_err(|e| self.io_err(prefix, e))?;
        let mut keys: Vec<String> = metas
            .into_iter()
            .map(|m| m.location.to_string())
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        match self.rt.block_on(self.store.delete(&Self::path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io_err(key, e)),
        }
    }

    fn describe(&self, key: &str) -> String {
        if key.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{key}", self.url)
        }
    }
}
