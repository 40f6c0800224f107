//! Streams a download job as a zip archive: entries are written one after another straight from
//! the blob store into the response, so memory stays bounded whatever the sizes. Entries are
//! stored uncompressed (models and features rarely compress well, and it keeps downloads at disk
//! speed); sizes and CRCs follow each entry in data descriptors, and zip64 is used when needed.

use std::sync::Arc;

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipDateTime, ZipEntryBuilder};
use futures::io::AsyncWriteExt;
use futures::{StreamExt, TryStreamExt};
use tokio_util::io::ReaderStream;

use super::inflight::Slot;
use crate::blob::{BlobStore, BlobStream};
use crate::meta::JobEntry;

/// Bytes buffered between the zip writer and the response, at most. With a file chunk waiting to
/// enter the pipe and a response chunk on each side of it, a download whose client does not read
/// holds about 1 MiB (1 MiB pipes held about 2 MiB); 256 KiB kept a 1 GiB download at the same
/// speed and CPU time as 1 MiB.
const PIPE_BYTES: usize = 256 * 1024;
/// The largest chunk handed to the response. Large chunks keep big downloads at disk speed
/// (64 KiB chunks spent much of the CPU switching threads); small archives get a buffer of their
/// own size, so many concurrent small downloads do not each hold a large one.
const MAX_RESPONSE_CHUNK: usize = 256 * 1024;
/// Room for the zip's own headers, descriptors and directory per entry, beyond the bodies.
const ZIP_OVERHEAD_PER_ENTRY: u64 = 512;

/// The response chunk size for an archive of `entries`.
fn response_chunk(entries: &[JobEntry]) -> usize {
    let archive: u64 = entries
        .iter()
        .map(|e| {
            e.size
                .saturating_add(ZIP_OVERHEAD_PER_ENTRY + 2 * e.key.as_str().len() as u64)
        })
        .fold(1024, u64::saturating_add);
    usize::try_from(archive).map_or(MAX_RESPONSE_CHUNK, |n| n.min(MAX_RESPONSE_CHUNK))
}

#[derive(Debug, thiserror::Error)]
enum ZipStreamError {
    #[error(transparent)]
    Zip(#[from] async_zip::error::ZipError),
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

async fn write_zip(
    blobs: Arc<dyn BlobStore>,
    entries: Vec<JobEntry>,
    sink: tokio::io::DuplexStream,
) -> Result<(), ZipStreamError> {
    let mut zip = ZipFileWriter::with_tokio(sink);
    for entry in entries {
        let modified = chrono::DateTime::from_timestamp_millis(entry.modified).unwrap_or_default();
        let builder = ZipEntryBuilder::new(entry.key.as_str().into(), Compression::Stored)
            .last_modification_date(ZipDateTime::from_chrono(&modified))
            .unix_permissions(0o644);
        let mut body = blobs.open(&entry.blob).await?;
        let mut writer = zip.write_entry_stream(builder).await?;
        while let Some(chunk) = body.try_next().await? {
            writer.write_all(&chunk).await?;
        }
        writer.close().await?;
    }
    let mut sink = zip.close().await?;
    sink.close().await?;
    Ok(())
}

/// The archive of `entries` as a byte stream, holding `slot` until it ends or is dropped. A
/// failure part-way ends the stream with an error, so the client sees a broken transfer rather
/// than a silently truncated archive.
pub(crate) fn stream_zip(blobs: Arc<dyn BlobStore>, entries: Vec<JobEntry>, slot: Slot) -> BlobStream {
    let chunk = response_chunk(&entries);
    let (sink, source) = tokio::io::duplex(PIPE_BYTES);
    let task = tokio::spawn(write_zip(blobs, entries, sink));
    let outcome = futures::stream::once(async move {
        match task.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "zip download failed part-way");
                Some(Err(std::io::Error::other(e.to_string())))
            }
            Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
        }
    })
    .filter_map(futures::future::ready);
    let counted = ReaderStream::with_capacity(source, chunk).inspect_ok(|chunk| {
        metrics::counter!("stowage_download_bytes_out_total").increment(chunk.len() as u64);
    });
    Box::pin(counted.chain(outcome).map(move |item| {
        let _held = &slot;
        item
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BlobId;
    use crate::key::Key;

    fn entry(key: &str, size: u64) -> JobEntry {
        JobEntry {
            key: Key::parse(key).expect("valid key"),
            blob: BlobId::generate(),
            size,
            modified: 0,
        }
    }

    #[test]
    fn small_archives_get_small_chunks_and_large_ones_the_maximum() {
        let small = response_chunk(&[entry("a.txt", 4096)]);
        assert!((4096..16 * 1024).contains(&small), "{small}");
        assert_eq!(response_chunk(&[entry("big.bin", 1 << 30)]), MAX_RESPONSE_CHUNK);
        assert_eq!(
            response_chunk(&[entry("a", u64::MAX), entry("b", u64::MAX)]),
            MAX_RESPONSE_CHUNK
        );
        assert!(response_chunk(&[]) >= 1024);
    }
}
