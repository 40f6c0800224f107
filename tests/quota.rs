//! Quotas (spec 5.1 and 6): bytes and files, reaching a limit exactly, overwrites counting their
//! net change, quota changes through the admin CLI on a running server, configured defaults, and
//! concurrent uploads that must never overshoot.

mod common;

use common::*;
use futures::future::join_all;
use serde_json::json;

/// The refusal of an upload over the byte quota.
fn over_bytes(used: u64, limit: u64, added: u64) -> [String; 1] {
    [format!(
        "Storage quota exceeded: the organization uses {used} of {limit} bytes and this upload would add {added} bytes"
    )]
}

/// The refusal of an upload over the file-count quota.
fn over_files(used: u64, limit: u64) -> [String; 1] {
    [format!(
        "File quota exceeded: the organization holds {used} of {limit} files"
    )]
}

/// The answer about a key that does not exist.
fn not_found(key: &str) -> [String; 1] {
    [format!("Object not found: {key}")]
}

fn assert_names_usage_and_limit(errors: &[String], used: u64, limit: u64) {
    let sentence = &errors[0];
    assert!(
        sentence.contains(&used.to_string()),
        "names the usage {used}: {sentence}"
    );
    assert!(
        sentence.contains(&limit.to_string()),
        "names the limit {limit}: {sentence}"
    );
}

#[tokio::test]
async fn file_count_quota() {
    let server = TestServer::start();
    let client = server.new_tenant("small", &["--max-files", "3"]);
    for i in 0..3 {
        client.set(&format!("f{i}"), b"x").await;
    }
    let errors = client.set_raw("f3", b"x").await.failure();
    assert_names_usage_and_limit(&errors, 3, 3);
    assert_eq!(
        client.fails("object/properties", json!({"key": "f3"})).await,
        not_found("f3")
    );
    // an overwrite adds no file
    client.set("f2", b"overwritten").await;
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 3);
    // a delete makes room at once
    client.delete("f0").await;
    client.set("f3", b"x").await;
    let bodies = server.blob_files();
    assert_eq!(client.set_raw("f4", b"x").await.failure(), over_files(3, 3));
    assert_eq!(server.blob_files(), bodies, "a refused upload leaves no body behind");
    assert_eq!(server.staged_files(), 0);
}

#[tokio::test]
async fn byte_quota_with_exact_reach_and_net_overwrites() {
    let server = TestServer::start();
    let client = server.new_tenant("small", &["--max-bytes", "1000000", "--max-files", "100"]);
    client.set("big/a", &vec![b'a'; 600_000]).await;
    let errors = client.set_raw("big/b", &vec![b'b'; 400_001]).await.failure();
    assert_names_usage_and_limit(&errors, 600_000, 1_000_000);
    assert_eq!(client.used().await, 600_000);
    assert_eq!(
        client.fails("object/properties", json!({"key": "big/b"})).await,
        not_found("big/b")
    );

    // reaching the limit exactly is allowed
    client.set("big/b", &vec![b'b'; 400_000]).await;
    assert_eq!(client.used().await, 1_000_000);
    let listing = client.list(None).await;
    assert_eq!(listing["objectStorageUsedHuman"], "1.00 MB");
    assert_eq!(
        client.set_raw("big/c", b"c").await.failure(),
        over_bytes(1_000_000, 1_000_000, 1)
    );
    // an empty file adds no bytes, so it still fits
    client.set("big/empty", b"").await;
    assert_eq!(client.used().await, 1_000_000);

    // an overwrite counts its net change
    client.set("big/a", &vec![b'A'; 500_000]).await; // -100,000
    assert_eq!(client.used().await, 900_000);
    client.set("big/a", &vec![b'A'; 600_000]).await; // +100,000: exactly full again
    assert_eq!(client.used().await, 1_000_000);
    let errors = client.set_raw("big/a", &vec![b'A'; 600_001]).await.failure(); // +1
    assert_names_usage_and_limit(&errors, 1_000_000, 1_000_000);
    // the refused overwrite left the old content in place
    let meta = client.properties("big/a").await;
    assert_eq!(meta["size"], 600_000);
    assert_eq!(meta["md5"], md5_hex(&vec![b'A'; 600_000]));
    // shrinking is always allowed at a full quota
    client.set("big/b", b"tiny").await;
    assert_eq!(client.used().await, 600_004);

    client.delete("big").await;
    let listing = client.list(None).await;
    assert_eq!(listing["objectStorageUsed"], 0);
    assert_eq!(listing["objectStorageUsedHuman"], "0 B");
    client.set("again", &vec![b'z'; 1_000_000]).await;
}

