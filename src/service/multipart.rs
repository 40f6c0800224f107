//! S3 multipart uploads: parts are stored as they arrive and count against the organization's
//! byte quota while pending; completing one checks the parts the client names (order, ETags,
//! sizes), assembles them into one new blob (so the object's md5 is its content's, as the
//! QuantConnect API reports it) and commits it in one transaction that also forgets the parts.
//! A crash at any step leaves either the pending upload or the object, never half of either: the
//! assembled blob is invisible until that transaction, and an orphan after a crash.
//! Abandoned uploads expire after `s3_api_multipart_expiry_secs`.

use md5::{Digest, Md5};

use super::s3::{PutOptions, refusal_error};
use super::{Access, S3Identity, Service, ServiceError, ServiceResult, Upload, now_ms};
use crate::content::mime_for;
use crate::ids::OrgId;
use crate::key::Key;
use crate::meta::{CompleteOutcome, MultipartUpload, NewObject, ObjectMeta, PartOutcome, PartRecord};

/// Part numbers go from 1 to this.
pub(crate) const MAX_PART_NUMBER: i64 = 10_000;
/// Every part but the last is at least this large (as S3).
pub(crate) const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Uploads removed per collection pass.
const EXPIRY_BATCH: usize = 100;

/// A part as CompleteMultipartUpload names it.
#[derive(Debug, Clone)]
pub(crate) struct NamedPart {
    pub(crate) number: i64,
    /// The ETag the client got for it (quotes optional).
    pub(crate) etag: String,
}

/// A completion whose parts have been checked, ready to assemble.
#[derive(Debug)]
pub(crate) struct Completion {
    upload: MultipartUpload,
    parts: Vec<PartRecord>,
    /// The object's size: the parts' sizes added.
    pub(crate) size: u64,
}

/// A page of an upload's parts.
#[derive(Debug)]
pub(crate) struct PartsPage {
    pub(crate) upload: MultipartUpload,
    pub(crate) parts: Vec<PartRecord>,
    pub(crate) truncated: bool,
}

/// The ETag of a part: its quoted md5.
pub(crate) fn part_etag(part: &PartRecord) -> String {
    format!("\"{}\"", part.md5)
}

/// S3's ETag of a multipart object: the md5 of the parts' binary md5s, then `-N`.
fn multipart_etag(parts: &[PartRecord]) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        if let Ok(bytes) = hex::decode(&part.md5) {
            hasher.update(bytes);
        }
    }
    format!("\"{}-{}\"", hex::encode(hasher.finalize()), parts.len())
}

/// Checks the parts a completion names against the stored ones and returns the stored parts in
/// that order: ascending numbers each once, each stored with that ETag, each but the last at
/// least [`MIN_PART_SIZE`].
pub(crate) fn chosen_parts(named: &[NamedPart], stored: &[PartRecord]) -> ServiceResult<Vec<PartRecord>> {
    if named.is_empty() {
        return Err(ServiceError::InvalidRequest(
            "A completion must name at least one part".to_owned(),
        ));
    }
    let mut chosen = Vec::with_capacity(named.len());
    let mut previous = 0i64;
    for part in named {
        if part.number <= previous {
            return Err(ServiceError::InvalidPartOrder);
        }
        previous = part.number;
        let found = stored
            .iter()
            .find(|p| i64::from(p.number) == part.number)
            .ok_or_else(|| {
                ServiceError::InvalidPart(format!(
                    "Part {} was never uploaded (or was replaced); upload it, or leave it out of the completion",
                    part.number
                ))
            })?;
        if found.md5 != part.etag.trim().trim_matches('"') {
            return Err(ServiceError::InvalidPart(format!(
                "Part {}'s ETag is {}, not {}: name the ETag its upload answered",
                part.number,
                part_etag(found),
                part.etag
            )));
        }
        chosen.push(found.clone());
    }
    if let Some((_, all_but_last)) = chosen.split_last()
        && let Some(small) = all_but_last.iter().find(|p| p.size < MIN_PART_SIZE)
    {
        return Err(ServiceError::EntityTooSmall {
            part: small.number,
            size: small.size,
            min: MIN_PART_SIZE,
        });
    }
    Ok(chosen)
}

