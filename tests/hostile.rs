//! Hostile input: malformed, mistyped, duplicated, oversized and endless request bodies, header
//! floods, slow clients, every rejected key form on every endpoint, path traversal through keys
//! and download tokens. Whatever arrives, the server answers with a status of the contract (never
//! a 500), never panics, stores nothing it should not, and stays healthy afterwards.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

/// The endpoints that take a small JSON (or form) body.
const JSON_ENDPOINTS: [&str; 4] = ["object/properties", "object/get", "object/delete", "object/list"];

// --- health ---------------------------------------------------------------------------------------

static HEALTH_ROUND: AtomicUsize = AtomicUsize::new(0);

/// An authenticated list succeeds, a set + properties round trip works, the log shows no panic.
async fn assert_healthy(server: &TestServer, client: &Client) {
    let round = HEALTH_ROUND.fetch_add(1, Ordering::Relaxed);
    client.list(None).await;
    let key = format!("health/check-{round}");
    let data = format!("still healthy after round {round}");
    client.set(&key, data.as_bytes()).await;
    let meta = client.properties(&key).await;
    assert_eq!(meta["md5"], md5_hex(data.as_bytes()));
    assert_eq!(meta["size"], data.len());
    let log = server.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    assert!(
        !log.contains("internal error"),
        "the server answered an internal error:\n{log}"
    );
}

/// Not a 500, and a JSON envelope with `success: false`; returns the status.
/// The refusal of a small body over 1 MiB.
const TOO_LARGE: &str = "The request body is larger than 1048576 bytes";
/// The refusal of a multipart body with too many parts.
const TOO_MANY_PARTS: &str = "The request body cannot be parsed: more than 64 parts";

/// Checks that `reply` is a refusal in the API's envelope whose first sentence starts with
/// `sentence`, and gives its status for the caller to check.
fn refused(reply: &Reply, what: &str, sentence: &str) -> u16 {
    assert_ne!(reply.status, 500, "{what}: {}", reply.text);
    reply.assert_json_envelope();
    assert_eq!(reply.body["success"], false, "{what}: {}", reply.text);
    let errors = reply.errors();
    assert!(
        errors.first().is_some_and(|first| first.starts_with(sentence)),
        "{what}: expected a sentence starting {sentence:?}, got {}",
        reply.text
    );
    reply.status
}

async fn post_body(server: &TestServer, client: &Client, endpoint: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let request = client
        .http
        .post(server.url(endpoint))
        .headers(client.headers())
        .header(CONTENT_TYPE, content_type)
        .body(body);
    Reply::read(request.send().await.expect("request")).await
}

// --- a raw HTTP/1.1 connection ------------------------------------------------------------------

/// What came back on a raw connection.
#[derive(Debug)]
enum Answer {
    /// A status line (and the body, as far as it arrived).
    Status { status: u16, body: String },
    /// The connection ended (EOF or reset) before any status line.
    Closed,
    /// Nothing at all within the time allowed.
    Silent,
}

impl Answer {
    fn status(&self) -> Option<u16> {
        match self {
            Answer::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Reads one answer (head, then `Content-Length` bytes of body) until `deadline`.
async fn read_answer(reader: &mut (impl AsyncRead + Unpin), deadline: Instant) -> Answer {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).into_owned();
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not an HTTP answer: {head:?}"));
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + length]).into_owned();
                return Answer::Status { status, body };
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read(&mut buf)).await {
            Err(_) => return if raw.is_empty() { Answer::Silent } else { partial(&raw) },
            Ok(Ok(0)) | Ok(Err(_)) => return partial(&raw),
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

fn partial(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    match text.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
        Some(status) if text.starts_with("HTTP/") => Answer::Status {
            status,
            body: text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default(),
        },
        _ => Answer::Closed,
    }
}

/// The auth headers as raw header lines.
fn header_lines(headers: &HeaderMap) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\r\n", value.to_str().unwrap()))
        .collect()
}

/// Sends `request` whole (ignoring write errors: the server may close early) and reads the answer.
async fn raw_exchange(addr: &str, request: Vec<u8>, wait: Duration) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        for chunk in request.chunks(64 * 1024) {
            if writer.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = writer.flush().await;
        // keep the write half open until the exchange is over
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(writer);
    });
    let answer = read_answer(&mut reader, Instant::now() + wait).await;
    sender.abort();
    answer
}

fn multipart_head(addr: &str, headers: &HeaderMap, framing: &str) -> String {
    format!(
        "POST /api/v2/object/set HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: multipart/form-data; boundary={RAW_BOUNDARY}\r\n{framing}{}\r\n",
        header_lines(headers)
    )
}

