//! `stowage migrate`: an embedded store copied to another store (PostgreSQL + S3 in the
//! PostgreSQL pass of the suite, a second embedded store otherwise), verified, resumable, and
//! served afterwards with the same credentials and content.

mod common;

use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn migrate(source: &std::path::Path, destination: &std::path::Path) -> (bool, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(["migrate", "--json", "--data-dir"])
        .arg(source)
        .arg("--to")
        .arg(destination)
        .env_remove("STOWAGE_CONFIG")
        .output()
        .expect("run migrate");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.success(), report, stderr)
}

fn toml_value(value: &str) -> String {
    match value {
        "true" | "false" => value.to_owned(),
        _ => format!("{value:?}"),
    }
}

#[tokio::test]
async fn an_embedded_store_moves_whole_and_serves_the_same_content() {
    let mut source = TestServer::start_embedded();
    let owner = source.client();
    let (reader_id, reader_token) = source.new_user("reader");
    source.add_member(&owner.org, &reader_id, "read");
    let other = source.new_org("second", &["--max-bytes", "5000000", "--max-files", "50"]);
    source.add_member(&other, &owner.user, "read,write,delete");
    let binary: Vec<u8> = (0..1_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("models/m1.json", br#"{"alpha": 1}"#.to_vec()),
        ("models/deep/weights.bin", binary),
        ("empty", Vec::new()),
        ("résumé 2024/Δ.txt", "unicode".as_bytes().to_vec()),
    ];
    for (key, body) in &files {
        owner.set(key, body).await;
    }
    owner.in_org(&other).set("elsewhere/x", b"x").await;
    let before = owner.properties("models/m1.json").await;
    let listing_before = owner.list(Some("models")).await;
    // S3 keys (a revoked one too) and bucket names move with their stores.
    source.admin(&["org", "set-bucket", "--org", &other, "--bucket", "second-bucket"]);
    source.admin(&[
        "s3-key",
        "create",
        "--user",
        &reader_id,
        "--org",
        &owner.org,
        "--read-only",
    ]);
    let revoked = source.admin(&["s3-key", "create", "--user", &owner.user]);
    source.admin(&["s3-key", "revoke", "--key", revoked["accessKeyId"].as_str().unwrap()]);
    let keys_before = source.admin(&["s3-key", "list"]);
    source.stop();

    // The destination: the source's server key, and the run's backend.
    let dest_home = tempfile::tempdir().unwrap();
    let key = std::fs::read_to_string(source.data_dir().join("server.key")).unwrap();
    let mut toml = format!(
        "data_dir = {:?}\nserver_key = {:?}\n",
        dest_home.path().join("data").display().to_string(),
        key.trim()
    );
    let backend = TestServer::backend_settings(); // its database lives until the end of the test
    for (name, value) in &backend.env {
        let setting = name.trim_start_matches("STOWAGE_").to_lowercase();
        toml.push_str(&format!("{setting} = {}\n", toml_value(value)));
    }
    let dest_config = dest_home.path().join("destination.toml");
    std::fs::write(&dest_config, &toml).unwrap();

    let (ok, report, log) = migrate(&source.data_dir(), &dest_config);
    assert!(ok, "{report}\n{log}");
    assert_eq!(report["organizations"], 2);
    assert_eq!(report["users"], 2);
    assert_eq!(report["copied"], 5);
    assert_eq!(
        report["verifiedObjects"]
            .as_u64()
            .or(report["verified_objects"].as_u64()),
        Some(5)
    );
    assert_eq!(report["differences"], json!([]));

    // Run again: nothing left to copy.
    let (ok, again, _) = migrate(&source.data_dir(), &dest_config);
    assert!(ok);
    assert_eq!(again["copied"], 0);
    assert_eq!(again["skipped"], 5);

    // A server on the destination answers with the same identities and content.
    let mut env: Vec<(String, String)> = TestServer::backend_settings_from(&toml);
    env.push(("STOWAGE_SERVER_KEY".into(), key.trim().to_owned()));
    let options = env.into_iter().fold(Options::new(), |o, (k, v)| o.env(&k, v));
    let dest = TestServer::start_in(dest_home, options);
    assert!(
        dest.banner.is_empty(),
        "no new identities on a migrated store: {:?}",
        dest.banner
    );
    let moved = dest.client_for(&owner.user, &owner.token, &owner.org);
    assert_eq!(
        moved.properties("models/m1.json").await,
        before,
        "metadata and times are kept"
    );
    assert_eq!(moved.list(Some("models")).await["objects"], listing_before["objects"]);
    let entries = moved.download(json!(["models", "empty", "résumé 2024"])).await;
    for (key, body) in &files {
        assert_eq!(&entries[*key], body, "{key}");
    }
    assert_eq!(moved.in_org(&other).properties("elsewhere/x").await["size"], 1);
    let reader = dest.client_for(&reader_id, &reader_token, &owner.org);
    assert!(reader.set_raw("nope", b"x").await.errors()[0].contains("permission to write"));
    assert_eq!(dest.org_entry(&other)["maxBytes"], 5_000_000, "quotas are kept");
    assert_eq!(dest.org_entry(&other)["bucket"], "second-bucket");
    assert_eq!(dest.admin(&["s3-key", "list"]), keys_before);
}
