//! Checkpoints of statewright on object storage: a [`CheckpointStore`] on any store of the
//! [`object_store`] crate (S3 and S3-compatible servers with the `s3` feature, Google Cloud
//! Storage with `gcs`, Azure with `azure`), and [`open_url`], which opens a
//! [`CheckpointStorage`] by URL (`file:///path`, `s3://bucket/prefix`).
//!
//! The commit protocol is the one every [`CheckpointStore`] gets: data objects first, then the
//! manifest with a conditional put (S3's `If-None-Match: *`), so two writers never both commit
//! and a checkpoint that was never committed is never listed. Large objects are uploaded in
//! parts of [`PART_SIZE`] bytes, holding one part in memory; a restore reads the byte ranges
//! it needs.
//!
//! ```no_run
//! use statewright::prelude::*;
//!
//! // Credentials, region and endpoint from the usual `AWS_*` variables, or as options.
//! let storage = statewright_object_store::open_url(
//!     "s3://my-bucket/jobs/fraud",
//!     [("aws_endpoint", "http://127.0.0.1:8333"), ("aws_allow_http", "true")],
//! )?;
//! # let _ = storage;
//! # Ok::<(), statewright::Error>(())
//! ```

use std::future::Future;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(feature = "s3")]
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use statewright_core::store::{CheckpointStore, ObjectWriter, upload_file, validate_object_name};
use statewright_core::{CheckpointStorage, Error, Result};

/// The size of the parts a large object is uploaded in (S3 needs at least 5 MiB but for the
/// last one); an object no larger is written with one request.
pub const PART_SIZE: usize = 8 << 20;

/// A [`CheckpointStore`] on an [`ObjectStore`], under a prefix.
///
/// The calls are blocking: each runs on a small runtime of the store's own, so they work from
/// any thread, a tokio worker or the checkpointer's blocking pool included.
#[derive(Debug, Clone)]
pub struct ObjectStoreStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside an asynchronous task (a job that
        // drops its checkpointer in `async fn main`); shutting it down in the background
        // never blocks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl ObjectStoreStore {
    /// A store of checkpoints under `prefix` (`""` for the root) of `store`; `url` names it in
    /// errors (`s3://bucket/prefix`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a prefix that is not a valid object name; an I/O error when
    /// the runtime cannot start.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: impl Into<String>) -> Result<Self> {
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            validate_object_name(&prefix)?;
        }
        let url = url.into();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("statewright-object-store")
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                path: PathBuf::from(&url),
                source: e,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                prefix,
                url,
                runtime: Some(runtime),
            }),
        })
    }

    /// The object store.
    #[must_use]
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    fn path(&self, name: &str) -> Result<ObjectPath> {
        validate_object_name(name)?;
        self.full_path(name)
    }

    fn full_path(&self, name: &str) -> Result<ObjectPath> {
        let full = if self.inner.prefix.is_empty() {
            name.to_owned()
        } else if name.is_empty() {
            self.inner.prefix.clone()
        } else {
            format!("{}/{name}", self.inner.prefix)
        };
        ObjectPath::parse(&full).map_err(|_| Error::InvalidName {
            what: "object",
            name: full.clone(),
            reason: "not a valid object path",
        })
    }
}

impl Inner {
    /// Runs `future` on the store's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        name: &str,
        future: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if let Some(runtime) = &self.runtime {
            runtime.spawn(async move {
                let _ = tx.send(future.await);
            });
        }
        match rx.recv() {
            Ok(result) => result.map_err(|e| self.error(name, e)),
            Err(_) => Err(self.error(
                name,
                object_store::Error::Generic {
                    store: "statewright",
                    source: "the request was dropped before it finished".into(),
                },
            )),
        }
    }

    fn locate(&self, name: &str) -> PathBuf {
        if name.is_empty() {
            PathBuf::from(&self.url)
        } else {
            PathBuf::from(format!("{}/{name}", self.url.trim_end_matches('/')))
        }
    }

    /// An object store error as an I/O error naming the object, its kind kept.
    fn error(&self, name: &str, e: object_store::Error) -> Error {
        let kind = match &e {
            object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
            object_store::Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
            object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. } => io::ErrorKind::Unsupported,
            // Some requests (listing) report a refusal as a generic error carrying the status.
            e if refused(e) => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        };
        Error::Io {
            path: self.locate(name),
            source: io::Error::new(kind, e),
        }
    }
}