fn text_part(name: &str, value: &str) -> String {
    format!("--{RAW_BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
}

fn file_part_head() -> String {
    format!(
        "--{RAW_BOUNDARY}\r\nContent-Disposition: form-data; name=\"objectData\"; filename=\"d\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

// --- bodies -------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_and_wrong_content_types_on_every_json_endpoint() {
    let server = TestServer::start();
    let client = server.client();
    client.set("victim", HELLO).await;
    let org = client.org.clone();
    let valid = serde_json::to_vec(&json!({"organizationId": org, "key": "victim", "keys": ["victim"]})).unwrap();
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_object = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000)).into_bytes();
    // (content type, body, the statuses allowed, the start of the sentence a refusal must carry)
    const NOT_JSON: &str = "The request body is not valid JSON";
    const NOT_OBJECT: &str = "The request body must be a JSON object";
    const TOO_DEEP: &str = "The request body is not valid JSON: recursion limit exceeded";
    const WRONG_TYPE: &str = "The request body cannot be parsed: send JSON (Content-Type: application/json) or a form";
    const BAD_MULTIPART: &str = "The request body cannot be parsed: malformed multipart body";
    let cases: Vec<(&str, Vec<u8>, &[u16], &str)> = vec![
        ("application/json", b"{not json".to_vec(), &[400], NOT_JSON),
        ("application/json", b"{\"key\": ".to_vec(), &[400], NOT_JSON),
        ("application/json", b"{\"key\": \"victim\",}".to_vec(), &[400], NOT_JSON),
        ("application/json", b"[1, 2]".to_vec(), &[400], NOT_OBJECT),
        ("application/json", b"\"just a string\"".to_vec(), &[400], NOT_OBJECT),
        ("application/json", b"42".to_vec(), &[400], NOT_OBJECT),
        ("application/json", b"true".to_vec(), &[400], NOT_OBJECT),
        ("application/json", b"{} {}".to_vec(), &[400], NOT_JSON),
        ("application/json", b"\xef\xbb\xbf{}".to_vec(), &[400, 200], NOT_JSON),
        (
            "application/json",
            b"{\"key\": \"\xff\xfe\"}".to_vec(),
            &[400],
            NOT_JSON,
        ),
        ("application/json", b"\x00\x01\x02\x03".to_vec(), &[400], NOT_JSON),
        ("application/json", b"key=victim".to_vec(), &[400], NOT_JSON),
        ("application/json", deep_array, &[400], TOO_DEEP),
        ("application/json", deep_object, &[400], TOO_DEEP),
        (
            "application/json; charset=utf-16",
            b"\xff\xfe{\x00}\x00".to_vec(),
            &[400],
            NOT_JSON,
        ),
        ("text/plain", b"hello there".to_vec(), &[400], WRONG_TYPE),
        (
            "application/xml",
            b"<request><key>victim</key></request>".to_vec(),
            &[400],
            WRONG_TYPE,
        ),
        ("application/xml", valid.clone(), &[200, 400], WRONG_TYPE),
        ("text/plain", valid.clone(), &[200, 400], WRONG_TYPE),
        ("garbage", b"\x89PNG\r\n\x1a\n".to_vec(), &[400], WRONG_TYPE),
        (";;;===;;;", b"<<<>>>".to_vec(), &[400], WRONG_TYPE),
        ("application/x-www-form-urlencoded", valid.clone(), &[200], ""),
        (
            "application/x-www-form-urlencoded",
            b"%%%%&&&===%zz".to_vec(),
            &[200],
            "",
        ),
        ("multipart/form-data", valid.clone(), &[400], BAD_MULTIPART),
        (
            "multipart/form-data; boundary=zzz",
            b"this is not multipart".to_vec(),
            &[400],
            BAD_MULTIPART,
        ),
        (
            "multipart/form-data; boundary=",
            b"--\r\n".to_vec(),
            &[400],
            BAD_MULTIPART,
        ),
    ];
    for endpoint in JSON_ENDPOINTS {
        for (content_type, body, allowed, sentence) in &cases {
            let what = format!(
                "{endpoint} with {content_type} {:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
            let reply = post_body(&server, &client, endpoint, content_type, body.clone()).await;
            assert_ne!(reply.status, 500, "{what}: {}", reply.text);
            assert!(
                allowed.contains(&reply.status),
                "{what}: {} {}",
                reply.status,
                reply.text
            );
            reply.assert_json_envelope();
            if reply.status != 200 {
                refused(&reply, &what, sentence);
            }
        }
    }
    // /object/set: anything but multipart is an ordinary failure that names the missing part
    for (content_type, body, _, _) in &cases {
        if content_type.starts_with("multipart/") {
            continue;
        }
        let what = format!("object/set with {content_type}");
        let reply = post_body(&server, &client, "object/set", content_type, body.clone()).await;
        assert_eq!(
            refused(&reply, &what, "Invalid field 'objectData': it is missing"),
            200,
            "{what}"
        );
        assert!(reply.errors()[0].contains("objectData"), "{what}: {}", reply.text);
    }
    // a Content-Type that is not visible ASCII
    for endpoint in JSON_ENDPOINTS {
        let path = format!("/api/v2/{endpoint}");
        let reply = raw_post(
            &server.addr,
            &path,
            &client.headers(),
            "appl\u{e9}cation/json",
            b"{nope".to_vec(),
        )
        .await;
        refused(&reply, endpoint, "The request body is not valid JSON");
    }
    // the sniffed bodies above may have deleted the victim: put it back
    client.set("victim", HELLO).await;
    assert_eq!(client.properties("victim").await["md5"], HELLO_MD5);
    assert_eq!(client.used().await, HELLO.len() as u64);
    assert_healthy(&server, &client).await;
}

#[tokio::test]
async fn missing_and_duplicated_fields() {
    let server = TestServer::start();
    let client = server.client();
    client.set("dup", HELLO).await;
    client.set("other", b"other").await;
    let org = client.org.as_str();

    // missing fields, as JSON and as forms: an ordinary failure naming the field
    for (endpoint, body, field) in [
        ("object/properties", json!({"organizationId": org}), "key"),
        ("object/properties", json!({"key": "dup"}), "organizationId"),
        ("object/delete", json!({"organizationId": org}), "key"),
        ("object/delete", json!({"key": "dup"}), "organizationId"),
        ("object/get", json!({"organizationId": org}), "keys"),
        ("object/get", json!({"keys": ["dup"]}), "organizationId"),
        ("object/list", json!({"path": "/"}), "organizationId"),
    ] {
        let missing = [format!("Missing required field '{field}'")];
        let errors = client.post_exact(endpoint, &body).await.failure();
        assert_eq!(errors, missing, "{endpoint} {body}");
        let pairs: Vec<(String, String)> = body
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_owned).unwrap_or_else(|| "dup".into())))
            .collect();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let errors = client.post_form(endpoint, &pairs).await.failure();
        assert_eq!(errors, missing, "{endpoint} form {pairs:?}");
    }

    // a form field given twice is refused with a sentence, never taken as one of the values
    let form = "application/x-www-form-urlencoded";
    for (endpoint, body) in [
        ("object/properties", format!("organizationId={org}&key=dup&key=other")),
        ("object/delete", format!("organizationId={org}&key=dup&key=other")),
        (
            "object/delete",
            format!("organizationId={org}&organizationId={org}&key=dup"),
        ),
        ("object/list", format!("organizationId={org}&organizationId={org}")),
        ("object/list", format!("organizationId={org}&path=a&path=b")),
        ("object/list", format!("organizationId={org}&page=0&page=1")),
        ("object/get", format!("organizationId={org}&jobId=a&jobId=b")),
        ("object/get", format!("organizationId={org}&organizationId=x&keys=dup")),
    ] {
        let reply = post_body(&server, &client, endpoint, form, body.clone().into_bytes()).await;
        let errors = reply.failure();
        assert!(
            errors[0].contains("more than once") || errors[0].contains("page"),
            "{endpoint} {body}: {errors:?}"
        );
    }
    // the same through multipart bodies on the JSON endpoints
    let multipart = multipart_body(&[
        ("organizationId", None, org.as_bytes()),
        ("key", None, b"dup"),
        ("key", None, b"other"),
    ]);
    for endpoint in ["object/properties", "object/delete"] {
        let ct = format!("multipart/form-data; boundary={RAW_BOUNDARY}");
        let reply = post_body(&server, &client, endpoint, &ct, multipart.clone()).await;
        assert!(
            reply.failure()[0].contains("more than once"),
            "{endpoint}: {}",
            reply.text
        );
    }
    // duplicated JSON members: whatever is taken, the answer is ordinary
    let reply = post_body(
        &server,
        &client,
        "object/properties",
        "application/json",
        format!(r#"{{"organizationId": "{org}", "key": "dup", "key": "other"}}"#).into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.assert_json_envelope();

    // duplicated multipart parts on /object/set: refused, and the key keeps its content
    let twice: [&[RawPart<'_>]; 4] = [
        &[
            ("organizationId", None, org.as_bytes()),
            ("key", None, b"dup"),
            ("key", None, b"other"),
            ("objectData", Some("d"), b"new content"),
        ],
        &[
            ("organizationId", None, org.as_bytes()),
            ("key", None, b"dup"),
            ("objectData", Some("d"), b"first body"),
            ("objectData", Some("d"), b"second body"),
        ],
        &[
            ("organizationId", None, org.as_bytes()),
            ("organizationId", None, org.as_bytes()),
            ("key", None, b"dup"),
            ("objectData", Some("d"), b"new content"),
        ],
        &[
            ("objectData", Some("d"), b"first body"),
            ("key", None, b"dup"),
            ("objectData", None, b"second body"),
            ("organizationId", None, org.as_bytes()),
        ],
    ];
    for parts in twice {
        let reply = server.raw_set(&client, parts).await;
        let errors = reply.failure();
        assert!(errors[0].contains("more than once"), "{errors:?}");
    }
    assert_eq!(client.properties("dup").await["md5"], HELLO_MD5);
    assert_eq!(client.properties("other").await["size"], 5);
    assert_eq!(client.used().await, (HELLO.len() + 5) as u64);
    assert_eq!(server.blob_files(), 2);
    assert_eq!(server.staged_files(), 0);
    assert_healthy(&server, &client).await;
}

#[tokio::test]
async fn fields_of_the_wrong_json_type() {
    let server = TestServer::start();
    let client = server.client();
    client.set("typed", HELLO).await;
    let org = client.org.clone();
    let wrong: Vec<Value> = vec![
        json!(7),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(18446744073709551615u64),
        json!(true),
        json!(["typed"]),
        json!([["typed"]]),
        json!([]),
        json!({"key": "typed"}),
        json!({}),
    ];
    // (endpoint, field, the other fields)
    let shapes: Vec<(&str, &str, Value)> = vec![
        ("object/properties", "organizationId", json!({"key": "typed"})),
        ("object/properties", "key", json!({"organizationId": org})),
        ("object/delete", "organizationId", json!({"key": "typed"})),
        ("object/delete", "key", json!({"organizationId": org})),
        ("object/get", "organizationId", json!({"keys": ["typed"]})),
        ("object/get", "keys", json!({"organizationId": org})),
        ("object/get", "jobId", json!({"organizationId": org})),
        ("object/get", "key", json!({"organizationId": org})),
        ("object/list", "organizationId", json!({})),
        ("object/list", "path", json!({"organizationId": org})),
        ("object/list", "page", json!({"organizationId": org})),
    ];
    for (endpoint, field, base) in &shapes {
        for value in wrong.iter().chain([&Value::Null]) {
            let mut body = base.clone();
            body[*field] = value.clone();
            let reply = client.post_exact(endpoint, &body).await;
            let what = format!("{endpoint} {body}");
            assert_eq!(reply.status, 200, "{what}: an ordinary answer: {}", reply.text);
            reply.assert_json_envelope();
            // what may succeed: a number read as its decimal text in a list path or a page
            // number, a list path or page that is null (the default), a one-key list of keys
            let may_succeed = (*endpoint == "object/list"
                && (*field == "path" && (value.is_number() || value.is_null())
                    || *field == "page" && (value.is_u64() || value.is_null())))
                || (*endpoint == "object/get" && *field == "keys" && *value == json!(["typed"]));
            if !may_succeed {
                assert_eq!(reply.body["success"], false, "{what}: {}", reply.text);
                let sentence = &reply.errors()[0];
                // a number is read as its text: an unknown organization, key or job
                let by_value = match *field {
                    "organizationId" if value.is_number() => Some("Organization not found or access denied"),
                    "key" if value.is_number() => Some("Object not found: "),
                    "jobId" if value.is_number() => Some("Download job not found: "),
                    "keys" if *value == json!([]) => Some("No keys given: send 'keys' with at least one key"),
                    _ => None,
                };
                // null is absent: without a key (or jobId), /object/get asks for keys
                let absent = match (*endpoint, *field) {
                    ("object/get", "key" | "jobId") => "keys",
                    _ => field,
                };
                let expected = match by_value {
                    Some(start) => start.to_owned(),
                    None if value.is_null() => format!("Missing required field '{absent}'"),
                    None => format!("Invalid field '{field}': "),
                };
                assert!(sentence.starts_with(&expected), "{what}: {sentence}");
            }
        }
    }
    // a wrongly typed field never deletes or changes anything
    assert_eq!(client.properties("typed").await["md5"], HELLO_MD5);
    assert_healthy(&server, &client).await;
}

#[tokio::test]
async fn huge_field_values_and_bodies() {
    let server = TestServer::start();
    let client = server.client();
    client.set("big/victim", HELLO).await;
    let org = client.org.clone();
    let two_mb = "k".repeat(2 * MIB);
    let almost_a_mib = "v".repeat(900 * 1024);

    // bodies over 1 MiB on the small endpoints: 413 with the JSON body
    for endpoint in JSON_ENDPOINTS {
        let body = serde_json::to_vec(&json!({"organizationId": org, "key": two_mb, "keys": [two_mb], "path": two_mb}))
            .unwrap();
        let reply = raw_post(
            &server.addr,
            &format!("/api/v2/{endpoint}"),
            &client.headers(),
            "application/json",
            body,
        )
        .await;
        assert_eq!(refused(&reply, endpoint, TOO_LARGE), 413, "{endpoint}: {}", reply.text);
        // through reqwest too, which reads only after sending everything
        let body = serde_json::to_vec(&json!({"organizationId": org, "padding": two_mb})).unwrap();
        let reply = post_body(&server, &client, endpoint, "application/json", body).await;
        assert_eq!(refused(&reply, endpoint, TOO_LARGE), 413, "{endpoint}: {}", reply.text);
        // a form of 2 MB
        let body = format!("organizationId={org}&key={two_mb}").into_bytes();
        let reply = post_body(&server, &client, endpoint, "application/x-www-form-urlencoded", body).await;
        assert_eq!(refused(&reply, endpoint, TOO_LARGE), 413, "{endpoint}: {}", reply.text);
    }

    // a refusal before the body is read (authentication) reaches a client that reads after sending
    let stranger = client.http.clone();
    for endpoint in JSON_ENDPOINTS {
        let body = serde_json::to_vec(&json!({"organizationId": org, "padding": almost_a_mib})).unwrap();
        let response = stranger
            .post(server.url(endpoint))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{endpoint}: no answer to an unauthenticated 900 KB body: {e:?}"));
        let reply = Reply::read(response).await;
        reply.unauthorized();
    }

    // 900 KB values fit the body limit: each is an ordinary failure (or ignored when unknown)
    let errors = client.fails("object/properties", json!({"key": almost_a_mib})).await;
    assert!(
        errors[0].contains("1024 bytes"),
        "{}",
        &errors[0][..200.min(errors[0].len())]
    );
    let too_long = format!("it is {} bytes long, the limit is 1024 bytes", almost_a_mib.len());
    for (endpoint, body) in [
        ("object/delete", json!({"key": almost_a_mib})),
        ("object/get", json!({"keys": [almost_a_mib]})),
        ("object/list", json!({"path": almost_a_mib})),
    ] {
        let errors = client.fails(endpoint, body).await;
        assert!(
            errors[0].starts_with("Invalid key '") && errors[0].ends_with(&too_long),
            "{endpoint}: {}",
            &errors[0][..200.min(errors[0].len())]
        );
    }
    let errors = client.fails("object/get", json!({"jobId": almost_a_mib})).await;
    assert!(
        errors[0].starts_with("Download job not found: "),
        "{}",
        &errors[0][..200.min(errors[0].len())]
    );
    assert_eq!(
        client
            .fails(
                "object/properties",
                json!({"organizationId": almost_a_mib, "key": "big/victim"}),
            )
            .await,
        ["Organization not found or access denied"]
    );
    let meta = client
        .ok(
            "object/properties",
            json!({"key": "big/victim", "comment": almost_a_mib}),
        )
        .await;
    assert_eq!(meta["metadata"]["md5"], HELLO_MD5);

    // a 2 MB key or organization id in a multipart set: refused, nothing stored
    for (org_part, key_part, long_field) in [
        (org.as_bytes(), two_mb.as_bytes(), "key"),
        (two_mb.as_bytes(), b"big/new".as_slice(), "organizationId"),
    ] {
        let reply = server
            .raw_set(
                &client,
                &[
                    ("organizationId", None, org_part),
                    ("key", None, key_part),
                    ("objectData", Some("d"), b"data"),
                ],
            )
            .await;
        assert_eq!(
            refused(
                &reply,
                "2 MB text part",
                &format!("Invalid field '{long_field}': it is longer than 65536 bytes")
            ),
            200,
            "{}",
            &reply.text[..reply.text.len().min(300)]
        );
    }
    assert_eq!(client.names("big").await, ["victim"]);
    assert_eq!(client.used().await, HELLO.len() as u64);
    assert_eq!(server.blob_files(), 1);
    assert_eq!(server.staged_files(), 0);
    assert_healthy(&server, &client).await;
}

#[tokio::test]
async fn ten_thousand_multipart_parts() {
    let server = TestServer::start();
    let client = server.client();
    let org = client.org.clone();
    let filler: Vec<(String, Vec<u8>)> = (0..10_000).map(|i| (format!("p{i}"), b"x".to_vec())).collect();
    let many = |first: &[RawPart<'_>]| {
        let mut parts: Vec<RawPart<'_>> = first.to_vec();
        parts.extend(filler.iter().map(|(name, data)| (name.as_str(), None, data.as_slice())));
        multipart_body(&parts)
    };
    let ct = format!("multipart/form-data; boundary={RAW_BOUNDARY}");
    // the data and the fields first, then 10,000 unknown parts
    let body = many(&[
        ("organizationId", None, org.as_bytes()),
        ("key", None, b"many"),
        ("objectData", Some("d"), b"data"),
    ]);
    let started = Instant::now();
    let reply = raw_post(&server.addr, "/api/v2/object/set", &client.headers(), &ct, body).await;
    assert_eq!(refused(&reply, "10,000 parts", TOO_MANY_PARTS), 400, "{}", reply.text);
    assert!(started.elapsed() < Duration::from_secs(10));
    // 10,000 file parts
    let files: Vec<RawPart<'_>> = (0..10_000)
        .map(|_| ("objectData", Some("f"), b"y".as_slice()))
        .collect();
    let reply = raw_post(
        &server.addr,
        "/api/v2/object/set",
        &client.headers(),
        &ct,
        multipart_body(&files),
    )
    .await;
    refused(
        &reply,
        "10,000 file parts",
        "Invalid field 'objectData': it is given more than once",
    );
    // and on the small endpoints (the body stays under 1 MiB)
    let small = many(&[("organizationId", None, org.as_bytes()), ("key", None, b"many")]);
    assert!(small.len() < MIB);
    for endpoint in JSON_ENDPOINTS {
        let reply = post_body(&server, &client, endpoint, &ct, small.clone()).await;
        assert_eq!(
            refused(&reply, endpoint, TOO_MANY_PARTS),
            400,
            "{endpoint}: {}",
            reply.text
        );
    }
    assert_eq!(
        client.fails("object/properties", json!({"key": "many"})).await,
        ["Object not found: many"]
    );
    assert_eq!(client.used().await, 0);
    assert_eq!(server.blob_files(), 0);
    assert_eq!(server.staged_files(), 0);
    assert_healthy(&server, &client).await;
}

#[tokio::test]
async fn expect_100_continue_refusals_come_before_the_body() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_MAX_OBJECT_SIZE", MIB));
    let client = server.client();
    let stranger = auth_headers(&client.user, "not-the-token", &now_secs().to_string());
    let fifty_mb = 50 * MIB;
    let multipart = format!("multipart/form-data; boundary={RAW_BOUNDARY}");
    // (endpoint, headers, content type, declared length, the final answer expected)
    let cases = [
        ("object/set", &stranger, multipart.as_str(), fifty_mb, 401),
        ("object/set", &client.headers(), multipart.as_str(), fifty_mb, 413),
        ("object/set", &client.headers(), "application/json", 500_000, 200),
        ("object/list", &stranger, "application/json", fifty_mb, 401),
        ("object/list", &client.headers(), "application/json", fifty_mb, 413),
        ("object/properties", &client.headers(), "application/json", 2 * MIB, 413),
    ];
    for (endpoint, headers, content_type, length, expected) in cases {
        let stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "POST /api/v2/{endpoint} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {length}\r\nExpect: 100-continue\r\n{}\r\n",
            server.addr,
            header_lines(headers)
        );
        writer.write_all(head.as_bytes()).await.unwrap();
        // the body is never sent: the client waits for "100 Continue" or the final answer
        let answer = read_answer(&mut reader, Instant::now() + Duration::from_secs(5)).await;
        match answer {
            Answer::Status { status, body } => {
                assert_eq!(status, expected, "{endpoint} {expected}: {body}");
                let body: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(body["success"], false);
            }
            other => panic!("{endpoint} {expected}: {other:?}"),
        }
    }
    // an accepted upload that asks first still gets "100 Continue" and is stored
    let data = noise(200_000, 4);
    let body = multipart_body(&[
        ("organizationId", None, client.org.as_bytes()),
        ("key", None, b"continued"),
        ("objectData", Some("d"), &data),
    ]);
    let stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = multipart_head(
        &server.addr,
        &client.headers(),
        &format!("Content-Length: {}\r\nExpect: 100-continue\r\n", body.len()),
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    let interim = read_answer(&mut reader, Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(interim.status(), Some(100), "{interim:?}");
    writer.write_all(&body).await.unwrap();
    let answer = read_answer(&mut reader, Instant::now() + Duration::from_secs(10)).await;
    assert_eq!(answer.status(), Some(200), "{answer:?}");
    assert_eq!(client.properties("continued").await["md5"], md5_hex(&data));
    assert_eq!(server.blob_files(), 1);
    assert_healthy(&server, &client).await;
}

// --- bodies that never end ------------------------------------------------------------------------

#[tokio::test]
async fn a_chunked_multipart_body_that_never_closes_times_out() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_BODY_IDLE_TIMEOUT_SECS", 2));
    let client = server.client();
    for stop_after in ["fields", "data"] {
        let stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let mut body = text_part("organizationId", &client.org);
        body.push_str(&text_part("key", "never-closed"));
        if stop_after == "data" {
            body.push_str(&file_part_head());
            body.push_str(&"partial data ".repeat(1000));
        }
        let head = multipart_head(&server.addr, &client.headers(), "Transfer-Encoding: chunked\r\n");
        writer.write_all(head.as_bytes()).await.unwrap();
        writer.write_all(&chunk(body.as_bytes())).await.unwrap();
        writer.flush().await.unwrap();
        let stopped = Instant::now();
        // ... and nothing more, with the connection left open
        let answer = read_answer(&mut reader, stopped + Duration::from_secs(8)).await;
        let waited = stopped.elapsed();
        assert!(!matches!(answer, Answer::Silent), "{stop_after}: no answer within 8 s");
        assert!(
            waited < Duration::from_millis(4500),
            "{stop_after}: answered after {waited:?} with a 2 s idle timeout: {answer:?}"
        );
        if let Answer::Status { status, body } = &answer {
            assert!([400, 408].contains(status), "{stop_after}: {status} {body}");
        }
        drop(writer);
    }
    assert_eq!(
        client.fails("object/properties", json!({"key": "never-closed"})).await,
        ["Object not found: never-closed"]
    );
    assert_eq!(client.used().await, 0);
    assert_eq!(server.blob_files(), 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.staged_files() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.staged_files(), 0, "the partial upload is thrown away");
    assert_healthy(&server, &client).await;
}

/// How the body of an endless part header is framed and how it ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// `Content-Length` of 20 MB, all of it sent.
    Length,
    /// Chunked, 20 MB, then the last chunk.
    Chunked,
    /// Chunked, and sent until the server answers or hangs up.
    Endless,
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_endless_part_header_is_refused_in_bounded_memory() {
    let server = TestServer::start();
    let client = server.client();
    client.set("warm-up", HELLO).await;
    let baseline = server.peak_rss().expect("VmHWM");
    let total = 20 * MIB;
    for framing in [Framing::Length, Framing::Chunked, Framing::Endless] {
        let stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let mut prefix = text_part("organizationId", &client.org);
        prefix.push_str(&format!(
            "--{RAW_BOUNDARY}\r\nContent-Disposition: form-data; name=\"objectData\"; filename=\"d\"\r\nX-Pad: "
        ));
        let framing_header = match framing {
            Framing::Length => format!("Content-Length: {total}\r\n"),
            _ => "Transfer-Encoding: chunked\r\n".to_owned(),
        };
        let head = multipart_head(&server.addr, &client.headers(), &framing_header);
        let sender = tokio::spawn(async move {
            writer.write_all(head.as_bytes()).await?;
            let piece = vec![b'a'; 64 * 1024];
            let mut sent = prefix.len() + 1024;
            let first = [prefix.as_bytes(), &piece[..1024]].concat();
            let framed = |data: &[u8]| {
                if framing == Framing::Length {
                    data.to_vec()
                } else {
                    chunk(data)
                }
            };
            writer.write_all(&framed(&first)).await?;
            while sent < total || framing == Framing::Endless {
                let n = if framing == Framing::Endless {
                    piece.len()
                } else {
                    piece.len().min(total - sent)
                };
                writer.write_all(&framed(&piece[..n])).await?;
                sent += n;
            }
            if framing == Framing::Chunked {
                writer.write_all(b"0\r\n\r\n").await?;
            }
            writer.flush().await?;
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, std::io::Error>(sent)
        });
        let started = Instant::now();
        let answer = read_answer(&mut reader, started + Duration::from_secs(20)).await;
        let waited = started.elapsed();
        sender.abort();
        match (framing, answer) {
            (_, Answer::Status { status, body }) => {
                assert_eq!(status, 400, "{framing:?}: {body}");
                assert!(
                    body.contains("part headers"),
                    "{framing:?}: a clear JSON sentence: {body}"
                );
            }
            // a sender that never stops may see the connection cut once the drain allowance is spent
            (Framing::Endless, Answer::Closed) => {}
            (_, other) => panic!("{framing:?}: an endless part header got no 400 in {waited:?}: {other:?}"),
        }
        assert!(
            waited < Duration::from_secs(15),
            "{framing:?}: refused after {waited:?}"
        );
    }
    let peak = server.peak_rss().unwrap();
    assert!(
        peak < baseline + 16 * MIB as u64,
        "endless part headers raised the peak memory from {baseline} to {peak} bytes"
    );
    assert_eq!(client.used().await, HELLO.len() as u64);
    assert_eq!(server.staged_files(), 0);
    assert_healthy(&server, &client).await;
}

// --- headers ------------------------------------------------------------------------------------

#[tokio::test]
async fn header_floods_are_refused_not_hung() {
    let server = TestServer::start();
    let client = server.client();
    let list = |extra: &str| {
        let body = json!({"organizationId": client.org}).to_string();
        format!(
            "POST /api/v2/object/list HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n{}{extra}\r\n{body}",
            server.addr,
            body.len(),
            header_lines(&client.headers()),
        )
        .into_bytes()
    };
    // a normal request on this raw path works (the harness itself is right)
    let answer = raw_exchange(&server.addr, list(""), Duration::from_secs(5)).await;
    assert_eq!(answer.status(), Some(200), "{answer:?}");

    let many: String = (0..200).map(|i| format!("X-Flood-{i}: value {i}\r\n")).collect();
    let one_huge = format!("X-Huge: {}\r\n", "h".repeat(100 * 1024));
    let many_huge: String = (0..20)
        .map(|i| format!("X-Big-{i}: {}\r\n", "b".repeat(8 * 1024)))
        .collect();
    let huge_line = format!(
        "GET /api/v2/authenticate?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "q".repeat(100 * 1024)
    );
    let cases = [
        ("200 headers", list(&many)),
        ("one 100 KB header", list(&one_huge)),
        ("20 headers of 8 KB", list(&many_huge)),
        ("a 100 KB request line", huge_line.into_bytes()),
    ];
    for (case, request) in cases {
        let started = Instant::now();
        let answer = raw_exchange(&server.addr, request, Duration::from_secs(10)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{case}: took {:?}",
            started.elapsed()
        );
        match answer {
            Answer::Status { status, .. } => assert!([400, 413, 414, 431].contains(&status), "{case}: {status}"),
            Answer::Closed => {}
            Answer::Silent => panic!("{case}: the server neither answered nor closed"),
        }
    }
    assert_healthy(&server, &client).await;
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_HEADER_READ_TIMEOUT_SECS", 2));
    let client = server.client();
    let request = format!(
        "POST /api/v2/object/list HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{}X-Slow: {}\r\n\r\n",
        server.addr,
        header_lines(&client.headers()),
        "s".repeat(100)
    );
    let stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in request.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let answer = read_answer(&mut reader, started + Duration::from_secs(10)).await;
    let waited = started.elapsed();
    trickle.abort();
    match &answer {
        Answer::Closed => {}
        Answer::Status { status, .. } => assert_eq!(*status, 408, "{answer:?}"),
        Answer::Silent => panic!("a header trickle kept the connection for 10 s"),
    }
    assert!(
        waited < Duration::from_secs(5),
        "cut off after {waited:?} with a 2 s header timeout"
    );
    assert_healthy(&server, &client).await;
}

#[tokio::test]
async fn a_slow_body_under_the_idle_timeout_works_and_a_stalled_one_is_refused() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_BODY_IDLE_TIMEOUT_SECS", 3));
    let client = server.client();
    let data = noise(3000, 9);
    let body = multipart_body(&[
        ("organizationId", None, client.org.as_bytes()),
        ("key", None, b"slow"),
        ("objectData", Some("d"), &data),
    ]);
    let head = multipart_head(
        &server.addr,
        &client.headers(),
        &format!("Content-Length: {}\r\n", body.len()),
    );

    // the body in four pieces, a second apart: under the 3 s idle timeout, so it is stored
    let stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let pieces: Vec<Vec<u8>> = body.chunks(body.len().div_ceil(4)).map(<[u8]>::to_vec).collect();
    let sender = tokio::spawn(async move {
        for piece in pieces {
            tokio::time::sleep(Duration::from_secs(1)).await;
            writer.write_all(&piece).await.unwrap();
            writer.flush().await.unwrap();
        }
        writer
    });
    let answer = read_answer(&mut reader, Instant::now() + Duration::from_secs(15)).await;
    let _writer = sender.await.unwrap();
    match answer {
        Answer::Status { status, body } => {
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                serde_json::from_str::<Value>(&body).unwrap(),
                json!({"success": true, "errors": []})
            );
        }
        other => panic!("a slow body was not stored: {other:?}"),
    }
    assert_eq!(client.properties("slow").await["md5"], md5_hex(&data));

    // half the body, then silence: refused within the idle timeout, nothing stored
    let body = multipart_body(&[
        ("organizationId", None, client.org.as_bytes()),
        ("key", None, b"stalled"),
        ("objectData", Some("d"), &data),
    ]);
    let stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = multipart_head(
        &server.addr,
        &client.headers(),
        &format!("Content-Length: {}\r\n", body.len()),
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    writer.write_all(&body[..body.len() / 2]).await.unwrap();
    writer.flush().await.unwrap();
    let stopped = Instant::now();
    let answer = read_answer(&mut reader, stopped + Duration::from_secs(10)).await;
    let waited = stopped.elapsed();
    drop(writer);
    assert!(
        !matches!(answer, Answer::Silent),
        "a stalled body kept the request for 10 s"
    );
    assert!(
        waited < Duration::from_secs(5),
        "refused after {waited:?} with a 3 s idle timeout"
    );
    if let Answer::Status { status, body } = &answer {
        assert!([400, 408].contains(status), "{status} {body}");
    }
    assert_eq!(
        client.fails("object/properties", json!({"key": "stalled"})).await,
        ["Object not found: stalled"]
    );
    assert_eq!(client.used().await, data.len() as u64);
    assert_eq!(server.blob_files(), 1);
    assert_eq!(server.staged_files(), 0);
    assert_healthy(&server, &client).await;
}

