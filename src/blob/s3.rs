//! Blobs as objects in a bucket of any S3-compatible store (AWS S3, SeaweedFS, MinIO, Garage, Ceph
//! RGW...), through the `object_store` crate: `<prefix>/blobs/<shard>/<id>`
//! (the shard is the id's last two hex digits, [`BlobId::shard`]).
//!
//! Writes stream in bounded memory. A body is gathered in memory up to one part
//! ([`DEFAULT_PART_SIZE`]); a body that fits is sent with one `PUT` when the writer finishes. A
//! larger one becomes a multipart upload: each full part is sent as soon as it is full, with at
//! most [`MAX_PARTS_IN_FLIGHT`] part requests running while the next part fills, so a writer holds
//! at most `(MAX_PARTS_IN_FLIGHT + 1) × part size` bytes however large the body is (24 MiB with
//! the defaults). `finish` returns only after S3 has answered the `PUT` or the
//! `CompleteMultipartUpload`, and nothing is visible under the blob's name before that: an S3 write
//! is all or nothing.
//!
//! Durability is the server's: AWS S3 answers a `PUT` or a `CompleteMultipartUpload` only once
//! the object is stored redundantly, and reads after it see it. Another S3-compatible server is
//! as durable as its own configuration makes it (SeaweedFS, for example, fsyncs a write only where
//! its filer configuration asks for it). Every request body is signed with its SHA-256
//! (`x-amz-content-sha256`), so the server rejects a body damaged on the way.
//!
//! A writer that is aborted, or dropped before `finish` (a client that went away mid-upload),
//! aborts its multipart upload: `abort` waits for that, a drop spawns it on the current Tokio
//! runtime. Both are best effort: an upload the abort could not reach (the network failed, no
//! runtime, the process died) stays incomplete in the bucket, invisible but billed, until the
//! bucket's lifecycle rule removes it; configure one
//! (`AbortIncompleteMultipartUpload`, e.g. after 1 day) on every bucket this store uses.
//!
//! Reads stream the `GET` body as it arrives; a read interrupted mid-body is resumed by
//! `object_store` with a range request pinned to the same ETag.
//!
//! A failed request worth retrying is retried for a few seconds only ([`RETRY_FOR`]): while the
//! store is down, requests fail with [`BlobError::Unavailable`] (a 503 for the client) within
//! seconds, and `ping` (`/readyz`) retries at most twice within a second (a pooled connection
//! the store closed must not make the server look not ready) and answers at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
    PutPayloadMut, RetryConfig,
};
use tokio::task::JoinSet;

use super::{BlobError, BlobStore, BlobStream, BlobWriter, StoredBlob};
use crate::ids::BlobId;

/// The part size of multipart uploads, and the largest body sent with a single `PUT`.
pub(crate) const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's smallest part (all but the last one); [`S3Blobs::with_part_size`] never goes below it.
#[cfg(test)]
pub(crate) const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's largest part.
#[cfg(test)]
pub(crate) const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// Part requests one writer keeps running while it fills the next part.
pub(crate) const MAX_PARTS_IN_FLIGHT: usize = 2;

/// Memory is claimed in blocks of this size while a part fills, so a small body costs little.
const BUFFER_BLOCK: usize = 64 * 1024;
/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole request other than a read (an 8 MiB part at 70 KB/s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// A read whose body stalls this long is retried from where it stopped. Reads have no overall
/// limit: a body goes out at the pace of whoever downloads it.
const READ_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A request that fails in a way worth retrying (refused connection, 5xx, SlowDown) is retried
/// with short pauses for at most this long, so that while the store is down a client gets its 503
/// within seconds rather than after object_store's default of three minutes.
const RETRY_FOR: Duration = Duration::from_secs(5);
/// Time allowed for each attempt of the readiness probe (`/readyz`), which reports the store's
/// state now: it retries at most [`PROBE_RETRIES`] times within [`PROBE_RETRY_FOR`], enough to get
/// past a pooled connection the store had closed, not enough to hide an outage.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const PROBE_RETRIES: usize = 2;
const PROBE_RETRY_FOR: Duration = Duration::from_secs(1);

/// The retries of every request but the probe's (see [`RETRY_FOR`]).
fn retries() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: RETRY_FOR,
    }
}

