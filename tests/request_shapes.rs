//! Request shapes (spec section 1): doubled slashes in the URL, JSON, form and multipart bodies,
//! missing and unknown fields, unparseable bodies, unknown endpoints and oversized uploads.

mod common;

use common::*;
use reqwest::multipart::{Form, Part};
use serde_json::json;

/// The answer to an upload over the 1 MiB maximum object size these tests configure.
const TOO_LARGE: &str = "The object is larger than the maximum object size of 1048576 bytes";
/// The answer to an upload without an objectData file part.
const NO_DATA: &str = "Invalid field 'objectData': it is missing: send multipart/form-data with the parts organizationId, key and objectData (a file)";

const MIB: usize = 1024 * 1024;

async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::read(request.send().await.expect("request")).await
}

#[tokio::test]
async fn doubled_slashes_in_the_url_path() {
    let server = TestServer::start();
    let client = server.client();
    let http = http_client();
    let base = format!("{}/", server.base); // ends in '/', as the published examples have it
    let form = Form::new()
        .text("organizationId", client.org.clone())
        .text("key", "slashes.txt")
        .part("objectData", Part::bytes(HELLO.to_vec()).file_name("d"));
    send(
        http.post(format!("{base}/object/set"))
            .headers(client.headers())
            .multipart(form),
    )
    .await
    .ok();
    for url in [
        format!("{base}/object/properties"),
        format!("{base}//object//properties"),
        format!("http://{}//api//v2/object/properties", server.addr),
    ] {
        let reply = send(
            http.post(&url)
                .headers(client.headers())
                .json(&json!({"organizationId": client.org, "key": "slashes.txt"})),
        )
        .await;
        assert_eq!(reply.ok()["metadata"]["md5"], HELLO_MD5, "{url}");
    }
    send(http.get(format!("{base}/authenticate")).headers(client.headers()))
        .await
        .ok();
}

#[tokio::test]
async fn form_bodies_work_on_every_endpoint() {
    let server = TestServer::start();
    let client = server.client();
    client.set("form/a.txt", HELLO).await;
    client.set("form/b.txt", b"b").await;
    let org = client.org.as_str();
    let reply = client
        .post_form("object/properties", &[("organizationId", org), ("key", "form/a.txt")])
        .await;
    assert_eq!(reply.ok()["metadata"]["md5"], HELLO_MD5);
    let reply = client
        .post_form(
            "object/list",
            &[("organizationId", org), ("path", "form"), ("extra", "ignored")],
        )
        .await;
    assert_eq!(names(reply.ok()), ["a.txt", "b.txt"]);
    client
        .post_form("object/delete", &[("organizationId", org), ("key", "form/b.txt")])
        .await
        .ok();
    assert_eq!(client.names("form").await, ["a.txt"]);
    let reply = client
        .post_form("object/get", &[("organizationId", org), ("key", "form/a.txt")])
        .await;
    assert_eq!(reply.ok()["metadata"]["size"], 13, "legacy shape from a form");
    // missing fields in a form are ordinary failures
    assert_eq!(
        client
            .post_form("object/properties", &[("organizationId", org)])
            .await
            .failure(),
        ["Missing required field 'key'"]
    );
    assert_eq!(
        client.post_form("object/list", &[("path", "form")]).await.failure(),
        ["Missing required field 'organizationId'"]
    );
}

#[tokio::test]
async fn json_with_or_without_a_content_type() {
    let server = TestServer::start();
    let client = server.client();
    client.set("j", b"json").await;
    let http = http_client();
    let body = json!({"organizationId": client.org, "key": "j"}).to_string();
    for content_type in [None, Some("application/json; charset=utf-8"), Some("text/plain")] {
        let mut request = http
            .post(server.url("object/properties"))
            .headers(client.headers())
            .body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        assert_eq!(send(request).await.ok()["metadata"]["size"], 4, "{content_type:?}");
    }
}