// --- keys ---------------------------------------------------------------------------------------

/// Every key form the spec rejects (section 4).
fn rejected_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        "/",
        "//",
        "\\",
        "/\\/",
        ".",
        "..",
        "./x",
        "x/.",
        "a/./b",
        "a/../b",
        "../escape",
        "a/..",
        "a\\..\\b",
        "..\\x",
        "a/../../b",
        "\\..\\..\\etc\\passwd",
        "/../etc/passwd",
        "a\u{0}b",
        "a\u{1}b",
        "a\tb",
        "a\nb",
        "a\rb",
        "a\u{1b}[31mred",
        "a\u{1f}b",
        "a\u{7f}b",
        "trailing/",
        "a/b/",
        "a\\",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.push("k".repeat(1025));
    keys.push(format!("dir/{}", "k".repeat(1021)));
    keys.push("é".repeat(513));
    keys.push(["d"; 101].join("/"));
    keys
}

/// Keys that normalize to the root (a fine list path, an error for a file).
const ROOTISH: [&str; 5] = ["", "/", "//", "\\", "/\\/"];
/// Keys with a trailing separator (a fine folder, an error for a file).
const TRAILING: [&str; 3] = ["trailing/", "a/b/", "a\\"];

#[tokio::test]
async fn every_rejected_key_form_on_every_endpoint_that_takes_a_key() {
    let server = TestServer::start();
    let client = server.client();
    client.set("kept/file", HELLO).await;
    client.set("escape", b"top").await;
    let names_key = |errors: &[String], key: &str, what: &str| {
        // Long keys are shown by their first 100 characters.
        let shown: String = key.chars().take(100).collect();
        assert!(
            errors[0].contains(&shown) && errors[0].to_lowercase().contains("key"),
            "{what} {key:?}: the error names the key: {errors:?}"
        );
    };
    for key in rejected_keys() {
        let shown: String = key.chars().take(40).collect();
        let errors = client.set_raw(&key, b"x").await.failure();
        names_key(&errors, &key, "set");
        let errors = client.fails("object/properties", json!({ "key": key })).await;
        names_key(&errors, &key, "properties");

        let errors = client.fails("object/delete", json!({ "key": key })).await;
        if TRAILING.contains(&key.as_str()) {
            // a folder that does not exist: nothing to delete
            let folder = key.trim_end_matches(['/', '\\']);
            assert_eq!(errors, [format!("Object not found: {folder}")], "delete {key:?}");
        } else {
            names_key(&errors, &key, "delete");
        }
        if TRAILING.contains(&key.as_str()) {
            // a folder that does not exist: nothing found
            assert_eq!(
                client.fails("object/get", json!({ "keys": [key] })).await,
                ["None of the requested keys exist"],
                "get {key:?}"
            );
        } else {
            // one bad key fails the whole request, naming it
            let errors = client.fails("object/get", json!({ "keys": ["kept/file", key] })).await;
            names_key(&errors, &key, "get");
        }
        let errors = client.fails("object/get", json!({ "key": key })).await;
        names_key(&errors, &key, "get (legacy)");

        let reply = client.post_json("object/list", json!({ "path": key })).await;
        if ROOTISH.contains(&key.as_str()) || TRAILING.contains(&key.as_str()) {
            reply.ok();
        } else {
            names_key(&reply.failure(), &key, &format!("list {shown:?}"));
        }
    }
    assert_eq!(client.properties("kept/file").await["md5"], HELLO_MD5);
    assert_eq!(client.properties("escape").await["size"], 3);
    assert_eq!(client.used().await, (HELLO.len() + 3) as u64);
    assert_eq!(server.org_entry(&client.org)["usedFiles"], 2);
    assert_eq!(server.blob_files(), 2);
    assert_eq!(server.staged_files(), 0);
    assert_healthy(&server, &client).await;
}

