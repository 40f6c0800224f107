//! The blob store contract, one suite run against every backend: `local::…` against
//! [`LocalBlobs`] in a temporary directory, `s3::…` against [`S3Blobs`] on a real S3-compatible
//! server.
//!
//! The S3 variants need a server: `scripts/seaweedfs.sh start` starts SeaweedFS and prints the
//! `STOWAGE_TEST_S3_ENDPOINT`, `_BUCKET`, `_ACCESS_KEY` and `_SECRET_KEY` variables to export.
//! Without them the S3 variants fail, unless `STOWAGE_SKIP_S3=1` says to skip them. Each S3 test
//! works under a prefix of its own in the bucket, so tests and runs never see each other's blobs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::local::LocalBlobs;
use super::s3::{MIN_PART_SIZE, S3Blobs, S3Settings};
use super::{BlobError, BlobStore};
use crate::ids::BlobId;

/// Measures the memory a test allocates on its own thread (a `#[tokio::test]` runtime runs every
/// task it spawns, HTTP connections included, on the test's thread).
mod memory {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn record(delta: isize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get() + delta;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    // SAFETY: every call is passed straight to the system allocator; the bookkeeping allocates
    // nothing (const-initialized thread locals without destructors).
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                record(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                record(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
            unsafe { System.dealloc(p, layout) };
            record(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let q = unsafe { System.realloc(p, layout, new_size) };
            if !q.is_null() {
                record(new_size as isize - layout.size() as isize);
            }
            q
        }
    }

    /// The most bytes this thread held at once (allocated and not yet freed) since `start`.
    pub(crate) struct Watermark {
        base: isize,
    }

    impl Watermark {
        pub(crate) fn start() -> Watermark {
            let base = LIVE.with(Cell::get);
            PEAK.with(|peak| peak.set(base));
            Watermark { base }
        }

        pub(crate) fn peak(&self) -> usize {
            usize::try_from(PEAK.with(Cell::get) - self.base).unwrap_or(0)
        }
    }
}

/// The server the S3 variants use, from the environment.
#[derive(Clone)]
struct S3Env {
    endpoint: String,
    bucket: String,
    access_key: String,
    secret_key: String,
}

impl S3Env {
    /// `None` (after saying so) when the S3 tests are to be skipped; panics when the server is not
    /// configured and skipping was not asked for.
    fn get() -> Option<S3Env> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let Some(endpoint) = var("STOWAGE_TEST_S3_ENDPOINT") else {
            if var("STOWAGE_SKIP_S3").as_deref() == Some("1") {
                eprintln!("note: S3 blob store test skipped (STOWAGE_SKIP_S3=1)");
                return None;
            }
            panic!(
                "STOWAGE_TEST_S3_ENDPOINT is not set, so the S3 blob store cannot be tested. Start a server with \
                 `scripts/seaweedfs.sh start` and export the STOWAGE_TEST_S3_* lines it prints, or set \
                 STOWAGE_SKIP_S3=1 to skip the S3 tests"
            );
        };
        let required =
            |name: &str| var(name).unwrap_or_else(|| panic!("STOWAGE_TEST_S3_ENDPOINT is set but {name} is not"));
        Some(S3Env {
            endpoint,
            bucket: required("STOWAGE_TEST_S3_BUCKET"),
            access_key: required("STOWAGE_TEST_S3_ACCESS_KEY"),
            secret_key: required("STOWAGE_TEST_S3_SECRET_KEY"),
        })
    }

    fn settings(&self, prefix: &str) -> S3Settings {
        S3Settings {
            bucket: self.bucket.clone(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            path_style: true,
            allow_http: true,
            prefix: Some(prefix.to_owned()),
        }
    }

    /// Multipart uploads still open under `prefix` (`ListMultipartUploads`, which `object_store`
    /// does not offer, signed with its SigV4 signer).
    async fn open_uploads(&self, prefix: &str) -> usize {
        use object_store::aws::{AwsAuthorizer, AwsCredential};
        use object_store::client::{HttpRequest, HttpRequestBody};

        let url = format!(
            "{}/{}?prefix={}&uploads=",
            self.endpoint.trim_end_matches('/'),
            self.bucket,
            format!("{prefix}/").replace('/', "%2F")
        );
        let mut request = HttpRequest::new(HttpRequestBody::empty());
        *request.uri_mut() = url.parse().unwrap();
        let credential = AwsCredential {
            key_id: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", "us-east-1")
            .try_authorize(&mut request, None)
            .unwrap();
        let response = reqwest::Client::new()
            .get(&url)
            .headers(request.headers().clone())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "ListMultipartUploads answered {status}: {body}");
        body.split("<Upload>")
            .skip(1)
            .filter(|upload| upload.contains(&format!("<Key>{prefix}/")))
            .count()
    }
}

enum Backend {
    Local {
        _dir: tempfile::TempDir,
        store: LocalBlobs,
    },
    /// Small bodies in a table, larger ones in files; a 1 KiB threshold so that the suite's
    /// bodies take both paths.
    Small {
        _dir: tempfile::TempDir,
        store: super::small::SmallAndLocalBlobs,
    },
    S3 {
        store: S3Blobs,
        /// The same bucket through `object_store` directly, to look at what S3Blobs wrote.
        raw: Arc<dyn object_store::ObjectStore>,
        env: S3Env,
        prefix: String,
    },
}

struct Fixture {
    backend: Backend,
}

impl Fixture {
    fn local() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBlobs::open(dir.path()).unwrap();
        Fixture {
            backend: Backend::Local { _dir: dir, store },
        }
    }

    fn small() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = super::small::SmallAndLocalBlobs::open(dir.path(), 1024).unwrap();
        Fixture {
            backend: Backend::Small { _dir: dir, store },
        }
    }

