//! `/object/get` (spec 5.3): download jobs, the zip layout read back with the `zip` crate, the
//! signed URL (forged, expired, reused) and the consistency of a job with later writes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::json;

fn entries(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
}

/// The URL with its signature altered (same host, same shape, different secret).
fn forge_signature(url: &str) -> String {
    let (head, signature) = url.rsplit_once("signature=").expect("a signature parameter");
    let (signature, rest) = match signature.split_once('&') {
        Some((s, r)) => (s.to_owned(), format!("&{r}")),
        None => (signature.to_owned(), String::new()),
    };
    let flipped: String = signature
        .chars()
        .enumerate()
        .map(|(i, c)| if i == 3 { if c == 'A' { 'B' } else { 'A' } } else { c })
        .collect();
    assert_ne!(flipped, signature);
    format!("{head}signature={flipped}{rest}")
}

fn query_value(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

#[tokio::test]
async fn job_create_poll_and_download() {
    let server = TestServer::start();
    let client = server.client();
    client.set("one.txt", HELLO).await;
    client.set("folder/two.bin", &noise(100, 2)).await;
    client.set("folder/deeper/three", b"3").await;
    client.set("elsewhere", b"not asked for").await;

    let (job, first_url) = client.create_job(json!(["/one.txt", "folder"])).await;
    // polling answers the same job, with both keys and, once ready, a URL
    let url = client.wait_for_url(&job).await;
    if let Some(first) = &first_url {
        assert!(first.starts_with("http://") || first.starts_with("https://"));
    }
    assert!(url.starts_with(&format!("http://{}/", server.addr)), "{url}");
    let zip = fetch_zip(&url).await;
    assert_eq!(
        unzip(&zip),
        entries(&[
            ("one.txt", HELLO),
            ("folder/two.bin", &noise(100, 2)),
            ("folder/deeper/three", b"3"),
        ])
    );
    // the URL works more than once, with the same content
    assert_eq!(fetch_zip(&url).await, zip);
    if let Some(first) = first_url {
        assert_eq!(unzip(&fetch_zip(&first).await), unzip(&zip));
    }
}

#[tokio::test]
async fn entries_are_named_by_normalized_keys_with_duplicates_once_and_missing_skipped() {
    let server = TestServer::start();
    let client = server.client();
    client.set("a/x", b"x").await;
    client.set("a/y/z", b"z").await;
    client.set("résumé 2024/Δ #1.txt", "unicode".as_bytes()).await;
    let got = client
        .download(json!([
            "//a\\x",
            "a",
            "/a/",
            "a/x",
            "a/y/z",
            "missing/key",
            "a/missing",
            "/résumé 2024/Δ #1.txt",
        ]))
        .await;
    assert_eq!(
        got,
        entries(&[
            ("a/x", b"x"),
            ("a/y/z", b"z"),
            ("résumé 2024/Δ #1.txt", "unicode".as_bytes())
        ])
    );
    // a single string is a list of one; a folder expands to everything under it
    let got = client.download(json!("a/y")).await;
    assert_eq!(got, entries(&[("a/y/z", b"z")]));
}

#[tokio::test]
async fn keys_from_a_form_body() {
    let server = TestServer::start();
    let client = server.client();
    client.set("f/one", b"1").await;
    client.set("f/two", b"22").await;
    let reply = client
        .post_form(
            "object/get",
            &[("organizationId", &client.org), ("keys", "f/one"), ("keys", "f/two")],
        )
        .await;
    let (job, url) = job_fields(reply.ok());
    let url = match url {
        Some(url) => url,
        None => client.wait_for_url(&job).await,
    };
    assert_eq!(
        unzip(&fetch_zip(&url).await),
        entries(&[("f/one", b"1"), ("f/two", b"22")])
    );
    // one form value is a list of one
    let reply = client
        .post_form("object/get", &[("organizationId", &client.org), ("keys", "f/two")])
        .await;
    let (job, url) = job_fields(reply.ok());
    let url = match url {
        Some(url) => url,
        None => client.wait_for_url(&job).await,
    };
    assert_eq!(unzip(&fetch_zip(&url).await), entries(&[("f/two", b"22")]));
}

#[tokio::test]
async fn failures_of_job_creation() {
    let server = TestServer::start();
    let client = server.client();
    client.set("present", b"p").await;
    // no keys, or none found
    let no_keys = ["No keys given: send 'keys' with at least one key"];
    let none_found = ["None of the requested keys exist"];
    assert_eq!(client.fails("object/get", json!({"keys": []})).await, no_keys);
    assert_eq!(
        client
            .fails("object/get", json!({"keys": ["nope", "nope/deeper"]}))
            .await,
        none_found
    );
    assert_eq!(client.fails("object/get", json!({"keys": "nope"})).await, none_found);
    assert_eq!(
        client.fails("object/get", json!({})).await,
        ["Missing required field 'keys'"]
    );
    // one bad key fails the whole request, naming it
    for bad in ["a/../b", "./x", "a\u{1}b", "..", ""] {
        let errors = client.fails("object/get", json!({"keys": ["present", bad]})).await;
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("'{bad}'")) || (!bad.is_empty() && e.contains(bad))),
            "{bad:?}: {errors:?}"
        );
    }
    // keys must be strings
    assert_eq!(
        client.fails("object/get", json!({"keys": [1, 2]})).await,
        ["Invalid field 'keys': it must be a list of strings"]
    );
    // an unknown job
    assert_eq!(
        client
            .fails("object/get", json!({"jobId": "0123456789abcdef0123456789abcdef"}))
            .await,
        ["Download job not found: 0123456789abcdef0123456789abcdef"]
    );
    assert_eq!(
        client.fails("object/get", json!({"jobId": "not a job"})).await,
        ["Download job not found: not a job"]
    );
}

