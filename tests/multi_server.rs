//! Several stowage servers sharing one PostgreSQL database, one bucket and one server key, as
//! behind a load balancer. Runs in the PostgreSQL + S3 pass of the test suite
//! (`STOWAGE_TEST_BACKEND=postgres-s3`); on the embedded backend there is nothing to share.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::json;

fn pair() -> Option<(TestServer, TestServer)> {
    let mut servers = TestServer::start_shared(2, Options::new())?;
    let b = servers.pop()?;
    let a = servers.pop()?;
    Some((a, b))
}

/// A client of server `b` with the identity that server `a` bootstrapped.
fn client_of(a: &TestServer, b: &TestServer) -> Client {
    let c = a.credentials();
    b.client_for(&c.user_id, &c.api_token, &c.organization_id)
}

#[tokio::test]
async fn written_through_one_read_listed_and_deleted_through_the_other() {
    let Some((a, b)) = pair() else { return };
    let (via_a, via_b) = (a.client(), client_of(&a, &b));
    via_a.set("shared/model.json", br#"{"w": 1}"#).await;
    let meta = via_b.properties("shared/model.json").await;
    assert_eq!(meta["md5"], md5_hex(br#"{"w": 1}"#));
    assert_eq!(via_b.names("shared").await, ["model.json"]);
    assert_eq!(via_b.used().await, 8);
    via_b.delete("shared").await;
    assert_eq!(
        via_a
            .fails("object/properties", json!({"key": "shared/model.json"}))
            .await,
        ["Object not found: shared/model.json"]
    );
    assert_eq!(via_a.used().await, 0);
    // The second server created no identities of its own.
    assert!(!b.data_dir().join("initial-credentials.json").exists());
}

#[tokio::test]
async fn a_job_made_on_one_server_is_polled_and_downloaded_through_the_other() {
    let Some((a, b)) = pair() else { return };
    let (via_a, via_b) = (a.client(), client_of(&a, &b));
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    via_a.set("zip/one.bin", &body).await;
    via_a.set("zip/two.txt", HELLO).await;
    let (job, url_from_a) = via_a.create_job(json!(["zip"])).await;
    let url_from_b = via_b.wait_for_url(&job).await;
    assert!(
        url_from_b.contains(&b.addr),
        "B answers with its own address: {url_from_b}"
    );
    let entries = unzip(&fetch_zip(&url_from_b).await);
    assert_eq!(entries["zip/one.bin"], body);
    assert_eq!(entries["zip/two.txt"], HELLO);
    // A link signed by A also works when a load balancer sends it to B.
    if let Some(url) = url_from_a {
        let moved = url.replace(&a.addr, &b.addr);
        assert_eq!(unzip(&fetch_zip(&moved).await).len(), 2);
    }
}

/// A single-file job is recorded nowhere: its id carries the file, sealed with the deployment's
/// key, so the other server polls and serves it too, even after the file was replaced.
#[tokio::test]
async fn a_single_file_link_made_on_one_server_works_on_the_other() {
    let Some((a, b)) = pair() else { return };
    let (via_a, via_b) = (a.client(), client_of(&a, &b));
    via_a.set("one/model.bin", b"made on A").await;
    let (job, url_from_a) = via_a.download_url(json!(["one/model.bin"])).await;
    via_b.set("one/model.bin", b"replaced through B").await;
    let moved = url_from_a.replace(&a.addr, &b.addr);
    assert_eq!(unzip(&fetch_zip(&moved).await)["one/model.bin"], b"made on A");
    let url_from_b = via_b.wait_for_url(&job).await;
    assert!(url_from_b.contains(&b.addr), "{url_from_b}");
    assert_eq!(unzip(&fetch_zip(&url_from_b).await)["one/model.bin"], b"made on A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_through_both_servers_never_overshoot_one_quota() {
    let Some((a, b)) = pair() else { return };
    let owner = a.client();
    let org = a.new_org("tight", &["--max-bytes", "1000000", "--max-files", "1000"]);
    a.add_member(&org, &owner.user, "read,write,delete");
    let (via_a, via_b) = (owner.in_org(&org), client_of(&a, &b).in_org(&org));
    via_a.set("seed", &vec![b's'; 700_000]).await; // 300,000 bytes left: room for exactly 3
    let mut tasks = Vec::new();
    for i in 0..32 {
        let client = if i % 2 == 0 { via_a.clone() } else { via_b.clone() };
        tasks.push(tokio::spawn(async move {
            client
                .set_raw(&format!("race/r{i}"), &vec![b'r'; 100_000])
                .await
                .errors()
                .is_empty()
        }));
    }
    let mut stored = 0;
    for task in tasks {
        if task.await.unwrap() {
            stored += 1;
        }
    }
    assert_eq!(stored, 3, "1,000,000 bytes hold the seed and exactly three more");
    assert_eq!(via_b.used().await, 1_000_000);
    assert_eq!(via_a.list(Some("race")).await["objects"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_overwritten_through_both_servers_ends_with_one_whole_body() {
    let Some((a, b)) = pair() else { return };
    let (via_a, via_b) = (a.client(), client_of(&a, &b));
    let bodies: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i; 50_000 + i as usize * 1_000]).collect();
    let digests: HashSet<String> = bodies.iter().map(|body| md5_hex(body)).collect();
    let mut tasks = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let client = if i % 2 == 0 { via_a.clone() } else { via_b.clone() };
        tasks.push(tokio::spawn(async move { client.set("contested", &body).await }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let meta = via_a.properties("contested").await;
    let md5 = meta["md5"].as_str().unwrap().to_owned();
    assert!(digests.contains(&md5), "the key holds one writer's body");
    let entries = via_b.download(json!(["contested"])).await;
    assert_eq!(md5_hex(&entries["contested"]), md5, "and that body is whole");
    assert_eq!(via_b.used().await, meta["size"].as_u64().unwrap());
    assert_eq!(a.org_entry(&via_a.org)["usedFiles"], 1);
}

#[tokio::test]
async fn servers_started_at_once_on_an_empty_store_create_the_first_identity_once() {
    let Some(servers) = TestServer::start_shared_at_once(4, Options::new()) else {
        return;
    };
    let creators: Vec<&TestServer> = servers
        .iter()
        .filter(|s| s.data_dir().join("initial-credentials.json").exists())
        .collect();
    assert_eq!(
        creators.len(),
        1,
        "exactly one of four servers created the first identity"
    );
    let creator = creators[0];
    let orgs = creator.admin(&["org", "list"]);
    assert_eq!(orgs.as_array().map(Vec::len), Some(1), "one organization: {orgs}");
    let users = creator.admin(&["user", "list"]);
    assert_eq!(users.as_array().map(Vec::len), Some(1), "one user: {users}");
    // Every server knows that identity.
    for server in &servers {
        let client = client_of(creator, server);
        client.set("first.txt", HELLO).await;
        assert_eq!(client.properties("first.txt").await["size"], HELLO.len());
    }
}