impl Service {
    /// Begins a multipart upload of `key`; answers its id.
    pub(crate) async fn s3_create_multipart(
        &self,
        identity: &S3Identity,
        bucket: &str,
        key: &str,
        options: PutOptions,
    ) -> ServiceResult<String> {
        let org = self.s3_bucket(identity, bucket, Access::Write).await?;
        let key = Key::parse_exact(key)?;
        let upload = MultipartUpload {
            id: uuid::Uuid::new_v4().simple().to_string(),
            org,
            mime: options
                .content_type
                .filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| mime_for(key.name(), false)),
            key,
            user: identity.user(),
            created: now_ms(),
            user_meta: options.user_meta,
        };
        self.meta.create_upload(&upload).await?;
        Ok(upload.id)
    }

    /// The pending upload `id` of `key` in a bucket the caller may write to.
    pub(crate) async fn s3_pending_upload(
        &self,
        identity: &S3Identity,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> ServiceResult<MultipartUpload> {
        let org = self.s3_bucket(identity, bucket, Access::Write).await?;
        self.pending_upload_in(&org, key, id).await
    }

    async fn pending_upload_in(&self, org: &OrgId, key: &str, id: &str) -> ServiceResult<MultipartUpload> {
        match self.meta.upload(org, id).await? {
            Some(upload) if upload.key.as_str() == key => Ok(upload),
            _ => Err(ServiceError::NoSuchUpload(id.to_owned())),
        }
    }

    /// Checks a part number before its body is read.
    pub(crate) fn s3_part_number(number: i64) -> ServiceResult<u32> {
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(ServiceError::PartNumberOutOfRange(number));
        }
        u32::try_from(number).map_err(|_| ServiceError::PartNumberOutOfRange(number))
    }

    /// Stores a part that has been read into `body`; answers its ETag. The part counts against
    /// the byte quota until the upload completes or ends.
    pub(crate) async fn s3_store_part(
        &self,
        upload: &MultipartUpload,
        number: u32,
        body: Upload,
        expected_md5: Option<String>,
    ) -> ServiceResult<String> {
        let quota = match self.quota_of(&upload.org).await {
            Ok(quota) => quota,
            Err(e) => {
                body.abort().await;
                return Err(e);
            }
        };
        let (writer, facts) = body.into_parts().await?;
        if let Some(expected) = expected_md5
            && !expected.eq_ignore_ascii_case(&facts.md5)
        {
            writer.abort().await;
            return Err(ServiceError::BadDigest {
                algorithm: "MD5 (Content-MD5)",
                sent: expected,
                computed: facts.md5,
            });
        }
        let blob = writer.finish().await?;
        let part = PartRecord {
            number,
            blob: blob.clone(),
            size: facts.size,
            md5: facts.md5,
            modified: now_ms(),
        };
        let outcome = match self.meta.put_part(&upload.org, &upload.id, &part, quota).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.unsettled.add(blob, std::time::Instant::now());
                return Err(e.into());
            }
        };
        match outcome {
            PartOutcome::Stored { .. } => Ok(part_etag(&part)),
            PartOutcome::NoSuchUpload => {
                let _ = self.blobs.delete(&blob).await;
                Err(ServiceError::NoSuchUpload(upload.id.clone()))
            }
            PartOutcome::Quota(exceeded) => {
                let _ = self.blobs.delete(&blob).await;
                Err(ServiceError::Quota(exceeded))
            }
        }
    }

    /// Checks a completion before any byte is copied: the upload exists and the parts the
    /// client names are stored, in order, with those ETags and sizes.
    pub(crate) async fn s3_completion(
        &self,
        identity: &S3Identity,
        bucket: &str,
        key: &str,
        id: &str,
        named: &[NamedPart],
    ) -> ServiceResult<Completion> {
        let upload = self.s3_pending_upload(identity, bucket, key, id).await?;
        let stored = self.meta.parts(&upload.org, id, 0, MAX_PART_NUMBER as usize).await?;
        let parts = chosen_parts(named, &stored)?;
        let size = parts.iter().map(|p| p.size).fold(0u64, u64::saturating_add);
        Ok(Completion { upload, parts, size })
    }

    /// Completes a checked upload: one object whose body is its parts in order.
    pub(crate) async fn s3_complete_multipart(&self, completion: Completion) -> ServiceResult<ObjectMeta> {
        let Completion {
            upload, parts: chosen, ..
        } = completion;
        let id = upload.id.as_str();
        let quota = self.quota_of(&upload.org).await?;
        let mut assembled = self.begin_upload().await?;
        if let Err(e) = self.append_parts(&mut assembled, &chosen).await {
            assembled.abort().await;
            return Err(e);
        }
        let (writer, facts) = assembled.into_parts().await?;
        let blob = writer.finish().await?;
        let object = NewObject {
            key: upload.key.clone(),
            size: facts.size,
            md5: facts.md5,
            mime: upload.mime.clone(),
            preview: facts.preview,
            blob: blob.clone(),
            now: now_ms(),
            created: None,
            etag: Some(multipart_etag(&chosen)),
            user_meta: upload.user_meta.clone(),
            if_absent: false,
        };
        let stored_meta = object.as_stored();
        let outcome = match self.meta.complete_upload(&upload.org, id, object, quota).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.unsettled.add(blob, std::time::Instant::now());
                return Err(e.into());
            }
        };
        match outcome {
            CompleteOutcome::Stored { .. } => Ok(stored_meta),
            CompleteOutcome::NoSuchUpload => {
                let _ = self.blobs.delete(&blob).await;
                Err(ServiceError::NoSuchUpload(id.to_owned()))
            }
            CompleteOutcome::Refused(refusal) => {
                let _ = self.blobs.delete(&blob).await;
                Err(refusal_error(&upload.key, refusal))
            }
        }
    }

    async fn append_parts(&self, assembled: &mut Upload, parts: &[PartRecord]) -> ServiceResult<()> {
        use futures::TryStreamExt;
        for part in parts {
            let mut body = self.blobs.open(&part.blob).await?;
            while let Some(chunk) = body
                .try_next()
                .await
                .map_err(|e| ServiceError::Unavailable(crate::blob::BlobError::Io(e).into()))?
            {
                assembled.push(chunk).await?;
            }
        }
        Ok(())
    }

    /// Abandons an upload: its parts are released.
    pub(crate) async fn s3_abort_multipart(
        &self,
        identity: &S3Identity,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> ServiceResult<()> {
        let upload = self.s3_pending_upload(identity, bucket, key, id).await?;
        if self.meta.abort_upload(&upload.org, id).await? {
            Ok(())
        } else {
            Err(ServiceError::NoSuchUpload(id.to_owned()))
        }
    }

    /// A page of an upload's parts after part number `after`.
    pub(crate) async fn s3_list_parts(
        &self,
        identity: &S3Identity,
        bucket: &str,
        key: &str,
        id: &str,
        after: u32,
        max: usize,
    ) -> ServiceResult<PartsPage> {
        let org = self.s3_bucket(identity, bucket, Access::Read).await?;
        let upload = self.pending_upload_in(&org, key, id).await?;
        let mut parts = self.meta.parts(&org, id, after, max + 1).await?;
        let truncated = parts.len() > max;
        parts.truncate(max);
        Ok(PartsPage {
            upload,
            parts,
            truncated,
        })
    }

    /// A page of a bucket's pending uploads under `prefix`, after `(key, id)`.
    pub(crate) async fn s3_list_uploads(
        &self,
        identity: &S3Identity,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        max: usize,
    ) -> ServiceResult<(Vec<MultipartUpload>, bool)> {
        let org = self.s3_bucket(identity, bucket, Access::Read).await?;
        let mut uploads = self.meta.list_uploads(&org, prefix, after, max + 1).await?;
        let truncated = uploads.len() > max;
        uploads.truncate(max);
        Ok((uploads, truncated))
    }

    /// Removes uploads older than the multipart expiry (their parts await collection).
    pub(super) async fn expire_multipart_uploads(&self, now: crate::meta::Millis) -> ServiceResult<usize> {
        let before = now.saturating_sub(self.limits.multipart_expiry_ms);
        let mut removed = 0;
        loop {
            let expired = self.meta.expired_uploads(before, EXPIRY_BATCH).await?;
            let batch = expired.len();
            for (org, id) in expired {
                if self.meta.abort_upload(&org, &id).await? {
                    removed += 1;
                }
            }
            if batch < EXPIRY_BATCH {
                return Ok(removed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BlobId;

    fn part(number: u32, size: u64, md5: &str) -> PartRecord {
        PartRecord {
            number,
            blob: BlobId::generate(),
            size,
            md5: md5.to_owned(),
            modified: 0,
        }
    }

    fn named(number: i64, etag: &str) -> NamedPart {
        NamedPart {
            number,
            etag: etag.to_owned(),
        }
    }

    #[test]
    fn completions_check_order_etags_and_sizes() {
        let big = MIN_PART_SIZE;
        let a = "0cc175b9c0f1b6a831c399e269772661";
        let b = "92eb5ffee6ae2fec3ad71c777531578f";
        let stored = vec![part(1, big, a), part(2, 10, b), part(3, 10, b)];
        let chosen = chosen_parts(&[named(1, &format!("\"{a}\"")), named(3, b)], &stored).unwrap();
        assert_eq!(chosen.iter().map(|p| p.number).collect::<Vec<_>>(), vec![1, 3]);
        assert!(matches!(
            chosen_parts(&[named(3, b), named(1, a)], &stored),
            Err(ServiceError::InvalidPartOrder)
        ));
        assert!(matches!(
            chosen_parts(&[named(1, a), named(1, a)], &stored),
            Err(ServiceError::InvalidPartOrder)
        ));
        assert!(matches!(
            chosen_parts(&[named(4, b)], &stored),
            Err(ServiceError::InvalidPart(_))
        ));
        assert!(matches!(
            chosen_parts(&[named(1, b)], &stored),
            Err(ServiceError::InvalidPart(_))
        ));
        assert!(matches!(
            chosen_parts(&[named(2, b), named(3, b)], &stored),
            Err(ServiceError::EntityTooSmall { part: 2, .. })
        ));
        assert!(chosen_parts(&[], &stored).is_err());
    }

    #[test]
    fn the_multipart_etag_is_the_md5_of_the_part_md5s() {
        // Two parts whose md5s are those of "a" and "b": md5(md5("a") ++ md5("b")) with -2.
        let parts = vec![
            part(1, 1, "0cc175b9c0f1b6a831c399e269772661"),
            part(2, 1, "92eb5ffee6ae2fec3ad71c777531578f"),
        ];
        let mut both = hex::decode("0cc175b9c0f1b6a831c399e269772661").unwrap();
        both.extend(hex::decode("92eb5ffee6ae2fec3ad71c777531578f").unwrap());
        let expected = format!("\"{}-2\"", hex::encode(Md5::digest(&both)));
        assert_eq!(multipart_etag(&parts), expected);
    }

    #[test]
    fn part_numbers_go_from_one_to_ten_thousand() {
        assert_eq!(Service::s3_part_number(1).unwrap(), 1);
        assert_eq!(Service::s3_part_number(10_000).unwrap(), 10_000);
        for bad in [0, -1, 10_001] {
            assert!(matches!(
                Service::s3_part_number(bad),
                Err(ServiceError::PartNumberOutOfRange(n)) if n == bad
            ));
        }
    }
}
