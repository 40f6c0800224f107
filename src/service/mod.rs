//! The use cases of the Object Store API: authentication, permissions, quotas, key rules, set,
//! properties, list, delete and download jobs. Handlers above call these with raw request values;
//! this is the one place that decides what a request means. Storage sits behind the
//! [`MetaStore`] and [`BlobStore`] traits.

mod console;
pub mod error;
mod inflight;
mod link;
pub(crate) mod multipart;
mod ratelimit;
pub(crate) mod s3;
mod unsettled;
mod zip;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use console::{ConsoleUser, OrgView};
pub use error::{Access, AuthError, ServiceError, ServiceResult, StorageFailure};

use crate::blob::{BlobStore, BlobStream, BlobWriter};
use crate::content::{ContentFacts, PipelinedDigest, mime_for};
use crate::crypto::{ServerKey, UrlSigner, hash_matches, request_hash};
use crate::ids::{BlobId, BucketAlias, JobId, OrgId, UserId};
use crate::key::{FolderPath, Key};
use crate::meta::{
    DeleteOutcome, JobLimits, JobOutcome, KeyKind, ListEntry, MetaStore, Millis, NewObject, ObjectMeta, OrgDeletion,
    Organization, Permissions, Quota, Usage,
};
use bytes::Bytes;

/// How much later than this server's clock another server of the deployment may date a download
/// link's expiry (their clocks may differ by this much).
const LINK_CLOCK_SKEW_SECS: i64 = 300;

/// A blob written this long ago and still named by no metadata is an orphan, not an upload whose
/// commit is about to happen.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// The limits and windows the service enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    pub(crate) default_quota: Quota,
    pub(crate) max_object_size: u64,
    pub(crate) timestamp_max_age: i64,
    pub(crate) timestamp_max_future: i64,
    /// Lifetime of a download link, in seconds.
    pub download_ttl_secs: i64,
    /// How long after a download link expires the bodies it names are still kept, so that a
    /// download that started just before the expiry can finish (and servers' clocks may differ).
    pub download_grace_secs: i64,
    pub(crate) list_page_size: u64,
    /// Failed authentications allowed per client address and per user id in a window (0: off).
    pub auth_failure_limit: u32,
    pub auth_failure_window: Duration,
    /// Uploads one user may have in flight at once.
    pub max_uploads_per_user: u32,
    /// Keys one `/object/get` request may name.
    pub max_keys_per_request: usize,
    /// Files one download job may cover, and unexpired jobs one organization may hold.
    pub jobs: JobLimits,
    /// Downloads sent at once over the whole server.
    pub max_downloads: usize,
    /// A console session ends after this long without a request, and this long after sign-in.
    pub(crate) console_idle_ms: i64,
    pub(crate) console_max_ms: i64,
    /// An S3 multipart upload neither completed nor aborted is removed this long after it began.
    pub(crate) multipart_expiry_ms: i64,
}

/// Whether permissions allow one kind of access.
fn permits(p: Permissions, access: Access) -> bool {
    match access {
        Access::Read => p.read,
        Access::Write => p.write,
        Access::Delete => p.delete,
        Access::Admin => p.admin,
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub(crate) user: UserId,
}

/// Who an S3 access key speaks for: its user, the one organization it is limited to (if any),
/// whether it may only read, and the secret that signs its requests.
#[derive(Debug, Clone)]
pub struct S3Identity {
    pub(crate) access_key: String,
    pub(crate) principal: Principal,
    pub(crate) org: Option<OrgId>,
    pub(crate) read_only: bool,
    pub secret: String,
}

impl S3Identity {
    /// The access key id this identity was found by.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The key's user.
    pub fn user(&self) -> UserId {
        self.principal.user
    }

    /// The organization the key is limited to, if any.
    pub fn org(&self) -> Option<&OrgId> {
        self.org.as_ref()
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }
}

/// One page of a folder listing.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub(crate) entries: Vec<ListEntry>,
    pub(crate) page: u64,
    pub(crate) total_pages: u64,
    pub(crate) usage: Usage,
}

/// A download job as clients see it: its id and, once ready, its URL.
#[derive(Debug, Clone)]
pub(crate) struct DownloadTicket {
    /// A stored job's id, or a single-file job's self-contained id (`link.rs`).
    pub(crate) job: String,
    pub(crate) url: Option<String>,
}

/// An upload in progress: the body streams into a fresh blob while size and digests accumulate.
/// The md5 is computed on another thread while the blob store writes the same chunks (shared
/// [`Bytes`], not copied); both hold at most a batch in flight and one gathering, so a slow disk
/// or a slow hash holds the caller back instead of letting the body pile up in memory.
pub(crate) struct Upload {
    writer: Box<dyn BlobWriter>,
    digest: PipelinedDigest,
    limit: u64,
}

impl Upload {
    /// Appends a chunk; refuses once the body passes the maximum object size.
    pub(crate) async fn push(&mut self, chunk: Bytes) -> ServiceResult<()> {
        if self.digest.size() + chunk.len() as u64 > self.limit {
            return Err(ServiceError::TooLarge { limit: self.limit });
        }
        let len = chunk.len() as u64;
        self.digest.update(chunk.clone()).await.map_err(hash_failed)?;
        self.writer.write_bytes(chunk).await?;
        metrics::counter!("stowage_object_bytes_in_total").increment(len);
        Ok(())
    }

    pub(crate) async fn abort(self) {
        self.writer.abort().await;
    }

