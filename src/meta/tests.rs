//! The metadata stores' shared test suite. Every test is a backend-agnostic fn over a
//! [`Fixture`] (a `&dyn MetaStore` plus a way to reach the backend's raw tables), run once per
//! backend by [`backend_suite!`]: `meta::tests::sqlite::*` and `meta::tests::postgres::*`.
//!
//! The PostgreSQL variants need a server: `scripts/postgres.sh start` starts one and prints
//! `STOWAGE_TEST_POSTGRES_URL=…`; export that. Each test creates its own database
//! (`stowage_test_<random>`) on that server and drops it afterwards. Without the variable the
//! PostgreSQL tests fail, unless `STOWAGE_SKIP_POSTGRES=1` says to skip them.

use std::path::PathBuf;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use super::postgres::PostgresMeta;
use super::sqlite::SqliteMeta;
use super::*;

const URL_VAR: &str = "STOWAGE_TEST_POSTGRES_URL";
const SKIP_VAR: &str = "STOWAGE_SKIP_POSTGRES";

/// Listing marks every this many entries in the stores under test, so that small folders read
/// their far pages from marks (servers keep one every 512).
const MARK_STRIDE: u64 = 2;

const QUOTA: Quota = Quota {
    max_bytes: u64::MAX / 4,
    max_files: u64::MAX / 4,
};

// --- fixtures ---

/// A store under test, and what it stands on.
struct Fixture {
    meta: Arc<dyn MetaStore>,
    backend: Backend,
}

enum Backend {
    Sqlite { path: PathBuf, _dir: tempfile::TempDir },
    Postgres(TestDatabase),
}

impl Fixture {
    async fn sqlite() -> Option<Fixture> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite3");
        let meta = Arc::new(SqliteMeta::open(&path).unwrap().with_mark_stride(MARK_STRIDE));
        Some(Fixture {
            meta,
            backend: Backend::Sqlite { path, _dir: dir },
        })
    }

    /// A fresh database on the server named by `STOWAGE_TEST_POSTGRES_URL`; `None` (skip) only
    /// when that is unset and `STOWAGE_SKIP_POSTGRES=1`.
    async fn postgres() -> Option<Fixture> {
        let database = test_database().await?;
        let meta = Arc::new(
            PostgresMeta::connect(&database.url)
                .await
                .unwrap_or_else(|e| panic!("cannot open the test database {}: {e}", database.name))
                .with_mark_stride(MARK_STRIDE),
        );
        Some(Fixture {
            meta,
            backend: Backend::Postgres(database),
        })
    }

    fn meta(&self) -> &dyn MetaStore {
        &*self.meta
    }

    /// Another store over the same database, as a second server would open it (its own pool).
    async fn second_server(&self) -> Arc<dyn MetaStore> {
        match &self.backend {
            Backend::Postgres(database) => Arc::new(
                PostgresMeta::connect(&database.url)
                    .await
                    .unwrap()
                    .with_mark_stride(MARK_STRIDE),
            ),
            Backend::Sqlite { .. } => panic!("several servers share only a PostgreSQL database"),
        }
    }

    /// Two handles on the store, as two servers would hold them: for SQLite (one server by
    /// design) the same store twice.
    async fn two_servers(&self) -> [Arc<dyn MetaStore>; 2] {
        match &self.backend {
            Backend::Postgres(_) => [self.meta.clone(), self.second_server().await],
            Backend::Sqlite { .. } => [self.meta.clone(), self.meta.clone()],
        }
    }

    /// Runs SQL on the backend's tables directly (to damage rows for the fsck tests). The SQL
    /// must be valid in both dialects.
    async fn execute_sql(&self, sql: &str) {
        match &self.backend {
            Backend::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Backend::Postgres(database) => {
                let client = connect_plain(&database.url).await;
                client.batch_execute(sql).await.unwrap();
            }
        }
    }
}

/// A fresh database on the server named by `STOWAGE_TEST_POSTGRES_URL`; `None` (skip) only when
/// that is unset and `STOWAGE_SKIP_POSTGRES=1`.
pub(super) async fn test_database() -> Option<TestDatabase> {
    let admin_url = match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") => {
            eprintln!("note: skipping a PostgreSQL metadata test ({SKIP_VAR}=1 and {URL_VAR} is unset)");
            return None;
        }
        _ => panic!(
            "{URL_VAR} is not set, so the PostgreSQL metadata tests cannot run. Start a server with \
             `scripts/postgres.sh start` and export the line it prints \
             (STOWAGE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/postgres), \
             or set {SKIP_VAR}=1 to skip these tests."
        ),
    };
    Some(TestDatabase::create(&admin_url).await)
}

/// A database of its own on the test server, dropped when this is dropped (even after a failed
/// assertion).
pub(super) struct TestDatabase {
    admin_url: String,
    name: String,
    pub(super) url: String,
}

pub(super) async fn connect_plain(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server: {e}"));
    tokio::spawn(connection);
    client
}

impl TestDatabase {
    async fn create(admin_url: &str) -> TestDatabase {
        let name = format!("stowage_test_{}", crate::ids::random_hex(8));
        let admin = connect_plain(admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create the test database {name}: {}",
                    super::postgres::describe_error(&e)
                )
            });
        TestDatabase {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: drop the database from a
        // thread with a runtime of its own. Failing to drop it only leaves garbage on a test server.
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| super::postgres::describe_error(&e))
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = dropped.map_err(|_| "the drop thread panicked".to_string()) {
            eprintln!("note: could not drop the test database {}: {e}", self.name);
        }
    }
}

/// `url` with its database name replaced by `name` (query parameters kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path = base[authority..].find('/').map(|i| authority + i).unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path], name);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

fn object(key: &str, size: u64, now: Millis) -> NewObject {
    NewObject {
        key: Key::parse(key).unwrap(),
        size,
        md5: String::new(),
        mime: "text/plain".into(),
        preview: None,
        blob: BlobId::generate(),
        now,
        created: None,
        etag: None,
        user_meta: None,
        if_absent: false,
    }
}

fn key(raw: &str) -> Key {
    Key::parse(raw).unwrap()
}

async fn assert_consistent(meta: &dyn MetaStore, org: &OrgId) {
    assert_eq!(meta.check_folders(org, false).await.unwrap(), []);
}

fn stored(outcome: &PutOutcome) -> bool {
    matches!(outcome, PutOutcome::Stored { .. })
}

// --- the suite ---

#[derive(Debug, Clone)]
enum Op {
    Put(String, u64),
    Delete(String),
}

fn key_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..4).prop_map(|segments| segments.join("/"))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (key_strategy(), 0u64..100).prop_map(|(k, s)| Op::Put(k, s)),
        1 => key_strategy().prop_map(Op::Delete),
    ]
}

