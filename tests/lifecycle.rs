//! The server's life: the first start (credentials, server key, file modes), restarts that create
//! nothing new and keep the data, the TOML configuration file, and the admin CLI.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{Value, json};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn first_start_creates_private_credentials_that_work() {
    let server = TestServer::start();
    let dir = server.data_dir();
    let credentials_path = dir.join("initial-credentials.json");
    let key_path = dir.join("server.key");
    assert_eq!(mode(&credentials_path), 0o600, "initial-credentials.json is private");
    assert_eq!(mode(&key_path), 0o600, "server.key is private");

    let raw: Value = serde_json::from_str(&std::fs::read_to_string(&credentials_path).unwrap()).unwrap();
    assert!(raw["userId"].is_i64() && raw["userId"].as_i64().unwrap() > 0, "{raw}");
    assert!(raw["apiToken"].as_str().is_some_and(|t| t.len() >= 32), "{raw}");
    assert_org_id_shape(raw["organizationId"].as_str().unwrap());

    // the credentials block is printed before the listening line
    let c = server.credentials();
    let banner = server.banner.join("\n");
    assert!(banner.contains(&c.user_id), "{banner}");
    assert!(banner.contains(&c.api_token), "{banner}");
    assert!(banner.contains(&c.organization_id), "{banner}");
    assert!(server.listening_line.contains("/api/v2"), "{}", server.listening_line);

    // they work, with read, write and delete in the first organization
    let client = server.client();
    client.authenticate().await.ok();
    client.set("first", HELLO).await;
    assert_eq!(client.properties("first").await["md5"], HELLO_MD5);
    client.delete("first").await;

    // the token is not stored in plain text
    let db = std::fs::read(dir.join("metadata.sqlite3")).unwrap_or_default();
    let wal = std::fs::read(dir.join("metadata.sqlite3-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(c.api_token.len()).any(|w| w == c.api_token.as_bytes()),
            "the API token is stored in plain text"
        );
    }
    // and never logged
    assert!(!server.log().contains(&c.api_token), "the API token appears in the log");
}

#[tokio::test]
async fn a_restart_creates_nothing_new_and_keeps_the_data() {
    let server = TestServer::start();
    let dir = server.data_dir();
    let credentials_before = std::fs::read(dir.join("initial-credentials.json")).unwrap();
    let key_before = std::fs::read(dir.join("server.key")).unwrap();
    let client = server.client();
    let blob = noise(200_000, 11);
    client.set("keep/model.bin", &blob).await;
    client.set("keep/notes.txt", HELLO).await;
    let meta_before = client.properties("keep/model.bin").await;
    let guest = server.new_tenant("guest", &["--max-files", "7"]);
    guest.set("guest-file", b"g").await;
    let users_before = server.admin(&["user", "list"]);
    let orgs_before = server.admin(&["org", "list"]);

    let server = server.restart();
    assert!(
        server
            .banner
            .iter()
            .all(|l| !l.contains("apiToken") && !l.contains(&client.token)),
        "a restart prints no new credentials: {:?}",
        server.banner
    );
    assert_eq!(
        std::fs::read(dir.join("initial-credentials.json")).unwrap(),
        credentials_before
    );
    assert_eq!(std::fs::read(dir.join("server.key")).unwrap(), key_before);
    assert_eq!(server.admin(&["user", "list"]), users_before, "no new users");
    assert_eq!(
        server.admin(&["org", "list"]),
        orgs_before,
        "no new organizations, same usage"
    );

    // the same credentials, the same data (the port may differ)
    let client = server.client_for(&client.user, &client.token, &client.org);
    client.authenticate().await.ok();
    assert_eq!(client.properties("keep/model.bin").await, meta_before);
    assert_eq!(client.download(json!(["keep"])).await["keep/model.bin"], blob);
    assert_eq!(client.used().await, 200_000 + 13);
    let guest = server.client_for(&guest.user, &guest.token, &guest.org);
    assert_eq!(guest.properties("guest-file").await["size"], 1);
    // quotas survive too
    for i in 0..6 {
        guest.set(&format!("more/{i}"), b"x").await;
    }
    assert_eq!(
        guest.set_raw("more/7", b"x").await.failure(),
        ["File quota exceeded: the organization holds 7 of 7 files"]
    );

    // without initial-credentials.json, a restart does not bootstrap again either
    std::fs::remove_file(dir.join("initial-credentials.json")).unwrap();
    let server = server.restart();
    assert!(
        !dir.join("initial-credentials.json").exists(),
        "a restart must not bootstrap again"
    );
    assert_eq!(server.admin(&["user", "list"]), users_before);
    let client = server.client_for(&client.user, &client.token, &client.org);
    assert_eq!(client.properties("keep/notes.txt").await["md5"], HELLO_MD5);
}

