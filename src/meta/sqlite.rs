//! The embedded metadata store on SQLite (WAL, `synchronous=FULL`).
//!
//! One writer thread owns the only writing connection and applies queued writes in batches: each
//! write runs inside its own savepoint of one `BEGIN IMMEDIATE` transaction, and every caller of a
//! batch is answered only after the batch's durable commit (group commit). Reads run on a small
//! pool of connections and never wait for the writer (WAL): lookups of a few indexed rows on the
//! caller's thread, anything larger on the blocking thread pool.
//!
//! Folders are rows of their own (bytes, files, direct children and newest modification under
//! them), maintained in the same transaction as the object rows, so listing a page and reading
//! usage are index lookups. The root folder row (path `""`) holds the organization's usage.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use super::rules::*;
use super::*;

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 128;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 16;
/// A pooled read connection unused this long is closed by [`Maintenance::shed_idle_memory`].
const READER_IDLE: std::time::Duration = std::time::Duration::from_secs(5);
/// Job entries recorded per write: what another organization's write may wait behind.
const JOB_SLICE: usize = 128;
/// Times a job is expanded again when its files changed before it was recorded; after that it
/// is expanded inside the writer.
const JOB_ATTEMPTS: usize = 3;
/// Compiled statements kept per connection (more than the store has distinct hot statements).
const STATEMENT_CACHE: usize = 64;

/// SQLite's errors by what a caller can do about them.
impl From<rusqlite::Error> for MetaError {
    fn from(e: rusqlite::Error) -> MetaError {
        let kind = error_kind(&e);
        kind(Box::new(e))
    }
}

/// The [`MetaError`] variant an SQLite error belongs to.
fn error_kind(e: &rusqlite::Error) -> fn(BoxError) -> MetaError {
    use rusqlite::ErrorCode;
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => MetaError::Conflict,
            ErrorCode::DiskFull => MetaError::Full,
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => MetaError::Corrupt,
            ErrorCode::CannotOpen | ErrorCode::SystemIoFailure | ErrorCode::PermissionDenied => MetaError::Unavailable,
            _ => MetaError::Failed,
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..) => MetaError::Corrupt,
        _ => MetaError::Failed,
    }
}

/// One SQLite error told to every write of a batch, each with the same kind and cause.
fn shared_error(e: &Arc<rusqlite::Error>) -> MetaError {
    error_kind(e)(Box::new(e.clone()))
}

/// A write queued for the writer thread: runs inside a savepoint, answers after the commit.
trait WriteTask: Send {
    fn run(&mut self, conn: &Connection);
    fn deliver(self: Box<Self>, commit: Result<(), MetaError>);
}

struct Pending<T, F> {
    work: Option<F>,
    result: Option<MetaResult<T>>,
    reply: oneshot::Sender<MetaResult<T>>,
}

impl<T: Send, F: FnOnce(&Connection) -> MetaResult<T> + Send> WriteTask for Pending<T, F> {
    fn run(&mut self, conn: &Connection) {
        let Some(work) = self.work.take() else { return };
        let result = match cached_exec(conn, "SAVEPOINT write_task", []).map(drop) {
            Err(e) => Err(e.into()),
            Ok(()) => {
                // A panic in one write must not take the writer thread (and every later write) down.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
                    .unwrap_or_else(|_| Err(MetaError::failed("a metadata write panicked")));
                let end = if result.is_ok() {
                    cached_exec(conn, "RELEASE write_task", []).map(drop)
                } else {
                    conn.execute_batch("ROLLBACK TO write_task; RELEASE write_task")
                };
                match end {
                    Ok(()) => result,
                    Err(e) => Err(e.into()),
                }
            }
        };
        self.result = Some(result);
    }

    fn deliver(self: Box<Self>, commit: Result<(), MetaError>) {
        let answer = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(MetaError::failed("the write was not applied")),
        };
        let _ = self.reply.send(answer);
    }
}

/// The SQLite metadata store.
pub struct SqliteMeta {
    path: PathBuf,
    writer: mpsc::Sender<Box<dyn WriteTask>>,
    /// Idle read connections, each with the moment it was last returned.
    readers: Arc<Readers>,
    /// Where far listing pages start (see [`ListingMarks`]).
    marks: Arc<ListingMarks>,
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // WAL: readers never block the writer. synchronous=FULL: the WAL is fsynced at every commit,
    // so a commit that returned survives a power cut.
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(conn)
}

fn writer_loop(conn: Connection, queue: mpsc::Receiver<Box<dyn WriteTask>>) {
    while let Ok(first) = queue.recv() {
        let mut pending: VecDeque<Box<dyn WriteTask>> = VecDeque::from([first]);
        while pending.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(task) => pending.push_back(task),
                Err(_) => break,
            }
        }
        while !pending.is_empty() {
            apply_batch(&conn, &mut pending);
        }
    }
}

/// Runs queued writes in one transaction and answers them after its commit. A write whose error
/// made SQLite abandon the whole transaction (disk full, I/O error) ends the batch there: the
/// writes that ran are told they failed, and the rest stay queued for a fresh transaction, so no
/// write ever runs outside a transaction or is told the opposite of what happened.
fn apply_batch(conn: &Connection, pending: &mut VecDeque<Box<dyn WriteTask>>) {
    if let Err(e) = cached_exec(conn, "BEGIN IMMEDIATE", []) {
        let e = Arc::new(e);
        for task in pending.drain(..) {
            task.deliver(Err(shared_error(&e)));
        }
        return;
    }
    let mut ran = Vec::with_capacity(pending.len());
    let mut abandoned = false;
    while let Some(mut task) = pending.pop_front() {
        task.run(conn);
        ran.push(task);
        if conn.is_autocommit() {
            abandoned = true;
            break;
        }
    }
    let commit = if abandoned {
        Err(None)
    } else {
        cached_exec(conn, "COMMIT", []).map(drop).map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            Some(Arc::new(e))
        })
    };
    for task in ran {
        let commit = match &commit {
            Ok(()) => Ok(()),
            Err(Some(e)) => Err(shared_error(e)),
            Err(None) => Err(MetaError::failed("the transaction was rolled back by the database")),
        };
        task.deliver(commit);
    }
}

/// The file whose lock holds off collection on the database at `db`.
fn hold_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".backup-hold");
    PathBuf::from(name)
}

fn hold_file(path: &Path) -> MetaResult<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| MetaError::failed(format!("cannot open {}: {e}", path.display())))
}

/// A shared lock on the hold file while collection may run; `None` while a backup holds it.
fn collection_allowed(hold: &Path) -> MetaResult<Option<std::fs::File>> {
    let file = hold_file(hold)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(MetaError::failed(format!("cannot lock {}: {e}", hold.display()))),
    }
}

/// Holds off collection on the database at `db` (an exclusive lock on `<db>.backup-hold`, which
/// the kernel releases if the process dies), after a collection query in progress has finished.
/// Blocking: call it from a blocking thread.
pub fn hold_collection(db: &Path) -> MetaResult<CollectionHold> {
    let path = hold_path(db);
    let file = hold_file(&path)?;
    file.lock()
        .map_err(|e| MetaError::failed(format!("cannot lock {}: {e}", path.display())))?;
    Ok(CollectionHold::new(file))
}

/// Writes a consistent copy of the database at `db` (one read transaction, `VACUUM INTO`) to
/// `dest`, which must not exist, then drops download jobs, pending multipart uploads and pending
/// collection from the copy: the bodies those name are not part of it. Blocking.
pub fn snapshot_into(db: &Path, dest: &Path) -> MetaResult<()> {
    let target = dest
        .to_str()
        .ok_or_else(|| MetaError::failed(format!("{} is not a UTF-8 path", dest.display())))?;
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    let copy = open_connection(dest)?;
    // Pending multipart uploads are left out too: their parts' bodies are not copied.
    copy.execute_batch(
        "BEGIN; DELETE FROM job_entries; DELETE FROM jobs; DELETE FROM garbage; \
         DELETE FROM upload_parts; DELETE FROM uploads; UPDATE orgs SET pending_bytes = 0; COMMIT;",
    )?;
    Ok(())
}

impl SqliteMeta {
    /// Opens (creating when needed) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> MetaResult<SqliteMeta> {
        let conn = open_connection(path)?;
        crate::schema::upgrade_sqlite(&conn, schema::STORE, schema::SQLITE).map_err(MetaError::Schema)?;
        let (tx, rx) = mpsc::channel::<Box<dyn WriteTask>>();
        std::thread::Builder::new()
            .name("stowage-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| MetaError::Unavailable(Box::new(e)))?;
        Ok(SqliteMeta {
            path: path.to_owned(),
            writer: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            marks: Arc::new(ListingMarks::standard()),
        })
    }

    /// The same store with marks every `stride` listing entries (tests reach the marks with
    /// small folders).
    #[cfg(test)]
    pub(crate) fn with_mark_stride(mut self, stride: u64) -> SqliteMeta {
        self.marks = Arc::new(ListingMarks::new(stride, 1 << 20));
        self
    }

    async fn write<T, F>(&self, work: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> MetaResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let task = Box::new(Pending {
            work: Some(work),
            result: None,
            reply,
        });
        self.writer.send(task).map_err(|_| MetaError::Closed)?;
        answer.await.map_err(|_| MetaError::Closed)?
    }

    async fn read<T, F>(&self, work: F) -> MetaResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> MetaResult<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_pooled(&readers, &path, work))
            .await
            .map_err(|e| MetaError::Failed(Box::new(e)))?
    }

    /// A read of a few rows found through an index (a membership, an organization, one object's
    /// row), run on the caller's thread. Its pages are almost always in SQLite's or the OS's
    /// cache, so it costs microseconds; the hop to the blocking pool and back cost more than the
    /// read itself (measured with 16 clients on two cores: properties 1.7x, get 1.25x, set 1.14x
    /// faster without it). A WAL reader never waits for the writer. Anything that may touch
    /// many rows (a page, a scan) goes through [`SqliteMeta::read`].
    fn lookup<T, F>(&self, work: F) -> MetaResult<T>
    where
        F: FnOnce(&Connection) -> MetaResult<T>,
    {
        read_pooled(&self.readers, &self.path, work)
    }
}

/// Idle read connections, each with when it was last used.
type Readers = Mutex<Vec<(Connection, std::time::Instant)>>;

/// Runs `work` in one read transaction on a pooled connection (opening one when none is idle)
/// and returns the connection to the pool. Blocking.
fn read_pooled<T, F>(readers: &Readers, path: &Path, work: F) -> MetaResult<T>
where
    F: FnOnce(&Connection) -> MetaResult<T>,
{
    let pooled = readers
        .lock()
        .ok()
        .and_then(|mut idle| idle.pop())
        .map(|(conn, _)| conn);
    let conn = match pooled {
        Some(conn) => conn,
        None => {
            let conn = open_connection(path)?;
            // A small page cache per reader: the OS page cache holds the hot pages once
            // for all of them, and sixteen default 2 MiB caches were most of the memory a
            // server kept after a burst of concurrent reads.
            conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -256;")?;
            conn
        }
    };
    // One snapshot per read, even when it takes several statements.
    let result = match conn.prepare_cached("BEGIN").and_then(|mut begin| begin.execute([])) {
        Ok(_) => {
            let result = work(&conn);
            let _ = conn.prepare_cached("COMMIT").and_then(|mut commit| commit.execute([]));
            result
        }
        Err(e) => Err(e.into()),
    };
    if let Ok(mut idle) = readers.lock()
        && idle.len() < MAX_IDLE_READERS
    {
        idle.push((conn, std::time::Instant::now()));
    }
    result
}