#[tokio::test]
async fn quota_changes_take_effect_on_a_running_server() {
    let server = TestServer::start_with(
        Options::new()
            .env("STOWAGE_DEFAULT_MAX_BYTES", 5000)
            .env("STOWAGE_DEFAULT_MAX_FILES", 1000),
    );
    let client = server.new_tenant("tenant", &["--max-bytes", "1000"]);
    client.set("a", &[b'a'; 1000]).await;
    assert_eq!(
        client.set_raw("b", &[b'b'; 10]).await.failure(),
        over_bytes(1000, 1000, 10)
    );

    server.admin(&["org", "set-quota", "--org", &client.org, "--max-bytes", "2000"]);
    client.set("b", &[b'b'; 1000]).await;
    assert_eq!(client.set_raw("c", b"c").await.failure(), over_bytes(2000, 2000, 1));

    // lowering below the usage refuses growth but not deletes or shrinking
    server.admin(&["org", "set-quota", "--org", &client.org, "--max-bytes", "500"]);
    assert_eq!(client.set_raw("c", b"c").await.failure(), over_bytes(2000, 500, 1));
    client.set("b", &[b'b'; 400]).await;
    client.delete("a").await;
    assert_eq!(client.used().await, 400);

    // back to the configured default (5000 bytes)
    server.admin(&["org", "set-quota", "--org", &client.org, "--max-bytes", "default"]);
    client.set("c", &[b'c'; 4600]).await;
    assert_eq!(client.set_raw("d", b"d").await.failure(), over_bytes(5000, 5000, 1));
    let entry = server.org_entry(&client.org);
    assert_eq!(entry["maxBytes"], 5000);
    assert_eq!(entry["usedBytes"], 5000);
    assert_eq!(entry["usedFiles"], 2);

    // the file-count quota too
    server.admin(&[
        "org",
        "set-quota",
        "--org",
        &client.org,
        "--max-files",
        "2",
        "--max-bytes",
        "100000",
    ]);
    assert_eq!(client.set_raw("d", b"d").await.failure(), over_files(2, 2));
    server.admin(&["org", "set-quota", "--org", &client.org, "--max-files", "3"]);
    client.set("d", b"d").await;
    assert_eq!(server.org_entry(&client.org)["maxFiles"], 3);
}

#[tokio::test]
async fn configured_defaults_apply_to_the_first_organization() {
    let server = TestServer::start_with(
        Options::new()
            .env("STOWAGE_DEFAULT_MAX_FILES", 2)
            .env("STOWAGE_DEFAULT_MAX_BYTES", 100),
    );
    let client = server.client();
    client.set("one", &[1; 60]).await;
    assert_eq!(client.set_raw("two", &[2; 41]).await.failure(), over_bytes(60, 100, 41));
    client.set("two", &[2; 40]).await;
    assert_eq!(client.set_raw("three", b"").await.failure(), over_files(2, 2));
    assert_eq!(client.used().await, 100);
}

/// 16 uploads at once against room for exactly 3 of them: 3 succeed, the rest are refused,
/// and the usage is exactly what was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_never_overshoot_the_byte_quota() {
    let server = TestServer::start();
    let client = server.new_tenant("race", &["--max-bytes", "1000000", "--max-files", "1000"]);
    client.set("prefill", &vec![b'p'; 700_000]).await;
    let uploads = (0..16).map(|i| {
        let client = client.clone();
        async move { client.set_raw(&format!("race/r{i:02}"), &noise(100_000, i)).await }
    });
    let replies = join_all(uploads).await;
    let mut stored = 0u64;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.text);
        if reply.body["success"] == true {
            stored += 1;
        } else {
            let errors = reply.failure();
            assert!(
                errors.len() == 1
                    && errors[0].starts_with("Storage quota exceeded: the organization uses ")
                    && errors[0].ends_with(" of 1000000 bytes and this upload would add 100000 bytes"),
                "{errors:?}"
            );
        }
    }
    assert_eq!(stored, 3, "room for exactly three uploads of 100,000 bytes");
    let listing = client.list(None).await;
    assert_eq!(listing["objectStorageUsed"], 700_000 + 100_000 * stored);
    assert_eq!(client.names("race").await.len() as u64, stored);
    let entry = server.org_entry(&client.org);
    assert_eq!(entry["usedBytes"], 700_000 + 100_000 * stored);
    assert_eq!(entry["usedFiles"], 1 + stored);
    // the listed folder sizes agree with the counters
    assert_eq!(entry_size(&client, "race").await, 100_000 * stored);
    assert_eq!(
        server.blob_files() as u64,
        1 + stored,
        "refused uploads leave no body behind"
    );
}