/// Where the blobs live and how to reach them.
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// The service's base URL, e.g. `http://127.0.0.1:8333` or `https://s3.example.com`, without
    /// the bucket; `None` means AWS S3 in `region`.
    pub endpoint: Option<String>,
    /// The region requests are signed for; S3-compatible servers mostly accept any (an empty
    /// string means `us-east-1`).
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `true`: `<endpoint>/<bucket>/<key>` (what most self-hosted servers want);
    /// `false`: virtual-hosted style, `<bucket>.<endpoint host>/<key>` (AWS's default).
    pub path_style: bool,
    /// Allow `http://` endpoints (a store on the same host or network); otherwise only HTTPS.
    pub allow_http: bool,
    /// A folder inside the bucket for this deployment's blobs, e.g. `stowage/prod`.
    pub prefix: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("prefix", &self.prefix)
            .finish()
    }
}

pub struct S3Blobs {
    /// Writes, deletes, HEAD and listings: every request has an overall time limit.
    store: Arc<dyn ObjectStore>,
    /// Reads: a stall limit instead, since a body streams at its downloader's pace.
    reader: Arc<dyn ObjectStore>,
    /// The readiness probe: a quick attempt or three ([`PROBE_RETRIES`]).
    probe: Arc<dyn ObjectStore>,
    /// `<prefix>/blobs`.
    root: Path,
    part_size: usize,
    /// For messages: `s3://bucket/root at endpoint`.
    location: String,
}

