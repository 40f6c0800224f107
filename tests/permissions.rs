//! Organizations and permissions (spec section 3): unknown and foreign organizations look the
//! same everywhere, members get exactly their permissions, LEAN's denial sentences, and changes
//! made with the admin CLI take effect on a running server.

mod common;

use common::*;
use serde_json::json;

/// The errors of every endpoint for one organization id, in a fixed order.
async fn answers_for(client: &Client, org: &str, job: &str) -> Vec<Vec<String>> {
    let c = client.in_org(org);
    let mut out = vec![
        c.fails("object/list", json!({})).await,
        c.fails("object/list", json!({"path": "private"})).await,
        c.fails("object/properties", json!({"key": "private/file"})).await,
        c.fails("object/delete", json!({"key": "private/file"})).await,
        c.fails("object/get", json!({"keys": ["private/file"]})).await,
        c.fails("object/get", json!({"jobId": job})).await,
        c.fails("object/get", json!({"key": "private/file"})).await,
    ];
    out.push(c.set_raw("private/intrusion", b"x").await.failure());
    out
}

#[tokio::test]
async fn unknown_and_foreign_organizations_give_the_same_answer_everywhere() {
    let server = TestServer::start();
    let client = server.client();
    client.set("private/file", b"secret").await;
    let (job, _) = client.download_url(json!(["private/file"])).await;

    let stranger = server.new_tenant("stranger", &[]);
    stranger.set("theirs", b"their data").await;
    // the stranger's organization seen by our user
    let foreign = answers_for(&client, &stranger.org, &job).await;
    for unknown in [
        " ".to_owned(),
        String::new(),
        "0".repeat(32),
        "f".repeat(32),
        "not-an-id".to_owned(),
        client.org.to_uppercase(),
        format!("{} ", &client.org[..31]),
    ] {
        let answers = answers_for(&client, &unknown, &job).await;
        assert_eq!(
            answers, foreign,
            "unknown {unknown:?} and foreign organizations must look the same"
        );
    }
    // our organization seen by the stranger
    let theirs = answers_for(&stranger, &client.org, &job).await;
    assert_eq!(theirs, foreign);

    // nothing leaked or changed either way
    assert_eq!(client.properties("private/file").await["size"], 6);
    assert_eq!(
        client
            .fails("object/properties", json!({"key": "private/intrusion"}))
            .await,
        ["Object not found: private/intrusion"]
    );
    assert_eq!(stranger.names("").await, ["theirs"]);
    assert_eq!(client.names("").await, ["private"]);
}

#[tokio::test]
async fn a_missing_organization_id_is_an_ordinary_failure() {
    let server = TestServer::start();
    let client = server.client();
    for endpoint in ["object/list", "object/properties", "object/delete", "object/get"] {
        let errors = client
            .post_exact(endpoint, &json!({"key": "k", "keys": ["k"], "path": "/"}))
            .await
            .failure();
        assert_eq!(errors, ["Missing required field 'organizationId'"], "{endpoint}");
    }
    let form = reqwest::multipart::Form::new().text("key", "k").part(
        "objectData",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x"),
    );
    assert_eq!(
        client.send_multipart(form).await.failure(),
        ["Missing required field 'organizationId'"]
    );
    assert_eq!(
        client.fails("object/properties", json!({"key": "k"})).await,
        ["Object not found: k"]
    );
}

#[tokio::test]
async fn a_read_only_member_reads_but_cannot_write_or_delete() {
    let server = TestServer::start();
    let owner = server.client();
    owner.set("shared/data", b"data").await;
    let reader = server.new_member("reader", &owner.org, "read");

    assert_eq!(reader.properties("shared/data").await["size"], 4);
    assert_eq!(reader.names("shared").await, ["data"]);
    assert_eq!(reader.download(json!(["shared"])).await["shared/data"], b"data");
    assert_eq!(reader.used().await, 4);

    // organizationId before the data, and after it
    let reply = reader.set_raw("shared/intrusion", b"x").await;
    assert_eq!(reply.failure(), [DENY_WRITE]);
    let form = reqwest::multipart::Form::new()
        .part(
            "objectData",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x"),
        )
        .text("key", "shared/intrusion")
        .text("organizationId", owner.org.clone());
    assert_eq!(reader.send_multipart(form).await.failure(), [DENY_WRITE]);
    // overwriting is writing
    assert_eq!(reader.set_raw("shared/data", b"changed").await.failure(), [DENY_WRITE]);

    assert_eq!(
        reader.fails("object/delete", json!({"key": "shared/data"})).await,
        [DENY_DELETE]
    );
    assert_eq!(
        reader.fails("object/delete", json!({"key": "shared"})).await,
        [DENY_DELETE]
    );

    assert_eq!(owner.properties("shared/data").await["md5"], md5_hex(b"data"));
    assert_eq!(
        owner
            .fails("object/properties", json!({"key": "shared/intrusion"}))
            .await,
        ["Object not found: shared/intrusion"]
    );
    assert_eq!(owner.used().await, 4);
    assert_eq!(server.blob_files(), 1, "refused uploads leave no body behind");
}

