//! The S3 operations stowage answers, each a thin translation between `s3s`'s request and
//! answer types and one service use case. Operations not implemented here answer
//! `NotImplemented` (the `s3s` default).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http;
use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::attributes::Attributes;
use super::auth::identity;
use super::conditions::{self, Preconditions, Verdict};
use super::error::to_s3;
use super::list;
use crate::blob::BlobStream;
use crate::meta::{Millis, ObjectMeta};
use crate::service::multipart::{NamedPart, part_etag};
use crate::service::s3::{EMPTY_MD5, ListQuery, PutOptions, PutTarget, etag_of};
use crate::service::{S3Identity, Service, ServiceError};

/// A completion of more bytes than this is assembled while s3s keeps the connection alive (a
/// failure then arrives in the body of a 200, as AWS does; the checks a client can fail come
/// before). Smaller ones answer when done, with a plain error status.
const ASSEMBLE_IN_BACKGROUND_ABOVE: u64 = 64 * 1024 * 1024;

/// Keys one DeleteObjects request may name (as S3).
const MAX_DELETE_KEYS: usize = 1000;

/// The S3 operations over the service.
pub(super) struct Stowage {
    service: Arc<Service>,
    region: String,
}

impl Stowage {
    pub(super) fn new(service: Arc<Service>, region: String) -> Stowage {
        Stowage { service, region }
    }
}

/// An S3 ETag value for a stored ETag (which carries its quotes).
pub(super) fn etag_value(quoted: &str) -> ETag {
    ETag::Strong(quoted.trim_matches('"').to_owned())
}

/// An S3 timestamp for a stowage time.
pub(super) fn timestamp(ms: Millis) -> Timestamp {
    let ms = u64::try_from(ms).unwrap_or(0);
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// The name a bucket is shown under: its alias, else its organization id.
fn bucket_name(org: &crate::meta::Organization) -> String {
    org.bucket.clone().unwrap_or_else(|| org.id.to_string())
}

fn owner_of(identity: &S3Identity) -> Owner {
    let user = identity.user().to_string();
    Owner {
        display_name: Some(format!("user {user}")),
        id: Some(user),
    }
}

/// The md5 (hex) a `Content-MD5` header declares.
fn declared_md5(content_md5: Option<&str>) -> S3Result<Option<String>> {
    let Some(value) = content_md5 else { return Ok(None) };
    match base64::engine::general_purpose::STANDARD.decode(value.trim()) {
        Ok(bytes) if bytes.len() == 16 => Ok(Some(hex::encode(bytes))),
        _ => Err(s3_error!(
            InvalidDigest,
            "The Content-MD5 header must be the base64 of the body's 16-byte MD5 digest"
        )),
    }
}

/// Which checksums a body is hashed for: those its request declared in headers, announced for
/// its aws-chunked trailer (`x-amz-trailer`) or asked for (`x-amz-sdk-checksum-algorithm`).
fn checksum_hasher(
    declared: &Checksum,
    algorithm: Option<&ChecksumAlgorithm>,
    headers: &http::HeaderMap,
) -> s3s::checksum::ChecksumHasher {
    use s3s::crypto::Checksum as _;
    let trailer = headers
        .get("x-amz-trailer")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let algorithm = algorithm.map(|a| a.as_str().to_ascii_uppercase()).unwrap_or_default();
    let wanted = |name: &str, header: bool| {
        header
            || algorithm == name
            || trailer
                .split(',')
                .any(|t| t.trim() == format!("x-amz-checksum-{}", name.to_ascii_lowercase()))
    };
    let mut hasher = s3s::checksum::ChecksumHasher::default();
    if wanted("CRC32", declared.checksum_crc32.is_some()) {
        hasher.crc32 = Some(s3s::crypto::Crc32::new());
    }
    if wanted("CRC32C", declared.checksum_crc32c.is_some()) {
        hasher.crc32c = Some(s3s::crypto::Crc32c::new());
    }
    if wanted("SHA1", declared.checksum_sha1.is_some()) {
        hasher.sha1 = Some(s3s::crypto::Sha1::new());
    }
    if wanted("SHA256", declared.checksum_sha256.is_some()) {
        hasher.sha256 = Some(s3s::crypto::Sha256::new());
    }
    if wanted("CRC64NVME", declared.checksum_crc64nvme.is_some()) {
        hasher.crc64nvme = Some(s3s::crypto::Crc64Nvme::new());
    }
    hasher
}

/// The checksums a request declared: its `x-amz-checksum-*` headers, else its trailer's.
fn declared_checksums(headers_sent: &Checksum, trailers: Option<&s3s::TrailingHeaders>) -> Checksum {
    let trailer = |name: &str| {
        trailers
            .and_then(|t| t.read(|h| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)))
            .flatten()
    };
    Checksum {
        checksum_crc32: headers_sent
            .checksum_crc32
            .clone()
            .or_else(|| trailer("x-amz-checksum-crc32")),
        checksum_crc32c: headers_sent
            .checksum_crc32c
            .clone()
            .or_else(|| trailer("x-amz-checksum-crc32c")),
        checksum_sha1: headers_sent
            .checksum_sha1
            .clone()
            .or_else(|| trailer("x-amz-checksum-sha1")),
        checksum_sha256: headers_sent
            .checksum_sha256
            .clone()
            .or_else(|| trailer("x-amz-checksum-sha256")),
        checksum_crc64nvme: headers_sent
            .checksum_crc64nvme
            .clone()
            .or_else(|| trailer("x-amz-checksum-crc64nvme")),
        ..Checksum::default()
    }
}