impl S3Blobs {
    /// Builds the client; nothing is sent until the first request ([`S3Blobs::check`] sends one).
    pub fn connect(settings: S3Settings) -> Result<S3Blobs, BlobError> {
        let config = BlobError::Config;
        if settings.bucket.is_empty() {
            return Err(config("the S3 bucket name is empty".into()));
        }
        if settings.access_key_id.is_empty() || settings.secret_access_key.is_empty() {
            return Err(config(
                "the S3 access key id and secret access key are both required".into(),
            ));
        }
        let region = if settings.region.is_empty() {
            "us-east-1"
        } else {
            settings.region.as_str()
        };

        let prefix = settings.prefix.as_deref().unwrap_or("").trim_matches('/');
        let root = if prefix.is_empty() {
            Path::from("blobs")
        } else {
            Path::parse(prefix)
                .map_err(|e| config(format!("the S3 prefix {prefix:?} is not a usable object path: {e}")))?
                .join("blobs")
        };

        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(&settings.secret_access_key)
            .with_virtual_hosted_style_request(!settings.path_style)
            // One `DELETE` per blob: part of the core API every S3-compatible server has, unlike
            // the bulk `DeleteObjects`.
            .with_disable_bulk_delete(true);
        let endpoint = match &settings.endpoint {
            Some(endpoint) => {
                let endpoint = endpoint.trim_end_matches('/');
                let plain_http = match endpoint.split_once("://") {
                    Some(("https", _)) => false,
                    Some(("http", _)) => true,
                    _ => {
                        return Err(config(format!(
                            "the S3 endpoint {endpoint:?} must start with http:// or https://"
                        )));
                    }
                };
                if plain_http && !settings.allow_http {
                    return Err(config(format!(
                        "the S3 endpoint {endpoint:?} is plain HTTP; allow it explicitly (allow_http) or use https://"
                    )));
                }
                let endpoint = if settings.path_style {
                    endpoint.to_owned()
                } else {
                    virtual_hosted_endpoint(endpoint, &settings.bucket)
                };
                builder = builder.with_endpoint(&endpoint);
                endpoint
            }
            None => format!("AWS S3 ({region})"),
        };

        // (`with_client_options` replaces the builder's client options, `allow_http` included.)
        let base = ClientOptions::new()
            .with_allow_http(settings.allow_http)
            .with_connect_timeout(CONNECT_TIMEOUT);
        let build = |options: ClientOptions, retry: RetryConfig| {
            builder
                .clone()
                .with_client_options(options)
                .with_retry(retry)
                .build()
                .map_err(|e| config(format!("cannot set up the S3 client: {e}")))
        };
        let store = build(base.clone().with_timeout(REQUEST_TIMEOUT), retries())?;
        let reader = build(
            base.clone()
                .with_timeout_disabled()
                .with_read_timeout(READ_STALL_TIMEOUT),
            retries(),
        )?;
        let quick = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                base: 2.0,
            },
            max_retries: PROBE_RETRIES,
            retry_timeout: PROBE_RETRY_FOR,
        };
        let probe = build(base.with_timeout(PROBE_TIMEOUT), quick)?;

        Ok(S3Blobs {
            store: Arc::new(store),
            reader: Arc::new(reader),
            probe: Arc::new(probe),
            location: format!("s3://{}/{} at {endpoint}", settings.bucket, root),
            root,
            part_size: DEFAULT_PART_SIZE,
        })
    }

    /// Sets the multipart part size (clamped to S3's limits, 5 MiB to 5 GiB). A body of up to one
    /// part goes up in a single `PUT`; a writer holds at most `(MAX_PARTS_IN_FLIGHT + 1)` parts.
    #[cfg(test)]
    pub(crate) fn with_part_size(mut self, bytes: usize) -> S3Blobs {
        self.part_size = bytes.clamp(MIN_PART_SIZE, MAX_PART_SIZE);
        self
    }

    #[cfg(test)]
    pub(crate) fn part_size(&self) -> usize {
        self.part_size
    }

    /// The most body bytes one writer holds in memory at once.
    #[cfg(test)]
    pub(crate) fn writer_memory_bound(&self) -> usize {
        (MAX_PARTS_IN_FLIGHT + 1) * self.part_size
    }

    /// One cheap request (a one-level listing of the blob folder), so that a wrong endpoint,
    /// bucket or key shows at start rather than at the first upload.
    pub(crate) async fn check(&self) -> Result<(), BlobError> {
        self.list_root(&self.store).await
    }

    /// The one-level listing of the blob folder through `client`.
    async fn list_root(&self, client: &Arc<dyn ObjectStore>) -> Result<(), BlobError> {
        match client.list_with_delimiter(Some(&self.root)).await {
            Ok(_) => Ok(()),
            // `object_store` reports a listing's 404 as a generic error; S3's code says which.
            Err(e) if matches!(e, object_store::Error::NotFound { .. }) || e.to_string().contains("NoSuchBucket") => {
                Err(BlobError::Config(format!(
                    "{}: the bucket does not exist",
                    self.location
                )))
            }
            Err(e) => Err(failed_request(format!("S3 listing of {}", self.location), e)),
        }
    }

    fn shard_path(&self, shard: &str) -> Path {
        self.root.clone().join(shard)
    }

    fn blob_path(&self, id: &BlobId) -> Path {
        let name = id.as_str();
        self.shard_path(id.shard()).join(name)
    }
}

/// `https://host:port/x` → `https://<bucket>.host:port/x`, as `object_store` expects an endpoint
/// for virtual-hosted requests (unless it already names the bucket).
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) if !rest.starts_with(&format!("{bucket}.")) => format!("{scheme}://{bucket}.{rest}"),
        _ => endpoint.to_owned(),
    }
}

/// A failed request as a [`BlobError`]; the operation and the blob say which request.
fn failed(what: &str, id: &BlobId, e: object_store::Error) -> BlobError {
    failed_request(format!("S3 {what} of blob {id}"), e)
}

/// A request that found no store to talk to (an I/O error anywhere in its cause: refused,
/// reset, timed out) is [`BlobError::Unavailable`]; any other failure is [`BlobError::Store`].
fn failed_request(what: String, e: object_store::Error) -> BlobError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(error) = cause {
        if error.is::<std::io::Error>() {
            return BlobError::Unavailable {
                what,
                source: Box::new(e),
            };
        }
        cause = error.source();
    }
    BlobError::store(what, e)
}

