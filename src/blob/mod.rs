//! The blob store: immutable object bodies under fresh ids. [`BlobStore`] is the trait the service
//! layer talks to; `local` is the embedded filesystem implementation and `s3` the one for any
//! S3-compatible object store. Which key a blob holds, and when a blob is garbage, is the metadata
//! store's business, never the blob store's.

pub mod local;
pub mod s3;
pub mod small;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::ids::BlobId;

pub use crate::meta::BoxError;

/// Why the blob store failed, by what a caller can do about it. Each keeps the cause as its
/// source: the server's log shows the whole chain, clients never see it. Conversions from each
/// store's errors live in the stores (`local.rs`, `s3.rs`, `small.rs`).
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} does not exist")]
    NotFound(BlobId),
    /// The store has no room left (a full disk); a retry after room is made may succeed.
    #[error("blob storage is out of space")]
    Full(#[source] BoxError),
    /// Local blob storage I/O failed.
    #[error("blob storage I/O failed")]
    Io(#[source] std::io::Error),
    /// A remote store could not be reached or did not answer in time; a retry may succeed.
    #[error("{what}: the blob store cannot be reached")]
    Unavailable {
        what: String,
        #[source]
        source: BoxError,
    },
    /// A store refused or failed a request (after its retries).
    #[error("{what} failed")]
    Store {
        what: String,
        #[source]
        source: BoxError,
    },
    /// The store's settings cannot work (a missing bucket, an unusable endpoint...).
    #[error("blob store settings are invalid: {0}")]
    Config(String),
    /// The small-body store's schema cannot be read or brought up to date, or is newer than
    /// this binary.
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
}

/// A full disk (`ENOSPC`) is [`BlobError::Full`]; any other I/O error is [`BlobError::Io`].
impl From<std::io::Error> for BlobError {
    fn from(e: std::io::Error) -> BlobError {
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
            BlobError::Full(Box::new(e))
        } else {
            BlobError::Io(e)
        }
    }
}

impl BlobError {
    /// A failed request: `what` names it (the operation and the blob), `source` says why.
    pub(crate) fn store(what: impl Into<String>, source: impl Into<BoxError>) -> BlobError {
        BlobError::Store {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// A body as a stream of chunks.
pub type BlobStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Receives a body chunk by chunk; nothing is visible under the id until `finish` returns.
#[async_trait]
pub trait BlobWriter: Send {
    fn id(&self) -> &BlobId;
    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError>;
    /// Appends a chunk the caller already holds as [`Bytes`]: a store that can keep the chunk
    /// (a reference count, not a copy) until its write is done overrides this; the default copies
    /// it through [`BlobWriter::write`]. Either may return before the chunk is on its way to disk
    /// (a write in flight on another thread); `finish` waits for every one.
    async fn write_bytes(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        self.write(&chunk).await
    }
    /// Makes the blob durable and visible under its id.
    async fn finish(self: Box<Self>) -> Result<BlobId, BlobError>;
    /// Throws the partial body away.
    async fn abort(self: Box<Self>);
}

/// A stored blob as a listing shows it.
#[derive(Debug, Clone)]
pub struct StoredBlob {
    pub id: BlobId,
    pub(crate) size: u64,
    /// When its body was last written.
    pub(crate) written: std::time::SystemTime,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts a new blob under a fresh id.
    async fn create(&self) -> Result<Box<dyn BlobWriter>, BlobError>;
    async fn open(&self, id: &BlobId) -> Result<BlobStream, BlobError>;
    /// The bytes `range` (start inclusive, end exclusive, within the blob's size) of a blob.
    async fn open_range(&self, id: &BlobId, range: std::ops::Range<u64>) -> Result<BlobStream, BlobError>;
    /// Answers when the store can be reached (for `/readyz`).
    async fn ping(&self) -> Result<(), BlobError>;
    /// Gives back memory the store keeps only for speed (caches of an idle connection). Called
    /// periodically by the server; a store that keeps no such memory keeps this default.
    async fn shed_idle_memory(&self) -> Result<(), BlobError> {
        Ok(())
    }
    /// Deletes a blob; deleting one that does not exist is not an error.
    async fn delete(&self, id: &BlobId) -> Result<(), BlobError>;
    /// The size of a stored blob, or `None` when it does not exist.
    async fn size(&self, id: &BlobId) -> Result<Option<u64>, BlobError>;
    /// The store's blobs in shards small enough to hold in memory: the shard names...
    fn shards(&self) -> Vec<String>;
    /// ...and the blobs of one shard.
    async fn list_shard(&self, shard: &str) -> Result<Vec<StoredBlob>, BlobError>;
}
