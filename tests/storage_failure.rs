//! Storage failure: an in-process server whose blob store can be made to fail like a full disk
//! (ENOSPC) while creating, writing or finishing a body. A set then answers HTTP 503 with a fixed
//! JSON sentence that holds no backend text, while the server's log line has the whole cause and
//! the request id; what was stored before stays intact and readable, usage does not move, no
//! partial body is left behind, and sets work again once the disk has room.
//!
//! Also: the server's debug log never holds an API token or the valid hash of a request.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use serde_json::json;
use stowage::blob::local::LocalBlobs;
use stowage::blob::{BlobError, BlobStore, BlobStream, BlobWriter, StoredBlob};
use stowage::config::Config;
use stowage::crypto::{ServerKey, generate_token};
use stowage::http::{AppState, app};
use stowage::ids::BlobId;
use stowage::meta::sqlite::SqliteMeta;
use stowage::meta::{Identities, Permissions};
use stowage::server::{ConnectionLimits, run};
use stowage::service::{Limits, Service, now_ms};

// --- a blob store that can run out of space -----------------------------------------------------

const OFF: u8 = 0;
/// `create` fails (no room even for an empty file).
const FAIL_CREATE: u8 = 1;
/// `write` fails once the byte budget is spent (the disk fills during the upload).
const FAIL_WRITE: u8 = 2;
/// `finish` fails (the final flush or fsync finds no room).
const FAIL_FINISH: u8 = 3;

fn enospc() -> BlobError {
    BlobError::from(std::io::Error::from_raw_os_error(28))
}

#[derive(Default)]
struct Switch {
    mode: AtomicU8,
    /// Bytes `write` still accepts in [`FAIL_WRITE`] mode.
    budget: AtomicI64,
}

impl Switch {
    fn set(&self, mode: u8, budget: i64) {
        self.budget.store(budget, Ordering::SeqCst);
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn is(&self, mode: u8) -> bool {
        self.mode.load(Ordering::SeqCst) == mode
    }
}

struct FullDisk {
    inner: LocalBlobs,
    switch: Arc<Switch>,
}

struct FullDiskWriter {
    inner: Box<dyn BlobWriter>,
    switch: Arc<Switch>,
}

#[async_trait]
impl BlobWriter for FullDiskWriter {
    fn id(&self) -> &BlobId {
        self.inner.id()
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        if self.switch.is(FAIL_WRITE) {
            let left = self.switch.budget.fetch_sub(chunk.len() as i64, Ordering::SeqCst);
            if left < chunk.len() as i64 {
                // what fit before the disk filled up is written, as a real short write would
                let fits = left.max(0) as usize;
                self.inner.write(&chunk[..fits]).await?;
                return Err(enospc());
            }
        }
        self.inner.write(chunk).await
    }

    async fn finish(self: Box<Self>) -> Result<BlobId, BlobError> {
        if self.switch.is(FAIL_FINISH) {
            // as the filesystem store does when its flush fails: the partial body goes away
            self.inner.abort().await;
            return Err(enospc());
        }
        self.inner.finish().await
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await
    }
}

#[async_trait]
impl BlobStore for FullDisk {
    async fn create(&self) -> Result<Box<dyn BlobWriter>, BlobError> {
        if self.switch.is(FAIL_CREATE) {
            return Err(enospc());
        }
        Ok(Box::new(FullDiskWriter {
            inner: self.inner.create().await?,
            switch: self.switch.clone(),
        }))
    }

    async fn open(&self, id: &BlobId) -> Result<BlobStream, BlobError> {
        self.inner.open(id).await
    }

    async fn open_range(&self, id: &BlobId, range: std::ops::Range<u64>) -> Result<BlobStream, BlobError> {
        self.inner.open_range(id, range).await
    }

    async fn delete(&self, id: &BlobId) -> Result<(), BlobError> {
        self.inner.delete(id).await
    }