fn is_shard(shard: &str) -> bool {
    shard.len() == 2 && shard.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn ping(&self) -> Result<(), BlobError> {
        self.list_root(&self.probe).await
    }

    async fn create(&self) -> Result<Box<dyn BlobWriter>, BlobError> {
        let id = BlobId::generate();
        Ok(Box::new(S3Writer {
            path: self.blob_path(&id),
            id,
            store: Arc::clone(&self.store),
            part_size: self.part_size,
            buffer: PutPayloadMut::new().with_block_size(BUFFER_BLOCK),
            state: State::Buffering,
        }))
    }

    async fn open(&self, id: &BlobId) -> Result<BlobStream, BlobError> {
        match self.reader.get(&self.blob_path(id)).await {
            Ok(result) => Ok(result.into_stream().map_err(std::io::Error::from).boxed()),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(id.clone())),
            Err(e) => Err(failed("GET", id, e)),
        }
    }

    async fn open_range(&self, id: &BlobId, range: std::ops::Range<u64>) -> Result<BlobStream, BlobError> {
        if range.is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let options = object_store::GetOptions {
            range: Some(object_store::GetRange::Bounded(range)),
            ..Default::default()
        };
        match self.reader.get_opts(&self.blob_path(id), options).await {
            Ok(result) => Ok(result.into_stream().map_err(std::io::Error::from).boxed()),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(id.clone())),
            Err(e) => Err(failed("GET", id, e)),
        }
    }

    async fn delete(&self, id: &BlobId) -> Result<(), BlobError> {
        match self.store.delete(&self.blob_path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed("DELETE", id, e)),
        }
    }

    async fn size(&self, id: &BlobId) -> Result<Option<u64>, BlobError> {
        match self.store.head(&self.blob_path(id)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(failed("HEAD", id, e)),
        }
    }

    fn shards(&self) -> Vec<String> {
        (0..=255u8).map(|prefix| format!("{prefix:02x}")).collect()
    }

    async fn list_shard(&self, shard: &str) -> Result<Vec<StoredBlob>, BlobError> {
        if !is_shard(shard) {
            return Ok(Vec::new());
        }
        let folder = self.shard_path(shard);
        let depth = folder.parts().count() + 1;
        let mut listing = self.store.list(Some(&folder));
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| failed_request(format!("S3 listing of {folder}"), e))?;
            // Only `<folder>/<id>`: anything else in there is not ours.
            if meta.location.parts().count() != depth {
                continue;
            }
            let Some(id) = meta.location.filename().and_then(BlobId::parse) else {
                continue;
            };
            out.push(StoredBlob {
                id,
                size: meta.size,
                written: meta.last_modified.into(),
            });
        }
        Ok(out)
    }
}

enum State {
    /// Nothing sent yet: the whole body so far is in the buffer, at most one part.
    Buffering,
    /// A multipart upload is open; `parts` are the part requests still running.
    Multipart {
        upload: Box<dyn MultipartUpload>,
        parts: JoinSet<object_store::Result<()>>,
    },
    /// Finished, aborted, or failed (and then aborted): the writer accepts nothing more.
    Closed,
}

struct S3Writer {
    id: BlobId,
    path: Path,
    store: Arc<dyn ObjectStore>,
    part_size: usize,
    /// The part being filled.
    buffer: PutPayloadMut,
    state: State,
}

impl S3Writer {
    /// Sends the buffer as the next part, opening the multipart upload first if this is the first
    /// part, and waiting for a free slot when [`MAX_PARTS_IN_FLIGHT`] parts are on their way.
    async fn send_part(&mut self) -> Result<(), BlobError> {
        if matches!(self.state, State::Buffering) {
            // If this future is dropped while the upload is being opened, the upload (if S3
            // opened it) is unknown to us and left to the bucket's lifecycle rule.
            let upload = self
                .store
                .put_multipart_opts(&self.path, PutMultipartOptions::default())
                .await
                .map_err(|e| failed("CreateMultipartUpload", &self.id, e))?;
            self.state = State::Multipart {
                upload,
                parts: JoinSet::new(),
            };
        }
        let State::Multipart { upload, parts } = &mut self.state else {
            return Err(closed(&self.id));
        };
        while parts.len() >= MAX_PARTS_IN_FLIGHT {
            if let Some(joined) = parts.join_next().await {
                part_result(&self.id, joined)?;
            }
        }
        let part = std::mem::replace(&mut self.buffer, PutPayloadMut::new().with_block_size(BUFFER_BLOCK));
        parts.spawn(upload.put_part(part.freeze()));
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), BlobError> {
        match &mut self.state {
            State::Closed => Err(closed(&self.id)),
            State::Buffering => {
                let body = std::mem::take(&mut self.buffer).freeze();
                self.store
                    .put_opts(&self.path, body, PutOptions::default())
                    .await
                    .map_err(|e| failed("PUT", &self.id, e))?;
                self.state = State::Closed;
                Ok(())
            }
            State::Multipart { .. } => {
                if !self.buffer.is_empty() {
                    self.send_part().await?;
                }
                let State::Multipart { upload, parts } = &mut self.state else {
                    return Err(closed(&self.id));
                };
                while let Some(joined) = parts.join_next().await {
                    part_result(&self.id, joined)?;
                }
                // Kept in `state` while S3 completes it, so that a drop now still aborts it.
                upload
                    .complete()
                    .await
                    .map_err(|e| failed("CompleteMultipartUpload", &self.id, e))?;
                self.state = State::Closed;
                Ok(())
            }
        }
    }