/// The checksums a read answers with: the stored ones, when the client asked
/// (`x-amz-checksum-mode: ENABLED`) and reads the whole object.
fn checksums_to_show(attributes: &Attributes, mode: Option<&ChecksumMode>, ranged: bool) -> Checksum {
    let enabled = mode.is_some_and(|m| m.as_str().eq_ignore_ascii_case("ENABLED"));
    if enabled && !ranged {
        attributes.checksum()
    } else {
        Checksum::default()
    }
}

/// Compares declared checksums (headers, or an aws-chunked body's trailer) with computed ones.
fn verify_checksums(declared: &Checksum, computed: &Checksum) -> Result<(), ServiceError> {
    let pairs = [
        (
            "CRC32 (x-amz-checksum-crc32)",
            &declared.checksum_crc32,
            &computed.checksum_crc32,
        ),
        (
            "CRC32C (x-amz-checksum-crc32c)",
            &declared.checksum_crc32c,
            &computed.checksum_crc32c,
        ),
        (
            "SHA-1 (x-amz-checksum-sha1)",
            &declared.checksum_sha1,
            &computed.checksum_sha1,
        ),
        (
            "SHA-256 (x-amz-checksum-sha256)",
            &declared.checksum_sha256,
            &computed.checksum_sha256,
        ),
        (
            "CRC64NVME (x-amz-checksum-crc64nvme)",
            &declared.checksum_crc64nvme,
            &computed.checksum_crc64nvme,
        ),
    ];
    for (algorithm, sent, got) in pairs {
        if let (Some(sent), Some(got)) = (sent, got)
            && sent.trim() != got
        {
            return Err(ServiceError::BadDigest {
                algorithm,
                sent: sent.clone(),
                computed: got.clone(),
            });
        }
    }
    Ok(())
}

/// The `x-amz-checksum-*` headers of a `PutObjectInput` or an `UploadPartInput`.
macro_rules! checksums_of {
    ($input:expr) => {
        Checksum {
            checksum_crc32: $input.checksum_crc32.clone(),
            checksum_crc32c: $input.checksum_crc32c.clone(),
            checksum_sha1: $input.checksum_sha1.clone(),
            checksum_sha256: $input.checksum_sha256.clone(),
            checksum_crc64nvme: $input.checksum_crc64nvme.clone(),
            ..Checksum::default()
        }
    };
}

/// Reads a body into a new upload, hashing it for the checksums the request declared (`sent`
/// headers, an aws-chunked trailer, or an algorithm it asked for) and verifying them: a mismatch
/// stores nothing. Answers the upload and the checksums computed.
async fn read_verified(
    service: &Service,
    body: Option<StreamingBlob>,
    sent: &Checksum,
    algorithm: Option<ChecksumAlgorithm>,
    headers: &http::HeaderMap,
    trailers: Option<&s3s::TrailingHeaders>,
) -> S3Result<(crate::service::Upload, Checksum)> {
    let mut hasher = checksum_hasher(sent, algorithm.as_ref(), headers);
    let upload = read_body(service, body, &mut hasher).await?;
    let computed = hasher.finalize();
    let declared = declared_checksums(sent, trailers);
    if let Err(e) = verify_checksums(&declared, &computed) {
        upload.abort().await;
        return Err(to_s3(e));
    }
    Ok((upload, computed))
}

