//! The metadata store's schema, as ordered steps per SQL dialect (see `crate::schema` for how
//! they are applied). Step `n` of each list brings a store from version `n - 1` to `n`; both
//! lists always have the same steps.
//!
//! Adding a step (a new table, column or index): append one [`Step`] to [`SQLITE`] and one with
//! the same description to [`POSTGRES`], written for a store at the previous version (no
//! `IF NOT EXISTS` needed: a step runs exactly once). Never edit or reorder a released step:
//! stores out there have already run it. PostgreSQL keys, paths and names are `COLLATE "C"` so
//! that order and prefix ranges are byte order, as in SQLite.

use crate::schema::Step;

/// How the metadata store is named in schema messages.
pub const STORE: &str = "metadata store";
/// A table of the first schema (an unmarked store that has it is version 1).
pub const V1_TABLE: &str = "orgs";

/// The SQLite steps.
pub const SQLITE: &[Step] = &[
    Step {
        description: "the tables of stowage 0.1.0",
        sql: SQLITE_V1,
    },
    Step {
        description: JOBS_BY_ORG_DESCRIPTION,
        sql: JOBS_BY_ORG,
    },
    Step {
        description: ADMINS_AND_BUCKETS_DESCRIPTION,
        sql: SQLITE_ADMINS_AND_BUCKETS,
    },
    Step {
        description: S3_KEYS_DESCRIPTION,
        sql: SQLITE_S3_KEYS,
    },
    Step {
        description: CONSOLE_SESSIONS_DESCRIPTION,
        sql: CONSOLE_SESSIONS_SQLITE,
    },
    Step {
        description: S3_OBJECT_FIELDS_DESCRIPTION,
        sql: SQLITE_S3_OBJECT_FIELDS,
    },
    Step {
        description: MULTIPART_DESCRIPTION,
        sql: SQLITE_MULTIPART,
    },
    Step {
        description: CHILDREN_VERSION_DESCRIPTION,
        sql: SQLITE_CHILDREN_VERSION,
    },
];

/// The PostgreSQL steps.
pub const POSTGRES: &[Step] = &[
    Step {
        description: "the tables of stowage 0.1.0",
        sql: POSTGRES_V1,
    },
    Step {
        description: JOBS_BY_ORG_DESCRIPTION,
        sql: JOBS_BY_ORG,
    },
    Step {
        description: ADMINS_AND_BUCKETS_DESCRIPTION,
        sql: POSTGRES_ADMINS_AND_BUCKETS,
    },
    Step {
        description: S3_KEYS_DESCRIPTION,
        sql: POSTGRES_S3_KEYS,
    },
    Step {
        description: CONSOLE_SESSIONS_DESCRIPTION,
        sql: CONSOLE_SESSIONS_POSTGRES,
    },
    Step {
        description: S3_OBJECT_FIELDS_DESCRIPTION,
        sql: POSTGRES_S3_OBJECT_FIELDS,
    },
    Step {
        description: MULTIPART_DESCRIPTION,
        sql: POSTGRES_MULTIPART,
    },
    Step {
        description: CHILDREN_VERSION_DESCRIPTION,
        sql: POSTGRES_CHILDREN_VERSION,
    },
];

const JOBS_BY_ORG_DESCRIPTION: &str = "an index of each organization's download jobs by expiry";
/// Version 2: the live jobs of one organization are counted (and the oldest expired early) at
/// every job creation; without this index that count read every live job of every organization.
/// The same text serves both dialects. `IF NOT EXISTS`: an unmarked store that already has
/// newer tables (made by hand, or a test) reads as version 1 and runs this step too.
const JOBS_BY_ORG: &str = "CREATE INDEX IF NOT EXISTS jobs_by_org_expiry ON jobs (org_id, expires);";