#[tokio::test]
async fn multipart_parts_in_any_order_with_or_without_filename() {
    let server = TestServer::start();
    let client = server.client();
    let blob = noise(70_000, 9);
    let form = Form::new()
        .part("objectData", Part::bytes(blob.clone()))
        .text("key", "raw")
        .text("organizationId", client.org.clone());
    client.send_multipart(form).await.ok();
    assert_eq!(client.properties("raw").await["md5"], md5_hex(&blob));

    let form = Form::new()
        .text("key", "named")
        .part(
            "objectData",
            Part::bytes(HELLO.to_vec())
                .file_name("upload.csv")
                .mime_str("text/csv")
                .unwrap(),
        )
        .text("organizationId", client.org.clone());
    client.send_multipart(form).await.ok();
    let meta = client.properties("named").await;
    assert_eq!(meta["md5"], HELLO_MD5);
    assert_eq!(meta["mime"], "text/plain", "the mime comes from the key, not the part");

    // organizationId in the middle, unknown parts around, an odd part content type
    let form = Form::new()
        .text("comment", "ignored")
        .text("key", "middle")
        .text("organizationId", client.org.clone())
        .part("extra", Part::bytes(noise(10_000, 1)).file_name("extra.bin"))
        .part(
            "objectData",
            Part::bytes(b"data".to_vec())
                .mime_str("application/x-whatever")
                .unwrap(),
        );
    client.send_multipart(form).await.ok();
    assert_eq!(client.properties("middle").await["size"], 4);
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 3);
}

#[tokio::test]
async fn missing_or_repeated_parts_are_ordinary_failures() {
    let server = TestServer::start();
    let client = server.client();
    let org = client.org.clone();
    let data = || Part::bytes(b"d".to_vec()).file_name("d");
    let shapes = [
        Form::new().text("organizationId", org.clone()).text("key", "k"),
        Form::new()
            .text("organizationId", org.clone())
            .part("objectData", data()),
        Form::new().text("key", "k").part("objectData", data()),
        Form::new()
            .text("organizationId", org.clone())
            .text("key", "k")
            .text("key", "k2")
            .part("objectData", data()),
        Form::new()
            .text("organizationId", org.clone())
            .text("key", "k")
            .part("objectData", data())
            .part("objectData", data()),
    ];
    let refusals = [
        NO_DATA,
        "Missing required field 'key'",
        "Missing required field 'organizationId'",
        "Invalid field 'key': it is given more than once; send it once",
        "Invalid field 'objectData': it is given more than once; send it once",
    ];
    for (form, refusal) in shapes.into_iter().zip(refusals) {
        assert_eq!(client.send_multipart(form).await.failure(), [refusal]);
    }
    // not multipart at all
    assert_eq!(
        client
            .post_form("object/set", &[("organizationId", &org), ("key", "k")])
            .await
            .failure(),
        [NO_DATA]
    );
    assert_eq!(
        client
            .post_json("object/set", json!({"key": "k", "objectData": "d"}))
            .await
            .failure(),
        [NO_DATA]
    );
    assert_eq!(
        client.fails("object/properties", json!({"key": "k"})).await,
        ["Object not found: k"]
    );
    assert_eq!(
        client.fails("object/properties", json!({"key": "k2"})).await,
        ["Object not found: k2"]
    );
    assert_eq!(client.used().await, 0);
    assert_eq!(server.blob_files(), 0);
    assert_eq!(server.staged_files(), 0);
    // the other endpoints
    for (endpoint, field) in [
        ("object/properties", "key"),
        ("object/delete", "key"),
        ("object/get", "keys"),
    ] {
        assert_eq!(
            client.fails(endpoint, json!({})).await,
            [format!("Missing required field '{field}'")]
        );
    }
    assert_eq!(
        client.post_exact("object/list", &json!({})).await.failure(),
        ["Missing required field 'organizationId'"]
    );
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let server = TestServer::start();
    let client = server.client();
    client.set("k", HELLO).await;
    let meta = client
        .ok(
            "object/properties",
            json!({"key": "k", "format": "json", "extra": [1, {"a": null}]}),
        )
        .await;
    assert_eq!(meta["metadata"]["size"], 13);
    let listing = client.ok("object/list", json!({"verbose": true, "sort": "desc"})).await;
    assert_eq!(names(&listing), ["k"]);
    let got = client
        .ok("object/get", json!({"keys": ["k"], "compression": "none"}))
        .await;
    job_fields(&got);
    client
        .ok("object/delete", json!({"key": "k", "recursive": false}))
        .await;
}

