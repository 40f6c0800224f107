//! Operating a fleet: `/healthz`, `/readyz`, `/metrics`, request ids, JSON logs, and client
//! addresses from `X-Forwarded-For` only behind a trusted proxy.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start();
    let client = server.client();
    let http = http_client();
    let root = server.base.trim_end_matches("/api/v2").to_owned();
    let health = http.get(format!("{root}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(format!("{root}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");

    client.set("m/a", b"abc").await;
    client.properties("m/a").await;
    client.download(json!(["m"])).await;
    let text = http
        .get(format!("{root}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"stowage_http_requests_total{endpoint="/api/v2/object/set",method="POST",status="200"}"#,
        r#"endpoint="/api/v2/object/properties""#,
        "stowage_http_request_duration_seconds",
        "stowage_object_bytes_in_total",
        "stowage_download_bytes_out_total",
        "stowage_download_jobs_total",
    ] {
        assert!(text.contains(needle), "{needle} in:\n{text}");
    }
    assert!(!text.contains("m/a"), "labels are route patterns, never keys");

    // Not ready when a store is gone.
    if embedded() {
        std::fs::remove_dir_all(server.data_dir().join("blobs").join("tmp")).unwrap();
        let ready = http.get(format!("{root}/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        let answer: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(
            answer["reason"], "Storage unavailable: the blob store could not complete the request; try again later",
            "a fixed sentence naming the store, without the OS's words"
        );
    }
}

#[tokio::test]
async fn request_ids_are_echoed_and_logged_as_json() {
    let server = TestServer::start_with(
        Options::new()
            .env("STOWAGE_LOG_FORMAT", "json")
            .env("STOWAGE_LOG", "stowage=info,tower_http=debug"),
    );
    let client = server.client();
    let response = http_client()
        .post(client.url("object/list"))
        .headers(client.headers())
        .header("x-request-id", "trace-me-123")
        .json(&json!({"organizationId": client.org}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-request-id"],
        "trace-me-123",
        "a caller's id is kept"
    );
    let fresh = http_client()
        .get(format!("{}/healthz", server.base.trim_end_matches("/api/v2")))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.headers()["x-request-id"].len(), 36, "otherwise a UUID is made");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["span"]["request_id"] == "trace-me-123"),
        "a log line of the request carries its id:\n{log}"
    );
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    /// Three failures forwarded for one client, then one more failure forwarded for another:
    /// the status of that last failure.
    async fn fail_then_fail_again(client: &Client) -> u16 {
        let wrong = |forwarded: &'static str| {
            http_client()
                .get(client.url("authenticate"))
                .headers(auth_headers(&client.user, "wrong", &now_secs().to_string()))
                .header("x-forwarded-for", forwarded)
                .send()
        };
        for _ in 0..3 {
            let status = wrong("203.0.113.1").await.unwrap().status();
            assert!(status == 401 || status == 429, "{status}");
        }
        // A different client behind the same proxy; a fresh user id, so only the address counts.
        let response = http_client()
            .get(client.url("authenticate"))
            .headers(auth_headers("999999", "wrong", &now_secs().to_string()))
            .header("x-forwarded-for", "203.0.113.2")
            .send()
            .await
            .unwrap();
        // A correct credential passes whatever the address did.
        client.authenticate().await.ok();
        response.status().as_u16()
    }
    let limit = Options::new().env("STOWAGE_AUTH_FAILURE_LIMIT", 3);
    let trusting = TestServer::start_with(limit.clone().env("STOWAGE_TRUSTED_PROXIES", "127.0.0.1, ::1"));
    assert_eq!(
        fail_then_fail_again(&trusting.client()).await,
        401,
        "each forwarded client counts alone"
    );
    let wary = TestServer::start_with(limit);
    assert_eq!(
        fail_then_fail_again(&wary.client()).await,
        429,
        "without trust, the header is ignored"
    );
}

/// Issue 12 item 7: a proxy that writes `ip:port` or `[v6]:port` entries. The forged entry an
/// attacker puts before them is never believed: each real client counts alone.
#[tokio::test]
async fn forwarded_entries_with_ports_are_read_and_forged_ones_ignored() {
    let server = TestServer::start_with(
        Options::new()
            .env("STOWAGE_AUTH_FAILURE_LIMIT", 3)
            .env("STOWAGE_TRUSTED_PROXIES", "127.0.0.1, ::1"),
    );
    let client = server.client();
    // Each attempt claims a user id of its own, so only the address is counted.
    let fail = |user: &'static str, forwarded: &'static str| {
        let request = http_client()
            .get(client.url("authenticate"))
            .headers(auth_headers(user, "wrong", &now_secs().to_string()))
            .header("x-forwarded-for", forwarded)
            .send();
        async move { request.await.unwrap().status().as_u16() }
    };
    for user in ["999991", "999992", "999993", "999994"] {
        fail(user, "198.51.100.66, 203.0.113.1:5000").await;
    }
    assert_eq!(
        fail("999995", "198.51.100.66, 203.0.113.1:5000").await,
        429,
        "the client with a port is counted"
    );
    assert_eq!(
        fail("999996", "198.51.100.66, 203.0.113.2:6000").await,
        401,
        "another client behind the same forged entry counts alone"
    );
    assert_eq!(
        fail("999997", "198.51.100.66, [2001:db8::2]:443").await,
        401,
        "an IPv6 entry with a port"
    );
}