    /// Stops the part requests and aborts the multipart upload, if one is open.
    async fn abort_upload(&mut self) {
        self.buffer = PutPayloadMut::new();
        if let State::Multipart { upload, parts } = std::mem::replace(&mut self.state, State::Closed) {
            abort_multipart(self.id.clone(), upload, parts).await;
        }
    }
}

fn closed(id: &BlobId) -> BlobError {
    BlobError::store(
        format!("the upload of blob {id}"),
        "it was already finished, aborted or failed",
    )
}

fn part_result(id: &BlobId, joined: Result<object_store::Result<()>, tokio::task::JoinError>) -> Result<(), BlobError> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(failed("UploadPart", id, e)),
        Err(e) => Err(BlobError::store(format!("an upload of a part of blob {id}"), e)),
    }
}

async fn abort_multipart(
    id: BlobId,
    mut upload: Box<dyn MultipartUpload>,
    mut parts: JoinSet<object_store::Result<()>>,
) {
    parts.shutdown().await;
    if let Err(e) = upload.abort().await {
        tracing::warn!(blob = %id, error = %e, "could not abort a multipart upload; the bucket's lifecycle rule will remove it");
    }
}

#[async_trait]
impl BlobWriter for S3Writer {
    fn id(&self) -> &BlobId {
        &self.id
    }