    /// Parts of the smallest size S3 allows, so that the bodies below take the multipart path.
    fn s3() -> Option<Fixture> {
        let env = S3Env::get()?;
        let prefix = format!("stowage-tests/{}", uuid::Uuid::new_v4().simple());
        let store = S3Blobs::connect(env.settings(&prefix))
            .unwrap()
            .with_part_size(MIN_PART_SIZE);
        let raw = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&env.bucket)
            .with_endpoint(&env.endpoint)
            .with_region("us-east-1")
            .with_access_key_id(&env.access_key)
            .with_secret_access_key(&env.secret_key)
            .with_allow_http(true)
            .build()
            .unwrap();
        Some(Fixture {
            backend: Backend::S3 {
                store,
                raw: Arc::new(raw),
                env,
                prefix,
            },
        })
    }

    fn store(&self) -> &dyn BlobStore {
        match &self.backend {
            Backend::Local { store, .. } => store,
            Backend::Small { store, .. } => store,
            Backend::S3 { store, .. } => store,
        }
    }

    /// Uploads begun and neither finished nor cleaned up.
    async fn unfinished_uploads(&self) -> usize {
        match &self.backend {
            Backend::Local { store, .. } => store.unfinished_uploads(),
            Backend::Small { store, .. } => store.unfinished_uploads(),
            Backend::S3 { env, prefix, .. } => env.open_uploads(prefix).await,
        }
    }

    /// Waits (up to 10 s) for cleanup that runs in the background, such as the abort a dropped
    /// S3 writer spawns.
    async fn wait_for_no_unfinished_uploads(&self) {
        for _ in 0..100 {
            if self.unfinished_uploads().await == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} unfinished upload(s) left behind", self.unfinished_uploads().await);
    }

    /// The most memory one writer may hold, whatever the body's size.
    fn writer_memory_bound(&self) -> usize {
        match &self.backend {
            // A batch being written and one being gathered, plus the lists that hold them.
            Backend::Local { .. } | Backend::Small { .. } => 2 * crate::blob::local::WRITE_BATCH + 512 * 1024,
            // Its parts, plus HTTP client state.
            Backend::S3 { store, .. } => store.writer_memory_bound() + 2 * 1024 * 1024,
        }
    }

    /// How many parts S3 stored the blob in (from a multipart ETag, `"<md5>-<parts>"`); `None` for
    /// a single `PUT` or a backend without parts.
    async fn parts_of(&self, id: &BlobId) -> Option<usize> {
        let Backend::S3 { raw, prefix, .. } = &self.backend else {
            return None;
        };
        let path = object_store::path::Path::from(format!("{prefix}/blobs/{}/{id}", id.shard()));
        let meta = raw.head(&path).await.unwrap();
        let etag = meta.e_tag.unwrap_or_default();
        etag.trim_matches('"')
            .rsplit_once('-')
            .and_then(|(_, parts)| parts.parse().ok())
    }
}