#[tokio::test]
async fn unparseable_bodies_are_400_with_a_json_body() {
    let server = TestServer::start();
    let client = server.client();
    let http = http_client();
    let cases: [(&str, Option<&str>, &[u8]); 5] = [
        ("object/list", Some("application/json"), b"{not json"),
        ("object/properties", Some("application/json"), b"{\"key\": "),
        ("object/list", None, b"garbage without shape"),
        ("object/delete", Some("application/json"), b"[1, 2"),
        (
            "object/set",
            Some("multipart/form-data; boundary=XYZ"),
            b"this is not multipart",
        ),
    ];
    for (endpoint, content_type, body) in cases {
        let mut request = http
            .post(server.url(endpoint))
            .headers(client.headers())
            .body(body.to_vec());
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        let reply = send(request).await;
        let errors = reply.failure_with_status(400);
        assert!(
            errors[0].starts_with("The request body is not valid JSON: ")
                || errors[0].starts_with("The request body cannot be parsed: "),
            "{errors:?}"
        );
    }
    assert_eq!(client.used().await, 0);
}

#[tokio::test]
async fn unknown_endpoints_are_json_404() {
    let server = TestServer::start();
    let client = server.client();
    let http = http_client();
    let root = format!("http://{}", server.addr);
    let requests = [
        http.post(server.url("object/nope"))
            .headers(client.headers())
            .json(&json!({})),
        http.get(server.url("nothing/here")),
        http.post(format!("{root}/api/v1/object/list")).json(&json!({})),
        http.get(format!("{root}/")),
        http.get(format!("{root}/favicon.ico")),
    ];
    for request in requests {
        let reply = send(request).await;
        let errors = reply.failure_with_status(404);
        assert!(errors[0].starts_with("Unknown endpoint: "), "{errors:?}");
    }
    // a wrong method on a real endpoint still answers JSON
    let reply = send(http.get(server.url("object/list")).headers(client.headers())).await;
    assert_ne!(reply.status, 200);
    assert_ne!(reply.status, 500);
    assert_eq!(
        reply.failure_with_status(reply.status),
        ["Method GET is not allowed on /api/v2/object/list"]
    );
}

#[tokio::test]
async fn uploads_over_the_maximum_object_size_are_413() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_MAX_OBJECT_SIZE", MIB));
    let client = server.client();
    let org = client.org.clone();
    // exactly the maximum is fine
    client.set("exact", &noise(MIB, 1)).await;
    let set = |key: &'static str, data: Vec<u8>| {
        let (server, client, org) = (&server, &client, org.clone());
        async move {
            server
                .raw_set(
                    client,
                    &[
                        ("organizationId", None, org.as_bytes()),
                        ("key", None, key.as_bytes()),
                        ("objectData", Some("d"), &data),
                    ],
                )
                .await
        }
    };
    let reply = set("too-big", noise(2 * MIB, 2)).await;
    let errors = reply.failure_with_status(413);
    assert!(
        errors[0].contains(&MIB.to_string()) || errors[0].to_lowercase().contains("maximum"),
        "{errors:?}"
    );
    set("one-over", noise(MIB + 1, 3)).await.failure_with_status(413);
    // an overwrite of an existing key with an oversized body leaves the old one
    set("exact", noise(2 * MIB, 4)).await.failure_with_status(413);
    // the data before the key and the organization
    let data = noise(3 * MIB, 5);
    let reply = server
        .raw_set(
            &client,
            &[
                ("objectData", Some("d"), &data),
                ("key", None, b"data-first"),
                ("organizationId", None, org.as_bytes()),
            ],
        )
        .await;
    assert_eq!(reply.failure_with_status(413), [TOO_LARGE]);

    assert_eq!(client.properties("exact").await["md5"], md5_hex(&noise(MIB, 1)));
    for key in ["too-big", "one-over", "data-first"] {
        assert_eq!(
            client.fails("object/properties", json!({ "key": key })).await,
            [format!("Object not found: {key}")]
        );
    }
    assert_eq!(client.used().await, MIB as u64);
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 1);
    assert_eq!(server.blob_files(), 1, "nothing of the refused uploads is stored");
    assert_eq!(server.staged_files(), 0);
}

