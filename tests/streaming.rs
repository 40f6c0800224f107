//! "The body streams to storage; no upload is ever held whole in memory" (spec 5.1), and the zip
//! of a download streams out the same way: the server's peak memory stays far below the size of
//! an object that goes in and comes back out.
//!
//! What a server may hold for one upload is the blob store writer's bound (an S3 store gathers
//! whole parts: up to three 8 MiB parts, `blob::s3`) plus the upload's own buffers (the md5
//! queue, a few 1 MiB batches), so the allowance is that plus a margin, far below the object.

mod common;

use common::*;
use futures::StreamExt;
use md5::Digest;
use serde_json::json;

const MIB: usize = 1024 * 1024;
const OBJECT: usize = 128 * MIB;
/// Room for the upload's own buffers, the HTTP layers' and the allocator's: the same on every
/// backend.
const MARGIN: usize = 32 * MIB;
/// What an S3 blob store's writer gathers at most: three parts of 8 MiB (two on their way while
/// the next fills).
const S3_WRITER: usize = 24 * MIB;
// The allowance stays far below the object, or the test would prove nothing.
const _: () = assert!(MARGIN + S3_WRITER < OBJECT / 2);
const CHUNK: usize = 256 * 1024;

#[cfg(target_os = "linux")]
#[tokio::test]
async fn large_objects_stream_in_and_out_without_being_held_in_memory() {
    let server = TestServer::start();
    let client = server.client();
    let baseline = server.peak_rss().expect("VmHWM");

    // upload: generated chunk by chunk, never whole in this process either
    let chunks = futures::stream::iter((0..OBJECT / CHUNK).map(|i| Ok::<_, std::io::Error>(noise(CHUNK, i as u64))));
    let form = reqwest::multipart::Form::new()
        .text("organizationId", client.org.clone())
        .text("key", "huge.bin")
        .part(
            "objectData",
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(chunks), OBJECT as u64)
                .file_name("huge.bin"),
        );
    client.send_multipart(form).await.ok();
    let mut expected = md5::Md5::new();
    for i in 0..OBJECT / CHUNK {
        expected.update(noise(CHUNK, i as u64));
    }
    let expected = hex::encode(expected.finalize());
    let meta = client.properties("huge.bin").await;
    assert_eq!(meta["size"], OBJECT);
    assert_eq!(meta["md5"], expected);
    let after_upload = server.peak_rss().unwrap();

    // download: the zip is read as a stream and hashed on the way
    let (_, url) = client.download_url(json!(["huge.bin"])).await;
    let response = http_client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut total = 0usize;
    let mut archive = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len();
        archive.extend_from_slice(&chunk);
    }
    assert!(total > OBJECT);
    let after_download = server.peak_rss().unwrap();
    let entries = unzip(&archive);
    assert_eq!(md5_hex(&entries["huge.bin"]), expected);

    let writer = if embedded() { 0 } else { S3_WRITER };
    let limit = baseline + (MARGIN + writer) as u64;
    assert!(
        after_upload < limit,
        "a {OBJECT}-byte upload raised the server's peak memory from {baseline} to {after_upload} bytes"
    );
    assert!(
        after_download < limit,
        "a {OBJECT}-byte download raised the server's peak memory from {baseline} to {after_download} bytes"
    );
}