    /// The body's writer, not finished yet, and its figures (size, md5, preview); when hashing
    /// fails the writer is aborted.
    pub(crate) async fn into_parts(self) -> ServiceResult<(Box<dyn BlobWriter>, ContentFacts)> {
        let Upload { writer, digest, .. } = self;
        match digest.finish().await {
            Ok(facts) => Ok((writer, facts)),
            Err(e) => {
                writer.abort().await;
                Err(hash_failed(e))
            }
        }
    }
}

fn hash_failed(e: crate::content::HashFailed) -> ServiceError {
    crate::blob::BlobError::Io(std::io::Error::other(e)).into()
}

pub struct Service {
    meta: Arc<dyn MetaStore>,
    blobs: Arc<dyn BlobStore>,
    limits: Limits,
    signer: UrlSigner,
    server_key: ServerKey,
    failures: ratelimit::FailureLimiter,
    uploads: inflight::PerUser,
    /// Blobs of uploads whose metadata commit had an unknown outcome, until the collector settles them.
    unsettled: unsettled::Unsettled,
    downloads: inflight::Slots,
}

impl Service {
    pub fn new(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>, limits: Limits, server_key: ServerKey) -> Service {
        let failures = ratelimit::FailureLimiter::new(limits.auth_failure_limit, limits.auth_failure_window);
        let uploads = inflight::PerUser::new(limits.max_uploads_per_user);
        let downloads = inflight::Slots::new(limits.max_downloads);
        Service {
            meta,
            blobs,
            limits,
            signer: server_key.url_signer(),
            server_key,
            failures,
            uploads,
            unsettled: unsettled::Unsettled::default(),
            downloads,
        }
    }

    /// Whether both stores answer (for `/readyz`); the error names the one that does not.
    pub(crate) async fn ready(&self) -> Result<(), StorageFailure> {
        self.meta.ping().await?;
        self.blobs.ping().await?;
        Ok(())
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    // --- authentication and permissions ------------------------------------------------------

    /// Checks the auth recipe: `Authorization: Basic base64(<userId>:<sha256hex(token:timestamp)>)`
    /// plus a `Timestamp` header inside the configured window. A correct credential always
    /// passes. Failures count against the client address and the user id; a failure from an
    /// address or for a user id over its limit is answered 429 instead of 401 (see `ratelimit`).
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        timestamp: Option<&str>,
        client: IpAddr,
    ) -> ServiceResult<Principal> {
        let outcome = self.check_credentials(authorization, timestamp).await;
        let claimed = authorization
            .and_then(parse_basic)
            .and_then(|(user, _)| UserId::parse(&user));
        self.count_failure(outcome, client, claimed)
    }

    /// Counts a failed authentication against the client address and the claimed user id, and
    /// turns it into a 429 once either is over its limit (the API's and the console's sign-in
    /// share the counts).
    fn count_failure<T>(&self, outcome: ServiceResult<T>, client: IpAddr, claimed: Option<UserId>) -> ServiceResult<T> {
        if matches!(outcome, Err(ServiceError::Unauthorized(_))) {
            self.failures.record_failure(client, claimed);
            let blocked = self.failures.address_blocked(client);
            if let Some(retry_after) = blocked.or_else(|| self.failures.user_blocked(claimed)) {
                return Err(ServiceError::RateLimited { retry_after });
            }
        }
        outcome
    }

    async fn check_credentials(
        &self,
        authorization: Option<&str>,
        timestamp: Option<&str>,
    ) -> ServiceResult<Principal> {
        let authorization = authorization.ok_or(AuthError::MissingAuthorization)?;
        let (user_raw, sent_hash) = parse_basic(authorization).ok_or(AuthError::MalformedAuthorization)?;
        let timestamp = timestamp.map(str::trim).ok_or(AuthError::MissingTimestamp)?;
        let seconds: i64 = timestamp
            .parse()
            .map_err(|_| AuthError::UnparseableTimestamp(timestamp.to_owned()))?;
        let now = now_ms() / 1000;
        if seconds < now.saturating_sub(self.limits.timestamp_max_age) {
            return Err(AuthError::StaleTimestamp {
                timestamp: timestamp.into(),
                max_age: self.limits.timestamp_max_age,
            }
            .into());
        }
        if seconds > now.saturating_add(self.limits.timestamp_max_future) {
            return Err(AuthError::FutureTimestamp {
                timestamp: timestamp.into(),
                max_future: self.limits.timestamp_max_future,
            }
            .into());
        }
        let user_id = UserId::parse(&user_raw).ok_or_else(|| AuthError::UnknownUser(user_raw.clone()))?;
        let user = match self.meta.user(user_id).await? {
            Some(user) if !user.disabled => user,
            _ => return Err(AuthError::UnknownUser(user_raw).into()),
        };
        let token = self.server_key.unseal(user.id, &user.token).map_err(|e| {
            let cause = format!("cannot read the token of user {}: {e}", user.id);
            ServiceError::Unavailable(StorageFailure::Token(cause.into()))
        })?;
        if !hash_matches(&request_hash(&token, timestamp), &sent_hash) {
            return Err(AuthError::HashMismatch {
                user: user_raw,
                hash: sent_hash,
                timestamp: timestamp.into(),
            }
            .into());
        }
        Ok(Principal { user: user.id })
    }

    /// The identity behind an S3 access key and the secret its requests are signed with, looked
    /// up at every request: a revoked key, or a key of a disabled user, is refused at once.
    pub async fn s3_identity(&self, access_key: &str) -> ServiceResult<S3Identity> {
        let key = match self.meta.s3_key(access_key).await? {
            Some(key) if key.usable() => key,
            _ => return Err(AuthError::InvalidAccessKey(access_key.to_owned()).into()),
        };
        let secret = self
            .server_key
            .unseal_s3_secret(&key.access_key, &key.secret)
            .map_err(|e| {
                let cause = format!("cannot read the secret of S3 key {}: {e}", key.access_key);
                ServiceError::Unavailable(StorageFailure::Token(cause.into()))
            })?;
        Ok(S3Identity {
            access_key: key.access_key.clone(),
            principal: Principal { user: key.user },
            org: key.org,
            read_only: key.read_only,
            secret,
        })
    }