#[tokio::test]
async fn large_uploads_refused_for_the_organization_are_ordinary_failures() {
    let server = TestServer::start();
    let owner = server.client();
    let reader = server.new_member("reader", &owner.org, "read");
    let big = noise(8 * MIB, 5);
    let unknown = "0".repeat(32);
    let reply = server
        .raw_set(
            &owner,
            &[
                ("organizationId", None, unknown.as_bytes()),
                ("key", None, b"k"),
                ("objectData", Some("d"), &big),
            ],
        )
        .await;
    assert_eq!(reply.failure(), ["Organization not found or access denied"]);
    let reply = server
        .raw_set(
            &reader,
            &[
                ("organizationId", None, owner.org.as_bytes()),
                ("key", None, b"k"),
                ("objectData", Some("d"), &big),
            ],
        )
        .await;
    assert_eq!(reply.failure(), [DENY_WRITE]);
    assert_eq!(owner.used().await, 0);
    assert_eq!(server.blob_files(), 0);
}

#[tokio::test]
async fn a_streamed_upload_without_length_over_the_maximum_is_413() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_MAX_OBJECT_SIZE", MIB));
    let client = server.client();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..32).map(|i| Ok(noise(64 * 1024, i))).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let form = Form::new()
        .text("organizationId", client.org.clone())
        .text("key", "streamed")
        .part("objectData", Part::stream(body).file_name("stream"));
    let reply = client.send_multipart(form).await;
    assert_eq!(reply.failure_with_status(413), [TOO_LARGE]);
    assert_eq!(
        client.fails("object/properties", json!({"key": "streamed"})).await,
        ["Object not found: streamed"]
    );
    assert_eq!(client.used().await, 0);
    assert_eq!(server.blob_files(), 0);
    assert_eq!(server.staged_files(), 0);
    // a streamed upload under the maximum is stored whole
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..8).map(|i| Ok(noise(64 * 1024, i))).collect();
    let expected: Vec<u8> = (0..8).flat_map(|i| noise(64 * 1024, i)).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let form = Form::new()
        .text("organizationId", client.org.clone())
        .text("key", "streamed")
        .part("objectData", Part::stream(body).file_name("stream"));
    client.send_multipart(form).await.ok();
    assert_eq!(client.properties("streamed").await["md5"], md5_hex(&expected));
}

/// An upload refused before its body was read (oversized by its Content-Length, unknown
/// organization, no write permission) must reach a client that reads the answer only after it has
/// sent the whole body (hyper/reqwest, and others) as a readable answer, not as a broken pipe.
/// `src/http/upload.rs` drains the rest of a body after refusing a streamed upload for this very
/// reason, but not on these early paths.
#[tokio::test]
async fn large_refused_uploads_reach_a_client_that_reads_after_sending() {
    // 16 MiB: more than the loopback socket buffers absorb, so the answer cannot hide in them
    let big = noise(16 * MIB, 5);
    let small_limit = TestServer::start_with(Options::new().env("STOWAGE_MAX_OBJECT_SIZE", MIB));
    let server = TestServer::start();
    let owner = server.client();
    let reader = server.new_member("reader", &owner.org, "read");
    let limited = small_limit.client();
    let mut failures = Vec::new();
    for round in 0..2 {
        let answers = [
            (
                "oversized",
                limited.try_set(&limited.org, "k", &big).await,
                413,
                TOO_LARGE,
            ),
            (
                "unknown organization",
                owner.try_set(&"0".repeat(32), "k", &big).await,
                200,
                "Organization not found or access denied",
            ),
            (
                "no write permission",
                reader.try_set(&owner.org, "k", &big).await,
                200,
                DENY_WRITE,
            ),
        ];
        for (case, answer, status, sentence) in answers {
            match answer {
                Ok(reply) => {
                    assert_eq!(reply.failure_with_status(status), [sentence], "{case}");
                }
                Err(e) => failures.push(format!("round {round}, {case}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "the client saw no answer: {failures:#?}");
    assert_eq!(owner.used().await, 0);
    assert_eq!(limited.used().await, 0);
}
