//! S3 multipart uploads across restarts and time (issue 10 item 8).
//!
//! A crash at any step of an S3 multipart upload leaves nothing half-visible.
//! Rounds of: a multipart upload of three parts through the S3 API (object_store as the signing
//! client), the server killed with SIGKILL at a random moment of it, a restart on the same store;
//! then the key holds either nothing or the whole body (S3 and the QuantConnect API agree on its
//! md5), and `stowage fsck` finds nothing but recent orphan bodies (written just before the kill,
//! named by nothing, swept after an hour). Runs on the configured backend.

mod common;

use common::TestServer;
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStoreExt, PutPayload, RetryConfig};
use rand::{Rng, SeedableRng};

const PART: usize = 5 * 1024 * 1024;

fn s3_client(server: &TestServer, bucket: &str, key: &serde_json::Value) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(server.s3_url.as_deref().expect("the S3 API is on"))
        .with_bucket_name(bucket)
        .with_access_key_id(key["accessKeyId"].as_str().expect("accessKeyId"))
        .with_secret_access_key(key["secretAccessKey"].as_str().expect("secretAccessKey"))
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .with_retry(RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        })
        .build()
        .expect("S3 client")
}

/// A body of three parts (two of 5 MiB, one shorter) that differs per round.
fn body(round: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(round);
    let mut bytes = vec![0u8; 2 * PART + 123_457];
    rng.fill(&mut bytes[..]);
    bytes
}

async fn upload(store: AmazonS3, key: String, bytes: Vec<u8>) -> Result<(), object_store::Error> {
    let mut upload = store.put_multipart(&Path::from(key)).await?;
    for part in bytes.chunks(PART) {
        upload.put_part(PutPayload::from(part.to_vec())).await?;
    }
    upload.complete().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_multipart_upload_leaves_the_whole_object_or_nothing() {
    let mut server = TestServer::start();
    let creds = server.credentials();
    let org = creds.organization_id.clone();
    let key = server.admin(&["s3-key", "create", "--user", &creds.user_id]);
    // How long one upload takes here, so that the kills spread over all of it: the parts, the
    // completion's assembly and its commit.
    let started = std::time::Instant::now();
    upload(s3_client(&server, &org, &key), "crash/timing.bin".into(), body(99))
        .await
        .expect("an upload without a crash");
    let whole_upload = started.elapsed();
    let rounds = 10u32;
    let (mut whole, mut absent) = (0, 0);
    for round in 0..rounds {
        let name = format!("crash/{round}.bin");
        let bytes = body(u64::from(round));
        let store = s3_client(&server, &org, &key);
        let task = tokio::spawn(upload(store, name.clone(), bytes.clone()));
        // Kill times from 10 % to 120 % of an upload, the later ones around its completion.
        let at = whole_upload.mul_f64(0.1 + 1.1 * f64::from(round) / f64::from(rounds - 1));
        tokio::time::sleep(at).await;
        let pid = server.pid().expect("running");
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        assert!(killed.is_ok_and(|s| s.success()));
        let _ = task.await;
        server = server.restart();

        let store = s3_client(&server, &org, &key);
        match store.get(&Path::from(name.clone())).await {
            Ok(found) => {
                let read = found.bytes().await.expect("read the object");
                assert_eq!(read.len(), bytes.len(), "round {round}: a partial object is visible");
                assert!(
                    read[..] == bytes[..],
                    "round {round}: the object's bytes differ from the upload"
                );
                let md5 = hex::encode(Md5::digest(&bytes));
                let properties = server.client().properties(&name).await;
                assert_eq!(properties["md5"], serde_json::json!(md5), "round {round}: {properties}");
                whole += 1;
            }
            Err(object_store::Error::NotFound { .. }) => absent += 1,
            Err(e) => panic!("round {round}: reading {name} after the restart: {e}"),
        }
        // A body written just before the kill and named by nothing is what a crash leaves (the
        // orphan sweep removes it after an hour); anything else is damage.
        let (_, report) = server.fsck();
        let damage: Vec<&serde_json::Value> = report["problems"]
            .as_array()
            .expect("fsck problems")
            .iter()
            .filter(|p| !(p["kind"] == "orphanBlob" && p["recent"] == true))
            .collect();
        assert!(damage.is_empty(), "round {round}: fsck after the crash: {report}");
    }
    eprintln!("after {rounds} crashes ({whole_upload:?} per upload): {whole} whole objects, {absent} absent");
    assert!(absent > 0, "no crash came before an upload completed");
}

#[tokio::test]
async fn pending_parts_hold_quota_until_the_abandoned_upload_expires() {
    let server = TestServer::start_with(
        common::Options::new()
            .env("STOWAGE_S3_API_MULTIPART_EXPIRY_SECS", 2)
            .env("STOWAGE_GC_INTERVAL_SECS", 1),
    );
    let creds = server.credentials();
    let org = creds.organization_id.clone();
    server.admin(&["org", "set-quota", "--org", &org, "--max-bytes", "6 MiB"]);
    let key = server.admin(&["s3-key", "create", "--user", &creds.user_id]);
    let store = s3_client(&server, &org, &key);
    let mut upload = store
        .put_multipart(&Path::from("pending/big.bin"))
        .await
        .expect("create an upload");
    upload
        .put_part(PutPayload::from(vec![7u8; PART]))
        .await
        .expect("a 5 MiB part fits in 6 MiB");
    // The part's 5 MiB count: 2 MiB more through the QuantConnect API passes the quota.
    let client = server.client();
    let refused = client.set_raw("two.bin", &vec![1u8; 2 * 1024 * 1024]).await;
    let errors = format!("{}", refused.body["errors"]);
    assert!(errors.contains("Storage quota exceeded"), "{}", refused.text);
    // Abandoned: after the expiry the collector removes it, and its bytes are free again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let reply = client.set_raw("two.bin", &vec![1u8; 2 * 1024 * 1024]).await;
        if reply.body["success"] == serde_json::json!(true) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expired upload still holds quota: {}",
            reply.text
        );
    }
    // The upload is gone: completing it now is refused.
    let completed = upload.complete().await;
    assert!(completed.is_err(), "an expired upload completed");
}