    async fn ping(&self) -> Result<(), BlobError> {
        if self.switch.is(FAIL_CREATE) {
            return Err(enospc());
        }
        self.inner.ping().await
    }

    async fn size(&self, id: &BlobId) -> Result<Option<u64>, BlobError> {
        self.inner.size(id).await
    }

    fn shards(&self) -> Vec<String> {
        self.inner.shards()
    }

    async fn list_shard(&self, shard: &str) -> Result<Vec<StoredBlob>, BlobError> {
        self.inner.list_shard(shard).await
    }
}

// --- an in-process server -----------------------------------------------------------------------

/// How long the in-process server's download links live, in seconds.
const LINK_SECS: i64 = 3;

struct InProcess {
    _dir: tempfile::TempDir,
    blob_dir: PathBuf,
    switch: Arc<Switch>,
    service: Arc<Service>,
    client: Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl InProcess {
    async fn start() -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let blob_dir = dir.path().join("blobs");
        let meta = Arc::new(SqliteMeta::open(&dir.path().join("metadata.sqlite3")).unwrap());
        let key = ServerKey::load_or_create(&dir.path().join("server.key")).unwrap();
        let switch = Arc::new(Switch::default());
        let blobs = Arc::new(FullDisk {
            inner: LocalBlobs::open(&blob_dir).unwrap(),
            switch: switch.clone(),
        });

        // an organization and a member with every permission, as `stowage serve` bootstraps them
        let now = now_ms();
        let org = meta.create_org("full-disk", None, None, now).await.unwrap();
        let token = generate_token();
        let (sealing_key, sealed) = (key.clone(), token.clone());
        let user = meta
            .create_user(
                "writer",
                false,
                now,
                Box::new(move |id| sealing_key.seal(id, &sealed).ok()),
            )
            .await
            .unwrap()
            .expect("a user id");
        meta.set_member(&org, user, Permissions::ALL).await.unwrap();

        // Links live LINK_SECS and bodies are kept no longer, so a deleted body is collectable
        // LINK_SECS after its delete. A link's expiry is in whole seconds (rounded down), so a
        // one-second lifetime could end before the test fetches the link on a loaded machine.
        let mut limits = Limits::from_config(&Config::default());
        (limits.download_ttl_secs, limits.download_grace_secs) = (LINK_SECS, 0);
        let service = Arc::new(Service::new(meta, blobs, limits, key));
        let router = app(AppState {
            service: service.clone(),
            public_url: None,
            metrics: None,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(5),
            body_idle_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(2),
            trusted_proxies: Default::default(),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        };
        let server = tokio::spawn(async move {
            run(listener, router, limits, async {
                let _ = rx.await;
            })
            .await
            .expect("the server runs");
        });
        let client = Client::new(
            &format!("http://{addr}/api/v2"),
            &user.0.to_string(),
            &token,
            org.as_str(),
        );
        InProcess {
            _dir: dir,
            blob_dir,
            switch,
            service,
            client,
            shutdown: Some(tx),
            server,
        }
    }

    fn stored_bodies(&self) -> usize {
        count_files(&self.blob_dir, Some("tmp"))
    }

    fn staged_bodies(&self) -> usize {
        count_files(&self.blob_dir.join("tmp"), None)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .expect("the server stops")
            .expect("the server task ends cleanly");
    }
}

fn count_files(dir: &Path, skip: Option<&str>) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if skip.is_some_and(|s| entry.file_name().to_string_lossy() == s) {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            n += count_files(&entry.path(), None);
        } else if kind.is_file() {
            n += 1;
        }
    }
    n
}

// --- the server's log, captured in memory ---------------------------------------------------------

/// What this process logs (the in-process server's log), kept in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

impl LogBuffer {
    /// The process-wide log, installed at the first call.
    fn capture() -> LogBuffer {
        static LOG: OnceLock<LogBuffer> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = LogBuffer::default();
            tracing_subscriber::fmt()
                .with_writer(log.clone())
                .with_ansi(false)
                .with_env_filter("stowage=info")
                .init();
            log
        })
        .clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The sentence every client reads when the blob store is full, whatever the store said.