/// Reads a request body into a new upload, feeding `hasher` on the way.
async fn read_body(
    service: &Service,
    body: Option<StreamingBlob>,
    hasher: &mut s3s::checksum::ChecksumHasher,
) -> S3Result<crate::service::Upload> {
    let mut upload = service.begin_upload().await.map_err(to_s3)?;
    let mut body = body;
    let read: Result<(), BodyError> = async {
        if let Some(body) = body.as_mut() {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BodyError::of(e.as_ref()))?;
                hasher.update(&chunk);
                upload.push(chunk).await.map_err(BodyError::Service)?;
            }
        }
        Ok(())
    }
    .await;
    match read {
        Ok(()) => Ok(upload),
        Err(e) => {
            upload.abort().await;
            Err(e.into_s3())
        }
    }
}

/// Whether a body holds at least one byte (read until the first one, or its end).
async fn has_bytes(body: Option<StreamingBlob>) -> S3Result<bool> {
    let Some(mut body) = body else { return Ok(false) };
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) if chunk.is_empty() => continue,
            Ok(_) => return Ok(true),
            Err(e) => return Err(BodyError::of(e.as_ref()).into_s3()),
        }
    }
    Ok(false)
}

/// Why reading a request body failed.
#[derive(Debug)]
enum BodyError {
    /// An aws-chunked chunk's signature is wrong: the body is not the one that was signed.
    ChunkSignature,
    /// The body's SHA-256 is not the signed `x-amz-content-sha256`.
    ContentSha256,
    /// A malformed aws-chunked encoding.
    ChunkFormat,
    /// The connection ended, timed out or broke.
    Broken,
    /// The service refused a chunk (too large) or storage failed.
    Service(ServiceError),
}

impl BodyError {
    /// Classifies a body stream's error. s3s's stream errors are not nameable types outside it,
    /// so their text (of the pinned version) tells them apart.
    fn of(error: &(dyn std::error::Error + 'static)) -> BodyError {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = cause {
            let text = e.to_string();
            if text.contains("AwsChunkedStreamError: SignatureMismatch") {
                return BodyError::ChunkSignature;
            }
            if text.contains("UploadStreamError: Sha256Mismatch") {
                return BodyError::ContentSha256;
            }
            if text.contains("AwsChunkedStreamError: FormatError")
                || text.contains("ChunkMetaTooLarge")
                || text.contains("TrailersTooLarge")
                || text.contains("TooManyTrailerHeaders")
            {
                return BodyError::ChunkFormat;
            }
            cause = e.source();
        }
        BodyError::Broken
    }

    fn into_s3(self) -> S3Error {
        match self {
            BodyError::ChunkSignature => s3_error!(
                SignatureDoesNotMatch,
                "A chunk's signature does not match its content: the body is not the one that was signed; nothing was stored"
            ),
            BodyError::ContentSha256 => {
                // AWS's code for it; s3s has no variant of its own.
                let mut refused = S3Error::with_message(
                    S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                    "The body's SHA-256 is not the x-amz-content-sha256 the request signed: the body was changed on the way; nothing was stored",
                );
                refused.set_status_code(http::StatusCode::BAD_REQUEST);
                refused
            }
            BodyError::ChunkFormat => s3_error!(
                InvalidRequest,
                "The aws-chunked body is malformed (a chunk header, a size or the trailer cannot be read); nothing was stored"
            ),
            BodyError::Broken => to_s3(ServiceError::UploadBroken),
            BodyError::Service(e) => to_s3(e),
        }
    }
}

/// The [`Read`] of a `GetObjectInput` or a `HeadObjectInput` (their fields share names).
macro_rules! read_of {
    ($input:expr) => {
        Read {
            bucket: &$input.bucket,
            key: &$input.key,
            preconditions: Preconditions {
                if_match: $input.if_match.as_ref(),
                if_none_match: $input.if_none_match.as_ref(),
                if_modified_since: $input.if_modified_since.as_ref(),
                if_unmodified_since: $input.if_unmodified_since.as_ref(),
            },
            range: $input.range.as_ref(),
            checksum_mode: $input.checksum_mode.as_ref(),
            overrides: Overrides {
                content_type: $input.response_content_type.as_ref(),
                cache_control: $input.response_cache_control.as_ref(),
                content_disposition: $input.response_content_disposition.as_ref(),
                content_encoding: $input.response_content_encoding.as_ref(),
                content_language: $input.response_content_language.as_ref(),
                expires: $input.response_expires.as_ref(),
            },
        }
    };
}

/// A GetObject or HeadObject request, as far as they are the same.
struct Read<'a> {
    bucket: &'a str,
    key: &'a str,
    preconditions: Preconditions<'a>,
    range: Option<&'a Range>,
    checksum_mode: Option<&'a ChecksumMode>,
    overrides: Overrides<'a>,
}

