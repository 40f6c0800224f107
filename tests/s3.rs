//! The S3 front door and what it stands on: server administrators and organizations' bucket
//! names (`stowage admin user create|set --server-admin`, `org create --bucket`,
//! `org set-bucket`), and S3 access keys (`stowage admin s3-key create|list|revoke`).

mod common;

use common::{Options, TestServer};
use serde_json::{Value, json};

/// `(userId, serverAdmin)` of every user, in id order.
fn server_admins(server: &TestServer) -> Vec<(i64, bool)> {
    let users = server.admin(&["user", "list"]);
    users
        .as_array()
        .expect("user list")
        .iter()
        .map(|u| (u["userId"].as_i64().expect("userId"), u["serverAdmin"] == json!(true)))
        .collect()
}

fn org_entry(server: &TestServer, org: &str) -> Value {
    let orgs = server.admin(&["org", "list"]);
    orgs.as_array()
        .expect("org list")
        .iter()
        .find(|o| o["organizationId"] == json!(org))
        .cloned()
        .unwrap_or_else(|| panic!("{org} is listed: {orgs}"))
}

#[test]
fn the_first_user_is_a_server_admin_and_others_only_when_flagged() {
    let server = TestServer::start();
    let first: i64 = server.credentials().user_id.parse().expect("user id");
    let plain = server.admin(&["user", "create", "--name", "plain"]);
    assert_eq!(plain["serverAdmin"], json!(false), "{plain}");
    let flagged = server.admin(&["user", "create", "--name", "ops", "--server-admin"]);
    assert_eq!(flagged["serverAdmin"], json!(true), "{flagged}");
    let (plain, flagged) = (
        plain["userId"].as_i64().expect("id"),
        flagged["userId"].as_i64().expect("id"),
    );
    assert_eq!(server_admins(&server), [(first, true), (plain, false), (flagged, true)]);

    let set = server.admin(&["user", "set", "--user", &plain.to_string(), "--server-admin", "true"]);
    assert_eq!(set, json!({ "userId": plain, "serverAdmin": true }));
    server.admin(&["user", "set", "--user", &first.to_string(), "--server-admin", "false"]);
    assert_eq!(server_admins(&server), [(first, false), (plain, true), (flagged, true)]);

    let error = server.admin_fails(&["user", "set", "--user", "999", "--server-admin", "true"]);
    assert_eq!(error.trim_end(), "stowage: user not found: 999");
    let error = server.admin_fails(&["user", "set", "--user", &plain.to_string(), "--server-admin", "maybe"]);
    assert!(error.contains("invalid value 'maybe'"), "{error}");
    let error = server.admin_fails(&["user", "set", "--user", &plain.to_string()]);
    assert!(error.contains("--server-admin"), "{error}");

    let table = server.admin_text(&["user", "list"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .collect();
    assert!(header.contains(&"server admin"), "{table}");
}

#[test]
fn organizations_get_unique_valid_bucket_names() {
    let server = TestServer::start();
    let created = server.admin(&["org", "create", "--name", "research", "--bucket", "research-data"]);
    let research = created["organizationId"].as_str().expect("organizationId").to_owned();
    assert_eq!(created["bucket"], json!("research-data"), "{created}");
    assert_eq!(org_entry(&server, &research)["bucket"], json!("research-data"));

    // Quotas given with a bucket name are kept.
    let limited = server.admin(&[
        "org",
        "create",
        "--name",
        "small",
        "--bucket",
        "small-one",
        "--max-files",
        "7",
    ]);
    let small = limited["organizationId"].as_str().expect("organizationId").to_owned();
    assert_eq!(org_entry(&server, &small)["maxFiles"], json!(7));

    // A taken name is refused, naming its owner, and creates nothing.
    let before = server.admin(&["org", "list"]).as_array().map(Vec::len);
    let error = server.admin_fails(&["org", "create", "--name", "other", "--bucket", "research-data"]);
    assert_eq!(
        error.trim_end(),
        format!("stowage: the bucket name \"research-data\" is taken by organization {research}: choose another name")
    );
    assert_eq!(server.admin(&["org", "list"]).as_array().map(Vec::len), before);
    let error = server.admin_fails(&["org", "set-bucket", "--org", &small, "--bucket", "research-data"]);
    assert!(error.contains(&format!("taken by organization {research}")), "{error}");

    // Names S3 would refuse, and names of an organization id's shape, are refused.
    for (bad, sentence) in [
        ("UPPER", "may hold only lowercase letters"),
        ("ab", "3 to 63 characters"),
        ("a..b", "two dots in a row"),
        ("10.0.0.1", "IP address"),
        (&research, "looks like an organization id"),
    ] {
        let error = server.admin_fails(&["org", "set-bucket", "--org", &small, "--bucket", bad]);
        assert!(
            error.contains(sentence) && error.contains("(--bucket)"),
            "{bad}: {error}"
        );
    }
    assert_eq!(org_entry(&server, &small)["bucket"], json!("small-one"));

    // Renaming frees the old name for another organization; --remove takes a name away.
    let renamed = server.admin(&["org", "set-bucket", "--org", &research, "--bucket", "research-v2"]);
    assert_eq!(renamed, json!({ "organizationId": research, "bucket": "research-v2" }));
    server.admin(&["org", "set-bucket", "--org", &small, "--bucket", "research-data"]);
    assert_eq!(org_entry(&server, &small)["bucket"], json!("research-data"));
    server.admin(&["org", "set-bucket", "--org", &small, "--remove"]);
    assert_eq!(org_entry(&server, &small)["bucket"], Value::Null);

    let error = server.admin_fails(&["org", "set-bucket", "--org", &small]);
    assert!(error.contains("--bucket") && error.contains("--remove"), "{error}");
    let error = server.admin_fails(&["org", "set-bucket", "--org", &"0".repeat(32), "--bucket", "free-name"]);
    assert_eq!(
        error.trim_end(),
        format!("stowage: organization not found: {}", "0".repeat(32))
    );

    let table = server.admin_text(&["org", "list"]);
    assert!(table.lines().any(|l| l.contains("research-v2")), "{table}");
}

#[test]
fn s3_keys_are_created_listed_and_revoked() {
    let server = TestServer::start();
    let org = server.new_org("research", &[]);
    let (user, _) = server.new_user("alice");
    server.add_member(&org, &user, "read,write");

    let created = server.admin(&["s3-key", "create", "--user", &user]);
    let key = created["accessKeyId"].as_str().expect("accessKeyId").to_owned();
    let secret = created["secretAccessKey"].as_str().expect("secretAccessKey").to_owned();
    assert!(key.len() == 20 && key.starts_with("STW"), "{created}");
    assert_eq!(secret.len(), 40, "{created}");
    assert_eq!(created["organizationId"], Value::Null);
    assert_eq!(created["readOnly"], json!(false));
    let scoped = server.admin(&["s3-key", "create", "--user", &user, "--org", &org, "--read-only"]);
    let scoped_key = scoped["accessKeyId"].as_str().expect("accessKeyId").to_owned();
    assert_eq!(
        (&scoped["organizationId"], &scoped["readOnly"]),
        (&json!(org), &json!(true))
    );
    assert_ne!(scoped_key, key);

    // The secret is shown once and never listed; the data directory holds it sealed only.
    let listed = server.admin(&["s3-key", "list", "--user", &user]);
    let text = listed.to_string();
    assert!(!text.contains(&secret), "{text}");
    let statuses: Vec<(&str, &Value)> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|k| (k["accessKeyId"].as_str().unwrap_or_default(), &k["status"]))
        .collect();
    assert_eq!(statuses.len(), 2, "{listed}");
    assert!(statuses.iter().all(|(_, s)| **s == json!("active")), "{listed}");
    for file in ["metadata.sqlite3", "metadata.sqlite3-wal"] {
        let bytes = std::fs::read(server.data_dir().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is stored sealed ({file})"
        );
    }

    // Disabling the user shows its keys as disabled; revoking is at once and kept.
    server.admin(&["user", "disable", "--user", &user]);
    let listed = server.admin(&["s3-key", "list"]);
    let status_of = |listed: &Value, id: &str| {
        listed
            .as_array()
            .expect("list")
            .iter()
            .find(|k| k["accessKeyId"] == json!(id))
            .map(|k| (k["status"].clone(), k["active"].clone()))
    };
    assert_eq!(status_of(&listed, &key), Some((json!("user disabled"), json!(false))));
    server.admin(&["user", "enable", "--user", &user]);
    let revoked = server.admin(&["s3-key", "revoke", "--key", &key]);
    assert_eq!(revoked, json!({ "accessKeyId": key, "revoked": true }));
    let listed = server.admin(&["s3-key", "list"]);
    assert_eq!(status_of(&listed, &key), Some((json!("revoked"), json!(false))));
    assert_eq!(status_of(&listed, &scoped_key), Some((json!("active"), json!(true))));

    // Refusals name what is wrong.
    let error = server.admin_fails(&["s3-key", "revoke", "--key", "STWNOSUCHKEY"]);
    assert_eq!(
        error.trim_end(),
        "stowage: S3 key not found: STWNOSUCHKEY (see `stowage admin s3-key list`)"
    );
    let error = server.admin_fails(&["s3-key", "create", "--user", "999"]);
    assert_eq!(error.trim_end(), "stowage: user not found: 999");
    let other = server.new_org("other", &[]);
    let error = server.admin_fails(&["s3-key", "create", "--user", &user, "--org", &other]);
    assert!(
        error.contains(&format!("user {user} is not a member of organization {other}")),
        "{error}"
    );
    let error = server.admin_fails(&["s3-key", "create", "--user", &user, "--org", &"0".repeat(32)]);
    assert_eq!(
        error.trim_end(),
        format!("stowage: organization not found: {}", "0".repeat(32))
    );

    let table = server.admin_text(&["s3-key", "list"]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        ["access", "key", "id", "user", "organization", "access", "status"]
    );
    assert!(table.contains("read-only") && table.contains("revoked"), "{table}");
}

/// A raw request to the S3 API (no signature).
async fn s3_get(server: &TestServer, path: &str) -> reqwest::Response {
    let base = server.s3_url.as_deref().expect("the S3 API is on");
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("S3 request")
}

#[tokio::test]
async fn the_s3_api_answers_on_its_own_port_and_refuses_unsigned_requests_in_xml() {
    let server = TestServer::start();
    let answer = s3_get(&server, "/").await;
    assert_eq!(answer.status().as_u16(), 403);
    let id = answer
        .headers()
        .get("x-amz-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("x-amz-request-id");
    assert_eq!(id.len(), 32, "{id}");
    let body = answer.text().await.expect("body");
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    assert!(body.contains("not signed"), "{body}");
    // The S3 port speaks S3 only: a QuantConnect API path is an S3 object path there.
    let qc = s3_get(&server, "/api/v2/authenticate").await;
    assert_eq!(qc.status().as_u16(), 403);
    assert!(qc.text().await.expect("body").contains("<Code>AccessDenied</Code>"));
}

#[test]
fn the_s3_api_can_be_turned_off() {
    let server = TestServer::start_with(Options::new().arg("--s3-api-listen").arg("off"));
    assert!(server.s3_url.is_none());
    assert!(!server.listening_line.contains("S3"));
}

#[tokio::test]
async fn failed_s3_authentications_are_limited_per_address_with_the_api_s_counts() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_AUTH_FAILURE_LIMIT", 3));
    for _ in 0..3 {
        assert_eq!(s3_get(&server, "/").await.status().as_u16(), 403);
    }
    let limited = s3_get(&server, "/").await;
    assert_eq!(limited.status().as_u16(), 503);
    assert!(limited.headers().contains_key("retry-after"));
    let body = limited.text().await.expect("body");
    assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
    // The QuantConnect API shares the count: the address is limited there too.
    let creds = server.credentials();
    let reply = server
        .client_for(&creds.user_id, "not-the-token", &creds.organization_id)
        .authenticate()
        .await;
    assert_eq!(reply.status, 429, "{}", reply.text);
}

#[tokio::test]
async fn the_connection_cap_is_one_over_both_apis() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_MAX_CONNECTIONS", 2));
    // Two connections to the QuantConnect API take both places...
    let _held = [
        tokio::net::TcpStream::connect(&server.addr).await.expect("connect"),
        tokio::net::TcpStream::connect(&server.addr).await.expect("connect"),
    ];
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // ...so the S3 API turns the next one away.
    let refused = s3_get(&server, "/").await;
    assert_eq!(refused.status().as_u16(), 503);
    assert!(refused.headers().contains_key("retry-after"));
}
