//! Blobs as files in the data directory: `blobs/<shard>/<id>`, the shard being the id's last two
//! hex digits ([`BlobId::shard`]).
//!
//! A body is written to `tmp/<id>`, fsynced, renamed into place and its directory fsynced before
//! `finish` returns, so a blob the metadata names survives a crash or a power cut. Leftovers in
//! `tmp/` are removed at start.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio_util::io::ReaderStream;

use super::{BlobError, BlobStore, BlobStream, BlobWriter, StoredBlob};
use crate::ids::BlobId;

/// Read buffer for streaming a blob out: large, so that big downloads run at disk speed (64 KiB
/// chunks spent much of the CPU switching threads).
const READ_CHUNK: usize = 256 * 1024;
/// The smallest read buffer, for small files.
const MIN_READ_CHUNK: usize = 8 * 1024;

pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    /// Opens (creating when needed) a blob directory and clears unfinished uploads.
    pub fn open(root: &Path) -> Result<LocalBlobs, BlobError> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        for prefix in 0..=255u8 {
            std::fs::create_dir_all(root.join(format!("{prefix:02x}")))?;
        }
        sync_dir(root)?;
        Ok(LocalBlobs { root: root.to_owned() })
    }

    /// Uses a blob directory another process may be writing to (for `stowage fsck`): nothing is
    /// created or cleared.
    pub fn attach(root: &Path) -> LocalBlobs {
        LocalBlobs { root: root.to_owned() }
    }

    /// Files in `tmp/`: uploads in progress, or left by a crash until the next start.
    pub fn unfinished_uploads(&self) -> usize {
        std::fs::read_dir(self.root.join("tmp"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    /// Where the body `id` lives (or would live) as a file.
    pub fn path_of(&self, id: &BlobId) -> PathBuf {
        let name = id.as_str();
        self.root.join(id.shard()).join(name)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Chunks are gathered until this many bytes, then written by one blocking job (on the blocking
/// pool) while the next batch arrives: the copy into the page cache runs beside the request's
/// task and the hashing, not between them.
pub(crate) const WRITE_BATCH: usize = 1024 * 1024;
/// Every this many bytes written, the kernel is asked to start writing them to disk
/// (`sync_file_range`, Linux): the `fsync` at `finish` then waits for the tail only, not for the
/// whole body (a 1 GiB body left dirty in the page cache took half a second to flush there).
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

/// A batch write in flight: it hands the file back with its outcome, and the batch, so that
/// its chunks are freed on the caller's side (where they were allocated).
type WriteJob = tokio::task::JoinHandle<(std::fs::File, Vec<bytes::Bytes>, std::io::Result<()>)>;

struct LocalWriter {
    id: BlobId,
    tmp_path: PathBuf,
    final_path: PathBuf,
    /// The file while no batch write is in flight (then the job holds it).
    file: Option<std::fs::File>,
    in_flight: Option<WriteJob>,
    /// Chunks not yet handed to a write: reference-counted, never copied.
    pending: Vec<bytes::Bytes>,
    pending_len: usize,
    /// Bytes handed to batch writes so far, and the offset below which writeback was started.
    written: u64,
    writeback_from: u64,
    /// Set once the body is in place; until then, dropping the writer removes the partial file
    /// (a write still in flight then goes to the unlinked file and is freed with it).
    done: bool,
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// Writes a batch at the file's current end, then starts writeback of what has accumulated
/// since `writeback_from` once that passes [`WRITEBACK_EVERY`]. Blocking.
fn write_batch(file: &mut std::fs::File, batch: &[bytes::Bytes], writeback: Option<(u64, u64)>) -> std::io::Result<()> {
    use std::io::Write;
    for chunk in batch {
        file.write_all(chunk)?;
    }
    if let Some((from, to)) = writeback {
        start_writeback(file, from, to);
    }
    Ok(())
}

/// Asks the kernel to start writing `from..to` of the file to disk, without waiting for it. Only
/// an optimisation: `fsync` at `finish` is what makes the body durable, so a failure is ignored.
#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(from), libc::off64_t::try_from(to - from)) else {
        return;
    };
    // SAFETY: the descriptor is open for the duration of the call (borrowed from `file`).
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File, _from: u64, _to: u64) {}

fn join_failed(e: tokio::task::JoinError) -> BlobError {
    BlobError::Io(std::io::Error::other(format!("a blob write task failed: {e}")))
}

impl LocalWriter {
    /// Waits for the batch write in flight, if any, and takes the file back.
    async fn reclaim(&mut self) -> Result<std::fs::File, BlobError> {
        if let Some(job) = self.in_flight.take() {
            let (file, batch, outcome) = job.await.map_err(join_failed)?;
            drop(batch);
            // After a failed write the file is dropped: every later call fails too.
            outcome?;
            self.file = Some(file);
        }
        self.file
            .take()
            .ok_or_else(|| BlobError::Io(std::io::Error::other("an earlier write of this blob failed")))
    }

    /// Hands the pending chunks to a blocking write once the previous one is done.
    async fn dispatch(&mut self) -> Result<(), BlobError> {
        let mut file = self.reclaim().await?;
        let batch = std::mem::take(&mut self.pending);
        self.written += std::mem::take(&mut self.pending_len) as u64;
        let writeback = (self.written - self.writeback_from >= WRITEBACK_EVERY).then(|| {
            let range = (self.writeback_from, self.written);
            self.writeback_from = self.written;
            range
        });
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let outcome = write_batch(&mut file, &batch, writeback);
            (file, batch, outcome)
        }));
        Ok(())
    }
}

#[async_trait]
impl BlobWriter for LocalWriter {
    fn id(&self) -> &BlobId {
        &self.id
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.write_bytes(bytes::Bytes::copy_from_slice(chunk)).await
    }

    async fn write_bytes(&mut self, chunk: bytes::Bytes) -> Result<(), BlobError> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= WRITE_BATCH {
            self.dispatch().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<BlobId, BlobError> {
        let mut file = self.reclaim().await?;
        let batch = std::mem::take(&mut self.pending);
        let tmp_path = self.tmp_path.clone();
        let final_path = self.final_path.clone();
        let (batch, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = (|| {
                write_batch(&mut file, &batch, None)?;
                file.sync_all()?;
                std::fs::rename(&tmp_path, &final_path)
            })();
            (batch, outcome)
        })
        .await
        .map_err(join_failed)?;
        drop(batch);
        outcome?;
        self.done = true;
        let dir = self.final_path.parent().map(Path::to_owned).unwrap_or_default();
        tokio::task::spawn_blocking(move || sync_dir(&dir))
            .await
            .map_err(std::io::Error::other)??;
        Ok(self.id.clone())
    }

    async fn abort(self: Box<Self>) {
        // Dropping the writer removes the partial file.
        drop(self);
    }
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn create(&self) -> Result<Box<dyn BlobWriter>, BlobError> {
        let id = BlobId::generate();
        let tmp_path = self.root.join("tmp").join(id.as_str());
        let file = tokio::fs::File::create(&tmp_path).await?.into_std().await;
        Ok(Box::new(LocalWriter {
            final_path: self.path_of(&id),
            id,
            tmp_path,
            file: Some(file),
            in_flight: None,
            pending: Vec::new(),
            pending_len: 0,
            written: 0,
            writeback_from: 0,
            done: false,
        }))
    }

    async fn open(&self, id: &BlobId) -> Result<BlobStream, BlobError> {
        match tokio::fs::File::open(self.path_of(id)).await {
            Ok(file) => {
                // A buffer no larger than the file: concurrent reads of small files must not each
                // hold a large one.
                let len = file.metadata().await?.len();
                let chunk = usize::try_from(len).map_or(READ_CHUNK, |n| n.clamp(MIN_READ_CHUNK, READ_CHUNK));
                Ok(Box::pin(ReaderStream::with_capacity(file, chunk)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NotFound(id.clone())),
            Err(e) => Err(e.into()),
        }
    }

    async fn open_range(&self, id: &BlobId, range: std::ops::Range<u64>) -> Result<BlobStream, BlobError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = match tokio::fs::File::open(self.path_of(id)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::NotFound(id.clone())),
            Err(e) => return Err(e.into()),
        };
        file.seek(std::io::SeekFrom::Start(range.start)).await?;
        let len = range.end.saturating_sub(range.start);
        let chunk = usize::try_from(len).map_or(READ_CHUNK, |n| n.clamp(MIN_READ_CHUNK, READ_CHUNK));
        Ok(Box::pin(ReaderStream::with_capacity(file.take(len), chunk)))
    }

    async fn delete(&self, id: &BlobId) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path_of(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn ping(&self) -> Result<(), BlobError> {
        let meta = tokio::fs::metadata(self.root.join("tmp")).await?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(BlobError::Io(std::io::Error::other("the blob directory is gone")))
        }
    }

    async fn size(&self, id: &BlobId) -> Result<Option<u64>, BlobError> {
        match tokio::fs::metadata(self.path_of(id)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn shards(&self) -> Vec<String> {
        (0..=255u8).map(|prefix| format!("{prefix:02x}")).collect()
    }

    async fn list_shard(&self, shard: &str) -> Result<Vec<StoredBlob>, BlobError> {
        let dir = self.root.join(shard);
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let Some(id) = entry.file_name().to_str().and_then(BlobId::parse) else {
                    continue;
                };
                let meta = entry.metadata()?;
                out.push(StoredBlob {
                    id,
                    size: meta.len(),
                    written: meta.modified()?,
                });
            }
            Ok(out)
        })
        .await
        .map_err(std::io::Error::other)?
        .map_err(BlobError::from)
    }
}