    /// Resolves an organization id the caller may use for `access`. An unknown and a foreign
    /// organization give the same error.
    pub(crate) async fn authorize(&self, principal: &Principal, org_raw: &str, access: Access) -> ServiceResult<OrgId> {
        let org = OrgId::parse(org_raw.trim()).ok_or(ServiceError::OrganizationNotFound)?;
        let membership = self
            .meta
            .membership(&org, principal.user)
            .await?
            .ok_or(ServiceError::OrganizationNotFound)?;
        if !permits(membership.permissions, access) {
            return Err(ServiceError::PermissionDenied(access));
        }
        Ok(org)
    }

    // --- S3 buckets ------------------------------------------------------------------------------

    /// Resolves a bucket name (an organization id, or an organization's bucket name) that an S3
    /// key may use for `access`. An unknown bucket, a foreign one and one outside the key's
    /// organization give the same error; a read-only key may only read.
    pub async fn s3_bucket(&self, identity: &S3Identity, bucket: &str, access: Access) -> ServiceResult<OrgId> {
        let not_found = || ServiceError::NoSuchBucket(bucket.to_owned());
        let org = match OrgId::parse(bucket) {
            Some(org) => org,
            None => match BucketAlias::parse(bucket) {
                Ok(alias) => self.meta.org_by_bucket(&alias).await?.ok_or_else(not_found)?.id,
                Err(_) => return Err(not_found()),
            },
        };
        if identity.org.as_ref().is_some_and(|limit| *limit != org) {
            return Err(not_found());
        }
        let membership = self
            .meta
            .membership(&org, identity.user())
            .await?
            .ok_or_else(not_found)?;
        if identity.read_only && access != Access::Read {
            return Err(ServiceError::KeyReadOnly(access));
        }
        if !permits(membership.permissions, access) {
            return Err(ServiceError::PermissionDenied(access));
        }
        Ok(org)
    }

    /// The buckets (organizations) an S3 key reaches: its user's memberships, narrowed to the
    /// key's organization when it has one.
    pub async fn s3_buckets(&self, identity: &S3Identity) -> ServiceResult<Vec<Organization>> {
        let mut out = Vec::new();
        for membership in self.meta.user_memberships(identity.user()).await? {
            if identity.org.as_ref().is_some_and(|limit| *limit != membership.org) {
                continue;
            }
            out.extend(self.meta.org(&membership.org).await?);
        }
        Ok(out)
    }

    /// Creates a bucket: a new organization with that bucket name (and as its name), the key's
    /// user its administrator member with every permission. Only a server administrator's key
    /// that is neither read-only nor limited to one organization may.
    pub async fn s3_create_bucket(&self, identity: &S3Identity, bucket: &str) -> ServiceResult<OrgId> {
        self.may_manage_buckets(identity).await?;
        let alias = BucketAlias::parse(bucket)?;
        match self
            .meta
            .create_bucket_org(bucket, &alias, Some(identity.user()), now_ms())
            .await?
        {
            Ok(org) => Ok(org),
            // Taken: by an organization the caller belongs to (S3 says "yours"), or by another.
            Err(_) => match self.s3_bucket(identity, bucket, Access::Read).await {
                Ok(_) => Err(ServiceError::BucketAlreadyOwned(bucket.to_owned())),
                Err(_) => Err(ServiceError::BucketTaken(bucket.to_owned())),
            },
        }
    }

    /// Deletes a bucket (organization) that holds no object; only a server administrator's
    /// unrestricted key that may delete in it may.
    pub async fn s3_delete_bucket(&self, identity: &S3Identity, bucket: &str) -> ServiceResult<()> {
        self.may_manage_buckets(identity).await?;
        let org = self.s3_bucket(identity, bucket, Access::Delete).await?;
        match self.meta.delete_empty_org(&org).await? {
            OrgDeletion::Deleted => Ok(()),
            OrgDeletion::NotEmpty => Err(ServiceError::BucketNotEmpty(bucket.to_owned())),
            OrgDeletion::Unknown => Err(ServiceError::NoSuchBucket(bucket.to_owned())),
        }
    }

    /// Creating and deleting buckets takes a server administrator's key that is neither
    /// read-only nor limited to one organization.
    async fn may_manage_buckets(&self, identity: &S3Identity) -> ServiceResult<()> {
        if identity.org.is_some() || identity.read_only {
            return Err(ServiceError::KeyCannotManageBuckets);
        }
        let user = self.meta.user(identity.user()).await?;
        if !user.is_some_and(|u| u.server_admin) {
            return Err(ServiceError::NotServerAdmin);
        }
        Ok(())
    }

    // --- objects -------------------------------------------------------------------------------

    /// Takes one of the caller's upload slots for the whole of a `/object/set` request; refused
    /// (429) when the caller already has `max_uploads_per_user` uploads in flight.
    pub fn upload_slot(&self, principal: &Principal) -> ServiceResult<inflight::UserSlot> {
        self.uploads
            .try_acquire(principal.user)
            .ok_or(ServiceError::TooManyUploads {
                limit: self.uploads.limit(),
            })
    }

    /// Starts streaming an upload body into storage.
    pub(crate) async fn begin_upload(&self) -> ServiceResult<Upload> {
        Ok(Upload {
            writer: self.blobs.create().await?,
            digest: PipelinedDigest::new(),
            limit: self.limits.max_object_size,
        })
    }