/// Whether the server refused the credentials (HTTP 401 or 403).
fn refused(e: &object_store::Error) -> bool {
    let text = e.to_string();
    text.contains("403 Forbidden") || text.contains("401 Unauthorized")
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl CheckpointStore for ObjectStoreStore {
    fn locate(&self, name: &str) -> PathBuf {
        self.inner.locate(name)
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>> {
        let path = self.path(name)?;
        Ok(Box::new(PartWriter {
            inner: Arc::clone(&self.inner),
            name: name.to_owned(),
            path,
            buf: Vec::new(),
            upload: None,
            bytes: 0,
            failed: false,
        }))
    }

    fn put_file(&self, name: &str, from: &Path) -> Result<u64> {
        upload_file(self, name, from)
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.path(name)?;
        let store = Arc::clone(&self.inner.store);
        let payload = PutPayload::from(bytes.to_vec());
        self.inner.run(name, async move {
            match store
                .put_opts(&path, payload, PutOptions::from(PutMode::Create))
                .await
            {
                Ok(_) => Ok(true),
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let path = self.path(name)?;
        if range.end < range.start {
            return Err(Error::Io {
                path: self.locate(name),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the range ends before it starts",
                ),
            });
        }
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = range.end - range.start;
        let store = Arc::clone(&self.inner.store);
        let bytes = self
            .inner
            .run(name, async move { store.get_range(&path, range).await })?;
        // A range past the end is answered with what there is; a short read is an error here,
        // as on a file.
        if bytes.len() as u64 != wanted {
            return Err(Error::Io {
                path: self.locate(name),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} of {wanted} bytes: the range ends past the object",
                        bytes.len()
                    ),
                ),
            });
        }
        Ok(bytes.to_vec())
    }

    fn head(&self, name: &str) -> Result<Option<u64>> {
        let path = self.path(name)?;
        let store = Arc::clone(&self.inner.store);
        self.inner.run(name, async move {
            match store.head(&path).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let sub = match prefix.strip_suffix('/') {
            Some(p) => {
                validate_object_name(p)?;
                p
            }
            None if prefix.is_empty() => "",
            None => {
                return Err(Error::InvalidName {
                    what: "object prefix",
                    name: prefix.to_owned(),
                    reason: "must be empty or end with `/`",
                });
            }
        };
        let root = self.full_path("")?;
        let under = self.full_path(sub)?;
        let store = Arc::clone(&self.inner.store);
        let locations = self.inner.run(prefix, async move {
            let listed = if under.as_ref().is_empty() {
                store.list(None)
            } else {
                store.list(Some(&under))
            };
            listed
                .map_ok(|meta| meta.location)
                .try_collect::<Vec<_>>()
                .await
        })?;
        let mut out: Vec<String> = locations
            .iter()
            .filter_map(|location| {
                let name = if root.as_ref().is_empty() {
                    location.as_ref().to_owned()
                } else {
                    location
                        .prefix_match(&root)?
                        .map(|part| part.as_ref().to_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                };
                validate_object_name(&name).is_ok().then_some(name)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        let store = Arc::clone(&self.inner.store);
        self.inner.run(name, async move {
            match store.delete(&path).await {
                Err(e) if !is_not_found(&e) => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn local_path(&self, _name: &str) -> Option<PathBuf> {
        None
    }
}

/// An object being written: in one request when it fits in a part, otherwise as a multipart
/// upload, a part at a time. Dropped unfinished, it aborts the upload.
struct PartWriter {
    inner: Arc<Inner>,
    name: String,
    path: ObjectPath,
    buf: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    bytes: u64,
    /// A part failed to upload: the object can no longer be finished.
    failed: bool,
}

impl PartWriter {
    /// Uploads the buffered bytes as the next part, starting the upload first if needed.
    fn upload_part(&mut self) -> Result<()> {
        let upload = match self.upload.take() {
            Some(upload) => upload,
            None => {
                let store = Arc::clone(&self.inner.store);
                let path = self.path.clone();
                self.inner
                    .run(&self.name, async move { store.put_multipart(&path).await })?
            }
        };
        let mut upload = upload;
        let part = upload.put_part(PutPayload::from(std::mem::take(&mut self.buf)));
        self.upload = Some(upload);
        self.inner.run(&self.name, part)
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(
                "an earlier part of this object failed to upload",
            ));
        }
        let room = PART_SIZE.saturating_sub(self.buf.len()).max(1);
        let n = data.len().min(room);
        if self.buf.capacity() == 0 {
            self.buf.reserve(PART_SIZE.min(1 << 20));
        }
        self.buf.extend_from_slice(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() >= PART_SIZE {
            let uploaded = self.upload_part();
            self.failed = uploaded.is_err();
            uploaded.map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for PartWriter {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        if self.failed {
            return Err(self.inner.error(
                &self.name,
                object_store::Error::Generic {
                    store: "statewright",
                    source: "a part of this object failed to upload".into(),
                },
            ));
        }
        let bytes = self.bytes;
        match self.upload.take() {
            None => {
                let store = Arc::clone(&self.inner.store);
                let path = self.path.clone();
                let payload = PutPayload::from(std::mem::take(&mut self.buf));
                self.inner
                    .run(&self.name, async move { store.put(&path, payload).await })?;
            }
            Some(upload) => {
                self.upload = Some(upload);
                if !self.buf.is_empty() {
                    self.upload_part()?;
                }
                if let Some(mut upload) = self.upload.take() {
                    let result = self.inner.run(&self.name, async move {
                        let done = upload.complete().await;
                        if done.is_err() {
                            let _ = upload.abort().await;
                        }
                        done
                    });
                    result?;
                }
            }
        }
        Ok(bytes)
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            let _ = self
                .inner
                .run(&self.name, async move { upload.abort().await });
        }
    }
}

/// Opens a checkpoint storage by URL: `file:///path` (a local directory, as
/// [`CheckpointStorage::open`]), `s3://bucket/prefix` (feature `s3`: credentials, region and
/// endpoint from the `AWS_*` environment variables, then `options`, e.g.
/// `("aws_endpoint", "http://127.0.0.1:8333")`), or any other URL the `object_store` crate
/// parses, with its options.
///
/// Requests are retried with randomised exponential backoff (transient failures: a refused
/// connection, a 5xx answer; up to 10 times within 60 s, enough for a server that restarts),
/// and time out after 30 s each, so an unreachable server is an error, not a hang.
///
/// # Errors
///
/// [`Error::Unsupported`] for a scheme this build does not offer, [`Error::InvalidName`] for a
/// URL that cannot be parsed, and the errors of building the store.
pub fn open_url<I, K, V>(url: &str, options: I) -> Result<CheckpointStorage>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Into<String>,
{
    let parsed = url::Url::parse(url).map_err(|_| Error::InvalidName {
        what: "checkpoint storage URL",
        name: url.to_owned(),
        reason: "not a URL (`file:///path`, `s3://bucket/prefix`)",
    })?;
    if parsed.scheme() == "file" {
        let path = parsed.to_file_path().map_err(|()| Error::InvalidName {
            what: "checkpoint storage URL",
            name: url.to_owned(),
            reason: "not a local path",
        })?;
        return CheckpointStorage::open(path);
    }
    let failed = |e: object_store::Error| Error::Io {
        path: PathBuf::from(url),
        source: io::Error::other(e),
    };
    let store: Arc<dyn ObjectStore> = match parsed.scheme() {
        #[cfg(feature = "s3")]
        "s3" | "s3a" => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let mut builder = AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry())
                .with_client_options(client_options());
            for (key, value) in options {
                let key: AmazonS3ConfigKey = key.as_ref().parse().map_err(failed)?;
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(failed)?)
        }
        _ => {
            let (store, _) =
                object_store::parse_url_opts(&parsed, options).map_err(|e| match e {
                    object_store::Error::Generic { .. }
                    | object_store::Error::NotImplemented { .. } => Error::Unsupported {
                        backend: "object-store",
                        what: format!(
                            "`{}://` locations in this build (enable the feature of its store: \
                                 `s3`, `gcs` or `azure`)",
                            parsed.scheme()
                        ),
                    },
                    e => failed(e),
                })?;
            Arc::from(store)
        }
    };
    let prefix = parsed.path().trim_matches('/').to_owned();
    Ok(CheckpointStorage::from_store(Arc::new(
        ObjectStoreStore::new(store, &prefix, url)?,
    )))
}

#[cfg(feature = "s3")]
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        // Randomised, growing about threefold a step from 0.2 s, at most 10 s apart: 10
        // retries span some 20 to 60 s, long enough for a server that restarts.
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            base: 3.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(60),
    }
}

#[cfg(feature = "s3")]
fn client_options() -> object_store::ClientOptions {
    let allow_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true" || v == "1");
    object_store::ClientOptions::new()
        .with_timeout(Duration::from_secs(30))
        .with_connect_timeout(Duration::from_secs(5))
        .with_allow_http(allow_http)
}

/// What the tests against a real S3 server share: the server's endpoint and fresh prefixes of
/// its bucket. `bash .ci/test` starts the server (SeaweedFS on 127.0.0.1) and sets
/// `STATEWRIGHT_S3_ENDPOINT`, and `STATEWRIGHT_REQUIRE_S3` so that a missing server fails the
/// tests instead of skipping them.
#[doc(hidden)]
pub mod testing {
    use statewright_core::{CheckpointStorage, Result};

    /// The endpoint; `Ok(None)` where the tests may skip (said on standard error), `Err` where
    /// they must not.
    ///
    /// # Errors
    ///
    /// When `STATEWRIGHT_REQUIRE_S3` is set and `STATEWRIGHT_S3_ENDPOINT` is not.
    pub fn s3_endpoint() -> std::result::Result<Option<String>, String> {
        match std::env::var("STATEWRIGHT_S3_ENDPOINT") {
            Ok(e) if !e.is_empty() => Ok(Some(e)),
            _ if std::env::var_os("STATEWRIGHT_REQUIRE_S3").is_some() => Err(
                "STATEWRIGHT_REQUIRE_S3 is set but STATEWRIGHT_S3_ENDPOINT is not: the S3 \
                 server did not start (see `bash .ci/test`)"
                    .into(),
            ),
            _ => {
                eprintln!("skipped: STATEWRIGHT_S3_ENDPOINT is not set (`bash .ci/test` sets it)");
                Ok(None)
            }
        }
    }

    /// A URL of the test bucket no other test or run uses.
    #[must_use]
    pub fn unique_url(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "s3://statewright/tests/{name}-{}-{nanos}",
            std::process::id()
        )
    }

    /// A storage at [`unique_url`] on the server at `endpoint`.
    ///
    /// # Errors
    ///
    /// As [`open_url`](crate::open_url).
    pub fn s3_storage(endpoint: &str, name: &str) -> Result<CheckpointStorage> {
        crate::open_url(
            &unique_url(name),
            [("aws_endpoint", endpoint), ("aws_allow_http", "true")],
        )
    }
}
