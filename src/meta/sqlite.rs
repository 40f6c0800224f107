//! The embedded metadata store on SQLite (WAL, `synchronous=FULL`).
//!
//! One writer thread owns the only writing connection and applies queued writes in batches: each
//! write runs inside its own savepoint of one `BEGIN IMMEDIATE` transaction, and every caller of a
//! batch is answered only after the batch's durable commit (group commit). Reads run on a small
//! pool of connections on the blocking thread pool and never wait for the writer (WAL).
//!
//! Folders are rows of their own (bytes, files, direct children and newest modification under
//! them), maintained in the same transaction as the object rows, so listing a page and reading
//! usage are index lookups. The root folder row (path `""`) holds the organization's usage.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use super::*;

/// Most writes applied in one transaction.
const MAX_BATCH: usize = 128;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 16;
/// Compiled statements kept per connection (more than the store has distinct hot statements).
const STATEMENT_CACHE: usize = 64;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS orgs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    max_bytes INTEGER,
    max_files INTEGER,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    token_nonce BLOB NOT NULL,
    token_sealed BLOB NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    org_id TEXT NOT NULL REFERENCES orgs(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    can_read INTEGER NOT NULL,
    can_write INTEGER NOT NULL,
    can_delete INTEGER NOT NULL,
    is_admin INTEGER NOT NULL,
    PRIMARY KEY (org_id, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    org_id TEXT NOT NULL,
    key TEXT NOT NULL,
    parent TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    mime TEXT NOT NULL,
    preview TEXT,
    created INTEGER NOT NULL,
    modified INTEGER NOT NULL,
    blob_id TEXT NOT NULL,
    PRIMARY KEY (org_id, key)
) WITHOUT ROWID;
-- Listing reads a page of a folder's files from this index alone (it covers every listed column),
-- instead of one lookup in the table per entry.
CREATE INDEX IF NOT EXISTS objects_listing ON objects (org_id, parent, name, size, mime, modified);
DROP INDEX IF EXISTS objects_by_parent;
CREATE INDEX IF NOT EXISTS objects_by_parent_modified ON objects (org_id, parent, modified);
CREATE INDEX IF NOT EXISTS objects_by_blob ON objects (blob_id);
CREATE TABLE IF NOT EXISTS folders (
    org_id TEXT NOT NULL,
    path TEXT NOT NULL,
    parent TEXT,
    name TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    files INTEGER NOT NULL,
    child_folders INTEGER NOT NULL,
    child_files INTEGER NOT NULL,
    modified INTEGER NOT NULL,
    PRIMARY KEY (org_id, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS folders_listing ON folders (org_id, parent, name, bytes, modified);
DROP INDEX IF EXISTS folders_by_parent;
CREATE INDEX IF NOT EXISTS folders_by_parent_modified ON folders (org_id, parent, modified);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires);
CREATE TABLE IF NOT EXISTS job_entries (
    job_id TEXT NOT NULL,
    key TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    modified INTEGER NOT NULL,
    PRIMARY KEY (job_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_entries_by_blob ON job_entries (blob_id);
CREATE TABLE IF NOT EXISTS garbage (
    blob_id TEXT PRIMARY KEY,
    since INTEGER NOT NULL
) WITHOUT ROWID;
PRAGMA user_version = 1;
"#;

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
        let result = match conn.execute_batch("SAVEPOINT write_task") {
            Err(e) => Err(e.into()),
            Ok(()) => {
                // A panic in one write must not take the writer thread (and every later write) down.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn)))
                    .unwrap_or_else(|_| Err(MetaError::Database("a metadata write panicked".into())));
                let end = if result.is_ok() {
                    conn.execute_batch("RELEASE write_task")
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
            (Ok(()), None) => Err(MetaError::Database("write was not applied".into())),
        };
        let _ = self.reply.send(answer);
    }
}

/// The SQLite metadata store.
pub struct SqliteMeta {
    path: PathBuf,
    writer: mpsc::Sender<Box<dyn WriteTask>>,
    readers: Arc<Mutex<Vec<Connection>>>,
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
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        for task in pending.drain(..) {
            task.deliver(Err(MetaError::Database(e.to_string())));
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
        Err(MetaError::Database(
            "the transaction was rolled back by the database".into(),
        ))
    } else {
        conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            MetaError::from(e)
        })
    };
    for task in ran {
        let commit = match &commit {
            Ok(()) => Ok(()),
            Err(e) => Err(MetaError::Database(e.to_string())),
        };
        task.deliver(commit);
    }
}

impl SqliteMeta {
    /// Opens (creating when needed) the database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> MetaResult<SqliteMeta> {
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA)?;
        let (tx, rx) = mpsc::channel::<Box<dyn WriteTask>>();
        std::thread::Builder::new()
            .name("stowage-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .map_err(|e| MetaError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteMeta {
            path: path.to_owned(),
            writer: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
        })
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
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut idle| idle.pop());
            let conn = match pooled {
                Some(conn) => conn,
                None => {
                    let conn = open_connection(&path)?;
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
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| MetaError::Database(format!("read task failed: {e}")))?
    }
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

