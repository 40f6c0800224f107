//! What the service derives from an object's bytes while they stream past: size, md5, and the
//! first 4 KiB that decide text-or-binary, `mime` and `preview` (spec section 5.2). Also the
//! human-readable usage figure of `/object/list`.

use md5::{Digest, Md5};

/// How much of the content decides whether it is text.
pub(crate) const SNIFF_BYTES: usize = 4096;
/// Longest preview, in bytes.
pub(crate) const PREVIEW_BYTES: usize = 1024;

/// Accumulates size, md5 and the head of a body chunk by chunk.
#[derive(Default)]
pub(crate) struct ContentDigest {
    size: u64,
    md5: Md5,
    head: Vec<u8>,
}

/// The finished figures of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentFacts {
    pub(crate) size: u64,
    pub(crate) md5: String,
    /// `Some(preview)` for text, `None` for binary content.
    pub(crate) preview: Option<String>,
}

impl ContentDigest {
    pub(crate) fn new() -> ContentDigest {
        ContentDigest::default()
    }

    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        self.md5.update(chunk);
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
    }

    pub(crate) fn finish(self) -> ContentFacts {
        let cut = self.size > self.head.len() as u64;
        ContentFacts {
            size: self.size,
            md5: hex::encode(self.md5.finalize()),
            preview: text_preview(&self.head, cut),
        }
    }
}

/// Chunks are gathered until this many bytes, then handed as one batch to a hashing task that
/// runs beside the request's task while the blob store writes the same chunks: md5 is the
/// slowest step of an upload (about 700 MB/s on one core) and no longer runs between reading and
/// writing.
const HASH_BATCH: usize = 1024 * 1024;
/// Batches queued for the hashing task: it hashes without pausing between batches while the
/// request's task gathers the next ones; a caller that outruns it waits for room.
const HASH_QUEUE: usize = 2;
/// A body whose rest is smaller than this at `finish`, with no hashing task started, is hashed
/// on the caller's task: a small body costs no hand-off to another thread.
const INLINE_REST: usize = 64 * 1024;

/// Hashing the body failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashFailed {
    /// The hashing task panicked, or the runtime is shutting down.
    #[error("hashing the body failed")]
    Task(#[source] tokio::task::JoinError),
    /// An earlier failure lost the digest: the body can no longer be hashed.
    #[error("hashing the body failed earlier")]
    Lost,
}

type Batches = tokio::sync::mpsc::Receiver<Vec<bytes::Bytes>>;
/// A hashing job: it hashes queued batches until the queue is empty, then hands the digest and
/// the queue back (a body that trickles in holds no thread while nothing arrives).
type HashJob = tokio::task::JoinHandle<(ContentDigest, Batches)>;

/// Where the digest of a large body is: with its queue, waiting for batches, or with a job.
enum Stage {
    Idle(ContentDigest, Batches),
    Hashing(HashJob),
    /// A job failed: the digest is gone.
    Lost,
}

/// A [`ContentDigest`] fed with [`Bytes`](bytes::Bytes) chunks. From the first full batch on,
/// batches go through a bounded queue to a job on the blocking pool, which hashes them while the
/// caller gathers the next (chunks are shared, not copied): memory stays bounded (at most
/// [`HASH_QUEUE`] batches queued, one being hashed, one gathering) and a caller that outruns the
/// hash waits in [`update`](Self::update). The job ends when the queue runs dry and is started
/// again by the next batch, so an upload that stalls holds no thread.
pub(crate) struct PipelinedDigest {
    /// The digest until the first full batch.
    digest: Option<ContentDigest>,
    /// From the first full batch on: the queue's sending side, and where the digest is.
    queue: Option<(tokio::sync::mpsc::Sender<Vec<bytes::Bytes>>, Stage)>,
    pending: Vec<bytes::Bytes>,
    pending_len: usize,
    size: u64,
}

impl Default for PipelinedDigest {
    fn default() -> Self {
        PipelinedDigest::new()
    }
}

impl PipelinedDigest {
    pub(crate) fn new() -> PipelinedDigest {
        PipelinedDigest {
            digest: Some(ContentDigest::new()),
            queue: None,
            pending: Vec::new(),
            pending_len: 0,
            size: 0,
        }
    }