#[tokio::test]
async fn the_legacy_single_key_shape_answers_like_properties() {
    let server = TestServer::start();
    let client = server.client();
    client.set("legacy.txt", HELLO).await;
    let legacy = client.ok("object/get", json!({"key": "legacy.txt"})).await;
    let properties = client.ok("object/properties", json!({"key": "legacy.txt"})).await;
    assert_eq!(legacy, properties);
    assert_eq!(legacy["metadata"]["md5"], HELLO_MD5);
    let legacy = client.ok("object/get", json!({"key": "/legacy.txt"})).await;
    assert_eq!(legacy, properties);
    let missing_legacy = client.fails("object/get", json!({"key": "missing.txt"})).await;
    let missing_properties = client.fails("object/properties", json!({"key": "missing.txt"})).await;
    assert_eq!(missing_legacy, missing_properties);
}

#[tokio::test]
async fn a_job_belongs_to_its_organization() {
    let server = TestServer::start();
    let client = server.client();
    client.set("mine", b"m").await;
    let (job, url) = client.download_url(json!(["mine"])).await;
    // the same user in another of its organizations
    let second = server.new_org("second", &[]);
    server.add_member(&second, &client.user, "read,write,delete");
    let same_user = client.in_org(&second);
    let unknown_job = [format!("Download job not found: {job}")];
    assert_eq!(same_user.fails("object/get", json!({"jobId": job})).await, unknown_job);
    // a stranger in its own organization, and a stranger naming ours
    let stranger = server.new_tenant("stranger", &[]);
    assert_eq!(stranger.fails("object/get", json!({"jobId": job})).await, unknown_job);
    assert_eq!(
        stranger
            .in_org(&client.org)
            .fails("object/get", json!({"jobId": job}))
            .await,
        ["Organization not found or access denied"]
    );
    // the job is unharmed
    assert_eq!(client.wait_for_url(&job).await.split('?').next(), url.split('?').next());
    assert_eq!(unzip(&fetch_zip(&url).await), entries(&[("mine", b"m")]));
}

#[tokio::test]
async fn forged_or_unknown_download_urls_are_refused() {
    let server = TestServer::start();
    let client = server.client();
    client.set("secret", b"s").await;
    let (job, url) = client.download_url(json!(["secret"])).await;
    assert!(url.contains(&job) || query_value(&url, "signature").is_some(), "{url}");

    let forged = forge_signature(&url);
    let status = get_status(&forged).await;
    assert!(
        status == 404 || status == 410,
        "forged signature: {status} for {forged}"
    );

    // a later expiry with the old signature
    if let Some(expires) = query_value(&url, "expires") {
        let later: i64 = expires.parse::<i64>().unwrap() + 3600;
        let extended = url.replace(&format!("expires={expires}"), &format!("expires={later}"));
        let status = get_status(&extended).await;
        assert!(status == 404 || status == 410, "extended expiry: {status}");
    }
    // no token at all, another job id
    let bare = url.split('?').next().unwrap().to_owned();
    let status = get_status(&bare).await;
    assert!(status == 404 || status == 410, "no token: {status}");
    let other_job = url.replace(&job, "0123456789abcdef0123456789abcdef");
    if other_job != url {
        let status = get_status(&other_job).await;
        assert!(status == 404 || status == 410, "another job: {status}");
    }
    // the genuine URL still works
    assert_eq!(unzip(&fetch_zip(&url).await), entries(&[("secret", b"s")]));
}