    /// Stores a finished upload under `key_raw`. On any refusal the uploaded blob is discarded.
    pub(crate) async fn finish_set(
        &self,
        principal: &Principal,
        org_raw: &str,
        key_raw: &str,
        upload: Upload,
    ) -> ServiceResult<()> {
        let prepared = async {
            let org = self.authorize(principal, org_raw, Access::Write).await?;
            let key = Key::parse(key_raw)?;
            let quota = self.quota_of(&org).await?;
            Ok::<_, ServiceError>((org, key, quota))
        }
        .await;
        let (org, key, quota) = match prepared {
            Ok(ok) => ok,
            Err(e) => {
                upload.abort().await;
                return Err(e);
            }
        };
        let (writer, facts) = upload.into_parts().await?;
        let blob = writer.finish().await?;
        let object = NewObject {
            mime: mime_for(key.name(), facts.preview.is_some()),
            key: key.clone(),
            size: facts.size,
            md5: facts.md5,
            preview: facts.preview,
            blob: blob.clone(),
            now: now_ms(),
            created: None,
            etag: None,
            user_meta: None,
            if_absent: false,
        };
        self.commit_put(&org, object, quota).await.map(|_| ())
    }

    async fn quota_of(&self, org: &OrgId) -> ServiceResult<Quota> {
        let org = self.meta.org(org).await?.ok_or(ServiceError::OrganizationNotFound)?;
        Ok(Quota {
            max_bytes: org.max_bytes.unwrap_or(self.limits.default_quota.max_bytes),
            max_files: org.max_files.unwrap_or(self.limits.default_quota.max_files),
        })
    }

    pub(crate) async fn properties(
        &self,
        principal: &Principal,
        org_raw: &str,
        key_raw: &str,
    ) -> ServiceResult<ObjectMeta> {
        let org = self.authorize(principal, org_raw, Access::Read).await?;
        // A file key: a trailing '/' is an error here, as everywhere a file is meant.
        let key = Key::parse(key_raw)?;
        match self.meta.key_kind(&org, &key).await? {
            KeyKind::File(meta) => Ok(*meta),
            KeyKind::Folder => Err(ServiceError::IsFolder(key.to_string())),
            KeyKind::Missing => Err(ServiceError::ObjectNotFound(key.to_string())),
        }
    }

    pub(crate) async fn delete(
        &self,
        principal: &Principal,
        org_raw: &str,
        key_raw: &str,
    ) -> ServiceResult<DeleteOutcome> {
        let org = self.authorize(principal, org_raw, Access::Delete).await?;
        let key = Key::parse_file_or_folder(key_raw)?;
        if names_folder_only(key_raw) && matches!(self.meta.key_kind(&org, &key).await?, KeyKind::File(_)) {
            // `a/b/` names a folder; a file `a/b` is not it.
            return Err(ServiceError::ObjectNotFound(key_raw.to_owned()));
        }
        match self.meta.delete(&org, &key).await? {
            DeleteOutcome::NotFound => Err(ServiceError::ObjectNotFound(key.to_string())),
            outcome => Ok(outcome),
        }
    }

    pub(crate) async fn list(
        &self,
        principal: &Principal,
        org_raw: &str,
        path_raw: &str,
        page: u64,
    ) -> ServiceResult<Listing> {
        let org = self.authorize(principal, org_raw, Access::Read).await?;
        let folder = FolderPath::parse(path_raw)?;
        let size = self.limits.list_page_size;
        // One read: the page and the usage shown beside it come from the same snapshot.
        let listing = self.meta.list(&org, &folder, page, size).await?;
        let total_pages = listing.total_entries.div_ceil(size).max(1);
        Ok(Listing {
            entries: listing.entries,
            page,
            total_pages,
            usage: listing.usage,
        })
    }

    // --- download jobs -------------------------------------------------------------------------

    /// Creates a zip job over files and folders. `base_url` is where this server is reached
    /// (scheme and authority), used to build the download URL.
    pub(crate) async fn create_download(
        &self,
        principal: &Principal,
        org_raw: &str,
        keys_raw: &[String],
        base_url: &str,
    ) -> ServiceResult<DownloadTicket> {
        let org = self.authorize(principal, org_raw, Access::Read).await?;
        if keys_raw.is_empty() {
            return Err(ServiceError::NoKeys);
        }
        if keys_raw.len() > self.limits.max_keys_per_request {
            return Err(ServiceError::TooManyKeys {
                given: keys_raw.len(),
                limit: self.limits.max_keys_per_request,
            });
        }
        let mut keys = std::collections::BTreeSet::new();
        for raw in keys_raw {
            let key = Key::parse_file_or_folder(raw)?;
            if keys.contains(&key) {
                continue;
            }
            // `a/b/` names a folder; when `a/b` is a file, it names nothing (a missing key).
            if names_folder_only(raw) && matches!(self.meta.key_kind(&org, &key).await?, KeyKind::File(_)) {
                continue;
            }
            keys.insert(key);
        }
        let keys = without_covered(keys);
        if keys.is_empty() {
            return Err(ServiceError::NothingFound);
        }
        let now = now_ms();
        let expires = now.saturating_add(self.limits.download_ttl_secs.saturating_mul(1000));
        if let [key] = keys.as_slice()
            && let Some(ticket) = self.single_file_link(principal, &org, key, expires, base_url).await?
        {
            return Ok(ticket);
        }
        let job = match self
            .meta
            .create_job(&org, &keys, now, expires, self.limits.jobs)
            .await?
        {
            JobOutcome::Created(job) => job,
            JobOutcome::NothingFound => return Err(ServiceError::NothingFound),
            JobOutcome::TooManyFiles { limit } => return Err(ServiceError::JobTooLarge { limit }),
        };
        metrics::counter!("stowage_download_jobs_total").increment(1);
        Ok(DownloadTicket {
            url: Some(self.download_url(base_url, job.id.as_str(), job.expires, principal.user)),
            job: job.id.to_string(),
        })
    }

