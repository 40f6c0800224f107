//! The use cases of the S3 front door over the same store as the QuantConnect API: writing,
//! reading, copying and deleting objects under S3's rules, and byte-order listings with any
//! delimiter. Permissions, quotas and key rules are the same decisions the QuantConnect API uses
//! (`authorize`-style checks through [`Service::s3_bucket`], `put_object`'s quota); what differs is
//! only that an S3 key is stored exactly as sent or refused, never renamed.

use std::net::IpAddr;

use super::{Access, S3Identity, Service, ServiceError, ServiceResult, Upload, now_ms};
use crate::blob::BlobStream;
use crate::content::mime_for;
use crate::ids::OrgId;
use crate::key::{FolderPath, Key};
use crate::meta::{Child, KeyKind, NewObject, ObjectMeta, PutOutcome, PutRefusal};

/// The md5 of no bytes: the ETag of an empty body (a `dir/` marker's answer).
pub(crate) const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// The ETag S3 clients see for an object: its multipart ETag when it has one, else its quoted
/// content md5.
pub(crate) fn etag_of(object: &ObjectMeta) -> String {
    match &object.etag {
        Some(etag) => etag.clone(),
        None => format!("\"{}\"", object.md5),
    }
}

/// Where an S3 PUT goes, decided before its body is read.
#[derive(Debug)]
pub(crate) enum PutTarget {
    /// A file key in an organization the caller may write to.
    File { org: OrgId, key: Key },
    /// A zero-byte `dir/` marker: answered as stored, but nothing is stored (stowage's folders
    /// exist while they hold files). A marker with a body is refused.
    FolderMarker,
}

/// What an S3 PUT asks for besides its body.
#[derive(Debug, Default, Clone)]
pub(crate) struct PutOptions {
    /// The request's `Content-Type`; `None`: stowage's usual rules (by extension, then content).
    pub(crate) content_type: Option<String>,
    /// `x-amz-meta-*` pairs as a JSON object.
    pub(crate) user_meta: Option<String>,
    /// `If-None-Match: *`: store only when no object has the key.
    pub(crate) if_absent: bool,
    /// The md5 (hex) the request declared in `Content-MD5`.
    pub(crate) expected_md5: Option<String>,
}

/// One page of an S3 listing: objects and common prefixes in byte order, each after the last.
#[derive(Debug, Default)]
pub(crate) struct S3Listing {
    pub(crate) objects: Vec<ObjectMeta>,
    pub(crate) prefixes: Vec<String>,
    /// More entries follow; `last` is where the next page starts after.
    pub(crate) truncated: bool,
    /// The last key or common prefix of this page.
    pub(crate) last: Option<String>,
}

/// What an S3 listing asks for.
#[derive(Debug, Clone)]
pub(crate) struct ListQuery<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) delimiter: Option<&'a str>,
    /// Entries must sort after this (marker, start-after or continuation token).
    pub(crate) after: Option<&'a str>,
    pub(crate) max: usize,
}

/// One entry of a listing, before it is split into objects and common prefixes.
enum Entry {
    Object(ObjectMeta),
    Prefix(String),
}

impl Entry {
    fn name(&self) -> &str {
        match self {
            Entry::Object(o) => o.key.as_str(),
            Entry::Prefix(p) => p,
        }
    }
}

/// Rows read per query when a listing skips past common prefixes of another delimiter than `/`.
const SEEK_BATCH: usize = 256;

impl Service {
    // --- failed authentication ----------------------------------------------------------------

    /// How long an address over the failed-authentication limit must wait (shared with the
    /// QuantConnect API's counts), or `None`.
    pub(crate) fn s3_address_blocked(&self, client: IpAddr) -> Option<u64> {
        self.failures.address_blocked(client)
    }

    /// Counts a failed S3 authentication (unsigned, wrongly signed, unknown key) from an address.
    pub(crate) fn s3_authentication_failed(&self, client: IpAddr) {
        self.failures.record_failure(client, None);
    }

    // --- writing ------------------------------------------------------------------------------