async fn read_all(store: &dyn BlobStore, id: &BlobId) -> Vec<u8> {
    let chunks: Vec<_> = store.open(id).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

async fn write_blob(store: &dyn BlobStore, body: &[u8]) -> BlobId {
    let mut writer = store.create().await.unwrap();
    for chunk in body.chunks(64 * 1024) {
        writer.write(chunk).await.unwrap();
    }
    writer.finish().await.unwrap()
}

/// A body that is not a repetition of one chunk, so misplaced or repeated chunks show.
fn patterned(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

macro_rules! blob_store_suite {
    ($($test:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(&super::Fixture::local()).await;
                }
            )*
        }

        mod small {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(&super::Fixture::small()).await;
                }
            )*
        }

        mod s3 {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(fixture) = super::Fixture::s3() else { return };
                    super::$test(&fixture).await;
                }
            )*
        }
    };
}

blob_store_suite!(
    write_read_delete,
    empty_blob,
    aborted_blob_leaves_nothing,
    aborted_multipart_blob_leaves_nothing,
    dropped_writer_leaves_nothing,
    large_body_round_trips_in_bounded_memory,
    size_and_list_shard,
    missing_blobs,
    odd_chunk_sizes_round_trip,
    ranges_read_only_their_bytes,
    shedding_idle_memory_keeps_every_body,
);

/// Giving back idle memory (caches, idle connections) loses nothing and later reads and writes
/// still work.
async fn shedding_idle_memory_keeps_every_body(fx: &Fixture) {
    let store = fx.store();
    let bodies = [patterned(10, 1), patterned(300 * 1024, 2)];
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(write_blob(store, body).await);
    }
    store.shed_idle_memory().await.unwrap();
    for (id, body) in ids.iter().zip(&bodies) {
        assert_eq!(&read_all(store, id).await, body);
    }
    let later = write_blob(store, b"after").await;
    store.shed_idle_memory().await.unwrap();
    assert_eq!(read_all(store, &later).await, b"after");
}

/// A range reads exactly its bytes, for small bodies and for bodies kept as files.
async fn ranges_read_only_their_bytes(fx: &Fixture) {
    let store = fx.store();
    for len in [10usize, 300 * 1024] {
        let body = patterned(len, len as u64);
        let id = write_blob(store, &body).await;
        let n = len as u64;
        for range in [0..n, 0..1, 3..7, n - 1..n, n / 2..n] {
            let chunks: Vec<bytes::Bytes> = store
                .open_range(&id, range.clone())
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            let read: Vec<u8> = chunks.concat();
            assert_eq!(
                read,
                body[range.start as usize..range.end as usize],
                "{len} bytes, {range:?}"
            );
        }
        store.delete(&id).await.unwrap();
        assert!(matches!(store.open_range(&id, 0..1).await, Err(BlobError::NotFound(_))));
    }
}

async fn write_read_delete(fx: &Fixture) {
    let store = fx.store();
    let mut writer = store.create().await.unwrap();
    let id = writer.id().clone();
    writer.write(b"hello ").await.unwrap();
    writer.write(b"world").await.unwrap();
    // Nothing is visible before `finish`.
    assert_eq!(store.size(&id).await.unwrap(), None);
    assert_eq!(writer.finish().await.unwrap(), id);
    assert_eq!(read_all(store, &id).await, b"hello world");
    assert_eq!(store.size(&id).await.unwrap(), Some(11));
    assert_eq!(fx.parts_of(&id).await, None, "a small body is one PUT");

    store.delete(&id).await.unwrap();
    assert!(matches!(store.open(&id).await, Err(BlobError::NotFound(missing)) if missing == id));
    assert_eq!(store.size(&id).await.unwrap(), None);
    // Deleting again is not an error.
    store.delete(&id).await.unwrap();
}

async fn empty_blob(fx: &Fixture) {
    let store = fx.store();
    let id = store.create().await.unwrap().finish().await.unwrap();
    assert_eq!(store.size(&id).await.unwrap(), Some(0));
    assert!(read_all(store, &id).await.is_empty());
    store.delete(&id).await.unwrap();
}