#[tokio::test]
async fn download_urls_survive_a_restart() {
    let server = TestServer::start();
    let client = server.client();
    client.set("k", b"v").await;
    let (job, url) = client.download_url(json!(["k"])).await;
    let server = server.restart();
    // the new server listens on another port: reach the same path and token there
    let path = url.splitn(4, '/').nth(3).expect("a path");
    let moved = format!("http://{}/{path}", server.addr);
    assert_eq!(unzip(&fetch_zip(&moved).await)["k"], b"v");
    let client = server.client_for(&client.user, &client.token, &client.org);
    let again = client.wait_for_url(&job).await;
    assert_eq!(unzip(&fetch_zip(&again).await)["k"], b"v");
}

#[tokio::test]
async fn a_toml_config_file_is_honoured_and_env_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stowage.toml");
    std::fs::write(
        &config,
        "list_page_size = 3\nmax_object_size = \"1 MiB\"\ndefault_max_files = 5\ndownload_url_ttl_secs = 120\n",
    )
    .unwrap();
    let server = TestServer::start_with(Options::new().arg("--config").arg(config.display()));
    let client = server.client();
    for i in 0..5 {
        client.set(&format!("c/{i}"), b"x").await;
    }
    assert_eq!(
        client.set_raw("c/5", b"x").await.failure(),
        ["File quota exceeded: the organization holds 5 of 5 files"],
        "default_max_files = 5"
    );
    let listing = client.list(Some("c")).await;
    assert_eq!(listing["totalPages"], 2, "list_page_size = 3");
    assert_eq!(names(&listing), ["0", "1", "2"]);
    let reply = server
        .raw_set(
            &client,
            &[
                ("organizationId", None, client.org.as_bytes()),
                ("key", None, b"c/1"),
                ("objectData", Some("d"), &noise(1024 * 1024 + 1, 1)),
            ],
        )
        .await;
    assert_eq!(
        reply.failure_with_status(413),
        ["The object is larger than the maximum object size of 1048576 bytes"],
        "max_object_size = \"1 MiB\""
    );
    client.set("c/1", &noise(1024 * 1024, 1)).await;
    let (_, url) = client.download_url(json!(["c/0"])).await;
    if let Some(expires) = url.split("expires=").nth(1).and_then(|e| e.split('&').next()) {
        let left = expires.parse::<i64>().unwrap() - now_secs();
        assert!(
            (100..=121).contains(&left),
            "download_url_ttl_secs = 120, URL lives {left} s"
        );
    }

    // an environment variable overrides the file
    let server = TestServer::start_with(
        Options::new()
            .arg("--config")
            .arg(config.display())
            .env("STOWAGE_LIST_PAGE_SIZE", 2),
    );
    let client = server.client();
    for i in 0..5 {
        client.set(&format!("c/{i}"), b"x").await;
    }
    let listing = client.list(Some("c")).await;
    assert_eq!(listing["totalPages"], 3);
    assert_eq!(names(&listing), ["0", "1"]);
}

#[tokio::test]
async fn a_bad_config_stops_the_server_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "list_page_size = 0\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("list_page_size"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!output.status.success());
}