/// Every regular file under `dir`, with its content.
fn files_under(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && !entry.file_name().to_string_lossy().ends_with(".log") {
                out.insert(entry.path(), std::fs::read(entry.path()).unwrap_or_default());
            }
        }
    }
    out
}

#[tokio::test]
async fn path_traversal_in_keys_never_escapes_the_store() {
    let server = TestServer::start();
    let client = server.client();
    let home = server.data_dir().parent().unwrap().to_owned();
    // a file next to the data directory, and objects that traversal forms would reach
    std::fs::write(home.join("outside.txt"), b"outside the store").unwrap();
    client.set("x", b"root x").await;
    client.set("secret/y", b"secret y").await;
    let before = files_under(&home);

    let traversal = [
        "../x",
        "a/../x",
        "a/../../x",
        "..\\x",
        "a\\..\\..\\x",
        "secret/../x",
        "../outside.txt",
        "../../outside.txt",
        "../data/metadata.sqlite3",
        "/../../../../etc/passwd",
        "secret/./y",
    ];
    for key in traversal {
        let errors = client.set_raw(key, b"overwritten!").await.failure();
        assert_eq!(
            errors,
            [format!(
                "Invalid key '{key}': '.' and '..' are not allowed as path segments"
            )]
        );
        assert_eq!(client.fails("object/properties", json!({ "key": key })).await, errors);
        assert_eq!(client.fails("object/delete", json!({ "key": key })).await, errors);
        assert_eq!(client.fails("object/get", json!({ "keys": [key] })).await, errors);
        assert_eq!(client.fails("object/list", json!({ "path": key })).await, errors);
    }
    // percent-escapes are ordinary characters in JSON and multipart: a literal key, stored as such
    for key in [
        "%2e%2e/x",
        "%2e%2e%2fx",
        "..%2fx",
        "%2E%2E%5Cx",
        "...",
        "..a/x",
        "a/..b",
    ] {
        client.set(key, key.as_bytes()).await;
        let meta = client.properties(key).await;
        assert_eq!(meta["key"], key);
        assert_eq!(meta["size"], key.len());
    }
    let root = client.names("/").await;
    for name in ["%2e%2e", "%2e%2e%2fx", "..%2fx", "%2E%2E%5Cx", "...", "..a", "a"] {
        assert!(root.contains(&name.to_owned()), "{name} in {root:?}");
    }
    // in a form body the value is percent-decoded once, and then it is a traversal form: refused
    let org = client.org.clone();
    for body in [
        format!("organizationId={org}&key=%2e%2e%2fx"),
        format!("organizationId={org}&key=..%5Cx"),
        format!("organizationId={org}&key=secret%2f..%2fx"),
    ] {
        for endpoint in ["object/properties", "object/delete"] {
            let reply = post_body(
                &server,
                &client,
                endpoint,
                "application/x-www-form-urlencoded",
                body.clone().into_bytes(),
            )
            .await;
            assert!(reply.failure()[0].contains(".."), "{endpoint} {body}: {}", reply.text);
        }
    }
    // only the normalized keys were touched
    assert_eq!(client.download(json!(["x"])).await["x"], b"root x");
    assert_eq!(client.properties("secret/y").await["md5"], md5_hex(b"secret y"));
    assert_eq!(
        std::fs::read(home.join("outside.txt")).unwrap(),
        b"outside the store",
        "a file beside the data directory is untouched"
    );
    let after = files_under(&home);
    for (path, content) in &before {
        if path.starts_with(server.data_dir()) {
            continue; // the store's own files change as it works
        }
        assert_eq!(after.get(path), Some(content), "{} changed", path.display());
    }
    for path in after.keys() {
        assert!(
            path.starts_with(server.data_dir()) || before.contains_key(path),
            "a file appeared outside the data directory: {}",
            path.display()
        );
    }
    assert_healthy(&server, &client).await;
}

