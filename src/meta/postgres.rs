//! The distributed metadata store on PostgreSQL, for deployments where several stowage servers
//! share one database.
//!
//! The tables, columns and folder bookkeeping are those of the SQLite store (`sqlite.rs`); what
//! differs is how writes are serialized. SQLite has one writer thread; here several servers write
//! at once, so every write that touches an organization's objects runs in one transaction that
//! first locks the organization's root folder row (`SELECT … FOR UPDATE`). The root row holds the
//! usage, so the quota check, the object rows, the folder rows and the usage counters of one
//! organization change one transaction at a time, whichever server runs it, and concurrent uploads
//! cannot overshoot a quota. Transactions run at `READ COMMITTED`: once the lock is held, each
//! statement sees every write committed before it, which is exactly the state the lock protects.
//! Different organizations never wait for each other. A caller is answered only after `COMMIT`.
//!
//! Puts are batched per organization on each server (as the SQLite writer batches its queue): the
//! puts queued while an organization's transaction runs go together into the next one, under one
//! lock, with their statements pipelined (see [`queue_put`] and [`put_batch`]); each put keeps its
//! own outcome, decided in order.
//!
//! Times: a write's modification time is the later of the caller's `now` and the database's
//! clock when the write holds the lock, so commit order and time order agree even when the
//! servers' clocks do not.
//!
//! Reads of one statement run on a pooled connection; reads of several statements (a listing
//! page, a folder check) run in one `REPEATABLE READ, READ ONLY` transaction, so they see one
//! snapshot. Collection (`collectable_blobs`, `forget_blobs`, `delete_expired_jobs`) may run on
//! several servers at once: its deletes are idempotent and serialized by an advisory lock, so
//! they neither deadlock nor fail.
//!
//! Keys, paths and names are `COLLATE "C"`, so ordering and the `>=`/`<` prefix ranges are byte
//! order, as in SQLite. Connections are plain TCP (`NoTls`): no TLS stack is linked in yet, so run
//! the database on a trusted network or behind a local TLS tunnel.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, Pool, Runtime, Transaction};
use futures::TryStreamExt;
use tokio::sync::oneshot;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{IsolationLevel, NoTls, Row};

use super::rules::*;
use super::*;

/// Connections each server keeps to the database at most.
pub(crate) const DEFAULT_POOL_SIZE: usize = 16;

/// Advisory lock that serializes schema creation across servers starting at once.
const SCHEMA_LOCK: i64 = 0x7374_6f77_6167_6501;
/// Advisory lock that serializes the creation of the first organization and user.
const BOOTSTRAP_LOCK: i64 = 0x7374_6f77_6167_6503;
/// Advisory lock that serializes giving organizations bucket names (check, then write).
const BUCKET_LOCK: i64 = 0x7374_6f77_6167_6505;
/// Advisory lock that serializes collection deletes across servers (no deadlocks between them).
const COLLECTION_LOCK: i64 = 0x7374_6f77_6167_6502;
/// Advisory lock that `stowage backup` holds (exclusively) while it copies the bodies its snapshot
/// names; collection passes take it shared, and find nothing while a backup holds it.
const BACKUP_HOLD: i64 = 0x7374_6f77_6167_6504;

/// A human-readable description of a driver error: the server's message and SQLSTATE for
/// database errors, the cause for the others (the driver's own `Display` says only "db error").
pub(crate) fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// PostgreSQL's errors by what a caller can do about them (SQLSTATE classes: 08 connection,
/// 40 transaction rollback, 53 insufficient resources, 57 operator intervention, XX internal).
impl From<tokio_postgres::Error> for MetaError {
    fn from(e: tokio_postgres::Error) -> MetaError {
        let kind: fn(BoxError) -> MetaError = match e.code().map(|code| code.code()) {
            Some(code) if code.starts_with("40") || code == "55P03" => MetaError::Conflict,
            Some("53100") => MetaError::Full,
            Some(code) if code.starts_with("08") || code.starts_with("57") || code.starts_with("53") => {
                MetaError::Unavailable
            }
            Some("XX001" | "XX002") => MetaError::Corrupt,
            Some(_) => MetaError::Failed,
            None if e.is_closed() => MetaError::Unavailable,
            None if std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) => MetaError::Unavailable,
            None => MetaError::Failed,
        };
        kind(Box::new(e))
    }
}

impl From<deadpool_postgres::PoolError> for MetaError {
    fn from(e: deadpool_postgres::PoolError) -> MetaError {
        match e {
            deadpool_postgres::PoolError::Closed => MetaError::Closed,
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => MetaError::Unavailable(Box::new(other)),
        }
    }
}

/// The PostgreSQL metadata store: a pool of connections to one database that other servers may
/// share.
pub(crate) struct PostgresMeta {
    pool: Pool,
    /// Where far listing pages start (see [`ListingMarks`]); kept per server, valid for all.
    marks: Arc<ListingMarks>,
    /// Puts waiting for their organization's next transaction (see [`queue_put`]).
    puts: PutQueues,
}

impl std::fmt::Debug for PostgresMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's configuration holds the password: show only its figures.
        let status = self.pool.status();
        f.debug_struct("PostgresMeta")
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish()
    }
}

impl PostgresMeta {
    /// Connects to `postgres://user:pass@host:port/db` (any form `tokio_postgres::Config`
    /// parses), creates the schema when it is missing and returns the store. The connection is
    /// not encrypted (`NoTls`).
    pub(crate) async fn connect(url: &str) -> MetaResult<PostgresMeta> {
        PostgresMeta::connect_with(url, DEFAULT_POOL_SIZE).await
    }

    /// Like [`PostgresMeta::connect`], with at most `max_connections` pooled connections.
    pub(crate) async fn connect_with(url: &str, max_connections: usize) -> MetaResult<PostgresMeta> {
        let meta = PostgresMeta::pool(url, max_connections)?;
        meta.create_schema().await?;
        Ok(meta)
    }

    /// The same store with marks every `stride` listing entries (tests reach the marks with
    /// small folders).
    #[cfg(test)]
    pub(crate) fn with_mark_stride(mut self, stride: u64) -> PostgresMeta {
        self.marks = Arc::new(ListingMarks::new(stride, 1 << 20));
        self
    }

    /// The schema version of the database at `url`, read without changing anything (0: an
    /// empty database).
    pub(crate) async fn schema_version(url: &str) -> MetaResult<crate::schema::Version> {
        let client = PostgresMeta::pool(url, 1)?.client().await?;
        crate::schema::postgres_version(&client, schema::STORE, schema::V1_TABLE)
            .await
            .map_err(MetaError::Schema)
    }

    /// The connection pool, before anything is sent to the database.
    fn pool(url: &str, max_connections: usize) -> MetaResult<PostgresMeta> {
        // The error names neither the URL nor its parts: it may carry a password.
        let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            MetaError::Config(format!("invalid PostgreSQL connection string: {}", describe_error(&e)))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("stowage");
        }
        // A server that stalls inside a transaction (stopped, cut off) must not hold an
        // organization's lock for long: the database ends such a session after a minute. Our
        // transactions never wait on anything but the database between statements.
        let options = config.get_options().unwrap_or_default();
        if !options.contains("idle_in_transaction_session_timeout") {
            let options = format!("{options} -c idle_in_transaction_session_timeout=60000");
            config.options(options.trim());
        }
        let pool = Pool::builder(Manager::new(config, NoTls))
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| MetaError::Config(format!("cannot build the PostgreSQL connection pool: {e}")))?;
        Ok(PostgresMeta {
            pool,
            marks: Arc::new(ListingMarks::standard()),
            puts: PutQueues::default(),
        })
    }

    /// Brings the schema up to date (`meta::schema::POSTGRES`); several servers starting at
    /// once take turns under an advisory lock, and each step runs once.
    async fn create_schema(&self) -> MetaResult<()> {
        let mut client = self.client().await?;
        crate::schema::upgrade_postgres(&mut client, SCHEMA_LOCK, schema::STORE, schema::POSTGRES)
            .await
            .map_err(MetaError::Schema)?;
        Ok(())
    }

    /// Closes the pool: later calls fail with [`MetaError::Closed`].
    #[cfg(test)]
    pub(crate) fn close(&self) {
        self.pool.close();
    }

    async fn client(&self) -> MetaResult<deadpool_postgres::Client> {
        Ok(self.pool.get().await?)
    }

    /// Holds off collection on every server sharing this database (see [`CollectionHold`]): an
    /// exclusive session advisory lock on a connection taken out of the pool, so that the lock
    /// goes when the hold is dropped or the process dies.
    pub(crate) async fn hold_collection(&self) -> MetaResult<CollectionHold> {
        let client = self.client().await?;
        client.execute("SELECT pg_advisory_lock($1)", &[&BACKUP_HOLD]).await?;
        Ok(CollectionHold::new(deadpool_postgres::Client::take(client)))
    }

    /// The whole store as one `REPEATABLE READ` transaction sees it (for `stowage backup`).
    pub(crate) async fn snapshot(&self) -> MetaResult<Snapshot> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let mut out = Snapshot::default();
        for row in &query(&tx, &format!("{ORG_SELECT} ORDER BY o.created, o.id"), &[]).await? {
            out.orgs.extend(org_from_row(row)?);
        }
        for row in &query(&tx, &format!("{USER_SELECT} ORDER BY id"), &[]).await? {
            out.users.push(user_from_row(row)?);
        }
        let sql = format!("SELECT {MEMBER_COLUMNS}, org_id FROM members ORDER BY org_id, user_id");
        for row in &query(&tx, &sql, &[]).await? {
            if let Some(org) = OrgId::parse(&col::<String>(row, 5)?) {
                out.members.push(membership_from_row(&org, row)?);
            }
        }
        let sql = format!("{S3_KEY_SELECT} ORDER BY k.user_id, k.created, k.access_key");
        for row in &query(&tx, &sql, &[]).await? {
            out.s3_keys.push(s3_key_from_row(row)?);
        }
        let sql = format!("SELECT {OBJECT_COLUMNS}, org_id FROM objects ORDER BY org_id, key");
        for row in &query(&tx, &sql, &[]).await? {
            if let Some(object) = object_from_row(row)?
                && let Some(org) = OrgId::parse(&col::<String>(row, 10)?)
            {
                out.objects.push((org, object));
            }
        }
        tx.commit().await?;
        Ok(out)
    }
}

// --- small helpers: every statement is prepared once per connection and cached ---

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn query<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> MetaResult<Vec<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

async fn query_opt<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> MetaResult<Option<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

async fn query_one<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> MetaResult<Row> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_one(&statement, params).await?)
}

