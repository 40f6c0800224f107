//! The systems a run drives: stowage through its API, an S3-compatible server through the
//! `object_store` crate, and the raw disk (the durable-write sequence stowage performs, without a
//! server).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

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
    },
    RawDisk {
        dir: PathBuf,
    },
}

impl TargetConfig {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            TargetConfig::Stowage { .. } => "stowage",
            TargetConfig::S3 { .. } => "s3",
            TargetConfig::RawDisk { .. } => "raw-disk",
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
                Ok(Target::S3(Arc::new(store)))
            }
            TargetConfig::RawDisk { dir } => {
                std::fs::create_dir_all(dir.join("tmp")).map_err(|e| format!("{}: {e}", dir.display()))?;
                for shard in 0..256 {
                    std::fs::create_dir_all(dir.join(format!("{shard:02x}")))
                        .map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                Ok(Target::RawDisk(dir.clone()))
            }
        }
    }
}

/// A connected client for one worker.
pub(crate) enum Target {
    Stowage { client: ApiClient, org: String },
    S3(Arc<AmazonS3>),
    RawDisk(PathBuf),
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
            Target::S3(store) => match store.head(&StorePath::from("stowage-bench-warm-up")).await {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(format!("the S3 endpoint refused a HEAD: {e}")),
            },
            Target::RawDisk(_) => Ok(()),
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
            Target::S3(store) => {
                let body: PutPayload = payload.pieces().collect();
                store
                    .put(&StorePath::from(key), body)
                    .await
                    .map_err(|e| e.to_string())?;
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
        }
        Ok(payload.size())
    }

    /// Reads an object's metadata. Returns 0 (no object bytes move).
    pub(crate) async fn properties(&self, key: &str) -> Result<u64, String> {
        match self {
            Target::Stowage { client, org } => {
                client.properties(org, key).await.map_err(|e| e.to_string())?;
            }
            Target::S3(store) => {
                store.head(&StorePath::from(key)).await.map_err(|e| e.to_string())?;
            }
            Target::RawDisk(dir) => {
                std::fs::metadata(raw_path(dir, key)).map_err(|e| e.to_string())?;
            }
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
            Target::S3(store) => {
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
        }
    }

    /// Lists the first page (up to 1000 entries) of `folder`. Returns 0.
    pub(crate) async fn list(&self, folder: &str, page: u64) -> Result<(u64, usize), String> {
        match self {
            Target::Stowage { client, org } => {
                let listed = client.list_page(org, folder, page).await.map_err(|e| e.to_string())?;
                Ok((0, listed.objects.len()))
            }
            Target::S3(store) => {
                // One LIST request: object_store fetches pages lazily, 1000 keys each.
                let prefix = (!folder.is_empty()).then(|| StorePath::from(folder));
                let entries: Vec<_> = store.list(prefix.as_ref()).take(1000).collect().await;
                let mut count = 0;
                for entry in entries {
                    entry.map_err(|e| e.to_string())?;
                    count += 1;
                }
                Ok((0, count))
            }
            Target::RawDisk(_) => Err("the raw-disk target has no list".into()),
        }
    }

    /// Deletes an object. Returns 0.
    pub(crate) async fn delete(&self, key: &str) -> Result<u64, String> {
        match self {
            Target::Stowage { client, org } => {
                client.delete(org, key).await.map_err(|e| e.to_string())?;
            }
            Target::S3(store) => {
                store.delete(&StorePath::from(key)).await.map_err(|e| e.to_string())?;
            }
            Target::RawDisk(dir) => {
                std::fs::remove_file(raw_path(dir, key)).map_err(|e| e.to_string())?;
            }
        }
        Ok(0)
    }
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
}
