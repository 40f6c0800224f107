//! `stowage backup` and `stowage restore` against a running server on the run's backend (the
//! embedded store, or PostgreSQL + S3): a backup taken while 8 writers overwrite and delete and
//! collection runs every second holds every acknowledged object with its md5, is fsck-clean and
//! serves; a second run is incremental; a run killed midway leaves the previous backup whole; a
//! restore serves the old credentials.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const WRITERS: usize = 8;
const KEYS_PER_WRITER: usize = 30;

/// `stowage ARGS` with exactly the given `STOWAGE_*` settings.
fn command(env: &[(String, String)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stowage"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STOWAGE_") {
            command.env_remove(&name);
        }
    }
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
}

fn stowage(env: &[(String, String)], args: &[&str]) -> Output {
    command(env, args).output().expect("run stowage")
}

/// `stowage backup --json`: the report, or a panic with what it printed.
fn backup(env: &[(String, String)], data: &Path, to: &Path) -> Value {
    let out = stowage(
        env,
        &[
            "backup",
            "--json",
            "--data-dir",
            &data.display().to_string(),
            "--to",
            &to.display().to_string(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backup failed: {stderr}");
    assert!(
        stderr.contains("backed up "),
        "the summary line is always printed: {stderr}"
    );
    eprintln!("{}", stderr.trim());
    serde_json::from_slice(&out.stdout).expect("backup report")
}

fn fsck_clean(data: &Path) {
    let out = stowage(
        &[],
        &["fsck", "--verify-content", "--data-dir", &data.display().to_string()],
    );
    assert!(
        out.status.success(),
        "fsck --verify-content on {}: {}{}",
        data.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One operation of a writer on one key: the body's md5 (None: a delete), and when it was sent
/// and answered.
#[derive(Clone, Debug)]
struct Op {
    md5: Option<String>,
    sent: Instant,
    acked: Instant,
}

fn body(rng: &mut impl Rng) -> Vec<u8> {
    // Half small bodies (the small-body table on the embedded store), half files.
    let len = if rng.gen_bool(0.5) {
        rng.gen_range(1..4000)
    } else {
        rng.gen_range(20_000..120_000)
    };
    (0..len).map(|_| rng.r#gen::<u8>()).collect()
}

async fn writer(client: Client, id: usize, stop: Arc<AtomicBool>) -> BTreeMap<String, Vec<Op>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(id as u64);
    let mut history: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    let mut op = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w{id}/k{}", rng.gen_range(0..KEYS_PER_WRITER));
        let sent = Instant::now();
        let md5 = if rng.gen_bool(0.2) {
            let reply = client.post_json("object/delete", json!({ "key": key })).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            None
        } else {
            let data = body(&mut rng);
            client.set(&key, &data).await;
            Some(md5_hex(&data))
        };
        history.entry(key).or_default().push(Op {
            md5,
            sent,
            acked: Instant::now(),
        });
        op += 1;
        if op > 100_000 {
            break;
        }
    }
    history
}

/// Every object in the store `client` reaches, key → md5, read through a download job.
async fn contents(client: &Client) -> BTreeMap<String, String> {
    let folders: Vec<String> = (0..WRITERS).map(|i| format!("w{i}")).chain(["fixed".into()]).collect();
    let listing = client.post_json("object/get", json!({ "keys": folders })).await;
    if listing.body["success"] != json!(true) {
        return BTreeMap::new();
    }
    client
        .download(json!(folders))
        .await
        .into_iter()
        .map(|(key, data)| (key, md5_hex(&data)))
        .collect()
}

/// Fields drop in order: the server stops, then its database and S3 prefix are removed.
struct Store {
    server: TestServer,
    env: Vec<(String, String)>,
    _remove: RemoveStoreOnDrop,
    _settings: Options,
}

/// A server on the run's backend with collection every second; `env` is what `stowage backup`
/// needs to reach the same store.
fn start_store() -> Store {
    let settings = TestServer::backend_settings();
    let env = settings.env.clone();
    let options = settings.clone().env("STOWAGE_GC_INTERVAL_SECS", 1);
    let server = TestServer::start_in(tempfile::tempdir().expect("temporary directory"), options);
    Store {
        server,
        _remove: RemoveStoreOnDrop(env.clone()),
        env,
        _settings: settings,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_holds_every_acknowledged_object_and_serves() {
    let store = start_store();
    let owner = store.server.client();
    let fixed = b"written before everything".to_vec();
    owner.set("fixed/a.txt", &fixed).await;

    // Every key exists before the backup begins; then 8 writers overwrite and delete.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for id in 0..WRITERS {
        let client = owner.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + id as u64);
            let mut history: BTreeMap<String, Vec<Op>> = BTreeMap::new();
            for k in 0..KEYS_PER_WRITER {
                let key = format!("w{id}/k{k}");
                let data = body(&mut rng);
                let sent = Instant::now();
                client.set(&key, &data).await;
                history.entry(key).or_default().push(Op {
                    md5: Some(md5_hex(&data)),
                    sent,
                    acked: Instant::now(),
                });
            }
            history
        }));
    }
    let mut history: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for w in writers {
        history.extend(w.await.expect("writer"));
    }
    let mut load = Vec::new();
    for id in 0..WRITERS {
        load.push(tokio::spawn(writer(owner.clone(), id, stop.clone())));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("data");
    let data = store.server.data_dir();
    let began = Instant::now();
    let (env, t) = (store.env.clone(), target.clone());
    let report = tokio::task::spawn_blocking(move || backup(&env, &data, &t))
        .await
        .unwrap();
    let ended = Instant::now();
    // Keep writing (and collecting) a little after the backup, then stop.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in load {
        for (key, ops) in w.await.expect("writer") {
            history.entry(key).or_default().extend(ops);
        }
    }
    eprintln!(
        "first backup under load: {report} ({} operations by {WRITERS} writers)",
        history.values().map(Vec::len).sum::<usize>()
    );

    // The backup is a clean data directory: every body whole, folder rows and usage right.
    fsck_clean(&target);

    // It serves, with the same credentials, and each key is in a state the store went through
    // between the backup's start and its end, never older than what was acknowledged before.
    // (A copy is served: a server's temporary home is removed when it stops.)
    let served_home = tempfile::tempdir().unwrap();
    copy_dir(&target, &served_home.path().join("data"));
    let served = TestServer::start_in(served_home, Options::new().env("STOWAGE_GC_INTERVAL_SECS", 3600));
    let restored_owner = served.client_for(&owner.user, &owner.token, &owner.org);
    let in_backup = contents(&restored_owner).await;
    assert_eq!(in_backup.get("fixed/a.txt"), Some(&md5_hex(&fixed)));
    let mut checked = 0;
    for (key, ops) in &history {
        let last_before = ops
            .iter()
            .rposition(|op| op.acked < began)
            .expect("every key was written before the backup began");
        let allowed: Vec<Option<&String>> = ops[last_before..]
            .iter()
            .filter(|op| op.sent < ended)
            .map(|op| op.md5.as_ref())
            .collect();
        let found = in_backup.get(key);
        assert!(
            allowed.contains(&found),
            "{key}: the backup holds {found:?}, but the store went through {allowed:?} while it ran"
        );
        checked += 1;
    }
    assert_eq!(checked, WRITERS * KEYS_PER_WRITER);
    assert_eq!(
        report["objects"].as_u64(),
        Some(in_backup.len() as u64),
        "the report counts what the backup holds"
    );
    let usage = served.org_entry(&owner.org);
    assert_eq!(
        (usage["usedBytes"].as_u64(), usage["usedFiles"].as_u64()),
        (report["bytes"].as_u64(), report["objects"].as_u64()),
        "usage figures match the objects"
    );
    drop(served);

    // A second run into the same folder is incremental: only what changed comes in.
    let data = store.server.data_dir();
    let again = backup(&store.env, &data, &target);
    eprintln!("second backup (incremental): {again}");
    let files_now = again["blobsCopied"].as_u64().unwrap() + again["blobsKept"].as_u64().unwrap();
    assert!(again["blobsKept"].as_u64().unwrap() > 0, "{again}");
    assert_eq!(
        files_now + again["smallBodies"].as_u64().unwrap(),
        again["objects"].as_u64().unwrap()
    );
    fsck_clean(&target);

    // Nothing changes: nothing is copied or dropped. Then two new files and one deletion.
    let third = backup(&store.env, &data, &target);
    assert_eq!(
        (third["blobsCopied"].as_u64(), third["blobsDropped"].as_u64()),
        (Some(0), Some(0)),
        "{third}"
    );
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    owner.set("fixed/new1.bin", &big).await;
    owner.set("fixed/new2.bin", &big[..30_000]).await;
    let deleted = history
        .iter()
        .find_map(|(key, ops)| {
            let last = ops.last()?;
            (last.md5.is_some() && in_backup.get(key) == last.md5.as_ref()).then(|| key.clone())
        })
        .expect("a key whose body did not change");
    let gone = owner.post_json("object/delete", json!({ "key": deleted })).await;
    assert_eq!(gone.body["success"], json!(true));
    let fourth = backup(&store.env, &data, &target);
    eprintln!("after two new files and one deletion: {fourth}");
    assert_eq!(fourth["blobsCopied"].as_u64(), Some(2), "{fourth}");
    assert_eq!(
        fourth["objects"].as_u64(),
        third["objects"].as_u64().map(|n| n + 1),
        "{fourth}"
    );
    let dropped = fourth["blobsDropped"].as_u64().unwrap();
    let small_before = third["smallBodies"].as_u64().unwrap();
    let small_after = fourth["smallBodies"].as_u64().unwrap();
    assert_eq!(dropped + (small_before - small_after), 1, "{third} -> {fourth}");
    fsck_clean(&target);
}

/// The previous backup, as a reference: every key and md5 it serves.
async fn backup_contents(dir: &Path, owner: &Client) -> BTreeMap<String, String> {
    let home = tempfile::tempdir().unwrap();
    copy_dir(dir, &home.path().join("data"));
    let served = TestServer::start_in(home, Options::new().env("STOWAGE_GC_INTERVAL_SECS", 3600));
    contents(&served.client_for(&owner.user, &owner.token, &owner.org)).await
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        let dest: PathBuf = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &dest);
        } else {
            std::fs::copy(&path, &dest).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_killed_midway_leaves_the_previous_one_whole() {
    let store = start_store();
    let owner = store.server.client();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..300 {
        let data: Vec<u8> = (0..rng.gen_range(20_000..60_000)).map(|_| rng.r#gen::<u8>()).collect();
        owner.set(&format!("w0/k{i}"), &data).await;
    }
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("b");
    let data = store.server.data_dir();
    backup(&store.env, &data, &target);
    let reference = backup_contents(&target, &owner).await;
    assert_eq!(reference.len(), 300);

    // New content the interrupted runs would bring in: a killed run leaves either the previous
    // backup or (killed after the swap, before its leftovers were removed, or after an earlier
    // run completed) the new one, each whole; never a mix.
    let mut complete = reference.clone();
    for i in 0..300 {
        let data = vec![i as u8; 25_000];
        owner.set(&format!("w1/k{i}"), &data).await;
        complete.insert(format!("w1/k{i}"), md5_hex(&data));
    }
    let partial = backups.path().join(".b.partial");
    let mut midway = 0;
    for delay_ms in [30u64, 80, 150, 250, 400, 600, 900] {
        let mut child = command(
            &store.env,
            &[
                "backup",
                "--data-dir",
                &data.display().to_string(),
                "--to",
                &target.display().to_string(),
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start backup");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let finished = child.try_wait().expect("wait").is_some();
        let _ = child.kill();
        let _ = child.wait();
        if !finished && partial.exists() {
            midway += 1;
            // Killed while building: the previous backup is untouched.
            fsck_clean(&target);
            let found = backup_contents(&target, &owner).await;
            assert!(
                found == reference || found == complete,
                "killed after {delay_ms} ms: the backup holds {} object(s), neither the previous {} nor the new {}",
                found.len(),
                reference.len(),
                complete.len()
            );
        } else {
            // Finished (or not started building): whatever is there is whole.
            fsck_clean(&target);
        }
    }
    eprintln!("{midway} run(s) killed while building the new backup");
    assert!(
        midway > 0,
        "no run was killed midway; the store is too small for this machine"
    );
    // The next run discards the leftover and completes.
    let report = backup(&store.env, &data, &target);
    assert!(!partial.exists());
    assert_eq!(report["objects"].as_u64(), Some(600));
    fsck_clean(&target);
}

#[tokio::test]
async fn a_restore_serves_the_old_credentials_and_content() {
    let store = start_store();
    let owner = store.server.client();
    let (reader_id, reader_token) = store.server.new_user("reader");
    store.server.add_member(&owner.org, &reader_id, "read");
    let other = store.server.new_org("second", &["--max-bytes", "5000000"]);
    store.server.add_member(&other, &owner.user, "read,write,delete");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    owner.set("w0/big.bin", &big).await;
    owner.set("w0/small.json", br#"{"a": 1}"#).await;
    owner.in_org(&other).set("w1/x", b"x").await;
    let before = owner.properties("w0/big.bin").await;
    // S3 keys (a revoked one too), bucket names and server administrators are carried over.
    store
        .server
        .admin(&["org", "set-bucket", "--org", &other, "--bucket", "second-bucket"]);
    store
        .server
        .admin(&["user", "set", "--user", &reader_id, "--server-admin", "true"]);
    store.server.admin(&[
        "s3-key",
        "create",
        "--user",
        &reader_id,
        "--org",
        &owner.org,
        "--read-only",
    ]);
    let revoked = store.server.admin(&["s3-key", "create", "--user", &owner.user]);
    store
        .server
        .admin(&["s3-key", "revoke", "--key", revoked["accessKeyId"].as_str().unwrap()]);
    let keys_before = store.server.admin(&["s3-key", "list"]);
    let users_before = store.server.admin(&["user", "list"]);

    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("b");
    let data = store.server.data_dir();
    backup(&store.env, &data, &target);

    // Onto the run's backend, fresh (an embedded data directory, or a new database and prefix).
    let fresh_settings = TestServer::backend_settings();
    let fresh = fresh_settings.env.clone();
    let _remove_fresh = RemoveStoreOnDrop(fresh.clone());
    let home = tempfile::tempdir().unwrap();
    let into = home.path().join("data");
    let out = stowage(
        &fresh,
        &[
            "restore",
            "--from",
            &target.display().to_string(),
            "--data-dir",
            &into.display().to_string(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "restore: {stderr}");
    eprintln!("{}{}", String::from_utf8_lossy(&out.stdout), stderr);

    // A second restore into the same store is refused, and says why.
    let again = stowage(
        &fresh,
        &[
            "restore",
            "--from",
            &target.display().to_string(),
            "--data-dir",
            &into.display().to_string(),
        ],
    );
    assert!(!again.status.success());
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(
        why.contains("already holds a store") || why.contains("already has users"),
        "{why}"
    );

    let options = fresh.iter().fold(Options::new(), |o, (k, v)| o.env(k, v));
    let restored = TestServer::start_in(home, options);
    assert!(restored.banner.is_empty(), "no new identities: {:?}", restored.banner);
    let moved = restored.client_for(&owner.user, &owner.token, &owner.org);
    assert_eq!(
        moved.properties("w0/big.bin").await,
        before,
        "metadata and times are kept"
    );
    let entries = moved.download(json!(["w0"])).await;
    assert_eq!(entries["w0/big.bin"], big);
    assert_eq!(entries["w0/small.json"], br#"{"a": 1}"#);
    assert_eq!(moved.in_org(&other).properties("w1/x").await["size"], 1);
    let reader = restored.client_for(&reader_id, &reader_token, &owner.org);
    assert!(reader.set_raw("nope", b"x").await.errors()[0].contains("permission to write"));
    assert_eq!(restored.org_entry(&other)["maxBytes"], 5_000_000, "quotas are kept");
    assert_eq!(restored.org_entry(&other)["bucket"], "second-bucket");
    assert_eq!(restored.admin(&["s3-key", "list"]), keys_before);
    assert_eq!(restored.admin(&["user", "list"]), users_before);
    drop(restored);
}