const FULL_SENTENCE: &str = "Storage unavailable: the blob store is out of space; try again later";

/// HTTP 503, the JSON envelope, `success: false` and the fixed sentence, with no backend text;
/// the server logged the failure with its cause (the OS's own words) under the request's id.
fn assert_storage_unavailable(reply: &Reply, what: &str, log: &LogBuffer) {
    assert_eq!(reply.status, 503, "{what}: {}", reply.text);
    reply.assert_json_envelope();
    assert_eq!(reply.body["success"], false, "{what}");
    assert_eq!(reply.errors(), [FULL_SENTENCE], "{what}");
    for backend_text in ["No space left on device", "os error", "blobs/"] {
        assert!(
            !reply.text.contains(backend_text),
            "{what}: backend text reached the client: {}",
            reply.text
        );
    }
    let request_id = reply.headers["x-request-id"].to_str().expect("a request id");
    let line = log
        .text()
        .lines()
        .find(|line| line.contains(request_id) && line.contains("storage failure"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{what}: no log line for request {request_id}:\n{}", log.text()));
    assert!(
        line.contains(FULL_SENTENCE) && line.contains("No space left on device (os error 28)"),
        "{what}: the log line carries the whole cause: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_sets_with_503_and_keeps_everything_else() {
    let log = LogBuffer::capture();
    let server = InProcess::start().await;
    let client = server.client.clone();
    let old = noise(200_000, 1);
    client.set("models/kept.bin", &old).await;
    client.set("models/other.txt", HELLO).await;
    let used = client.used().await;
    let listing_before = client.list(Some("models")).await;
    let kept_before = client.properties("models/kept.bin").await;
    assert_eq!(server.stored_bodies(), 2);

    let cases = [
        ("create", FAIL_CREATE, 0),
        ("write, at once", FAIL_WRITE, 0),
        ("write, after 100 KB", FAIL_WRITE, 100_000),
        ("finish", FAIL_FINISH, 0),
    ];
    for (case, mode, budget) in cases {
        server.switch.set(mode, budget);
        // an overwrite, a new key, a new key in a new folder; small and multi-megabyte bodies
        for (key, size) in [
            ("models/kept.bin", 300_000),
            ("models/new.bin", 10),
            ("fresh/folder/new.bin", 3 * 1024 * 1024),
        ] {
            let what = format!("{case}: set {key} ({size} bytes)");
            let reply = client.set_raw(key, &noise(size, 7)).await;
            assert_storage_unavailable(&reply, &what, &log);
        }
        // reads keep working and see exactly what was there
        let kept = client.properties("models/kept.bin").await;
        assert_eq!(kept, kept_before, "{case}: the overwritten key is intact");
        assert_eq!(client.properties("models/other.txt").await["md5"], HELLO_MD5);
        assert_eq!(
            client
                .fails("object/properties", json!({"key": "models/new.bin"}))
                .await,
            ["Object not found: models/new.bin"]
        );
        assert_eq!(
            client
                .fails("object/properties", json!({"key": "fresh/folder/new.bin"}))
                .await,
            ["Object not found: fresh/folder/new.bin"]
        );
        assert_eq!(client.list(Some("models")).await, listing_before, "{case}");
        assert_eq!(
            names(&client.list(None).await),
            ["models"],
            "{case}: no folder appeared"
        );
        assert_eq!(client.used().await, used, "{case}: usage unchanged");
        let zip = client.download(json!(["models"])).await;
        assert_eq!(zip.len(), 2, "{case}");
        assert!(zip["models/kept.bin"] == old, "{case}: the download is the old body");
        // nothing half-written stays behind
        assert_eq!(server.staged_bodies(), 0, "{case}: a partial body in blobs/tmp");
        assert_eq!(server.stored_bodies(), 2, "{case}: a body was stored");
        // deletes need no space and still work; so does collecting the deleted body
        assert_storage_unavailable(&client.set_raw("scratch", b"x").await, case, &log);
        server.switch.set(OFF, 0);
        client.set("scratch", b"x").await;
        server.switch.set(mode, budget);
        client.delete("scratch").await;
        tokio::time::sleep(std::time::Duration::from_millis(LINK_SECS as u64 * 1000 + 100)).await;
        server.service.collect_garbage().await.expect("collection");
        assert_eq!(server.stored_bodies(), 2, "{case}");
    }

    // room again: sets work, the overwrite takes effect
    server.switch.set(OFF, 0);
    let new = noise(300_000, 8);
    client.set("models/kept.bin", &new).await;
    client.set("fresh/folder/new.bin", HELLO).await;
    assert_eq!(client.properties("models/kept.bin").await["md5"], md5_hex(&new));
    assert_eq!(
        client.download(json!(["models/kept.bin"])).await["models/kept.bin"],
        new
    );
    assert_eq!(client.used().await, (new.len() + 2 * HELLO.len()) as u64);
    assert_eq!(server.staged_bodies(), 0);
    server.stop().await;
}

// --- secrets in the log -------------------------------------------------------------------------

#[tokio::test]
async fn the_debug_log_never_holds_a_token_or_a_valid_hash() {
    use base64::Engine;
    let started = now_secs();
    let server = TestServer::start_with(Options::new().env("STOWAGE_LOG", "debug"));
    let client = server.client();
    let first_token = client.token.clone();
    let (member, member_token) = server.new_user("member");
    server.add_member(&client.org, &member, "read,write,delete");
    let other = server.client_for(&member, &member_token, &client.org);

    // successes
    client.authenticate().await.ok();
    other.authenticate().await.ok();
    client.set("logged/a.txt", HELLO).await;
    other.set("logged/b.bin", &noise(5000, 3)).await;
    client.properties("logged/a.txt").await;
    client.list(Some("logged")).await;
    let zip = client.download(json!(["logged"])).await;
    assert_eq!(zip.len(), 2);
    // failures: a wrong token, an unknown user, a stale timestamp with the right token
    let wrong = server.client_for(&client.user, "not-the-token", &client.org);
    wrong.authenticate().await.unauthorized();
    wrong.post_json("object/list", json!({})).await.unauthorized();
    let stale = (now_secs() - 100_000).to_string();
    let response = client
        .http
        .get(client.url("authenticate"))
        .headers(auth_headers(&client.user, &first_token, &stale))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    server
        .client_for("999999", "whatever", &client.org)
        .authenticate()
        .await
        .unauthorized();
    // a rotated token: the old one fails, the new one works
    let rotated = server.admin(&["user", "rotate-token", "--user", &client.user]);
    let second_token = rotated["apiToken"].as_str().expect("a new token").to_owned();
    assert_ne!(second_token, first_token);
    client.authenticate().await.unauthorized();
    let renewed = server.client_for(&client.user, &second_token, &client.org);
    renewed.authenticate().await.ok();
    renewed.delete("logged/a.txt").await;
    other.properties("logged/b.bin").await;
    let ended = now_secs();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let log = server.log();
    assert!(log.contains("DEBUG"), "the server logged at debug level:\n{log}");
    let tokens = [
        (client.user.as_str(), first_token.as_str()),
        (client.user.as_str(), second_token.as_str()),
        (member.as_str(), member_token.as_str()),
    ];
    let mut timestamps: Vec<String> = (started - 2..=ended + 2).map(|t| t.to_string()).collect();
    timestamps.push(stale);
    for (user, token) in tokens {
        assert!(!log.contains(token), "an API token is in the log");
        for ts in &timestamps {
            let hash = request_hash(token, ts);
            assert!(
                !log.contains(&hash) && !log.contains(&hash.to_uppercase()),
                "the valid hash of user {user} at {ts} is in the log"
            );
            let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{hash}"));
            assert!(!log.contains(&credentials), "an Authorization header is in the log");
        }
    }
}