    /// Checks an S3 PUT before its body is read: the caller may write to the bucket, and the key
    /// is a stowage key exactly as sent (or a `dir/` marker).
    pub(crate) async fn s3_put_target(
        &self,
        identity: &S3Identity,
        bucket: &str,
        key: &str,
    ) -> ServiceResult<PutTarget> {
        let org = self.s3_bucket(identity, bucket, Access::Write).await?;
        if let Some(folder) = key.strip_suffix('/') {
            // Validate it as a folder path, so that `a//` or `../` markers are refused too.
            let parsed = FolderPath::parse(folder)?;
            if parsed.as_str() != folder {
                Key::parse_exact(key)?;
            }
            return Ok(PutTarget::FolderMarker);
        }
        Ok(PutTarget::File {
            org,
            key: Key::parse_exact(key)?,
        })
    }

    /// Stores a finished S3 upload at its target; on any refusal the uploaded blob is discarded.
    pub(crate) async fn s3_put(
        &self,
        org: &OrgId,
        key: &Key,
        upload: Upload,
        options: PutOptions,
    ) -> ServiceResult<ObjectMeta> {
        let quota = match self.quota_of(org).await {
            Ok(quota) => quota,
            Err(e) => {
                upload.abort().await;
                return Err(e);
            }
        };
        let (writer, facts) = upload.into_parts().await?;
        if let Some(expected) = &options.expected_md5
            && !expected.eq_ignore_ascii_case(&facts.md5)
        {
            writer.abort().await;
            return Err(ServiceError::BadDigest {
                algorithm: "MD5 (Content-MD5)",
                sent: expected.clone(),
                computed: facts.md5,
            });
        }
        let blob = writer.finish().await?;
        let mime = options
            .content_type
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| mime_for(key.name(), facts.preview.is_some()));
        let object = NewObject {
            key: key.clone(),
            size: facts.size,
            md5: facts.md5,
            mime,
            preview: facts.preview,
            blob,
            now: now_ms(),
            created: None,
            etag: None,
            user_meta: options.user_meta,
            if_absent: options.if_absent,
        };
        self.commit_put(org, object, quota).await
    }

    /// Commits a new object whose blob is written; a refusal deletes the blob, an unknown
    /// outcome leaves it to the collector.
    pub(super) async fn commit_put(
        &self,
        org: &OrgId,
        object: NewObject,
        quota: crate::meta::Quota,
    ) -> ServiceResult<ObjectMeta> {
        let blob = object.blob.clone();
        let key = object.key.clone();
        let stored = object.as_stored();
        let outcome = match self.meta.put_object(org, object, quota).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.unsettled.add(blob, std::time::Instant::now());
                return Err(e.into());
            }
        };
        match outcome {
            PutOutcome::Stored { .. } => Ok(stored),
            PutOutcome::Refused(refusal) => {
                let _ = self.blobs.delete(&blob).await;
                Err(refusal_error(&key, refusal))
            }
        }
    }

    // --- reading ------------------------------------------------------------------------------

    /// The object at `key` in a bucket the caller may read. A folder, a `dir/` marker and a
    /// missing key are all `NoSuchKey`.
    pub(crate) async fn s3_object(&self, identity: &S3Identity, bucket: &str, key: &str) -> ServiceResult<ObjectMeta> {
        let org = self.s3_bucket(identity, bucket, Access::Read).await?;
        self.s3_object_in(&org, key).await
    }

    async fn s3_object_in(&self, org: &OrgId, key: &str) -> ServiceResult<ObjectMeta> {
        let missing = || ServiceError::ObjectNotFound(key.to_owned());
        let Ok(parsed) = Key::parse_exact(key) else {
            return Err(missing());
        };
        match self.meta.key_kind(org, &parsed).await? {
            KeyKind::File(meta) => Ok(*meta),
            KeyKind::Folder | KeyKind::Missing => Err(missing()),
        }
    }

    /// The body of an object, whole or the bytes `range` (end exclusive).
    pub(crate) async fn s3_body(
        &self,
        object: &ObjectMeta,
        range: Option<std::ops::Range<u64>>,
    ) -> ServiceResult<BlobStream> {
        let stream = match range {
            Some(range) => self.blobs.open_range(&object.blob, range).await?,
            None => self.blobs.open(&object.blob).await?,
        };
        Ok(stream)
    }

    // --- deleting -----------------------------------------------------------------------------

    /// Deletes one object; deleting a key that holds nothing succeeds (S3 semantics). A key
    /// that names a folder deletes nothing: S3 deletes single objects only.
    pub(crate) async fn s3_delete(&self, identity: &S3Identity, bucket: &str, key: &str) -> ServiceResult<()> {
        let org = self.s3_bucket(identity, bucket, Access::Delete).await?;
        self.s3_delete_in(&org, key).await
    }

    /// Deletes several keys of one bucket; each key's own outcome, in order.
    pub(crate) async fn s3_delete_many(
        &self,
        identity: &S3Identity,
        bucket: &str,
        keys: &[String],
    ) -> ServiceResult<Vec<ServiceResult<()>>> {
        let org = self.s3_bucket(identity, bucket, Access::Delete).await?;
        let mut outcomes = Vec::with_capacity(keys.len());
        for key in keys {
            outcomes.push(self.s3_delete_in(&org, key).await);
        }
        Ok(outcomes)
    }

    async fn s3_delete_in(&self, org: &OrgId, key: &str) -> ServiceResult<()> {
        let Ok(parsed) = Key::parse_exact(key) else {
            // No object can have a key stowage would not store: nothing to delete.
            return Ok(());
        };
        if let KeyKind::File(_) = self.meta.key_kind(org, &parsed).await? {
            // Deleting the file (not a folder of that name); gone in between is fine too.
            self.meta.delete(org, &parsed).await?;
        }
        Ok(())
    }

    // --- copying ------------------------------------------------------------------------------

    /// Copies an object into `dest_key` of `dest_bucket` (any buckets the key may read from and
    /// write to). The body is copied into a new blob: each object owns its blob. With
    /// `replace`, the copy takes those metadata instead of the source's.
    pub(crate) async fn s3_copy(
        &self,
        identity: &S3Identity,
        source: (&str, &str),
        dest: (&str, &str),
        replace: Option<PutOptions>,
    ) -> ServiceResult<ObjectMeta> {
        let object = self.s3_object(identity, source.0, source.1).await?;
        let PutTarget::File { org, key } = self.s3_put_target(identity, dest.0, dest.1).await? else {
            return Err(ServiceError::InvalidRequest(format!(
                "Cannot copy onto '{}': a key ending in '/' names a folder",
                dest.1
            )));
        };
        let options = match replace {
            Some(options) => options,
            None => PutOptions {
                content_type: Some(object.mime.clone()),
                user_meta: object.user_meta.clone(),
                ..PutOptions::default()
            },
        };
        let mut upload = self.begin_upload().await?;
        let copied =
            async {
                use futures::TryStreamExt;
                let mut body = self.blobs.open(&object.blob).await?;
                while let Some(chunk) = body.try_next().await.map_err(|e| {
                    ServiceError::Unavailable(super::StorageFailure::Blob(crate::blob::BlobError::Io(e)))
                })? {
                    upload.push(chunk).await?;
                }
                Ok::<_, ServiceError>(())
            }
            .await;
        if let Err(e) = copied {
            upload.abort().await;
            return Err(e);
        }
        self.s3_put(&org, &key, upload, options).await
    }

    // --- listing ------------------------------------------------------------------------------

    /// One page of a bucket's keys under `prefix`, in byte order. With the `/` delimiter the
    /// folder index answers (direct children only); with another delimiter the listing seeks past
    /// each common prefix; without one it reads keys in order. Each costs O(page).
    pub(crate) async fn s3_list(
        &self,
        identity: &S3Identity,
        bucket: &str,
        query: ListQuery<'_>,
    ) -> ServiceResult<S3Listing> {
        let org = self.s3_bucket(identity, bucket, Access::Read).await?;
        if query.max == 0 {
            return Ok(S3Listing::default());
        }
        let entries = match query.delimiter.filter(|d| !d.is_empty()) {
            Some("/") => self.list_by_folder(&org, &query).await?,
            Some(delimiter) => self.list_seeking(&org, &query, delimiter).await?,
            None => self.list_flat(&org, &query).await?,
        };
        Ok(page_of(entries, query.max))
    }

    /// Where a scan of keys begins: at the prefix, or after `after` when that is later.
    fn scan_start<'q>(query: &'q ListQuery<'_>) -> (&'q str, bool) {
        match query.after {
            Some(after) if after >= query.prefix => (after, false),
            _ => (query.prefix, true),
        }
    }

    async fn list_flat(&self, org: &OrgId, query: &ListQuery<'_>) -> ServiceResult<Vec<Entry>> {
        let (from, inclusive) = Self::scan_start(query);
        let files = self.meta.files_from(org, from, inclusive, query.max + 1).await?;
        Ok(files
            .into_iter()
            .take_while(|f| f.key.as_str().starts_with(query.prefix))
            .map(Entry::Object)
            .collect())
    }

    async fn list_seeking(&self, org: &OrgId, query: &ListQuery<'_>, delimiter: &str) -> ServiceResult<Vec<Entry>> {
        let (start, inclusive) = Self::scan_start(query);
        let mut cursor = start.to_owned();
        let mut inclusive = inclusive;
        let mut entries: Vec<Entry> = Vec::new();
        'scan: loop {
            let batch = self.meta.files_from(org, &cursor, inclusive, SEEK_BATCH).await?;
            let exhausted = batch.len() < SEEK_BATCH;
            let Some(last) = batch.last().map(|f| f.key.as_str().to_owned()) else {
                break;
            };
            for file in batch {
                let key = file.key.as_str();
                if !key.starts_with(query.prefix) {
                    break 'scan;
                }
                let rest = &key[query.prefix.len()..];
                match rest.find(delimiter) {
                    Some(at) => {
                        let common = format!("{}{}", query.prefix, &rest[..at + delimiter.len()]);
                        let seen = query.after.is_some_and(|after| common.as_str() <= after);
                        if !seen {
                            entries.push(Entry::Prefix(common.clone()));
                        }
                        if entries.len() > query.max {
                            break 'scan;
                        }
                        // Skip every key under this common prefix with one seek.
                        cursor = format!("{common}{}", char::MAX);
                        inclusive = false;
                        continue 'scan;
                    }
                    None => entries.push(Entry::Object(file)),
                }
                if entries.len() > query.max {
                    break 'scan;
                }
            }
            if exhausted {
                break;
            }
            cursor = last;
            inclusive = false;
        }
        Ok(entries)
    }

    async fn list_by_folder(&self, org: &OrgId, query: &ListQuery<'_>) -> ServiceResult<Vec<Entry>> {
        let (folder_part, name_prefix) = match query.prefix.rfind('/') {
            Some(at) => (&query.prefix[..at], &query.prefix[at + 1..]),
            None => ("", query.prefix),
        };
        // A prefix whose folder part is not stored as written matches nothing.
        let Ok(folder) = FolderPath::parse(folder_part) else {
            return Ok(Vec::new());
        };
        if folder.as_str() != folder_part || (query.prefix.starts_with('/')) {
            return Ok(Vec::new());
        }
        let base = if folder_part.is_empty() {
            String::new()
        } else {
            format!("{folder_part}/")
        };
        let (from, inclusive) = match query.after {
            Some(after) if after >= query.prefix => match after.strip_prefix(base.as_str()) {
                Some(relative) => (relative.to_owned(), false),
                // After everything in this folder.
                None => return Ok(Vec::new()),
            },
            _ => (name_prefix.to_owned(), true),
        };
        let children = self
            .meta
            .children_from(org, &folder, &from, inclusive, query.max + 1)
            .await?;
        let mut entries = Vec::with_capacity(children.len());
        for child in children {
            let entry = match child {
                Child::File(file) => Entry::Object(file),
                Child::Folder(path) => Entry::Prefix(format!("{}/", path.as_str())),
            };
            if !entry.name()[base.len()..].starts_with(name_prefix) {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// Cuts entries (at most `max + 1`) into a page of `max`.
fn page_of(entries: Vec<Entry>, max: usize) -> S3Listing {
    let truncated = entries.len() > max;
    let mut listing = S3Listing {
        truncated,
        ..S3Listing::default()
    };
    for entry in entries.into_iter().take(max) {
        listing.last = Some(entry.name().to_owned());
        match entry {
            Entry::Object(o) => listing.objects.push(o),
            Entry::Prefix(p) => listing.prefixes.push(p),
        }
    }
    listing
}

/// The service error for a refused write of `key`.
pub(super) fn refusal_error(key: &Key, refusal: PutRefusal) -> ServiceError {
    match refusal {
        PutRefusal::AncestorIsFile(file) => ServiceError::AncestorIsFile {
            key: key.to_string(),
            file,
        },
        PutRefusal::IsFolder => ServiceError::KeyIsFolder(key.to_string()),
        PutRefusal::Quota(exceeded) => ServiceError::Quota(exceeded),
        PutRefusal::Exists => ServiceError::ObjectExists(key.to_string()),
    }
}