#[tokio::test]
async fn a_write_only_member_cannot_read() {
    let server = TestServer::start();
    let owner = server.client();
    owner.set("inbox/existing", b"e").await;
    let writer = server.new_member("writer", &owner.org, "write");
    writer.set("inbox/new", b"new").await;
    assert_eq!(owner.properties("inbox/new").await["size"], 3);

    assert_eq!(
        writer.fails("object/properties", json!({"key": "inbox/new"})).await,
        [DENY_READ]
    );
    assert_eq!(writer.fails("object/list", json!({})).await, [DENY_READ]);
    assert_eq!(writer.fails("object/list", json!({"path": "inbox"})).await, [DENY_READ]);
    assert_eq!(
        writer.fails("object/get", json!({"keys": ["inbox"]})).await,
        [DENY_READ]
    );
    assert_eq!(
        writer.fails("object/get", json!({"key": "inbox/new"})).await,
        [DENY_READ]
    );
    assert_eq!(
        writer.fails("object/delete", json!({"key": "inbox/new"})).await,
        [DENY_DELETE]
    );
    // polling a job of the organization is reading too
    let (job, _) = owner.download_url(json!(["inbox"])).await;
    assert_eq!(writer.fails("object/get", json!({"jobId": job})).await, [DENY_READ]);
}

#[tokio::test]
async fn a_delete_only_member_deletes_and_nothing_else() {
    let server = TestServer::start();
    let owner = server.client();
    owner.set("trash/a", b"a").await;
    owner.set("trash/b", b"b").await;
    let janitor = server.new_member("janitor", &owner.org, "delete");
    janitor.delete("trash/a").await;
    assert_eq!(janitor.set_raw("trash/c", b"c").await.failure(), [DENY_WRITE]);
    assert_eq!(janitor.fails("object/list", json!({})).await, [DENY_READ]);
    janitor.delete("trash").await;
    assert_eq!(owner.list(None).await["objects"], json!([]));
}

#[tokio::test]
async fn membership_changes_take_effect_at_once() {
    let server = TestServer::start();
    let owner = server.client();
    owner.set("doc", b"d").await;
    let member = server.new_member("member", &owner.org, "read");
    assert_eq!(member.set_raw("by-member", b"m").await.failure(), [DENY_WRITE]);

    server.admin(&[
        "member",
        "set",
        "--org",
        &owner.org,
        "--user",
        &member.user,
        "--permissions",
        "read,write",
    ]);
    member.set("by-member", b"m").await;
    assert_eq!(
        member.fails("object/delete", json!({"key": "by-member"})).await,
        [DENY_DELETE]
    );

    let members = server.admin(&["member", "list", "--org", &owner.org]);
    let listed = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["userId"].as_i64().unwrap().to_string() == member.user)
        .cloned()
        .expect("member listed");
    assert_eq!(listed["permissions"], "read,write");

    // a removed member loses access, and the answer is the unknown-organization one
    let unknown = member.in_org(&"e".repeat(32)).fails("object/list", json!({})).await;
    assert_eq!(unknown, ["Organization not found or access denied"]);
    server.admin(&["member", "remove", "--org", &owner.org, "--user", &member.user]);
    assert_eq!(member.fails("object/list", json!({})).await, unknown);
    assert_eq!(member.fails("object/properties", json!({"key": "doc"})).await, unknown);
    assert_eq!(member.set_raw("after-removal", b"x").await.failure(), unknown);
    assert_eq!(member.fails("object/get", json!({"keys": ["doc"]})).await, unknown);
    // still a user: it authenticates, it just has no organization
    member.authenticate().await.ok();
    assert_eq!(
        owner.fails("object/properties", json!({"key": "after-removal"})).await,
        ["Object not found: after-removal"]
    );
    assert_eq!(owner.properties("by-member").await["size"], 1);
}

#[tokio::test]
async fn one_user_in_two_organizations_sees_two_separate_stores() {
    let server = TestServer::start();
    let client = server.client();
    let second = server.new_org("second", &[]);
    server.add_member(&second, &client.user, "read,write,delete");
    let there = client.in_org(&second);
    client.set("same/key", b"first org").await;
    there.set("same/key", b"second org!").await;
    assert_eq!(client.properties("same/key").await["size"], 9);
    assert_eq!(there.properties("same/key").await["size"], 11);
    assert_eq!(client.used().await, 9);
    assert_eq!(there.used().await, 11);
    there.delete("same").await;
    assert_eq!(client.properties("same/key").await["size"], 9);
    assert_eq!(there.used().await, 0);
}