async fn execute<C: GenericClient>(c: &C, sql: &str, params: Params<'_>) -> MetaResult<u64> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

/// Inserts an organization and its root folder row.
async fn insert_org<C: GenericClient>(
    c: &C,
    name: &str,
    max_bytes: Option<u64>,
    max_files: Option<u64>,
    now: Millis,
) -> MetaResult<OrgId> {
    let id = OrgId::generate();
    execute(
        c,
        "INSERT INTO orgs (id, name, max_bytes, max_files, created) VALUES ($1, $2, $3, $4, $5)",
        &[
            &id.as_str(),
            &name,
            &max_bytes.map(to_i64),
            &max_files.map(to_i64),
            &now,
        ],
    )
    .await?;
    execute(
        c,
        "INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified) \
         VALUES ($1, '', NULL, '', 0, 0, 0, 0, $2)",
        &[&id.as_str(), &now],
    )
    .await?;
    Ok(id)
}

/// Inserts a user and seals its token under its new id (inside the caller's transaction).
/// The first user of a store is a server administrator whatever `server_admin` says.
async fn insert_user<C: GenericClient>(
    c: &C,
    name: &str,
    server_admin: bool,
    now: Millis,
    seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
) -> MetaResult<UserId> {
    let row = query_one(
        c,
        "INSERT INTO users (name, token_nonce, token_sealed, disabled, created, server_admin) \
         VALUES ($1, ''::bytea, ''::bytea, FALSE, $2, $3 OR NOT EXISTS (SELECT 1 FROM users)) RETURNING id",
        &[&name, &now, &server_admin],
    )
    .await?;
    let id = UserId(col(&row, 0)?);
    let Some(sealed) = seal(id) else {
        return Err(MetaError::failed("the new token could not be sealed"));
    };
    execute(
        c,
        "UPDATE users SET token_nonce = $2, token_sealed = $3 WHERE id = $1",
        &[&id.0, &sealed.nonce, &sealed.ciphertext],
    )
    .await?;
    Ok(id)
}

/// Adds a membership or replaces its permissions; changes nothing (0 rows) when the organization
/// or the user is unknown.
async fn upsert_member<C: GenericClient>(c: &C, org: &OrgId, user: UserId, p: Permissions) -> MetaResult<u64> {
    execute(
        c,
        "INSERT INTO members (org_id, user_id, can_read, can_write, can_delete, is_admin) \
         SELECT $1, $2, $3, $4, $5, $6 \
         WHERE EXISTS (SELECT 1 FROM orgs WHERE id = $1) AND EXISTS (SELECT 1 FROM users WHERE id = $2) \
         ON CONFLICT (org_id, user_id) DO UPDATE SET can_read = EXCLUDED.can_read, \
         can_write = EXCLUDED.can_write, can_delete = EXCLUDED.can_delete, is_admin = EXCLUDED.is_admin",
        &[&org.as_str(), &user.0, &p.read, &p.write, &p.delete, &p.admin],
    )
    .await
}

/// One column of a row, typed; a type mismatch is an error, never a panic.
fn col<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> MetaResult<T> {
    Ok(row.try_get(index)?)
}

/// Locks the organization's root folder row until the transaction ends and returns the usage it
/// holds; `None` when the organization has no root row (unknown organization). Every write to an
/// organization's objects or upload parts takes this lock first: it is what serializes them across
/// servers.
///
/// The organization's pending part bytes (`orgs.pending_bytes`, changed only under this lock) are
/// read by a later statement ([`PENDING`]), never joined into this one: a statement that waited
/// for the lock re-reads the locked row only, and would see a joined row as it was before the wait.
async fn lock_org<C: GenericClient>(tx: &C, org: &OrgId) -> MetaResult<Option<Usage>> {
    let row = query_opt(tx, LOCK_ORG, &[&org.as_str()]).await?;
    row.map(|row| {
        Ok(Usage {
            bytes: to_u64(col(&row, 0)?),
            files: to_u64(col(&row, 1)?),
        })
    })
    .transpose()
}

/// The organization's pending part bytes, as a column of a statement run after [`lock_org`].
const PENDING: &str = "(SELECT pending_bytes FROM orgs WHERE id = $1)";

/// Starts a read-only transaction that sees one snapshot for all its statements.
async fn snapshot(client: &mut deadpool_postgres::Client) -> MetaResult<Transaction<'_>> {
    Ok(client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?)
}

// --- rows ---

const ORG_SELECT: &str = "SELECT o.id, o.name, o.max_bytes, o.max_files, o.created, f.bytes, f.files, o.bucket \
     FROM orgs o JOIN folders f ON f.org_id = o.id AND f.path = ''";

/// An organization row joined with its root folder (usage); `None` for a malformed id.
fn org_from_row(row: &Row) -> MetaResult<Option<Organization>> {
    let id: String = col(row, 0)?;
    let Some(id) = OrgId::parse(&id) else {
        return Ok(None);
    };
    Ok(Some(Organization {
        id,
        name: col(row, 1)?,
        max_bytes: col::<Option<i64>>(row, 2)?.map(to_u64),
        max_files: col::<Option<i64>>(row, 3)?.map(to_u64),
        created: col(row, 4)?,
        usage: Usage {
            bytes: to_u64(col(row, 5)?),
            files: to_u64(col(row, 6)?),
        },
        bucket: col(row, 7)?,
    }))
}

const USER_SELECT: &str = "SELECT id, name, token_nonce, token_sealed, disabled, created, server_admin FROM users";

fn user_from_row(row: &Row) -> MetaResult<User> {
    Ok(User {
        id: UserId(col(row, 0)?),
        name: col(row, 1)?,
        token: SealedToken {
            nonce: col(row, 2)?,
            ciphertext: col(row, 3)?,
        },
        disabled: col(row, 4)?,
        created: col(row, 5)?,
        server_admin: col(row, 6)?,
    })
}

const S3_KEY_SELECT: &str = "SELECT k.access_key, k.user_id, k.org_id, k.read_only, k.secret_nonce, \
     k.secret_sealed, k.created, k.revoked, u.disabled FROM s3_keys k JOIN users u ON u.id = k.user_id";

fn s3_key_from_row(row: &Row) -> MetaResult<S3Key> {
    Ok(S3Key {
        access_key: col(row, 0)?,
        user: UserId(col(row, 1)?),
        org: col::<Option<String>>(row, 2)?.as_deref().and_then(OrgId::parse),
        read_only: col(row, 3)?,
        secret: SealedToken {
            nonce: col(row, 4)?,
            ciphertext: col(row, 5)?,
        },
        created: col(row, 6)?,
        revoked: col(row, 7)?,
        user_disabled: col(row, 8)?,
    })
}

/// What deleting an empty organization removes (as in the SQLite store).
const ORG_DELETION: [&str; 8] = [
    "DELETE FROM upload_parts WHERE org_id = $1",
    "DELETE FROM uploads WHERE org_id = $1",
    "DELETE FROM job_entries WHERE job_id IN (SELECT id FROM jobs WHERE org_id = $1)",
    "DELETE FROM jobs WHERE org_id = $1",
    "DELETE FROM s3_keys WHERE org_id = $1",
    "DELETE FROM members WHERE org_id = $1",
    "DELETE FROM folders WHERE org_id = $1",
    "DELETE FROM orgs WHERE id = $1",
];

/// Takes the bucket-name lock for the transaction and returns the organization that has this
/// bucket name, if any.
async fn lock_bucket(tx: &Transaction<'_>, bucket: &BucketAlias) -> MetaResult<Option<OrgId>> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BUCKET_LOCK]).await?;
    let row = query_opt(tx, "SELECT id FROM orgs WHERE bucket = $1", &[&bucket.as_str()]).await?;
    Ok(match row {
        Some(row) => OrgId::parse(&col::<String>(&row, 0)?),
        None => None,
    })
}

const MEMBER_COLUMNS: &str = "user_id, can_read, can_write, can_delete, is_admin";

fn membership_from_row(org: &OrgId, row: &Row) -> MetaResult<Membership> {
    Ok(Membership {
        org: org.clone(),
        user: UserId(col(row, 0)?),
        permissions: Permissions {
            read: col(row, 1)?,
            write: col(row, 2)?,
            delete: col(row, 3)?,
            admin: col(row, 4)?,
        },
    })
}

const OBJECT_COLUMNS: &str = "key, size, md5, mime, preview, created, modified, blob_id, etag, user_meta";

/// An object row (columns as in [`OBJECT_COLUMNS`]); `None` when a stored key or blob id is
/// malformed, or when the columns are NULL (an outer join that found nothing).
fn object_from_row(row: &Row) -> MetaResult<Option<ObjectMeta>> {
    let (Some(key), Some(blob)) = (col::<Option<String>>(row, 0)?, col::<Option<String>>(row, 7)?) else {
        return Ok(None);
    };
    let (Ok(key), Some(blob)) = (Key::parse(&key), BlobId::parse(&blob)) else {
        return Ok(None);
    };
    Ok(Some(ObjectMeta {
        key,
        size: to_u64(col(row, 1)?),
        md5: col(row, 2)?,
        mime: col(row, 3)?,
        preview: col(row, 4)?,
        created: col(row, 5)?,
        modified: col(row, 6)?,
        blob,
        etag: col(row, 8)?,
        user_meta: col(row, 9)?,
    }))
}

// --- writes to objects (each inside a transaction holding the organization lock) ---

/// After the lock: the shallowest ancestor that is a file, whether the key is a folder, the
/// existing object (size, created, blob), the database clock and the organization's pending part
/// bytes ([`PENDING`]) and how many of the folders above the key have rows — one round trip.
const PUT_CHECKS: &str = concat!(
    "SELECT (SELECT a.key FROM objects a WHERE a.org_id = $1 AND a.key = ANY($2::text[]) ORDER BY a.key LIMIT 1), \
     EXISTS (SELECT 1 FROM folders f WHERE f.org_id = $1 AND f.path = $3), \
     o.size, o.created, o.blob_id, ",
    "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint, ",
    "(SELECT pending_bytes FROM orgs WHERE id = $1), ",
    "(SELECT count(*) FROM folders f WHERE f.org_id = $1 AND f.path = ANY($4::text[]))",
    " FROM (SELECT 1) AS one LEFT JOIN objects o ON o.org_id = $1 AND o.key = $3"
);

/// Creates or replaces an object with its folder rows, usage and the replaced blob's collection,
/// or refuses it, once the organization is locked, with `released` bytes of pending parts no
/// longer counted by the quota check (the parts of the upload this put completes).
async fn put_locked(
    tx: &Transaction<'_>,
    org: &OrgId,
    object: &NewObject,
    quota: Quota,
    locked: Option<Usage>,
    released: u64,
) -> MetaResult<PutOutcome> {
    let checks = match put_checks(tx, org, &object.key).await? {
        Ok(checks) => checks,
        Err(refusal) => return Ok(PutOutcome::Refused(refusal)),
    };
    let stored = locked.ok_or_else(|| MetaError::no_root_folder(org))?;
    let usage = counted_usage(stored, checks.pending, released);
    if let Some(refusal) = refuse_existing(object, checks.replaced.as_ref()) {
        return Ok(PutOutcome::Refused(refusal));
    }
    let delta = PutDelta::of(object.size, checks.replaced.as_ref());
    if let Err(over) = check_quota(usage, quota, delta) {
        return Ok(PutOutcome::Refused(PutRefusal::Quota(over)));
    }
    let now = write_time(object, checks.clock);
    upsert_object(
        tx,
        org,
        object,
        creation_time(object, checks.replaced.as_ref(), now),
        now,
    )
    .await?;
    add_to_folders(tx, org, &object.key, delta, now).await?;
    let replaced = match checks.replaced {
        Some(old) => {
            queue_garbage(tx, &old.blob, now).await?;
            BlobId::parse(&old.blob)
        }
        None => None,
    };
    Ok(PutOutcome::Stored { replaced })
}

// --- multipart uploads (each write inside a transaction holding the organization lock) ---

const UPLOAD_SELECT: &str = "SELECT id, org_id, key, user_id, created, mime, user_meta FROM uploads";

/// An upload row; `None` when a stored organization id or key is malformed.
fn upload_from_row(row: &Row) -> MetaResult<Option<MultipartUpload>> {
    let (org, key): (String, String) = (col(row, 1)?, col(row, 2)?);
    let (Some(org), Ok(key)) = (OrgId::parse(&org), Key::parse(&key)) else {
        return Ok(None);
    };
    Ok(Some(MultipartUpload {
        id: col(row, 0)?,
        org,
        key,
        user: UserId(col(row, 3)?),
        created: col(row, 4)?,
        mime: col(row, 5)?,
        user_meta: col(row, 6)?,
    }))
}

/// A part row (number, blob, size, md5, modified); `None` when its number or blob id is malformed.
fn part_from_row(row: &Row) -> MetaResult<Option<PartRecord>> {
    let (number, blob): (i64, String) = (col(row, 0)?, col(row, 1)?);
    let (Ok(number), Some(blob)) = (u32::try_from(number), BlobId::parse(&blob)) else {
        return Ok(None);
    };
    Ok(Some(PartRecord {
        number,
        blob,
        size: to_u64(col(row, 2)?),
        md5: col(row, 3)?,
        modified: col(row, 4)?,
    }))
}

/// Under the lock: whether the upload exists, and the bytes of its parts.
async fn upload_state(tx: &Transaction<'_>, org: &OrgId, id: &str) -> MetaResult<Option<u64>> {
    let row = query_one(
        tx,
        "SELECT EXISTS (SELECT 1 FROM uploads WHERE org_id = $1 AND id = $2), \
         (SELECT COALESCE(SUM(size), 0)::bigint FROM upload_parts WHERE org_id = $1 AND upload_id = $2)",
        &[&org.as_str(), &id],
    )
    .await?;
    col::<bool>(&row, 0)?
        .then(|| col::<i64>(&row, 1).map(to_u64))
        .transpose()
}

/// Adds `delta` (negative: takes it off) to the organization's pending bytes.
async fn add_pending(tx: &Transaction<'_>, org: &OrgId, delta: i64) -> MetaResult<()> {
    if delta != 0 {
        execute(
            tx,
            "UPDATE orgs SET pending_bytes = GREATEST(pending_bytes + $2::bigint, 0) WHERE id = $1",
            &[&org.as_str(), &delta],
        )
        .await?;
    }
    Ok(())
}