#[tokio::test]
async fn admin_cli_manages_organizations_users_and_members() {
    let server = TestServer::start();
    let first = server.credentials();

    // organizations
    let org = server.new_org("research", &["--max-bytes", "10 MB", "--max-files", "12"]);
    let entry = server.org_entry(&org);
    assert_eq!(entry["name"], "research");
    assert_eq!(entry["maxBytes"], 10_000_000);
    assert_eq!(entry["maxFiles"], 12);
    assert_eq!(entry["usedBytes"], 0);
    assert_eq!(entry["usedFiles"], 0);
    let orgs = server.admin(&["org", "list"]);
    assert_eq!(orgs.as_array().unwrap().len(), 2);
    let changed = server.admin(&["org", "set-quota", "--org", &org, "--max-files", "default"]);
    assert_eq!(changed["organizationId"], org);
    assert_eq!(server.org_entry(&org)["maxFiles"], 10_000, "the default file quota");
    assert_eq!(server.org_entry(&org)["maxBytes"], 10_000_000, "untouched");

    // users
    let (alice, alice_token) = server.new_user("alice");
    assert_eq!(alice_token.len(), 64);
    let users = server.admin(&["user", "list"]);
    let ids: Vec<String> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_i64().unwrap().to_string())
        .collect();
    assert_eq!(ids, [first.user_id.clone(), alice.clone()]);
    assert!(!users.to_string().contains(&alice_token), "tokens are not listed");
    assert!(!users.to_string().contains(&first.api_token), "tokens are not listed");
    assert_eq!(
        server.admin(&["user", "disable", "--user", &alice]),
        json!({"userId": alice.parse::<i64>().unwrap(), "disabled": true})
    );
    server.admin(&["user", "enable", "--user", &alice]);

    // members
    server.add_member(&org, &alice, "read,write");
    let members = server.admin(&["member", "list", "--org", &org]);
    assert_eq!(
        members,
        json!([{"userId": alice.parse::<i64>().unwrap(), "name": "alice", "permissions": "read,write"}])
    );
    server.admin(&[
        "member",
        "set",
        "--org",
        &org,
        "--user",
        &alice,
        "--permissions",
        "read",
        "--admin",
    ]);
    let members = server.admin(&["member", "list", "--org", &org]);
    assert_eq!(members[0]["permissions"], "read,admin");
    let client = server.client_for(&alice, &alice_token, &org);
    assert_eq!(client.set_raw("x", b"x").await.failure(), [DENY_WRITE]);
    server.admin(&["member", "remove", "--org", &org, "--user", &alice]);
    assert_eq!(server.admin(&["member", "list", "--org", &org]), json!([]));

    // text output for people
    let text = server.admin_text(&["org", "list"]);
    assert!(text.contains(&org) && text.contains("research"), "{text}");

    // mistakes are refused with a message and a failing exit status
    let unknown_org = "a".repeat(32);
    let refused = |args: &[&str], sentence: String| {
        assert_eq!(
            server.admin_fails(args).trim_end(),
            format!("stowage: {sentence}"),
            "{args:?}"
        );
    };
    let no_org = format!("organization not found: {unknown_org}");
    let add = |org: &str, user: &str, permissions: &str, sentence: String| {
        let args = [
            "member",
            "add",
            "--org",
            org,
            "--user",
            user,
            "--permissions",
            permissions,
        ];
        refused(&args, sentence);
    };
    add(&unknown_org, &alice, "read", no_org.clone());
    add(&org, "999999", "read", "user not found: 999999".into());
    add(
        &org,
        &alice,
        "read,fly",
        "unknown permission \"fly\": the permissions are read, write and delete (comma-separated); \
         --admin marks an administrator"
            .into(),
    );
    refused(
        &["member", "remove", "--org", &org, "--user", &alice],
        format!("user {alice} is not a member of organization {org}"),
    );
    refused(
        &["org", "set-quota", "--org", &unknown_org, "--max-bytes", "5"],
        no_org.clone(),
    );
    refused(
        &["org", "set-quota", "--org", &org, "--max-files", "many"],
        "\"many\" is not a file count: give a whole number, or `default`".into(),
    );
    refused(
        &["user", "rotate-token", "--user", "999999"],
        "user not found: 999999".into(),
    );
    refused(
        &["user", "disable", "--user", "not-a-number"],
        "user not found: not-a-number".into(),
    );
    refused(&["member", "list", "--org", &unknown_org], no_org);
    assert_eq!(server.admin(&["org", "list"]).as_array().unwrap().len(), 2);
}

/// SIGTERM: requests in flight finish (a slow upload is stored), then the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_finishes_requests_in_flight() {
    let mut server = TestServer::start();
    let client = server.client();
    client.set("before", b"b").await;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let expected: Vec<u8> = (0..4).flat_map(|i| noise(100_000, i)).collect();
    let form = reqwest::multipart::Form::new()
        .text("organizationId", client.org.clone())
        .text("key", "in-flight")
        .part(
            "objectData",
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(rx)).file_name("slow"),
        );
    let upload = {
        let client = client.clone();
        tokio::spawn(async move { client.send_multipart(form).await })
    };
    tx.unbounded_send(Ok(noise(100_000, 0))).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    server.terminate();
    for i in 1..4 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        tx.unbounded_send(Ok(noise(100_000, i))).unwrap();
    }
    drop(tx);
    let reply = upload.await.unwrap();
    reply.ok();
    let exited = tokio::task::block_in_place(|| server.wait_exit(std::time::Duration::from_secs(10)));
    assert_eq!(exited, Some(true), "the server exits cleanly after SIGTERM");
    let server = server.restart();
    let client = server.client_for(&client.user, &client.token, &client.org);
    assert_eq!(client.properties("in-flight").await["md5"], md5_hex(&expected));
    assert_eq!(client.properties("before").await["size"], 1);
}

/// SIGTERM with a request that never finishes: new connections are refused at once, the process
/// still exits within the grace period, and the half-sent upload is nowhere after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_cannot_hold_shutdown_beyond_the_grace_period() {
    let mut server = TestServer::start_with(Options::new().env("STOWAGE_SHUTDOWN_GRACE_SECS", 1));
    let client = server.client();
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let form = reqwest::multipart::Form::new()
        .text("organizationId", client.org.clone())
        .text("key", "stalled")
        .part(
            "objectData",
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(rx)).file_name("s"),
        );
    let upload = {
        let client = client.clone();
        tokio::spawn(async move { client.send_multipart(form).await })
    };
    tx.unbounded_send(Ok(noise(200_000, 1))).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    server.terminate();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(&server.addr).await.is_err(),
        "no new connections once shutdown has begun"
    );
    let exited = tokio::task::block_in_place(|| server.wait_exit(std::time::Duration::from_secs(10)));
    assert_eq!(exited, Some(true), "the server exits cleanly");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "within the grace period: {:?}",
        started.elapsed()
    );
    drop(tx);
    let _ = upload.await;
    let server = server.restart();
    let client = server.client_for(&client.user, &client.token, &client.org);
    assert_eq!(
        client.fails("object/properties", json!({"key": "stalled"})).await,
        ["Object not found: stalled"]
    );
    assert_eq!(client.used().await, 0);
    assert_eq!(server.staged_files(), 0, "no partial body is left");
}