/// `query_row` through the connection's statement cache: hot statements are compiled once per
/// connection instead of at every request (compiling them was a visible share of a set's CPU).
fn cached_row<T, P, F>(conn: &Connection, sql: &str, params: P, f: F) -> rusqlite::Result<T>
where
    P: rusqlite::Params,
    F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
{
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// `execute` through the connection's statement cache (see [`cached_row`]): a write compiled its
/// statements at every call, about a quarter of the writer thread's CPU in a 16-connection set.
fn cached_exec<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Inserts an organization and its root folder row.
fn insert_org(
    conn: &Connection,
    name: &str,
    max_bytes: Option<u64>,
    max_files: Option<u64>,
    now: Millis,
) -> MetaResult<OrgId> {
    let id = OrgId::generate();
    cached_exec(
        conn,
        "INSERT INTO orgs (id, name, max_bytes, max_files, created) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id.as_str(), name, max_bytes.map(to_i64), max_files.map(to_i64), now],
    )?;
    cached_exec(
        conn,
        "INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified, \
         children_version) VALUES (?1, '', NULL, '', 0, 0, 0, 0, ?2, ?3)",
        params![id.as_str(), now, fresh_children_version(conn)?],
    )?;
    Ok(id)
}

/// Inserts a user and seals its token under its new id.
/// The first user of a store is a server administrator whatever `server_admin` says.
fn insert_user(
    conn: &Connection,
    name: &str,
    server_admin: bool,
    now: Millis,
    seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
) -> MetaResult<UserId> {
    cached_exec(
        conn,
        "INSERT INTO users (name, token_nonce, token_sealed, disabled, created, server_admin) \
         VALUES (?1, x'', x'', 0, ?2, ?3 OR NOT EXISTS (SELECT 1 FROM users))",
        params![name, now, server_admin],
    )?;
    let id = UserId(conn.last_insert_rowid());
    let Some(sealed) = seal(id) else {
        return Err(MetaError::failed("the new token could not be sealed"));
    };
    cached_exec(
        conn,
        "UPDATE users SET token_nonce = ?2, token_sealed = ?3 WHERE id = ?1",
        params![id.0, sealed.nonce, sealed.ciphertext],
    )?;
    Ok(id)
}

/// Adds a membership or replaces its permissions.
fn upsert_member(conn: &Connection, org: &OrgId, user: UserId, p: Permissions) -> MetaResult<()> {
    cached_exec(
        conn,
        "INSERT INTO members (org_id, user_id, can_read, can_write, can_delete, is_admin) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (org_id, user_id) DO UPDATE SET can_read = excluded.can_read, can_write = excluded.can_write, \
         can_delete = excluded.can_delete, is_admin = excluded.is_admin",
        params![
            org.as_str(),
            user.0,
            bool_int(p.read),
            bool_int(p.write),
            bool_int(p.delete),
            bool_int(p.admin)
        ],
    )?;
    Ok(())
}

fn bool_int(b: bool) -> i64 {
    i64::from(b)
}

/// An organization row joined with its root folder (usage); `None` for a malformed id.
fn org_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Organization>> {
    let id: String = row.get(0)?;
    Ok(OrgId::parse(&id).map(|id| Organization {
        id,
        name: row.get(1).unwrap_or_default(),
        max_bytes: row.get::<_, Option<i64>>(2).ok().flatten().map(to_u64),
        max_files: row.get::<_, Option<i64>>(3).ok().flatten().map(to_u64),
        created: row.get(4).unwrap_or_default(),
        usage: Usage {
            bytes: to_u64(row.get(5).unwrap_or_default()),
            files: to_u64(row.get(6).unwrap_or_default()),
        },
        bucket: row.get(7).unwrap_or_default(),
    }))
}

const ORG_SELECT: &str = "SELECT o.id, o.name, o.max_bytes, o.max_files, o.created, f.bytes, f.files, o.bucket \
     FROM orgs o JOIN folders f ON f.org_id = o.id AND f.path = ''";

fn user_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: UserId(row.get(0)?),
        name: row.get(1)?,
        token: SealedToken {
            nonce: row.get(2)?,
            ciphertext: row.get(3)?,
        },
        disabled: row.get::<_, i64>(4)? != 0,
        created: row.get(5)?,
        server_admin: row.get::<_, i64>(6)? != 0,
    })
}

const USER_SELECT: &str = "SELECT id, name, token_nonce, token_sealed, disabled, created, server_admin FROM users";

const S3_KEY_SELECT: &str = "SELECT k.access_key, k.user_id, k.org_id, k.read_only, k.secret_nonce, \
     k.secret_sealed, k.created, k.revoked, u.disabled FROM s3_keys k JOIN users u ON u.id = k.user_id";

fn s3_key_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<S3Key> {
    Ok(S3Key {
        access_key: row.get(0)?,
        user: UserId(row.get(1)?),
        org: row.get::<_, Option<String>>(2)?.as_deref().and_then(OrgId::parse),
        read_only: row.get::<_, i64>(3)? != 0,
        secret: SealedToken {
            nonce: row.get(4)?,
            ciphertext: row.get(5)?,
        },
        created: row.get(6)?,
        revoked: row.get(7)?,
        user_disabled: row.get::<_, i64>(8)? != 0,
    })
}

/// What deleting an empty organization removes (the freed bodies of its download jobs are in
/// `garbage` already, since its objects are gone; its pending parts' blobs are queued first).
const ORG_DELETION: [&str; 8] = [
    "DELETE FROM upload_parts WHERE org_id = ?1",
    "DELETE FROM uploads WHERE org_id = ?1",
    "DELETE FROM job_entries WHERE job_id IN (SELECT id FROM jobs WHERE org_id = ?1)",
    "DELETE FROM jobs WHERE org_id = ?1",
    "DELETE FROM s3_keys WHERE org_id = ?1",
    "DELETE FROM members WHERE org_id = ?1",
    "DELETE FROM folders WHERE org_id = ?1",
    "DELETE FROM orgs WHERE id = ?1",
];

/// The organization that has this bucket name, if any.
fn bucket_owner(conn: &Connection, bucket: &BucketAlias) -> MetaResult<Option<OrgId>> {
    let id: Option<String> = cached_row(
        conn,
        "SELECT id FROM orgs WHERE bucket = ?1",
        params![bucket.as_str()],
        |row| row.get(0),
    )
    .optional()?;
    Ok(id.as_deref().and_then(OrgId::parse))
}

fn membership_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, i64, Permissions)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        Permissions {
            read: row.get::<_, i64>(2)? != 0,
            write: row.get::<_, i64>(3)? != 0,
            delete: row.get::<_, i64>(4)? != 0,
            admin: row.get::<_, i64>(5)? != 0,
        },
    ))
}

/// An object row; `None` when a stored key or blob id is malformed.
fn object_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<ObjectMeta>> {
    let key: String = row.get(0)?;
    let blob: String = row.get(7)?;
    let (Ok(key), Some(blob)) = (Key::parse(&key), BlobId::parse(&blob)) else {
        return Ok(None);
    };
    Ok(Some(ObjectMeta {
        key,
        size: to_u64(row.get(1)?),
        md5: row.get(2)?,
        mime: row.get(3)?,
        preview: row.get(4)?,
        created: row.get(5)?,
        modified: row.get(6)?,
        blob,
        etag: row.get(8)?,
        user_meta: row.get(9)?,
    }))
}

/// The columns [`object_from_row`] reads, in its order.
const OBJECT_COLUMNS: &str = "key, size, md5, mime, preview, created, modified, blob_id, etag, user_meta";

fn load_object(conn: &Connection, org: &OrgId, key: &Key) -> MetaResult<Option<ObjectMeta>> {
    Ok(cached_row(
        conn,
        &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE org_id = ?1 AND key = ?2"),
        params![org.as_str(), key.as_str()],
        object_from_row,
    )
    .optional()?
    .flatten())
}