/// Inserts an organization and its root folder row.
fn insert_org(
    conn: &Connection,
    name: &str,
    max_bytes: Option<u64>,
    max_files: Option<u64>,
    now: Millis,
) -> MetaResult<OrgId> {
    let id = OrgId::generate();
    conn.execute(
        "INSERT INTO orgs (id, name, max_bytes, max_files, created) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            id.as_str(),
            name,
            max_bytes.map(|v| v as i64),
            max_files.map(|v| v as i64),
            now
        ],
    )?;
    conn.execute(
        "INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified) \
         VALUES (?1, '', NULL, '', 0, 0, 0, 0, ?2)",
        params![id.as_str(), now],
    )?;
    Ok(id)
}

/// Inserts a user and seals its token under its new id.
fn insert_user(
    conn: &Connection,
    name: &str,
    now: Millis,
    seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
) -> MetaResult<UserId> {
    conn.execute(
        "INSERT INTO users (name, token_nonce, token_sealed, disabled, created) VALUES (?1, x'', x'', 0, ?2)",
        params![name, now],
    )?;
    let id = UserId(conn.last_insert_rowid());
    let Some(sealed) = seal(id) else {
        return Err(MetaError::Database("the new token could not be sealed".into()));
    };
    conn.execute(
        "UPDATE users SET token_nonce = ?2, token_sealed = ?3 WHERE id = ?1",
        params![id.0, sealed.nonce, sealed.ciphertext],
    )?;
    Ok(id)
}

/// Adds a membership or replaces its permissions.
fn upsert_member(conn: &Connection, org: &OrgId, user: UserId, p: Permissions) -> MetaResult<()> {
    conn.execute(
        "INSERT INTO members (org_id, user_id, can_read, can_write, can_delete, is_admin) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (org_id, user_id) DO UPDATE SET can_read = excluded.can_read, can_write = excluded.can_write, \
         can_delete = excluded.can_delete, is_admin = excluded.is_admin",
        params![org.as_str(), user.0, bool_int(p.read), bool_int(p.write), bool_int(p.delete), bool_int(p.admin)],
    )?;
    Ok(())
}

fn bool_int(b: bool) -> i64 {
    b as i64
}

fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
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
    }))
}

const ORG_SELECT: &str = "SELECT o.id, o.name, o.max_bytes, o.max_files, o.created, f.bytes, f.files \
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
    })
}

const USER_SELECT: &str = "SELECT id, name, token_nonce, token_sealed, disabled, created FROM users";

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
    }))
}