    /// A job over the one key `key`, recorded nowhere, when it names a file: the ticket's id
    /// carries the file (`link.rs`). `None` when the key is a folder, or too long for an id; a
    /// missing key is not found here as everywhere.
    async fn single_file_link(
        &self,
        principal: &Principal,
        org: &OrgId,
        key: &Key,
        expires: Millis,
        base_url: &str,
    ) -> ServiceResult<Option<DownloadTicket>> {
        if key.as_str().len() > link::MAX_KEY_BYTES {
            return Ok(None);
        }
        let object = match self.meta.key_kind(org, key).await? {
            KeyKind::File(object) => object,
            KeyKind::Folder => return Ok(None),
            KeyKind::Missing => return Err(ServiceError::NothingFound),
        };
        let expires = expires / 1000;
        let job = link::LinkJob {
            org: org.clone(),
            entry: crate::meta::JobEntry {
                key: object.key,
                blob: object.blob,
                size: object.size,
                modified: object.modified,
            },
            expires,
        }
        .encode(&self.signer);
        metrics::counter!("stowage_download_jobs_total").increment(1);
        Ok(Some(DownloadTicket {
            url: Some(self.download_url(base_url, &job, expires.saturating_mul(1000), principal.user)),
            job,
        }))
    }

    /// Answers a poll of a job; the job must belong to the organization named.
    pub(crate) async fn poll_download(
        &self,
        principal: &Principal,
        org_raw: &str,
        job_raw: &str,
        base_url: &str,
    ) -> ServiceResult<DownloadTicket> {
        let org = self.authorize(principal, org_raw, Access::Read).await?;
        let raw = job_raw.trim();
        let not_found = || ServiceError::JobNotFound(job_raw.to_owned());
        let (id, expires) = if link::LinkJob::is_link(raw) {
            match link::LinkJob::decode(raw, &self.signer) {
                Some(job) if job.org == org => (raw.to_owned(), job.expires.saturating_mul(1000)),
                _ => return Err(not_found()),
            }
        } else {
            let job_id = JobId::parse(raw).ok_or_else(not_found)?;
            match self.meta.job(&job_id).await? {
                Some(job) if job.org == org => (job.id.to_string(), job.expires),
                _ => return Err(not_found()),
            }
        };
        if expires <= now_ms() {
            return Err(ServiceError::JobExpired(job_raw.to_owned()));
        }
        Ok(DownloadTicket {
            url: Some(self.download_url(base_url, &id, expires, principal.user)),
            job: id,
        })
    }

    /// A signed link to a job's zip. It names the user it was made for (signed with the rest), so
    /// that it stops working when that user is disabled or loses read on the organization.
    fn download_url(&self, base_url: &str, job: &str, expires_ms: Millis, user: UserId) -> String {
        let expires = expires_ms / 1000;
        let signature = self.signer.sign(&signed_link(job, &user.to_string()), expires);
        format!(
            "{}/api/v2/download/{}?expires={}&user={}&signature={}",
            base_url.trim_end_matches('/'),
            job,
            expires,
            user,
            signature
        )
    }

    /// Opens the zip of a signed download URL; answers a name for the archive (the job's id, or
    /// a short one for a single-file job) and its bytes. The stream holds one of the
    /// `max_downloads` slots until it ends or is dropped; with none free, the link is refused as
    /// busy (after its signature is checked, before any store is asked).
    pub(crate) async fn open_download(
        &self,
        job_raw: &str,
        expires: &str,
        user_raw: &str,
        signature: &str,
    ) -> Result<(String, BlobStream), DownloadError> {
        let expires: i64 = expires.parse().map_err(|_| DownloadError::NotFound)?;
        if !self.signer.verify(&signed_link(job_raw, user_raw), expires, signature) {
            return Err(DownloadError::NotFound);
        }
        let user = UserId::parse(user_raw).ok_or(DownloadError::NotFound)?;
        let (expires_ms, now) = (expires.saturating_mul(1000), now_ms());
        if expires_ms <= now {
            return Err(DownloadError::Expired);
        }
        // No link this server makes lives longer than the configured lifetime (plus clock skew).
        let longest = self.limits.download_ttl_secs.saturating_add(LINK_CLOCK_SKEW_SECS);
        if expires_ms > now.saturating_add(longest.saturating_mul(1000)) {
            return Err(DownloadError::NotFound);
        }
        if link::LinkJob::is_link(job_raw) {
            let job = link::LinkJob::decode(job_raw, &self.signer).ok_or(DownloadError::NotFound)?;
            let slot = self.download_slot()?;
            self.link_creator_may_read(user, &job.org).await?;
            let name = link::LinkJob::short_name(job_raw).to_owned();
            return Ok((name, zip::stream_zip(self.blobs.clone(), vec![job.entry], slot)));
        }
        let job_id = JobId::parse(job_raw).ok_or(DownloadError::NotFound)?;
        let slot = self.download_slot()?;
        let job = self
            .meta
            .job(&job_id)
            .await
            .map_err(|e| DownloadError::Unavailable(e.into()))?;
        // A job that expired early (its organization made `max_jobs_per_org` newer ones) is gone
        // although its link has time left.
        let Some(job) = job.filter(|job| job.expires > now) else {
            return Err(DownloadError::Expired);
        };
        self.link_creator_may_read(user, &job.org).await?;
        let entries = self
            .meta
            .job_entries(&job_id)
            .await
            .map_err(|e| DownloadError::Unavailable(e.into()))?;
        Ok((job_id.to_string(), zip::stream_zip(self.blobs.clone(), entries, slot)))
    }