/// The `response-content-*` query parameters of a read.
struct Overrides<'a> {
    content_type: Option<&'a ContentType>,
    cache_control: Option<&'a CacheControl>,
    content_disposition: Option<&'a ContentDisposition>,
    content_encoding: Option<&'a ContentEncoding>,
    content_language: Option<&'a ContentLanguage>,
    expires: Option<&'a Timestamp>,
}

/// A blob stream as `s3s` wants a body (`Sync`; the stream is only ever polled by one task).
struct Body(std::sync::Mutex<BlobStream>);

impl Stream for Body {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let stream = match self.get_mut().0.get_mut() {
            Ok(stream) => stream,
            Err(poisoned) => poisoned.into_inner(),
        };
        stream.as_mut().poll_next(cx)
    }
}

fn not_modified() -> S3Error {
    S3Error::new(S3ErrorCode::NotModified)
}

fn precondition_failed() -> S3Error {
    s3_error!(
        PreconditionFailed,
        "At least one of the preconditions you specified did not hold"
    )
}

/// The byte range a read asks for, checked against the object's size.
fn range_of(range: Option<&Range>, size: u64) -> S3Result<Option<std::ops::Range<u64>>> {
    match range {
        None => Ok(None),
        Some(range) => match range.check(size) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(_) => {
                let mut refused = s3_error!(
                    InvalidRange,
                    "The requested range is not satisfiable: the object is {size} bytes"
                );
                refused.set_status_code(axum::http::StatusCode::RANGE_NOT_SATISFIABLE);
                Err(refused)
            }
        },
    }
}

impl Stowage {
    /// Reads a PUT body into a new upload, hashing what it declared; verifies and commits.
    /// Answers the stored object and the checksums computed over its body.
    async fn store_body(
        &self,
        req: &mut S3Request<PutObjectInput>,
        org: crate::ids::OrgId,
        key: crate::key::Key,
    ) -> S3Result<(ObjectMeta, Checksum)> {
        let input = &mut req.input;
        let mut options = PutOptions {
            content_type: input.content_type.take(),
            user_meta: None,
            if_absent: input.if_none_match.as_ref().is_some_and(ETagCondition::is_any),
            expected_md5: declared_md5(input.content_md5.as_deref())?,
        };
        if input.if_none_match.as_ref().is_some_and(|c| !c.is_any()) {
            return Err(s3_error!(
                NotImplemented,
                "PutObject supports If-None-Match: * only (create when absent)"
            ));
        }
        let sent = checksums_of!(input);
        let algorithm = input.checksum_algorithm.clone();
        let body = req.input.body.take();
        let (upload, computed) = read_verified(
            &self.service,
            body,
            &sent,
            algorithm,
            &req.headers,
            req.trailing_headers.as_ref(),
        )
        .await?;
        options.user_meta = Attributes::new(req.input.metadata.as_ref(), &computed).encode();
        let stored = self.service.s3_put(&org, &key, upload, options).await.map_err(to_s3)?;
        Ok((stored, computed))
    }

    /// What GetObject and HeadObject share: the object, its preconditions, the range, and the
    /// headers of the answer (HeadObject's; GetObject adds the body).
    async fn prepare_read(
        &self,
        identity: &S3Identity,
        read: Read<'_>,
    ) -> S3Result<(ObjectMeta, Option<std::ops::Range<u64>>, HeadObjectOutput)> {
        let object = self
            .service
            .s3_object(identity, read.bucket, read.key)
            .await
            .map_err(to_s3)?;
        let etag = etag_of(&object);
        match conditions::evaluate(&read.preconditions, etag.trim_matches('"'), object.modified) {
            Verdict::Proceed => {}
            Verdict::NotModified => return Err(not_modified()),
            Verdict::PreconditionFailed => return Err(precondition_failed()),
        }
        let range = range_of(read.range, object.size)?;
        let attributes = Attributes::decode(object.user_meta.as_deref());
        let checksums = checksums_to_show(&attributes, read.checksum_mode, range.is_some());
        let (length, content_range) = match &range {
            Some(r) => (
                r.end - r.start,
                Some(format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), object.size)),
            ),
            None => (object.size, None),
        };
        let overrides = read.overrides;
        let head = HeadObjectOutput {
            accept_ranges: Some("bytes".into()),
            content_length: i64::try_from(length).ok(),
            content_range,
            content_type: Some(overrides.content_type.cloned().unwrap_or_else(|| object.mime.clone())),
            cache_control: overrides.cache_control.cloned(),
            content_disposition: overrides.content_disposition.cloned(),
            content_encoding: overrides.content_encoding.cloned(),
            content_language: overrides.content_language.cloned(),
            expires: overrides.expires.cloned(),
            e_tag: Some(etag_value(&etag)),
            last_modified: Some(timestamp(object.modified)),
            metadata: attributes.metadata(),
            checksum_crc32: checksums.checksum_crc32,
            checksum_crc32c: checksums.checksum_crc32c,
            checksum_sha1: checksums.checksum_sha1,
            checksum_sha256: checksums.checksum_sha256,
            checksum_crc64nvme: checksums.checksum_crc64nvme,
            ..HeadObjectOutput::default()
        };
        Ok((object, range, head))
    }

    async fn listing(
        &self,
        identity: &S3Identity,
        bucket: &str,
        query: ListQuery<'_>,
    ) -> S3Result<crate::service::s3::S3Listing> {
        self.service.s3_list(identity, bucket, query).await.map_err(to_s3)
    }
}

