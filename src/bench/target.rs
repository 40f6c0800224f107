//! The systems a run drives: stowage through its API, an S3-compatible server through the
//! `object_store` crate, and the raw disk (the durable-write sequence stowage performs, without a
//! server).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};

use crate::client::{ApiClient, Credentials};

/// Object bodies are cut from this many random bytes, shared by every request.
pub(crate) const CHUNK: usize = 1 << 20;

/// The bytes uploaded: `size` bytes made of slices of one random buffer, never held whole.
#[derive(Clone)]
pub(crate) struct Payload {
    chunk: Bytes,
    size: u64,
}

impl Payload {
    pub(crate) fn new(size: u64) -> Payload {
        use rand::RngCore;
        let mut buffer = vec![0u8; CHUNK];
        rand::thread_rng().fill_bytes(&mut buffer);
        Payload {
            chunk: Bytes::from(buffer),
            size,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The body as a sequence of slices of the shared buffer (cheap clones, no copies).
    pub(crate) fn pieces(&self) -> impl Iterator<Item = Bytes> + Send + 'static {
        let chunk = self.chunk.clone();
        let size = self.size;
        let count = size.div_ceil(CHUNK as u64);
        (0..count).map(move |i| {
            let start = i * CHUNK as u64;
            let len = (size - start).min(CHUNK as u64) as usize;
            chunk.slice(..len)
        })
    }

    fn body(&self) -> reqwest::Body {
        if self.size <= CHUNK as u64 {
            reqwest::Body::from(self.chunk.slice(..self.size as usize))
        } else {
            let pieces = self.pieces().map(Ok::<Bytes, std::io::Error>);
            reqwest::Body::wrap_stream(futures::stream::iter(pieces))
        }
    }
}

/// How the S3 target uploads: objects larger than `part_size` go up as a multipart upload of
/// `part_size` parts (the last one shorter), `concurrency` parts in flight; smaller ones in one PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Multipart {
    pub(crate) part_size: u64,
    pub(crate) concurrency: usize,
}

impl Multipart {
    /// How many parts an object of `size` bytes is sent in (0: a single PUT).
    pub(crate) fn parts(&self, size: u64) -> u64 {
        if size > self.part_size {
            size.div_ceil(self.part_size.max(1))
        } else {
            0
        }
    }
}

/// Keys one S3 ListObjectsV2 page returns at most (the S3 default and the most it allows).
pub(crate) const S3_PAGE_KEYS: usize = 1000;

/// The `prefix` of a ListObjectsV2 request that lists `folder` like a folder: its name with one
/// trailing `/`, or nothing for the bucket's root.
pub(crate) fn s3_list_prefix(folder: &str) -> Option<String> {
    let folder = folder.trim_matches('/');
    (!folder.is_empty()).then(|| format!("{folder}/"))
}

/// Connection settings for each kind of target.
#[derive(Debug, Clone)]
pub(crate) enum TargetConfig {
    Stowage {
        credentials: Credentials,
        organization_id: String,
    },
    S3 {
        endpoint: String,
        bucket: String,
        access_key: String,
        secret_key: String,
        region: String,
        multipart: Multipart,
    },
    RawDisk {
        dir: PathBuf,
    },
    /// No server: md5 over the payload on one core.
    Md5,
}