    /// One of the `max_downloads` slots, or the link is refused as busy.
    fn download_slot(&self) -> Result<inflight::Slot, DownloadError> {
        self.downloads.try_acquire().ok_or_else(|| {
            metrics::counter!("stowage_downloads_refused_total").increment(1);
            DownloadError::Busy {
                limit: self.downloads.limit(),
            }
        })
    }

    // --- background work -----------------------------------------------------------------------

    /// Asks both stores to give back what they keep only for speed and have not used lately
    /// (idle connections, their caches). A failure costs only memory: it is logged, not raised.
    pub async fn shed_idle_memory(&self) {
        match self.meta.shed_idle_memory().await {
            Ok(0) => {}
            Ok(closed) => tracing::debug!(closed, "closed idle metadata connections"),
            Err(e) => tracing::warn!(error = %error::CauseChain(&e), "cannot close idle metadata connections"),
        }
        if let Err(e) = self.blobs.shed_idle_memory().await {
            tracing::warn!(error = %error::CauseChain(&e), "cannot release the blob store's idle caches");
        }
    }

    /// One pass of collection: deletes blobs nothing names any more and forgets expired jobs and
    /// console sessions. A replaced or deleted body is kept as long as a single-file link made
    /// before it was replaced may still name it (the link lifetime plus the grace), since those
    /// links are recorded nowhere; a stored job pins its bodies until the grace after its expiry.
    /// A blob that cannot be deleted is logged and retried on the next pass; the others go on.
    pub async fn collect_garbage(&self) -> ServiceResult<usize> {
        let now = now_ms();
        let grace = self.limits.download_grace_secs.saturating_mul(1000);
        let cutoff = now.saturating_sub(grace);
        let released_before = cutoff.saturating_sub(self.limits.download_ttl_secs.saturating_mul(1000));
        self.meta.delete_expired_jobs(cutoff).await?;
        self.forget_stale_sessions().await?;
        self.expire_multipart_uploads(now).await?;
        let mut collected = 0;
        let mut failed = std::collections::HashSet::new();
        loop {
            let candidates = self
                .meta
                .collectable_blobs(cutoff, released_before, 500 + failed.len())
                .await?;
            let batch: Vec<BlobId> = candidates
                .into_iter()
                .filter(|b| !failed.contains(b))
                .take(500)
                .collect();
            if batch.is_empty() {
                return Ok(collected);
            }
            let mut deleted = Vec::with_capacity(batch.len());
            for blob in batch {
                match self.blobs.delete(&blob).await {
                    Ok(()) => deleted.push(blob),
                    Err(e) => {
                        tracing::warn!(%blob, error = %e, "cannot delete an unreferenced blob; will retry");
                        failed.insert(blob);
                    }
                }
            }
            self.meta.forget_blobs(&deleted).await?;
            collected += deleted.len();
        }
    }

    /// Deletes blobs that no metadata names at all (left by a crash between storing a body and
    /// committing its metadata), among those last written before `written_before`. Only blobs
    /// older than any upload still in progress may be passed as candidates, so the cutoff is the
    /// process's start (first sweep) or an hour ago (later sweeps).
    pub(crate) async fn sweep_orphans(&self, written_before: std::time::SystemTime) -> ServiceResult<usize> {
        let mut removed = 0;
        for shard in self.blobs.shards() {
            let candidates: Vec<BlobId> = self
                .blobs
                .list_shard(&shard)
                .await?
                .into_iter()
                .filter(|blob| blob.written < written_before)
                .map(|blob| blob.id)
                .collect();
            if candidates.is_empty() {
                continue;
            }
            for orphan in self.meta.unreferenced_blobs(&candidates).await? {
                self.blobs.delete(&orphan).await?;
                tracing::info!(blob = %orphan, "removed an orphan blob");
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Runs collection every `interval` (the first one interval after start), each pass followed
    /// by a check of the uploads whose commit had an unknown outcome (`unsettled.rs`), and an orphan
    /// sweep at start and then every `sweep_interval`, until the process ends. With `shared` stores (other servers may be
    /// uploading right now), even the first sweep only considers blobs older than an hour; alone,
    /// everything written before this process started is fair game.
    pub(crate) fn spawn_collector(
        self: &Arc<Self>,
        interval: Duration,
        sweep_interval: Duration,
        shared: bool,
    ) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        let now = std::time::SystemTime::now();
        let started = if shared { now - ORPHAN_AGE } else { now };
        tokio::spawn(async move {
            // The first collection comes one interval after start, so that a server started with
            // a long interval collects nothing while it is young; the first sweep runs at once.
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            let mut next_sweep = tokio::time::Instant::now();
            let mut cutoff = started;
            loop {
                if tokio::time::Instant::now() >= next_sweep {
                    match service.sweep_orphans(cutoff).await {
                        Ok(n) => tracing::debug!(orphans = n, "orphan sweep done"),
                        Err(e) => tracing::warn!(error = %e, "orphan sweep failed"),
                    }
                    next_sweep = tokio::time::Instant::now() + sweep_interval;
                    cutoff = std::time::SystemTime::now() - ORPHAN_AGE;
                }
                ticker.tick().await;
                match service.collect_garbage().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(blobs = n, "collected unreferenced blobs"),
                    Err(e) => tracing::warn!(error = %e, "garbage collection pass failed"),
                }
                match service.settle_uploads(unsettled::SETTLE_AFTER).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(blobs = n, "removed the bodies of uploads that did not commit"),
                    Err(e) => tracing::warn!(error = %e, "cannot check uploads with an unknown outcome yet"),
                }
            }
        })
    }
}