fn folder_exists(conn: &Connection, org: &OrgId, path: &str) -> MetaResult<bool> {
    Ok(cached_row(
        conn,
        "SELECT 1 FROM folders WHERE org_id = ?1 AND path = ?2",
        params![org.as_str(), path],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

fn file_exists(conn: &Connection, org: &OrgId, key: &str) -> MetaResult<bool> {
    Ok(cached_row(
        conn,
        "SELECT 1 FROM objects WHERE org_id = ?1 AND key = ?2",
        params![org.as_str(), key],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

fn root_usage(conn: &Connection, org: &OrgId) -> MetaResult<Option<Usage>> {
    folder_usage_of(conn, org, "")
}

/// The figures of the folder at `path` (`""`: the root).
fn folder_usage_of(conn: &Connection, org: &OrgId, path: &str) -> MetaResult<Option<Usage>> {
    Ok(cached_row(
        conn,
        "SELECT bytes, files FROM folders WHERE org_id = ?1 AND path = ?2",
        params![org.as_str(), path],
        |row| {
            Ok(Usage {
                bytes: to_u64(row.get(0)?),
                files: to_u64(row.get(1)?),
            })
        },
    )
    .optional()?)
}

/// Creates or replaces an object with its folder rows, usage and the replaced blob's collection,
/// or refuses it; runs inside the writer's transaction.
fn put_object_tx(conn: &Connection, org: &OrgId, object: &NewObject, quota: Quota) -> MetaResult<PutOutcome> {
    put_object_releasing(conn, org, object, quota, 0)
}

/// [`put_object_tx`], with `released` bytes of pending parts no longer counted by the quota check
/// (the parts of the upload this put completes).
fn put_object_releasing(
    conn: &Connection,
    org: &OrgId,
    object: &NewObject,
    quota: Quota,
    released: u64,
) -> MetaResult<PutOutcome> {
    if let Some(refusal) = put_conflict(conn, org, &object.key)? {
        return Ok(PutOutcome::Refused(refusal));
    }
    let stored = root_usage(conn, org)?.ok_or_else(|| MetaError::no_root_folder(org))?;
    let usage = counted_usage(stored, pending_bytes(conn, org)?, released);
    let replaced = replaced_object(conn, org, &object.key)?;
    if let Some(refusal) = refuse_existing(object, replaced.as_ref()) {
        return Ok(PutOutcome::Refused(refusal));
    }
    let delta = PutDelta::of(object.size, replaced.as_ref());
    if let Err(over) = check_quota(usage, quota, delta) {
        return Ok(PutOutcome::Refused(PutRefusal::Quota(over)));
    }
    upsert_object(conn, org, object, creation_time(object, replaced.as_ref(), object.now))?;
    add_to_folders(conn, org, &object.key, delta, object.now)?;
    let replaced = match replaced {
        Some(old) => {
            queue_garbage(conn, &old.blob, object.now)?;
            BlobId::parse(&old.blob)
        }
        None => None,
    };
    Ok(PutOutcome::Stored { replaced })
}

/// The bytes of the organization's pending multipart parts.
fn pending_bytes(conn: &Connection, org: &OrgId) -> MetaResult<u64> {
    let pending: Option<i64> = cached_row(
        conn,
        "SELECT pending_bytes FROM orgs WHERE id = ?1",
        params![org.as_str()],
        |row| row.get(0),
    )
    .optional()?;
    Ok(pending.map(to_u64).unwrap_or(0))
}

/// Adds `delta` (negative: takes it off) to the organization's pending bytes.
fn add_pending(conn: &Connection, org: &OrgId, delta: i64) -> MetaResult<()> {
    if delta != 0 {
        conn.prepare_cached("UPDATE orgs SET pending_bytes = MAX(pending_bytes + ?2, 0) WHERE id = ?1")?
            .execute(params![org.as_str(), delta])?;
    }
    Ok(())
}

// --- multipart uploads ---

const UPLOAD_SELECT: &str = "SELECT id, org_id, key, user_id, created, mime, user_meta FROM uploads";

/// An upload row; `None` when a stored organization id or key is malformed.
fn upload_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<MultipartUpload>> {
    let (org, key): (String, String) = (row.get(1)?, row.get(2)?);
    let (Some(org), Ok(key)) = (OrgId::parse(&org), Key::parse(&key)) else {
        return Ok(None);
    };
    Ok(Some(MultipartUpload {
        id: row.get(0)?,
        org,
        key,
        user: UserId(row.get(3)?),
        created: row.get(4)?,
        mime: row.get(5)?,
        user_meta: row.get(6)?,
    }))
}

/// A part row (number, blob, size, md5, modified); `None` when its number or blob id is malformed.
fn part_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<PartRecord>> {
    let (number, blob): (i64, String) = (row.get(0)?, row.get(1)?);
    let (Ok(number), Some(blob)) = (u32::try_from(number), BlobId::parse(&blob)) else {
        return Ok(None);
    };
    Ok(Some(PartRecord {
        number,
        blob,
        size: to_u64(row.get(2)?),
        md5: row.get(3)?,
        modified: row.get(4)?,
    }))
}

fn upload_exists(conn: &Connection, org: &OrgId, id: &str) -> MetaResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM uploads WHERE org_id = ?1 AND id = ?2")?
        .exists(params![org.as_str(), id])?)
}

fn put_part_tx(conn: &Connection, org: &OrgId, id: &str, part: &PartRecord, quota: Quota) -> MetaResult<PartOutcome> {
    if !upload_exists(conn, org, id)? {
        return Ok(PartOutcome::NoSuchUpload);
    }
    let stored = root_usage(conn, org)?.ok_or_else(|| MetaError::no_root_folder(org))?;
    let replaced: Option<(i64, String)> = cached_row(
        conn,
        "SELECT size, blob_id FROM upload_parts WHERE org_id = ?1 AND upload_id = ?2 AND number = ?3",
        params![org.as_str(), id, part.number],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()?;
    let delta = part_delta(part.size, replaced.as_ref().map(|(size, _)| to_u64(*size)));
    if let Err(over) = check_quota(counted_usage(stored, pending_bytes(conn, org)?, 0), quota, delta) {
        return Ok(PartOutcome::Quota(over));
    }
    conn.prepare_cached(
        "INSERT INTO upload_parts (org_id, upload_id, number, blob_id, size, md5, modified) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (org_id, upload_id, number) DO UPDATE SET \
         blob_id = excluded.blob_id, size = excluded.size, md5 = excluded.md5, modified = excluded.modified",
    )?
    .execute(params![
        org.as_str(),
        id,
        part.number,
        part.blob.as_str(),
        to_i64(part.size),
        part.md5,
        part.modified
    ])?;
    add_pending(conn, org, delta.bytes)?;
    let replaced = match replaced {
        Some((_, old)) if old != part.blob.as_str() => {
            queue_garbage(conn, &old, part.modified)?;
            BlobId::parse(&old)
        }
        _ => None,
    };
    Ok(PartOutcome::Stored { replaced })
}

/// The bytes of an upload's parts.
fn upload_bytes(conn: &Connection, org: &OrgId, id: &str) -> MetaResult<u64> {
    let total: i64 = cached_row(
        conn,
        "SELECT COALESCE(SUM(size), 0) FROM upload_parts WHERE org_id = ?1 AND upload_id = ?2",
        params![org.as_str(), id],
        |row| row.get(0),
    )?;
    Ok(to_u64(total))
}

/// Removes an upload of `bytes` bytes of parts and its parts, queueing their blobs for collection.
fn remove_upload(conn: &Connection, org: &OrgId, id: &str, bytes: u64, now: Millis) -> MetaResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO garbage (blob_id, since) \
         SELECT blob_id, ?3 FROM upload_parts WHERE org_id = ?1 AND upload_id = ?2",
    )?
    .execute(params![org.as_str(), id, now])?;
    conn.prepare_cached("DELETE FROM upload_parts WHERE org_id = ?1 AND upload_id = ?2")?
        .execute(params![org.as_str(), id])?;
    conn.prepare_cached("DELETE FROM uploads WHERE org_id = ?1 AND id = ?2")?
        .execute(params![org.as_str(), id])?;
    add_pending(conn, org, to_i64(bytes).saturating_neg())
}

fn complete_upload_tx(
    conn: &Connection,
    org: &OrgId,
    id: &str,
    object: &NewObject,
    quota: Quota,
) -> MetaResult<CompleteOutcome> {
    if !upload_exists(conn, org, id)? {
        return Ok(CompleteOutcome::NoSuchUpload);
    }
    let released = upload_bytes(conn, org, id)?;
    match put_object_releasing(conn, org, object, quota, released)? {
        PutOutcome::Refused(refusal) => Ok(CompleteOutcome::Refused(refusal)),
        PutOutcome::Stored { replaced } => {
            remove_upload(conn, org, id, released, object.now)?;
            Ok(CompleteOutcome::Stored { replaced })
        }
    }
}

/// Why `key` cannot be a file: a folder above it is a file, or it is a folder itself.
fn put_conflict(conn: &Connection, org: &OrgId, key: &Key) -> MetaResult<Option<PutRefusal>> {
    for folder in key.ancestors().iter().skip(1) {
        if file_exists(conn, org, folder.as_str())? {
            return Ok(Some(PutRefusal::AncestorIsFile(folder.as_str().to_owned())));
        }
    }
    if folder_exists(conn, org, key.as_str())? {
        return Ok(Some(PutRefusal::IsFolder));
    }
    Ok(None)
}

/// The object a put would replace.
fn replaced_object(conn: &Connection, org: &OrgId, key: &Key) -> MetaResult<Option<Replaced>> {
    Ok(cached_row(
        conn,
        "SELECT size, created, blob_id FROM objects WHERE org_id = ?1 AND key = ?2",
        params![org.as_str(), key.as_str()],
        |row| {
            Ok(Replaced {
                size: to_u64(row.get(0)?),
                created: row.get(1)?,
                blob: row.get(2)?,
            })
        },
    )
    .optional()?)
}

/// Writes the object row, keeping `created` of a row it replaces.
fn upsert_object(conn: &Connection, org: &OrgId, object: &NewObject, created: Millis) -> MetaResult<()> {
    cached_exec(
        conn,
        "INSERT INTO objects (org_id, key, parent, name, size, md5, mime, preview, created, modified, blob_id, \
         etag, user_meta) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (org_id, key) DO UPDATE SET size = excluded.size, md5 = excluded.md5, mime = excluded.mime, \
         preview = excluded.preview, modified = excluded.modified, blob_id = excluded.blob_id, \
         etag = excluded.etag, user_meta = excluded.user_meta",
        params![
            org.as_str(),
            object.key.as_str(),
            object.key.parent_str(),
            object.key.name(),
            to_i64(object.size),
            object.md5,
            object.mime,
            object.preview,
            created,
            object.now,
            object.blob.as_str(),
            object.etag,
            object.user_meta
        ],
    )?;
    Ok(())
}

/// A value of the store-wide counter that no folder row has held (see `rules::ListingMarks`).
fn fresh_children_version(conn: &Connection) -> MetaResult<i64> {
    Ok(cached_row(
        conn,
        "UPDATE children_versions SET last = last + 1 WHERE id = 0 RETURNING last",
        [],
        |row| row.get(0),
    )?)
}

/// Adds a put's figures to every folder above its key, creating the folders that had no row.
fn add_to_folders(conn: &Connection, org: &OrgId, key: &Key, delta: PutDelta, now: Millis) -> MetaResult<()> {
    let ancestors = key.ancestors();
    let mut missing = Vec::new();
    // A new key changes the children of its folder (and of the folders it creates).
    let version = if delta.files != 0 {
        Some(fresh_children_version(conn)?)
    } else {
        None
    };
    for folder in &ancestors {
        let child_files = delta.child_files_in(folder, key);
        let updated = cached_exec(
            conn,
            "UPDATE folders SET bytes = bytes + ?3, files = files + ?4, child_files = child_files + ?5, \
             modified = MAX(modified, ?6), children_version = COALESCE(?7, children_version) \
             WHERE org_id = ?1 AND path = ?2",
            params![
                org.as_str(),
                folder.as_str(),
                delta.bytes,
                delta.files,
                child_files,
                now,
                version.filter(|_| child_files != 0)
            ],
        )?;
        if updated == 0 {
            missing.push(folder);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let growth = folder_growth(key, &missing, delta);
    let version = match version {
        Some(version) => version,
        None => fresh_children_version(conn)?,
    };
    for folder in &growth.created {
        cached_exec(
            conn,
            "INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified, \
             children_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                org.as_str(),
                folder.path.as_str(),
                folder.parent.as_ref().map(FolderPath::as_str),
                folder.path.name(),
                delta.bytes,
                delta.files,
                folder.child_folders,
                folder.child_files,
                now,
                version
            ],
        )?;
    }
    for parent in &growth.gaining_child {
        cached_exec(
            conn,
            "UPDATE folders SET child_folders = child_folders + 1, children_version = ?3 \
             WHERE org_id = ?1 AND path = ?2",
            params![org.as_str(), parent.as_str(), version],
        )?;
    }
    Ok(())
}

/// Queues a blob no object names any more for collection.
fn queue_garbage(conn: &Connection, blob: &str, now: Millis) -> MetaResult<()> {
    cached_exec(
        conn,
        "INSERT OR IGNORE INTO garbage (blob_id, since) VALUES (?1, ?2)",
        params![blob, now],
    )?;
    Ok(())
}

/// Takes a delete's figures off `start` and every folder above it (see [`Detach`]). Folders left
/// empty are removed; the newest modification is recomputed from the remaining children (index
/// lookups).
fn detach(conn: &Connection, org: &OrgId, start: FolderPath, mut detach: Detach) -> MetaResult<()> {
    let mut current = Some(start);
    while let Some(path) = current {
        let step = detach.step();
        let version = if step.child_files != 0 || step.child_folders != 0 {
            Some(fresh_children_version(conn)?)
        } else {
            None
        };
        cached_exec(
            conn,
            "UPDATE folders SET bytes = bytes - ?3, files = files - ?4, child_files = child_files - ?5, \
             child_folders = child_folders - ?6, children_version = COALESCE(?7, children_version) \
             WHERE org_id = ?1 AND path = ?2",
            params![
                org.as_str(),
                path.as_str(),
                step.bytes,
                step.files,
                step.child_files,
                step.child_folders,
                version
            ],
        )?;
        let remaining: i64 = cached_row(
            conn,
            "SELECT files FROM folders WHERE org_id = ?1 AND path = ?2",
            params![org.as_str(), path.as_str()],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0);
        if detach.removes(&path, remaining) {
            cached_exec(
                conn,
                "DELETE FROM folders WHERE org_id = ?1 AND path = ?2",
                params![org.as_str(), path.as_str()],
            )?;
        } else {
            let newest: Option<i64> = cached_row(
                conn,
                "SELECT MAX(m) FROM (SELECT MAX(modified) AS m FROM objects WHERE org_id = ?1 AND parent = ?2 \
                 UNION ALL SELECT MAX(modified) AS m FROM folders WHERE org_id = ?1 AND parent = ?2)",
                params![org.as_str(), path.as_str()],
                |row| row.get(0),
            )?;
            if let Some(newest) = newest {
                cached_exec(
                    conn,
                    "UPDATE folders SET modified = ?3 WHERE org_id = ?1 AND path = ?2",
                    params![org.as_str(), path.as_str(), newest],
                )?;
            }
        }
        current = path.parent();
    }
    Ok(())
}

fn delete_tx(conn: &Connection, org: &OrgId, key: &Key, now: Millis) -> MetaResult<DeleteOutcome> {
    let file: Option<(i64, String)> = cached_row(
        conn,
        "SELECT size, blob_id FROM objects WHERE org_id = ?1 AND key = ?2",
        params![org.as_str(), key.as_str()],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()?;
    if let Some((size, blob)) = file {
        cached_exec(
            conn,
            "DELETE FROM objects WHERE org_id = ?1 AND key = ?2",
            params![org.as_str(), key.as_str()],
        )?;
        queue_garbage(conn, &blob, now)?;
        detach(conn, org, key.parent(), Detach::file(to_u64(size)))?;
        return Ok(DeleteOutcome::File);
    }
    let folder: Option<(i64, i64)> = cached_row(
        conn,
        "SELECT bytes, files FROM folders WHERE org_id = ?1 AND path = ?2",
        params![org.as_str(), key.as_str()],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()?;
    let Some((bytes, files)) = folder else {
        return Ok(DeleteOutcome::NotFound);
    };
    let (low, high) = key.as_folder().descendant_range();
    cached_exec(
        conn,
        "INSERT OR IGNORE INTO garbage (blob_id, since) \
         SELECT blob_id, ?4 FROM objects WHERE org_id = ?1 AND key >= ?2 AND key < ?3",
        params![org.as_str(), low, high, now],
    )?;
    cached_exec(
        conn,
        "DELETE FROM objects WHERE org_id = ?1 AND key >= ?2 AND key < ?3",
        params![org.as_str(), low, high],
    )?;
    cached_exec(
        conn,
        "DELETE FROM folders WHERE org_id = ?1 AND (path = ?2 OR (path >= ?3 AND path < ?4))",
        params![org.as_str(), key.as_str(), low, high],
    )?;
    detach(conn, org, key.parent(), Detach::folder(to_u64(bytes), to_u64(files)))?;
    Ok(DeleteOutcome::Folder {
        files: to_u64(files),
        bytes: to_u64(bytes),
    })
}

/// A window of a folder's child folders from a name on; answered from `folders_listing` alone.
const LIST_FOLDERS_SQL: &str = "SELECT name, bytes, modified FROM folders WHERE org_id = ?1 AND parent = ?2 \
     AND name >= ?3 ORDER BY name LIMIT ?4 OFFSET ?5";
/// A window of a folder's files from a name on; answered from `objects_listing` alone.
const LIST_FILES_SQL: &str = "SELECT name, size, mime, modified FROM objects WHERE org_id = ?1 AND parent = ?2 \
     AND name >= ?3 ORDER BY name LIMIT ?4 OFFSET ?5";
/// The marks of a folder's child folders from a name on (see [`MarkScan`]): `?4` times, the
/// name `?5` entries after the last one found, each a short range of `folders_listing`.
const FOLDER_MARKS_SQL: &str = "WITH RECURSIVE m(name, k) AS (SELECT ?3, 0 UNION ALL \
     SELECT (SELECT c.name FROM folders c WHERE c.org_id = ?1 AND c.parent = ?2 AND c.name >= m.name \
     ORDER BY c.name LIMIT 1 OFFSET ?5), m.k + 1 FROM m WHERE m.k < ?4 AND m.name IS NOT NULL) \
     SELECT name FROM m WHERE m.k > 0 AND m.name IS NOT NULL ORDER BY m.k";
/// The marks of a folder's files from a name on, as [`FOLDER_MARKS_SQL`] on `objects_listing`.
const FILE_MARKS_SQL: &str = "WITH RECURSIVE m(name, k) AS (SELECT ?3, 0 UNION ALL \
     SELECT (SELECT c.name FROM objects c WHERE c.org_id = ?1 AND c.parent = ?2 AND c.name >= m.name \
     ORDER BY c.name LIMIT 1 OFFSET ?5), m.k + 1 FROM m WHERE m.k < ?4 AND m.name IS NOT NULL) \
     SELECT name FROM m WHERE m.k > 0 AND m.name IS NOT NULL ORDER BY m.k";

/// Where `window` of the `kind` children of `folder` starts, scanning for marks when needed.
fn seek_window(
    conn: &Connection,
    marks: &ListingMarks,
    (org, folder): (&OrgId, &FolderPath),
    kind: ChildKind,
    version: i64,
    window: Window,
) -> MetaResult<Keyset> {
    match marks.seek(org, folder, kind, version, window) {
        Seek::Read(keyset) => Ok(keyset),
        Seek::Scan(scan) => {
            let sql = match kind {
                ChildKind::Folders => FOLDER_MARKS_SQL,
                ChildKind::Files => FILE_MARKS_SQL,
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let names = stmt
                .query_map(
                    params![org.as_str(), folder.as_str(), scan.from, scan.marks, scan.stride],
                    |row| row.get(0),
                )?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(marks.scanned(scan, names))
        }
    }
}

fn list_tx(
    conn: &Connection,
    marks: &ListingMarks,
    org: &OrgId,
    folder: &FolderPath,
    page: u64,
    page_size: u64,
) -> MetaResult<ListPage> {
    let counts: Option<(i64, i64, i64)> = cached_row(
        conn,
        "SELECT child_folders, child_files, children_version FROM folders WHERE org_id = ?1 AND path = ?2",
        params![org.as_str(), folder.as_str()],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .optional()?;
    let usage = root_usage(conn, org)?.unwrap_or_default();
    let Some((child_folders, child_files, version)) = counts else {
        return Ok(ListPage {
            usage,
            ..ListPage::default()
        });
    };
    let plan = PagePlan::new(to_u64(child_folders), to_u64(child_files), page, page_size);
    let mut entries = Vec::new();
    if let Some(window) = plan.folders() {
        let keyset = seek_window(conn, marks, (org, folder), ChildKind::Folders, version, window)?;
        let mut stmt = conn.prepare_cached(LIST_FOLDERS_SQL)?;
        let rows = stmt.query_map(
            params![org.as_str(), folder.as_str(), keyset.from, keyset.limit, keyset.skip],
            |row| {
                Ok(ListEntry {
                    name: row.get(0)?,
                    is_folder: true,
                    size: to_u64(row.get(1)?),
                    mime: "directory".into(),
                    modified: row.get(2)?,
                })
            },
        )?;
        for row in rows {
            entries.push(row?);
        }
    }
    if let Some(window) = plan.files(entries.len()) {
        let keyset = seek_window(conn, marks, (org, folder), ChildKind::Files, version, window)?;
        let mut stmt = conn.prepare_cached(LIST_FILES_SQL)?;
        let rows = stmt.query_map(
            params![org.as_str(), folder.as_str(), keyset.from, keyset.limit, keyset.skip],
            |row| {
                Ok(ListEntry {
                    name: row.get(0)?,
                    is_folder: false,
                    size: to_u64(row.get(1)?),
                    mime: row.get(2)?,
                    modified: row.get(3)?,
                })
            },
        )?;
        for row in rows {
            entries.push(row?);
        }
    }
    Ok(ListPage {
        entries,
        total_entries: plan.total,
        usage,
    })
}

/// A page of files from `from` on, in key order; answered from the primary key alone.
const FILES_FROM_SQL: &str = "SELECT key, size, md5, mime, preview, created, modified, blob_id, etag, user_meta \
     FROM objects WHERE org_id = ?1 AND key >= ?2 ORDER BY key LIMIT ?3";
/// [`FILES_FROM_SQL`] after `from`.
const FILES_AFTER_SQL: &str = "SELECT key, size, md5, mime, preview, created, modified, blob_id, etag, user_meta \
     FROM objects WHERE org_id = ?1 AND key > ?2 ORDER BY key LIMIT ?3";
/// A folder's files from a name on, in name order: a range of `objects_listing`.
const CHILD_FILES_FROM_SQL: &str = "SELECT key, size, md5, mime, preview, created, modified, blob_id, etag, user_meta \
     FROM objects WHERE org_id = ?1 AND parent = ?2 AND name >= ?3 ORDER BY name LIMIT ?4";
/// [`CHILD_FILES_FROM_SQL`] after the name.
const CHILD_FILES_AFTER_SQL: &str = "SELECT key, size, md5, mime, preview, created, modified, blob_id, etag, user_meta \
     FROM objects WHERE org_id = ?1 AND parent = ?2 AND name > ?3 ORDER BY name LIMIT ?4";
/// A folder's child folder names from a name on, in name order: a range of `folders_listing`.
const CHILD_FOLDERS_FROM_SQL: &str =
    "SELECT name FROM folders WHERE org_id = ?1 AND parent = ?2 AND name >= ?3 ORDER BY name LIMIT ?4";
/// [`CHILD_FOLDERS_FROM_SQL`] after the name.
const CHILD_FOLDERS_AFTER_SQL: &str =
    "SELECT name FROM folders WHERE org_id = ?1 AND parent = ?2 AND name > ?3 ORDER BY name LIMIT ?4";

/// Collects object rows (a malformed one is left out).
fn objects_of(stmt: &mut rusqlite::CachedStatement<'_>, params: impl rusqlite::Params) -> MetaResult<Vec<ObjectMeta>> {
    let rows = stmt.query_map(params, object_from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.extend(row?);
    }
    Ok(out)
}

fn files_from_tx(
    conn: &Connection,
    org: &OrgId,
    from: &str,
    inclusive: bool,
    limit: usize,
) -> MetaResult<Vec<ObjectMeta>> {
    let sql = if inclusive { FILES_FROM_SQL } else { FILES_AFTER_SQL };
    objects_of(
        &mut conn.prepare_cached(sql)?,
        params![org.as_str(), from, count_to_i64(limit)],
    )
}

/// A folder's children in S3-name order (see `rules::S3FolderOrder`).
fn children_from_tx(
    conn: &Connection,
    org: &OrgId,
    folder: &FolderPath,
    from: &str,
    inclusive: bool,
    limit: usize,
) -> MetaResult<Vec<Child>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let sql = if inclusive {
        CHILD_FILES_FROM_SQL
    } else {
        CHILD_FILES_AFTER_SQL
    };
    let files = objects_of(
        &mut conn.prepare_cached(sql)?,
        params![org.as_str(), folder.as_str(), from, count_to_i64(limit)],
    )?;
    let mut order = S3FolderOrder::default();
    let mut exists = conn.prepare_cached("SELECT 1 FROM folders WHERE org_id = ?1 AND parent = ?2 AND name = ?3")?;
    for name in folder_prefixes_from(from, inclusive) {
        if exists.exists(params![org.as_str(), folder.as_str(), name])? {
            order.push(name.to_owned());
        }
    }
    let batch = folder_batch(limit);
    let (mut after, mut sql) = (from.to_owned(), CHILD_FOLDERS_FROM_SQL);
    loop {
        let mut stmt = conn.prepare_cached(sql)?;
        let names = stmt
            .query_map(
                params![org.as_str(), folder.as_str(), after, count_to_i64(batch)],
                |row| row.get::<_, String>(0),
            )?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        let read = names.len();
        if let Some(last) = names.last() {
            after.clone_from(last);
        }
        for name in names {
            order.push(name);
        }
        if read < batch || order.ready() >= limit {
            break;
        }
        sql = CHILD_FOLDERS_AFTER_SQL;
    }
    let folders = order
        .finish(limit)
        .into_iter()
        .filter_map(|name| child_folder(folder, &name))
        .collect();
    Ok(merge_children(files, folders, limit))
}

/// One entry of a job as recorded: key, blob id, size, modification time.
type JobRow = (String, String, i64, i64);

/// Makes room for one more job of `org`: when it already holds `max_live_jobs` unexpired jobs,
/// the oldest expire now (their links answer "expired"; collection forgets them as usual).
fn make_room_for_job(conn: &Connection, org: &OrgId, now: Millis, limits: JobLimits) -> MetaResult<()> {
    let live: i64 = cached_row(
        conn,
        "SELECT COUNT(*) FROM jobs WHERE org_id = ?1 AND expires > ?2",
        params![org.as_str(), now],
        |row| row.get(0),
    )?;
    let expire = jobs_to_expire(to_u64(live), limits.max_live_jobs);
    if expire > 0 {
        conn.prepare_cached(
            "UPDATE jobs SET expires = ?2 WHERE id IN \
             (SELECT id FROM jobs WHERE org_id = ?1 AND expires > ?2 ORDER BY expires, created LIMIT ?3)",
        )?
        .execute(params![org.as_str(), now, expire])?;
    }
    Ok(())
}

/// The blob, size and modification time of file `key`, or `None` when no file has that key.
fn job_file(conn: &Connection, org: &OrgId, key: &Key) -> MetaResult<Option<(String, i64, i64)>> {
    Ok(cached_row(
        conn,
        "SELECT blob_id, size, modified FROM objects WHERE org_id = ?1 AND key = ?2",
        params![org.as_str(), key.as_str()],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .optional()?)
}

/// The files `keys` name, as `conn`'s snapshot holds them (each key a file, else a folder of
/// everything under it), sorted by key; or the refusal when there are too many or none.
fn expand_job(
    conn: &Connection,
    org: &OrgId,
    keys: &[Key],
    limits: JobLimits,
) -> MetaResult<Result<Vec<JobRow>, JobOutcome>> {
    let mut entries: std::collections::BTreeMap<String, (String, i64, i64)> = std::collections::BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT key, blob_id, size, modified FROM objects WHERE org_id = ?1 AND key >= ?2 AND key < ?3",
    )?;
    for key in keys {
        let file = job_file(conn, org, key)?;
        if let Some(file) = file {
            entries.insert(key.as_str().to_owned(), file);
        } else {
            let (low, high) = key.as_folder().descendant_range();
            let rows = stmt.query_map(params![org.as_str(), low, high], |row| {
                Ok((row.get::<_, String>(0)?, (row.get(1)?, row.get(2)?, row.get(3)?)))
            })?;
            for row in rows {
                let (k, v) = row?;
                entries.insert(k, v);
                if entries.len() as u64 > limits.max_files {
                    break;
                }
            }
        }
        if entries.len() as u64 > limits.max_files {
            return Ok(Err(JobOutcome::TooManyFiles {
                limit: limits.max_files,
            }));
        }
    }
    if entries.is_empty() {
        return Ok(Err(JobOutcome::NothingFound));
    }
    Ok(Ok(entries
        .into_iter()
        .map(|(key, (blob, size, modified))| (key, blob, size, modified))
        .collect()))
}

/// A job whose keys all name files (the common case: a get of one file) is looked up and recorded
/// in one write, where it is exact, as long as it names at most this many keys; other jobs are
/// expanded on a snapshot first.
const FILES_JOB_KEYS: usize = 16;

/// Records a job over `keys` in one write when every key names a file (point lookups only, no
/// folder scan); `None`, with nothing written, when one is a folder or missing.
fn record_files_job(
    conn: &Connection,
    org: &OrgId,
    keys: &[Key],
    now: Millis,
    expires: Millis,
    limits: JobLimits,
) -> MetaResult<Option<JobOutcome>> {
    let mut rows: Vec<JobRow> = Vec::with_capacity(keys.len());
    for key in keys {
        let file = job_file(conn, org, key)?;
        let Some((blob, size, modified)) = file else {
            return Ok(None);
        };
        rows.push((key.as_str().to_owned(), blob, size, modified));
    }
    rows.sort();
    rows.dedup_by(|a, b| a.0 == b.0);
    if rows.len() as u64 > limits.max_files {
        return Ok(Some(JobOutcome::TooManyFiles {
            limit: limits.max_files,
        }));
    }
    record_job_now(conn, org, &rows, now, expires, limits).map(Some)
}

/// Records `rows` as entries of job `id` if every one still names the current body of its key;
/// else records nothing and answers `false`. Inside the writer this is exact: a body that is
/// current now moves to `garbage` only by a later write, when the entry already pins it.
fn insert_job_entries(conn: &Connection, id: &JobId, org: &OrgId, rows: &[JobRow]) -> MetaResult<bool> {
    let mut current = conn.prepare_cached("SELECT 1 FROM objects WHERE org_id = ?1 AND key = ?2 AND blob_id = ?3")?;
    for (key, blob, _, _) in rows {
        if !current.exists(params![org.as_str(), key, blob])? {
            return Ok(false);
        }
    }
    let mut insert = conn
        .prepare_cached("INSERT INTO job_entries (job_id, key, blob_id, size, modified) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for (key, blob, size, modified) in rows {
        insert.execute(params![id.as_str(), key, blob, size, modified])?;
    }
    Ok(true)
}

/// Records a job in one write, expanding its keys inside it (the fallback when bodies keep
/// changing under a job recorded in slices).
fn create_job_tx(
    conn: &Connection,
    org: &OrgId,
    keys: &[Key],
    now: Millis,
    expires: Millis,
    limits: JobLimits,
) -> MetaResult<JobOutcome> {
    let rows = match expand_job(conn, org, keys, limits)? {
        Ok(rows) => rows,
        Err(refused) => return Ok(refused),
    };
    record_job_now(conn, org, &rows, now, expires, limits)
}

/// Records a job with `rows` (read in this same write transaction) as its entries.
fn record_job_now(
    conn: &Connection,
    org: &OrgId,
    rows: &[JobRow],
    now: Millis,
    expires: Millis,
    limits: JobLimits,
) -> MetaResult<JobOutcome> {
    let id = JobId::generate();
    make_room_for_job(conn, org, now, limits)?;
    insert_job_row(conn, &id, org, now, expires)?;
    if !insert_job_entries(conn, &id, org, rows)? {
        return Err(MetaError::failed("a job's files changed inside one transaction"));
    }
    Ok(JobOutcome::Created(Job {
        id,
        org: org.clone(),
        created: now,
        expires,
    }))
}

fn insert_job_row(conn: &Connection, id: &JobId, org: &OrgId, now: Millis, expires: Millis) -> MetaResult<()> {
    cached_exec(
        conn,
        "INSERT INTO jobs (id, org_id, created, expires) VALUES (?1, ?2, ?3, ?4)",
        params![id.as_str(), org.as_str(), now, expires],
    )?;
    Ok(())
}

/// Removes a job being recorded whose files changed meanwhile.
fn drop_job(conn: &Connection, id: &JobId) -> MetaResult<()> {
    cached_exec(conn, "DELETE FROM job_entries WHERE job_id = ?1", params![id.as_str()])?;
    cached_exec(conn, "DELETE FROM jobs WHERE id = ?1", params![id.as_str()])?;
    Ok(())
}

/// Folder rows as an organization's object rows imply them.
fn implied_folders(conn: &Connection, org: &OrgId) -> MetaResult<FolderRows> {
    let mut folders = ImpliedFolders::default();
    let mut stmt = conn.prepare("SELECT key, size, modified FROM objects WHERE org_id = ?1")?;
    let rows = stmt.query_map(params![org.as_str()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get(2)?))
    })?;
    for row in rows {
        let (key, size, modified): (String, i64, i64) = row?;
        if let Ok(key) = Key::parse(&key) {
            folders.add(&key, to_u64(size), modified);
        }
    }
    Ok(folders.finish())
}

/// An organization's stored folder rows (a row whose path is not a folder path is left out).
fn stored_folders(conn: &Connection, org: &OrgId) -> MetaResult<FolderRows> {
    let mut stmt =
        conn.prepare("SELECT path, bytes, files, child_folders, child_files, modified FROM folders WHERE org_id = ?1")?;
    let rows = stmt.query_map(params![org.as_str()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            FolderFigures {
                bytes: to_u64(r.get(1)?),
                files: to_u64(r.get(2)?),
                child_folders: to_u64(r.get(3)?),
                child_files: to_u64(r.get(4)?),
                modified: r.get(5)?,
            },
        ))
    })?;
    let mut out = FolderRows::new();
    for row in rows {
        let (path, figures) = row?;
        if let Ok(path) = FolderPath::parse(&path) {
            out.insert(path, figures);
        }
    }
    Ok(out)
}

fn folder_differences(conn: &Connection, org: &OrgId) -> MetaResult<Vec<FolderDifference>> {
    let implied = implied_folders(conn, org)?;
    let stored = stored_folders(conn, org)?;
    Ok(compare_folders(org, &implied, &stored))
}

fn repair_folders(conn: &Connection, differences: &[FolderDifference]) -> MetaResult<()> {
    if differences.is_empty() {
        return Ok(());
    }
    // A repaired row changes the children of its parent: every folder of the organizations
    // repaired takes a new version (one new value serves them all: it is new for each folder).
    let version = fresh_children_version(conn)?;
    for d in differences {
        match d.implied {
            None => {
                cached_exec(
                    conn,
                    "DELETE FROM folders WHERE org_id = ?1 AND path = ?2",
                    params![d.org.as_str(), d.path.as_str()],
                )?;
            }
            Some(f) => {
                cached_exec(
                    conn,
                    "INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified, \
                     children_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                     ON CONFLICT (org_id, path) DO UPDATE SET \
                     bytes = excluded.bytes, files = excluded.files, child_folders = excluded.child_folders, \
                     child_files = excluded.child_files, modified = excluded.modified, \
                     children_version = excluded.children_version",
                    params![
                        d.org.as_str(),
                        d.path.as_str(),
                        d.path.parent().as_ref().map(FolderPath::as_str),
                        d.path.name(),
                        to_i64(f.bytes),
                        to_i64(f.files),
                        to_i64(f.child_folders),
                        to_i64(f.child_files),
                        f.modified,
                        version
                    ],
                )?;
            }
        }
    }
    let mut orgs: Vec<&str> = differences.iter().map(|d| d.org.as_str()).collect();
    orgs.dedup();
    for org in orgs {
        cached_exec(
            conn,
            "UPDATE folders SET children_version = ?2 WHERE org_id = ?1",
            params![org, version],
        )?;
    }
    Ok(())
}

#[async_trait]
impl Identities for SqliteMeta {
    async fn create_org(
        &self,
        name: &str,
        max_bytes: Option<u64>,
        max_files: Option<u64>,
        now: Millis,
    ) -> MetaResult<OrgId> {
        let name = name.to_owned();
        self.write(move |conn| insert_org(conn, &name, max_bytes, max_files, now))
            .await
    }

    async fn org(&self, org: &OrgId) -> MetaResult<Option<Organization>> {
        self.lookup(|conn| {
            Ok(cached_row(
                conn,
                &format!("{ORG_SELECT} WHERE o.id = ?1"),
                params![org.as_str()],
                org_from_row,
            )
            .optional()?
            .flatten())
        })
    }

    async fn list_orgs(&self) -> MetaResult<Vec<Organization>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("{ORG_SELECT} ORDER BY o.created, o.id"))?;
            let rows = stmt.query_map([], org_from_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.extend(row?);
            }
            Ok(out)
        })
        .await
    }

    async fn set_quota(&self, org: &OrgId, max_bytes: Option<u64>, max_files: Option<u64>) -> MetaResult<bool> {
        let org = org.clone();
        self.write(move |conn| {
            let changed = cached_exec(
                conn,
                "UPDATE orgs SET max_bytes = ?2, max_files = ?3 WHERE id = ?1",
                params![org.as_str(), max_bytes.map(to_i64), max_files.map(to_i64)],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    async fn create_bucket_org(
        &self,
        name: &str,
        bucket: &BucketAlias,
        admin: Option<UserId>,
        now: Millis,
    ) -> MetaResult<Result<OrgId, BucketRefusal>> {
        let (name, bucket) = (name.to_owned(), bucket.clone());
        // One write task: the check and the inserts run under the writer's transaction.
        self.write(move |conn| {
            if let Some(owner) = bucket_owner(conn, &bucket)? {
                return Ok(Err(BucketRefusal::Taken(owner)));
            }
            let org = insert_org(conn, &name, None, None, now)?;
            cached_exec(
                conn,
                "UPDATE orgs SET bucket = ?2 WHERE id = ?1",
                params![org.as_str(), bucket.as_str()],
            )?;
            if let Some(user) = admin {
                upsert_member(conn, &org, user, Permissions::ALL)?;
            }
            Ok(Ok(org))
        })
        .await
    }

    async fn delete_empty_org(&self, org: &OrgId) -> MetaResult<OrgDeletion> {
        let org = org.clone();
        self.write(move |conn| {
            let Some(usage) = root_usage(conn, &org)? else {
                return Ok(OrgDeletion::Unknown);
            };
            if usage.files > 0 {
                return Ok(OrgDeletion::NotEmpty);
            }
            cached_exec(
                conn,
                "INSERT OR IGNORE INTO garbage (blob_id, since) SELECT blob_id, ?2 FROM upload_parts WHERE org_id = ?1",
                params![org.as_str(), chrono::Utc::now().timestamp_millis()],
            )?;
            for sql in ORG_DELETION {
                cached_exec(conn, sql, params![org.as_str()])?;
            }
            Ok(OrgDeletion::Deleted)
        })
        .await
    }

    async fn set_org_bucket(&self, org: &OrgId, bucket: Option<&BucketAlias>) -> MetaResult<Result<(), BucketRefusal>> {
        let (org, bucket) = (org.clone(), bucket.cloned());
        self.write(move |conn| {
            if let Some(bucket) = &bucket
                && let Some(owner) = bucket_owner(conn, bucket)?
                && owner != org
            {
                return Ok(Err(BucketRefusal::Taken(owner)));
            }
            let changed = cached_exec(
                conn,
                "UPDATE orgs SET bucket = ?2 WHERE id = ?1",
                params![org.as_str(), bucket.as_ref().map(BucketAlias::as_str)],
            )?;
            Ok(if changed > 0 {
                Ok(())
            } else {
                Err(BucketRefusal::UnknownOrg)
            })
        })
        .await
    }

    async fn org_by_bucket(&self, bucket: &BucketAlias) -> MetaResult<Option<Organization>> {
        self.lookup(|conn| {
            Ok(cached_row(
                conn,
                &format!("{ORG_SELECT} WHERE o.bucket = ?1"),
                params![bucket.as_str()],
                org_from_row,
            )
            .optional()?
            .flatten())
        })
    }

    async fn create_user(
        &self,
        name: &str,
        server_admin: bool,
        now: Millis,
        seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
    ) -> MetaResult<Option<UserId>> {
        let name = name.to_owned();
        self.write(move |conn| insert_user(conn, &name, server_admin, now, seal).map(Some))
            .await
    }

    async fn create_first_identities(
        &self,
        org_name: &str,
        user_name: &str,
        now: Millis,
        seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
    ) -> MetaResult<Option<(OrgId, UserId)>> {
        let (org_name, user_name) = (org_name.to_owned(), user_name.to_owned());
        // One write task: the writer's transaction (BEGIN IMMEDIATE) holds the database's write
        // lock from the check to the inserts, against other processes too.
        self.write(move |conn| {
            if cached_row(conn, "SELECT EXISTS (SELECT 1 FROM users)", [], |row| {
                row.get::<_, bool>(0)
            })? {
                return Ok(None);
            }
            let org = insert_org(conn, &org_name, None, None, now)?;
            let user = insert_user(conn, &user_name, true, now, seal)?;
            upsert_member(conn, &org, user, Permissions::ALL)?;
            Ok(Some((org, user)))
        })
        .await
    }

    async fn user(&self, user: UserId) -> MetaResult<Option<User>> {
        self.lookup(|conn| {
            Ok(cached_row(
                conn,
                &format!("{USER_SELECT} WHERE id = ?1"),
                params![user.0],
                user_from_row,
            )
            .optional()?)
        })
    }

    async fn list_users(&self) -> MetaResult<Vec<User>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!("{USER_SELECT} ORDER BY id"))?;
            let rows = stmt.query_map([], user_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_user_token(&self, user: UserId, token: SealedToken) -> MetaResult<bool> {
        self.write(move |conn| {
            let changed = cached_exec(
                conn,
                "UPDATE users SET token_nonce = ?2, token_sealed = ?3 WHERE id = ?1",
                params![user.0, token.nonce, token.ciphertext],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    async fn set_user_disabled(&self, user: UserId, disabled: bool) -> MetaResult<bool> {
        self.write(move |conn| {
            Ok(cached_exec(
                conn,
                "UPDATE users SET disabled = ?2 WHERE id = ?1",
                params![user.0, bool_int(disabled)],
            )? > 0)
        })
        .await
    }

    async fn set_user_server_admin(&self, user: UserId, server_admin: bool) -> MetaResult<bool> {
        self.write(move |conn| {
            Ok(cached_exec(
                conn,
                "UPDATE users SET server_admin = ?2 WHERE id = ?1",
                params![user.0, bool_int(server_admin)],
            )? > 0)
        })
        .await
    }

    async fn create_s3_key(&self, key: &S3Key) -> MetaResult<bool> {
        let key = key.clone();
        self.write(move |conn| {
            let user_known = cached_row(conn, "SELECT 1 FROM users WHERE id = ?1", params![key.user.0], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
            let org_known = match &key.org {
                None => true,
                Some(org) => cached_row(conn, "SELECT 1 FROM orgs WHERE id = ?1", params![org.as_str()], |_| {
                    Ok(())
                })
                .optional()?
                .is_some(),
            };
            if !user_known || !org_known {
                return Ok(false);
            }
            cached_exec(
                conn,
                "INSERT INTO s3_keys (access_key, user_id, org_id, read_only, secret_nonce, secret_sealed, created) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    key.access_key,
                    key.user.0,
                    key.org.as_ref().map(OrgId::as_str),
                    bool_int(key.read_only),
                    key.secret.nonce,
                    key.secret.ciphertext,
                    key.created
                ],
            )?;
            Ok(true)
        })
        .await
    }

    async fn s3_key(&self, access_key: &str) -> MetaResult<Option<S3Key>> {
        self.lookup(|conn| {
            Ok(cached_row(
                conn,
                &format!("{S3_KEY_SELECT} WHERE k.access_key = ?1"),
                params![access_key],
                s3_key_from_row,
            )
            .optional()?)
        })
    }

    async fn list_s3_keys(&self, user: Option<UserId>) -> MetaResult<Vec<S3Key>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "{S3_KEY_SELECT} WHERE ?1 IS NULL OR k.user_id = ?1 ORDER BY k.user_id, k.created, k.access_key"
            ))?;
            let rows = stmt.query_map(params![user.map(|u| u.0)], s3_key_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn revoke_s3_key(&self, access_key: &str, now: Millis) -> MetaResult<bool> {
        let access_key = access_key.to_owned();
        self.write(move |conn| {
            Ok(cached_exec(
                conn,
                "UPDATE s3_keys SET revoked = COALESCE(revoked, ?2) WHERE access_key = ?1",
                params![access_key, now],
            )? > 0)
        })
        .await
    }

    async fn set_member(&self, org: &OrgId, user: UserId, p: Permissions) -> MetaResult<bool> {
        let org = org.clone();
        self.write(move |conn| {
            let org_known = cached_row(conn, "SELECT 1 FROM orgs WHERE id = ?1", params![org.as_str()], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
            let user_known = cached_row(conn, "SELECT 1 FROM users WHERE id = ?1", params![user.0], |_| Ok(()))
                .optional()?
                .is_some();
            if !org_known || !user_known {
                return Ok(false);
            }
            upsert_member(conn, &org, user, p)?;
            Ok(true)
        })
        .await
    }

    async fn remove_member(&self, org: &OrgId, user: UserId) -> MetaResult<bool> {
        let org = org.clone();
        self.write(move |conn| {
            Ok(cached_exec(
                conn,
                "DELETE FROM members WHERE org_id = ?1 AND user_id = ?2",
                params![org.as_str(), user.0],
            )? > 0)
        })
        .await
    }

    async fn membership(&self, org: &OrgId, user: UserId) -> MetaResult<Option<Membership>> {
        self.lookup(|conn| {
            let raw = cached_row(conn,
                    "SELECT org_id, user_id, can_read, can_write, can_delete, is_admin FROM members WHERE org_id = ?1 AND user_id = ?2",
                    params![org.as_str(), user.0],
                    membership_from_row,
                )
                .optional()?;
            Ok(raw.map(|(_, _, permissions)| Membership { org: org.clone(), user, permissions }))
        })
    }

    async fn standing(&self, org: &OrgId, user: UserId) -> MetaResult<Option<Standing>> {
        self.lookup(|conn| {
            Ok(cached_row(
                conn,
                "SELECT u.disabled, m.can_read, m.can_write, m.can_delete, m.is_admin FROM users u \
                 LEFT JOIN members m ON m.user_id = u.id AND m.org_id = ?1 WHERE u.id = ?2",
                params![org.as_str(), user.0],
                |row| {
                    let flag = |i: usize| -> rusqlite::Result<Option<bool>> {
                        Ok(row.get::<_, Option<i64>>(i)?.map(|v| v != 0))
                    };
                    let permissions = match (flag(1)?, flag(2)?, flag(3)?, flag(4)?) {
                        (Some(read), Some(write), Some(delete), Some(admin)) => Some(Permissions {
                            read,
                            write,
                            delete,
                            admin,
                        }),
                        _ => None,
                    };
                    Ok(Standing {
                        disabled: row.get::<_, i64>(0)? != 0,
                        permissions,
                    })
                },
            )
            .optional()?)
        })
    }

    async fn user_memberships(&self, user: UserId) -> MetaResult<Vec<Membership>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT org_id, user_id, can_read, can_write, can_delete, is_admin FROM members WHERE user_id = ?1 ORDER BY org_id",
            )?;
            let rows = stmt.query_map(params![user.0], membership_from_row)?;
            let mut out = Vec::new();
            for row in rows {
                let (org, _, permissions) = row?;
                out.extend(OrgId::parse(&org).map(|org| Membership { org, user, permissions }));
            }
            Ok(out)
        })
        .await
    }

    async fn members(&self, org: &OrgId) -> MetaResult<Vec<Membership>> {
        let org = org.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT org_id, user_id, can_read, can_write, can_delete, is_admin FROM members WHERE org_id = ?1 ORDER BY user_id",
            )?;
            let rows = stmt.query_map(params![org.as_str()], membership_from_row)?;
            let mut out = Vec::new();
            for row in rows {
                let (_, user, permissions) = row?;
                out.push(Membership { org: org.clone(), user: UserId(user), permissions });
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl Objects for SqliteMeta {
    async fn key_kind(&self, org: &OrgId, key: &Key) -> MetaResult<KeyKind> {
        self.lookup(|conn| {
            if let Some(object) = load_object(conn, org, key)? {
                return Ok(KeyKind::File(Box::new(object)));
            }
            if folder_exists(conn, org, key.as_str())? {
                return Ok(KeyKind::Folder);
            }
            Ok(KeyKind::Missing)
        })
    }

    async fn put_object(&self, org: &OrgId, object: NewObject, quota: Quota) -> MetaResult<PutOutcome> {
        let org = org.clone();
        self.write(move |conn| {
            // Stamp the write when it is applied, so that commit order and time order agree.
            let mut object = object;
            object.now = write_time(&object, chrono::Utc::now().timestamp_millis());
            put_object_tx(conn, &org, &object, quota)
        })
        .await
    }

    async fn delete(&self, org: &OrgId, key: &Key) -> MetaResult<DeleteOutcome> {
        let (org, key) = (org.clone(), key.clone());
        let now = chrono::Utc::now().timestamp_millis();
        self.write(move |conn| delete_tx(conn, &org, &key, now)).await
    }

    async fn list(&self, org: &OrgId, folder: &FolderPath, page: u64, page_size: u64) -> MetaResult<ListPage> {
        let (org, folder) = (org.clone(), folder.clone());
        let marks = self.marks.clone();
        self.read(move |conn| list_tx(conn, &marks, &org, &folder, page, page_size))
            .await
    }

    async fn usage(&self, org: &OrgId) -> MetaResult<Usage> {
        self.lookup(|conn| Ok(root_usage(conn, org)?.unwrap_or_default()))
    }

    async fn folder_usage(&self, org: &OrgId, folder: &FolderPath) -> MetaResult<Option<Usage>> {
        self.lookup(|conn| folder_usage_of(conn, org, folder.as_str()))
    }

    async fn file_md5s(
        &self,
        org: &OrgId,
        folder: &FolderPath,
        first: &str,
        last: &str,
    ) -> MetaResult<Vec<(String, String)>> {
        let (org, folder, first, last) = (org.clone(), folder.clone(), first.to_owned(), last.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, md5 FROM objects WHERE org_id = ?1 AND parent = ?2 AND name >= ?3 AND name <= ?4 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![org.as_str(), folder.as_str(), first, last], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn files_from(&self, org: &OrgId, from: &str, inclusive: bool, limit: usize) -> MetaResult<Vec<ObjectMeta>> {
        let (org, from) = (org.clone(), from.to_owned());
        self.read(move |conn| files_from_tx(conn, &org, &from, inclusive, limit))
            .await
    }

    async fn children_from(
        &self,
        org: &OrgId,
        folder: &FolderPath,
        from: &str,
        inclusive: bool,
        limit: usize,
    ) -> MetaResult<Vec<Child>> {
        let (org, folder, from) = (org.clone(), folder.clone(), from.to_owned());
        self.read(move |conn| children_from_tx(conn, &org, &folder, &from, inclusive, limit))
            .await
    }
}

#[async_trait]
impl Uploads for SqliteMeta {
    async fn create_upload(&self, upload: &MultipartUpload) -> MetaResult<()> {
        let u = upload.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO uploads (org_id, id, key, user_id, created, mime, user_meta) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                u.org.as_str(),
                u.id,
                u.key.as_str(),
                u.user.0,
                u.created,
                u.mime,
                u.user_meta
            ])?;
            Ok(())
        })
        .await
    }

    async fn upload(&self, org: &OrgId, id: &str) -> MetaResult<Option<MultipartUpload>> {
        self.lookup(|conn| {
            Ok(cached_row(
                conn,
                &format!("{UPLOAD_SELECT} WHERE org_id = ?1 AND id = ?2"),
                params![org.as_str(), id],
                upload_from_row,
            )
            .optional()?
            .flatten())
        })
    }

    async fn put_part(&self, org: &OrgId, id: &str, part: &PartRecord, quota: Quota) -> MetaResult<PartOutcome> {
        let (org, id, part) = (org.clone(), id.to_owned(), part.clone());
        self.write(move |conn| put_part_tx(conn, &org, &id, &part, quota)).await
    }

    async fn parts(&self, org: &OrgId, id: &str, after: u32, limit: usize) -> MetaResult<Vec<PartRecord>> {
        let (org, id) = (org.clone(), id.to_owned());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT number, blob_id, size, md5, modified FROM upload_parts \
                 WHERE org_id = ?1 AND upload_id = ?2 AND number > ?3 ORDER BY number LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![org.as_str(), id, after, count_to_i64(limit)], part_from_row)?;
            let mut out = Vec::new();
            for row in rows {
                out.extend(row?);
            }
            Ok(out)
        })
        .await
    }

    async fn list_uploads(
        &self,
        org: &OrgId,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> MetaResult<Vec<MultipartUpload>> {
        let (org, prefix) = (org.clone(), prefix.to_owned());
        let (after_key, after_id) = after.map(|(k, i)| (k.to_owned(), i.to_owned())).unwrap_or_default();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{UPLOAD_SELECT} WHERE org_id = ?1 AND key >= ?2 AND (key, id) > (?3, ?4) ORDER BY key, id LIMIT ?5"
            ))?;
            let rows = stmt.query_map(
                params![org.as_str(), prefix, after_key, after_id, count_to_i64(limit)],
                upload_from_row,
            )?;
            let mut out = Vec::new();
            for row in rows {
                // Keys that start with the prefix come first in key order: stop at the first other.
                match row? {
                    Some(upload) if !upload.key.as_str().starts_with(prefix.as_str()) => break,
                    upload => out.extend(upload),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn complete_upload(
        &self,
        org: &OrgId,
        id: &str,
        object: NewObject,
        quota: Quota,
    ) -> MetaResult<CompleteOutcome> {
        let (org, id) = (org.clone(), id.to_owned());
        self.write(move |conn| {
            let mut object = object;
            object.now = write_time(&object, chrono::Utc::now().timestamp_millis());
            complete_upload_tx(conn, &org, &id, &object, quota)
        })
        .await
    }

    async fn abort_upload(&self, org: &OrgId, id: &str) -> MetaResult<bool> {
        let (org, id) = (org.clone(), id.to_owned());
        let now = chrono::Utc::now().timestamp_millis();
        self.write(move |conn| {
            if !upload_exists(conn, &org, &id)? {
                return Ok(false);
            }
            let bytes = upload_bytes(conn, &org, &id)?;
            remove_upload(conn, &org, &id, bytes, now)?;
            Ok(true)
        })
        .await
    }

    async fn expired_uploads(&self, before: Millis, limit: usize) -> MetaResult<Vec<(OrgId, String)>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT org_id, id FROM uploads WHERE created < ?1 ORDER BY created, org_id, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![before, count_to_i64(limit)], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (org, id) = row?;
                out.extend(OrgId::parse(&org).map(|org| (org, id)));
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl Sessions for SqliteMeta {
    async fn create_session(&self, session: &ConsoleSession) -> MetaResult<()> {
        let s = session.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO console_sessions (id_hash, user_id, csrf, token_tag, created, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![s.id_hash, s.user.0, s.csrf, s.token_tag, s.created, s.last_seen])?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id_hash: &str) -> MetaResult<Option<ConsoleSession>> {
        self.lookup(|conn| {
            Ok(cached_row(
                conn,
                "SELECT id_hash, user_id, csrf, token_tag, created, last_seen FROM console_sessions WHERE id_hash = ?1",
                params![id_hash],
                |row| {
                    Ok(ConsoleSession {
                        id_hash: row.get(0)?,
                        user: UserId(row.get(1)?),
                        csrf: row.get(2)?,
                        token_tag: row.get(3)?,
                        created: row.get(4)?,
                        last_seen: row.get(5)?,
                    })
                },
            )
            .optional()?)
        })
    }

    async fn touch_session(&self, id_hash: &str, now: Millis) -> MetaResult<()> {
        let id_hash = id_hash.to_owned();
        self.write(move |conn| {
            conn.prepare_cached("UPDATE console_sessions SET last_seen = MAX(last_seen, ?2) WHERE id_hash = ?1")?
                .execute(params![id_hash, now])?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, id_hash: &str) -> MetaResult<bool> {
        let id_hash = id_hash.to_owned();
        self.write(move |conn| {
            Ok(conn
                .prepare_cached("DELETE FROM console_sessions WHERE id_hash = ?1")?
                .execute(params![id_hash])?
                > 0)
        })
        .await
    }

    async fn delete_stale_sessions(&self, idle_before: Millis, created_before: Millis) -> MetaResult<u64> {
        self.write(move |conn| {
            let n = conn
                .prepare_cached("DELETE FROM console_sessions WHERE last_seen < ?1 OR created < ?2")?
                .execute(params![idle_before, created_before])?;
            Ok(n as u64)
        })
        .await
    }
}

#[async_trait]
impl Jobs for SqliteMeta {
    async fn create_job(
        &self,
        org: &OrgId,
        keys: &[Key],
        now: Millis,
        expires: Millis,
        limits: JobLimits,
    ) -> MetaResult<JobOutcome> {
        if keys.len() <= FILES_JOB_KEYS {
            let (files_org, files_keys) = (org.clone(), keys.to_vec());
            let recorded = self
                .write(move |conn| record_files_job(conn, &files_org, &files_keys, now, expires, limits))
                .await?;
            if let Some(outcome) = recorded {
                return Ok(outcome);
            }
        }
        // Other keys are expanded on a read connection (one snapshot), never inside the writer,
        // and the entries are recorded in slices of JOB_SLICE, each checking that its bodies are
        // still current: other organizations' writes wait for one slice, not for a folder scan.
        for _ in 0..JOB_ATTEMPTS {
            let (read_org, read_keys) = (org.clone(), keys.to_vec());
            let planned = self
                .read(move |conn| expand_job(conn, &read_org, &read_keys, limits))
                .await?;
            let rows = match planned {
                Ok(rows) => Arc::new(rows),
                Err(refused) => return Ok(refused),
            };
            let id = JobId::generate();
            let mut recorded = true;
            for (i, start) in (0..rows.len()).step_by(JOB_SLICE).enumerate() {
                let (job, org, rows) = (id.clone(), org.clone(), rows.clone());
                let slice = start..(start + JOB_SLICE).min(rows.len());
                let step = self
                    .write(move |conn| {
                        if i == 0 {
                            // In the writer, where the count is exact.
                            make_room_for_job(conn, &org, now, limits)?;
                            insert_job_row(conn, &job, &org, now, expires)?;
                        }
                        let inserted = insert_job_entries(conn, &job, &org, &rows[slice])?;
                        if !inserted {
                            drop_job(conn, &job)?;
                        }
                        Ok(inserted)
                    })
                    .await;
                match step {
                    Ok(true) => {}
                    Ok(false) => {
                        recorded = false;
                        break;
                    }
                    Err(e) => {
                        // Leave no half-recorded job behind (best effort: it expires anyway).
                        let _ = self.write(move |conn| drop_job(conn, &id)).await;
                        return Err(e);
                    }
                }
            }
            if recorded {
                return Ok(JobOutcome::Created(Job {
                    id,
                    org: org.clone(),
                    created: now,
                    expires,
                }));
            }
        }
        let (org, keys) = (org.clone(), keys.to_vec());
        self.write(move |conn| create_job_tx(conn, &org, &keys, now, expires, limits))
            .await
    }

    async fn job(&self, job: &JobId) -> MetaResult<Option<Job>> {
        self.lookup(|conn| {
            let raw: Option<(String, i64, i64)> = cached_row(
                conn,
                "SELECT org_id, created, expires FROM jobs WHERE id = ?1",
                params![job.as_str()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
            Ok(raw.and_then(|(org, created, expires)| {
                Some(Job {
                    id: job.clone(),
                    org: OrgId::parse(&org)?,
                    created,
                    expires,
                })
            }))
        })
    }

    async fn job_entries(&self, job: &JobId) -> MetaResult<Vec<JobEntry>> {
        let job = job.clone();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, blob_id, size, modified FROM job_entries WHERE job_id = ?1 ORDER BY key",
            )?;
            let rows = stmt.query_map(params![job.as_str()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, blob, size, modified) = row?;
                if let (Ok(key), Some(blob)) = (Key::parse(&key), BlobId::parse(&blob)) {
                    out.push(JobEntry {
                        key,
                        blob,
                        size: to_u64(size),
                        modified,
                    });
                }
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl Maintenance for SqliteMeta {
    async fn ping(&self) -> MetaResult<()> {
        self.read(|conn| Ok(cached_row(conn, "SELECT 1", [], |_| Ok(()))?))
            .await
    }

    /// Closes the pooled read connections unused for [`READER_IDLE`] (each holds its page cache,
    /// compiled statements and the schema); a burst of reads opens them again.
    async fn shed_idle_memory(&self) -> MetaResult<usize> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let stale: Vec<Connection> = match readers.lock() {
                Ok(mut idle) => {
                    let (stale, kept) = idle.drain(..).partition(|(_, since)| since.elapsed() >= READER_IDLE);
                    *idle = kept;
                    stale.into_iter().map(|(conn, _)| conn).collect()
                }
                Err(_) => Vec::new(),
            };
            // Closed outside the lock: closing may wait on the file.
            stale.len()
        })
        .await
        .map_err(|e| MetaError::Failed(Box::new(e)))
    }

    async fn collectable_blobs(&self, now: Millis, released_before: Millis, limit: usize) -> MetaResult<Vec<BlobId>> {
        let hold = hold_path(&self.path);
        self.read(move |conn| {
            // The shared lock is taken before the query's snapshot, so a backup that holds
            // collection off has either waited for this pass's query or makes it find nothing.
            let Some(_collecting) = collection_allowed(&hold)? else {
                return Ok(Vec::new());
            };
            let mut stmt = conn.prepare_cached(
                "SELECT g.blob_id FROM garbage g WHERE g.since < ?3 AND NOT EXISTS (SELECT 1 FROM job_entries e \
                 JOIN jobs j ON j.id = e.job_id WHERE e.blob_id = g.blob_id AND j.expires > ?1) LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, count_to_i64(limit), released_before], |row| {
                row.get::<_, String>(0)
            })?;
            let mut out = Vec::new();
            for row in rows {
                out.extend(BlobId::parse(&row?));
            }
            Ok(out)
        })
        .await
    }

    async fn forget_blobs(&self, blobs: &[BlobId]) -> MetaResult<()> {
        let blobs = blobs.to_vec();
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached("DELETE FROM garbage WHERE blob_id = ?1")?;
            for blob in &blobs {
                stmt.execute(params![blob.as_str()])?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_expired_jobs(&self, before: Millis) -> MetaResult<u64> {
        self.write(move |conn| {
            cached_exec(
                conn,
                "DELETE FROM job_entries WHERE job_id IN (SELECT id FROM jobs WHERE expires < ?1)",
                params![before],
            )?;
            let deleted = cached_exec(conn, "DELETE FROM jobs WHERE expires < ?1", params![before])?;
            Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn unreferenced_blobs(&self, candidates: &[BlobId]) -> MetaResult<Vec<BlobId>> {
        let candidates = candidates.to_vec();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE blob_id = ?1) \
                 OR EXISTS (SELECT 1 FROM garbage WHERE blob_id = ?1) \
                 OR EXISTS (SELECT 1 FROM upload_parts WHERE blob_id = ?1) \
                 OR EXISTS (SELECT 1 FROM job_entries WHERE blob_id = ?1)",
            )?;
            let mut out = Vec::new();
            for blob in candidates {
                let referenced: bool = stmt.query_row(params![blob.as_str()], |row| row.get(0))?;
                if !referenced {
                    out.push(blob);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn objects_after(&self, after: Option<(OrgId, Key)>, limit: usize) -> MetaResult<Vec<(OrgId, ObjectMeta)>> {
        self.read(move |conn| {
            let (org, key) = after.map(|(o, k)| (o.to_string(), k.to_string())).unwrap_or_default();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS}, org_id FROM objects \
                 WHERE (org_id, key) > (?1, ?2) ORDER BY org_id, key LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![org, key, count_to_i64(limit)], |row| {
                Ok((row.get::<_, String>(10)?, object_from_row(row)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                if let (org, Some(object)) = row?
                    && let Some(org) = OrgId::parse(&org)
                {
                    out.push((org, object));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn check_folders(&self, org: &OrgId, repair: bool) -> MetaResult<Vec<FolderDifference>> {
        let org = org.clone();
        if !repair {
            return self.read(move |conn| folder_differences(conn, &org)).await;
        }
        self.write(move |conn| {
            let differences = folder_differences(conn, &org)?;
            repair_folders(conn, &differences)?;
            Ok(differences)
        })
        .await
    }

    async fn import_org(&self, org: &Organization) -> MetaResult<()> {
        let org = org.clone();
        self.write(move |conn| {
            let inserted = cached_exec(
                conn,
                "INSERT OR IGNORE INTO orgs (id, name, max_bytes, max_files, created, bucket) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    org.id.as_str(),
                    org.name,
                    org.max_bytes.map(to_i64),
                    org.max_files.map(to_i64),
                    org.created,
                    org.bucket
                ],
            )?;
            if inserted > 0 {
                cached_exec(
                    conn,
                    "INSERT OR IGNORE INTO folders (org_id, path, parent, name, bytes, files, child_folders, \
                     child_files, modified, children_version) VALUES (?1, '', NULL, '', 0, 0, 0, 0, ?2, ?3)",
                    params![org.id.as_str(), org.created, fresh_children_version(conn)?],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn import_user(&self, user: &User) -> MetaResult<()> {
        let user = user.clone();
        self.write(move |conn| {
            cached_exec(
                conn,
                "INSERT OR IGNORE INTO users (id, name, token_nonce, token_sealed, disabled, created, server_admin) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    user.id.0,
                    user.name,
                    user.token.nonce,
                    user.token.ciphertext,
                    bool_int(user.disabled),
                    user.created,
                    bool_int(user.server_admin)
                ],
            )?;
            Ok(())
        })
        .await
    }
}

// The behaviour of this store is tested by the shared metadata suite in `meta/tests.rs`, run
// against both backends; what is particular to SQLite is tested here.
#[cfg(test)]
mod tests {
    use super::*;

    /// Listing windows and mark scans read a range of the covering listing indexes from a name
    /// on, in their order (a window needs no sort; a scan sorts only the few marks it keeps).
    #[test]
    fn listing_pages_come_from_covering_indexes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("meta.sqlite3");
        drop(SqliteMeta::open(&path).expect("open"));
        let conn = open_connection(&path).expect("connect");
        for (sql, index) in [
            (LIST_FILES_SQL, "objects_listing"),
            (FILE_MARKS_SQL, "objects_listing"),
            (LIST_FOLDERS_SQL, "folders_listing"),
            (FOLDER_MARKS_SQL, "folders_listing"),
        ] {
            let plan = plan_with(&conn, sql, params!["o", "p", "n", 1000, 7]);
            assert!(
                plan.contains(&format!("COVERING INDEX {index} (org_id=? AND parent=? AND name>?)")),
                "{plan}"
            );
            let sorts = plan.matches("TEMP B-TREE").count();
            assert!(sorts <= usize::from(sql.contains("WITH RECURSIVE")), "{plan}");
        }
    }

    /// Idle readers are closed once unused for `READER_IDLE`; recently used ones stay pooled.
    #[tokio::test]
    async fn idle_readers_are_closed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteMeta::open(&dir.path().join("meta.sqlite3")).expect("open");
        // two reads at once leave two pooled readers
        let (a, b) = tokio::join!(store.ping(), store.ping());
        a.and(b).expect("reads");
        let pooled = store.readers.lock().expect("pool").len();
        assert!((1..=2).contains(&pooled), "{pooled} readers pooled");
        assert_eq!(store.shed_idle_memory().await.expect("shed"), 0, "fresh readers stay");
        assert_eq!(store.readers.lock().expect("pool").len(), pooled);
        // age them past the idle time
        let long_ago = std::time::Instant::now()
            .checked_sub(READER_IDLE + std::time::Duration::from_secs(1))
            .expect("an instant in the past");
        for (_, since) in store.readers.lock().expect("pool").iter_mut() {
            *since = long_ago;
        }
        assert_eq!(store.shed_idle_memory().await.expect("shed"), pooled);
        assert!(store.readers.lock().expect("pool").is_empty());
        // the next read opens a connection again
        store.ping().await.expect("a read after shedding");
        assert_eq!(store.readers.lock().expect("pool").len(), 1);
    }

    /// The plan of `sql` with these parameters, its steps joined.
    fn plan_with(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("explain");
        let rows = stmt
            .query_map(params, |row| row.get::<_, String>(3))
            .expect("plan rows");
        rows.map(|row| row.expect("plan row")).collect::<Vec<_>>().join("; ")
    }

    /// S3 listings read ranges of the primary key and of the listing indexes, in their order (no
    /// sort, no scan of the organization).
    #[test]
    fn s3_listings_read_index_ranges() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("meta.sqlite3");
        drop(SqliteMeta::open(&path).expect("open"));
        let conn = open_connection(&path).expect("connect");
        for sql in [FILES_FROM_SQL, FILES_AFTER_SQL] {
            let plan = plan_with(&conn, sql, params!["o", "k", 10]);
            assert!(
                plan.contains("SEARCH objects USING PRIMARY KEY (org_id=? AND key>"),
                "{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
        for sql in [CHILD_FILES_FROM_SQL, CHILD_FILES_AFTER_SQL] {
            let plan = plan_with(&conn, sql, params!["o", "p", "n", 10]);
            assert!(
                plan.contains("USING INDEX objects_listing (org_id=? AND parent=? AND name>"),
                "{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
        for sql in [CHILD_FOLDERS_FROM_SQL, CHILD_FOLDERS_AFTER_SQL] {
            let plan = plan_with(&conn, sql, params!["o", "p", "n", 10]);
            assert!(
                plan.contains("USING COVERING INDEX folders_listing (org_id=? AND parent=? AND name>"),
                "{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    /// A backup's metadata snapshot leaves pending multipart uploads out (their parts' bodies are
    /// not copied), with their pending bytes.
    #[test]
    fn snapshots_leave_pending_uploads_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("meta.sqlite3");
        let meta = SqliteMeta::open(&path).expect("open");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let org = runtime.block_on(meta.create_org("t", None, None, 1)).expect("org");
        let upload = MultipartUpload {
            id: "u".into(),
            org: org.clone(),
            key: Key::parse("k").expect("key"),
            user: UserId(1),
            created: 1,
            mime: "text/plain".into(),
            user_meta: None,
        };
        let part = PartRecord {
            number: 1,
            blob: BlobId::generate(),
            size: 10,
            md5: String::new(),
            modified: 1,
        };
        let quota = Quota {
            max_bytes: 1000,
            max_files: 1000,
        };
        runtime.block_on(meta.create_upload(&upload)).expect("upload");
        runtime.block_on(meta.put_part(&org, "u", &part, quota)).expect("part");
        let copy = dir.path().join("copy.sqlite3");
        snapshot_into(&path, &copy).expect("snapshot");
        let conn = open_connection(&copy).expect("connect");
        let count = |sql: &str| conn.query_row(sql, [], |row| row.get::<_, i64>(0)).expect("count");
        assert_eq!(count("SELECT COUNT(*) FROM uploads"), 0);
        assert_eq!(count("SELECT COUNT(*) FROM upload_parts"), 0);
        assert_eq!(count("SELECT SUM(pending_bytes) FROM orgs"), 0);
        let source = open_connection(&path).expect("connect");
        let pending: i64 = source
            .query_row("SELECT pending_bytes FROM orgs", [], |row| row.get(0))
            .expect("pending");
        assert_eq!(pending, 10, "the source keeps its upload");
    }

    #[test]
    fn an_older_database_gets_the_listing_indexes_when_opened() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("meta.sqlite3");
        drop(SqliteMeta::open(&path).expect("open"));
        let conn = open_connection(&path).expect("connect");
        conn.execute_batch(
            "DROP INDEX objects_listing; DROP INDEX folders_listing; \
             CREATE INDEX objects_by_parent ON objects (org_id, parent, name); \
             CREATE INDEX folders_by_parent ON folders (org_id, parent, name); \
             DROP INDEX orgs_by_bucket; ALTER TABLE orgs DROP COLUMN bucket; \
             ALTER TABLE users DROP COLUMN server_admin; DROP TABLE s3_keys; \
             ALTER TABLE objects DROP COLUMN etag; ALTER TABLE objects DROP COLUMN user_meta; \
             DROP TABLE uploads; DROP TABLE upload_parts; ALTER TABLE orgs DROP COLUMN pending_bytes; \
             ALTER TABLE folders DROP COLUMN children_version; DROP TABLE children_versions;",
        )
        .expect("make it look like an older database");
        conn.pragma_update(None, "user_version", 0)
            .expect("without a version marker");
        drop(conn);
        drop(SqliteMeta::open(&path).expect("reopen"));
        let conn = open_connection(&path).expect("connect");
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND (name LIKE '%_by_parent' OR name LIKE '%_listing') ORDER BY name")
            .expect("query indexes");
        let names: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .expect("indexes")
            .map(|row| row.expect("index name"))
            .collect();
        assert_eq!(names, ["folders_listing", "objects_listing"]);
    }

    /// A job expanded on a snapshot is recorded only while every body it names is still current:
    /// after an overwrite, the old body is in `garbage` and no longer protected by anything, so the
    /// entries are refused (and the caller expands again) rather than pinning a collected blob.
    #[test]
    fn job_entries_are_recorded_only_while_their_bodies_are_current() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("meta.sqlite3");
        let meta = SqliteMeta::open(&path).expect("open");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let object = |name: &str| NewObject {
            key: Key::parse(name).expect("key"),
            size: 1,
            md5: String::new(),
            mime: "text/plain".into(),
            preview: None,
            blob: BlobId::generate(),
            now: 1,
            created: None,
            etag: None,
            user_meta: None,
            if_absent: false,
        };
        let quota = Quota {
            max_bytes: 1000,
            max_files: 1000,
        };
        let org = runtime.block_on(meta.create_org("t", None, None, 1)).expect("org");
        for name in ["d/a", "d/b"] {
            runtime
                .block_on(meta.put_object(&org, object(name), quota))
                .expect("put");
        }
        let conn = open_connection(&path).expect("connect");
        let keys = [Key::parse("d").expect("key")];
        let rows = expand_job(&conn, &org, &keys, JobLimits::NONE)
            .expect("expand")
            .expect("two files");
        assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["d/a", "d/b"]);
        let id = JobId::generate();
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        assert!(insert_job_entries(&conn, &id, &org, &rows).expect("record"));
        conn.execute_batch("ROLLBACK").expect("rollback");
        runtime
            .block_on(meta.put_object(&org, object("d/b"), quota))
            .expect("overwrite");
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        assert!(
            !insert_job_entries(&conn, &id, &org, &rows).expect("record"),
            "d/b changed"
        );
        let recorded: i64 = conn
            .query_row("SELECT COUNT(*) FROM job_entries", [], |row| row.get(0))
            .expect("count");
        assert_eq!(recorded, 0, "nothing recorded");
        conn.execute_batch("ROLLBACK").expect("rollback");
        // Through the store, the job names the new body.
        let job = runtime
            .block_on(meta.create_job(&org, &keys, 1, 1000, JobLimits::NONE))
            .expect("job")
            .job()
            .expect("created");
        let entries = runtime.block_on(meta.job_entries(&job.id)).expect("entries");
        assert_ne!(entries[1].blob.as_str(), rows[1].1, "the current body of d/b");
    }
}