#[cfg(test)]
mod tests {
    //! What only the filesystem store does; the contract every store keeps is tested in
    //! `blob::tests`, against this store and the others.
    use super::*;

    #[tokio::test]
    async fn open_clears_uploads_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobs::open(dir.path()).unwrap();
        let mut writer = store.create().await.unwrap();
        writer.write(b"partial").await.unwrap();
        assert_eq!(store.unfinished_uploads(), 1);
        // A crash: the writer's cleanup never runs.
        std::mem::forget(writer);
        let reopened = LocalBlobs::open(dir.path()).unwrap();
        assert_eq!(reopened.unfinished_uploads(), 0);
        assert!(reopened.list_shard("00").await.unwrap().is_empty());
    }

    /// Chunks handed over as `Bytes` are written in batches by blocking jobs: a body of several
    /// batches in odd-sized chunks comes back byte for byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_writes_keep_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobs::open(dir.path()).unwrap();
        let body: Vec<u8> = (0..3 * WRITE_BATCH + 777).map(|i| (i % 251) as u8).collect();
        let body = bytes::Bytes::from(body);
        let mut writer = store.create().await.unwrap();
        let mut at = 0;
        for size in [1usize, 4095, 0, 100_003, WRITE_BATCH + 5].into_iter().cycle() {
            if at == body.len() {
                break;
            }
            let end = (at + size).min(body.len());
            writer.write_bytes(body.slice(at..end)).await.unwrap();
            at = end;
        }
        let id = writer.finish().await.unwrap();
        assert_eq!(std::fs::read(store.path_of(&id)).unwrap(), body);
        assert_eq!(store.unfinished_uploads(), 0);
    }

    /// An upload aborted while a batch write is in flight leaves no staged file, and the write
    /// still running creates none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abort_with_a_write_in_flight_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobs::open(dir.path()).unwrap();
        let mut writer = store.create().await.unwrap();
        let id = writer.id().clone();
        let chunk = bytes::Bytes::from(vec![7u8; WRITE_BATCH]);
        for _ in 0..3 {
            writer.write_bytes(chunk.clone()).await.unwrap();
        }
        assert_eq!(store.unfinished_uploads(), 1);
        writer.abort().await;
        assert_eq!(store.unfinished_uploads(), 0);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(store.unfinished_uploads(), 0);
        assert_eq!(store.size(&id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn attach_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobs::open(dir.path()).unwrap();
        let mut writer = store.create().await.unwrap();
        writer.write(b"in progress").await.unwrap();
        let attached = LocalBlobs::attach(dir.path());
        assert_eq!(attached.unfinished_uploads(), 1);
        let id = writer.finish().await.unwrap();
        assert_eq!(attached.size(&id).await.unwrap(), Some(11));
    }
}