async fn aborted_blob_leaves_nothing(fx: &Fixture) {
    let store = fx.store();
    let mut writer = store.create().await.unwrap();
    writer.write(b"partial").await.unwrap();
    let id = writer.id().clone();
    writer.abort().await;
    assert!(matches!(store.open(&id).await, Err(BlobError::NotFound(_))));
    assert_eq!(store.size(&id).await.unwrap(), None);
    assert_eq!(fx.unfinished_uploads().await, 0);
}

/// Past one part, an S3 writer has a multipart upload open with a part on its way; `abort` must
/// close it.
async fn aborted_multipart_blob_leaves_nothing(fx: &Fixture) {
    let store = fx.store();
    let mut writer = store.create().await.unwrap();
    let id = writer.id().clone();
    for chunk in patterned(MIN_PART_SIZE + 1024 * 1024, 1).chunks(64 * 1024) {
        writer.write(chunk).await.unwrap();
    }
    assert_eq!(fx.unfinished_uploads().await, 1);
    writer.abort().await;
    assert_eq!(fx.unfinished_uploads().await, 0);
    assert!(matches!(store.open(&id).await, Err(BlobError::NotFound(_))));
    let shard = id.shard();
    assert!(store.list_shard(shard).await.unwrap().iter().all(|blob| blob.id != id));
}

/// A writer dropped mid-body (the client went away) cleans up after itself.
async fn dropped_writer_leaves_nothing(fx: &Fixture) {
    let store = fx.store();
    let mut writer = store.create().await.unwrap();
    let id = writer.id().clone();
    for chunk in patterned(MIN_PART_SIZE + 1024 * 1024, 2).chunks(64 * 1024) {
        writer.write(chunk).await.unwrap();
    }
    assert_eq!(fx.unfinished_uploads().await, 1);
    drop(writer);
    fx.wait_for_no_unfinished_uploads().await;
    assert!(matches!(store.open(&id).await, Err(BlobError::NotFound(_))));
}

/// 20 MiB in 64 KiB chunks: for S3 a multipart upload of four 5 MiB parts. Neither writing nor
/// reading ever holds the body: the memory this thread holds stays under the writer's bound
/// (below 20 MiB) while writing and under 4 MiB while reading.
async fn large_body_round_trips_in_bounded_memory(fx: &Fixture) {
    const BODY: usize = 20 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let store = fx.store();
    // Chunk i is `pattern` with i in its first 8 bytes.
    let pattern = patterned(CHUNK, 3);
    let mut chunk = pattern.clone();

    let watermark = memory::Watermark::start();
    let mut writer = store.create().await.unwrap();
    for i in 0..BODY / CHUNK {
        chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
        writer.write(&chunk).await.unwrap();
    }
    let id = writer.finish().await.unwrap();
    let write_peak = watermark.peak();
    let bound = fx.writer_memory_bound();
    eprintln!("writing 20 MiB held at most {write_peak} bytes (bound {bound})");
    assert!(bound < BODY);
    assert!(
        write_peak <= bound,
        "writing held {write_peak} bytes, more than {bound}"
    );

    assert_eq!(store.size(&id).await.unwrap(), Some(BODY as u64));
    if let Backend::S3 { .. } = fx.backend {
        assert_eq!(fx.parts_of(&id).await, Some(4), "a multipart upload of four parts");
    }

    let watermark = memory::Watermark::start();
    let mut stream = store.open(&id).await.unwrap();
    let mut offset = 0usize;
    while let Some(mut bytes) = stream.try_next().await.unwrap() {
        while !bytes.is_empty() {
            let (i, j) = (offset / CHUNK, offset % CHUNK);
            assert!(i < BODY / CHUNK, "the body is longer than what was written");
            chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let n = bytes.len().min(CHUNK - j);
            assert!(bytes[..n] == chunk[j..j + n], "the body differs in chunk {i}");
            bytes = bytes.split_off(n);
            offset += n;
        }
    }
    drop(stream);
    let read_peak = watermark.peak();
    eprintln!("reading 20 MiB held at most {read_peak} bytes");
    assert_eq!(offset, BODY);
    assert!(read_peak <= 4 * 1024 * 1024, "reading held {read_peak} bytes");

    store.delete(&id).await.unwrap();
    assert_eq!(store.size(&id).await.unwrap(), None);
}

