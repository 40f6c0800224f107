//! Small bodies without a file each: bodies up to a threshold (16 KiB by default) go into a
//! SQLite table beside the blob directory (`blobs/small.sqlite3`), larger ones to files through
//! [`LocalBlobs`]. A file costs a create, an fsync of its data and an fsync of its directory; a
//! small body costs a share of one WAL fsync, because a writer thread commits every small body
//! queued at that moment in one transaction (group commit) and answers each only after the
//! commit. The durability promise is the same: `finish` returns once the body is on disk. A read
//! of one body by its id runs on the caller's thread (a primary-key lookup in cached pages).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::local::LocalBlobs;
use super::{BlobError, BlobStore, BlobStream, BlobWriter, StoredBlob};
use crate::ids::BlobId;
use crate::schema::{SchemaError, Step, Version};

/// Bodies up to this size are kept in the table.
pub(crate) const DEFAULT_THRESHOLD: usize = 16 * 1024;
/// Most bodies committed in one transaction.
const MAX_BATCH: usize = 256;

type Insert = (BlobId, Vec<u8>, i64, oneshot::Sender<Result<(), String>>);

/// Local blobs, with small bodies in a table.
pub struct SmallAndLocalBlobs {
    files: Arc<LocalBlobs>,
    inserts: mpsc::Sender<Insert>,
    /// For scans, deletes and pings, on the blocking pool.
    reader: Arc<Mutex<Connection>>,
    /// For reads of one body by its id, on the caller's thread (see [`SmallAndLocalBlobs::lookup`]).
    lookups: Mutex<Connection>,
    threshold: usize,
}

/// How the small-body table is named in schema messages.
pub const STORE: &str = "small-body store";
/// The file of the small-body table in the blob directory.
pub const FILE: &str = "small.sqlite3";

/// The schema of the small-body table, as ordered steps (see `crate::schema`; add a step by
/// appending one). Step 1, stowage 0.1.0's table, creates only what is missing: v0.1.0 wrote no
/// version marker, and step 1 takes its table to version 1 unchanged.
pub const SCHEMA: &[Step] = &[Step {
    description: "the table of stowage 0.1.0",
    sql: "CREATE TABLE IF NOT EXISTS small_blobs (
              id TEXT PRIMARY KEY, shard TEXT NOT NULL, body BLOB NOT NULL, written INTEGER NOT NULL
          ) WITHOUT ROWID;
          CREATE INDEX IF NOT EXISTS small_blobs_by_shard ON small_blobs (shard);",
}];

fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
    Ok(conn)
}

/// The schema version of the small-body table in the blob directory `root`, read without
/// changing anything (`None`: there is none).
pub fn schema_version(root: &Path) -> Result<Option<Version>, SchemaError> {
    crate::schema::sqlite_version(&root.join(FILE), STORE, "small_blobs")
}

fn writer_loop(conn: Connection, queue: mpsc::Receiver<Insert>) {
    while let Ok(first) = queue.recv() {
        let mut batch = VecDeque::from([first]);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(insert) => batch.push_back(insert),
                Err(_) => break,
            }
        }
        let outcome = (|| -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            {
                let mut stmt = conn.prepare_cached(
                    "INSERT OR REPLACE INTO small_blobs (id, shard, body, written) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (id, body, written, _) in &batch {
                    stmt.execute(params![id.as_str(), id.shard(), body, written])?;
                }
            }
            conn.execute_batch("COMMIT")
        })();
        if outcome.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for (_, _, _, reply) in batch {
            let _ = reply.send(outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
    }
}

/// A failure of the small-body table; a full disk is [`BlobError::Full`].
fn db_error(e: impl Into<super::BoxError>) -> BlobError {
    let e = e.into();
    if let Some(rusqlite::Error::SqliteFailure(failure, _)) = e.downcast_ref::<rusqlite::Error>()
        && failure.code == rusqlite::ErrorCode::DiskFull
    {
        return BlobError::Full(e);
    }
    BlobError::store("the small-body table", e)
}

/// Writes a consistent copy of the small-body table of the blob directory `root` to `dest`
/// (`VACUUM INTO`, one read transaction); false when `root` has no table. Blocking.
pub fn snapshot_into(root: &Path, dest: &Path) -> Result<bool, BlobError> {
    let path = root.join("small.sqlite3");
    if !path.exists() {
        return Ok(false);
    }
    let target = dest
        .to_str()
        .ok_or_else(|| db_error(format!("{} is not a UTF-8 path", dest.display())))?;
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db_error)?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(db_error)?;
    Ok(true)
}