// --- download tokens ----------------------------------------------------------------------------

async fn raw_get(addr: &str, target: &str) -> (u16, String) {
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    match raw_exchange(addr, request.into_bytes(), Duration::from_secs(10)).await {
        Answer::Status { status, body } => (status, body),
        other => panic!("GET {target}: {other:?}"),
    }
}

fn query_value(url: &str, name: &str) -> String {
    let query = url.split_once('?').expect("a query").1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .to_owned()
}

#[tokio::test]
async fn path_traversal_and_forgery_in_download_tokens() {
    let server = TestServer::start();
    let client = server.client();
    client.set("a", b"content of a").await;
    client.set("b", b"content of b").await;
    let (job_a, url_a) = client.download_url(json!(["a"])).await;
    let (job_b, url_b) = client.download_url(json!(["b"])).await;
    let (exp_a, sig_a) = (query_value(&url_a, "expires"), query_value(&url_a, "signature"));
    let (exp_b, sig_b) = (query_value(&url_b, "expires"), query_value(&url_b, "signature"));
    // a signer with the server's own key, to show that even signed tokens cannot reach a file
    let key = stowage::crypto::ServerKey::load_or_create(&server.data_dir().join("server.key")).unwrap();
    let signer = key.url_signer();
    let future = now_secs() + 3600;
    let past = now_secs() - 10;
    let signed = |job: &str, expires: i64| {
        // Links name (and sign) the user they were made for.
        format!(
            "/api/v2/download/{}?expires={expires}&user={}&signature={}",
            job.replace('/', "%2F"),
            client.user,
            signer.sign(&format!("{job}:{}", client.user), expires)
        )
    };
    let log_before = server.log().len();

    let not_found: Vec<String> = vec![
        "/api/v2/download/../../etc/passwd".into(),
        "/api/v2/download/..%2f..%2fetc%2fpasswd".into(),
        format!("/api/v2/download/%2e%2e%2fx?expires={exp_a}&signature={sig_b}"),
        format!("/api/v2/download/..%2F..%2Fdata%2Fmetadata.sqlite3?expires={exp_a}&signature=x"),
        "/api/v2/download/%2e%2e?expires=..&signature=..".into(),
        "/api/v2/download/?expires=1&signature=x".into(),
        "/api/v2/download".into(),
        format!("/api/v2/download/{job_a}/../{job_b}?expires={exp_b}&signature={sig_b}"),
        format!("/api/v2/download/{job_a}/x?expires={exp_a}&signature={sig_b}"),
        // a valid job with another job's signature (and its expiry)
        format!("/api/v2/download/{job_a}?expires={exp_b}&signature={sig_b}"),
        format!("/api/v2/download/{job_a}?expires={exp_a}&signature={sig_b}"),
        format!("/api/v2/download/{job_a}?expires={exp_a}&signature=%00%2e%2e"),
        format!("/api/v2/download/{job_a}?expires=99999999999999999999999&signature={sig_b}"),
        format!("/api/v2/download/{job_a}?expires=-1&signature={sig_b}"),
        format!("/api/v2/download/{job_a}?expires={exp_a}&expires={exp_b}&signature={sig_a}"),
        format!("/api/v2/download/{job_a}?expires={exp_a}&signature={sig_a}&signature={sig_b}"),
        format!("/api/v2/download/{job_a}%ff?expires={exp_a}&signature={sig_a}"),
        format!("/api/v2/download/{job_a}?expires={exp_a}&signature={sig_a}%ff%fe"),
        format!("/api/v2/download/{job_a}?%ff=%fe&expires={exp_a}&signature={sig_b}"),
        // signed with the real key, yet naming no job: never a path on disk
        signed("../../etc/passwd", future),
        signed("../data/metadata.sqlite3", future),
        signed(&format!("../{job_a}"), future),
        signed("/etc/passwd", future),
    ];
    for target in &not_found {
        let (status, body) = raw_get(&server.addr, target).await;
        assert!([404, 410].contains(&status), "{target}: {status} {body}");
        let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{target}: JSON body: {body}"));
        assert_eq!(body["success"], false, "{target}");
        assert!(!body.to_string().contains("root:"), "{target}: {body}");
    }
    // a genuine signature for a time already past: gone
    let (status, body) = raw_get(&server.addr, &signed(&job_a, past)).await;
    assert!(status == 410 || status == 404, "expired: {status} {body}");
    // a genuine signature for a job that does not exist
    let (status, body) = raw_get(&server.addr, &signed(&"0".repeat(job_a.len()), future)).await;
    assert!(status == 410 || status == 404, "unknown job: {status} {body}");
    assert!(body.contains("success"), "{body}");

    // the genuine URLs still work and give exactly their own content
    assert_eq!(unzip(&fetch_zip(&url_a).await)["a"], b"content of a");
    assert_eq!(unzip(&fetch_zip(&url_b).await)["b"], b"content of b");
    assert!(!server.log()[log_before..].contains("panicked"));
    assert_healthy(&server, &client).await;
}