    /// Bytes given so far.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Adds a chunk; waits for room in the queue when a full batch is ready.
    pub(crate) async fn update(&mut self, chunk: bytes::Bytes) -> Result<(), HashFailed> {
        self.size += chunk.len() as u64;
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len >= HASH_BATCH {
            let (batch, _) = self.take_pending();
            if self.queue.is_none() {
                let digest = self.digest.take().ok_or(HashFailed::Lost)?;
                let (sender, batches) = tokio::sync::mpsc::channel(HASH_QUEUE);
                self.queue = Some((sender, Stage::Idle(digest, batches)));
            }
            let Some((sender, stage)) = &mut self.queue else {
                return Err(HashFailed::Lost);
            };
            enqueue(sender, stage, batch).await?;
        }
        Ok(())
    }

    /// The figures of everything given.
    pub(crate) async fn finish(mut self) -> Result<ContentFacts, HashFailed> {
        let (batch, len) = self.take_pending();
        let Some((sender, stage)) = self.queue.take() else {
            let mut digest = self.digest.take().ok_or(HashFailed::Lost)?;
            let hash = move || {
                for chunk in &batch {
                    digest.update(chunk);
                }
                digest.finish()
            };
            return if len < INLINE_REST {
                Ok(hash())
            } else {
                tokio::task::spawn_blocking(hash).await.map_err(HashFailed::Task)
            };
        };
        drop(sender);
        let (mut digest, mut batches) = match stage {
            Stage::Idle(digest, batches) => (digest, batches),
            Stage::Hashing(job) => job.await.map_err(HashFailed::Task)?,
            Stage::Lost => return Err(HashFailed::Lost),
        };
        // What the last job left in the queue, then the rest gathered here.
        tokio::task::spawn_blocking(move || {
            while let Ok(queued) = batches.try_recv() {
                for chunk in &queued {
                    digest.update(chunk);
                }
            }
            for chunk in &batch {
                digest.update(chunk);
            }
            digest.finish()
        })
        .await
        .map_err(HashFailed::Task)
    }

    /// The chunks gathered and their length; none are left.
    fn take_pending(&mut self) -> (Vec<bytes::Bytes>, usize) {
        (std::mem::take(&mut self.pending), std::mem::take(&mut self.pending_len))
    }
}

/// Puts a batch in the queue, with a job running to take it: waits for room, or for the job to
/// end (it ends when it finds the queue empty, possibly just before this batch arrived) and
/// starts another.
async fn enqueue(
    sender: &tokio::sync::mpsc::Sender<Vec<bytes::Bytes>>,
    stage: &mut Stage,
    batch: Vec<bytes::Bytes>,
) -> Result<(), HashFailed> {
    loop {
        match std::mem::replace(stage, Stage::Lost) {
            Stage::Lost => return Err(HashFailed::Lost),
            Stage::Idle(digest, batches) => *stage = Stage::Hashing(start_job(digest, batches)),
            Stage::Hashing(job) if job.is_finished() => {
                let (digest, batches) = job.await.map_err(HashFailed::Task)?;
                *stage = Stage::Idle(digest, batches);
            }
            Stage::Hashing(mut job) => {
                tokio::select! {
                    permit = sender.reserve() => {
                        *stage = Stage::Hashing(job);
                        // The receiver lives in the job or in the stage: the queue is open.
                        permit.map_err(|_| HashFailed::Lost)?.send(batch);
                        return Ok(());
                    }
                    ended = &mut job => {
                        let (digest, batches) = ended.map_err(HashFailed::Task)?;
                        *stage = Stage::Idle(digest, batches);
                    }
                }
            }
        }
    }
}

fn start_job(mut digest: ContentDigest, mut batches: Batches) -> HashJob {
    tokio::task::spawn_blocking(move || {
        while let Ok(batch) = batches.try_recv() {
            for chunk in &batch {
                digest.update(chunk);
            }
        }
        (digest, batches)
    })
}

/// `Some(first KiB)` when `head` (the first 4 KiB) is text: valid UTF-8 without NUL bytes, where a
/// character may be cut at the end only when `cut` says the content goes on past the head.
/// `None` for binary content.
pub(crate) fn text_preview(head: &[u8], cut: bool) -> Option<String> {
    if head.contains(&0) {
        return None;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) => {
            // A cut character at the very end of the sniffed window is fine; anything else is binary.
            if e.error_len().is_some() || !cut {
                return None;
            }
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()?
        }
    };
    let mut end = valid.len().min(PREVIEW_BYTES);
    while !valid.is_char_boundary(end) {
        end -= 1;
    }
    Some(valid[..end].to_owned())
}