async fn put_part_tx(
    tx: &Transaction<'_>,
    org: &OrgId,
    id: &str,
    part: &PartRecord,
    quota: Quota,
) -> MetaResult<PartOutcome> {
    let Some(stored) = lock_org(tx, org).await? else {
        return Ok(PartOutcome::NoSuchUpload);
    };
    let number = i64::from(part.number);
    let row = query_one(
        tx,
        &format!(
            "SELECT EXISTS (SELECT 1 FROM uploads WHERE org_id = $1 AND id = $2), p.size, p.blob_id, {PENDING} \
             FROM (SELECT 1) AS one LEFT JOIN upload_parts p ON p.org_id = $1 AND p.upload_id = $2 AND p.number = $3"
        ),
        &[&org.as_str(), &id, &number],
    )
    .await?;
    if !col::<bool>(&row, 0)? {
        return Ok(PartOutcome::NoSuchUpload);
    }
    let replaced: Option<(i64, String)> = match (col::<Option<i64>>(&row, 1)?, col::<Option<String>>(&row, 2)?) {
        (Some(size), Some(blob)) => Some((size, blob)),
        _ => None,
    };
    let delta = part_delta(part.size, replaced.as_ref().map(|(size, _)| to_u64(*size)));
    let pending = col::<Option<i64>>(&row, 3)?.map(to_u64).unwrap_or(0);
    if let Err(over) = check_quota(counted_usage(stored, pending, 0), quota, delta) {
        return Ok(PartOutcome::Quota(over));
    }
    execute(
        tx,
        "INSERT INTO upload_parts (org_id, upload_id, number, blob_id, size, md5, modified) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (org_id, upload_id, number) DO UPDATE SET \
         blob_id = EXCLUDED.blob_id, size = EXCLUDED.size, md5 = EXCLUDED.md5, modified = EXCLUDED.modified",
        &[
            &org.as_str(),
            &id,
            &number,
            &part.blob.as_str(),
            &to_i64(part.size),
            &part.md5,
            &part.modified,
        ],
    )
    .await?;
    add_pending(tx, org, delta.bytes).await?;
    let replaced = match replaced {
        Some((_, old)) if old != part.blob.as_str() => {
            queue_garbage(tx, &old, part.modified).await?;
            BlobId::parse(&old)
        }
        _ => None,
    };
    Ok(PartOutcome::Stored { replaced })
}

/// Removes an upload of `bytes` bytes of parts and its parts, queueing their blobs for collection.
async fn remove_upload(tx: &Transaction<'_>, org: &OrgId, id: &str, bytes: u64, now: Millis) -> MetaResult<()> {
    execute(
        tx,
        "WITH gone AS (DELETE FROM upload_parts WHERE org_id = $1 AND upload_id = $2 RETURNING blob_id) \
         INSERT INTO garbage (blob_id, since) SELECT blob_id, $3::bigint FROM gone ON CONFLICT DO NOTHING",
        &[&org.as_str(), &id, &now],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM uploads WHERE org_id = $1 AND id = $2",
        &[&org.as_str(), &id],
    )
    .await?;
    add_pending(tx, org, to_i64(bytes).saturating_neg()).await
}

async fn complete_upload_tx(
    tx: &Transaction<'_>,
    org: &OrgId,
    id: &str,
    object: &NewObject,
    quota: Quota,
) -> MetaResult<CompleteOutcome> {
    let locked = lock_org(tx, org).await?;
    let Some(released) = upload_state(tx, org, id).await? else {
        return Ok(CompleteOutcome::NoSuchUpload);
    };
    match put_locked(tx, org, object, quota, locked, released).await? {
        PutOutcome::Refused(refusal) => Ok(CompleteOutcome::Refused(refusal)),
        PutOutcome::Stored { replaced } => {
            remove_upload(tx, org, id, released, object.now).await?;
            Ok(CompleteOutcome::Stored { replaced })
        }
    }
}

/// What a put learns before it writes: the object it replaces and the database clock.
struct PutChecks {
    replaced: Option<Replaced>,
    clock: Millis,
    /// The organization's pending part bytes.
    pending: u64,
    /// Whether every folder above the key has its row (the put creates none).
    folders_exist: bool,
}

/// Reads, in one round trip ([`PUT_CHECKS`]), whether `key` can be a file and what it replaces.
async fn put_checks<C: GenericClient>(tx: &C, org: &OrgId, key: &Key) -> MetaResult<Result<PutChecks, PutRefusal>> {
    let ancestors = key.ancestors();
    let folders: Vec<&str> = ancestors.iter().map(FolderPath::as_str).collect();
    let above = &folders[1..];
    let checks = query_one(tx, PUT_CHECKS, &[&org.as_str(), &above, &key.as_str(), &folders]).await?;
    if let Some(file) = col::<Option<String>>(&checks, 0)? {
        return Ok(Err(PutRefusal::AncestorIsFile(file)));
    }
    if col::<bool>(&checks, 1)? {
        return Ok(Err(PutRefusal::IsFolder));
    }
    let replaced = match col::<Option<i64>>(&checks, 2)? {
        Some(size) => Some(Replaced {
            size: to_u64(size),
            created: col(&checks, 3)?,
            blob: col(&checks, 4)?,
        }),
        None => None,
    };
    Ok(Ok(PutChecks {
        replaced,
        clock: col(&checks, 5)?,
        pending: col::<Option<i64>>(&checks, 6)?.map(to_u64).unwrap_or(0),
        folders_exist: usize::try_from(col::<i64>(&checks, 7)?).is_ok_and(|n| n == folders.len()),
    }))
}

/// Writes an object row ([`upsert_object`]).
const UPSERT_OBJECT: &str = "INSERT INTO objects (org_id, key, parent, name, size, md5, mime, preview, created, modified, \
     blob_id, etag, user_meta) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (org_id, key) DO UPDATE SET size = EXCLUDED.size, md5 = EXCLUDED.md5, mime = EXCLUDED.mime, \
     preview = EXCLUDED.preview, modified = EXCLUDED.modified, blob_id = EXCLUDED.blob_id, \
     etag = EXCLUDED.etag, user_meta = EXCLUDED.user_meta";

/// Queues a blob for collection ([`queue_garbage`]).
const QUEUE_GARBAGE: &str = "INSERT INTO garbage (blob_id, since) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// Locks the organization's root folder row ([`lock_org`]).
const LOCK_ORG: &str = "SELECT bytes, files FROM folders WHERE org_id = $1 AND path = '' FOR UPDATE";

/// Writes the object row, keeping `created` of a row it replaces.
async fn upsert_object<C: GenericClient>(
    tx: &C,
    org: &OrgId,
    object: &NewObject,
    created: Millis,
    now: Millis,
) -> MetaResult<()> {
    execute(
        tx,
        UPSERT_OBJECT,
        &[
            &org.as_str(),
            &object.key.as_str(),
            &object.key.parent_str(),
            &object.key.name(),
            &to_i64(object.size),
            &object.md5,
            &object.mime,
            &object.preview,
            &created,
            &now,
            &object.blob.as_str(),
            &object.etag,
            &object.user_meta,
        ],
    )
    .await?;
    Ok(())
}

/// Adds a put's figures to every folder above its key in one statement, then creates the folders
/// that had no row (see [`folder_growth`]).
async fn add_to_folders<C: GenericClient>(
    tx: &C,
    org: &OrgId,
    key: &Key,
    delta: PutDelta,
    now: Millis,
) -> MetaResult<()> {
    let ancestors = key.ancestors();
    let paths: Vec<&str> = ancestors.iter().map(FolderPath::as_str).collect();
    let updated: HashSet<String> = query(
        tx,
        "UPDATE folders SET bytes = bytes + $3::bigint, files = files + $4::bigint, \
         child_files = child_files + CASE WHEN path = $5 THEN $4::bigint ELSE 0 END, \
         modified = GREATEST(modified, $6::bigint), \
         children_version = CASE WHEN path = $5 AND $4::bigint <> 0 THEN nextval('children_versions') \
         ELSE children_version END \
         WHERE org_id = $1 AND path = ANY($2::text[]) RETURNING path",
        &[
            &org.as_str(),
            &paths,
            &delta.bytes,
            &delta.files,
            &key.parent_str(),
            &now,
        ],
    )
    .await?
    .iter()
    .map(|row| col::<String>(row, 0))
    .collect::<MetaResult<_>>()?;
    let missing: Vec<&FolderPath> = ancestors.iter().filter(|f| !updated.contains(f.as_str())).collect();
    if missing.is_empty() {
        return Ok(());
    }
    create_folders(tx, org, &folder_growth(key, &missing, delta), delta, now).await
}

/// Inserts the folder rows a put creates and counts them in the folders above them.
async fn create_folders<C: GenericClient>(
    tx: &C,
    org: &OrgId,
    growth: &FolderGrowth<'_>,
    delta: PutDelta,
    now: Millis,
) -> MetaResult<()> {
    let paths: Vec<&str> = growth.created.iter().map(|f| f.path.as_str()).collect();
    let parents: Vec<Option<&str>> = growth
        .created
        .iter()
        .map(|f| f.parent.as_ref().map(FolderPath::as_str))
        .collect();
    let names: Vec<&str> = growth.created.iter().map(|f| f.path.name()).collect();
    let child_folders: Vec<i64> = growth.created.iter().map(|f| f.child_folders).collect();
    let child_files: Vec<i64> = growth.created.iter().map(|f| f.child_files).collect();
    execute(
        tx,
        "INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified) \
         SELECT $1, a.path, a.parent, a.name, $7::bigint, $8::bigint, a.child_folders, a.child_files, $9::bigint \
         FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[]) \
         AS a(path, parent, name, child_folders, child_files)",
        &[
            &org.as_str(),
            &paths,
            &parents,
            &names,
            &child_folders,
            &child_files,
            &delta.bytes,
            &delta.files,
            &now,
        ],
    )
    .await?;
    if !growth.gaining_child.is_empty() {
        let gaining: Vec<&str> = growth.gaining_child.iter().map(FolderPath::as_str).collect();
        execute(
            tx,
            "UPDATE folders SET child_folders = child_folders + 1, children_version = nextval('children_versions') \
             WHERE org_id = $1 AND path = ANY($2::text[])",
            &[&org.as_str(), &gaining],
        )
        .await?;
    }
    Ok(())
}

/// Queues a blob no object names any more for collection.
async fn queue_garbage<C: GenericClient>(tx: &C, blob: &str, now: Millis) -> MetaResult<()> {
    execute(tx, QUEUE_GARBAGE, &[&blob, &now]).await?;
    Ok(())
}

// --- batched puts: one transaction and one organization lock for the puts queued meanwhile ---

/// Puts to one organization at most in one transaction.
const MAX_BATCH: usize = 64;

/// A put waiting for its organization's next batch, and where its answer goes.
struct QueuedPut {
    object: NewObject,
    quota: Quota,
    reply: oneshot::Sender<MetaResult<PutOutcome>>,
}

/// The puts queued per organization on this server. An organization is in the map while a task
/// runs its batches (see [`drain_puts`]); the task removes it when it finds no queued put.
type PutQueues = Arc<Mutex<HashMap<OrgId, Vec<QueuedPut>>>>;

fn lock_queues(queues: &PutQueues) -> std::sync::MutexGuard<'_, HashMap<OrgId, Vec<QueuedPut>>> {
    // A panic never leaves the map half-changed (single inserts and removals), so a poisoned lock
    // still holds a usable map.
    queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Queues a put for `org` and starts the organization's batch task when none runs; the answer
/// comes after the commit of the transaction that holds it.
async fn queue_put(
    pool: &Pool,
    queues: &PutQueues,
    org: &OrgId,
    object: NewObject,
    quota: Quota,
) -> MetaResult<PutOutcome> {
    let (reply, answer) = oneshot::channel();
    let start = {
        let mut map = lock_queues(queues);
        let start = !map.contains_key(org);
        map.entry(org.clone())
            .or_default()
            .push(QueuedPut { object, quota, reply });
        start
    };
    if start {
        // A task of its own, so that a caller that goes away does not abandon the others' batch.
        tokio::spawn(drain_puts(pool.clone(), queues.clone(), org.clone()));
    }
    answer
        .await
        .unwrap_or_else(|_| Err(MetaError::failed("the put's batch ended without an answer")))
}

/// Forgets the organization's queue if its batch task ends without emptying it (a panic): the
/// queued puts' answers are then dropped, and their callers told so, instead of waiting forever.
struct DrainGuard {
    queues: PutQueues,
    org: OrgId,
    done: bool,
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if !self.done {
            lock_queues(&self.queues).remove(&self.org);
        }
    }
}

