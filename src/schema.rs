//! Versioned schemas of the stores that keep tables: the metadata store (SQLite or PostgreSQL,
//! steps in `meta::schema`) and the small-body table (`blob::small`).
//!
//! A store's schema is an ordered list of [`Step`]s: step `n` (counting from 1) brings a store
//! from version `n - 1` to version `n`, so a store's version is the number of steps it has had.
//! Opening a store applies the steps it lacks, in order, each in its own transaction together
//! with the new version marker (SQLite: `PRAGMA user_version`; PostgreSQL: the `stowage_schema`
//! table), under the lock that several opening processes share (SQLite's write lock, a
//! PostgreSQL advisory lock), reading the version again under that lock, so each step runs once
//! whoever opens the store at the same time. A store whose version is beyond the list was
//! upgraded by a newer stowage and is refused, unchanged.
//!
//! Step 1 is v0.1.0's schema and only creates what is missing (`IF NOT EXISTS`): a store
//! without a version marker is version 0, and step 1 takes one that already has v0.1.0's tables
//! to version 1 without touching them. Later steps run exactly once and need not be idempotent.

use std::error::Error as StdError;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// A schema version: the number of steps a store has had.
pub type Version = u32;

/// One step of a store's schema, in one SQL dialect.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// What the step changes, in a few words (shown when it fails).
    pub description: &'static str,
    /// The statements, run as one batch inside the step's transaction.
    pub sql: &'static str,
}

/// The version a list of steps brings a store to.
pub fn newest(steps: &[Step]) -> Version {
    Version::try_from(steps.len()).unwrap_or(Version::MAX)
}

/// Why a store's schema could not be read or brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the {store} has schema version {found}, but this stowage ({binary}) knows versions up to \
         {newest}: a newer stowage has upgraded it. Run that newer stowage (or a later one) on it"
    )]
    Newer {
        store: &'static str,
        found: Version,
        newest: Version,
        binary: &'static str,
    },
    #[error("cannot upgrade the {store} to schema version {version} ({description}): {source}")]
    Step {
        store: &'static str,
        version: Version,
        description: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("cannot read the schema version of the {store}: {source}")]
    Read {
        store: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

/// The step a store at version `found` needs next (`None`: up to date), or the refusal of a
/// store newer than `steps`.
pub fn next_step<'a>(
    store: &'static str,
    found: Version,
    steps: &'a [Step],
) -> Result<Option<(Version, &'a Step)>, SchemaError> {
    let newest = newest(steps);
    if found > newest {
        return Err(SchemaError::Newer {
            store,
            found,
            newest,
            binary: concat!("version ", env!("CARGO_PKG_VERSION")),
        });
    }
    let index = usize::try_from(found).unwrap_or(usize::MAX);
    Ok(steps.get(index).map(|step| (found + 1, step)))
}

fn read_error(store: &'static str) -> impl Fn(rusqlite::Error) -> SchemaError {
    move |e| SchemaError::Read {
        store,
        source: Box::new(e),
    }
}