#[tokio::test]
async fn expired_download_urls_are_refused() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_DOWNLOAD_URL_TTL_SECS", 2));
    let client = server.client();
    client.set("short-lived", b"x").await;
    let (_, url) = client.download_url(json!(["short-lived"])).await;
    assert_eq!(unzip(&fetch_zip(&url).await), entries(&[("short-lived", b"x")]));
    // wait until just past the expiry the URL names (or the configured lifetime)
    let wait_ms = match query_value(&url, "expires").and_then(|e| e.parse::<i64>().ok()) {
        Some(expires) => (expires * 1000 - now_ms()).max(0) + 300,
        None => 2300,
    };
    assert!(wait_ms <= 2300, "the URL lives longer than configured: {url}");
    tokio::time::sleep(Duration::from_millis(wait_ms as u64)).await;
    let status = get_status(&url).await;
    assert!(status == 404 || status == 410, "expired URL answered {status}");
}

#[tokio::test]
async fn a_multi_megabyte_binary_round_trips_byte_for_byte() {
    let server = TestServer::start();
    let client = server.client();
    let big = noise(6 * 1024 * 1024 + 123, 42);
    let text = "line of text\n".repeat(100_000).into_bytes();
    client.set("models/weights.bin", &big).await;
    client.set("models/log.txt", &text).await;
    let meta = client.properties("models/weights.bin").await;
    assert_eq!(meta["md5"], md5_hex(&big));
    assert_eq!(meta["size"], json!(big.len()));
    let got = client.download(json!(["models"])).await;
    assert_eq!(got.len(), 2);
    assert!(
        got["models/weights.bin"] == big,
        "binary content differs after the round trip"
    );
    assert!(
        got["models/log.txt"] == text,
        "text content differs after the round trip"
    );
}

#[tokio::test]
async fn a_job_holds_the_content_of_its_creation_time() {
    // Garbage collection every second: the replaced bodies must stay while the job needs them.
    let server = TestServer::start_with(Options::new().env("STOWAGE_GC_INTERVAL_SECS", 1));
    let client = server.client();
    client.set("snap/a", b"old a").await;
    client.set("snap/b", b"old b").await;
    client.set("snap/c", b"old c").await;
    let (job, first_url) = client.create_job(json!(["snap"])).await;
    client.set("snap/a", b"new a, longer").await;
    client.set("snap/b", &noise(10_000, 3)).await;
    client.delete("snap/c").await;
    client.set("snap/d", b"created after the job").await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let url = match first_url {
        Some(url) => url,
        None => client.wait_for_url(&job).await,
    };
    let got = unzip(&fetch_zip(&url).await);
    assert_eq!(got["snap/a"], b"old a", "the zip holds the content at job creation");
    assert_eq!(got["snap/b"], b"old b");
    if let Some(c) = got.get("snap/c") {
        assert_eq!(c, b"old c");
    }
    assert!(!got.contains_key("snap/d"), "{:?}", got.keys());
    // and again, later
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(unzip(&fetch_zip(&url).await), got);
    // a new job sees the new state
    let now = client.download(json!(["snap"])).await;
    assert_eq!(now["snap/a"], b"new a, longer");
    assert!(!now.contains_key("snap/c"));
    assert!(now.contains_key("snap/d"));
}

/// A get of one file records no job (its id carries the file), so collection keeps a replaced
/// body as long as such a link may name it: the link still serves the body it was made for.
#[tokio::test]
async fn a_single_file_link_keeps_its_body_while_it_is_valid() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_GC_INTERVAL_SECS", 1));
    let client = server.client();
    client.set("one/model.bin", b"the version the link was made for").await;
    let (job, url) = client.download_url(json!(["one/model.bin"])).await;
    assert!(job.starts_with('L'), "a single-file job carries its file: {job}");
    client.set("one/model.bin", b"a newer version").await;
    client.set("one/other.txt", b"x").await;
    client.delete("one/other.txt").await;
    // several collection passes
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.blob_files(), 3, "the replaced and the deleted bodies are kept");
    assert_eq!(
        unzip(&fetch_zip(&url).await),
        entries(&[("one/model.bin", b"the version the link was made for")])
    );
    // polling the job hands out a working link to the same body
    let polled = client.wait_for_url(&job).await;
    assert_eq!(
        unzip(&fetch_zip(&polled).await)["one/model.bin"],
        b"the version the link was made for"
    );
    // a new get sees the new body
    assert_eq!(
        client.download(json!(["one/model.bin"])).await["one/model.bin"],
        b"a newer version"
    );
}