const ADMINS_AND_BUCKETS_DESCRIPTION: &str = "server administrators and organizations' bucket names";
/// Version 3: users flagged server administrator (they may create and delete buckets, that is
/// organizations, through the S3 API), and each organization's optional S3 bucket name (unique;
/// the organization's id always works as its bucket name too). A store upgraded from 0.1.0 makes
/// its first user (the lowest id, the one the first start created) a server administrator, as a
/// new store does.
const SQLITE_ADMINS_AND_BUCKETS: &str = r#"
ALTER TABLE users ADD COLUMN server_admin INTEGER NOT NULL DEFAULT 0;
UPDATE users SET server_admin = 1 WHERE id = (SELECT MIN(id) FROM users);
ALTER TABLE orgs ADD COLUMN bucket TEXT;
CREATE UNIQUE INDEX orgs_by_bucket ON orgs (bucket);
"#;

/// Version 3, as [`SQLITE_ADMINS_AND_BUCKETS`].
const POSTGRES_ADMINS_AND_BUCKETS: &str = r#"
ALTER TABLE users ADD COLUMN IF NOT EXISTS server_admin BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE users SET server_admin = TRUE WHERE id = (SELECT MIN(id) FROM users);
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS bucket TEXT COLLATE "C";
CREATE UNIQUE INDEX IF NOT EXISTS orgs_by_bucket ON orgs (bucket);
"#;

const S3_KEYS_DESCRIPTION: &str = "S3 access keys";
/// Version 4: S3 credentials, apart from API tokens. The secret is sealed with the server key
/// (bound to its access key id), never hashed: SigV4 needs it back to check signatures. A key may
/// be limited to one organization and to reading; `revoked` is when it was revoked.
const SQLITE_S3_KEYS: &str = r#"
CREATE TABLE s3_keys (
    access_key TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    org_id TEXT REFERENCES orgs(id),
    read_only INTEGER NOT NULL,
    secret_nonce BLOB NOT NULL,
    secret_sealed BLOB NOT NULL,
    created INTEGER NOT NULL,
    revoked INTEGER
) WITHOUT ROWID;
CREATE INDEX s3_keys_by_user ON s3_keys (user_id);
"#;

/// Version 4, as [`SQLITE_S3_KEYS`].
const POSTGRES_S3_KEYS: &str = r#"
CREATE TABLE IF NOT EXISTS s3_keys (
    access_key TEXT COLLATE "C" PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    org_id TEXT COLLATE "C" REFERENCES orgs(id),
    read_only BOOLEAN NOT NULL,
    secret_nonce BYTEA NOT NULL,
    secret_sealed BYTEA NOT NULL,
    created BIGINT NOT NULL,
    revoked BIGINT
);
CREATE INDEX IF NOT EXISTS s3_keys_by_user ON s3_keys (user_id);
"#;