async fn size_and_list_shard(fx: &Fixture) {
    let store = fx.store();
    let shards = store.shards();
    assert_eq!(shards.len(), 256);
    assert_eq!(shards.iter().collect::<std::collections::BTreeSet<_>>().len(), 256);

    let before = SystemTime::now() - Duration::from_secs(5);
    let bodies = [patterned(10, 4), Vec::new(), patterned(100_000, 5)];
    let mut written = Vec::new();
    for body in &bodies {
        written.push((write_blob(store, body).await, body.len() as u64));
    }
    let after = SystemTime::now() + Duration::from_secs(5);

    let mut listed = Vec::new();
    for shard in &shards {
        let blobs = store.list_shard(shard).await.unwrap();
        for blob in &blobs {
            assert_eq!(blob.id.shard(), shard.as_str(), "{} listed in shard {shard}", blob.id);
        }
        listed.extend(blobs);
    }
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    written.sort();
    let listed_ids: Vec<_> = listed.iter().map(|blob| (blob.id.clone(), blob.size)).collect();
    assert_eq!(listed_ids, written);
    for blob in &listed {
        assert!(
            blob.written >= before && blob.written <= after,
            "{:?} is not about now",
            blob.written
        );
    }
    for (id, size) in &written {
        assert_eq!(store.size(id).await.unwrap(), Some(*size));
    }
    assert!(store.list_shard("not a shard").await.unwrap().is_empty());

    for (id, _) in &written {
        store.delete(id).await.unwrap();
    }
    for shard in &shards {
        assert!(store.list_shard(shard).await.unwrap().is_empty());
    }
}

async fn missing_blobs(fx: &Fixture) {
    let store = fx.store();
    let id = BlobId::generate();
    assert!(matches!(store.open(&id).await, Err(BlobError::NotFound(missing)) if missing == id));
    assert_eq!(store.size(&id).await.unwrap(), None);
    store.delete(&id).await.unwrap();
    store.delete(&id).await.unwrap();
}

/// Chunks of every awkward size, empty ones included, make exactly the body they add up to.
async fn odd_chunk_sizes_round_trip(fx: &Fixture) {
    let store = fx.store();
    let body = patterned(3 * 1024 * 1024 + 17, 6);
    let mut writer = store.create().await.unwrap();
    // Odd chunk sizes, including empty writes.
    let mut rest = body.as_slice();
    for size in [0, 1, 4095, 0, 65_537, 1_000_000].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.min(rest.len()));
        writer.write(now).await.unwrap();
        rest = later;
    }
    let id = writer.finish().await.unwrap();
    assert_eq!(read_all(store, &id).await, body);
    store.delete(&id).await.unwrap();
}

/// S3-only: what the store answers when the server refuses or is not there.
mod s3_only {
    use super::*;

    #[tokio::test]
    async fn check_finds_the_bucket() {
        let Some(env) = S3Env::get() else { return };
        let store = S3Blobs::connect(env.settings("stowage-tests/check")).unwrap();
        store.check().await.unwrap();
        let missing = S3Blobs::connect(S3Settings {
            bucket: format!("missing-{}", uuid::Uuid::new_v4().simple()),
            ..env.settings("x")
        })
        .unwrap();
        let err = missing.check().await.unwrap_err();
        assert!(matches!(err, BlobError::Config(_)), "{err}");
    }

    /// A refusal is a `Store` error, never "not found" (which would read as "the blob is gone").
    #[tokio::test]
    async fn refused_requests_are_errors_not_absence() {
        let Some(env) = S3Env::get() else { return };
        let store = S3Blobs::connect(S3Settings {
            secret_access_key: "wrong".into(),
            ..env.settings("stowage-tests/refused")
        })
        .unwrap();
        // A refusal, whose cause (kept for the log) holds the server's answer, 403.
        let refused =
            |err: BlobError| matches!(&err, BlobError::Store { source, .. } if format!("{source:?}").contains("403"));
        let id = BlobId::generate();
        let err = store.open(&id).await.err().expect("a refused GET is an error");
        assert!(refused(err));
        let err = store.size(&id).await.unwrap_err();
        assert!(matches!(&err, BlobError::Store { .. }), "{err}");
        let err = store.delete(&id).await.unwrap_err();
        assert!(refused(err));
        let mut writer = store.create().await.unwrap();
        writer.write(b"body").await.unwrap();
        assert!(refused(writer.finish().await.unwrap_err()));
    }
}