/// The ids of the bodies in the small-body table file `db`. Blocking.
pub fn ids_in(db: &Path) -> Result<std::collections::HashSet<String>, BlobError> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_error)?;
    let mut stmt = conn.prepare("SELECT id FROM small_blobs").map_err(db_error)?;
    let ids = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(db_error)?
        .collect::<rusqlite::Result<_>>()
        .map_err(db_error)?;
    Ok(ids)
}

/// Removes from the small-body table file `db` every body not in `keep` (a copy's bodies that
/// its metadata does not name); returns how many. Blocking.
pub fn retain_only(db: &Path, keep: &std::collections::HashSet<String>) -> Result<u64, BlobError> {
    let mut conn = Connection::open(db).map_err(db_error)?;
    let tx = conn.transaction().map_err(db_error)?;
    let mut removed = 0;
    {
        let ids: Vec<String> = tx
            .prepare("SELECT id FROM small_blobs")
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .map_err(db_error)?;
        let mut delete = tx.prepare("DELETE FROM small_blobs WHERE id = ?1").map_err(db_error)?;
        for id in ids.iter().filter(|id| !keep.contains(*id)) {
            removed += delete.execute([id]).map_err(db_error)? as u64;
        }
    }
    tx.commit().map_err(db_error)?;
    Ok(removed)
}

impl SmallAndLocalBlobs {
    /// Opens the blob directory (see [`LocalBlobs::open`]) and its small-body table.
    pub(crate) fn open(root: &Path, threshold: usize) -> Result<SmallAndLocalBlobs, BlobError> {
        let files = Arc::new(LocalBlobs::open(root)?);
        Self::with_files(root, files, threshold)
    }

    /// Uses a blob directory another process may be writing to (for `fsck`).
    pub fn attach(root: &Path) -> Result<SmallAndLocalBlobs, BlobError> {
        Self::with_files(root, Arc::new(LocalBlobs::attach(root)), DEFAULT_THRESHOLD)
    }

    fn with_files(root: &Path, files: Arc<LocalBlobs>, threshold: usize) -> Result<SmallAndLocalBlobs, BlobError> {
        std::fs::create_dir_all(root)?;
        let path = root.join(FILE);
        let writer = open_db(&path).map_err(db_error)?;
        crate::schema::upgrade_sqlite(&writer, STORE, SCHEMA).map_err(BlobError::Schema)?;
        let reader = open_db(&path).map_err(db_error)?;
        let lookups = open_db(&path).map_err(db_error)?;
        let (inserts, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("stowage-small-blobs".into())
            .spawn(move || writer_loop(writer, queue))
            .map_err(BlobError::from)?;
        Ok(SmallAndLocalBlobs {
            files,
            inserts,
            reader: Arc::new(Mutex::new(reader)),
            lookups: Mutex::new(lookups),
            threshold,
        })
    }

    /// Files in the upload staging area (see [`LocalBlobs::unfinished_uploads`]).
    #[cfg(test)]
    pub(crate) fn unfinished_uploads(&self) -> usize {
        self.files.unfinished_uploads()
    }

    /// The body of a blob kept in the table, or `None` when it is a file.
    fn small_body(&self, id: &BlobId) -> Result<Option<Bytes>, BlobError> {
        let body = self.lookup(|conn| {
            conn.prepare_cached("SELECT body FROM small_blobs WHERE id = ?1")?
                .query_row(params![id.as_str()], |r| r.get::<_, Vec<u8>>(0))
                .optional()
        })?;
        Ok(body.map(Bytes::from))
    }

    /// A read of one row by its primary key, run on the caller's thread on a connection of its
    /// own: it costs microseconds (the row's pages are cached), less than a hop to the blocking
    /// pool, and never waits behind a scan of the other connection.
    fn lookup<T>(&self, work: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, BlobError> {
        let conn = self.lookups.lock().map_err(|_| db_error("lock poisoned"))?;
        work(&conn).map_err(db_error)
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BlobError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| db_error("lock poisoned"))?;
            work(&conn).map_err(db_error)
        })
        .await
        .map_err(db_error)?
    }
}

/// Buffers a body until it passes the threshold, then becomes a file writer.
struct SmallWriter {
    id: BlobId,
    buffer: Vec<u8>,
    threshold: usize,
    file: Option<Box<dyn BlobWriter>>,
    files: Arc<LocalBlobs>,
    inserts: mpsc::Sender<Insert>,
}