/// Runs the organization's queued puts, up to [`MAX_BATCH`] per transaction, until none is left.
async fn drain_puts(pool: Pool, queues: PutQueues, org: OrgId) {
    let mut guard = DrainGuard {
        queues,
        org,
        done: false,
    };
    loop {
        let batch = {
            let mut map = lock_queues(&guard.queues);
            let Some(queued) = map.get_mut(&guard.org) else {
                guard.done = true;
                return;
            };
            if queued.is_empty() {
                map.remove(&guard.org);
                guard.done = true;
                return;
            }
            let take = queued.len().min(MAX_BATCH);
            queued.drain(..take).collect::<Vec<_>>()
        };
        run_batch(&pool, &guard.org, batch).await;
    }
}

/// One transaction for a batch of puts; each put is answered with its own outcome after the
/// commit, or every put with the transaction's error.
async fn run_batch(pool: &Pool, org: &OrgId, batch: Vec<QueuedPut>) {
    let (puts, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| ((p.object, p.quota), p.reply)).unzip();
    let result = async {
        let client = pool.get().await?;
        let result = put_batch(&client, org, &puts).await;
        if result.is_err() {
            // The transaction (BEGIN and COMMIT are ours, not a `Transaction`'s) must not stay open
            // on a pooled connection: roll it back, or keep the connection out of the pool.
            if client.batch_execute("ROLLBACK").await.is_err() {
                drop(deadpool_postgres::Object::take(client));
            }
        }
        result
    }
    .await;
    match result {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(MetaError::shared(&e)));
            }
        }
    }
}

/// The statements [`put_batch`] pipelines, prepared (cached) before any of them is sent: a
/// statement found in the cache is sent when its future is first polled, so statements polled in
/// order reach the database in that order (and run there in that order, one after another). An
/// uncached one would first wait for its `PREPARE` and could be sent after a later one.
const PIPELINED: [&str; 5] = [LOCK_ORG, PUT_CHECKS, UPSERT_OBJECT, QUEUE_GARBAGE, ADD_FOLDER_CHANGES];

/// Runs a batch as one transaction on `client` and commits it: `BEGIN`, the lock and the first
/// run's checks in one round trip, then each run's writes ([`write_accepted`]), the last one's with
/// the `COMMIT`. Outcomes are valid only once this returns `Ok` (committed).
async fn put_batch(
    client: &deadpool_postgres::Client,
    org: &OrgId,
    puts: &[(NewObject, Quota)],
) -> MetaResult<Vec<PutOutcome>> {
    for sql in PIPELINED {
        client.prepare_cached(sql).await?;
    }
    let mut runs = Vec::new();
    let mut start = 0;
    while start < puts.len() {
        let mut end = start + 1;
        while end < puts.len()
            && puts[start..end]
                .iter()
                .all(|(p, _)| independent_puts(&p.key, &puts[end].0.key))
        {
            end += 1;
        }
        runs.push(&puts[start..end]);
        start = end;
    }
    let first = runs.first().copied().unwrap_or_default();
    // The lock is taken before the checks run: the database runs one connection's statements in
    // the order they were sent, and each check (READ COMMITTED) reads after the lock is held.
    let (_, locked, first_checks) = futures::future::try_join3(
        async { Ok::<_, MetaError>(client.batch_execute("BEGIN").await?) },
        lock_org(client, org),
        run_checks(client, org, first),
    )
    .await?;
    let stored = locked.ok_or_else(|| MetaError::no_root_folder(org))?;
    let mut quota_run: Option<QuotaRun> = None;
    let mut outcomes = Vec::with_capacity(puts.len());
    let mut pending_checks = Some(first_checks);
    for (i, group) in runs.iter().enumerate() {
        let checks = match pending_checks.take() {
            Some(checks) => checks,
            None => run_checks(client, org, group).await?,
        };
        let mut accepted = Vec::new();
        for ((object, quota), checks) in group.iter().zip(checks) {
            let checks = match checks {
                Ok(checks) => checks,
                Err(refusal) => {
                    outcomes.push(PutOutcome::Refused(refusal));
                    continue;
                }
            };
            if let Some(refusal) = refuse_existing(object, checks.replaced.as_ref()) {
                outcomes.push(PutOutcome::Refused(refusal));
                continue;
            }
            let run = quota_run.get_or_insert_with(|| QuotaRun::new(counted_usage(stored, checks.pending, 0)));
            let delta = PutDelta::of(object.size, checks.replaced.as_ref());
            if let Err(over) = run.decide(*quota, delta) {
                outcomes.push(PutOutcome::Refused(PutRefusal::Quota(over)));
                continue;
            }
            outcomes.push(PutOutcome::Stored {
                replaced: checks.replaced.as_ref().and_then(|old| BlobId::parse(&old.blob)),
            });
            accepted.push(Accepted {
                object,
                delta,
                now: write_time(object, checks.clock),
                folders_exist: checks.folders_exist,
                replaced: checks.replaced,
            });
        }
        write_accepted(client, org, &accepted, i + 1 == runs.len()).await?;
    }
    if runs.is_empty() {
        client.batch_execute("COMMIT").await?;
    }
    Ok(outcomes)
}

/// The checks of a run of puts, pipelined in one round trip.
async fn run_checks(
    client: &deadpool_postgres::Client,
    org: &OrgId,
    group: &[(NewObject, Quota)],
) -> MetaResult<Vec<Result<PutChecks, PutRefusal>>> {
    futures::future::try_join_all(group.iter().map(|(object, _)| put_checks(client, org, &object.key))).await
}

/// A put of a batch that passed its checks and its quota decision.
struct Accepted<'a> {
    object: &'a NewObject,
    delta: PutDelta,
    replaced: Option<Replaced>,
    folders_exist: bool,
    now: Millis,
}

/// Writes a run's accepted puts: object rows, replaced blobs and summed folder figures in one
/// pipelined round trip (with the `COMMIT` when `commit` and no put creates folders), then the
/// puts that create folders one by one (and then the `COMMIT` when `commit`).
async fn write_accepted(
    client: &deadpool_postgres::Client,
    org: &OrgId,
    accepted: &[Accepted<'_>],
    commit: bool,
) -> MetaResult<()> {
    let rows = accepted.iter().map(|a| {
        let created = creation_time(a.object, a.replaced.as_ref(), a.now);
        upsert_object(client, org, a.object, created, a.now)
    });
    let garbage = accepted
        .iter()
        .filter_map(|a| a.replaced.as_ref().map(|old| queue_garbage(client, &old.blob, a.now)));
    let changes = sum_folder_changes(
        accepted
            .iter()
            .filter(|a| a.folders_exist)
            .map(|a| (&a.object.key, a.delta, a.now)),
    );
    let creating = accepted.iter().filter(|a| !a.folders_exist);
    let commit_now = commit && creating.clone().next().is_none();
    // try_join polls its futures in order, so the COMMIT is sent after every write of the run; if a
    // write fails, the database has aborted the transaction and that COMMIT only ends it.
    futures::future::try_join(
        futures::future::try_join3(
            futures::future::try_join_all(rows),
            futures::future::try_join_all(garbage),
            add_folder_changes(client, org, &changes),
        ),
        async {
            if commit_now {
                client.batch_execute("COMMIT").await?;
            }
            Ok(())
        },
    )
    .await?;
    for a in creating {
        add_to_folders(client, org, &a.object.key, a.delta, a.now).await?;
    }
    if commit && !commit_now {
        client.batch_execute("COMMIT").await?;
    }
    Ok(())
}

/// Adds summed figures ([`FolderChange`]) to existing folder rows.
const ADD_FOLDER_CHANGES: &str = "UPDATE folders f SET bytes = f.bytes + c.bytes, files = f.files + c.files, \
     child_files = f.child_files + c.child_files, modified = GREATEST(f.modified, c.modified), \
     children_version = CASE WHEN c.child_files <> 0 THEN nextval('children_versions') ELSE f.children_version END \
     FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) \
     AS c(path, bytes, files, child_files, modified) \
     WHERE f.org_id = $1 AND f.path = c.path";

/// Adds summed figures to existing folder rows in one statement.
async fn add_folder_changes<C: GenericClient>(tx: &C, org: &OrgId, changes: &[FolderChange]) -> MetaResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    let bytes: Vec<i64> = changes.iter().map(|c| c.bytes).collect();
    let files: Vec<i64> = changes.iter().map(|c| c.files).collect();
    let child_files: Vec<i64> = changes.iter().map(|c| c.child_files).collect();
    let modified: Vec<Millis> = changes.iter().map(|c| c.modified).collect();
    let updated = execute(
        tx,
        ADD_FOLDER_CHANGES,
        &[&org.as_str(), &paths, &bytes, &files, &child_files, &modified],
    )
    .await?;
    if updated != changes.len() as u64 {
        // The rows were read under the same lock: one missing now means the store contradicts itself.
        return Err(MetaError::Corrupt(
            format!(
                "organization {org}: {updated} of {} folder rows found for a batch of puts",
                changes.len()
            )
            .into(),
        ));
    }
    Ok(())
}

/// Takes a delete's figures off `start` and every folder above it (see [`Detach`]). Folders left
/// empty are removed; the newest modification is recomputed from the remaining children (index
/// lookups).
async fn detach(tx: &Transaction<'_>, org: &OrgId, start: FolderPath, mut detach: Detach) -> MetaResult<()> {
    let mut current = Some(start);
    while let Some(path) = current {
        let step = detach.step();
        let remaining: i64 = match query_opt(
            tx,
            "UPDATE folders SET bytes = bytes - $3::bigint, files = files - $4::bigint, \
             child_files = child_files - $5::bigint, child_folders = child_folders - $6::bigint, \
             children_version = CASE WHEN $5::bigint <> 0 OR $6::bigint <> 0 \
             THEN nextval('children_versions') ELSE children_version END \
             WHERE org_id = $1 AND path = $2 RETURNING files",
            &[
                &org.as_str(),
                &path.as_str(),
                &step.bytes,
                &step.files,
                &step.child_files,
                &step.child_folders,
            ],
        )
        .await?
        {
            Some(row) => col(&row, 0)?,
            None => 0,
        };
        if detach.removes(&path, remaining) {
            execute(
                tx,
                "DELETE FROM folders WHERE org_id = $1 AND path = $2",
                &[&org.as_str(), &path.as_str()],
            )
            .await?;
        } else {
            execute(
                tx,
                "UPDATE folders SET modified = COALESCE((SELECT MAX(m) FROM ( \
                 SELECT MAX(modified) AS m FROM objects WHERE org_id = $1 AND parent = $2 \
                 UNION ALL SELECT MAX(modified) AS m FROM folders WHERE org_id = $1 AND parent = $2) AS children), \
                 modified) WHERE org_id = $1 AND path = $2",
                &[&org.as_str(), &path.as_str()],
            )
            .await?;
        }
        current = path.parent();
    }
    Ok(())
}

async fn delete_tx(tx: &Transaction<'_>, org: &OrgId, key: &Key, now: Millis) -> MetaResult<DeleteOutcome> {
    // An unknown organization has nothing to delete: the lookups below find nothing.
    lock_org(tx, org).await?;
    let file = query_opt(
        tx,
        "DELETE FROM objects WHERE org_id = $1 AND key = $2 RETURNING size, blob_id",
        &[&org.as_str(), &key.as_str()],
    )
    .await?;
    if let Some(row) = file {
        let (size, blob): (i64, String) = (col(&row, 0)?, col(&row, 1)?);
        queue_garbage(tx, &blob, now).await?;
        detach(tx, org, key.parent(), Detach::file(to_u64(size))).await?;
        return Ok(DeleteOutcome::File);
    }
    let folder = query_opt(
        tx,
        "SELECT bytes, files FROM folders WHERE org_id = $1 AND path = $2",
        &[&org.as_str(), &key.as_str()],
    )
    .await?;
    let Some(folder) = folder else {
        return Ok(DeleteOutcome::NotFound);
    };
    let (bytes, files): (i64, i64) = (col(&folder, 0)?, col(&folder, 1)?);
    let (low, high) = key.as_folder().descendant_range();
    execute(
        tx,
        "WITH gone AS (DELETE FROM objects WHERE org_id = $1 AND key >= $2 AND key < $3 RETURNING blob_id) \
         INSERT INTO garbage (blob_id, since) SELECT blob_id, $4::bigint FROM gone ON CONFLICT DO NOTHING",
        &[&org.as_str(), &low, &high, &now],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM folders WHERE org_id = $1 AND (path = $2 OR (path >= $3 AND path < $4))",
        &[&org.as_str(), &key.as_str(), &low, &high],
    )
    .await?;
    detach(tx, org, key.parent(), Detach::folder(to_u64(bytes), to_u64(files))).await?;
    Ok(DeleteOutcome::Folder {
        files: to_u64(files),
        bytes: to_u64(bytes),
    })
}