fn load_object(conn: &Connection, org: &OrgId, key: &Key) -> MetaResult<Option<ObjectMeta>> {
    Ok(cached_row(
        conn,
        "SELECT key, size, md5, mime, preview, created, modified, blob_id FROM objects WHERE org_id = ?1 AND key = ?2",
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
    Ok(cached_row(
        conn,
        "SELECT bytes, files FROM folders WHERE org_id = ?1 AND path = ''",
        params![org.as_str()],
        |row| {
            Ok(Usage {
                bytes: to_u64(row.get(0)?),
                files: to_u64(row.get(1)?),
            })
        },
    )
    .optional()?)
}

fn put_object_tx(conn: &Connection, org: &OrgId, object: &NewObject, quota: Quota) -> MetaResult<PutOutcome> {
    let ancestors = object.key.ancestors();
    for folder in ancestors.iter().skip(1) {
        if file_exists(conn, org, folder.as_str())? {
            return Ok(PutOutcome::Refused(PutRefusal::AncestorIsFile(
                folder.as_str().to_owned(),
            )));
        }
    }
    if folder_exists(conn, org, object.key.as_str())? {
        return Ok(PutOutcome::Refused(PutRefusal::IsFolder));
    }
    let usage =
        root_usage(conn, org)?.ok_or_else(|| MetaError::Database(format!("organization {org} has no root folder")))?;
    let existing: Option<(i64, i64, String)> = cached_row(
        conn,
        "SELECT size, created, blob_id FROM objects WHERE org_id = ?1 AND key = ?2",
        params![org.as_str(), object.key.as_str()],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )
    .optional()?;
    let size = object.size as i64;
    let (added_bytes, added_files, created) = match &existing {
        Some((old_size, created, _)) => (size - old_size, 0i64, *created),
        None => (size, 1i64, object.created.unwrap_or(object.now)),
    };
    let over_bytes = added_bytes > 0 && (usage.bytes as i128 + added_bytes as i128) > quota.max_bytes as i128;
    let over_files = added_files > 0 && usage.files + 1 > quota.max_files;
    if over_bytes || over_files {
        return Ok(PutOutcome::Refused(PutRefusal::Quota {
            usage,
            quota,
            added_bytes: added_bytes.max(0) as u64,
            added_files: added_files as u64,
        }));
    }
    conn.execute(
        "INSERT INTO objects (org_id, key, parent, name, size, md5, mime, preview, created, modified, blob_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT (org_id, key) DO UPDATE SET size = excluded.size, md5 = excluded.md5, mime = excluded.mime, \
         preview = excluded.preview, modified = excluded.modified, blob_id = excluded.blob_id",
        params![
            org.as_str(),
            object.key.as_str(),
            object.key.parent().as_str(),
            object.key.name(),
            size,
            object.md5,
            object.mime,
            object.preview,
            created,
            object.now,
            object.blob.as_str()
        ],
    )?;
    let last = ancestors.len() - 1;
    for (i, folder) in ancestors.iter().enumerate() {
        let child_files = if i == last { added_files } else { 0 };
        let updated = conn.execute(
            "UPDATE folders SET bytes = bytes + ?3, files = files + ?4, child_files = child_files + ?5, \
             modified = MAX(modified, ?6) WHERE org_id = ?1 AND path = ?2",
            params![
                org.as_str(),
                folder.as_str(),
                added_bytes,
                added_files,
                child_files,
                object.now
            ],
        )?;
        if updated == 0 {
            let parent = folder.parent().map(|p| p.as_str().to_owned());
            conn.execute(
                "INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?8)",
                params![
                    org.as_str(),
                    folder.as_str(),
                    parent,
                    folder.name(),
                    added_bytes,
                    added_files,
                    child_files,
                    object.now
                ],
            )?;
            conn.execute(
                "UPDATE folders SET child_folders = child_folders + 1 WHERE org_id = ?1 AND path = ?2",
                params![org.as_str(), parent],
            )?;
        }
    }
    let replaced = match existing {
        Some((_, _, old_blob)) => {
            conn.execute(
                "INSERT OR IGNORE INTO garbage (blob_id, since) VALUES (?1, ?2)",
                params![old_blob, object.now],
            )?;
            BlobId::parse(&old_blob)
        }
        None => None,
    };
    Ok(PutOutcome::Stored { replaced })
}

/// Takes `bytes` and `files` off `start` and every folder above it after a file (or, with
/// `removed_folder`, a whole child folder) under `start` went away. Folders left empty are
/// removed; the newest modification is recomputed from the remaining children (index lookups).
fn detach(
    conn: &Connection,
    org: &OrgId,
    start: FolderPath,
    bytes: u64,
    files: u64,
    removed_file: bool,
    removed_folder: bool,
) -> MetaResult<()> {
    let mut current = Some(start);
    let mut child_file = removed_file as i64;
    let mut child_folder = removed_folder as i64;
    while let Some(path) = current {
        conn.execute(
            "UPDATE folders SET bytes = bytes - ?3, files = files - ?4, child_files = child_files - ?5, \
             child_folders = child_folders - ?6 WHERE org_id = ?1 AND path = ?2",
            params![
                org.as_str(),
                path.as_str(),
                bytes as i64,
                files as i64,
                child_file,
                child_folder
            ],
        )?;
        child_file = 0;
        child_folder = 0;
        let remaining: i64 = cached_row(
            conn,
            "SELECT files FROM folders WHERE org_id = ?1 AND path = ?2",
            params![org.as_str(), path.as_str()],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0);
        if remaining <= 0 && !path.is_root() {
            conn.execute(
                "DELETE FROM folders WHERE org_id = ?1 AND path = ?2",
                params![org.as_str(), path.as_str()],
            )?;
            child_folder = 1;
        } else {
            let newest: Option<i64> = cached_row(
                conn,
                "SELECT MAX(m) FROM (SELECT MAX(modified) AS m FROM objects WHERE org_id = ?1 AND parent = ?2 \
                 UNION ALL SELECT MAX(modified) AS m FROM folders WHERE org_id = ?1 AND parent = ?2)",
                params![org.as_str(), path.as_str()],
                |row| row.get(0),
            )?;
            if let Some(newest) = newest {
                conn.execute(
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
        conn.execute(
            "DELETE FROM objects WHERE org_id = ?1 AND key = ?2",
            params![org.as_str(), key.as_str()],
        )?;
        conn.execute(
            "INSERT OR IGNORE INTO garbage (blob_id, since) VALUES (?1, ?2)",
            params![blob, now],
        )?;
        detach(conn, org, key.parent(), to_u64(size), 1, true, false)?;
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
    conn.execute(
        "INSERT OR IGNORE INTO garbage (blob_id, since) \
         SELECT blob_id, ?4 FROM objects WHERE org_id = ?1 AND key >= ?2 AND key < ?3",
        params![org.as_str(), low, high, now],
    )?;
    conn.execute(
        "DELETE FROM objects WHERE org_id = ?1 AND key >= ?2 AND key < ?3",
        params![org.as_str(), low, high],
    )?;
    conn.execute(
        "DELETE FROM folders WHERE org_id = ?1 AND (path = ?2 OR (path >= ?3 AND path < ?4))",
        params![org.as_str(), key.as_str(), low, high],
    )?;
    detach(conn, org, key.parent(), to_u64(bytes), to_u64(files), false, true)?;
    Ok(DeleteOutcome::Folder {
        files: to_u64(files),
        bytes: to_u64(bytes),
    })
}

/// A page of a folder's child folders; answered from `folders_listing` alone.
const LIST_FOLDERS_SQL: &str =
    "SELECT name, bytes, modified FROM folders WHERE org_id = ?1 AND parent = ?2 ORDER BY name LIMIT ?3 OFFSET ?4";
/// A page of a folder's files; answered from `objects_listing` alone.
const LIST_FILES_SQL: &str =
    "SELECT name, size, mime, modified FROM objects WHERE org_id = ?1 AND parent = ?2 ORDER BY name LIMIT ?3 OFFSET ?4";

fn list_tx(conn: &Connection, org: &OrgId, folder: &FolderPath, page: u64, page_size: u64) -> MetaResult<ListPage> {
    let counts: Option<(i64, i64)> = cached_row(
        conn,
        "SELECT child_folders, child_files FROM folders WHERE org_id = ?1 AND path = ?2",
        params![org.as_str(), folder.as_str()],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()?;
    let Some((child_folders, child_files)) = counts else {
        return Ok(ListPage {
            entries: Vec::new(),
            total_entries: 0,
        });
    };
    let (child_folders, child_files) = (to_u64(child_folders), to_u64(child_files));
    let total = child_folders + child_files;
    let offset = page.saturating_mul(page_size);
    let mut entries = Vec::new();
    if offset >= total {
        return Ok(ListPage {
            entries,
            total_entries: total,
        });
    }
    if offset < child_folders {
        let mut stmt = conn.prepare_cached(LIST_FOLDERS_SQL)?;
        let rows = stmt.query_map(
            params![org.as_str(), folder.as_str(), page_size as i64, offset as i64],
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
    let room = page_size.saturating_sub(entries.len() as u64);
    if room > 0 {
        let file_offset = offset.saturating_sub(child_folders);
        let mut stmt = conn.prepare_cached(LIST_FILES_SQL)?;
        let rows = stmt.query_map(
            params![org.as_str(), folder.as_str(), room as i64, file_offset as i64],
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
        total_entries: total,
    })
}

fn create_job_tx(
    conn: &Connection,
    org: &OrgId,
    keys: &[Key],
    now: Millis,
    expires: Millis,
    limits: JobLimits,
) -> MetaResult<JobOutcome> {
    let live: i64 = cached_row(
        conn,
        "SELECT COUNT(*) FROM jobs WHERE expires > ?1 AND org_id = ?2",
        params![now, org.as_str()],
        |row| row.get(0),
    )?;
    if to_u64(live) >= limits.max_live_jobs {
        return Ok(JobOutcome::TooManyJobs {
            limit: limits.max_live_jobs,
        });
    }
    let mut entries: std::collections::BTreeMap<String, (String, i64, i64)> = std::collections::BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT key, blob_id, size, modified FROM objects WHERE org_id = ?1 AND key >= ?2 AND key < ?3",
    )?;
    for key in keys {
        let file: Option<(String, i64, i64)> = cached_row(
            conn,
            "SELECT blob_id, size, modified FROM objects WHERE org_id = ?1 AND key = ?2",
            params![org.as_str(), key.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
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
            return Ok(JobOutcome::TooManyFiles {
                limit: limits.max_files,
            });
        }
    }
    if entries.is_empty() {
        return Ok(JobOutcome::NothingFound);
    }
    let id = JobId::generate();
    conn.execute(
        "INSERT INTO jobs (id, org_id, created, expires) VALUES (?1, ?2, ?3, ?4)",
        params![id.as_str(), org.as_str(), now, expires],
    )?;
    let mut insert = conn
        .prepare_cached("INSERT INTO job_entries (job_id, key, blob_id, size, modified) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for (key, (blob, size, modified)) in &entries {
        insert.execute(params![id.as_str(), key, blob, size, modified])?;
    }
    Ok(JobOutcome::Created(Job {
        id,
        org: org.clone(),
        created: now,
        expires,
    }))
}

/// Folder rows as an organization's object rows imply them, by path (the root is `""`).
fn implied_folders(conn: &Connection, org: &OrgId) -> MetaResult<BTreeMap<String, FolderFigures>> {
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

/// An organization's stored folder rows, by path.
fn stored_folders(conn: &Connection, org: &OrgId) -> MetaResult<BTreeMap<String, FolderFigures>> {
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
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The folders whose stored row differs from the implied one. An empty root's modification time
/// is its organization's creation time, which no object implies, so it is not compared.
fn folder_differences(conn: &Connection, org: &OrgId) -> MetaResult<Vec<FolderDifference>> {
    let implied = implied_folders(conn, org)?;
    let stored = stored_folders(conn, org)?;
    Ok(compare_folders(org, &implied, &stored))
}

fn repair_folders(conn: &Connection, differences: &[FolderDifference]) -> MetaResult<()> {
    for d in differences {
        match d.implied {
            None => {
                conn.execute(
                    "DELETE FROM folders WHERE org_id = ?1 AND path = ?2",
                    params![d.org.as_str(), d.path],
                )?;
            }
            Some(f) => {
                let (parent, name) = match d.path.rfind('/') {
                    _ if d.path.is_empty() => (None, String::new()),
                    Some(i) => (Some(d.path[..i].to_owned()), d.path[i + 1..].to_owned()),
                    None => (Some(String::new()), d.path.clone()),
                };
                conn.execute(
                    "INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (org_id, path) DO UPDATE SET \
                     bytes = excluded.bytes, files = excluded.files, child_folders = excluded.child_folders, \
                     child_files = excluded.child_files, modified = excluded.modified",
                    params![
                        d.org.as_str(),
                        d.path,
                        parent,
                        name,
                        f.bytes as i64,
                        f.files as i64,
                        f.child_folders as i64,
                        f.child_files as i64,
                        f.modified
                    ],
                )?;
            }
        }
    }
    Ok(())
}

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn ping(&self) -> MetaResult<()> {
        self.read(|conn| Ok(cached_row(conn, "SELECT 1", [], |_| Ok(()))?))
            .await
    }

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
        let org = org.clone();
        self.read(move |conn| {
            Ok(cached_row(
                conn,
                &format!("{ORG_SELECT} WHERE o.id = ?1"),
                params![org.as_str()],
                org_from_row,
            )
            .optional()?
            .flatten())
        })
        .await
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

    async fn import_org(&self, org: &Organization) -> MetaResult<()> {
        let org = org.clone();
        self.write(move |conn| {
            let inserted = conn.execute(
                "INSERT OR IGNORE INTO orgs (id, name, max_bytes, max_files, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    org.id.as_str(),
                    org.name,
                    org.max_bytes.map(|v| v as i64),
                    org.max_files.map(|v| v as i64),
                    org.created
                ],
            )?;
            if inserted > 0 {
                conn.execute(
                    "INSERT OR IGNORE INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified) \
                     VALUES (?1, '', NULL, '', 0, 0, 0, 0, ?2)",
                    params![org.id.as_str(), org.created],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn import_user(&self, user: &User) -> MetaResult<()> {
        let user = user.clone();
        self.write(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO users (id, name, token_nonce, token_sealed, disabled, created) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    user.id.0,
                    user.name,
                    user.token.nonce,
                    user.token.ciphertext,
                    bool_int(user.disabled),
                    user.created
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_quota(&self, org: &OrgId, max_bytes: Option<u64>, max_files: Option<u64>) -> MetaResult<bool> {
        let org = org.clone();
        self.write(move |conn| {
            let changed = conn.execute(
                "UPDATE orgs SET max_bytes = ?2, max_files = ?3 WHERE id = ?1",
                params![org.as_str(), max_bytes.map(|v| v as i64), max_files.map(|v| v as i64)],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    async fn create_user(
        &self,
        name: &str,
        now: Millis,
        seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
    ) -> MetaResult<Option<UserId>> {
        let name = name.to_owned();
        self.write(move |conn| insert_user(conn, &name, now, seal).map(Some))
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
            let user = insert_user(conn, &user_name, now, seal)?;
            upsert_member(conn, &org, user, Permissions::ALL)?;
            Ok(Some((org, user)))
        })
        .await
    }

    async fn user(&self, user: UserId) -> MetaResult<Option<User>> {
        self.read(move |conn| {
            Ok(cached_row(
                conn,
                &format!("{USER_SELECT} WHERE id = ?1"),
                params![user.0],
                user_from_row,
            )
            .optional()?)
        })
        .await
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
            let changed = conn.execute(
                "UPDATE users SET token_nonce = ?2, token_sealed = ?3 WHERE id = ?1",
                params![user.0, token.nonce, token.ciphertext],
            )?;
            Ok(changed > 0)
        })
        .await
    }

    async fn set_user_disabled(&self, user: UserId, disabled: bool) -> MetaResult<bool> {
        self.write(move |conn| {
            Ok(conn.execute(
                "UPDATE users SET disabled = ?2 WHERE id = ?1",
                params![user.0, bool_int(disabled)],
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
            Ok(conn.execute(
                "DELETE FROM members WHERE org_id = ?1 AND user_id = ?2",
                params![org.as_str(), user.0],
            )? > 0)
        })
        .await
    }

    async fn membership(&self, org: &OrgId, user: UserId) -> MetaResult<Option<Membership>> {
        let org = org.clone();
        self.read(move |conn| {
            let raw = cached_row(conn,
                    "SELECT org_id, user_id, can_read, can_write, can_delete, is_admin FROM members WHERE org_id = ?1 AND user_id = ?2",
                    params![org.as_str(), user.0],
                    membership_from_row,
                )
                .optional()?;
            Ok(raw.map(|(_, _, permissions)| Membership { org: org.clone(), user, permissions }))
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

    async fn key_kind(&self, org: &OrgId, key: &Key) -> MetaResult<KeyKind> {
        let (org, key) = (org.clone(), key.clone());
        self.read(move |conn| {
            if let Some(object) = load_object(conn, &org, &key)? {
                return Ok(KeyKind::File(Box::new(object)));
            }
            if folder_exists(conn, &org, key.as_str())? {
                return Ok(KeyKind::Folder);
            }
            Ok(KeyKind::Missing)
        })
        .await
    }

    async fn put_object(&self, org: &OrgId, object: NewObject, quota: Quota) -> MetaResult<PutOutcome> {
        let org = org.clone();
        self.write(move |conn| {
            // Stamp the write when it is applied, so that commit order and time order agree.
            let mut object = object;
            if object.created.is_none() {
                object.now = object.now.max(chrono::Utc::now().timestamp_millis());
            }
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
        self.read(move |conn| list_tx(conn, &org, &folder, page, page_size))
            .await
    }

    async fn usage(&self, org: &OrgId) -> MetaResult<Usage> {
        let org = org.clone();
        self.read(move |conn| Ok(root_usage(conn, &org)?.unwrap_or_default()))
            .await
    }

    async fn create_job(
        &self,
        org: &OrgId,
        keys: &[Key],
        now: Millis,
        expires: Millis,
        limits: JobLimits,
    ) -> MetaResult<JobOutcome> {
        let (org, keys) = (org.clone(), keys.to_vec());
        self.write(move |conn| create_job_tx(conn, &org, &keys, now, expires, limits))
            .await
    }

    async fn job(&self, job: &JobId) -> MetaResult<Option<Job>> {
        let job = job.clone();
        self.read(move |conn| {
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
        .await
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

    async fn collectable_blobs(&self, now: Millis, limit: usize) -> MetaResult<Vec<BlobId>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT g.blob_id FROM garbage g WHERE NOT EXISTS (SELECT 1 FROM job_entries e JOIN jobs j ON j.id = e.job_id \
                 WHERE e.blob_id = g.blob_id AND j.expires > ?1) LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit as i64], |row| row.get::<_, String>(0))?;
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
            conn.execute(
                "DELETE FROM job_entries WHERE job_id IN (SELECT id FROM jobs WHERE expires < ?1)",
                params![before],
            )?;
            Ok(conn.execute("DELETE FROM jobs WHERE expires < ?1", params![before])? as u64)
        })
        .await
    }

    async fn objects_after(&self, after: Option<(OrgId, Key)>, limit: usize) -> MetaResult<Vec<(OrgId, ObjectMeta)>> {
        self.read(move |conn| {
            let (org, key) = after.map(|(o, k)| (o.to_string(), k.to_string())).unwrap_or_default();
            let mut stmt = conn.prepare_cached(
                "SELECT key, size, md5, mime, preview, created, modified, blob_id, org_id FROM objects \
                 WHERE (org_id, key) > (?1, ?2) ORDER BY org_id, key LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![org, key, limit as i64], |row| {
                Ok((row.get::<_, String>(8)?, object_from_row(row)?))
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

    async fn unreferenced_blobs(&self, candidates: &[BlobId]) -> MetaResult<Vec<BlobId>> {
        let candidates = candidates.to_vec();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE blob_id = ?1) \
                 OR EXISTS (SELECT 1 FROM garbage WHERE blob_id = ?1) \
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
}

// The behaviour of this store is tested by the shared metadata suite in `meta/tests.rs`, run
// against both backends; what is particular to SQLite is tested here.
#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("explain");
        let rows = stmt
            .query_map(params!["o", "p", 1000, 0], |row| row.get::<_, String>(3))
            .expect("plan rows");
        rows.map(|row| row.expect("plan row")).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn listing_pages_come_from_covering_indexes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("meta.sqlite3");
        drop(SqliteMeta::open(&path).expect("open"));
        let conn = open_connection(&path).expect("connect");
        let files = plan(&conn, LIST_FILES_SQL);
        assert!(files.contains("COVERING INDEX objects_listing"), "{files}");
        let folders = plan(&conn, LIST_FOLDERS_SQL);
        assert!(folders.contains("COVERING INDEX folders_listing"), "{folders}");
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
             CREATE INDEX folders_by_parent ON folders (org_id, parent, name);",
        )
        .expect("make it look like an older database");
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
}