/// Names of the entries of a zip as its local headers and its central directory spell them.
fn raw_zip_names(zip: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for (signature, name_len_at, header_len) in [(b"PK\x03\x04", 26, 30), (b"PK\x01\x02", 28, 46)] {
        let mut at = 0;
        while let Some(found) = zip[at..].windows(4).position(|w| w == signature) {
            let start = at + found;
            let field = |offset: usize| u16::from_le_bytes([zip[start + offset], zip[start + offset + 1]]) as usize;
            let len = field(name_len_at);
            let name_at = start + header_len;
            names.push(String::from_utf8_lossy(&zip[name_at..name_at + len]).into_owned());
            at = start + 4;
        }
    }
    names
}

#[tokio::test]
async fn zip_entry_names_never_climb_or_start_at_the_root() {
    let server = TestServer::start();
    let client = server.client();
    let given = [
        ("/a//b", "a/b"),
        ("a\\c", "a/c"),
        ("\\\\lead\\x", "lead/x"),
        ("//deep///er////y", "deep/er/y"),
        ("%2e%2e/z", "%2e%2e/z"),
        ("..dots/w", "..dots/w"),
        ("/ spaced /v", " spaced /v"),
    ];
    for (key, _) in given {
        client.set(key, key.as_bytes()).await;
    }
    let keys: Vec<&str> = given.iter().map(|(k, _)| *k).chain(["\\a\\", "//a//"]).collect();
    let (_, url) = client.download_url(json!(keys)).await;
    let zip = fetch_zip(&url).await;
    let entries = unzip(&zip);
    let expected: std::collections::BTreeSet<&str> = given.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        entries
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        expected
    );
    for (key, name) in given {
        assert_eq!(entries[name], key.as_bytes(), "{name}");
    }
    let raw = raw_zip_names(&zip);
    assert_eq!(raw.len(), 2 * given.len(), "{raw:?}");
    for name in raw {
        assert!(!name.starts_with('/') && !name.starts_with('\\'), "{name:?}");
        assert!(!name.contains('\\'), "{name:?}");
        assert!(
            !name.split('/').any(|s| s == ".." || s == "." || s.is_empty()),
            "{name:?}"
        );
    }
    assert_healthy(&server, &client).await;
}