/// The marks of a folder's child folders from a name on (see [`MarkScan`]): `$4` times, the
/// name `$5` entries after the last one found, each a short range of `folders_listing`.
const FOLDER_MARKS_SQL: &str = "WITH RECURSIVE m(name, k) AS (SELECT $3::text COLLATE \"C\", 0::bigint UNION ALL \
     SELECT (SELECT c.name FROM folders c WHERE c.org_id = $1 AND c.parent = $2 AND c.name >= m.name \
     ORDER BY c.name LIMIT 1 OFFSET $5::bigint), m.k + 1 FROM m WHERE m.k < $4::bigint AND m.name IS NOT NULL) \
     SELECT name FROM m WHERE m.k > 0 AND m.name IS NOT NULL ORDER BY m.k";
/// The marks of a folder's files from a name on, as [`FOLDER_MARKS_SQL`] on `objects_listing`.
const FILE_MARKS_SQL: &str = "WITH RECURSIVE m(name, k) AS (SELECT $3::text COLLATE \"C\", 0::bigint UNION ALL \
     SELECT (SELECT c.name FROM objects c WHERE c.org_id = $1 AND c.parent = $2 AND c.name >= m.name \
     ORDER BY c.name LIMIT 1 OFFSET $5::bigint), m.k + 1 FROM m WHERE m.k < $4::bigint AND m.name IS NOT NULL) \
     SELECT name FROM m WHERE m.k > 0 AND m.name IS NOT NULL ORDER BY m.k";

/// Where `window` of the `kind` children of `folder` starts, scanning for marks when needed.
async fn seek_window(
    tx: &Transaction<'_>,
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
            let rows = query(
                tx,
                sql,
                &[&org.as_str(), &folder.as_str(), &scan.from, &scan.marks, &scan.stride],
            )
            .await?;
            let names = rows
                .iter()
                .map(|row| col(row, 0))
                .collect::<MetaResult<Vec<String>>>()?;
            Ok(marks.scanned(scan, names))
        }
    }
}

/// The figures of `folder` (the root: the organization's usage), on `c`.
async fn folder_usage_in<C: GenericClient>(c: &C, org: &OrgId, folder: &FolderPath) -> MetaResult<Option<Usage>> {
    let row = query_opt(
        c,
        "SELECT bytes, files FROM folders WHERE org_id = $1 AND path = $2",
        &[&org.as_str(), &folder.as_str()],
    )
    .await?;
    row.map(|row| {
        Ok(Usage {
            bytes: to_u64(col(&row, 0)?),
            files: to_u64(col(&row, 1)?),
        })
    })
    .transpose()
}

async fn list_tx(
    tx: &Transaction<'_>,
    marks: &ListingMarks,
    org: &OrgId,
    folder: &FolderPath,
    page: u64,
    page_size: u64,
) -> MetaResult<ListPage> {
    let counts = query_opt(
        tx,
        "SELECT child_folders, child_files, children_version FROM folders WHERE org_id = $1 AND path = $2",
        &[&org.as_str(), &folder.as_str()],
    )
    .await?;
    let usage = folder_usage_in(tx, org, &FolderPath::root()).await?.unwrap_or_default();
    let Some(counts) = counts else {
        return Ok(ListPage {
            usage,
            ..ListPage::default()
        });
    };
    let version: i64 = col(&counts, 2)?;
    let plan = PagePlan::new(to_u64(col(&counts, 0)?), to_u64(col(&counts, 1)?), page, page_size);
    let mut entries = Vec::new();
    if let Some(window) = plan.folders() {
        let keyset = seek_window(tx, marks, (org, folder), ChildKind::Folders, version, window).await?;
        let rows = query(
            tx,
            "SELECT name, bytes, modified FROM folders WHERE org_id = $1 AND parent = $2 AND name >= $3 \
             ORDER BY name LIMIT $4 OFFSET $5",
            &[
                &org.as_str(),
                &folder.as_str(),
                &keyset.from,
                &keyset.limit,
                &keyset.skip,
            ],
        )
        .await?;
        for row in rows {
            entries.push(ListEntry {
                name: col(&row, 0)?,
                is_folder: true,
                size: to_u64(col(&row, 1)?),
                mime: "directory".into(),
                modified: col(&row, 2)?,
            });
        }
    }
    if let Some(window) = plan.files(entries.len()) {
        let keyset = seek_window(tx, marks, (org, folder), ChildKind::Files, version, window).await?;
        let rows = query(
            tx,
            "SELECT name, size, mime, modified FROM objects WHERE org_id = $1 AND parent = $2 AND name >= $3 \
             ORDER BY name LIMIT $4 OFFSET $5",
            &[
                &org.as_str(),
                &folder.as_str(),
                &keyset.from,
                &keyset.limit,
                &keyset.skip,
            ],
        )
        .await?;
        for row in rows {
            entries.push(ListEntry {
                name: col(&row, 0)?,
                is_folder: false,
                size: to_u64(col(&row, 1)?),
                mime: col(&row, 2)?,
                modified: col(&row, 3)?,
            });
        }
    }
    Ok(ListPage {
        entries,
        total_entries: plan.total,
        usage,
    })
}

/// A page of files from `from` on, in key order: a range of the primary key.
const FILES_FROM_SQL: &str = "SELECT key, size, md5, mime, preview, created, modified, blob_id, etag, user_meta \
     FROM objects WHERE org_id = $1 AND key >= $2 ORDER BY key LIMIT $3";
/// [`FILES_FROM_SQL`] after `from`.
const FILES_AFTER_SQL: &str = "SELECT key, size, md5, mime, preview, created, modified, blob_id, etag, user_meta \
     FROM objects WHERE org_id = $1 AND key > $2 ORDER BY key LIMIT $3";
/// A folder's files from a name on, in name order: a range of `objects_listing`.
const CHILD_FILES_FROM_SQL: &str = "SELECT key, size, md5, mime, preview, created, modified, blob_id, etag, user_meta \
     FROM objects WHERE org_id = $1 AND parent = $2 AND name >= $3 ORDER BY name LIMIT $4";
/// [`CHILD_FILES_FROM_SQL`] after the name.
const CHILD_FILES_AFTER_SQL: &str = "SELECT key, size, md5, mime, preview, created, modified, blob_id, etag, user_meta \
     FROM objects WHERE org_id = $1 AND parent = $2 AND name > $3 ORDER BY name LIMIT $4";
/// A folder's child folder names from a name on, in name order: a range of `folders_listing`.
const CHILD_FOLDERS_FROM_SQL: &str =
    "SELECT name FROM folders WHERE org_id = $1 AND parent = $2 AND name >= $3 ORDER BY name LIMIT $4";
/// [`CHILD_FOLDERS_FROM_SQL`] after the name.
const CHILD_FOLDERS_AFTER_SQL: &str =
    "SELECT name FROM folders WHERE org_id = $1 AND parent = $2 AND name > $3 ORDER BY name LIMIT $4";
/// Which of these child folder names exist, in name order.
const CHILD_FOLDERS_NAMED_SQL: &str =
    "SELECT name FROM folders WHERE org_id = $1 AND parent = $2 AND name = ANY($3::text[]) ORDER BY name";

/// Object rows (a malformed one is left out).
fn objects_of(rows: &[Row]) -> MetaResult<Vec<ObjectMeta>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.extend(object_from_row(row)?);
    }
    Ok(out)
}