impl TargetConfig {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            TargetConfig::Stowage { .. } => "stowage",
            TargetConfig::S3 { .. } => "s3",
            TargetConfig::RawDisk { .. } => "raw-disk",
            TargetConfig::Md5 => "md5",
        }
    }

    /// One connection's worth of client: every worker gets its own, so a run with C workers
    /// holds exactly C keep-alive connections.
    pub(crate) fn connect(&self) -> Result<Target, String> {
        match self {
            TargetConfig::Stowage {
                credentials,
                organization_id,
            } => Ok(Target::Stowage {
                client: ApiClient::new(credentials.clone()).map_err(|e| e.to_string())?,
                org: organization_id.clone(),
            }),
            TargetConfig::S3 {
                endpoint,
                bucket,
                access_key,
                secret_key,
                region,
                multipart,
            } => {
                let options = ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout_disabled()
                    .with_pool_max_idle_per_host(1);
                let store = AmazonS3Builder::new()
                    .with_endpoint(endpoint)
                    .with_bucket_name(bucket)
                    .with_access_key_id(access_key)
                    .with_secret_access_key(secret_key)
                    .with_region(region)
                    .with_allow_http(true)
                    .with_virtual_hosted_style_request(false)
                    // No SHA-256 over every body in the client: the figure is the server's.
                    .with_unsigned_payload(true)
                    .with_client_options(options)
                    .with_retry(RetryConfig {
                        max_retries: 0,
                        ..RetryConfig::default()
                    })
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(Target::S3 {
                    store: Arc::new(store),
                    multipart: *multipart,
                })
            }
            TargetConfig::RawDisk { dir } => {
                std::fs::create_dir_all(dir.join("tmp")).map_err(|e| format!("{}: {e}", dir.display()))?;
                for shard in 0..256 {
                    std::fs::create_dir_all(dir.join(format!("{shard:02x}")))
                        .map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                Ok(Target::RawDisk(dir.clone()))
            }
            TargetConfig::Md5 => Ok(Target::Md5),
        }
    }
}

const MD5_SET_ONLY: &str = "the md5 target runs the set workload only";

/// A connected client for one worker.
pub(crate) enum Target {
    Stowage { client: ApiClient, org: String },
    S3 { store: Arc<AmazonS3>, multipart: Multipart },
    RawDisk(PathBuf),
    Md5,
}

/// Reads a response body to its end in pieces, counting bytes without keeping them.
async fn drain(mut response: reqwest::Response) -> Result<u64, String> {
    let mut total = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        total += chunk.len() as u64;
    }
    Ok(total)
}

impl Target {
    /// Opens the connection and checks the credentials before the clock starts.
    pub(crate) async fn warm(&self) -> Result<(), String> {
        match self {
            Target::Stowage { client, .. } => client
                .authenticate()
                .await
                .map_err(|e| format!("cannot authenticate: {e}")),
            Target::S3 { store, .. } => match store.head(&StorePath::from("stowage-bench-warm-up")).await {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(format!("the S3 endpoint refused a HEAD: {e}")),
            },
            Target::RawDisk(_) | Target::Md5 => Ok(()),
        }
    }

