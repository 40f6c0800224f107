//! Stores written by stowage v0.1.0 (`tests/fixtures/`, made by `make_fixtures.py` with that
//! release) open with this binary: their schemas are brought to the newest version, every object
//! reads back byte for byte with the old credentials through the API, folders list with their
//! sizes, usage and quotas are as v0.1.0 left them, permissions still hold, and `stowage fsck`
//! finds nothing.
//!
//! The embedded fixture runs on every backend setting (it is a data directory); the PostgreSQL
//! one runs with `STOWAGE_TEST_BACKEND=postgres-s3`: its dump is restored into a fresh database
//! and its bodies are uploaded into a fresh key prefix of the test bucket, both removed at the end.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Client, Options, TestServer, required};
use md5::{Digest, Md5};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_stowage");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn manifest(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("manifest JSON")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read fixture").flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// Runs a `stowage` subcommand on the server's stores; returns (success, stdout, stderr).
fn stowage(server: &TestServer, env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(server.data_dir())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run stowage");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

fn user_client(server: &TestServer, manifest: &Value, name: &str, org: &str) -> Client {
    let user = manifest["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no user {name} in the manifest"));
    server.client_for(
        &user["userId"].to_string(),
        user["apiToken"].as_str().expect("apiToken"),
        org,
    )
}