    async fn write(&mut self, mut chunk: &[u8]) -> Result<(), BlobError> {
        if matches!(self.state, State::Closed) {
            return Err(closed(&self.id));
        }
        while !chunk.is_empty() {
            // A full part goes only once more data comes, so a body of exactly one part is
            // still a single `PUT`.
            if self.buffer.content_length() >= self.part_size
                && let Err(e) = self.send_part().await
            {
                self.abort_upload().await;
                return Err(e);
            }
            let take = chunk.len().min(self.part_size - self.buffer.content_length());
            self.buffer.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<BlobId, BlobError> {
        match self.complete().await {
            Ok(()) => Ok(self.id.clone()),
            Err(e) => {
                self.abort_upload().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) {
        self.abort_upload().await;
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        let State::Multipart { upload, parts } = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(abort_multipart(self.id.clone(), upload, parts));
            }
            Err(_) => tracing::warn!(
                blob = %self.id,
                "a multipart upload was dropped outside a Tokio runtime; the bucket's lifecycle rule will remove it"
            ),
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    fn settings() -> S3Settings {
        S3Settings {
            bucket: "bucket".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            region: String::new(),
            access_key_id: "key".into(),
            secret_access_key: "s3cr3t-value".into(),
            path_style: true,
            allow_http: true,
            prefix: Some("/deploy/one/".into()),
        }
    }

    #[test]
    fn names_blobs_under_the_prefix() {
        let store = S3Blobs::connect(settings()).unwrap();
        let id = BlobId::parse("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            store.blob_path(&id).as_ref(),
            "deploy/one/blobs/ef/0123456789abcdef0123456789abcdef"
        );
        let bare = S3Blobs::connect(S3Settings {
            prefix: None,
            ..settings()
        })
        .unwrap();
        assert_eq!(
            bare.blob_path(&id).as_ref(),
            "blobs/ef/0123456789abcdef0123456789abcdef"
        );
        assert_eq!(store.shards().len(), 256);
        assert!(store.shards().iter().all(|s| is_shard(s)));
        assert!(!is_shard("0g") && !is_shard("../x") && !is_shard("0"));
    }

    #[test]
    fn refuses_settings_that_cannot_work() {
        let config_error = |s: S3Settings| matches!(S3Blobs::connect(s), Err(BlobError::Config(_)));
        assert!(config_error(S3Settings {
            bucket: String::new(),
            ..settings()
        }));
        assert!(config_error(S3Settings {
            secret_access_key: String::new(),
            ..settings()
        }));
        assert!(config_error(S3Settings {
            endpoint: Some("127.0.0.1:9".into()),
            ..settings()
        }));
        assert!(config_error(S3Settings {
            allow_http: false,
            ..settings()
        }));
        assert!(config_error(S3Settings {
            prefix: Some("a//b".into()),
            ..settings()
        }));
        assert!(
            S3Blobs::connect(S3Settings {
                endpoint: None,
                ..settings()
            })
            .is_ok()
        );
    }

    #[test]
    fn virtual_hosted_endpoints_name_the_bucket() {
        assert_eq!(
            virtual_hosted_endpoint("https://s3.example.com", "b"),
            "https://b.s3.example.com"
        );
        assert_eq!(
            virtual_hosted_endpoint("https://b.s3.example.com", "b"),
            "https://b.s3.example.com"
        );
        assert_eq!(virtual_hosted_endpoint("http://minio:9000", "b"), "http://b.minio:9000");
    }

    #[test]
    fn settings_debug_hides_the_secret() {
        assert!(!format!("{:?}", settings()).contains("s3cr3t-value"));
    }

    /// A port on 127.0.0.1 that nothing listens on.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    /// A store that is down (nothing listens on its port): the readiness probe and a write both
    /// fail with `Unavailable` (a 503), the write once the short retry window has passed instead
    /// of retrying for minutes.
    #[tokio::test]
    async fn a_store_that_is_down_is_unavailable_within_the_retry_window() {
        let store = S3Blobs::connect(S3Settings {
            endpoint: Some(format!("http://127.0.0.1:{}", closed_port())),
            ..settings()
        })
        .unwrap();
        assert!(matches!(store.ping().await, Err(BlobError::Unavailable { .. })));

        let started = std::time::Instant::now();
        let mut writer = store.create().await.unwrap();
        writer.write(b"body").await.unwrap();
        let outcome = writer.finish().await;
        assert!(matches!(outcome, Err(BlobError::Unavailable { .. })), "{outcome:?}");
        // Generous for a loaded machine; object_store's default retries go on for up to 3 minutes.
        let bound = RETRY_FOR + Duration::from_secs(10);
        assert!(started.elapsed() < bound, "the write took {:?}", started.elapsed());
    }

    /// The readiness probe does not wait out a failing store: a store answering 503 to everything
    /// gets at most three requests from `ping` (other requests retry for a few seconds), and
    /// the probe says it failed.
    #[tokio::test]
    async fn the_readiness_probe_is_retried_briefly() {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut head = [0u8; 4096];
                if stream.read(&mut head).unwrap_or(0) > 0 {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        let store = S3Blobs::connect(S3Settings {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            ..settings()
        })
        .unwrap();
        assert!(store.ping().await.is_err());
        let probed = requests.load(Ordering::SeqCst);
        assert!((1..=PROBE_RETRIES + 1).contains(&probed), "{probed} requests");
        assert!(store.check().await.is_err());
        let checked = requests.load(Ordering::SeqCst) - probed;
        assert!(checked > PROBE_RETRIES + 1, "check sent {checked} requests");
    }

    #[test]
    fn part_size_stays_within_s3_limits() {
        let store = S3Blobs::connect(settings()).unwrap();
        assert_eq!(store.part_size(), DEFAULT_PART_SIZE);
        assert_eq!(store.with_part_size(1).part_size(), MIN_PART_SIZE);
    }
}