    /// Uploads `payload` under `key`. Returns the object bytes sent.
    pub(crate) async fn set(&self, key: &str, payload: &Payload) -> Result<u64, String> {
        match self {
            Target::Stowage { client, org } => {
                client
                    .set(org, key, payload.body(), Some(payload.size()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Target::S3 { store, multipart } => {
                if multipart.parts(payload.size()) > 0 {
                    put_multipart(store.as_ref(), key, payload, *multipart).await?;
                } else {
                    let body: PutPayload = payload.pieces().collect();
                    store
                        .put(&StorePath::from(key), body)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Target::RawDisk(dir) => {
                let dir = dir.clone();
                let key = key.to_owned();
                let payload = payload.clone();
                tokio::task::spawn_blocking(move || durable_write(&dir, &key, &payload))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            }
            Target::Md5 => {
                let payload = payload.clone();
                tokio::task::spawn_blocking(move || {
                    use md5::Digest;
                    let mut md5 = md5::Md5::new();
                    for piece in payload.pieces() {
                        md5.update(&piece);
                    }
                    std::hint::black_box(md5.finalize());
                })
                .await
                .map_err(|e| e.to_string())?;
            }
        }
        Ok(payload.size())
    }

    /// Reads an object's metadata. Returns 0 (no object bytes move).
    pub(crate) async fn properties(&self, key: &str) -> Result<u64, String> {
        match self {
            Target::Stowage { client, org } => {
                client.properties(org, key).await.map_err(|e| e.to_string())?;
            }
            Target::S3 { store, .. } => {
                store.head(&StorePath::from(key)).await.map_err(|e| e.to_string())?;
            }
            Target::RawDisk(dir) => {
                std::fs::metadata(raw_path(dir, key)).map_err(|e| e.to_string())?;
            }
            Target::Md5 => return Err(MD5_SET_ONLY.into()),
        }
        Ok(0)
    }

    /// Downloads an object to its end (stowage: a job, then a GET of its URL). Returns the bytes
    /// received (for stowage, the zip).
    pub(crate) async fn get(&self, key: &str) -> Result<u64, String> {
        match self {
            Target::Stowage { client, org } => {
                let url = client
                    .download_url(org, &[key.to_owned()])
                    .await
                    .map_err(|e| e.to_string())?;
                let response = client.fetch(&url).await.map_err(|e| e.to_string())?;
                drain(response).await
            }
            Target::S3 { store, .. } => {
                let mut stream = store
                    .get(&StorePath::from(key))
                    .await
                    .map_err(|e| e.to_string())?
                    .into_stream();
                let mut total = 0u64;
                while let Some(chunk) = stream.next().await {
                    total += chunk.map_err(|e| e.to_string())?.len() as u64;
                }
                Ok(total)
            }
            Target::RawDisk(dir) => {
                let path = raw_path(dir, key);
                tokio::task::spawn_blocking(move || {
                    let mut file = std::fs::File::open(path)?;
                    std::io::copy(&mut file, &mut std::io::sink())
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
            }
            Target::Md5 => Err(MD5_SET_ONLY.into()),
        }
    }

    /// Lists one page (up to 1000 entries) of `folder`; returns 0 bytes and the entries listed.
    /// S3: one ListObjectsV2 request with delimiter `/` and max-keys 1000, its page read and
    /// parsed whole (objects and common prefixes both count as entries); the first page only.
    pub(crate) async fn list(&self, folder: &str, page: u64) -> Result<(u64, usize), String> {
        match self {
            Target::Stowage { client, org } => {
                let listed = client
                    .list_page_len(org, folder, page)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((0, listed))
            }
            Target::S3 { store, .. } => {
                if page > 0 {
                    return Err("the s3 target lists the first page only (--list-page 0)".into());
                }
                let prefix = s3_list_prefix(folder);
                let listed = store
                    .list_paginated(prefix.as_deref(), s3_list_options())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((0, listed.result.objects.len() + listed.result.common_prefixes.len()))
            }
            Target::RawDisk(_) => Err("the raw-disk target has no list".into()),
            Target::Md5 => Err(MD5_SET_ONLY.into()),
        }
    }

    /// Deletes an object. Returns 0.
    pub(crate) async fn delete(&self, key: &str) -> Result<u64, String> {
        match self {
            Target::Stowage { client, org } => {
                client.delete(org, key).await.map_err(|e| e.to_string())?;
            }
            Target::S3 { store, .. } => {
                store.delete(&StorePath::from(key)).await.map_err(|e| e.to_string())?;
            }
            Target::RawDisk(dir) => {
                std::fs::remove_file(raw_path(dir, key)).map_err(|e| e.to_string())?;
            }
            Target::Md5 => return Err(MD5_SET_ONLY.into()),
        }
        Ok(0)
    }
}

/// The options of the S3 list workload's request: delimiter `/`, max-keys 1000.
fn s3_list_options() -> PaginatedListOptions {
    PaginatedListOptions {
        delimiter: Some("/".into()),
        max_keys: Some(S3_PAGE_KEYS),
        ..PaginatedListOptions::default()
    }
}

/// Uploads `payload` under `key` as one multipart upload (object_store's CreateMultipartUpload,
/// UploadPart for each `part_size` slice with `concurrency` in flight, CompleteMultipartUpload);
/// on failure the upload is aborted.
async fn put_multipart(
    store: &dyn ObjectStore,
    key: &str,
    payload: &Payload,
    multipart: Multipart,
) -> Result<(), String> {
    let part_size = usize::try_from(multipart.part_size)
        .map_err(|_| format!("a part of {} bytes is too large", multipart.part_size))?;
    let upload = store
        .put_multipart(&StorePath::from(key))
        .await
        .map_err(|e| format!("cannot start a multipart upload: {e}"))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size.max(1));
    for piece in payload.pieces() {
        if let Err(e) = writer.wait_for_capacity(multipart.concurrency.max(1)).await {
            let _ = writer.abort().await;
            return Err(format!("a part upload failed: {e}"));
        }
        writer.put(piece);
    }
    writer
        .finish()
        .await
        .map_err(|e| format!("the multipart upload failed: {e}"))?;
    Ok(())
}

/// Where the raw-disk target keeps `key`: a flat name in one of 256 shard folders.
fn raw_path(dir: &Path, key: &str) -> PathBuf {
    let name = key.replace('/', "_");
    let shard = name.bytes().fold(0u8, |h, b| h.wrapping_mul(31).wrapping_add(b));
    dir.join(format!("{shard:02x}")).join(name)
}

/// What stowage does to make a body durable, and nothing else: write `tmp/<name>`, fsync it,
/// rename it into its shard folder, fsync that folder.
fn durable_write(dir: &Path, key: &str, payload: &Payload) -> std::io::Result<()> {
    use std::io::Write;
    let final_path = raw_path(dir, key);
    let tmp = dir.join("tmp").join(final_path.file_name().unwrap_or_default());
    let mut file = std::fs::File::create(&tmp)?;
    for piece in payload.pieces() {
        file.write_all(&piece)?;
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &final_path)?;
    let parent = final_path.parent().unwrap_or(dir);
    std::fs::File::open(parent)?.sync_all()?;
    Ok(())
}

/// How long a client waits before counting an operation as failed.
pub(crate) fn default_timeout(size: u64) -> Duration {
    // 60 s, plus a second for every 10 MB (a slow disk at 10 MB/s still finishes).
    Duration::from_secs(60 + size / 10_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_pieces_add_up() {
        for size in [0u64, 1, 4096, CHUNK as u64, CHUNK as u64 + 1, 3 * CHUNK as u64 + 17] {
            let payload = Payload::new(size);
            let total: u64 = payload.pieces().map(|p| p.len() as u64).sum();
            assert_eq!(total, size);
            assert!(payload.pieces().all(|p| p.len() <= CHUNK));
        }
    }

    #[test]
    fn raw_disk_writes_durably_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = TargetConfig::RawDisk {
            dir: dir.path().to_owned(),
        };
        let target = config.connect().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let payload = Payload::new(5000);
            assert_eq!(target.set("a/b", &payload).await, Ok(5000));
            assert_eq!(target.get("a/b").await, Ok(5000));
            assert_eq!(target.properties("a/b").await, Ok(0));
            assert_eq!(target.delete("a/b").await, Ok(0));
            assert!(target.get("a/b").await.is_err());
        });
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn uploads_larger_than_a_part_go_multipart() {
        let multipart = Multipart {
            part_size: 16 << 20,
            concurrency: 4,
        };
        assert_eq!(multipart.parts(4096), 0);
        assert_eq!(multipart.parts(16 << 20), 0);
        assert_eq!(multipart.parts((16 << 20) + 1), 2);
        assert_eq!(multipart.parts(1 << 30), 64);
    }

    #[test]
    fn s3_lists_a_folder_page_with_a_delimiter() {
        assert_eq!(s3_list_prefix("big").as_deref(), Some("big/"));
        assert_eq!(s3_list_prefix("big/").as_deref(), Some("big/"));
        assert_eq!(s3_list_prefix("/a/b/").as_deref(), Some("a/b/"));
        assert_eq!(s3_list_prefix(""), None);
        assert_eq!(s3_list_prefix("/"), None);
        let options = s3_list_options();
        assert_eq!(options.delimiter.as_deref(), Some("/"));
        assert_eq!(options.max_keys, Some(1000));
        assert_eq!(options.page_token, None);
        assert_eq!(options.offset, None);
    }

    #[test]
    fn multipart_upload_sends_the_whole_body_in_order() {
        let store = object_store::memory::InMemory::new();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            // Parts that do not line up with the 1 MiB pieces, several in flight.
            let payload = Payload::new(3 * CHUNK as u64 + 17);
            let multipart = Multipart {
                part_size: 700_000,
                concurrency: 3,
            };
            put_multipart(&store, "big/o", &payload, multipart).await.unwrap();
            let stored = store
                .get(&StorePath::from("big/o"))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let sent: Vec<u8> = payload.pieces().flat_map(|p| p.to_vec()).collect();
            assert_eq!(stored.len(), sent.len());
            assert!(stored == sent, "the stored object differs from the body sent");
        });
    }

    /// The S3 target against a real S3 server (SeaweedFS, from `scripts/seaweedfs.sh start`):
    /// a multipart upload reads back whole, and a list page is one folder level.
    #[test]
    fn s3_target_against_a_server() {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let Some(endpoint) = var("STOWAGE_TEST_S3_ENDPOINT") else {
            if var("STOWAGE_SKIP_S3").as_deref() == Some("1") {
                eprintln!("note: S3 bench target test skipped (STOWAGE_SKIP_S3=1)");
                return;
            }
            panic!(
                "STOWAGE_TEST_S3_ENDPOINT is not set, so the bench's S3 target cannot be tested. Start a server \
                 with `scripts/seaweedfs.sh start` and export the STOWAGE_TEST_S3_* lines it prints, or set \
                 STOWAGE_SKIP_S3=1 to skip the S3 tests"
            );
        };
        let required =
            |name: &str| var(name).unwrap_or_else(|| panic!("STOWAGE_TEST_S3_ENDPOINT is set but {name} is not"));
        let config = TargetConfig::S3 {
            endpoint,
            bucket: required("STOWAGE_TEST_S3_BUCKET"),
            access_key: required("STOWAGE_TEST_S3_ACCESS_KEY"),
            secret_key: required("STOWAGE_TEST_S3_SECRET_KEY"),
            region: "us-east-1".into(),
            multipart: Multipart {
                part_size: 5 << 20,
                concurrency: 2,
            },
        };
        let target = config.connect().unwrap();
        let folder = format!("bench-test-{:016x}", rand::random::<u64>());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            target.warm().await.unwrap();
            // 11 MiB: three parts of 5, 5 and 1 MiB.
            let big = Payload::new(11 << 20);
            let small = Payload::new(4096);
            let keys = [
                format!("{folder}/big"),
                format!("{folder}/a"),
                format!("{folder}/sub/b"),
                format!("{folder}/sub/c"),
            ];
            assert_eq!(target.set(&keys[0], &big).await, Ok(11 << 20));
            for key in &keys[1..] {
                assert_eq!(target.set(key, &small).await, Ok(4096));
            }
            assert_eq!(target.get(&keys[0]).await, Ok(11 << 20));
            // One level: `big`, `a` and the folder `sub/`, not the two objects inside it.
            assert_eq!(target.list(&folder, 0).await, Ok((0, 3)));
            assert_eq!(target.list(&format!("{folder}/sub"), 0).await, Ok((0, 2)));
            assert!(target.list(&folder, 1).await.is_err());
            for key in &keys {
                assert_eq!(target.delete(key).await, Ok(0));
            }
            // (Not a listing: SeaweedFS may keep the emptied `sub/` folder a while.)
            assert!(target.get(&keys[0]).await.is_err());
        });
    }
}