/// The name of a user who may read `org`.
fn reader_of(manifest: &Value, org: &Value) -> String {
    let member = org["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["permissions"].as_str().is_some_and(|p| p.contains("read")))
        .expect("a reader");
    let user = manifest["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["userId"] == member["userId"])
        .expect("the member is a user");
    user["name"].as_str().expect("name").to_owned()
}

/// What listing `folder` ("" = the root) must show, by name: child folders with the bytes under
/// them, and child files with their sizes.
fn expected_listing(objects: &BTreeMap<String, u64>, folder: &str) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let (mut folders, mut files) = (BTreeMap::new(), BTreeMap::new());
    for (key, size) in objects {
        let Some(rest) = key.strip_prefix(&prefix) else {
            continue;
        };
        match rest.split_once('/') {
            Some((child, _)) => *folders.entry(child.to_owned()).or_insert(0) += size,
            None => {
                files.insert(rest.to_owned(), *size);
            }
        }
    }
    (folders, files)
}

/// Everything a v0.1.0 store must still show, checked through the API and the admin CLI.
async fn check_store(server: &TestServer, env: &[(String, String)], manifest: &Value) {
    // Every user still authenticates with the token v0.1.0 gave them.
    for user in manifest["users"].as_array().expect("users") {
        let org = manifest["organizations"][0]["organizationId"].as_str().expect("org id");
        let client = user_client(server, manifest, user["name"].as_str().expect("name"), org);
        client.authenticate().await.ok();
    }
    for org in manifest["organizations"].as_array().expect("organizations") {
        let id = org["organizationId"].as_str().expect("org id");
        let client = user_client(server, manifest, &reader_of(manifest, org), id);
        let objects: BTreeMap<String, u64> = org["objects"]
            .as_object()
            .expect("objects")
            .iter()
            .map(|(key, meta)| (key.clone(), meta["size"].as_u64().expect("size")))
            .collect();

        // Byte for byte, and the stored md5 and size.
        let keys: Vec<&String> = objects.keys().collect();
        let bodies = client.download(json!(keys)).await;
        assert_eq!(
            bodies.keys().collect::<Vec<_>>(),
            keys,
            "every object of {id} downloads"
        );
        for (key, meta) in org["objects"].as_object().expect("objects") {
            let body = &bodies[key];
            assert_eq!(body.len() as u64, meta["size"].as_u64().expect("size"), "{key}");
            assert_eq!(md5_hex(body), meta["md5"].as_str().expect("md5"), "{key}");
            let properties = client.properties(key).await;
            assert_eq!(properties["md5"], meta["md5"], "{key}: {properties}");
            assert_eq!(properties["size"], meta["size"], "{key}: {properties}");
        }
        for deleted in org["deleted"].as_array().expect("deleted") {
            let key = deleted.as_str().expect("key");
            let errors = client.fails("object/properties", json!({ "key": key })).await;
            assert_eq!(errors, [format!("Object not found: {key}")]);
        }

        // Every folder lists its children with their sizes; the root carries the usage.
        let mut folders: BTreeSet<String> = BTreeSet::from([String::new()]);
        for key in objects.keys() {
            let mut path = key.as_str();
            while let Some((parent, _)) = path.rsplit_once('/') {
                folders.insert(parent.to_owned());
                path = parent;
            }
        }
        for folder in &folders {
            let listing = client.list(Some(folder.as_str()).filter(|f| !f.is_empty())).await;
            let (child_folders, child_files) = expected_listing(&objects, folder);
            let mut seen_folders = BTreeMap::new();
            let mut seen_files = BTreeMap::new();
            for entry in listing["objects"].as_array().expect("objects") {
                let key = entry["name"].as_str().expect("name").to_owned();
                let size = entry["size"].as_u64().expect("size");
                if entry["isFolder"] == true {
                    seen_folders.insert(key, size);
                } else {
                    seen_files.insert(key, size);
                }
            }
            assert_eq!(seen_folders, child_folders, "folders of {folder:?} in {id}: {listing}");
            assert_eq!(seen_files, child_files, "files of {folder:?} in {id}: {listing}");
            assert_eq!(listing["objectStorageUsed"], org["usedBytes"], "{listing}");
        }
    }

    // Usage and quotas as v0.1.0 left them.
    let (ok, out, err) = stowage(server, env, &["admin", "--json", "org", "list"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("org list JSON");
    for org in manifest["organizations"].as_array().expect("organizations") {
        let entry = listed
            .as_array()
            .expect("list")
            .iter()
            .find(|o| o["organizationId"] == org["organizationId"])
            .unwrap_or_else(|| panic!("{} is listed: {listed}", org["name"]));
        assert_eq!(entry["name"], org["name"]);
        assert_eq!(entry["usedBytes"], org["usedBytes"], "{entry}");
        assert_eq!(entry["usedFiles"], org["usedFiles"], "{entry}");
        let default_bytes = json!(10u64 * 1024 * 1024 * 1024);
        let max_bytes = if org["maxBytes"].is_null() {
            &default_bytes
        } else {
            &org["maxBytes"]
        };
        assert_eq!(&entry["maxBytes"], max_bytes, "{entry}");
        let max_files = if org["maxFiles"].is_null() {
            json!(10_000)
        } else {
            org["maxFiles"].clone()
        };
        assert_eq!(entry["maxFiles"], max_files, "{entry}");
    }

    // The store's first user (the one v0.1.0's first start created) became a server
    // administrator; nobody else did; no organization has a bucket name yet.
    let (ok, out, err) = stowage(server, env, &["admin", "--json", "user", "list"]);
    assert!(ok, "{err}");
    let users: Value = serde_json::from_str(&out).expect("user list JSON");
    let lowest = manifest["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["userId"].as_i64())
        .min()
        .expect("a user");
    for user in users.as_array().expect("list") {
        assert_eq!(user["serverAdmin"], json!(user["userId"] == json!(lowest)), "{users}");
    }
    assert!(
        listed.as_array().expect("list").iter().all(|o| o["bucket"].is_null()),
        "{listed}"
    );

    // Memberships keep their permissions: bob only reads the first organization.
    let first = manifest["organizations"][0]["organizationId"].as_str().expect("org id");
    let bob = user_client(server, manifest, "bob", first);
    let errors = bob.set_raw("new-key", b"x").await.failure();
    assert_eq!(errors, [common::DENY_WRITE]);

    // The store checks clean.
    let (ok, out, err) = stowage(server, env, &["fsck", "--json"]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    assert!(ok, "{report} {err}");
    assert_eq!(report["problems"], json!([]), "{report}");

    // The schemas were brought to the newest version.
    let (ok, out, err) = stowage(server, env, &["admin", "--json", "schema"]);
    assert!(ok, "{err}");
    let schema: Value = serde_json::from_str(&out).expect("schema JSON");
    assert_eq!(schema["metadata"]["version"], schema["metadata"]["newest"], "{schema}");
    if !schema["smallBodies"].is_null() {
        assert_eq!(
            schema["smallBodies"]["version"], schema["smallBodies"]["newest"],
            "{schema}"
        );
    }
}

#[tokio::test]
async fn a_v0_1_0_data_directory_opens_and_serves_everything() {
    let source = fixture("v0.1.0-embedded");
    let manifest = manifest(&source);
    let home = tempfile::tempdir().expect("temp dir");
    copy_dir(&source.join("data"), &home.path().join("data"));
    // v0.1.0 wrote no version marker in the small-body table.
    let small = home.path().join("data/blobs/small.sqlite3");
    assert_eq!(sqlite_marker(&small), 0);
    let server = TestServer::start_in(home, Options::new().env("STOWAGE_GC_INTERVAL_SECS", 3600));
    // An existing store creates no first identities; it only reminds where the v0.1.0 start
    // left the first credentials.
    assert!(
        !server
            .banner
            .iter()
            .any(|line| line.contains("created the first organization")),
        "no first start on an existing store: {:?}",
        server.banner
    );
    assert!(
        server
            .banner
            .iter()
            .any(|line| line.contains("initial-credentials.json")),
        "the reminder of the first credentials: {:?}",
        server.banner
    );
    assert_eq!(sqlite_marker(&server.data_dir().join("blobs/small.sqlite3")), 1);
    check_store(&server, &[], &manifest).await;
}

fn sqlite_marker(path: &Path) -> u32 {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("user_version")
}

/// A database and a key prefix of their own, removed on drop (even after a failed assertion).
struct PostgresS3 {
    admin_url: String,
    database: String,
    env: Vec<(String, String)>,
    store: object_store::aws::AmazonS3,
    prefix: String,
}

impl PostgresS3 {
    fn create() -> PostgresS3 {
        let admin_url = required("STOWAGE_TEST_POSTGRES_URL");
        let name = format!("stowage_upgrade_{}_{}", std::process::id(), common::now_ms());
        psql(&admin_url, &["-c", &format!("CREATE DATABASE {name}")]);
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(required("STOWAGE_TEST_S3_ENDPOINT"))
            .with_bucket_name(required("STOWAGE_TEST_S3_BUCKET"))
            .with_access_key_id(required("STOWAGE_TEST_S3_ACCESS_KEY"))
            .with_secret_access_key(required("STOWAGE_TEST_S3_SECRET_KEY"))
            .with_region("us-east-1")
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .expect("S3 settings");
        let mut env = common::postgres_s3_env(&admin_url, &name);
        env.push(("STOWAGE_GC_INTERVAL_SECS".into(), "3600".into()));
        PostgresS3 {
            admin_url,
            database: name.clone(),
            env,
            store,
            prefix: name,
        }
    }

    fn url(&self) -> &str {
        &self.env[0].1
    }

    /// Uploads `<dir>/<shard>/<id>` to `<prefix>/blobs/<shard>/<id>`.
    async fn upload_blobs(&self, dir: &Path) -> usize {
        use object_store::ObjectStoreExt;
        let mut n = 0;
        for shard in std::fs::read_dir(dir).expect("fixture blobs").flatten() {
            for blob in std::fs::read_dir(shard.path()).expect("shard").flatten() {
                let path = object_store::path::Path::from(format!(
                    "{}/blobs/{}/{}",
                    self.prefix,
                    shard.file_name().to_string_lossy(),
                    blob.file_name().to_string_lossy()
                ));
                let body = std::fs::read(blob.path()).expect("fixture blob");
                self.store.put(&path, body.into()).await.expect("upload a fixture blob");
                n += 1;
            }
        }
        n
    }
}

fn psql(url: &str, args: &[&str]) {
    let output = Command::new("psql")
        .args([url, "-q", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .output()
        .expect("run psql (installed with PostgreSQL)");
    assert!(
        output.status.success(),
        "psql {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Drop for PostgresS3 {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.admin_url.as_str(),
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
            ])
            .output();
        let (store, prefix) = (self.store.clone(), self.prefix.clone());
        // Drop may run inside the test's runtime, which cannot be blocked on.
        let _ = std::thread::spawn(move || {
            use futures::{StreamExt, TryStreamExt};
            use object_store::ObjectStore;
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let prefix = object_store::path::Path::from(prefix);
                let listed = store.list(Some(&prefix)).map_ok(|meta| meta.location).boxed();
                let _ = store.delete_stream(listed).collect::<Vec<_>>().await;
            })
        })
        .join();
    }
}

#[tokio::test]
async fn a_v0_1_0_postgres_dump_with_its_s3_bodies_opens_and_serves_everything() {
    if common::backend() != "postgres-s3" {
        eprintln!("note: the PostgreSQL fixture runs with STOWAGE_TEST_BACKEND=postgres-s3");
        return;
    }
    let source = fixture("v0.1.0-postgres");
    let manifest = manifest(&source);
    let stores = PostgresS3::create();
    let dump = source.join("dump.sql");
    psql(stores.url(), &["-f", dump.to_str().expect("UTF-8 path")]);
    let uploaded = stores.upload_blobs(&source.join("blobs")).await;
    assert!(uploaded > 0, "the fixture carries bodies");
    let home = tempfile::tempdir().expect("temp dir");
    copy_dir(&source.join("data"), &home.path().join("data"));
    let mut options = Options::new();
    for (name, value) in &stores.env {
        options = options.env(name, value);
    }
    let server = TestServer::start_in(home, options);
    // An existing store creates no first identities.
    assert!(
        !server
            .banner
            .iter()
            .any(|line| line.contains("created the first organization")),
        "no first start on an existing store: {:?}",
        server.banner
    );
    check_store(&server, &stores.env, &manifest).await;
}