async fn entry_size(client: &Client, name: &str) -> u64 {
    entry(&client.list(None).await, name)["size"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uploads_never_overshoot_the_file_quota() {
    let server = TestServer::start();
    let client = server.new_tenant("race", &["--max-files", "5"]);
    for i in 0..4 {
        client.set(&format!("pre/{i}"), b"x").await;
    }
    let uploads = (0..16).map(|i| {
        let client = client.clone();
        async move {
            client
                .set_raw(&format!("race/{i}"), format!("upload {i}").as_bytes())
                .await
        }
    });
    let replies = join_all(uploads).await;
    let stored = replies
        .iter()
        .filter(|r| r.status == 200 && r.body["success"] == true)
        .count();
    assert!(replies.iter().all(|r| r.status == 200), "all ordinary answers");
    assert_eq!(stored, 1, "room for exactly one more file");
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 5);
    assert_eq!(client.names("race").await.len(), 1);
}

/// Mixed sizes racing for the last bytes: whatever wins, the usage never passes the limit and
/// equals the sum of what was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mixed_uploads_and_overwrites_keep_exact_counters() {
    let server = TestServer::start();
    let client = server.new_tenant("race", &["--max-bytes", "500000", "--max-files", "1000"]);
    client.set("shared", &vec![b's'; 50_000]).await;
    let uploads = (0..16u64).map(|i| {
        let client = client.clone();
        async move {
            let size = 20_000 + 7_919 * i as usize;
            // every fourth request overwrites the same key
            let key = if i.is_multiple_of(4) {
                "shared".to_owned()
            } else {
                format!("mixed/{i}")
            };
            (key.clone(), size, client.set_raw(&key, &noise(size, i)).await)
        }
    });
    let results = join_all(uploads).await;
    for (_, _, reply) in &results {
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let mut expected = 0u64;
    for i in (1..16u64).filter(|i| !i.is_multiple_of(4)) {
        let key = format!("mixed/{i}");
        let (_, size, reply) = results.iter().find(|(k, _, _)| *k == key).unwrap();
        if reply.body["success"] == true {
            assert_eq!(client.properties(&key).await["size"], json!(size));
            expected += *size as u64;
        } else {
            assert_eq!(
                client.fails("object/properties", json!({"key": key})).await,
                not_found(&key)
            );
        }
    }
    let shared = client.properties("shared").await["size"].as_u64().unwrap();
    expected += shared;
    let used = client.used().await;
    assert_eq!(used, expected, "usage equals the sum of the stored sizes");
    assert!(used <= 500_000, "overshot the quota: {used}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_overwrites_of_one_key_leave_one_whole_version() {
    let server = TestServer::start();
    let client = server.client();
    let versions: Vec<Vec<u8>> = (0..16).map(|i| noise(50_000 + 1000 * i, i as u64)).collect();
    let uploads = versions.iter().map(|data| {
        let client = client.clone();
        let data = data.clone();
        async move { client.set_raw("contended", &data).await }
    });
    for reply in join_all(uploads).await {
        reply.ok();
    }
    let meta = client.properties("contended").await;
    let size = meta["size"].as_u64().unwrap() as usize;
    let winner = versions.iter().find(|v| v.len() == size).expect("one of the versions");
    assert_eq!(meta["md5"], md5_hex(winner));
    assert_eq!(client.download(json!(["contended"])).await["contended"], *winner);
    assert_eq!(client.used().await, size as u64);
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 1);
}