const CONSOLE_SESSIONS_DESCRIPTION: &str = "the web console's sign-in sessions";
/// Version 5: the web console's server-side sessions (`service/console.rs`): the row is keyed by the SHA-256
/// of the cookie's secret (the secret itself is never stored), names its user, carries the
/// session's CSRF token and a tag of the user's sealed API token at sign-in (a rotated token ends
/// the session), and its creation and last-use times (absolute and idle expiry).
const CONSOLE_SESSIONS_SQLITE: &str = r#"
CREATE TABLE IF NOT EXISTS console_sessions (
    id_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    csrf TEXT NOT NULL,
    token_tag TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS console_sessions_by_last_seen ON console_sessions (last_seen);
"#;

/// [`CONSOLE_SESSIONS_SQLITE`] for PostgreSQL.
const CONSOLE_SESSIONS_POSTGRES: &str = r#"
CREATE TABLE IF NOT EXISTS console_sessions (
    id_hash TEXT COLLATE "C" PRIMARY KEY,
    user_id BIGINT NOT NULL,
    csrf TEXT NOT NULL,
    token_tag TEXT NOT NULL,
    created BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_by_last_seen ON console_sessions (last_seen);
"#;

const S3_OBJECT_FIELDS_DESCRIPTION: &str = "S3 object fields: ETag of multipart objects, user metadata";
/// Version 6: what the S3 API keeps of an object beside its body. `etag` is NULL when the ETag is
/// the quoted content md5 (every object but a multipart one, whose ETag is the md5 of its parts'
/// md5s and their count); `user_meta` is NULL or a JSON object of the `x-amz-meta-*` pairs, as
/// the service gave it. Existing objects keep NULL in both: their ETag is their md5.
const SQLITE_S3_OBJECT_FIELDS: &str = r#"
ALTER TABLE objects ADD COLUMN etag TEXT;
ALTER TABLE objects ADD COLUMN user_meta TEXT;
"#;

/// Version 6, as [`SQLITE_S3_OBJECT_FIELDS`] (adding a column without a default rewrites nothing).
const POSTGRES_S3_OBJECT_FIELDS: &str = r#"
ALTER TABLE objects ADD COLUMN IF NOT EXISTS etag TEXT;
ALTER TABLE objects ADD COLUMN IF NOT EXISTS user_meta TEXT;
"#;

const MULTIPART_DESCRIPTION: &str = "pending S3 multipart uploads";
/// Version 7: S3 multipart uploads in progress. `uploads` holds what CreateMultipartUpload said of
/// the object to come; `upload_parts` the parts stored so far (a part's blob is referenced while
/// its row exists). `orgs.pending_bytes` is the running total of an organization's part sizes,
/// kept in the transactions that change parts: the byte quota counts it beside the stored bytes.
const SQLITE_MULTIPART: &str = r#"
ALTER TABLE orgs ADD COLUMN pending_bytes INTEGER NOT NULL DEFAULT 0;
CREATE TABLE uploads (
    org_id TEXT NOT NULL,
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    created INTEGER NOT NULL,
    mime TEXT NOT NULL,
    user_meta TEXT,
    PRIMARY KEY (org_id, id)
) WITHOUT ROWID;
CREATE INDEX uploads_by_key ON uploads (org_id, key, id);
CREATE INDEX uploads_by_created ON uploads (created, org_id, id);
CREATE TABLE upload_parts (
    org_id TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    blob_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    modified INTEGER NOT NULL,
    PRIMARY KEY (org_id, upload_id, number)
) WITHOUT ROWID;
CREATE INDEX upload_parts_by_blob ON upload_parts (blob_id);
"#;

/// Version 7, as [`SQLITE_MULTIPART`].
const POSTGRES_MULTIPART: &str = r#"
ALTER TABLE orgs ADD COLUMN IF NOT EXISTS pending_bytes BIGINT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS uploads (
    org_id TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    user_id BIGINT NOT NULL,
    created BIGINT NOT NULL,
    mime TEXT NOT NULL,
    user_meta TEXT,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX IF NOT EXISTS uploads_by_key ON uploads (org_id, key, id);
CREATE INDEX IF NOT EXISTS uploads_by_created ON uploads (created, org_id, id);
CREATE TABLE IF NOT EXISTS upload_parts (
    org_id TEXT COLLATE "C" NOT NULL,
    upload_id TEXT COLLATE "C" NOT NULL,
    number BIGINT NOT NULL,
    blob_id TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    md5 TEXT NOT NULL,
    modified BIGINT NOT NULL,
    PRIMARY KEY (org_id, upload_id, number)
);
CREATE INDEX IF NOT EXISTS upload_parts_by_blob ON upload_parts (blob_id);
"#;

const CHILDREN_VERSION_DESCRIPTION: &str = "folder children versions (listing page marks)";
/// Version 8: `folders.children_version`, a value taken from the store-wide counter
/// `children_versions` whenever the set of a folder's children changes and whenever a folder row
/// is written anew, so that one value of one folder always means the same children: listing
/// marks are kept per version (see `rules::ListingMarks`). Existing rows keep 0; the counter
/// starts above it.
const SQLITE_CHILDREN_VERSION: &str = r#"
ALTER TABLE folders ADD COLUMN children_version INTEGER NOT NULL DEFAULT 0;
CREATE TABLE children_versions (id INTEGER PRIMARY KEY CHECK (id = 0), last INTEGER NOT NULL);
INSERT INTO children_versions (id, last) VALUES (0, 0);
"#;

/// Version 8, as [`SQLITE_CHILDREN_VERSION`]: the counter is a sequence, and a new folder row
/// takes its next value by default (existing rows keep 0 without a rewrite of the table).
const POSTGRES_CHILDREN_VERSION: &str = r#"
CREATE SEQUENCE IF NOT EXISTS children_versions START 1;
ALTER TABLE folders ADD COLUMN IF NOT EXISTS children_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE folders ALTER COLUMN children_version SET DEFAULT nextval('children_versions');
"#;

/// The schema of stowage 0.1.0. It creates only what is missing (and drops two indexes that the
/// `*_listing` ones replaced before the release), so it also takes a store that has these tables
/// but no version marker to version 1.
const SQLITE_V1: &str = r#"
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
"#;

/// The schema of stowage 0.1.0, as [`SQLITE_V1`].
const POSTGRES_V1: &str = r#"
CREATE TABLE IF NOT EXISTS orgs (
    id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    max_bytes BIGINT,
    max_files BIGINT,
    created BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id BIGSERIAL PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL,
    token_nonce BYTEA NOT NULL,
    token_sealed BYTEA NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    org_id TEXT COLLATE "C" NOT NULL REFERENCES orgs(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    can_read BOOLEAN NOT NULL,
    can_write BOOLEAN NOT NULL,
    can_delete BOOLEAN NOT NULL,
    is_admin BOOLEAN NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE TABLE IF NOT EXISTS objects (
    org_id TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    parent TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    md5 TEXT NOT NULL,
    mime TEXT NOT NULL,
    preview TEXT,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL,
    blob_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (org_id, key)
);
CREATE INDEX IF NOT EXISTS objects_listing ON objects (org_id, parent, name) INCLUDE (size, mime, modified);
DROP INDEX IF EXISTS objects_by_parent;
CREATE INDEX IF NOT EXISTS objects_by_parent_modified ON objects (org_id, parent, modified);
CREATE INDEX IF NOT EXISTS objects_by_blob ON objects (blob_id);
CREATE TABLE IF NOT EXISTS folders (
    org_id TEXT COLLATE "C" NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    parent TEXT COLLATE "C",
    name TEXT COLLATE "C" NOT NULL,
    bytes BIGINT NOT NULL,
    files BIGINT NOT NULL,
    child_folders BIGINT NOT NULL,
    child_files BIGINT NOT NULL,
    modified BIGINT NOT NULL,
    PRIMARY KEY (org_id, path)
);
CREATE INDEX IF NOT EXISTS folders_listing ON folders (org_id, parent, name) INCLUDE (bytes, modified);
DROP INDEX IF EXISTS folders_by_parent;
CREATE INDEX IF NOT EXISTS folders_by_parent_modified ON folders (org_id, parent, modified);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    org_id TEXT COLLATE "C" NOT NULL,
    created BIGINT NOT NULL,
    expires BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires);
CREATE TABLE IF NOT EXISTS job_entries (
    job_id TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    blob_id TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    modified BIGINT NOT NULL,
    PRIMARY KEY (job_id, key)
);
CREATE INDEX IF NOT EXISTS job_entries_by_blob ON job_entries (blob_id);
CREATE TABLE IF NOT EXISTS garbage (
    blob_id TEXT COLLATE "C" PRIMARY KEY,
    since BIGINT NOT NULL
);
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::postgres::PostgresMeta;
    use crate::meta::sqlite::SqliteMeta;
    use crate::meta::tests::{connect_plain, test_database};
    use crate::schema::{PROBE_STEPS, SchemaError, Version, newest, upgrade_postgres};

    /// What a store written by a newer stowage is refused with.
    fn assert_newer_refusal(message: &str, found: Version) {
        let expected = format!(
            "the metadata store has schema version {found}, but this stowage (version {}) knows versions up to {}",
            env!("CARGO_PKG_VERSION"),
            newest(SQLITE)
        );
        assert!(message.contains(&expected), "{message}");
        assert!(
            message.ends_with("Run that newer stowage (or a later one) on it"),
            "{message}"
        );
    }

    #[test]
    fn sqlite_refuses_a_newer_store_and_leaves_it_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("meta.sqlite3");
        drop(SqliteMeta::open(&path).expect("create"));
        let newer = newest(SQLITE) + 1;
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", newer).expect("mark as newer");
        let error = SqliteMeta::open(&path).err().expect("a newer store is refused");
        assert_newer_refusal(&error.to_string(), newer);
        let version: Version = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, newer);
    }

    #[tokio::test]
    async fn postgres_refuses_a_newer_store_and_leaves_it_alone() {
        let Some(database) = test_database().await else { return };
        drop(PostgresMeta::connect(&database.url).await.expect("create"));
        let newer = newest(POSTGRES) + 1;
        let client = connect_plain(&database.url).await;
        client
            .execute(
                "UPDATE stowage_schema SET version = $1",
                &[&i32::try_from(newer).expect("small")],
            )
            .await
            .expect("mark as newer");
        let error = PostgresMeta::connect(&database.url)
            .await
            .expect_err("a newer store is refused");
        assert_newer_refusal(&error.to_string(), newer);
        assert_eq!(PostgresMeta::schema_version(&database.url).await.expect("read"), newer);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_steps_run_once_when_servers_open_the_store_together() {
        let Some(database) = test_database().await else { return };
        assert_eq!(PostgresMeta::schema_version(&database.url).await.expect("read"), 0);
        for steps in [&PROBE_STEPS[..2], &PROBE_STEPS[..]] {
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let url = database.url.clone();
                    tokio::spawn(async move {
                        let mut client = connect_plain(&url).await;
                        upgrade_postgres(&mut client, 0x5eed, STORE, steps).await
                    })
                })
                .collect();
            for open in opens {
                let version = open.await.expect("join").expect("upgrade");
                assert_eq!(version, newest(steps));
            }
        }
        let client = connect_plain(&database.url).await;
        let runs: Vec<i32> = client
            .query("SELECT step FROM runs ORDER BY step", &[])
            .await
            .expect("runs")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(runs, [2, 3]);
        let marker: Vec<i32> = client
            .query("SELECT version FROM stowage_schema", &[])
            .await
            .expect("marker")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(marker, [3]);
        let refusal = upgrade_postgres(
            &mut connect_plain(&database.url).await,
            0x5eed,
            STORE,
            &PROBE_STEPS[..1],
        )
        .await
        .expect_err("an older binary");
        assert!(
            matches!(
                refusal,
                SchemaError::Newer {
                    found: 3,
                    newest: 1,
                    ..
                }
            ),
            "{refusal}"
        );
    }

    #[test]
    fn both_dialects_have_the_same_steps() {
        let sqlite: Vec<_> = SQLITE.iter().map(|s| s.description).collect();
        let postgres: Vec<_> = POSTGRES.iter().map(|s| s.description).collect();
        assert_eq!(sqlite, postgres);
    }

    #[test]
    fn the_sqlite_steps_build_an_empty_store_with_every_table() {
        let conn = rusqlite::Connection::open_in_memory().expect("memory database");
        let version = crate::schema::upgrade_sqlite(&conn, STORE, SQLITE).expect("upgrade");
        assert_eq!(version, crate::schema::newest(SQLITE));
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .expect("prepare");
        let tables: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .expect("tables")
            .map(|row| row.expect("table"))
            .collect();
        assert_eq!(
            tables,
            [
                "children_versions",
                "console_sessions",
                "folders",
                "garbage",
                "job_entries",
                "jobs",
                "members",
                "objects",
                "orgs",
                "s3_keys",
                "upload_parts",
                "uploads",
                "users"
            ]
        );
    }
}