/// A folder's children in S3-name order (see `rules::S3FolderOrder`), in one snapshot.
async fn children_from_tx(
    tx: &Transaction<'_>,
    org: &OrgId,
    folder: &FolderPath,
    from: &str,
    inclusive: bool,
    limit: usize,
) -> MetaResult<Vec<Child>> {
    let sql = if inclusive {
        CHILD_FILES_FROM_SQL
    } else {
        CHILD_FILES_AFTER_SQL
    };
    let files = objects_of(&query(tx, sql, &[&org.as_str(), &folder.as_str(), &from, &count_to_i64(limit)]).await?)?;
    let mut order = S3FolderOrder::default();
    let prefixes = folder_prefixes_from(from, inclusive);
    if !prefixes.is_empty() {
        let rows = query(
            tx,
            CHILD_FOLDERS_NAMED_SQL,
            &[&org.as_str(), &folder.as_str(), &prefixes],
        )
        .await?;
        for row in &rows {
            order.push(col(row, 0)?);
        }
    }
    let batch = folder_batch(limit);
    let (mut after, mut sql) = (from.to_owned(), CHILD_FOLDERS_FROM_SQL);
    loop {
        let rows = query(
            tx,
            sql,
            &[&org.as_str(), &folder.as_str(), &after, &count_to_i64(batch)],
        )
        .await?;
        for row in &rows {
            let name: String = col(row, 0)?;
            after.clone_from(&name);
            order.push(name);
        }
        if rows.len() < batch || order.ready() >= limit {
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

/// Times a job is expanded again when its files changed before it was recorded; after that it
/// is expanded under the organization's lock.
const JOB_ATTEMPTS: usize = 3;

/// A key that is a file names that file; any other key names everything under it as a folder.
/// UNION (not UNION ALL) collapses duplicates. Parameters: job id, org, keys, folder lows, highs.
const COVERED: &str = "SELECT $1::text AS job_id, o.key, o.blob_id, o.size, o.modified FROM objects o \
     WHERE o.org_id = $2 AND o.key = ANY($3::text[]) \
     UNION \
     SELECT $1::text, o.key, o.blob_id, o.size, o.modified \
     FROM unnest($3::text[], $4::text[], $5::text[]) AS r(key, low, high) \
     JOIN objects o ON o.org_id = $2 AND o.key >= r.low AND o.key < r.high \
     WHERE NOT EXISTS (SELECT 1 FROM objects f WHERE f.org_id = $2 AND f.key = r.key)";

/// The entries of a job as expanded: keys, blob ids, sizes, modification times.
#[derive(Debug, Default)]
struct JobRows {
    keys: Vec<String>,
    blobs: Vec<String>,
    sizes: Vec<i64>,
    modified: Vec<i64>,
}

/// Records the job row itself, after making room for it among the organization's live jobs.
async fn insert_job_row(
    tx: &Transaction<'_>,
    id: &JobId,
    org: &OrgId,
    now: Millis,
    expires: Millis,
    limits: JobLimits,
) -> MetaResult<()> {
    make_room_for_job(tx, org, now, limits).await?;
    execute(
        tx,
        "INSERT INTO jobs (id, org_id, created, expires) VALUES ($1, $2, $3, $4)",
        &[&id.as_str(), &org.as_str(), &now, &expires],
    )
    .await?;
    Ok(())
}

/// Makes room for one more job of `org` (under the organization's lock): when it already holds
/// `max_live_jobs` unexpired jobs, the oldest expire now (their links answer "expired").
async fn make_room_for_job<C: GenericClient>(c: &C, org: &OrgId, now: Millis, limits: JobLimits) -> MetaResult<()> {
    let live: i64 = query_one(
        c,
        "SELECT COUNT(*) FROM jobs WHERE org_id = $1 AND expires > $2",
        &[&org.as_str(), &now],
    )
    .await?
    .try_get(0)?;
    let expire = jobs_to_expire(to_u64(live), limits.max_live_jobs);
    if expire > 0 {
        execute(
            c,
            "UPDATE jobs SET expires = $2 WHERE id IN \
             (SELECT id FROM jobs WHERE org_id = $1 AND expires > $2 ORDER BY expires, created LIMIT $3)",
            &[&org.as_str(), &now, &expire],
        )
        .await?;
    }
    Ok(())
}

/// The files `keys` name in the transaction's snapshot, or the refusal (too many jobs, too many
/// files, none). Reads at most one more file than the limit.
async fn expand_job(
    tx: &Transaction<'_>,
    org: &OrgId,
    keys: &[Key],
    limits: JobLimits,
) -> MetaResult<Result<JobRows, JobOutcome>> {
    let names: Vec<&str> = keys.iter().map(Key::as_str).collect();
    let ranges: Vec<(String, String)> = keys.iter().map(|k| k.as_folder().descendant_range()).collect();
    let lows: Vec<&str> = ranges.iter().map(|(low, _)| low.as_str()).collect();
    let highs: Vec<&str> = ranges.iter().map(|(_, high)| high.as_str()).collect();
    let probe = i64::try_from(limits.max_files.saturating_add(1)).unwrap_or(i64::MAX);
    let found = query(
        tx,
        &format!("SELECT key, blob_id, size, modified FROM ({COVERED}) AS covered LIMIT $6"),
        &[&"", &org.as_str(), &names, &lows, &highs, &probe],
    )
    .await?;
    if u64::try_from(found.len()).unwrap_or(u64::MAX) > limits.max_files {
        return Ok(Err(JobOutcome::TooManyFiles {
            limit: limits.max_files,
        }));
    }
    if found.is_empty() {
        return Ok(Err(JobOutcome::NothingFound));
    }
    let mut rows = JobRows::default();
    for row in found {
        rows.keys.push(row.try_get(0)?);
        rows.blobs.push(row.try_get(1)?);
        rows.sizes.push(row.try_get(2)?);
        rows.modified.push(row.try_get(3)?);
    }
    Ok(Ok(rows))
}

/// Records a job with `rows` as its entries, under the organization's lock (writers, which move
/// replaced blobs to `garbage`, stay out until the commit), only if every entry still names the
/// current body of its key: `None` when one changed (the caller rolls back and expands again).
async fn record_job(
    tx: &Transaction<'_>,
    org: &OrgId,
    rows: &JobRows,
    now: Millis,
    expires: Millis,
    limits: JobLimits,
) -> MetaResult<Option<JobOutcome>> {
    lock_org(tx, org).await?;
    let id = JobId::generate();
    let inserted = execute(
        tx,
        "INSERT INTO job_entries (job_id, key, blob_id, size, modified) \
         SELECT $1, e.key, e.blob_id, e.size, e.modified \
         FROM unnest($3::text[], $4::text[], $5::bigint[], $6::bigint[]) AS e(key, blob_id, size, modified) \
         JOIN objects o ON o.org_id = $2 AND o.key = e.key AND o.blob_id = e.blob_id",
        &[
            &id.as_str(),
            &org.as_str(),
            &rows.keys,
            &rows.blobs,
            &rows.sizes,
            &rows.modified,
        ],
    )
    .await?;
    if usize::try_from(inserted).ok() != Some(rows.keys.len()) {
        return Ok(None);
    }
    insert_job_row(tx, &id, org, now, expires, limits).await?;
    Ok(Some(JobOutcome::Created(Job {
        id,
        org: org.clone(),
        created: now,
        expires,
    })))
}

/// Records a job pinned to the current blobs of the named files and of everything under the
/// named folders, expanding them under the organization's lock (the fallback when bodies keep
/// changing under [`expand_job`] and [`record_job`]). The organization lock keeps writers (which move replaced blobs to `garbage`)
/// out until the job's entries are committed, so collection never takes a blob the job names.
async fn create_job_tx(
    tx: &Transaction<'_>,
    org: &OrgId,
    keys: &[Key],
    now: Millis,
    expires: Millis,
    limits: JobLimits,
) -> MetaResult<JobOutcome> {
    lock_org(tx, org).await?;
    let id = JobId::generate();
    let names: Vec<&str> = keys.iter().map(Key::as_str).collect();
    let ranges: Vec<(String, String)> = keys.iter().map(|k| k.as_folder().descendant_range()).collect();
    let lows: Vec<&str> = ranges.iter().map(|(low, _)| low.as_str()).collect();
    let highs: Vec<&str> = ranges.iter().map(|(_, high)| high.as_str()).collect();
    // The files are counted first, reading at most one more than the limit, so a refused job
    // records nothing.
    let probe = i64::try_from(limits.max_files.saturating_add(1)).unwrap_or(i64::MAX);
    let covered: i64 = query_one(
        tx,
        &format!("SELECT COUNT(*) FROM ({COVERED} LIMIT $6) AS covered"),
        &[&id.as_str(), &org.as_str(), &names, &lows, &highs, &probe],
    )
    .await?
    .try_get(0)?;
    if to_u64(covered) > limits.max_files {
        return Ok(JobOutcome::TooManyFiles {
            limit: limits.max_files,
        });
    }
    if covered == 0 {
        return Ok(JobOutcome::NothingFound);
    }
    execute(
        tx,
        &format!("INSERT INTO job_entries (job_id, key, blob_id, size, modified) {COVERED} ON CONFLICT DO NOTHING"),
        &[&id.as_str(), &org.as_str(), &names, &lows, &highs],
    )
    .await?;
    insert_job_row(tx, &id, org, now, expires, limits).await?;
    Ok(JobOutcome::Created(Job {
        id,
        org: org.clone(),
        created: now,
        expires,
    }))
}

// --- checking (fsck) ---

/// Folder rows as an organization's object rows imply them. The objects are streamed, so memory
/// grows with the number of folders, not of objects.
async fn implied_folders<C: GenericClient>(c: &C, org: &OrgId) -> MetaResult<FolderRows> {
    let mut folders = ImpliedFolders::default();
    let statement = c
        .prepare_cached("SELECT key, size, modified FROM objects WHERE org_id = $1")
        .await?;
    let rows = c.query_raw(&statement, [org.as_str()]).await?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.try_next().await? {
        let (key, size, modified): (String, i64, i64) = (col(&row, 0)?, col(&row, 1)?, col(&row, 2)?);
        if let Ok(key) = Key::parse(&key) {
            folders.add(&key, to_u64(size), modified);
        }
    }
    Ok(folders.finish())
}

/// An organization's stored folder rows (a row whose path is not a folder path is left out).
async fn stored_folders<C: GenericClient>(c: &C, org: &OrgId) -> MetaResult<FolderRows> {
    let rows = query(
        c,
        "SELECT path, bytes, files, child_folders, child_files, modified FROM folders WHERE org_id = $1",
        &[&org.as_str()],
    )
    .await?;
    let mut out = FolderRows::new();
    for r in &rows {
        let Ok(path) = FolderPath::parse(&col::<String>(r, 0)?) else {
            continue;
        };
        let figures = FolderFigures {
            bytes: to_u64(col(r, 1)?),
            files: to_u64(col(r, 2)?),
            child_folders: to_u64(col(r, 3)?),
            child_files: to_u64(col(r, 4)?),
            modified: col(r, 5)?,
        };
        out.insert(path, figures);
    }
    Ok(out)
}

async fn folder_differences<C: GenericClient>(c: &C, org: &OrgId) -> MetaResult<Vec<FolderDifference>> {
    let implied = implied_folders(c, org).await?;
    let stored = stored_folders(c, org).await?;
    Ok(compare_folders(org, &implied, &stored))
}

async fn repair_folders(tx: &Transaction<'_>, differences: &[FolderDifference]) -> MetaResult<()> {
    if differences.is_empty() {
        return Ok(());
    }
    // A repaired row changes the children of its parent: every folder of the organizations
    // repaired takes a new version (one new value serves them all: it is new for each folder).
    let version: i64 = col(&query_one(tx, "SELECT nextval('children_versions')", &[]).await?, 0)?;
    for d in differences {
        match d.implied {
            None => {
                execute(
                    tx,
                    "DELETE FROM folders WHERE org_id = $1 AND path = $2",
                    &[&d.org.as_str(), &d.path.as_str()],
                )
                .await?;
            }
            Some(f) => {
                execute(
                    tx,
                    "INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (org_id, path) DO UPDATE SET \
                     bytes = EXCLUDED.bytes, files = EXCLUDED.files, child_folders = EXCLUDED.child_folders, \
                     child_files = EXCLUDED.child_files, modified = EXCLUDED.modified, \
                     children_version = EXCLUDED.children_version",
                    &[
                        &d.org.as_str(),
                        &d.path.as_str(),
                        &d.path.parent().as_ref().map(FolderPath::as_str),
                        &d.path.name(),
                        &to_i64(f.bytes),
                        &to_i64(f.files),
                        &to_i64(f.child_folders),
                        &to_i64(f.child_files),
                        &f.modified,
                    ],
                )
                .await?;
            }
        }
    }
    let mut orgs: Vec<&str> = differences.iter().map(|d| d.org.as_str()).collect();
    orgs.dedup();
    for org in orgs {
        execute(
            tx,
            "UPDATE folders SET children_version = $2 WHERE org_id = $1",
            &[&org, &version],
        )
        .await?;
    }
    Ok(())
}

#[async_trait]
impl Identities for PostgresMeta {
    async fn create_org(
        &self,
        name: &str,
        max_bytes: Option<u64>,
        max_files: Option<u64>,
        now: Millis,
    ) -> MetaResult<OrgId> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = insert_org(&tx, name, max_bytes, max_files, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn org(&self, org: &OrgId) -> MetaResult<Option<Organization>> {
        let client = self.client().await?;
        let row = query_opt(&client, &format!("{ORG_SELECT} WHERE o.id = $1"), &[&org.as_str()]).await?;
        Ok(match row {
            Some(row) => org_from_row(&row)?,
            None => None,
        })
    }

    async fn list_orgs(&self) -> MetaResult<Vec<Organization>> {
        let client = self.client().await?;
        let rows = query(&client, &format!("{ORG_SELECT} ORDER BY o.created, o.id"), &[]).await?;
        let mut out = Vec::new();
        for row in &rows {
            out.extend(org_from_row(row)?);
        }
        Ok(out)
    }

    async fn set_quota(&self, org: &OrgId, max_bytes: Option<u64>, max_files: Option<u64>) -> MetaResult<bool> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE orgs SET max_bytes = $2, max_files = $3 WHERE id = $1",
            &[&org.as_str(), &max_bytes.map(to_i64), &max_files.map(to_i64)],
        )
        .await?;
        Ok(changed > 0)
    }

    async fn create_bucket_org(
        &self,
        name: &str,
        bucket: &BucketAlias,
        admin: Option<UserId>,
        now: Millis,
    ) -> MetaResult<Result<OrgId, BucketRefusal>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(owner) = lock_bucket(&tx, bucket).await? {
            return Ok(Err(BucketRefusal::Taken(owner)));
        }
        let org = insert_org(&tx, name, None, None, now).await?;
        execute(
            &tx,
            "UPDATE orgs SET bucket = $2 WHERE id = $1",
            &[&org.as_str(), &bucket.as_str()],
        )
        .await?;
        if let Some(user) = admin {
            upsert_member(&tx, &org, user, Permissions::ALL).await?;
        }
        tx.commit().await?;
        Ok(Ok(org))
    }

    async fn delete_empty_org(&self, org: &OrgId) -> MetaResult<OrgDeletion> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The organization's lock: writes to it wait, and then find it gone.
        let Some(usage) = lock_org(&tx, org).await? else {
            return Ok(OrgDeletion::Unknown);
        };
        if usage.files > 0 {
            return Ok(OrgDeletion::NotEmpty);
        }
        execute(
            &tx,
            "INSERT INTO garbage (blob_id, since) SELECT blob_id, $2::bigint FROM upload_parts WHERE org_id = $1 \
             ON CONFLICT DO NOTHING",
            &[&org.as_str(), &chrono::Utc::now().timestamp_millis()],
        )
        .await?;
        for sql in ORG_DELETION {
            execute(&tx, sql, &[&org.as_str()]).await?;
        }
        tx.commit().await?;
        Ok(OrgDeletion::Deleted)
    }

    async fn set_org_bucket(&self, org: &OrgId, bucket: Option<&BucketAlias>) -> MetaResult<Result<(), BucketRefusal>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(bucket) = bucket
            && let Some(owner) = lock_bucket(&tx, bucket).await?
            && owner != *org
        {
            return Ok(Err(BucketRefusal::Taken(owner)));
        }
        let changed = execute(
            &tx,
            "UPDATE orgs SET bucket = $2 WHERE id = $1",
            &[&org.as_str(), &bucket.map(BucketAlias::as_str)],
        )
        .await?;
        tx.commit().await?;
        Ok(if changed > 0 {
            Ok(())
        } else {
            Err(BucketRefusal::UnknownOrg)
        })
    }

    async fn org_by_bucket(&self, bucket: &BucketAlias) -> MetaResult<Option<Organization>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!("{ORG_SELECT} WHERE o.bucket = $1"),
            &[&bucket.as_str()],
        )
        .await?;
        Ok(match row {
            Some(row) => org_from_row(&row)?,
            None => None,
        })
    }

    async fn create_user(
        &self,
        name: &str,
        server_admin: bool,
        now: Millis,
        seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
    ) -> MetaResult<Option<UserId>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Dropping the transaction without committing rolls a half-made user back.
        let id = insert_user(&tx, name, server_admin, now, seal).await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    async fn create_first_identities(
        &self,
        org_name: &str,
        user_name: &str,
        now: Millis,
        seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
    ) -> MetaResult<Option<(OrgId, UserId)>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Servers starting at once queue here; the first creates, the others then see its user.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK])
            .await?;
        let existing = query_opt(&tx, "SELECT 1 FROM users LIMIT 1", &[]).await?;
        if existing.is_some() {
            return Ok(None);
        }
        let org = insert_org(&tx, org_name, None, None, now).await?;
        let user = insert_user(&tx, user_name, true, now, seal).await?;
        upsert_member(&tx, &org, user, Permissions::ALL).await?;
        tx.commit().await?;
        Ok(Some((org, user)))
    }

    async fn user(&self, user: UserId) -> MetaResult<Option<User>> {
        let client = self.client().await?;
        let row = query_opt(&client, &format!("{USER_SELECT} WHERE id = $1"), &[&user.0]).await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> MetaResult<Vec<User>> {
        let client = self.client().await?;
        let rows = query(&client, &format!("{USER_SELECT} ORDER BY id"), &[]).await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn set_user_token(&self, user: UserId, token: SealedToken) -> MetaResult<bool> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE users SET token_nonce = $2, token_sealed = $3 WHERE id = $1",
            &[&user.0, &token.nonce, &token.ciphertext],
        )
        .await?;
        Ok(changed > 0)
    }

    async fn set_user_disabled(&self, user: UserId, disabled: bool) -> MetaResult<bool> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE users SET disabled = $2 WHERE id = $1",
            &[&user.0, &disabled],
        )
        .await?;
        Ok(changed > 0)
    }

    async fn create_s3_key(&self, key: &S3Key) -> MetaResult<bool> {
        let client = self.client().await?;
        let inserted = execute(
            &client,
            "INSERT INTO s3_keys (access_key, user_id, org_id, read_only, secret_nonce, secret_sealed, created) \
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2) \
             AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM orgs WHERE id = $3))",
            &[
                &key.access_key,
                &key.user.0,
                &key.org.as_ref().map(OrgId::as_str),
                &key.read_only,
                &key.secret.nonce,
                &key.secret.ciphertext,
                &key.created,
            ],
        )
        .await?;
        Ok(inserted > 0)
    }

    async fn s3_key(&self, access_key: &str) -> MetaResult<Option<S3Key>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!("{S3_KEY_SELECT} WHERE k.access_key = $1"),
            &[&access_key],
        )
        .await?;
        row.as_ref().map(s3_key_from_row).transpose()
    }

    async fn list_s3_keys(&self, user: Option<UserId>) -> MetaResult<Vec<S3Key>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!(
                "{S3_KEY_SELECT} WHERE $1::bigint IS NULL OR k.user_id = $1 ORDER BY k.user_id, k.created, k.access_key"
            ),
            &[&user.map(|u| u.0)],
        )
        .await?;
        rows.iter().map(s3_key_from_row).collect()
    }

    async fn revoke_s3_key(&self, access_key: &str, now: Millis) -> MetaResult<bool> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE s3_keys SET revoked = COALESCE(revoked, $2) WHERE access_key = $1",
            &[&access_key, &now],
        )
        .await?;
        Ok(changed > 0)
    }

    async fn set_user_server_admin(&self, user: UserId, server_admin: bool) -> MetaResult<bool> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "UPDATE users SET server_admin = $2 WHERE id = $1",
            &[&user.0, &server_admin],
        )
        .await?;
        Ok(changed > 0)
    }

    async fn set_member(&self, org: &OrgId, user: UserId, p: Permissions) -> MetaResult<bool> {
        let client = self.client().await?;
        // One statement: nothing happens (0 rows) when the organization or the user is unknown.
        Ok(upsert_member(&client, org, user, p).await? > 0)
    }

    async fn remove_member(&self, org: &OrgId, user: UserId) -> MetaResult<bool> {
        let client = self.client().await?;
        let changed = execute(
            &client,
            "DELETE FROM members WHERE org_id = $1 AND user_id = $2",
            &[&org.as_str(), &user.0],
        )
        .await?;
        Ok(changed > 0)
    }

    async fn membership(&self, org: &OrgId, user: UserId) -> MetaResult<Option<Membership>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!("SELECT {MEMBER_COLUMNS} FROM members WHERE org_id = $1 AND user_id = $2"),
            &[&org.as_str(), &user.0],
        )
        .await?;
        row.map(|row| membership_from_row(org, &row)).transpose()
    }

    async fn standing(&self, org: &OrgId, user: UserId) -> MetaResult<Option<Standing>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT u.disabled, m.can_read, m.can_write, m.can_delete, m.is_admin FROM users u \
             LEFT JOIN members m ON m.user_id = u.id AND m.org_id = $1 WHERE u.id = $2",
            &[&org.as_str(), &user.0],
        )
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let flags: [Option<bool>; 4] = [col(&row, 1)?, col(&row, 2)?, col(&row, 3)?, col(&row, 4)?];
        let permissions = match flags {
            [Some(read), Some(write), Some(delete), Some(admin)] => Some(Permissions {
                read,
                write,
                delete,
                admin,
            }),
            _ => None,
        };
        Ok(Some(Standing {
            disabled: col(&row, 0)?,
            permissions,
        }))
    }

    async fn user_memberships(&self, user: UserId) -> MetaResult<Vec<Membership>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!("SELECT {MEMBER_COLUMNS}, org_id FROM members WHERE user_id = $1 ORDER BY org_id"),
            &[&user.0],
        )
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            if let Some(org) = OrgId::parse(&col::<String>(row, 5)?) {
                out.push(membership_from_row(&org, row)?);
            }
        }
        Ok(out)
    }

    async fn members(&self, org: &OrgId) -> MetaResult<Vec<Membership>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!("SELECT {MEMBER_COLUMNS} FROM members WHERE org_id = $1 ORDER BY user_id"),
            &[&org.as_str()],
        )
        .await?;
        rows.iter().map(|row| membership_from_row(org, row)).collect()
    }
}