#[async_trait::async_trait]
impl S3 for Stowage {
    // --- buckets ----------------------------------------------------------------------------

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let identity = identity(&req)?;
        let orgs = self.service.s3_buckets(identity).await.map_err(to_s3)?;
        let mut buckets: Vec<Bucket> = orgs
            .iter()
            .map(|org| Bucket {
                name: Some(bucket_name(org)),
                creation_date: Some(timestamp(org.created)),
                bucket_region: Some(self.region.clone()),
            })
            .collect();
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner_of(identity)),
            ..ListBucketsOutput::default()
        }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let identity = identity(&req)?;
        self.service
            .s3_create_bucket(identity, &req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", req.input.bucket)),
        }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let identity = identity(&req)?;
        self.service
            .s3_delete_bucket(identity, &req.input.bucket)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let identity = identity(&req)?;
        self.service
            .s3_bucket(identity, &req.input.bucket, crate::service::Access::Read)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..HeadBucketOutput::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let identity = identity(&req)?;
        self.service
            .s3_bucket(identity, &req.input.bucket, crate::service::Access::Read)
            .await
            .map_err(to_s3)?;
        // As AWS: no constraint names us-east-1.
        let location = (self.region != "us-east-1").then(|| BucketLocationConstraint::from(self.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: location,
        }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let identity = identity(&req)?;
        self.service
            .s3_bucket(identity, &req.input.bucket, crate::service::Access::Read)
            .await
            .map_err(to_s3)?;
        // Versioning is never enabled: no Status at all, as for a bucket that never had it.
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }

    // --- objects ----------------------------------------------------------------------------

    async fn put_object(&self, mut req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let identity = identity(&req)?.clone();
        let target = self
            .service
            .s3_put_target(&identity, &req.input.bucket, &req.input.key)
            .await
            .map_err(to_s3)?;
        let stored = match target {
            PutTarget::FolderMarker => {
                // The body decides, not the headers: an aws-chunked body has no Content-Length.
                if req.input.content_length.unwrap_or(0) > 0 || has_bytes(req.input.body.take()).await? {
                    return Err(s3_error!(
                        InvalidArgument,
                        "A key ending in '/' names a folder and cannot hold a body; remove the trailing '/'"
                    ));
                }
                let etag = format!("\"{EMPTY_MD5}\"");
                return Ok(S3Response::new(PutObjectOutput {
                    e_tag: Some(etag_value(&etag)),
                    ..PutObjectOutput::default()
                }));
            }
            PutTarget::File { org, key } => self.store_body(&mut req, org, key).await?,
        };
        let (stored, checksums) = stored;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag_value(&etag_of(&stored))),
            checksum_crc32: checksums.checksum_crc32,
            checksum_crc32c: checksums.checksum_crc32c,
            checksum_sha1: checksums.checksum_sha1,
            checksum_sha256: checksums.checksum_sha256,
            checksum_crc64nvme: checksums.checksum_crc64nvme,
            ..PutObjectOutput::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = &req.input;
        let read = read_of!(input);
        let (object, range, head) = self.prepare_read(identity(&req)?, read).await?;
        let body = self.service.s3_body(&object, range.clone()).await.map_err(to_s3)?;
        let output = GetObjectOutput {
            body: Some(StreamingBlob::wrap(Body(std::sync::Mutex::new(body)))),
            accept_ranges: head.accept_ranges,
            content_length: head.content_length,
            content_range: head.content_range,
            content_type: head.content_type,
            cache_control: head.cache_control,
            content_disposition: head.content_disposition,
            content_encoding: head.content_encoding,
            content_language: head.content_language,
            expires: head.expires,
            e_tag: head.e_tag,
            last_modified: head.last_modified,
            metadata: head.metadata,
            checksum_crc32: head.checksum_crc32,
            checksum_crc32c: head.checksum_crc32c,
            checksum_sha1: head.checksum_sha1,
            checksum_sha256: head.checksum_sha256,
            checksum_crc64nvme: head.checksum_crc64nvme,
            ..GetObjectOutput::default()
        };
        let mut response = S3Response::new(output);
        if range.is_some() {
            response.status = Some(axum::http::StatusCode::PARTIAL_CONTENT);
        }
        Ok(response)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = &req.input;
        let read = read_of!(input);
        let (_, range, head) = self.prepare_read(identity(&req)?, read).await?;
        let mut response = S3Response::new(head);
        if range.is_some() {
            response.status = Some(axum::http::StatusCode::PARTIAL_CONTENT);
        }
        Ok(response)
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let identity = identity(&req)?;
        self.service
            .s3_delete(identity, &req.input.bucket, &req.input.key)
            .await
            .map_err(to_s3)?;
        let mut response = S3Response::new(DeleteObjectOutput::default());
        response.status = Some(axum::http::StatusCode::NO_CONTENT);
        Ok(response)
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let identity = identity(&req)?;
        let objects = &req.input.delete.objects;
        if objects.len() > MAX_DELETE_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "A DeleteObjects request names at most {MAX_DELETE_KEYS} keys; this one names {}",
                objects.len()
            ));
        }
        let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
        let outcomes = self
            .service
            .s3_delete_many(identity, &req.input.bucket, &keys)
            .await
            .map_err(to_s3)?;
        let quiet = req.input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for (key, outcome) in keys.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(key),
                    ..DeletedObject::default()
                }),
                Err(e) => {
                    let e = to_s3(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_owned()),
                        key: Some(key),
                        message: e.message().map(str::to_owned),
                        ..Error::default()
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..DeleteObjectsOutput::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let identity = identity(&req)?;
        let input = &req.input;
        let CopySource::Bucket { bucket, key, .. } = &input.copy_source else {
            return Err(s3_error!(
                NotImplemented,
                "Copying from an access point is not supported"
            ));
        };
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str().eq_ignore_ascii_case(MetadataDirective::REPLACE));
        if !replace && **bucket == *input.bucket && **key == *input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata"
            ));
        }
        let source = self.service.s3_object(identity, bucket, key).await.map_err(to_s3)?;
        let preconditions = Preconditions {
            if_match: input.copy_source_if_match.as_ref(),
            if_none_match: input.copy_source_if_none_match.as_ref(),
            if_modified_since: input.copy_source_if_modified_since.as_ref(),
            if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
        };
        if conditions::evaluate(&preconditions, etag_of(&source).trim_matches('"'), source.modified) != Verdict::Proceed
        {
            return Err(precondition_failed());
        }
        let options = replace.then(|| {
            // New metadata; the checksums stay the source's (the body is the same).
            let mut attributes = Attributes::decode(source.user_meta.as_deref());
            attributes.meta = Attributes::new(input.metadata.as_ref(), &Checksum::default()).meta;
            PutOptions {
                content_type: input.content_type.clone(),
                user_meta: attributes.encode(),
                ..PutOptions::default()
            }
        });
        let copied = self
            .service
            .s3_copy(identity, (bucket, key), (&input.bucket, &input.key), options)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag_value(&etag_of(&copied))),
                last_modified: Some(timestamp(copied.modified)),
                ..CopyObjectResult::default()
            }),
            ..CopyObjectOutput::default()
        }))
    }

    // --- multipart uploads ------------------------------------------------------------------

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let identity = identity(&req)?;
        let input = &req.input;
        let options = PutOptions {
            content_type: input.content_type.clone(),
            user_meta: Attributes::new(input.metadata.as_ref(), &Checksum::default()).encode(),
            ..PutOptions::default()
        };
        let id = self
            .service
            .s3_create_multipart(identity, &input.bucket, &input.key, options)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            upload_id: Some(id),
            ..CreateMultipartUploadOutput::default()
        }))
    }

    async fn upload_part(&self, mut req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let identity = identity(&req)?.clone();
        let input = &mut req.input;
        let number = Service::s3_part_number(i64::from(input.part_number)).map_err(to_s3)?;
        let upload = self
            .service
            .s3_pending_upload(&identity, &input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(to_s3)?;
        let expected_md5 = declared_md5(input.content_md5.as_deref())?;
        let sent = checksums_of!(input);
        let algorithm = input.checksum_algorithm.clone();
        let body = req.input.body.take();
        let (body, computed) = read_verified(
            &self.service,
            body,
            &sent,
            algorithm,
            &req.headers,
            req.trailing_headers.as_ref(),
        )
        .await?;
        let etag = self
            .service
            .s3_store_part(&upload, number, body, expected_md5)
            .await
            .map_err(to_s3)?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag_value(&etag)),
            checksum_crc32: computed.checksum_crc32,
            checksum_crc32c: computed.checksum_crc32c,
            checksum_sha1: computed.checksum_sha1,
            checksum_sha256: computed.checksum_sha256,
            checksum_crc64nvme: computed.checksum_crc64nvme,
            ..UploadPartOutput::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let identity = identity(&req)?.clone();
        let input = req.input;
        let named: Vec<NamedPart> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| NamedPart {
                number: i64::from(p.part_number.unwrap_or(0)),
                etag: p.e_tag.map(|e| e.value().to_owned()).unwrap_or_default(),
            })
            .collect();
        if named.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The CompleteMultipartUpload body names no part: list each part's PartNumber and ETag"
            ));
        }
        let (bucket, key, id) = (input.bucket, input.key, input.upload_id);
        // Checked before answering, so that a wrong part list gets a plain S3 error.
        let completion = self
            .service
            .s3_completion(&identity, &bucket, &key, &id, &named)
            .await
            .map_err(to_s3)?;
        let service = self.service.clone();
        let large = completion.size > ASSEMBLE_IN_BACKGROUND_ABOVE;
        let assemble = async move {
            let object = service.s3_complete_multipart(completion).await.map_err(to_s3)?;
            Ok(CompleteMultipartUploadOutput {
                bucket: Some(bucket.clone()),
                key: Some(key.clone()),
                e_tag: Some(etag_value(&etag_of(&object))),
                location: Some(format!("/{bucket}/{key}")),
                ..CompleteMultipartUploadOutput::default()
            })
        };
        if !large {
            return Ok(S3Response::new(assemble.await?));
        }
        // Assembling a large object takes a while: answer 200 at once and let s3s keep the
        // connection alive with whitespace until the outcome, as AWS does.
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            future: Some(Box::pin(assemble)),
            ..CompleteMultipartUploadOutput::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let identity = identity(&req)?;
        let input = &req.input;
        self.service
            .s3_abort_multipart(identity, &input.bucket, &input.key, &input.upload_id)
            .await
            .map_err(to_s3)?;
        let mut response = S3Response::new(AbortMultipartUploadOutput::default());
        response.status = Some(axum::http::StatusCode::NO_CONTENT);
        Ok(response)
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let identity = identity(&req)?;
        let input = &req.input;
        let max = match input.max_parts {
            Some(n) if n < 0 => return Err(s3_error!(InvalidArgument, "max-parts cannot be negative")),
            Some(n) => usize::try_from(n).unwrap_or(list::MAX_KEYS).min(list::MAX_KEYS),
            None => list::MAX_KEYS,
        };
        let after = input
            .part_number_marker
            .map(|m| u32::try_from(m).unwrap_or(0))
            .unwrap_or(0);
        let page = self
            .service
            .s3_list_parts(identity, &input.bucket, &input.key, &input.upload_id, after, max)
            .await
            .map_err(to_s3)?;
        let owner = owner_of(identity);
        let next = page.parts.last().map(|p| i32::try_from(p.number).unwrap_or(i32::MAX));
        let parts = page
            .parts
            .iter()
            .map(|p| Part {
                e_tag: Some(etag_value(&part_etag(p))),
                last_modified: Some(timestamp(p.modified)),
                part_number: i32::try_from(p.number).ok(),
                size: i64::try_from(p.size).ok(),
                ..Part::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(page.upload.key.as_str().to_owned()),
            upload_id: Some(page.upload.id.clone()),
            is_truncated: Some(page.truncated),
            max_parts: i32::try_from(max).ok(),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: if page.truncated { next } else { None },
            parts: Some(parts),
            owner: Some(owner.clone()),
            initiator: Some(Initiator {
                display_name: owner.display_name.clone(),
                id: owner.id.clone(),
            }),
            ..ListPartsOutput::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let identity = identity(&req)?;
        let input = &req.input;
        let url = list::url_encoded(input.encoding_type.as_ref())?;
        let max = match input.max_uploads {
            Some(n) if n < 0 => return Err(s3_error!(InvalidArgument, "max-uploads cannot be negative")),
            Some(n) => usize::try_from(n).unwrap_or(list::MAX_KEYS).min(list::MAX_KEYS),
            None => list::MAX_KEYS,
        };
        let prefix = input.prefix.as_deref().unwrap_or("");
        let after = input
            .key_marker
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(|k| (k, input.upload_id_marker.as_deref().unwrap_or("")));
        let (uploads, truncated) = self
            .service
            .s3_list_uploads(identity, &input.bucket, prefix, after, max)
            .await
            .map_err(to_s3)?;
        let owner = owner_of(identity);
        let last = uploads.last().map(|u| (u.key.as_str().to_owned(), u.id.clone()));
        let listed = uploads
            .iter()
            .map(|u| MultipartUpload {
                key: Some(list::encode(u.key.as_str(), url)),
                upload_id: Some(u.id.clone()),
                initiated: Some(timestamp(u.created)),
                owner: Some(owner.clone()),
                initiator: Some(Initiator {
                    display_name: owner.display_name.clone(),
                    id: owner.id.clone(),
                }),
                ..MultipartUpload::default()
            })
            .collect();
        let (next_key, next_id) = match (truncated, last) {
            (true, Some((key, id))) => (Some(list::encode(&key, url)), Some(id)),
            _ => (None, None),
        };
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket.clone()),
            prefix: Some(list::encode(prefix, url)),
            key_marker: input.key_marker.clone(),
            upload_id_marker: input.upload_id_marker.clone(),
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            max_uploads: i32::try_from(max).ok(),
            is_truncated: Some(truncated),
            uploads: Some(listed),
            encoding_type: input.encoding_type.clone(),
            ..ListMultipartUploadsOutput::default()
        }))
    }

    // --- listings ---------------------------------------------------------------------------

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let identity = identity(&req)?;
        let input = &req.input;
        let url = list::url_encoded(input.encoding_type.as_ref())?;
        let max = list::page_size(input.max_keys)?;
        let prefix = input.prefix.as_deref().unwrap_or("");
        let query = ListQuery {
            prefix,
            delimiter: input.delimiter.as_deref(),
            after: input.marker.as_deref().filter(|m| !m.is_empty()),
            max,
        };
        let listing = self.listing(identity, &input.bucket, query).await?;
        let (contents, common_prefixes) = list::entries(&listing, url, Some(&owner_of(identity)));
        // As S3: NextMarker only with a delimiter (without one, clients continue from the last key).
        let next_marker = (listing.truncated && input.delimiter.is_some())
            .then(|| listing.last.as_deref().map(|l| list::encode(l, url)))
            .flatten();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket.clone()),
            prefix: Some(list::encode(prefix, url)),
            marker: Some(input.marker.clone().unwrap_or_default()),
            max_keys: i32::try_from(max).ok(),
            is_truncated: Some(listing.truncated),
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            delimiter: input.delimiter.as_deref().map(|d| list::encode(d, url)),
            next_marker,
            encoding_type: input.encoding_type.clone(),
            ..ListObjectsOutput::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let identity = identity(&req)?;
        let input = &req.input;
        let url = list::url_encoded(input.encoding_type.as_ref())?;
        let max = list::page_size(input.max_keys)?;
        let prefix = input.prefix.as_deref().unwrap_or("");
        let position = match input.continuation_token.as_deref() {
            Some(token) => Some(list::position_of(token)?),
            None => None,
        };
        let after = position
            .as_deref()
            .or(input.start_after.as_deref())
            .filter(|a| !a.is_empty());
        let query = ListQuery {
            prefix,
            delimiter: input.delimiter.as_deref(),
            after,
            max,
        };
        let listing = self.listing(identity, &input.bucket, query).await?;
        let owner = input.fetch_owner.unwrap_or(false).then(|| owner_of(identity));
        let (contents, common_prefixes) = list::entries(&listing, url, owner.as_ref());
        let key_count = contents.len() + common_prefixes.len();
        let next = listing
            .truncated
            .then(|| listing.last.as_deref().map(list::token_of))
            .flatten();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket.clone()),
            prefix: Some(list::encode(prefix, url)),
            max_keys: i32::try_from(max).ok(),
            key_count: i32::try_from(key_count).ok(),
            continuation_token: input.continuation_token.clone(),
            is_truncated: Some(listing.truncated),
            next_continuation_token: next,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            delimiter: input.delimiter.as_deref().map(|d| list::encode(d, url)),
            encoding_type: input.encoding_type.clone(),
            start_after: input.start_after.as_deref().map(|s| list::encode(s, url)),
            ..ListObjectsV2Output::default()
        }))
    }
}