/// The mime of a key: from a well-known extension, else by content.
pub(crate) fn mime_for(key_name: &str, is_text: bool) -> String {
    let extension = key_name
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty());
    if let Some(ext) = extension
        && let Some(mime) = mime_guess::from_ext(&ext.to_ascii_lowercase()).first()
    {
        return mime.essence_str().to_owned();
    }
    if is_text {
        "text/plain".to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

/// `objectStorageUsedHuman`: 1000-based units, two decimals except for bytes.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    let mut scale = 1u64;
    while unit + 1 < UNITS.len() && bytes / scale >= 1000 {
        scale *= 1000;
        unit += 1;
    }
    format!("{:.2} {}", bytes as f64 / scale as f64, UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(bytes: &[u8]) -> ContentFacts {
        let mut digest = ContentDigest::new();
        for chunk in bytes.chunks(7) {
            digest.update(chunk);
        }
        digest.finish()
    }

    #[test]
    fn hello_world() {
        let f = facts(b"Hello, world!");
        assert_eq!(f.md5, "6cd3556deb0da54bca060b4c39479839");
        assert_eq!(f.size, 13);
        assert_eq!(f.preview.as_deref(), Some("Hello, world!"));
        assert_eq!(mime_for("test_key_1", true), "text/plain");
    }

    #[test]
    fn previews() {
        assert_eq!(facts(b"").preview.as_deref(), Some(""));
        assert_eq!(facts("é".repeat(3000).as_bytes()).preview.unwrap(), "é".repeat(512));
        assert_eq!(facts("€".repeat(1000).as_bytes()).preview.unwrap(), "€".repeat(341));
        assert_eq!(facts(b"a\0b").preview, None);
        assert_eq!(facts(&[0xff, 0xfe, 0x41]).preview, None);
        // a 3-byte character cut by the 4 KiB boundary is still text
        let mut text = "a".repeat(4095).into_bytes();
        text.extend_from_slice("€".as_bytes());
        assert!(facts(&text).preview.is_some());
        // ...but a short body that ends inside a character is not text.
        assert_eq!(facts(b"a\xe2\x82").preview, None);
        let binary: Vec<u8> = (0..=255u8).cycle().take(2048).collect();
        assert_eq!(facts(&binary).preview, None);
    }

    /// The pipelined digest hashes batches on other threads: whatever the chunk boundaries (odd
    /// sizes, empty chunks, chunks larger than a batch, a batch boundary inside a chunk), its
    /// figures are those of the whole body hashed at once; likewise for a body small enough to
    /// be hashed without a hand-off, and for an empty one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_digest_equals_whole_body_digest() {
        let body: Vec<u8> = (0..3 * HASH_BATCH + 12_345)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
            .collect();
        let sizes = [1, 7, 0, 4093, 65_537, HASH_BATCH + 3, 333, HASH_BATCH - 1, 2];
        let whole = |body: &[u8]| {
            let mut digest = ContentDigest::new();
            digest.update(body);
            digest.finish()
        };
        for len in [body.len(), HASH_BATCH, HASH_BATCH + 1, 70_000, 5000, 0] {
            let body = bytes::Bytes::copy_from_slice(&body[..len]);
            let mut piped = PipelinedDigest::new();
            let (mut at, mut turn) = (0, 0);
            while at < body.len() {
                let end = (at + sizes[turn % sizes.len()]).min(body.len());
                piped.update(body.slice(at..end)).await.unwrap();
                (at, turn) = (end, turn + 1);
                if turn % 4 == 0 {
                    // A pause: the hashing job runs the queue dry and ends; the next batch
                    // starts another.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            assert_eq!(piped.size(), len as u64);
            let facts = piped.finish().await.unwrap();
            assert_eq!(facts, whole(&body), "body of {len} bytes");
            assert_eq!(facts.md5, hex::encode(Md5::digest(&body)), "body of {len} bytes");
        }
    }

    #[test]
    fn mimes() {
        assert_eq!(mime_for("m.json", true), "application/json");
        assert_eq!(mime_for("m.JSON", false), "application/json");
        assert_eq!(mime_for("d.csv", true), "text/csv");
        assert_eq!(mime_for("weights", false), "application/octet-stream");
        assert_eq!(mime_for("notes.", true), "text/plain");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(900_000), "900.00 KB");
        assert_eq!(human_size(2061), "2.06 KB");
        assert_eq!(human_size(2_270_000_000), "2.27 GB");
        assert_eq!(human_size(999_999), "1000.00 KB");
        assert_eq!(human_size(u64::MAX), "18.45 EB");
    }
}
