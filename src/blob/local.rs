//! Blobs as files in the data directory: `blobs/<shard>/<id>`, the shard being the id's last two
//! hex digits ([`BlobId::shard`]).
//!
//! A body is written to `tmp/<id>`, fsynced, renamed into place and its directory fsynced before
//! `finish` returns, so a blob the metadata names survives a crash or a power cut. Leftovers in
//! `tmp/` are removed at start.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
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

struct LocalWriter {
    id: BlobId,
    tmp_path: PathBuf,
    final_path: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    /// Set once the body is in place; until then, dropping the writer removes the partial file.
    done: bool,
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

#[async_trait]
impl BlobWriter for LocalWriter {
    fn id(&self) -> &BlobId {
        &self.id
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.file.write_all(chunk).await?;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<BlobId, BlobError> {
        self.file.flush().await?;
        self.file.get_ref().sync_all().await?;
        tokio::fs::rename(&self.tmp_path, &self.final_path).await?;
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
        let file = tokio::fs::File::create(&tmp_path).await?;
        Ok(Box::new(LocalWriter {
            final_path: self.path_of(&id),
            id,
            tmp_path,
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
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