/// After any sequence of puts and deletes, every folder row equals what the object rows imply.
/// Each case runs in an organization of its own in the fixture's store.
fn folder_rows_match_objects(runtime: &tokio::runtime::Runtime, fixture: &Fixture) {
    let meta = fixture.meta();
    let mut runner = TestRunner::new(ProptestConfig::with_cases(48));
    let result = runner.run(&proptest::collection::vec(op_strategy(), 1..40), |ops| {
        runtime.block_on(async {
            let org = meta.create_org("t", None, None, 1).await.unwrap();
            for (i, op) in ops.iter().enumerate() {
                let now = 10 + i as i64;
                match op {
                    Op::Put(key, size) => {
                        meta.put_object(&org, object(key, *size, now), QUOTA).await.unwrap();
                    }
                    Op::Delete(raw) => {
                        meta.delete(&org, &key(raw)).await.unwrap();
                    }
                }
            }
            let differences = meta.check_folders(&org, false).await.unwrap();
            prop_assert_eq!(differences, Vec::<FolderDifference>::new());
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[derive(Debug, Clone)]
enum Step {
    Put(String, u64),
    Delete(String),
    Job(Vec<String>),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (key_strategy(), 0u64..120).prop_map(|(k, s)| Step::Put(k, s)),
        2 => key_strategy().prop_map(Step::Delete),
        1 => proptest::collection::vec(key_strategy(), 1..3).prop_map(Step::Job),
    ]
}

/// What a client can observe of an organization: usage, every listing page, every key.
async fn observe(meta: &dyn MetaStore, org: &OrgId) -> Vec<String> {
    let mut seen = vec![format!("{:?}", meta.usage(org).await.unwrap())];
    let mut folders = vec![FolderPath::root()];
    while let Some(folder) = folders.pop() {
        for page in 0..3 {
            let listed = meta.list(org, &folder, page, 2).await.unwrap();
            for e in &listed.entries {
                seen.push(format!(
                    "{folder}|{}|{}|{}|{}|{}",
                    e.name, e.is_folder, e.size, e.mime, listed.total_entries
                ));
                if e.is_folder && page == 0 {
                    folders.push(FolderPath::parse(&folder.child(&e.name)).unwrap());
                }
            }
        }
    }
    for raw in ["a", "b", "c", "a/a", "a/b", "b/a", "a/a/a", "c/c/c"] {
        seen.push(match meta.key_kind(org, &key(raw)).await.unwrap() {
            KeyKind::File(o) => format!("{raw}: file {} {}", o.size, o.blob),
            other => format!("{raw}: {other:?}"),
        });
    }
    seen
}

/// The PostgreSQL store answers every sequence of puts (under a tight quota), deletes and jobs
/// exactly as the SQLite store does: the same outcomes, listings, usage and kinds.
fn behaves_like_sqlite(runtime: &tokio::runtime::Runtime, fixture: &Fixture) {
    let postgres = fixture.meta();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteMeta::open(&dir.path().join("meta.sqlite3")).unwrap();
    let quota = Quota {
        max_bytes: 400,
        max_files: 6,
    };
    let mut runner = TestRunner::new(ProptestConfig::with_cases(32));
    let result = runner.run(&proptest::collection::vec(step_strategy(), 1..30), |steps| {
        runtime.block_on(async {
            let orgs = [
                sqlite.create_org("t", None, None, 1).await.unwrap(),
                postgres.create_org("t", None, None, 1).await.unwrap(),
            ];
            let stores: [&dyn MetaStore; 2] = [&sqlite, postgres];
            for (i, step) in steps.iter().enumerate() {
                let mut answers = Vec::new();
                let put = match step {
                    Step::Put(k, size) => Some(object(k, *size, 10 + i as i64)),
                    _ => None,
                };
                for (meta, org) in stores.iter().zip(&orgs) {
                    answers.push(match step {
                        Step::Put(..) => {
                            format!("{:?}", meta.put_object(org, put.clone().unwrap(), quota).await.unwrap())
                        }
                        Step::Delete(k) => format!("{:?}", meta.delete(org, &key(k)).await.unwrap()),
                        Step::Job(keys) => {
                            let keys: Vec<Key> = keys.iter().map(|k| key(k)).collect();
                            match meta
                                .create_job(org, &keys, 5, 1000, JobLimits::NONE)
                                .await
                                .unwrap()
                                .job()
                            {
                                None => "no job".to_string(),
                                Some(job) => {
                                    let entries = meta.job_entries(&job.id).await.unwrap();
                                    format!(
                                        "{:?}",
                                        entries.iter().map(|e| (&e.key, &e.blob, e.size)).collect::<Vec<_>>()
                                    )
                                }
                            }
                        }
                    });
                }
                prop_assert_eq!(&answers[0], &answers[1], "step {} {:?}", i, step);
            }
            prop_assert_eq!(observe(&sqlite, &orgs[0]).await, observe(postgres, &orgs[1]).await);
            prop_assert_eq!(
                postgres.check_folders(&orgs[1], false).await.unwrap(),
                Vec::<FolderDifference>::new()
            );
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn conflicts_quota_and_listing(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let quota = Quota {
        max_bytes: 100,
        max_files: 3,
    };
    assert!(stored(
        &meta.put_object(&org, object("a/b", 10, 5), quota).await.unwrap()
    ));
    assert_eq!(
        meta.put_object(&org, object("a", 1, 6), quota).await.unwrap(),
        PutOutcome::Refused(PutRefusal::IsFolder)
    );
    assert_eq!(
        meta.put_object(&org, object("a/b/c", 1, 6), quota).await.unwrap(),
        PutOutcome::Refused(PutRefusal::AncestorIsFile("a/b".into()))
    );
    // Reaching the byte quota exactly is allowed; one more byte is not.
    assert!(stored(&meta.put_object(&org, object("x", 90, 7), quota).await.unwrap()));
    assert_eq!(
        meta.put_object(&org, object("y", 1, 8), quota).await.unwrap(),
        PutOutcome::Refused(PutRefusal::Quota(QuotaExceeded::Bytes {
            used: 100,
            limit: 100,
            added: 1,
        }))
    );
    // An overwrite that shrinks is always allowed and frees room.
    let replaced = meta.put_object(&org, object("x", 50, 9), quota).await.unwrap();
    assert!(matches!(replaced, PutOutcome::Stored { replaced: Some(_) }));
    assert!(stored(
        &meta.put_object(&org, object("y", 40, 10), quota).await.unwrap()
    ));
    // Three files now: a fourth is refused, an overwrite is not.
    assert!(matches!(
        meta.put_object(&org, object("z", 0, 11), quota).await.unwrap(),
        PutOutcome::Refused(PutRefusal::Quota(QuotaExceeded::Files { used: 3, limit: 3 }))
    ));
    assert!(stored(&meta.put_object(&org, object("y", 0, 12), quota).await.unwrap()));
    assert_eq!(meta.usage(&org).await.unwrap(), Usage { bytes: 60, files: 3 });

    let page = meta.list(&org, &FolderPath::root(), 0, 2).await.unwrap();
    assert_eq!(page.total_entries, 3);
    // The usage comes with the page, read in the same transaction.
    assert_eq!(page.usage, meta.usage(&org).await.unwrap());
    assert_eq!(page.usage.files, 3);
    let names: Vec<_> = page.entries.iter().map(|e| (e.name.as_str(), e.is_folder)).collect();
    assert_eq!(names, [("a", true), ("x", false)]);
    assert_eq!(page.entries[0].size, 10);
    assert_eq!(page.entries[0].mime, "directory");
    let page = meta.list(&org, &FolderPath::root(), 1, 2).await.unwrap();
    assert_eq!(page.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["y"]);
    assert!(
        meta.list(&org, &FolderPath::root(), 2, 2)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    let inside = meta.list(&org, &FolderPath::parse("a").unwrap(), 0, 10).await.unwrap();
    assert_eq!(inside.total_entries, 1);
    assert_eq!(inside.entries[0].name, "b");
    assert_eq!(
        meta.list(&org, &FolderPath::parse("nowhere").unwrap(), 0, 10)
            .await
            .unwrap(),
        ListPage {
            entries: vec![],
            total_entries: 0,
            usage: meta.usage(&org).await.unwrap(),
        }
    );

    assert!(matches!(meta.key_kind(&org, &key("a/b")).await.unwrap(), KeyKind::File(o) if o.size == 10));
    assert_eq!(meta.key_kind(&org, &key("a")).await.unwrap(), KeyKind::Folder);
    assert_eq!(meta.key_kind(&org, &key("a/c")).await.unwrap(), KeyKind::Missing);

    assert_eq!(
        meta.delete(&org, &key("a")).await.unwrap(),
        DeleteOutcome::Folder { files: 1, bytes: 10 }
    );
    assert_eq!(meta.delete(&org, &key("a")).await.unwrap(), DeleteOutcome::NotFound);
    assert_eq!(meta.delete(&org, &key("x")).await.unwrap(), DeleteOutcome::File);
    assert_consistent(meta, &org).await;
    assert_eq!(meta.usage(&org).await.unwrap(), Usage { bytes: 0, files: 1 });
    // Four blobs were freed: the first x, the first y, a/b and the second x.
    assert_eq!(meta.collectable_blobs(100, i64::MAX, 10).await.unwrap().len(), 4);
    assert_eq!(meta.collectable_blobs(100, i64::MAX, 2).await.unwrap().len(), 2);
}

/// Sorting, prefix ranges and names behave as byte order in both engines.
/// A folder's children as a test expects them: child folder names, and file names with sizes.
#[derive(Default)]
struct Children {
    folders: std::collections::BTreeSet<String>,
    files: std::collections::BTreeMap<String, u64>,
}

impl Children {
    /// Page `page` of `size` as an OFFSET window reads it: folders by name, then files by name,
    /// from entry `page * size` on (a folder's size is not compared: `None`).
    fn offset_page(&self, page: usize, size: usize) -> Vec<(String, bool, Option<u64>)> {
        self.folders
            .iter()
            .map(|n| (n.clone(), true, None))
            .chain(self.files.iter().map(|(n, s)| (n.clone(), false, Some(*s))))
            .skip(page * size)
            .take(size)
            .collect()
    }

    fn total(&self) -> usize {
        self.folders.len() + self.files.len()
    }
}

/// Every page of `folder`, in several page sizes, far pages first (they scan for marks) and then
/// near ones (they use them), read from each of `stores`, equals the OFFSET window.
async fn assert_pages(stores: &[Arc<dyn MetaStore>], org: &OrgId, folder: &FolderPath, children: &Children) {
    for size in [1usize, 2, 3, 4, 7] {
        let pages = children.total() / size + 2;
        for meta in stores {
            for page in (0..pages).rev().chain(0..pages) {
                let listed = meta.list(org, folder, page as u64, size as u64).await.unwrap();
                assert_eq!(listed.total_entries, children.total() as u64);
                let got: Vec<(String, bool, Option<u64>)> = listed
                    .entries
                    .iter()
                    .map(|e| (e.name.clone(), e.is_folder, (!e.is_folder).then_some(e.size)))
                    .collect();
                assert_eq!(got, children.offset_page(page, size), "page {page} of {size}");
            }
        }
    }
}

/// Listing pages are read from marks (every 2nd entry in this suite, see [`Fixture`]): every
/// page lists what the OFFSET window listed, also after puts and deletes between page reads
/// (new files and folders before and after the marks, overwrites), on a second server whose
/// marks are of an older version, and after the folder is deleted and made again.
async fn listing_pages_match_offset_windows(fixture: &Fixture) {
    let stores = fixture.two_servers().await;
    let meta = &*stores[0];
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let big = FolderPath::parse("big").unwrap();
    let mut children = Children::default();
    let mut now = 10;
    for i in 0..9 {
        now += 1;
        meta.put_object(&org, object(&format!("big/d{i:02}/x"), 1, now), QUOTA)
            .await
            .unwrap();
        children.folders.insert(format!("d{i:02}"));
    }
    for i in 0..25u64 {
        now += 1;
        let name = format!("f{:02}", i * 2);
        meta.put_object(&org, object(&format!("big/{name}"), i, now), QUOTA)
            .await
            .unwrap();
        children.files.insert(name, i);
    }
    assert_pages(&stores, &org, &big, &children).await;

    enum Change {
        Put(&'static str, u64),
        Delete(&'static str),
    }
    let changes = [
        Change::Put("a-first", 3),
        Change::Delete("f10"),
        Change::Put("d04b/y", 0),
        Change::Delete("d03"),
        Change::Put("f11", 5),
        Change::Put("zz", 6),
        Change::Put("f20", 99),
        Change::Delete("d00"),
        Change::Delete("f00"),
        Change::Put("d99/z", 1),
    ];
    for change in changes {
        // Both servers hold marks of the folder as it is now.
        for store in &stores {
            store.list(&org, &big, 3, 3).await.unwrap();
            store.list(&org, &big, 9, 3).await.unwrap();
        }
        now += 1;
        match change {
            Change::Put(name, size) => {
                meta.put_object(&org, object(&format!("big/{name}"), size, now), QUOTA)
                    .await
                    .unwrap();
                match name.split_once('/') {
                    Some((folder, _)) => children.folders.insert(folder.to_owned()),
                    None => children.files.insert(name.to_owned(), size).is_none(),
                };
            }
            Change::Delete(name) => {
                meta.delete(&org, &key(&format!("big/{name}"))).await.unwrap();
                if !children.folders.remove(name) {
                    children.files.remove(name);
                }
            }
        }
        assert_pages(&stores, &org, &big, &children).await;
    }

    // The folder deleted and made again, with as many children but other names: marks of the
    // old folder must not serve the new one.
    let count = children.total();
    meta.delete(&org, &key("big")).await.unwrap();
    let mut again = Children::default();
    for i in 0..count as u64 {
        now += 1;
        let name = format!("g{i:02}");
        meta.put_object(&org, object(&format!("big/{name}"), i, now), QUOTA)
            .await
            .unwrap();
        again.files.insert(name, i);
    }
    assert_pages(&stores, &org, &big, &again).await;
    assert_consistent(meta, &org).await;
}

async fn byte_order_and_prefix_ranges(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    // '/' (0x2f) sorts before '0' (0x30) and '-' (0x2d); 'B' before 'a'; non-ASCII after ASCII.
    for k in ["a-b", "a/x", "a0", "B", "a1", "é", "z", "a.b/c"] {
        assert!(stored(&meta.put_object(&org, object(k, 1, 5), QUOTA).await.unwrap()));
    }
    let page = meta.list(&org, &FolderPath::root(), 0, 100).await.unwrap();
    let names: Vec<_> = page.entries.iter().map(|e| e.name.as_str()).collect();
    // Folders first, then files, each in byte order.
    assert_eq!(names, ["a", "a.b", "B", "a-b", "a0", "a1", "z", "é"]);
    assert_eq!(
        meta.delete(&org, &key("a")).await.unwrap(),
        DeleteOutcome::Folder { files: 1, bytes: 1 }
    );
    assert!(matches!(
        meta.key_kind(&org, &key("a-b")).await.unwrap(),
        KeyKind::File(_)
    ));
    assert!(matches!(
        meta.key_kind(&org, &key("a0")).await.unwrap(),
        KeyKind::File(_)
    ));
    assert_consistent(meta, &org).await;
}

/// A replaced or deleted body is collectable only once released before the cutoff asked for
/// (single-file links name bodies without recording a job).
async fn released_bodies_wait_for_the_cutoff(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    meta.put_object(&org, object("x", 1, 2), QUOTA).await.unwrap();
    meta.put_object(&org, object("x", 2, 3), QUOTA).await.unwrap();
    meta.delete(&org, &key("x")).await.unwrap();
    let released = chrono::Utc::now().timestamp_millis();
    let hour = 3_600_000;
    assert!(
        meta.collectable_blobs(i64::MAX, released - hour, 10)
            .await
            .unwrap()
            .is_empty(),
        "released within the last hour: kept"
    );
    assert_eq!(
        meta.collectable_blobs(i64::MAX, released + hour, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// `standing` reads a user's flag and membership in one query.
async fn standing_reads_user_and_membership(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let other = meta.create_org("u", None, None, 1).await.unwrap();
    let seal = |_| {
        Some(SealedToken {
            nonce: vec![0; 12],
            ciphertext: vec![1; 16],
        })
    };
    let user = meta
        .create_user("reader", false, 1, Box::new(seal))
        .await
        .unwrap()
        .unwrap();
    let reads = Permissions {
        read: true,
        write: false,
        delete: false,
        admin: false,
    };
    assert!(meta.set_member(&org, user, reads).await.unwrap());
    let standing = meta.standing(&org, user).await.unwrap();
    assert_eq!(
        standing,
        Some(Standing {
            disabled: false,
            permissions: Some(reads)
        })
    );
    assert_eq!(
        meta.standing(&other, user).await.unwrap(),
        Some(Standing {
            disabled: false,
            permissions: None
        }),
        "not a member of the other organization"
    );
    assert!(meta.set_user_disabled(user, true).await.unwrap());
    assert_eq!(
        meta.standing(&org, user).await.unwrap(),
        Some(Standing {
            disabled: true,
            permissions: Some(reads)
        })
    );
    assert_eq!(
        meta.standing(&org, UserId(user.0 + 1000)).await.unwrap(),
        None,
        "no such user"
    );
}

async fn jobs_pin_blobs_until_they_expire(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    meta.put_object(&org, object("d/one", 1, 2), QUOTA).await.unwrap();
    meta.put_object(&org, object("d/two", 2, 3), QUOTA).await.unwrap();
    meta.put_object(&org, object("dx", 3, 3), QUOTA).await.unwrap();
    let keys = [key("d"), key("d/one"), key("missing")];
    let job = meta
        .create_job(&org, &keys, 10, 1000, JobLimits::NONE)
        .await
        .unwrap()
        .job()
        .unwrap();
    assert_eq!(job.org, org);
    assert_eq!((job.created, job.expires), (10, 1000));
    assert_eq!(meta.job(&job.id).await.unwrap(), Some(job.clone()));
    let entries = meta.job_entries(&job.id).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| (e.key.as_str(), e.size)).collect::<Vec<_>>(),
        [("d/one", 1), ("d/two", 2)]
    );
    // Overwriting a pinned file keeps the job's blob, and the job still names it.
    let newer = object("d/one", 5, 20);
    let newer_blob = newer.blob.clone();
    let PutOutcome::Stored { replaced: Some(old) } = meta.put_object(&org, newer, QUOTA).await.unwrap() else {
        panic!("an overwrite replaces a blob")
    };
    assert_eq!(old, entries[0].blob);
    assert_eq!(meta.job_entries(&job.id).await.unwrap(), entries);
    meta.delete(&org, &key("d")).await.unwrap();
    assert_eq!(
        meta.collectable_blobs(500, i64::MAX, 10).await.unwrap(),
        [newer_blob],
        "the job pins the others"
    );
    let mut collectable = meta.collectable_blobs(1000, i64::MAX, 10).await.unwrap();
    collectable.sort();
    assert_eq!(collectable.len(), 3, "the job expired");
    // Collected blobs are forgotten; forgetting twice (two servers collecting) is harmless.
    meta.forget_blobs(&collectable).await.unwrap();
    meta.forget_blobs(&collectable).await.unwrap();
    assert!(meta.collectable_blobs(1000, i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(meta.delete_expired_jobs(1000).await.unwrap(), 0);
    assert_eq!(meta.delete_expired_jobs(1001).await.unwrap(), 1);
    assert_eq!(meta.delete_expired_jobs(1001).await.unwrap(), 0);
    assert!(meta.job(&job.id).await.unwrap().is_none());
    assert!(meta.job_entries(&job.id).await.unwrap().is_empty());
    assert_eq!(
        meta.create_job(&org, &keys[2..], 10, 1000, JobLimits::NONE)
            .await
            .unwrap(),
        JobOutcome::NothingFound
    );
    // The whole organization as one folder is not a key; a file key pins exactly that file.
    let job = meta
        .create_job(&org, &[key("dx"), key("dx")], 10, 1000, JobLimits::NONE)
        .await
        .unwrap()
        .job()
        .unwrap();
    assert_eq!(meta.job_entries(&job.id).await.unwrap().len(), 1);
}

/// Issue 12 item 1: a job over more files than allowed is refused and records nothing; one more
/// live job than allowed expires the oldest live one early; expired jobs do not count.
async fn jobs_are_bounded(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    for name in ["d/1", "d/2", "d/3", "e/1"] {
        meta.put_object(&org, object(name, 1, 2), QUOTA).await.unwrap();
    }
    let limits = JobLimits {
        max_files: 3,
        max_live_jobs: 2,
    };
    assert_eq!(
        meta.create_job(&org, &[key("d"), key("e")], 10, 1000, limits)
            .await
            .unwrap(),
        JobOutcome::TooManyFiles { limit: 3 }
    );
    let first = meta
        .create_job(&org, &[key("e"), key("d/1"), key("d/2"), key("d/1")], 10, 1000, limits)
        .await
        .unwrap()
        .job()
        .expect("three files, one named twice");
    let expired = meta.create_job(&org, &[key("d")], 1, 5, limits).await.unwrap().job();
    assert!(expired.is_some());
    let second = meta
        .create_job(&org, &[key("d")], 11, 1001, limits)
        .await
        .unwrap()
        .job()
        .unwrap();
    // a third live job (the expired one does not count) expires the oldest live one early
    let third = meta
        .create_job(&org, &[key("d")], 20, 1010, limits)
        .await
        .unwrap()
        .job()
        .expect("a job beyond the limit is recorded");
    let live = |job: &Job| {
        let id = job.id.clone();
        async move { meta.job(&id).await.unwrap().is_some_and(|j| j.expires > 20) }
    };
    let (first_live, second_live, third_live) = (live(&first).await, live(&second).await, live(&third).await);
    assert!(
        !first_live && second_live && third_live,
        "only the oldest live job expires"
    );
    assert_eq!(meta.job_entries(&third.id).await.unwrap().len(), 3);
    let other = meta.create_org("u", None, None, 1).await.unwrap();
    meta.put_object(&other, object("x", 1, 2), QUOTA).await.unwrap();
    assert!(
        meta.create_job(&other, &[key("x")], 10, 1000, limits)
            .await
            .unwrap()
            .job()
            .is_some(),
        "another organization's jobs are its own"
    );
}

async fn concurrent_writers_never_overshoot(fixture: &Fixture) {
    let org = fixture.meta.create_org("t", None, None, 1).await.unwrap();
    let quota = Quota {
        max_bytes: 1000,
        max_files: 1000,
    };
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (meta, org) = (fixture.meta.clone(), org.clone());
            tokio::spawn(async move {
                meta.put_object(&org, object(&format!("k{i}"), 30, 5), quota)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut stored_count = 0;
    for task in tasks {
        if stored(&task.await.unwrap()) {
            stored_count += 1;
        }
    }
    assert_eq!(stored_count, 33);
    assert_eq!(fixture.meta.usage(&org).await.unwrap(), Usage { bytes: 990, files: 33 });
    assert_consistent(fixture.meta(), &org).await;
}

async fn organizations_users_and_members(fixture: &Fixture) {
    let meta = fixture.meta();
    let first = meta.create_org("first", Some(10), None, 100).await.unwrap();
    let second = meta.create_org("second", None, Some(5), 200).await.unwrap();
    let org = meta.org(&first).await.unwrap().unwrap();
    assert_eq!(
        org,
        Organization {
            id: first.clone(),
            name: "first".into(),
            max_bytes: Some(10),
            max_files: None,
            usage: Usage::default(),
            created: 100,
            bucket: None,
        }
    );
    assert!(meta.org(&OrgId::generate()).await.unwrap().is_none());
    let listed: Vec<_> = meta.list_orgs().await.unwrap().into_iter().map(|o| o.id).collect();
    let (i, j) = (
        listed.iter().position(|o| *o == first).unwrap(),
        listed.iter().position(|o| *o == second).unwrap(),
    );
    assert!(i < j, "organizations are listed by creation time");
    assert!(meta.set_quota(&second, Some(1 << 40), None).await.unwrap());
    assert!(!meta.set_quota(&OrgId::generate(), None, None).await.unwrap());
    let org = meta.org(&second).await.unwrap().unwrap();
    assert_eq!((org.max_bytes, org.max_files), (Some(1 << 40), None));

    let seal = |tag: u8| -> Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send> {
        Box::new(move |id: UserId| {
            Some(SealedToken {
                nonce: vec![tag; 24],
                ciphertext: id.0.to_le_bytes().to_vec(),
            })
        })
    };
    let alice = meta.create_user("alice", false, 300, seal(1)).await.unwrap().unwrap();
    let bob = meta.create_user("bob", false, 301, seal(2)).await.unwrap().unwrap();
    let carol = meta.create_user("carol", true, 302, seal(3)).await.unwrap().unwrap();
    assert!(alice.0 > 0 && bob.0 > alice.0);
    // A token that cannot be sealed creates no user.
    assert!(
        meta.create_user("nobody", false, 302, Box::new(|_| None))
            .await
            .is_err()
    );
    // The first user of a store is a server administrator even unasked; later ones when asked.
    let admins: Vec<bool> = meta
        .list_users()
        .await
        .unwrap()
        .iter()
        .map(|u| u.server_admin)
        .collect();
    assert_eq!(admins, [true, false, true]);
    assert!(meta.set_user_server_admin(carol, false).await.unwrap());
    assert!(meta.set_user_server_admin(bob, true).await.unwrap());
    assert!(!meta.set_user_server_admin(UserId(alice.0 + 1000), true).await.unwrap());
    let admins: Vec<bool> = meta
        .list_users()
        .await
        .unwrap()
        .iter()
        .map(|u| u.server_admin)
        .collect();
    assert_eq!(admins, [true, true, false]);
    let users = meta.list_users().await.unwrap();
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["alice", "bob", "carol"]
    );
    let user = meta.user(alice).await.unwrap().unwrap();
    assert_eq!((user.id, user.created, user.disabled), (alice, 300, false));
    assert_eq!(user.token.nonce, vec![1; 24]);
    assert_eq!(user.token.ciphertext, alice.0.to_le_bytes());
    assert!(meta.user(UserId(alice.0 + 1000)).await.unwrap().is_none());
    let token = SealedToken {
        nonce: vec![9, 0, 255],
        ciphertext: vec![0, 1, 2, 0],
    };
    assert!(meta.set_user_token(alice, token.clone()).await.unwrap());
    assert!(
        !meta
            .set_user_token(UserId(alice.0 + 1000), token.clone())
            .await
            .unwrap()
    );
    assert!(meta.set_user_disabled(alice, true).await.unwrap());
    let user = meta.user(alice).await.unwrap().unwrap();
    assert_eq!(
        (user.token.nonce, user.token.ciphertext),
        (token.nonce, token.ciphertext)
    );
    assert!(user.disabled);
    assert!(!meta.set_user_disabled(UserId(alice.0 + 1000), true).await.unwrap());

    let read = Permissions::parse("read").unwrap();
    assert!(meta.set_member(&first, bob, read).await.unwrap());
    assert!(meta.set_member(&first, alice, Permissions::ALL).await.unwrap());
    assert!(!meta.set_member(&OrgId::generate(), alice, read).await.unwrap());
    assert!(!meta.set_member(&first, UserId(alice.0 + 1000), read).await.unwrap());
    let members = meta.members(&first).await.unwrap();
    assert_eq!(
        members,
        [
            Membership {
                org: first.clone(),
                user: alice,
                permissions: Permissions::ALL
            },
            Membership {
                org: first.clone(),
                user: bob,
                permissions: read
            },
        ]
    );
    let write = Permissions::parse("read,write").unwrap();
    assert!(meta.set_member(&first, bob, write).await.unwrap());
    assert_eq!(
        meta.membership(&first, bob).await.unwrap().map(|m| m.permissions),
        Some(write)
    );
    assert!(meta.membership(&second, bob).await.unwrap().is_none());
    assert!(meta.set_member(&second, bob, read).await.unwrap());
    let mut expected = vec![(first.clone(), write), (second.clone(), read)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let of_bob: Vec<_> = meta
        .user_memberships(bob)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.org, m.permissions))
        .collect();
    assert_eq!(of_bob, expected);
    assert!(meta.remove_member(&second, bob).await.unwrap());
    assert!(meta.remove_member(&first, bob).await.unwrap());
    assert!(!meta.remove_member(&first, bob).await.unwrap());
    assert_eq!(meta.members(&first).await.unwrap().len(), 1);
}

async fn bucket_names(fixture: &Fixture) {
    let meta = fixture.meta();
    let alias = |raw: &str| BucketAlias::parse(raw).unwrap();
    let plain = meta.create_org("plain", None, None, 1).await.unwrap();
    let user = meta
        .create_user(
            "u",
            false,
            1,
            Box::new(|_| {
                Some(SealedToken {
                    nonce: vec![0; 24],
                    ciphertext: vec![1],
                })
            }),
        )
        .await
        .unwrap()
        .unwrap();
    let data = meta
        .create_bucket_org("data", &alias("team-data"), Some(user), 2)
        .await
        .unwrap()
        .unwrap();
    let org = meta.org(&data).await.unwrap().unwrap();
    assert_eq!((org.name.as_str(), org.bucket.as_deref()), ("data", Some("team-data")));
    assert_eq!(
        meta.membership(&data, user).await.unwrap().map(|m| m.permissions),
        Some(Permissions::ALL)
    );
    assert_eq!(
        meta.org_by_bucket(&alias("team-data")).await.unwrap().map(|o| o.id),
        Some(data.clone())
    );
    assert!(meta.org_by_bucket(&alias("nobody")).await.unwrap().is_none());
    // A taken name creates nothing and is not given to another organization.
    let orgs = meta.list_orgs().await.unwrap().len();
    assert_eq!(
        meta.create_bucket_org("again", &alias("team-data"), None, 3)
            .await
            .unwrap(),
        Err(BucketRefusal::Taken(data.clone()))
    );
    assert_eq!(meta.list_orgs().await.unwrap().len(), orgs);
    assert_eq!(
        meta.set_org_bucket(&plain, Some(&alias("team-data"))).await.unwrap(),
        Err(BucketRefusal::Taken(data.clone()))
    );
    assert_eq!(
        meta.set_org_bucket(&data, Some(&alias("team-data"))).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        meta.set_org_bucket(&OrgId::generate(), Some(&alias("free")))
            .await
            .unwrap(),
        Err(BucketRefusal::UnknownOrg)
    );
    // Renaming frees the old name; taking the name away leaves none.
    assert_eq!(
        meta.set_org_bucket(&data, Some(&alias("renamed"))).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        meta.set_org_bucket(&plain, Some(&alias("team-data"))).await.unwrap(),
        Ok(())
    );
    assert_eq!(
        meta.org_by_bucket(&alias("team-data")).await.unwrap().map(|o| o.id),
        Some(plain.clone())
    );
    assert_eq!(meta.set_org_bucket(&plain, None).await.unwrap(), Ok(()));
    assert!(meta.org_by_bucket(&alias("team-data")).await.unwrap().is_none());
    assert_eq!(meta.org(&plain).await.unwrap().unwrap().bucket, None);

    // Only an empty organization is deleted, with its members and the S3 keys limited to it;
    // its bucket name is free again.
    meta.put_object(&data, object("a/b", 3, 5), QUOTA).await.unwrap();
    assert_eq!(meta.delete_empty_org(&data).await.unwrap(), OrgDeletion::NotEmpty);
    assert!(meta.org(&data).await.unwrap().is_some());
    let limited = S3Key {
        access_key: "LIMITED".into(),
        user,
        org: Some(data.clone()),
        read_only: false,
        secret: SealedToken {
            nonce: vec![0; 24],
            ciphertext: vec![1],
        },
        created: 1,
        revoked: None,
        user_disabled: false,
    };
    assert!(meta.create_s3_key(&limited).await.unwrap());
    assert_eq!(
        meta.delete(&data, &key("a")).await.unwrap(),
        DeleteOutcome::Folder { files: 1, bytes: 3 }
    );
    assert_eq!(meta.delete_empty_org(&data).await.unwrap(), OrgDeletion::Deleted);
    assert!(meta.org(&data).await.unwrap().is_none());
    assert!(meta.membership(&data, user).await.unwrap().is_none());
    assert!(meta.s3_key("LIMITED").await.unwrap().is_none());
    assert!(meta.org_by_bucket(&alias("renamed")).await.unwrap().is_none());
    assert_eq!(meta.delete_empty_org(&data).await.unwrap(), OrgDeletion::Unknown);
    assert_eq!(
        meta.create_bucket_org("again", &alias("renamed"), None, 4)
            .await
            .unwrap()
            .map(|_| ()),
        Ok(())
    );
}

async fn s3_keys(fixture: &Fixture) {
    let meta = fixture.meta();
    let sealed = |tag: u8| SealedToken {
        nonce: vec![tag; 24],
        ciphertext: vec![tag, 1, 2],
    };
    let user = meta
        .create_user("u", false, 1, Box::new(move |_| Some(sealed(0))))
        .await
        .unwrap()
        .unwrap();
    let other = meta
        .create_user("v", false, 1, Box::new(move |_| Some(sealed(0))))
        .await
        .unwrap()
        .unwrap();
    let org = meta.create_org("o", None, None, 1).await.unwrap();
    let key = |id: &str, user: UserId, org: Option<OrgId>, created: Millis| S3Key {
        access_key: id.into(),
        user,
        read_only: org.is_some(),
        org,
        secret: sealed(created as u8),
        created,
        revoked: None,
        user_disabled: false,
    };
    assert!(meta.create_s3_key(&key("KEYA", user, None, 10)).await.unwrap());
    assert!(
        meta.create_s3_key(&key("KEYB", user, Some(org.clone()), 11))
            .await
            .unwrap()
    );
    assert!(meta.create_s3_key(&key("KEYC", other, None, 12)).await.unwrap());
    // Unknown users and organizations get no key.
    assert!(
        !meta
            .create_s3_key(&key("KEYD", UserId(other.0 + 100), None, 13))
            .await
            .unwrap()
    );
    assert!(
        !meta
            .create_s3_key(&key("KEYE", user, Some(OrgId::generate()), 14))
            .await
            .unwrap()
    );
    assert!(meta.s3_key("KEYD").await.unwrap().is_none());

    let b = meta.s3_key("KEYB").await.unwrap().unwrap();
    assert_eq!(
        (b.user, b.org.as_ref(), b.read_only, b.created),
        (user, Some(&org), true, 11)
    );
    assert!(b.usable());
    assert_eq!((b.secret.nonce, b.secret.ciphertext), (vec![11; 24], vec![11, 1, 2]));
    let ids = |keys: Vec<S3Key>| keys.into_iter().map(|k| k.access_key).collect::<Vec<_>>();
    assert_eq!(ids(meta.list_s3_keys(None).await.unwrap()), ["KEYA", "KEYB", "KEYC"]);
    assert_eq!(ids(meta.list_s3_keys(Some(other)).await.unwrap()), ["KEYC"]);

    // Revocation keeps its first time; disabling a user makes its keys unusable.
    assert!(meta.revoke_s3_key("KEYA", 20).await.unwrap());
    assert!(meta.revoke_s3_key("KEYA", 30).await.unwrap());
    assert!(!meta.revoke_s3_key("NOPE", 30).await.unwrap());
    let a = meta.s3_key("KEYA").await.unwrap().unwrap();
    assert_eq!(a.revoked, Some(20));
    assert!(!a.usable());
    assert!(meta.set_user_disabled(other, true).await.unwrap());
    let c = meta.s3_key("KEYC").await.unwrap().unwrap();
    assert!(c.user_disabled && !c.usable());
    assert!(meta.set_user_disabled(other, false).await.unwrap());
    assert!(meta.s3_key("KEYC").await.unwrap().unwrap().usable());
}

async fn fsck_walks_objects_and_repairs_folders(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let mut blobs = Vec::new();
    for k in ["a/b/c", "a/d", "e"] {
        let new = object(k, 7, 5);
        blobs.push(new.blob.clone());
        meta.put_object(&org, new, QUOTA).await.unwrap();
    }
    // objects_after pages through (organization, key) order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = meta.objects_after(after.clone(), 2).await.unwrap();
        let Some((last_org, last)) = page.last() else { break };
        after = Some((last_org.clone(), last.key.clone()));
        seen.extend(
            page.into_iter()
                .filter(|(o, _)| *o == org)
                .map(|(_, m)| m.key.to_string()),
        );
    }
    assert_eq!(seen, ["a/b/c", "a/d", "e"]);
    let first = meta.objects_after(Some((org.clone(), key("a/b/c"))), 1).await.unwrap();
    assert_eq!(first[0].1.key.as_str(), "a/d");
    assert_eq!((first[0].1.size, first[0].1.blob.clone()), (7, blobs[1].clone()));

    // unreferenced_blobs keeps the candidates' order and drops named ones.
    let stray = [BlobId::generate(), BlobId::generate()];
    let candidates = [stray[0].clone(), blobs[0].clone(), stray[1].clone()];
    assert_eq!(meta.unreferenced_blobs(&candidates).await.unwrap(), stray);
    assert!(meta.unreferenced_blobs(&[]).await.unwrap().is_empty());
    meta.delete(&org, &key("e")).await.unwrap();
    assert!(
        meta.unreferenced_blobs(&[blobs[2].clone()]).await.unwrap().is_empty(),
        "awaiting collection"
    );

    // Damage the folder rows: a wrong figure, a missing row, a stray row, a wrong usage.
    let o = org.as_str();
    fixture
        .execute_sql(&format!(
            "UPDATE folders SET bytes = bytes + 5 WHERE org_id = '{o}' AND path = 'a'; \
             DELETE FROM folders WHERE org_id = '{o}' AND path = 'a/b'; \
             INSERT INTO folders (org_id, path, parent, name, bytes, files, child_folders, child_files, modified) \
             VALUES ('{o}', 'zz', '', 'zz', 1, 1, 0, 1, 3); \
             UPDATE folders SET files = 9 WHERE org_id = '{o}' AND path = '';"
        ))
        .await;
    let differences = meta.check_folders(&org, false).await.unwrap();
    let paths: Vec<_> = differences.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["", "a", "a/b", "zz"]);
    let a = &differences[1];
    assert_eq!(a.stored.unwrap().bytes, a.implied.unwrap().bytes + 5);
    assert_eq!((differences[2].stored, differences[3].implied), (None, None));
    assert_eq!(
        differences[2].implied,
        Some(FolderFigures {
            bytes: 7,
            files: 1,
            child_folders: 0,
            child_files: 1,
            modified: differences[2].implied.unwrap().modified,
        })
    );
    // Checking does not repair; repairing returns what it fixed, and then nothing differs.
    assert_eq!(meta.check_folders(&org, false).await.unwrap(), differences);
    assert_eq!(meta.check_folders(&org, true).await.unwrap(), differences);
    assert_consistent(meta, &org).await;
    assert_eq!(meta.usage(&org).await.unwrap(), Usage { bytes: 14, files: 2 });
    let page = meta.list(&org, &FolderPath::parse("a").unwrap(), 0, 10).await.unwrap();
    assert_eq!(
        page.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["b", "d"]
    );
}

/// Two servers (two pools on one database) race 2×16 uploads against a nearly full quota: exactly
/// as many fit as the quota allows, and usage matches the objects.
async fn two_servers_never_overshoot(fixture: &Fixture) {
    let servers = [fixture.meta.clone(), fixture.second_server().await];
    let org = servers[0].create_org("t", None, None, 1).await.unwrap();
    let quota = Quota {
        max_bytes: 1000,
        max_files: 100,
    };
    assert!(stored(
        &servers[1]
            .put_object(&org, object("base", 900, 2), quota)
            .await
            .unwrap()
    ));
    let mut tasks = Vec::new();
    for i in 0..16 {
        for (s, server) in servers.iter().enumerate() {
            let (meta, org) = (server.clone(), org.clone());
            tasks.push(tokio::spawn(async move {
                meta.put_object(&org, object(&format!("dir{}/k{s}-{i}", i % 3), 30, 5), quota)
                    .await
                    .unwrap()
            }));
        }
    }
    let mut stored_count = 0;
    for task in tasks {
        match task.await.unwrap() {
            outcome if stored(&outcome) => stored_count += 1,
            PutOutcome::Refused(PutRefusal::Quota(QuotaExceeded::Bytes { used, .. })) => assert!(used <= 1000),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(stored_count, 3, "100 bytes of room hold three 30-byte objects");
    for server in &servers {
        assert_eq!(server.usage(&org).await.unwrap(), Usage { bytes: 990, files: 4 });
        assert_consistent(&**server, &org).await;
    }
}

/// Many puts to one organization at once from two servers (for PostgreSQL two stores, each
/// batching its own queue): puts that fail their own checks (a file above the key, a key that is a
/// folder) fail alone, overwrites always pass, and new files pass exactly until the file quota is
/// full, each refusal naming the full usage; the usage and folder rows end exact.
async fn concurrent_puts_get_their_own_outcomes(fixture: &Fixture) {
    let servers = fixture.two_servers().await;
    let org = servers[0].create_org("t", None, None, 1).await.unwrap();
    let quota = Quota {
        max_bytes: 1000,
        max_files: 20,
    };
    for name in ["f", "d/y"] {
        assert!(stored(
            &servers[0].put_object(&org, object(name, 1, 2), quota).await.unwrap()
        ));
    }
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Kind {
        BelowFile,
        IsFolder,
        Overwrite,
        New,
    }
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        for (s, server) in servers.iter().enumerate() {
            let (kind, put) = match i % 8 {
                0 => (Kind::BelowFile, object(&format!("f/x{s}-{i}"), 7, 3)),
                1 => (Kind::IsFolder, object("d", 7, 3)),
                5 => (Kind::Overwrite, object("d/y", 1, 3)),
                _ => (Kind::New, object(&format!("n{}/k{s}-{i}", i % 3), 7, 3)),
            };
            let (meta, org) = (server.clone(), org.clone());
            tasks.push(tokio::spawn(async move {
                (kind, meta.put_object(&org, put, quota).await.unwrap())
            }));
        }
    }
    let (mut new, mut new_stored) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            (Kind::BelowFile, PutOutcome::Refused(PutRefusal::AncestorIsFile(file))) => assert_eq!(file, "f"),
            (Kind::IsFolder, PutOutcome::Refused(PutRefusal::IsFolder)) => {}
            (Kind::Overwrite, PutOutcome::Stored { replaced: Some(_) }) => {}
            (Kind::New, PutOutcome::Stored { replaced: None }) => {
                new += 1;
                new_stored += 1;
            }
            (Kind::New, PutOutcome::Refused(PutRefusal::Quota(over))) => {
                new += 1;
                assert_eq!(over, QuotaExceeded::Files { used: 20, limit: 20 });
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(new, 50);
    assert_eq!(new_stored, 18, "two files were there, the quota holds 20");
    for server in &servers {
        assert_eq!(
            server.usage(&org).await.unwrap(),
            Usage {
                bytes: 2 + 18 * 7,
                files: 20
            }
        );
        assert_consistent(&**server, &org).await;
    }
}

/// A database error fails every put of the transaction it hit, each with an error (never a
/// success), and leaves nothing behind: once the table is back, puts on the same store pass and
/// the usage counts exactly them.
async fn a_failed_batch_fails_its_puts_and_nothing_else(fixture: &Fixture) {
    let org = fixture.meta.create_org("t", None, None, 1).await.unwrap();
    assert!(stored(
        &fixture.meta.put_object(&org, object("a", 1, 2), QUOTA).await.unwrap()
    ));
    fixture.execute_sql("ALTER TABLE objects RENAME TO objects_away").await;
    let puts = |prefix: &'static str| {
        (0..16)
            .map(|i| {
                let (meta, org) = (fixture.meta.clone(), org.clone());
                tokio::spawn(async move {
                    meta.put_object(&org, object(&format!("{prefix}/k{i}"), 3, 3), QUOTA)
                        .await
                })
            })
            .collect::<Vec<_>>()
    };
    for task in puts("failing") {
        assert!(task.await.unwrap().is_err(), "a put without its table cannot succeed");
    }
    fixture.execute_sql("ALTER TABLE objects_away RENAME TO objects").await;
    for task in puts("passing") {
        assert!(stored(&task.await.unwrap().unwrap()));
    }
    assert_eq!(
        fixture.meta.usage(&org).await.unwrap(),
        Usage {
            bytes: 1 + 16 * 3,
            files: 17
        }
    );
    assert_consistent(fixture.meta(), &org).await;
}

/// Servers starting at once on one empty store (two handles of their own on one database, for
/// SQLite two connections to one file as two processes would have) create the first organization
/// and user exactly once, with the user an admin member of it.
async fn first_identities_are_created_once(fixture: &Fixture) {
    let second: Arc<dyn MetaStore> = match &fixture.backend {
        Backend::Sqlite { path, .. } => Arc::new(SqliteMeta::open(path).unwrap()),
        Backend::Postgres(_) => fixture.second_server().await,
    };
    let handles = [fixture.meta.clone(), second];
    let mut tasks = Vec::new();
    for round in 0..8 {
        for handle in &handles {
            let meta = handle.clone();
            tasks.push(tokio::spawn(async move {
                meta.create_first_identities(
                    "default",
                    &format!("admin{round}"),
                    1,
                    Box::new(|id| {
                        Some(SealedToken {
                            nonce: id.0.to_le_bytes().to_vec(),
                            ciphertext: vec![1, 2, 3],
                        })
                    }),
                )
                .await
                .unwrap()
            }));
        }
    }
    let mut created = Vec::new();
    for task in tasks {
        created.extend(task.await.unwrap());
    }
    assert_eq!(created.len(), 1, "exactly one of 16 callers creates: {created:?}");
    let (org, user) = created.remove(0);
    for handle in &handles {
        assert_eq!(handle.list_orgs().await.unwrap().len(), 1);
        let users = handle.list_users().await.unwrap();
        assert_eq!(users.iter().map(|u| u.id).collect::<Vec<_>>(), [user]);
        assert_eq!(
            users[0].token.ciphertext,
            [1, 2, 3],
            "the token was sealed under the new id"
        );
        assert!(users[0].server_admin, "the first user is a server administrator");
        let membership = handle.membership(&org, user).await.unwrap().expect("a member");
        assert_eq!(membership.permissions, Permissions::ALL);
        assert_eq!(handle.usage(&org).await.unwrap(), Usage { bytes: 0, files: 0 });
    }
    let again = handles[1]
        .create_first_identities("default", "late", 2, Box::new(|_| None))
        .await
        .unwrap();
    assert_eq!(again, None, "a store with a user gets nothing new");
}

/// Two servers race 2×16 overwrites of one key: every write is stored, each replaces exactly the
/// blob the previous one stored, and one object remains with usage to match.
async fn two_servers_overwrite_one_key(fixture: &Fixture) {
    let servers = [fixture.meta.clone(), fixture.second_server().await];
    let org = servers[0].create_org("t", None, None, 1).await.unwrap();
    let first = object("shared/key", 1, 2);
    let mut written = vec![first.blob.clone()];
    servers[0].put_object(&org, first, QUOTA).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        for (s, server) in servers.iter().enumerate() {
            let new = object("shared/key", 10 + i * 2 + s as u64, 3);
            written.push(new.blob.clone());
            let (meta, org) = (server.clone(), org.clone());
            tasks.push(tokio::spawn(
                async move { meta.put_object(&org, new, QUOTA).await.unwrap() },
            ));
        }
    }
    let mut replaced = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            PutOutcome::Stored { replaced: Some(blob) } => replaced.push(blob),
            other => panic!("an overwrite must replace a blob, got {other:?}"),
        }
    }
    let KeyKind::File(current) = servers[1].key_kind(&org, &key("shared/key")).await.unwrap() else {
        panic!("the key is a file");
    };
    // The replaced blobs are every written blob but the current one, each exactly once.
    replaced.push(current.blob.clone());
    replaced.sort();
    written.sort();
    assert_eq!(replaced, written);
    assert_eq!(
        servers[0].usage(&org).await.unwrap(),
        Usage {
            bytes: current.size,
            files: 1
        }
    );
    let mut collectable = servers[1].collectable_blobs(0, i64::MAX, 100).await.unwrap();
    collectable.sort();
    written.retain(|b| *b != current.blob);
    assert_eq!(collectable, written);
    for server in &servers {
        assert_consistent(&**server, &org).await;
    }
}

/// Downloads pin what they list while another server overwrites the files and both collect:
/// collection never hands out a blob that an unexpired job names, and never fails.
async fn jobs_race_overwrites_and_collection(fixture: &Fixture) {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};

    let servers = fixture.two_servers().await;
    let org = servers[0].create_org("t", None, None, 1).await.unwrap();
    // Many files, so that a job takes a while to record and overwrites land while it does.
    const FILES: usize = 200;
    for k in 0..FILES {
        servers[0]
            .put_object(&org, object(&format!("d/k{k}"), 1, 2), QUOTA)
            .await
            .unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let collectors: Vec<_> = servers
        .iter()
        .map(|server| {
            let (meta, done) = (server.clone(), done.clone());
            tokio::spawn(async move {
                let mut collected = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let blobs = meta.collectable_blobs(2, i64::MAX, 1000).await.unwrap();
                    meta.forget_blobs(&blobs).await.unwrap();
                    meta.delete_expired_jobs(0).await.unwrap();
                    collected.extend(blobs);
                    tokio::task::yield_now().await;
                }
                collected
            })
        })
        .collect();
    let writer = {
        let (meta, org) = (servers[1].clone(), org.clone());
        tokio::spawn(async move {
            for i in 0..64 {
                let outcome = meta
                    .put_object(&org, object(&format!("d/k{}", (i * 7) % FILES), 1, 3), QUOTA)
                    .await;
                assert!(stored(&outcome.unwrap()));
            }
        })
    };
    let downloads = {
        let (meta, org) = (servers[0].clone(), org.clone());
        tokio::spawn(async move {
            let mut jobs = Vec::new();
            for _ in 0..16 {
                let job = meta
                    .create_job(&org, &[key("d")], 1, i64::MAX / 2, JobLimits::NONE)
                    .await
                    .unwrap()
                    .job();
                jobs.push(job.unwrap().id);
            }
            jobs
        })
    };
    writer.await.unwrap();
    let jobs = downloads.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let mut collected: HashSet<BlobId> = HashSet::new();
    for collector in collectors {
        collected.extend(collector.await.unwrap());
    }
    let mut pinned = HashSet::new();
    for job in &jobs {
        let entries = servers[1].job_entries(job).await.unwrap();
        assert_eq!(entries.len(), FILES, "a job covers the whole folder");
        pinned.extend(entries.into_iter().map(|e| e.blob));
    }
    let wrongly: Vec<_> = collected.intersection(&pinned).collect();
    assert!(wrongly.is_empty(), "collected while pinned: {wrongly:?}");
    // Whatever is pinned and no longer current still awaits collection.
    for blob in servers[0].collectable_blobs(i64::MAX, i64::MAX, 1000).await.unwrap() {
        assert!(!collected.contains(&blob), "forgotten blobs do not come back");
    }
    assert_consistent(&*servers[0], &org).await;
}

/// Schema creation is idempotent and safe when several servers start at once.
async fn servers_start_together(fixture: &Fixture) {
    let Backend::Postgres(database) = &fixture.backend else {
        unreachable!()
    };
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = database.url.clone();
            tokio::spawn(async move { PostgresMeta::connect(&url).await.map(|_| ()) })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let error = PostgresMeta::connect("postgres://nobody@127.0.0.1:1/none?connect_timeout=2")
        .await
        .unwrap_err();
    assert!(matches!(error, MetaError::Unavailable(_)), "{error:?}");
    assert!(PostgresMeta::connect("not a url=").await.is_err());
    let closing = PostgresMeta::connect(&database.url).await.unwrap();
    closing.close();
    assert!(matches!(
        closing.usage(&OrgId::generate()).await,
        Err(MetaError::Closed)
    ));
}

async fn console_sessions_and_folder_usage(fixture: &Fixture) {
    let meta = fixture.meta();
    let session = ConsoleSession {
        id_hash: "ab".repeat(32),
        user: UserId(7),
        csrf: "csrf-token".into(),
        token_tag: "tag".into(),
        created: 1_000,
        last_seen: 1_000,
    };
    meta.create_session(&session).await.unwrap();
    assert_eq!(meta.session(&session.id_hash).await.unwrap(), Some(session.clone()));
    assert_eq!(meta.session("unknown").await.unwrap(), None);
    meta.touch_session(&session.id_hash, 5_000).await.unwrap();
    // An older touch (another server's clock) never moves last use backwards.
    meta.touch_session(&session.id_hash, 4_000).await.unwrap();
    assert_eq!(meta.session(&session.id_hash).await.unwrap().unwrap().last_seen, 5_000);
    let other = ConsoleSession {
        id_hash: "cd".repeat(32),
        last_seen: 9_000,
        created: 9_000,
        ..session.clone()
    };
    meta.create_session(&other).await.unwrap();
    // Idle since before 6,000: the first goes, the second stays.
    assert_eq!(meta.delete_stale_sessions(6_000, 0).await.unwrap(), 1);
    assert_eq!(meta.session(&session.id_hash).await.unwrap(), None);
    // Created before 10,000: the second goes too.
    assert_eq!(meta.delete_stale_sessions(0, 10_000).await.unwrap(), 1);
    meta.create_session(&session).await.unwrap();
    assert!(meta.delete_session(&session.id_hash).await.unwrap());
    assert!(!meta.delete_session(&session.id_hash).await.unwrap());

    let org = meta.create_org("figures", None, None, 1).await.unwrap();
    for (k, size) in [("a/b/one", 10), ("a/b/two", 20), ("a/three", 5), ("top", 1)] {
        let new = NewObject {
            md5: format!("md5-of-{k}"),
            ..object(k, size, 2)
        };
        assert!(stored(&meta.put_object(&org, new, QUOTA).await.unwrap()));
    }
    let figures = |files, bytes| Some(Usage { bytes, files });
    assert_eq!(
        meta.folder_usage(&org, &FolderPath::parse("a/b").unwrap())
            .await
            .unwrap(),
        figures(2, 30)
    );
    assert_eq!(
        meta.folder_usage(&org, &FolderPath::parse("a").unwrap()).await.unwrap(),
        figures(3, 35)
    );
    assert_eq!(
        meta.folder_usage(&org, &FolderPath::root()).await.unwrap(),
        figures(4, 36)
    );
    assert_eq!(
        meta.folder_usage(&org, &FolderPath::parse("nope").unwrap())
            .await
            .unwrap(),
        None
    );
    let a = FolderPath::parse("a").unwrap();
    let md5s = meta.file_md5s(&org, &a, "three", "three").await.unwrap();
    assert_eq!(md5s, vec![("three".to_owned(), "md5-of-a/three".to_owned())]);
    // Only files directly in the folder (not `a/b/*`), within the names given.
    assert_eq!(meta.file_md5s(&org, &a, "a", "z").await.unwrap().len(), 1);
    assert!(meta.file_md5s(&org, &a, "u", "z").await.unwrap().is_empty());
    let root = meta.file_md5s(&org, &FolderPath::root(), "", "zzz").await.unwrap();
    assert_eq!(root, vec![("top".to_owned(), "md5-of-top".to_owned())]);
}

/// The S3 fields of an object are stored, read back everywhere an object is read, and replaced
/// (or cleared) by an overwrite.
async fn s3_object_fields(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let mut new = object("d/multi", 12, 5);
    new.etag = Some("\"0123456789abcdef0123456789abcdef-2\"".into());
    new.user_meta = Some(r#"{"colour":"blue","é":"ü"}"#.into());
    assert!(stored(&meta.put_object(&org, new.clone(), QUOTA).await.unwrap()));
    let KeyKind::File(found) = meta.key_kind(&org, &key("d/multi")).await.unwrap() else {
        panic!("a file")
    };
    assert_eq!((&found.etag, &found.user_meta), (&new.etag, &new.user_meta));
    let walked = meta.objects_after(Some((org.clone(), key("d"))), 1).await.unwrap();
    assert_eq!((&walked[0].1.etag, &walked[0].1.user_meta), (&new.etag, &new.user_meta));
    let listed = meta.files_from(&org, "", true, 10).await.unwrap();
    assert_eq!(listed, vec![*found.clone()]);
    let Child::File(child) = &meta
        .children_from(&org, &FolderPath::parse("d").unwrap(), "", true, 10)
        .await
        .unwrap()[0]
    else {
        panic!("a file")
    };
    assert_eq!(child, &*found);
    // A plain overwrite (the QC API's) clears them.
    assert!(stored(
        &meta.put_object(&org, object("d/multi", 3, 6), QUOTA).await.unwrap()
    ));
    let KeyKind::File(plain) = meta.key_kind(&org, &key("d/multi")).await.unwrap() else {
        panic!("a file")
    };
    assert_eq!((plain.etag, plain.user_meta), (None, None));
}

/// A put that asks to store only a new key is refused over an existing file, with nothing changed,
/// and of two such puts racing for one key exactly one stores.
async fn put_if_absent(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let first = object("k", 4, 5);
    assert!(stored(&meta.put_object(&org, first.clone(), QUOTA).await.unwrap()));
    let mut again = object("k", 9, 6);
    again.if_absent = true;
    assert_eq!(
        meta.put_object(&org, again.clone(), QUOTA).await.unwrap(),
        PutOutcome::Refused(PutRefusal::Exists)
    );
    let KeyKind::File(kept) = meta.key_kind(&org, &key("k")).await.unwrap() else {
        panic!("a file")
    };
    assert_eq!((kept.size, kept.blob.clone()), (4, first.blob.clone()));
    assert_eq!(meta.usage(&org).await.unwrap(), Usage { bytes: 4, files: 1 });
    // The key's other refusals come first; a free key is stored.
    meta.put_object(&org, object("f/x", 1, 7), QUOTA).await.unwrap();
    let mut folder = object("f", 1, 8);
    folder.if_absent = true;
    assert_eq!(
        meta.put_object(&org, folder, QUOTA).await.unwrap(),
        PutOutcome::Refused(PutRefusal::IsFolder)
    );
    let mut fresh = object("new", 2, 9);
    fresh.if_absent = true;
    assert_eq!(
        meta.put_object(&org, fresh, QUOTA).await.unwrap(),
        PutOutcome::Stored { replaced: None }
    );
    // Racing: sixteen conditional puts of one key, from two servers where there are two.
    let servers = fixture.two_servers().await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (meta, org) = (servers[i % 2].clone(), org.clone());
        tasks.push(tokio::spawn(async move {
            let mut new = object("race/key", 1, 10);
            new.if_absent = true;
            meta.put_object(&org, new, QUOTA).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| stored(o)).count(), 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| stored(o) || *o == PutOutcome::Refused(PutRefusal::Exists))
    );
    assert_consistent(meta, &org).await;
}

/// The S3 name of a listed child (a folder's with its trailing '/').
fn s3_name(child: &Child) -> String {
    match child {
        Child::File(file) => file.key.name().to_owned(),
        Child::Folder(folder) => format!("{}/", folder.name()),
    }
}

/// What `children_from` must answer, the slow way: the direct children of `folder` among `keys`
/// by their S3 names, in byte order, from `from` on.
fn expected_children(keys: &[&str], folder: &str, from: &str, inclusive: bool, limit: usize) -> Vec<String> {
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let mut names: Vec<String> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(prefix.as_str()))
        .map(|rest| match rest.find('/') {
            Some(i) => rest[..=i].to_owned(),
            None => rest.to_owned(),
        })
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| {
            if inclusive {
                n.as_str() >= from
            } else {
                n.as_str() > from
            }
        })
        .take(limit)
        .collect()
}

/// S3 listings: every file from a key on in byte order, and a folder's children merged by their
/// S3 names ('/' sorts after '-' and '.', before '0'), from any point, inside or between entries.
async fn s3_listings_in_byte_order(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let other = meta.create_org("u", None, None, 1).await.unwrap();
    let keys = [
        "a-b", "a/x", "a/y", "a0", "a.b/c", "a-c/d", "a b", "B", "é", "éa/x", "ü/z", "z", "d/e/f", "a-/q", "a/x-1",
        "a/x.d/f", "a/x0", "a-c-/k",
    ];
    for k in keys {
        assert!(
            stored(&meta.put_object(&org, object(k, 1, 5), QUOTA).await.unwrap()),
            "{k}"
        );
    }
    meta.put_object(&other, object("a-a", 1, 5), QUOTA).await.unwrap();
    let mut sorted = keys.to_vec();
    sorted.sort();
    let names = |files: Vec<ObjectMeta>| files.into_iter().map(|f| f.key.to_string()).collect::<Vec<_>>();
    assert_eq!(names(meta.files_from(&org, "", true, 100).await.unwrap()), sorted);
    assert_eq!(
        names(meta.files_from(&org, "a/", true, 3).await.unwrap()),
        ["a/x", "a/x-1", "a/x.d/f"]
    );
    assert_eq!(
        names(meta.files_from(&org, "a/x", false, 2).await.unwrap()),
        ["a/x-1", "a/x.d/f"]
    );
    assert_eq!(names(meta.files_from(&org, "a/x", true, 1).await.unwrap()), ["a/x"]);
    assert_eq!(
        names(meta.files_from(&org, "ü/z", false, 5).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        names(meta.files_from(&org, "é", false, 5).await.unwrap()),
        ["éa/x", "ü/z"]
    );
    assert!(meta.files_from(&org, "", true, 0).await.unwrap().is_empty());

    let mut froms: Vec<String> = [
        "", "a", "a/", "a-", "a-c", "a-c/", "a-c-", "a-c-/", "a.", "a0", "zz", "é", "éa/", "ü",
    ]
    .map(String::from)
    .to_vec();
    for folder in ["", "a"] {
        froms.extend(expected_children(&keys, folder, "", true, 100));
        for from in &froms {
            for inclusive in [true, false] {
                for limit in [1, 2, 3, 100] {
                    let got = meta
                        .children_from(&org, &FolderPath::parse(folder).unwrap(), from, inclusive, limit)
                        .await
                        .unwrap();
                    assert_eq!(
                        got.iter().map(s3_name).collect::<Vec<_>>(),
                        expected_children(&keys, folder, from, inclusive, limit),
                        "{folder:?} from {from:?} inclusive {inclusive} limit {limit}"
                    );
                }
            }
        }
    }
    let root = meta
        .children_from(&org, &FolderPath::root(), "", true, 100)
        .await
        .unwrap();
    assert_eq!(
        root.iter().map(s3_name).collect::<Vec<_>>(),
        [
            "B", "a b", "a-/", "a-b", "a-c-/", "a-c/", "a.b/", "a/", "a0", "d/", "z", "é", "éa/", "ü/"
        ]
    );
    assert!(matches!(&root[7], Child::Folder(f) if f.as_str() == "a"));
    assert!(matches!(&root[5], Child::Folder(f) if f.as_str() == "a-c"));
    assert!(matches!(&root[0], Child::File(f) if f.key.as_str() == "B" && f.size == 1));
    let inside = meta
        .children_from(&org, &FolderPath::parse("d").unwrap(), "", true, 10)
        .await
        .unwrap();
    assert!(matches!(&inside[..], [Child::Folder(f)] if f.as_str() == "d/e"));
    assert!(
        meta.children_from(&org, &FolderPath::parse("nowhere").unwrap(), "", true, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        meta.children_from(&org, &FolderPath::root(), "", true, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A chain of folders each named after the previous one plus '-' is listed longest first, even
/// when the chain is longer than one read of folder rows.
async fn s3_listings_of_long_prefix_chains(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let mut keys = Vec::new();
    for n in 0..20 {
        keys.push(format!("c{}/x", "-".repeat(n)));
    }
    keys.push("c0".into());
    keys.push("b".into());
    for k in &keys {
        assert!(stored(&meta.put_object(&org, object(k, 1, 5), QUOTA).await.unwrap()));
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    for (from, inclusive) in [
        ("", true),
        ("c-----", true),
        ("c-----/", true),
        ("c-----/", false),
        ("c/", false),
    ] {
        for limit in [1, 5, 30] {
            let got = meta
                .children_from(&org, &FolderPath::root(), from, inclusive, limit)
                .await
                .unwrap();
            assert_eq!(
                got.iter().map(s3_name).collect::<Vec<_>>(),
                expected_children(&keys, "", from, inclusive, limit),
                "from {from:?} inclusive {inclusive} limit {limit}"
            );
        }
    }
}

fn new_upload(org: &OrgId, id: &str, key: &str, created: Millis) -> MultipartUpload {
    MultipartUpload {
        id: id.into(),
        org: org.clone(),
        key: Key::parse(key).unwrap(),
        user: UserId(7),
        created,
        mime: "application/x-test".into(),
        user_meta: Some(r#"{"k":"v"}"#.into()),
    }
}

fn part(number: u32, size: u64) -> PartRecord {
    PartRecord {
        number,
        blob: BlobId::generate(),
        size,
        md5: format!("md5-of-part-{number}"),
        modified: 5,
    }
}

/// Every blob awaiting collection (nothing pins any).
async fn garbage(meta: &dyn MetaStore) -> Vec<BlobId> {
    meta.collectable_blobs(i64::MAX, i64::MAX, 1000).await.unwrap()
}

/// Parts are recorded, replaced (the old blob awaits collection), listed, and referenced while
/// their rows exist; completing puts the object and removes every part; aborting removes them too.
async fn multipart_parts_complete_and_abort(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let other = meta.create_org("u", None, None, 1).await.unwrap();
    let upload = new_upload(&org, "up1", "big/file", 3);
    meta.create_upload(&upload).await.unwrap();
    assert_eq!(meta.upload(&org, "up1").await.unwrap(), Some(upload.clone()));
    assert_eq!(
        meta.upload(&other, "up1").await.unwrap(),
        None,
        "another organization's"
    );
    assert_eq!(meta.upload(&org, "nope").await.unwrap(), None);

    let (one, two) = (part(1, 10), part(2, 20));
    for p in [&one, &two] {
        assert_eq!(
            meta.put_part(&org, "up1", p, QUOTA).await.unwrap(),
            PartOutcome::Stored { replaced: None }
        );
    }
    assert_eq!(
        meta.put_part(&org, "nope", &part(1, 1), QUOTA).await.unwrap(),
        PartOutcome::NoSuchUpload
    );
    assert_eq!(
        meta.put_part(&other, "up1", &part(1, 1), QUOTA).await.unwrap(),
        PartOutcome::NoSuchUpload
    );
    let new_one = part(1, 5);
    assert_eq!(
        meta.put_part(&org, "up1", &new_one, QUOTA).await.unwrap(),
        PartOutcome::Stored {
            replaced: Some(one.blob.clone())
        }
    );
    assert_eq!(garbage(meta).await, vec![one.blob.clone()], "the replaced part's blob");
    assert_eq!(
        meta.parts(&org, "up1", 0, 10).await.unwrap(),
        [new_one.clone(), two.clone()]
    );
    assert_eq!(meta.parts(&org, "up1", 1, 10).await.unwrap(), vec![two.clone()]);
    assert_eq!(meta.parts(&org, "up1", 0, 1).await.unwrap(), vec![new_one.clone()]);
    assert!(meta.parts(&org, "up1", 2, 10).await.unwrap().is_empty());
    assert!(meta.parts(&other, "up1", 0, 10).await.unwrap().is_empty());
    // Pending parts are referenced: the orphan sweep and fsck leave them alone.
    let stray = BlobId::generate();
    assert_eq!(
        meta.unreferenced_blobs(&[new_one.blob.clone(), stray.clone(), two.blob.clone()])
            .await
            .unwrap(),
        vec![stray.clone()]
    );

    let mut object = object("big/file", 25, 9);
    object.etag = Some("\"abc-2\"".into());
    object.user_meta = upload.user_meta.clone();
    assert_eq!(
        meta.complete_upload(&org, "up1", object.clone(), QUOTA).await.unwrap(),
        CompleteOutcome::Stored { replaced: None }
    );
    assert_eq!(meta.upload(&org, "up1").await.unwrap(), None);
    assert!(meta.parts(&org, "up1", 0, 10).await.unwrap().is_empty());
    let KeyKind::File(stored_object) = meta.key_kind(&org, &key("big/file")).await.unwrap() else {
        panic!("a file")
    };
    assert_eq!(
        (stored_object.size, &stored_object.blob, &stored_object.etag),
        (25, &object.blob, &object.etag)
    );
    assert_eq!(meta.usage(&org).await.unwrap(), Usage { bytes: 25, files: 1 });
    let mut collectable = garbage(meta).await;
    collectable.sort();
    let mut expected = vec![one.blob.clone(), new_one.blob.clone(), two.blob.clone()];
    expected.sort();
    assert_eq!(collectable, expected, "every part's blob awaits collection");
    assert_eq!(
        meta.complete_upload(&org, "up1", object, QUOTA).await.unwrap(),
        CompleteOutcome::NoSuchUpload
    );
    assert_consistent(meta, &org).await;

    // Aborting.
    meta.create_upload(&new_upload(&org, "up2", "x", 4)).await.unwrap();
    let three = part(3, 7);
    meta.put_part(&org, "up2", &three, QUOTA).await.unwrap();
    assert!(!meta.abort_upload(&other, "up2").await.unwrap());
    assert!(meta.abort_upload(&org, "up2").await.unwrap());
    assert!(!meta.abort_upload(&org, "up2").await.unwrap());
    assert_eq!(meta.upload(&org, "up2").await.unwrap(), None);
    assert!(garbage(meta).await.contains(&three.blob));

    // Deleting a bucket with a pending upload (and no object) ends the upload.
    meta.create_upload(&new_upload(&other, "up3", "y", 4)).await.unwrap();
    let four = part(1, 3);
    meta.put_part(&other, "up3", &four, QUOTA).await.unwrap();
    assert_eq!(meta.delete_empty_org(&other).await.unwrap(), OrgDeletion::Deleted);
    assert!(garbage(meta).await.contains(&four.blob));
    assert!(meta.parts(&other, "up3", 0, 10).await.unwrap().is_empty());
}

/// Pending parts count against the byte quota of parts and of puts; a completion counts its
/// object instead of its parts, and a refused completion leaves the upload as it was.
async fn multipart_quota(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let quota = Quota {
        max_bytes: 100,
        max_files: 10,
    };
    assert!(stored(&meta.put_object(&org, object("a", 30, 5), quota).await.unwrap()));
    meta.create_upload(&new_upload(&org, "u", "c", 5)).await.unwrap();
    assert!(matches!(
        meta.put_part(&org, "u", &part(1, 50), quota).await.unwrap(),
        PartOutcome::Stored { .. }
    ));
    let over = QuotaExceeded::Bytes {
        used: 80,
        limit: 100,
        added: 21,
    };
    assert_eq!(
        meta.put_part(&org, "u", &part(2, 21), quota).await.unwrap(),
        PartOutcome::Quota(over)
    );
    assert_eq!(
        meta.put_object(&org, object("b", 21, 6), quota).await.unwrap(),
        PutOutcome::Refused(PutRefusal::Quota(over)),
        "a QC upload cannot take the room pending parts hold"
    );
    assert!(stored(&meta.put_object(&org, object("b", 20, 6), quota).await.unwrap()));
    // A smaller part in place of a larger one frees room.
    assert!(matches!(
        meta.put_part(&org, "u", &part(1, 40), quota).await.unwrap(),
        PartOutcome::Stored { replaced: Some(_) }
    ));
    // Stored 50 + pending 40: completing into a 40-byte object fits (the parts no longer count).
    assert_eq!(
        meta.complete_upload(&org, "u", object("c", 40, 7), quota)
            .await
            .unwrap(),
        CompleteOutcome::Stored { replaced: None }
    );
    assert_eq!(meta.usage(&org).await.unwrap(), Usage { bytes: 90, files: 3 });
    meta.create_upload(&new_upload(&org, "v", "e", 5)).await.unwrap();
    assert!(matches!(
        meta.put_part(&org, "v", &part(1, 10), quota).await.unwrap(),
        PartOutcome::Stored { .. }
    ));
    // Refusals leave the upload, its parts and its pending bytes.
    assert_eq!(
        meta.complete_upload(&org, "v", object("e", 11, 8), quota)
            .await
            .unwrap(),
        CompleteOutcome::Refused(PutRefusal::Quota(QuotaExceeded::Bytes {
            used: 90,
            limit: 100,
            added: 11
        }))
    );
    assert_eq!(
        meta.complete_upload(&org, "v", object("c/x", 1, 8), quota)
            .await
            .unwrap(),
        CompleteOutcome::Refused(PutRefusal::AncestorIsFile("c".into()))
    );
    let mut if_absent = object("a", 1, 8);
    if_absent.if_absent = true;
    assert_eq!(
        meta.complete_upload(&org, "v", if_absent, quota).await.unwrap(),
        CompleteOutcome::Refused(PutRefusal::Exists)
    );
    assert_eq!(meta.parts(&org, "v", 0, 10).await.unwrap().len(), 1);
    assert!(matches!(
        meta.put_object(&org, object("f", 1, 9), quota).await.unwrap(),
        PutOutcome::Refused(PutRefusal::Quota(QuotaExceeded::Bytes { used: 100, .. }))
    ));
    assert_eq!(
        meta.complete_upload(&org, "v", object("e", 10, 9), quota)
            .await
            .unwrap(),
        CompleteOutcome::Stored { replaced: None }
    );
    assert_eq!(meta.usage(&org).await.unwrap(), Usage { bytes: 100, files: 4 });
    // Nothing pending any more: an overwrite that does not grow fits, one byte more does not.
    assert!(stored(
        &meta.put_object(&org, object("e", 10, 10), quota).await.unwrap()
    ));
    meta.delete(&org, &key("a")).await.unwrap();
    assert!(stored(
        &meta.put_object(&org, object("g", 30, 11), quota).await.unwrap()
    ));
    assert_consistent(meta, &org).await;

    // Racing parts (from two servers where there are two) never overshoot: 100 bytes of room
    // hold three 30-byte parts.
    let org = meta.create_org("r", None, None, 1).await.unwrap();
    meta.create_upload(&new_upload(&org, "w", "k", 5)).await.unwrap();
    let servers = fixture.two_servers().await;
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let (meta, org) = (servers[i as usize % 2].clone(), org.clone());
        tasks.push(tokio::spawn(async move {
            meta.put_part(&org, "w", &part(i + 1, 30), quota).await.unwrap()
        }));
    }
    let mut recorded = 0;
    for task in tasks {
        match task.await.unwrap() {
            PartOutcome::Stored { .. } => recorded += 1,
            PartOutcome::Quota(QuotaExceeded::Bytes { used, .. }) => assert!(used <= 100),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(recorded, 3);
    assert!(meta.abort_upload(&org, "w").await.unwrap());
    assert!(
        stored(&meta.put_object(&org, object("k", 100, 6), quota).await.unwrap()),
        "nothing pending"
    );
}

/// Pending uploads are listed by (key, id) in byte order within a prefix and after a marker, and
/// the oldest come first for expiry.
async fn multipart_listing_and_expiry(fixture: &Fixture) {
    let meta = fixture.meta();
    let org = meta.create_org("t", None, None, 1).await.unwrap();
    let other = meta.create_org("u", None, None, 1).await.unwrap();
    for (id, k, created) in [
        ("2", "b/x", 10),
        ("9", "a", 20),
        ("1", "b/x", 30),
        ("0", "b/y", 40),
        ("5", "c", 50),
        ("3", "b-z", 60),
    ] {
        meta.create_upload(&new_upload(&org, id, k, created)).await.unwrap();
    }
    meta.create_upload(&new_upload(&other, "7", "b/z", 25)).await.unwrap();
    let listed = |uploads: Vec<MultipartUpload>| -> Vec<(String, String)> {
        uploads.into_iter().map(|u| (u.key.to_string(), u.id)).collect()
    };
    let pairs = |raw: &[(&str, &str)]| -> Vec<(String, String)> {
        raw.iter().map(|(k, i)| (k.to_string(), i.to_string())).collect()
    };
    assert_eq!(
        listed(meta.list_uploads(&org, "", None, 10).await.unwrap()),
        pairs(&[
            ("a", "9"),
            ("b-z", "3"),
            ("b/x", "1"),
            ("b/x", "2"),
            ("b/y", "0"),
            ("c", "5")
        ])
    );
    assert_eq!(
        listed(meta.list_uploads(&org, "b/", None, 10).await.unwrap()),
        pairs(&[("b/x", "1"), ("b/x", "2"), ("b/y", "0")])
    );
    assert_eq!(
        listed(meta.list_uploads(&org, "b/", Some(("b/x", "1")), 10).await.unwrap()),
        pairs(&[("b/x", "2"), ("b/y", "0")])
    );
    assert_eq!(
        listed(meta.list_uploads(&org, "b", Some(("b/x", "2")), 1).await.unwrap()),
        pairs(&[("b/y", "0")])
    );
    assert_eq!(
        listed(meta.list_uploads(&org, "b/", None, 1).await.unwrap()),
        pairs(&[("b/x", "1")])
    );
    assert!(
        meta.list_uploads(&org, "b/x", Some(("b/x", "2")), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(meta.list_uploads(&org, "d", None, 10).await.unwrap().is_empty());
    let all = meta.list_uploads(&org, "a", None, 10).await.unwrap();
    assert_eq!(all, [new_upload(&org, "9", "a", 20)], "every field read back");

    assert_eq!(
        meta.expired_uploads(35, 10).await.unwrap(),
        [
            (org.clone(), "2".to_string()),
            (org.clone(), "9".to_string()),
            (other.clone(), "7".to_string()),
            (org.clone(), "1".to_string())
        ]
    );
    assert_eq!(
        meta.expired_uploads(35, 1).await.unwrap(),
        [(org.clone(), "2".to_string())]
    );
    assert!(meta.expired_uploads(10, 10).await.unwrap().is_empty());
}

// --- one module of tests per backend ---

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Declares `mod $backend` with one test per listed fn: `async` ones take `&Fixture`, `blocking`
/// ones (proptest drives its own loop) take the runtime too.
macro_rules! backend_suite {
    ($backend:ident, $open:path, async [$($test:ident),* $(,)?], blocking [$($blocking:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    if let Some(fixture) = $open().await {
                        super::$test(&fixture).await;
                    }
                }
            )*
            $(
                #[test]
                fn $blocking() {
                    let runtime = runtime();
                    if let Some(fixture) = runtime.block_on($open()) {
                        super::$blocking(&runtime, &fixture);
                        runtime.block_on(async move { drop(fixture) });
                    }
                }
            )*
        }
    };
}

backend_suite!(
    sqlite,
    Fixture::sqlite,
    async [
        conflicts_quota_and_listing,
        listing_pages_match_offset_windows,
        byte_order_and_prefix_ranges,
        jobs_pin_blobs_until_they_expire,
        released_bodies_wait_for_the_cutoff,
        standing_reads_user_and_membership,
        jobs_are_bounded,
        concurrent_writers_never_overshoot,
        concurrent_puts_get_their_own_outcomes,
        a_failed_batch_fails_its_puts_and_nothing_else,
        organizations_users_and_members,
        bucket_names,
        s3_keys,
        fsck_walks_objects_and_repairs_folders,
        jobs_race_overwrites_and_collection,
        first_identities_are_created_once,
        console_sessions_and_folder_usage,
        s3_object_fields,
        put_if_absent,
        s3_listings_in_byte_order,
        s3_listings_of_long_prefix_chains,
        multipart_parts_complete_and_abort,
        multipart_quota,
        multipart_listing_and_expiry,
    ],
    blocking [folder_rows_match_objects]
);

backend_suite!(
    postgres,
    Fixture::postgres,
    async [
        conflicts_quota_and_listing,
        listing_pages_match_offset_windows,
        byte_order_and_prefix_ranges,
        jobs_pin_blobs_until_they_expire,
        released_bodies_wait_for_the_cutoff,
        standing_reads_user_and_membership,
        jobs_are_bounded,
        concurrent_writers_never_overshoot,
        concurrent_puts_get_their_own_outcomes,
        a_failed_batch_fails_its_puts_and_nothing_else,
        organizations_users_and_members,
        bucket_names,
        s3_keys,
        fsck_walks_objects_and_repairs_folders,
        jobs_race_overwrites_and_collection,
        two_servers_never_overshoot,
        two_servers_overwrite_one_key,
        servers_start_together,
        first_identities_are_created_once,
        console_sessions_and_folder_usage,
        s3_object_fields,
        put_if_absent,
        s3_listings_in_byte_order,
        s3_listings_of_long_prefix_chains,
        multipart_parts_complete_and_abort,
        multipart_quota,
        multipart_listing_and_expiry,
    ],
    blocking [folder_rows_match_objects, behaves_like_sqlite]
);

#[test]
fn database_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h:1/db?sslmode=disable", "x"),
        "postgres://u:p@h:1/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}