#[async_trait]
impl BlobWriter for SmallWriter {
    fn id(&self) -> &BlobId {
        match &self.file {
            Some(file) => file.id(),
            None => &self.id,
        }
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        if let Some(file) = &mut self.file {
            return file.write(chunk).await;
        }
        self.write_bytes(Bytes::copy_from_slice(chunk)).await
    }

    async fn write_bytes(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        if let Some(file) = &mut self.file {
            return file.write_bytes(chunk).await;
        }
        if self.buffer.len() + chunk.len() <= self.threshold {
            self.buffer.extend_from_slice(&chunk);
            return Ok(());
        }
        let mut file = self.files.create().await?;
        file.write_bytes(Bytes::from(std::mem::take(&mut self.buffer))).await?;
        file.write_bytes(chunk).await?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<BlobId, BlobError> {
        let this = *self;
        if let Some(file) = this.file {
            return file.finish().await;
        }
        let (reply, answer) = oneshot::channel();
        let written = chrono::Utc::now().timestamp_millis();
        this.inserts
            .send((this.id.clone(), this.buffer, written, reply))
            .map_err(|_| db_error("the writer thread is gone"))?;
        answer.await.map_err(db_error)?.map_err(db_error)?;
        Ok(this.id)
    }

    async fn abort(self: Box<Self>) {
        if let Some(file) = self.file {
            file.abort().await;
        }
    }
}

#[async_trait]
impl BlobStore for SmallAndLocalBlobs {
    /// Drops the reader connections' cached pages (the writer's are bounded by SQLite's soft
    /// heap limit, set by the metadata store for the whole process).
    async fn shed_idle_memory(&self) -> Result<(), BlobError> {
        self.lookup(|conn| conn.release_memory())?;
        self.read(|conn| conn.release_memory()).await
    }

    async fn create(&self) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(SmallWriter {
            id: BlobId::generate(),
            buffer: Vec::new(),
            threshold: self.threshold,
            file: None,
            files: self.files.clone(),
            inserts: self.inserts.clone(),
        }))
    }

    async fn open(&self, id: &BlobId) -> Result<BlobStream, BlobError> {
        match self.small_body(id)? {
            Some(body) => Ok(Box::pin(futures::stream::once(async move { Ok(body) }))),
            None => self.files.open(id).await,
        }
    }

    async fn open_range(&self, id: &BlobId, range: std::ops::Range<u64>) -> Result<BlobStream, BlobError> {
        match self.small_body(id)? {
            Some(body) => {
                let end = usize::try_from(range.end).unwrap_or(usize::MAX).min(body.len());
                let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(end);
                let slice = body.slice(start..end);
                Ok(Box::pin(futures::stream::once(async move { Ok(slice) })))
            }
            None => self.files.open_range(id, range).await,
        }
    }

    async fn delete(&self, id: &BlobId) -> Result<(), BlobError> {
        // Deletes (collection) are rare next to reads: they use the reader connection, in
        // autocommit; deleting a body that is not there is not an error.
        let key = id.clone();
        self.read(move |conn| conn.execute("DELETE FROM small_blobs WHERE id = ?1", params![key.as_str()]))
            .await?;
        self.files.delete(id).await
    }

    async fn size(&self, id: &BlobId) -> Result<Option<u64>, BlobError> {
        let small = self.lookup(|conn| {
            conn.prepare_cached("SELECT length(body) FROM small_blobs WHERE id = ?1")?
                .query_row(params![id.as_str()], |r| r.get::<_, i64>(0))
                .optional()
        })?;
        match small {
            Some(size) => Ok(Some(size.max(0) as u64)),
            None => self.files.size(id).await,
        }
    }

    async fn ping(&self) -> Result<(), BlobError> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(()))).await?;
        self.files.ping().await
    }

    fn shards(&self) -> Vec<String> {
        self.files.shards()
    }

    async fn list_shard(&self, shard: &str) -> Result<Vec<StoredBlob>, BlobError> {
        let shard_key = shard.to_owned();
        let small = self
            .read(move |conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT id, length(body), written FROM small_blobs WHERE shard = ?1")?;
                let rows = stmt.query_map(params![shard_key], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        let mut out = self.files.list_shard(shard).await?;
        for (id, size, written) in small {
            if let Some(id) = BlobId::parse(&id) {
                let written = std::time::UNIX_EPOCH + std::time::Duration::from_millis(written.max(0) as u64);
                out.push(StoredBlob {
                    id,
                    size: size.max(0) as u64,
                    written,
                });
            }
        }
        Ok(out)
    }
}