/// Once every link that may name a replaced body has expired (plus the grace), it is collected,
/// and the old link answers 410.
#[tokio::test]
async fn a_single_file_links_body_goes_after_the_link_expires() {
    let server = TestServer::start_with(
        Options::new()
            .env("STOWAGE_GC_INTERVAL_SECS", 1)
            .env("STOWAGE_DOWNLOAD_URL_TTL_SECS", 2)
            .env("STOWAGE_DOWNLOAD_GRACE_SECS", 0),
    );
    let client = server.client();
    client.set("k", b"old").await;
    let (_, url) = client.download_url(json!(["k"])).await;
    client.set("k", b"new").await;
    assert_eq!(unzip(&fetch_zip(&url).await)["k"], b"old");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.blob_files() != 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.blob_files(), 1, "the replaced body is collected");
    let response = http_client().get(&url).send().await.expect("GET");
    assert_eq!(response.status().as_u16(), 410, "the expired link");
}

/// A single-file job's id is sealed: a changed one, or another organization's, names nothing.
#[tokio::test]
async fn a_single_file_job_id_cannot_be_forged_or_borrowed() {
    let server = TestServer::start();
    let client = server.client();
    client.set("secret.txt", b"mine").await;
    let (job, url) = client.download_url(json!(["secret.txt"])).await;
    // one character of the payload changed
    let mut forged: Vec<char> = job.chars().collect();
    forged[5] = if forged[5] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    assert_eq!(
        client.fails("object/get", json!({"jobId": forged})).await,
        [format!("Download job not found: {forged}")]
    );
    let response = http_client().get(url.replace(&job, &forged)).send().await.expect("GET");
    assert_eq!(response.status().as_u16(), 404, "a forged link");
    // another organization cannot poll it
    let other = server.new_tenant("other", &[]);
    assert_eq!(
        other.fails("object/get", json!({"jobId": job})).await,
        [format!("Download job not found: {job}")]
    );
}

#[tokio::test]
async fn replaced_and_deleted_bodies_are_collected() {
    let server = TestServer::start_with(Options::new().collecting_promptly());
    let client = server.client();
    for i in 0..4 {
        client.set("gc/overwritten", format!("version {i}").as_bytes()).await;
    }
    client.set("gc/deleted", b"bye").await;
    client.set("gc/folder/a", b"a").await;
    client.set("gc/folder/b", b"b").await;
    client.delete("gc/deleted").await;
    client.delete("gc/folder").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.blob_files() != 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.blob_files(), 1, "only the live object's body remains");
    assert_eq!(
        client.download(json!(["gc"])).await,
        entries(&[("gc/overwritten", b"version 3")])
    );
}

#[tokio::test]
async fn download_urls_need_no_credentials_but_job_calls_do() {
    let server = TestServer::start();
    let client = server.client();
    client.set("k", b"v").await;
    let (job, url) = client.download_url(json!(["k"])).await;
    let response = http_client()
        .post(server.url("object/get"))
        .json(&json!({"organizationId": client.org, "jobId": job}))
        .send()
        .await
        .unwrap();
    Reply::read(response).await.unauthorized();
    // the URL is fetched with a plain GET
    assert_eq!(unzip(&fetch_zip(&url).await), entries(&[("k", b"v")]));
}

#[tokio::test]
async fn download_urls_use_the_configured_public_url() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_PUBLIC_URL", "https://store.example.com"));
    let client = server.client();
    client.set("k", b"v").await;
    let (_, url) = client.download_url(json!(["k"])).await;
    assert!(url.starts_with("https://store.example.com/"), "{url}");
    // the same path and token, fetched from this instance
    let path = url.trim_start_matches("https://store.example.com");
    assert_eq!(
        unzip(&fetch_zip(&format!("http://{}{path}", server.addr)).await)["k"],
        b"v"
    );
}

#[tokio::test]
async fn polling_an_expired_job_is_an_ordinary_answer() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_DOWNLOAD_URL_TTL_SECS", 1));
    let client = server.client();
    client.set("k", b"v").await;
    let (job, _) = client.create_job(json!(["k"])).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let reply = client.post_json("object/get", json!({"jobId": job})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.assert_json_envelope();
    if reply.body["success"] == true {
        let (_, url) = job_fields(&reply.body);
        if let Some(url) = url {
            // a URL handed out for an expired job must not be a dead one
            fetch_zip(&url).await;
        }
    } else {
        reply.failure();
    }
}