#[async_trait]
impl Objects for PostgresMeta {
    async fn key_kind(&self, org: &OrgId, key: &Key) -> MetaResult<KeyKind> {
        let client = self.client().await?;
        // One statement, so one snapshot: the object (if any) and whether the key is a folder.
        let row = query_one(
            &client,
            "SELECT o.key, o.size, o.md5, o.mime, o.preview, o.created, o.modified, o.blob_id, o.etag, o.user_meta, \
             EXISTS (SELECT 1 FROM folders f WHERE f.org_id = $1 AND f.path = $2) \
             FROM (SELECT 1) AS one LEFT JOIN objects o ON o.org_id = $1 AND o.key = $2",
            &[&org.as_str(), &key.as_str()],
        )
        .await?;
        if let Some(object) = object_from_row(&row)? {
            return Ok(KeyKind::File(Box::new(object)));
        }
        if col::<bool>(&row, 10)? {
            return Ok(KeyKind::Folder);
        }
        Ok(KeyKind::Missing)
    }

    async fn put_object(&self, org: &OrgId, object: NewObject, quota: Quota) -> MetaResult<PutOutcome> {
        if self.pool.is_closed() {
            return Err(MetaError::Closed);
        }
        queue_put(&self.pool, &self.puts, org, object, quota).await
    }

    async fn delete(&self, org: &OrgId, key: &Key) -> MetaResult<DeleteOutcome> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let outcome = delete_tx(&tx, org, key, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn list(&self, org: &OrgId, folder: &FolderPath, page: u64, page_size: u64) -> MetaResult<ListPage> {
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let page = list_tx(&tx, &self.marks, org, folder, page, page_size).await?;
        tx.commit().await?;
        Ok(page)
    }

    async fn usage(&self, org: &OrgId) -> MetaResult<Usage> {
        Ok(self.folder_usage(org, &FolderPath::root()).await?.unwrap_or_default())
    }

    async fn folder_usage(&self, org: &OrgId, folder: &FolderPath) -> MetaResult<Option<Usage>> {
        let client = self.client().await?;
        folder_usage_in(&client, org, folder).await
    }

    async fn file_md5s(
        &self,
        org: &OrgId,
        folder: &FolderPath,
        first: &str,
        last: &str,
    ) -> MetaResult<Vec<(String, String)>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT name, md5 FROM objects WHERE org_id = $1 AND parent = $2 AND name >= $3 AND name <= $4 ORDER BY name",
            &[&org.as_str(), &folder.as_str(), &first, &last],
        )
        .await?;
        rows.iter().map(|row| Ok((col(row, 0)?, col(row, 1)?))).collect()
    }

    async fn files_from(&self, org: &OrgId, from: &str, inclusive: bool, limit: usize) -> MetaResult<Vec<ObjectMeta>> {
        let client = self.client().await?;
        let sql = if inclusive { FILES_FROM_SQL } else { FILES_AFTER_SQL };
        objects_of(&query(&client, sql, &[&org.as_str(), &from, &count_to_i64(limit)]).await?)
    }

    async fn children_from(
        &self,
        org: &OrgId,
        folder: &FolderPath,
        from: &str,
        inclusive: bool,
        limit: usize,
    ) -> MetaResult<Vec<Child>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await?;
        let children = children_from_tx(&tx, org, folder, from, inclusive, limit).await?;
        tx.commit().await?;
        Ok(children)
    }
}

#[async_trait]
impl Uploads for PostgresMeta {
    async fn create_upload(&self, u: &MultipartUpload) -> MetaResult<()> {
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO uploads (org_id, id, key, user_id, created, mime, user_meta) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &u.org.as_str(),
                &u.id,
                &u.key.as_str(),
                &u.user.0,
                &u.created,
                &u.mime,
                &u.user_meta,
            ],
        )
        .await?;
        Ok(())
    }

    async fn upload(&self, org: &OrgId, id: &str) -> MetaResult<Option<MultipartUpload>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            &format!("{UPLOAD_SELECT} WHERE org_id = $1 AND id = $2"),
            &[&org.as_str(), &id],
        )
        .await?;
        Ok(match row {
            Some(row) => upload_from_row(&row)?,
            None => None,
        })
    }

    async fn put_part(&self, org: &OrgId, id: &str, part: &PartRecord, quota: Quota) -> MetaResult<PartOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let outcome = put_part_tx(&tx, org, id, part, quota).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn parts(&self, org: &OrgId, id: &str, after: u32, limit: usize) -> MetaResult<Vec<PartRecord>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT number, blob_id, size, md5, modified FROM upload_parts \
             WHERE org_id = $1 AND upload_id = $2 AND number > $3 ORDER BY number LIMIT $4",
            &[&org.as_str(), &id, &i64::from(after), &count_to_i64(limit)],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.extend(part_from_row(row)?);
        }
        Ok(out)
    }

    async fn list_uploads(
        &self,
        org: &OrgId,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> MetaResult<Vec<MultipartUpload>> {
        let (after_key, after_id) = after.unwrap_or(("", ""));
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!(
                "{UPLOAD_SELECT} WHERE org_id = $1 AND key >= $2 AND (key, id) > ($3, $4) ORDER BY key, id LIMIT $5"
            ),
            &[&org.as_str(), &prefix, &after_key, &after_id, &count_to_i64(limit)],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            // Keys that start with the prefix come first in key order: stop at the first other.
            match upload_from_row(row)? {
                Some(upload) if !upload.key.as_str().starts_with(prefix) => break,
                upload => out.extend(upload),
            }
        }
        Ok(out)
    }

    async fn complete_upload(
        &self,
        org: &OrgId,
        id: &str,
        object: NewObject,
        quota: Quota,
    ) -> MetaResult<CompleteOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let outcome = complete_upload_tx(&tx, org, id, &object, quota).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn abort_upload(&self, org: &OrgId, id: &str) -> MetaResult<bool> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_org(&tx, org).await?;
        let Some(bytes) = upload_state(&tx, org, id).await? else {
            return Ok(false);
        };
        remove_upload(&tx, org, id, bytes, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn expired_uploads(&self, before: Millis, limit: usize) -> MetaResult<Vec<(OrgId, String)>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT org_id, id FROM uploads WHERE created < $1 ORDER BY created, org_id, id LIMIT $2",
            &[&before, &count_to_i64(limit)],
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let (org, id): (String, String) = (col(row, 0)?, col(row, 1)?);
            out.extend(OrgId::parse(&org).map(|org| (org, id)));
        }
        Ok(out)
    }
}