// --- bugs found by these tests, fixed in src/server.rs and src/service -------------------------

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_within_the_header_timeout() {
    let server = TestServer::start_with(Options::new().env("STOWAGE_HEADER_READ_TIMEOUT_SECS", 2));
    let client = server.client();
    let stream = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let (mut reader, _writer) = stream.into_split();
    let started = Instant::now();
    let answer = read_answer(&mut reader, started + Duration::from_secs(8)).await;
    assert!(
        !matches!(answer, Answer::Silent),
        "a silent connection was still open after 8 s with a 2 s header timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_healthy(&server, &client).await;
}

#[tokio::test]
async fn a_trailing_slash_never_names_a_file_in_delete_or_get() {
    let server = TestServer::start();
    let client = server.client();
    client.set("a/b", HELLO).await;
    assert_eq!(
        client.fails("object/get", json!({"keys": ["a/b/"]})).await,
        ["None of the requested keys exist"]
    );
    assert_eq!(
        client.fails("object/delete", json!({"key": "a/b/"})).await,
        ["Object not found: a/b/"]
    );
    assert_eq!(client.properties("a/b").await["md5"], HELLO_MD5);
    assert_healthy(&server, &client).await;
}

#[tokio::test]
async fn extreme_expiries_in_signed_download_urls_are_refused_not_a_panic() {
    let server = TestServer::start();
    let client = server.client();
    client.set("a", b"a").await;
    let (job, _) = client.download_url(json!(["a"])).await;
    let signer = stowage::crypto::ServerKey::load_or_create(&server.data_dir().join("server.key"))
        .unwrap()
        .url_signer();
    for expires in [i64::MAX, i64::MIN, i64::MAX / 1000 + 1] {
        let target = format!(
            "/api/v2/download/{job}?expires={expires}&signature={}",
            signer.sign(&job, expires)
        );
        let (status, body) = raw_get(&server.addr, &target).await;
        assert!([404, 410].contains(&status), "expires={expires}: {status} {body}");
    }
    assert_healthy(&server, &client).await;
}