/// Brings the SQLite database of `conn` up to `steps`, one `BEGIN IMMEDIATE` transaction per
/// step (SQLite's write lock: another process opening the same file waits, then finds the step
/// done). Returns the version the database is at.
pub fn upgrade_sqlite(conn: &Connection, store: &'static str, steps: &[Step]) -> Result<Version, SchemaError> {
    loop {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(read_error(store))?;
        let outcome = (|| {
            let found: Version = conn
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .map_err(read_error(store))?;
            let Some((version, step)) = next_step(store, found, steps)? else {
                return Ok(Err(found));
            };
            conn.execute_batch(step.sql)
                .and_then(|()| conn.execute_batch(&format!("PRAGMA user_version = {version}")))
                .map_err(|e| SchemaError::Step {
                    store,
                    version,
                    description: step.description,
                    source: Box::new(e),
                })?;
            Ok(Ok(version))
        })();
        match outcome {
            Ok(Ok(_)) => conn.execute_batch("COMMIT").map_err(read_error(store))?,
            Ok(Err(current)) => {
                conn.execute_batch("COMMIT").map_err(read_error(store))?;
                return Ok(current);
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
}

/// The schema version of the SQLite database at `path`, read without changing anything; `None`
/// when there is no database there. A database without a version marker that has `v1_table`
/// (a table of v0.1.0's schema) is version 1.
pub fn sqlite_version(
    path: &std::path::Path,
    store: &'static str,
    v1_table: &str,
) -> Result<Option<Version>, SchemaError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(read_error(store))?;
    let marker: Version = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(read_error(store))?;
    if marker > 0 {
        return Ok(Some(marker));
    }
    let has_v1_table = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [v1_table],
            |_| Ok(()),
        )
        .optional()
        .map_err(read_error(store))?
        .is_some();
    Ok(Some(Version::from(has_v1_table)))
}

fn pg_error(store: &'static str) -> impl Fn(tokio_postgres::Error) -> SchemaError {
    move |e| SchemaError::Read {
        store,
        source: Box::new(e),
    }
}

/// Creates the version marker table of a PostgreSQL store when missing (v0.1.0 has it).
const PG_MARKER: &str = "CREATE TABLE IF NOT EXISTS stowage_schema (version INTEGER NOT NULL)";
const PG_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM stowage_schema";

/// Brings the PostgreSQL database of `client` up to `steps`, one transaction per step, each
/// under the transaction-scoped advisory lock `lock` (servers starting together take turns and
/// the later ones find the step done). Returns the version the database is at.
pub async fn upgrade_postgres(
    client: &mut tokio_postgres::Client,
    lock: i64,
    store: &'static str,
    steps: &[Step],
) -> Result<Version, SchemaError> {
    loop {
        let tx = client.transaction().await.map_err(pg_error(store))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
            .await
            .map_err(pg_error(store))?;
        tx.batch_execute(PG_MARKER).await.map_err(pg_error(store))?;
        let found: i32 = tx.query_one(PG_VERSION, &[]).await.map_err(pg_error(store))?.get(0);
        let found = Version::try_from(found).unwrap_or(0);
        let Some((version, step)) = next_step(store, found, steps)? else {
            tx.commit().await.map_err(pg_error(store))?;
            return Ok(found);
        };
        let step_error = |e: tokio_postgres::Error| SchemaError::Step {
            store,
            version,
            description: step.description,
            source: Box::new(e),
        };
        tx.batch_execute(step.sql).await.map_err(step_error)?;
        let marker = i32::try_from(version).unwrap_or(i32::MAX);
        tx.execute("DELETE FROM stowage_schema", &[])
            .await
            .map_err(step_error)?;
        tx.execute("INSERT INTO stowage_schema (version) VALUES ($1)", &[&marker])
            .await
            .map_err(step_error)?;
        tx.commit().await.map_err(step_error)?;
    }
}

/// The schema version of the PostgreSQL database of `client`, read without changing anything:
/// 0 for an empty database, 1 for one with v0.1.0's `v1_table` but no marker.
pub async fn postgres_version(
    client: &tokio_postgres::Client,
    store: &'static str,
    v1_table: &str,
) -> Result<Version, SchemaError> {
    let exists = |name: &str| format!("SELECT to_regclass('{name}') IS NOT NULL");
    let has = |row: tokio_postgres::Row| row.get::<_, bool>(0);
    let marked = has(client
        .query_one(&exists("stowage_schema"), &[])
        .await
        .map_err(pg_error(store))?);
    if marked {
        let found: i32 = client.query_one(PG_VERSION, &[]).await.map_err(pg_error(store))?.get(0);
        if found > 0 {
            return Ok(Version::try_from(found).unwrap_or(0));
        }
    }
    let has_v1_table = has(client
        .query_one(&exists(v1_table), &[])
        .await
        .map_err(pg_error(store))?);
    Ok(Version::from(has_v1_table))
}

/// Steps for tests of the machinery: a table, then one row per later step.
#[cfg(test)]
pub(crate) const PROBE_STEPS: [Step; 3] = [
    Step {
        description: "a table",
        sql: "CREATE TABLE IF NOT EXISTS runs (step INTEGER NOT NULL);",
    },
    Step {
        description: "step two",
        sql: "INSERT INTO runs (step) VALUES (2);",
    },
    Step {
        description: "step three",
        sql: "INSERT INTO runs (step) VALUES (3);",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT step FROM runs ORDER BY step").expect("prepare");
        stmt.query_map([], |row| row.get(0))
            .expect("query")
            .map(|row| row.expect("row"))
            .collect()
    }

    #[test]
    fn next_step_follows_the_list_and_refuses_a_newer_store() {
        assert_eq!(
            next_step("store", 0, &PROBE_STEPS).expect("plan").map(|(v, _)| v),
            Some(1)
        );
        assert_eq!(
            next_step("store", 2, &PROBE_STEPS)
                .expect("plan")
                .map(|(v, s)| (v, s.description)),
            Some((3, "step three"))
        );
        assert!(next_step("store", 3, &PROBE_STEPS).expect("plan").is_none());
        let refusal = next_step("metadata store", 4, &PROBE_STEPS)
            .expect_err("newer")
            .to_string();
        assert!(
            refusal.starts_with("the metadata store has schema version 4, but this stowage (version ")
                && refusal.contains("knows versions up to 3")
                && refusal.ends_with("Run that newer stowage (or a later one) on it"),
            "{refusal}"
        );
    }

    #[test]
    fn each_step_runs_once_and_a_newer_list_continues_where_the_store_stopped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sqlite3");
        let conn = Connection::open(&path).expect("open");
        assert_eq!(sqlite_version(&path, "store", "runs").expect("read"), Some(0));
        assert_eq!(upgrade_sqlite(&conn, "store", &PROBE_STEPS[..2]).expect("upgrade"), 2);
        assert_eq!(upgrade_sqlite(&conn, "store", &PROBE_STEPS[..2]).expect("again"), 2);
        assert_eq!(runs(&conn), [2]);
        assert_eq!(upgrade_sqlite(&conn, "store", &PROBE_STEPS).expect("newer binary"), 3);
        assert_eq!(upgrade_sqlite(&conn, "store", &PROBE_STEPS).expect("again"), 3);
        assert_eq!(runs(&conn), [2, 3]);
        assert_eq!(sqlite_version(&path, "store", "runs").expect("read"), Some(3));
        // An older binary refuses it, changing nothing.
        let refusal = upgrade_sqlite(&conn, "store", &PROBE_STEPS[..1]).expect_err("older binary");
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
        assert_eq!(runs(&conn), [2, 3]);
    }

    #[test]
    fn a_failing_step_changes_nothing_and_says_which_step() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = Connection::open(dir.path().join("s.sqlite3")).expect("open");
        let broken = [
            PROBE_STEPS[0],
            Step {
                description: "a broken step",
                sql: "INSERT INTO runs (step) VALUES (2); INSERT INTO no_such_table VALUES (1);",
            },
        ];
        let error = upgrade_sqlite(&conn, "small-body store", &broken).expect_err("broken step");
        assert!(
            error
                .to_string()
                .starts_with("cannot upgrade the small-body store to schema version 2 (a broken step): "),
            "{error}"
        );
        let version: Version = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, 1);
        assert!(runs(&conn).is_empty());
    }

    #[test]
    fn an_unmarked_store_with_the_first_tables_reads_as_version_1() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s.sqlite3");
        assert_eq!(sqlite_version(&path, "store", "runs").expect("read"), None);
        Connection::open(&path)
            .expect("open")
            .execute_batch("CREATE TABLE runs (step INTEGER NOT NULL);")
            .expect("v1 table");
        assert_eq!(sqlite_version(&path, "store", "runs").expect("read"), Some(1));
    }
}