#[async_trait]
impl Sessions for PostgresMeta {
    async fn create_session(&self, s: &ConsoleSession) -> MetaResult<()> {
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO console_sessions (id_hash, user_id, csrf, token_tag, created, last_seen) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&s.id_hash, &s.user.0, &s.csrf, &s.token_tag, &s.created, &s.last_seen],
        )
        .await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> MetaResult<Option<ConsoleSession>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT id_hash, user_id, csrf, token_tag, created, last_seen FROM console_sessions WHERE id_hash = $1",
            &[&id_hash],
        )
        .await?;
        row.map(|row| {
            Ok(ConsoleSession {
                id_hash: col(&row, 0)?,
                user: UserId(col(&row, 1)?),
                csrf: col(&row, 2)?,
                token_tag: col(&row, 3)?,
                created: col(&row, 4)?,
                last_seen: col(&row, 5)?,
            })
        })
        .transpose()
    }

    async fn touch_session(&self, id_hash: &str, now: Millis) -> MetaResult<()> {
        let client = self.client().await?;
        execute(
            &client,
            "UPDATE console_sessions SET last_seen = GREATEST(last_seen, $2) WHERE id_hash = $1",
            &[&id_hash, &now],
        )
        .await?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> MetaResult<bool> {
        let client = self.client().await?;
        Ok(execute(&client, "DELETE FROM console_sessions WHERE id_hash = $1", &[&id_hash]).await? > 0)
    }

    async fn delete_stale_sessions(&self, idle_before: Millis, created_before: Millis) -> MetaResult<u64> {
        let client = self.client().await?;
        execute(
            &client,
            "DELETE FROM console_sessions WHERE last_seen < $1 OR created < $2",
            &[&idle_before, &created_before],
        )
        .await
    }
}

#[async_trait]
impl Jobs for PostgresMeta {
    async fn create_job(
        &self,
        org: &OrgId,
        keys: &[Key],
        now: Millis,
        expires: Millis,
        limits: JobLimits,
    ) -> MetaResult<JobOutcome> {
        let mut client = self.client().await?;
        // The keys are expanded in a read-only snapshot that locks nothing; only recording the
        // entries takes the organization's lock, for one insert checked against the current
        // bodies (no folder scan under the lock).
        for _ in 0..JOB_ATTEMPTS {
            let rows = {
                let tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await?;
                let planned = expand_job(&tx, org, keys, limits).await?;
                tx.commit().await?;
                match planned {
                    Ok(rows) => rows,
                    Err(refused) => return Ok(refused),
                }
            };
            let tx = client.transaction().await?;
            match record_job(&tx, org, &rows, now, expires, limits).await? {
                Some(outcome) => {
                    tx.commit().await?;
                    return Ok(outcome);
                }
                // A body changed since the snapshot: nothing was recorded; expand again.
                None => tx.rollback().await?,
            }
        }
        let tx = client.transaction().await?;
        let job = create_job_tx(&tx, org, keys, now, expires, limits).await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn job(&self, job: &JobId) -> MetaResult<Option<Job>> {
        let client = self.client().await?;
        let row = query_opt(
            &client,
            "SELECT org_id, created, expires FROM jobs WHERE id = $1",
            &[&job.as_str()],
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        let org: String = col(&row, 0)?;
        let Some(org) = OrgId::parse(&org) else {
            return Ok(None);
        };
        Ok(Some(Job {
            id: job.clone(),
            org,
            created: col(&row, 1)?,
            expires: col(&row, 2)?,
        }))
    }

    async fn job_entries(&self, job: &JobId) -> MetaResult<Vec<JobEntry>> {
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT key, blob_id, size, modified FROM job_entries WHERE job_id = $1 ORDER BY key",
            &[&job.as_str()],
        )
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let (key, blob): (String, String) = (col(row, 0)?, col(row, 1)?);
            if let (Ok(key), Some(blob)) = (Key::parse(&key), BlobId::parse(&blob)) {
                out.push(JobEntry {
                    key,
                    blob,
                    size: to_u64(col(row, 2)?),
                    modified: col(row, 3)?,
                });
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Maintenance for PostgresMeta {
    async fn ping(&self) -> MetaResult<()> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    async fn collectable_blobs(&self, now: Millis, released_before: Millis, limit: usize) -> MetaResult<Vec<BlobId>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Taken before the query's snapshot: a backup holding collection off has either waited
        // for this query or makes it find nothing.
        let free: bool = col(
            &query_one(&tx, "SELECT pg_try_advisory_xact_lock_shared($1)", &[&BACKUP_HOLD]).await?,
            0,
        )?;
        if !free {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let rows = query(
            &tx,
            "SELECT g.blob_id FROM garbage g WHERE g.since < $3 AND NOT EXISTS (SELECT 1 FROM job_entries e \
             JOIN jobs j ON j.id = e.job_id WHERE e.blob_id = g.blob_id AND j.expires > $1) LIMIT $2",
            &[&now, &count_to_i64(limit), &released_before],
        )
        .await?;
        tx.commit().await?;
        let mut out = Vec::new();
        for row in &rows {
            out.extend(BlobId::parse(&col::<String>(row, 0)?));
        }
        Ok(out)
    }

    async fn forget_blobs(&self, blobs: &[BlobId]) -> MetaResult<()> {
        if blobs.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = blobs.iter().map(BlobId::as_str).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Servers collecting at once may forget the same blobs: one at a time, and a blob already
        // forgotten is simply not there any more.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COLLECTION_LOCK])
            .await?;
        execute(&tx, "DELETE FROM garbage WHERE blob_id = ANY($1::text[])", &[&ids]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_expired_jobs(&self, before: Millis) -> MetaResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COLLECTION_LOCK])
            .await?;
        execute(
            &tx,
            "DELETE FROM job_entries WHERE job_id IN (SELECT id FROM jobs WHERE expires < $1)",
            &[&before],
        )
        .await?;
        let deleted = execute(&tx, "DELETE FROM jobs WHERE expires < $1", &[&before]).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn unreferenced_blobs(&self, candidates: &[BlobId]) -> MetaResult<Vec<BlobId>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = candidates.iter().map(BlobId::as_str).collect();
        let client = self.client().await?;
        let rows = query(
            &client,
            "SELECT c.id FROM unnest($1::text[]) WITH ORDINALITY AS c(id, n) \
             WHERE NOT EXISTS (SELECT 1 FROM objects WHERE blob_id = c.id) \
             AND NOT EXISTS (SELECT 1 FROM garbage WHERE blob_id = c.id) \
             AND NOT EXISTS (SELECT 1 FROM upload_parts WHERE blob_id = c.id) \
             AND NOT EXISTS (SELECT 1 FROM job_entries WHERE blob_id = c.id) \
             ORDER BY c.n",
            &[&ids],
        )
        .await?;
        let unreferenced: HashSet<String> = rows
            .iter()
            .map(|row| col::<String>(row, 0))
            .collect::<MetaResult<_>>()?;
        Ok(candidates
            .iter()
            .filter(|blob| unreferenced.contains(blob.as_str()))
            .cloned()
            .collect())
    }

    async fn objects_after(&self, after: Option<(OrgId, Key)>, limit: usize) -> MetaResult<Vec<(OrgId, ObjectMeta)>> {
        let (org, key) = after.map(|(o, k)| (o.to_string(), k.to_string())).unwrap_or_default();
        let client = self.client().await?;
        let rows = query(
            &client,
            &format!(
                "SELECT {OBJECT_COLUMNS}, org_id FROM objects WHERE (org_id, key) > ($1, $2) \
                 ORDER BY org_id, key LIMIT $3"
            ),
            &[&org, &key, &count_to_i64(limit)],
        )
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            if let Some(object) = object_from_row(row)?
                && let Some(org) = OrgId::parse(&col::<String>(row, 10)?)
            {
                out.push((org, object));
            }
        }
        Ok(out)
    }

    async fn check_folders(&self, org: &OrgId, repair: bool) -> MetaResult<Vec<FolderDifference>> {
        let mut client = self.client().await?;
        if !repair {
            let tx = snapshot(&mut client).await?;
            let differences = folder_differences(&tx, org).await?;
            tx.commit().await?;
            return Ok(differences);
        }
        let tx = client.transaction().await?;
        // Writers to this organization wait until the rows are rewritten.
        lock_org(&tx, org).await?;
        let differences = folder_differences(&tx, org).await?;
        repair_folders(&tx, &differences).await?;
        tx.commit().await?;
        Ok(differences)
    }

    async fn import_org(&self, org: &Organization) -> MetaResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let inserted = execute(
            &tx,
            "INSERT INTO orgs (id, name, max_bytes, max_files, created, bucket) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO NOTHING",
            &[
                &org.id.as_str(),
                &org.name,
                &org.max_bytes.map(to_i64),
                &org.max_files.map(to_i64),
                &org.created,
                &org.bucket,
            ],
        )
        .await?;
        if inserted > 0 {
            execute(
                &tx,
                "INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified) \
                 VALUES ($1, '', NULL, '', 0, 0, 0, 0, $2) ON CONFLICT (org_id, path) DO NOTHING",
                &[&org.id.as_str(), &org.created],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn import_user(&self, user: &User) -> MetaResult<()> {
        let client = self.client().await?;
        execute(
            &client,
            "INSERT INTO users (id, name, token_nonce, token_sealed, disabled, created, server_admin) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            &[
                &user.id.0,
                &user.name,
                &user.token.nonce,
                &user.token.ciphertext,
                &user.disabled,
                &user.created,
                &user.server_admin,
            ],
        )
        .await?;
        // Later users get ids after the imported ones.
        execute(
            &client,
            "SELECT setval(pg_get_serial_sequence('users', 'id'), GREATEST((SELECT MAX(id) FROM users), 1))",
            &[],
        )
        .await?;
        Ok(())
    }
}

// The behaviour of this store is tested by the shared metadata suite in `meta/tests.rs`, run
// against both backends; what is particular to PostgreSQL is tested here.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::tests::{connect_plain, test_database};

    /// `sql` with its `$n` parameters replaced by these literals (highest first, so `$1` does not
    /// eat `$10`).
    fn with_literals(sql: &str, literals: &[&str]) -> String {
        let mut out = sql.to_owned();
        for (i, literal) in literals.iter().enumerate().rev() {
            out = out.replace(&format!("${}", i + 1), literal);
        }
        out
    }

    /// S3 listings read ranges of the primary key and of the listing indexes in their order: with
    /// sequential scans and sorts priced out, the plans still need neither (an index serves the
    /// range and the order).
    #[tokio::test]
    async fn s3_listings_read_index_ranges() {
        let Some(database) = test_database().await else { return };
        drop(PostgresMeta::connect(&database.url).await.expect("create"));
        let client = connect_plain(&database.url).await;
        client
            .batch_execute("SET enable_seqscan = off; SET enable_sort = off; SET enable_bitmapscan = off;")
            .await
            .expect("settings");
        let cases = [
            (FILES_FROM_SQL, vec!["'o'", "'k'", "10"], "objects_pkey"),
            (FILES_AFTER_SQL, vec!["'o'", "'k'", "10"], "objects_pkey"),
            (CHILD_FILES_FROM_SQL, vec!["'o'", "'p'", "'n'", "10"], "objects_listing"),
            (
                CHILD_FILES_AFTER_SQL,
                vec!["'o'", "'p'", "'n'", "10"],
                "objects_listing",
            ),
            (
                CHILD_FOLDERS_FROM_SQL,
                vec!["'o'", "'p'", "'n'", "10"],
                "folders_listing",
            ),
            (
                CHILD_FOLDERS_AFTER_SQL,
                vec!["'o'", "'p'", "'n'", "10"],
                "folders_listing",
            ),
            (
                CHILD_FOLDERS_NAMED_SQL,
                vec!["'o'", "'p'", "ARRAY['a','b']"],
                "folders_listing",
            ),
        ];
        for (sql, literals, index) in cases {
            let explain = format!("EXPLAIN (COSTS OFF) {}", with_literals(sql, &literals));
            let plan: Vec<String> = client
                .query(&explain, &[])
                .await
                .expect("explain")
                .iter()
                .map(|row| row.get(0))
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains(&format!("Scan using {index} on")), "{sql}\n{plan}");
            assert!(!plan.contains("Sort") && !plan.contains("Seq Scan"), "{sql}\n{plan}");
        }
    }
}