/// What a download link's signature covers besides its expiry: the job and its creator.
fn signed_link(job: &str, user: &str) -> String {
    format!("{job}:{user}")
}

impl Service {
    /// A link works only while the user it was made for is enabled and may read the
    /// organization (checked at every download, so a disabled or removed user's links stop).
    async fn link_creator_may_read(&self, user: UserId, org: &OrgId) -> Result<(), DownloadError> {
        let standing = self
            .meta
            .standing(org, user)
            .await
            .map_err(|e| DownloadError::Unavailable(e.into()))?;
        let reads = standing.is_some_and(|s| !s.disabled && s.permissions.is_some_and(|p| p.read));
        if reads { Ok(()) } else { Err(DownloadError::Revoked) }
    }
}

/// Why a download URL cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DownloadError {
    #[error("This download link is not valid")]
    NotFound,
    #[error("This download link has expired")]
    Expired,
    #[error(
        "This download link no longer works: the user who created it has been disabled or no longer has read access to the organization"
    )]
    Revoked,
    #[error(transparent)]
    Unavailable(#[from] StorageFailure),
    #[error(
        "The server is already sending {limit} downloads, as many as it sends at once (max_downloads); try again in a few seconds"
    )]
    Busy { limit: usize },
}

/// The keys without those under another key of the set: a key names a file or everything under
/// it as a folder, so `a/b` adds nothing to `a` (if `a` is a file, `a/b` cannot exist). Each
/// stored file is then read once however the request nests its keys.
fn without_covered(keys: std::collections::BTreeSet<Key>) -> Vec<Key> {
    let mut kept: Vec<Key> = Vec::with_capacity(keys.len());
    for key in keys {
        let covered = kept.iter().any(|k| {
            key.as_str()
                .strip_prefix(k.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        });
        if !covered {
            kept.push(key);
        }
    }
    kept
}

/// Whether a raw key ends in a separator, so that it can only name a folder.
fn names_folder_only(raw: &str) -> bool {
    raw.ends_with(['/', '\\'])
}

/// Splits `Basic base64(user:hash)`.
fn parse_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, hash) = text.split_once(':')?;
    Some((user.trim().to_owned(), hash.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::local::LocalBlobs;
    use crate::config::Config;
    use crate::meta::sqlite::SqliteMeta;
    use crate::meta::{Identities, Objects, S3Key};
    use base64::Engine;

    fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    /// A service over an embedded store in a temporary directory (kept alive by the first item).
    fn embedded() -> (tempfile::TempDir, Arc<SqliteMeta>, ServerKey, Service) {
        let dir = ok(tempfile::tempdir());
        let meta = Arc::new(ok(SqliteMeta::open(&dir.path().join("metadata.sqlite3"))));
        let blobs = Arc::new(ok(LocalBlobs::open(&dir.path().join("blobs"))));
        let key = ok(ServerKey::load_or_create(&dir.path().join("server.key")));
        let limits = Limits::from_config(&Config::default());
        let service = Service::new(meta.clone(), blobs, limits, key.clone());
        (dir, meta, key, service)
    }

    /// Bucket names resolve to organizations only within what the key reaches; unknown, foreign
    /// and out-of-scope buckets look alike; read-only keys and permissions are enforced; only a
    /// server administrator's unrestricted key creates buckets.
    #[tokio::test]
    async fn s3_buckets_are_the_organizations_a_key_reaches() {
        let (_dir, meta, _, service) = embedded();
        let new_user = |name: &'static str| {
            let meta = meta.clone();
            async move {
                let seal = Box::new(|_| {
                    Some(crate::crypto::SealedToken {
                        nonce: vec![0; 24],
                        ciphertext: vec![1],
                    })
                });
                ok(meta.create_user(name, false, 1, seal).await).unwrap_or_else(|| panic!("a user"))
            }
        };
        let (root, user) = (new_user("root").await, new_user("u").await);
        let alias = |raw: &str| ok(BucketAlias::parse(raw));
        let research = ok(meta
            .create_bucket_org("research", &alias("research-data"), None, 1)
            .await);
        let research = research.unwrap_or_else(|refusal| panic!("{refusal:?}"));
        let other = ok(meta.create_org("other", None, None, 1).await);
        let foreign = ok(meta.create_org("foreign", None, None, 1).await);
        let rw = ok(Permissions::parse("read,write"));
        assert!(ok(meta.set_member(&research, user, rw).await));
        assert!(ok(meta.set_member(&other, user, ok(Permissions::parse("read"))).await));
        let identity = |user: UserId, org: Option<OrgId>, read_only: bool| S3Identity {
            access_key: "STWTEST".into(),
            principal: Principal { user },
            org,
            read_only,
            secret: String::new(),
        };
        let full = identity(user, None, false);
        let limited = identity(user, Some(research.clone()), true);

        assert_eq!(
            ok(service.s3_bucket(&full, "research-data", Access::Write).await),
            research
        );
        assert_eq!(
            ok(service.s3_bucket(&full, research.as_str(), Access::Read).await),
            research
        );
        assert_eq!(
            ok(service.s3_bucket(&limited, "research-data", Access::Read).await),
            research
        );
        let error = |result: ServiceResult<OrgId>| result.err().map(|e| e.to_string()).unwrap_or_default();
        for (key, bucket) in [
            (&full, foreign.as_str()),
            (&full, "no-such-bucket"),
            (&full, "UPPER"),
            (&limited, other.as_str()),
        ] {
            assert_eq!(
                error(service.s3_bucket(key, bucket, Access::Read).await),
                format!("The bucket '{bucket}' does not exist, or this key cannot reach it")
            );
        }
        assert_eq!(
            error(service.s3_bucket(&full, other.as_str(), Access::Write).await),
            "The current user does not have permission to write to the organization Object Store."
        );
        assert_eq!(
            error(service.s3_bucket(&limited, "research-data", Access::Delete).await),
            "This S3 key is read-only: it cannot delete"
        );

        let ids = |orgs: Vec<Organization>| {
            let mut ids: Vec<OrgId> = orgs.into_iter().map(|o| o.id).collect();
            ids.sort();
            ids
        };
        let mut both = vec![research.clone(), other.clone()];
        both.sort();
        assert_eq!(ids(ok(service.s3_buckets(&full).await)), both);
        assert_eq!(ids(ok(service.s3_buckets(&limited).await)), vec![research.clone()]);

        // The first user of the store (root) is a server administrator; `user` is not.
        assert_eq!(
            error(service.s3_create_bucket(&full, "new-bucket").await),
            ServiceError::NotServerAdmin.to_string()
        );
        let root_limited = identity(root, Some(research.clone()), false);
        assert_eq!(
            error(service.s3_create_bucket(&root_limited, "new-bucket").await),
            ServiceError::KeyCannotManageBuckets.to_string()
        );
        let admin = identity(root, None, false);
        let created = ok(service.s3_create_bucket(&admin, "new-bucket").await);
        assert_eq!(
            ok(meta.membership(&created, root).await).map(|m| m.permissions),
            Some(Permissions::ALL)
        );
        assert_eq!(
            ok(service.s3_bucket(&admin, "new-bucket", Access::Delete).await),
            created
        );
        assert_eq!(
            error(service.s3_create_bucket(&admin, "research-data").await),
            "The bucket name 'research-data' is taken: choose another"
        );
        assert!(error(service.s3_create_bucket(&admin, "Bad_Name").await).contains("lowercase letters"));

        // Deleting: only an empty bucket, only by a server administrator who may delete in it.
        let object = NewObject {
            key: ok(Key::parse("x")),
            size: 1,
            md5: String::new(),
            mime: "text/plain".into(),
            preview: None,
            blob: BlobId::generate(),
            now: 1,
            created: None,
            etag: None,
            user_meta: None,
            if_absent: false,
        };
        let quota = Quota {
            max_bytes: 10,
            max_files: 10,
        };
        ok(meta.put_object(&created, object, quota).await);
        let done = |result: ServiceResult<()>| result.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            done(service.s3_delete_bucket(&full, "new-bucket").await),
            ServiceError::NotServerAdmin.to_string()
        );
        assert_eq!(
            done(service.s3_delete_bucket(&admin, "new-bucket").await),
            "The bucket 'new-bucket' is not empty: delete its objects first"
        );
        assert_eq!(
            done(service.s3_delete_bucket(&admin, "research-data").await),
            "The bucket 'research-data' does not exist, or this key cannot reach it"
        );
        ok(meta.delete(&created, &ok(Key::parse("x"))).await);
        ok(service.s3_delete_bucket(&admin, "new-bucket").await);
        assert_eq!(
            error(service.s3_bucket(&admin, "new-bucket", Access::Read).await),
            "The bucket 'new-bucket' does not exist, or this key cannot reach it"
        );
    }

    /// An S3 key answers with its user, limits and secret while it is usable; revoking it, or
    /// disabling its user, refuses it at the next request with one sentence for every case.
    #[tokio::test]
    async fn s3_keys_resolve_until_revoked_or_their_user_is_disabled() {
        let (_dir, meta, key, service) = embedded();
        let sealing_key = key.clone();
        let user = ok(meta
            .create_user("u", false, 1, Box::new(move |id| sealing_key.seal(id, "t").ok()))
            .await)
        .unwrap_or_else(|| panic!("a user"));
        let org = ok(meta.create_org("o", None, None, 1).await);
        let record = S3Key {
            access_key: "STWTESTKEY".into(),
            user,
            org: Some(org.clone()),
            read_only: true,
            secret: ok(key.seal_s3_secret("STWTESTKEY", "the-secret")),
            created: 1,
            revoked: None,
            user_disabled: false,
        };
        assert!(ok(meta.create_s3_key(&record).await));
        let identity = ok(service.s3_identity("STWTESTKEY").await);
        assert_eq!(
            (
                identity.user(),
                identity.org(),
                identity.read_only(),
                identity.secret.as_str()
            ),
            (user, Some(&org), true, "the-secret")
        );
        let refused = |result: ServiceResult<S3Identity>| match result {
            Err(ServiceError::Unauthorized(AuthError::InvalidAccessKey(id))) => id,
            other => panic!("expected an invalid access key, got {other:?}"),
        };
        assert_eq!(refused(service.s3_identity("STWNOSUCHKEY").await), "STWNOSUCHKEY");
        assert!(ok(meta.set_user_disabled(user, true).await));
        assert_eq!(refused(service.s3_identity("STWTESTKEY").await), "STWTESTKEY");
        assert!(ok(meta.set_user_disabled(user, false).await));
        ok(service.s3_identity("STWTESTKEY").await);
        assert!(ok(meta.revoke_s3_key("STWTESTKEY", 2).await));
        assert_eq!(refused(service.s3_identity("STWTESTKEY").await), "STWTESTKEY");
    }

    #[test]
    fn basic_header() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("12:abcd");
        assert_eq!(
            parse_basic(&format!("Basic {encoded}")),
            Some(("12".into(), "abcd".into()))
        );
        assert_eq!(
            parse_basic(&format!("basic {encoded}")),
            Some(("12".into(), "abcd".into()))
        );
        assert_eq!(parse_basic("Bearer x"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic"), None);
    }
}
