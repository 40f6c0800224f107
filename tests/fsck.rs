//! `stowage fsck` finds every kind of difference between metadata and storage, `--repair` fixes
//! them, and a healthy store checks clean, also while the server runs.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use common::{Options, TestServer};
use serde_json::Value;

fn fsck(data: &std::path::Path, extra: &[&str]) -> (bool, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["fsck", "--json", "--data-dir"])
        .arg(data)
        .args(extra)
        .output()
        .expect("run fsck");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    (output.status.success(), report)
}

fn kinds(report: &Value) -> Vec<String> {
    let mut kinds: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    kinds
}

fn blob_path(data: &std::path::Path, blob: &str) -> std::path::PathBuf {
    data.join("blobs").join(&blob[blob.len() - 2..]).join(blob)
}

#[tokio::test]
async fn finds_and_repairs_every_kind_of_difference() {
    if !common::embedded() {
        return;
    }
    // Bodies as files (no small-body table), so that the test can damage them one by one.
    let mut server = TestServer::start_with(Options::new().env("STOWAGE_SMALL_BODY_THRESHOLD", 0));
    let client = server.client();
    client.set("a/one", b"first body").await;
    client.set("a/two", b"second body").await;
    client.set("b/three", b"third body").await;
    client.set("keep", b"kept").await;
    let data = server.data_dir();

    // Healthy while running.
    let (clean, report) = fsck(&data, &[]);
    assert!(clean, "{report}");
    assert_eq!(report["objects"], 4);
    assert_eq!(report["problems"], serde_json::json!([]));
    server.stop();

    // Damage: a missing body, a truncated body, an orphan, a wrong folder row.
    let db = rusqlite::Connection::open(data.join("metadata.sqlite3")).unwrap();
    let blob_of = |key: &str| -> String {
        db.query_row("SELECT blob_id FROM objects WHERE key = ?1", [key], |r| r.get(0))
            .unwrap()
    };
    std::fs::remove_file(blob_path(&data, &blob_of("a/one"))).unwrap();
    std::fs::write(blob_path(&data, &blob_of("a/two")), b"short").unwrap();
    let orphan = "0123456789abcdef0123456789abcdef";
    let orphan_path = blob_path(&data, orphan);
    std::fs::write(&orphan_path, b"nobody names me").unwrap();
    // Planted as the server would write it: owner-only (a loose mode is a finding of its own).
    std::fs::set_permissions(&orphan_path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let old = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&orphan_path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    db.execute("UPDATE folders SET bytes = bytes + 5 WHERE path = 'b'", [])
        .unwrap();
    drop(db);

    let (clean, report) = fsck(&data, &[]);
    assert!(!clean, "problems make fsck exit non-zero");
    assert_eq!(
        kinds(&report),
        ["folderMismatch", "missingBlob", "orphanBlob", "sizeMismatch"],
        "{report}"
    );
    let (_, deep) = fsck(&data, &["--verify-content"]);
    assert_eq!(deep["problems"].as_array().unwrap().len(), 4);

    let (repaired, report) = fsck(&data, &["--repair"]);
    assert!(repaired, "{report}");
    assert_eq!(report["repaired"], report["problems"].as_array().unwrap().len());
    assert!(!orphan_path.exists());

    let (clean, report) = fsck(&data, &[]);
    assert!(clean, "clean after repair: {report}");
    assert_eq!(report["objects"], 2, "the damaged objects are gone");

    // The server agrees: usage equals what is left.
    let server = server.restart();
    let client = server.client();
    assert_eq!(client.used().await, (b"third body".len() + b"kept".len()) as u64);
    assert_eq!(client.properties("keep").await["size"], 4);
}

#[tokio::test]
async fn content_damage_needs_verify_content() {
    if !common::embedded() {
        return;
    }
    // Bodies as files (no small-body table), so that the test can damage them one by one.
    let mut server = TestServer::start_with(Options::new().env("STOWAGE_SMALL_BODY_THRESHOLD", 0));
    let client = server.client();
    client.set("x", b"0123456789").await;
    let data = server.data_dir();
    server.stop();
    let db = rusqlite::Connection::open(data.join("metadata.sqlite3")).unwrap();
    let blob: String = db
        .query_row("SELECT blob_id FROM objects WHERE key = 'x'", [], |r| r.get(0))
        .unwrap();
    std::fs::write(blob_path(&data, &blob), b"9876543210").unwrap(); // same size, other bytes
    let (clean, _) = fsck(&data, &[]);
    assert!(clean, "sizes match, content is not read without --verify-content");
    let (clean, report) = fsck(&data, &["--verify-content"]);
    assert!(!clean);
    assert_eq!(kinds(&report), ["contentMismatch"]);
}
