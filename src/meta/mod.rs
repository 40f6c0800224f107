//! The metadata store: organizations, users, memberships, objects, folders, usage counters,
//! download jobs, web console sessions, pending S3 multipart uploads and the list of blobs awaiting collection.
//! Its traits are split by concern ([`Identities`], [`Objects`], [`Jobs`], [`Maintenance`], [`Sessions`],
//! [`Uploads`]; [`MetaStore`] is all six, which the service layer holds); `rules` holds the decisions both
//! backends share; `sqlite` is the embedded implementation, `postgres` the one for several servers sharing one
//! database.
//!
//! Every method that changes objects keeps the folder rows and the usage counters in the same
//! transaction, and enforces quotas inside it, so concurrent requests cannot overshoot them. The
//! parts of pending multipart uploads count against the byte quota too (a per-organization running
//! total, `orgs.pending_bytes`, kept in the same transactions), and their blobs count as referenced
//! while their part rows exist.

pub mod postgres;
pub mod rules;
pub mod schema;
pub mod sqlite;
#[cfg(test)]
mod tests;

use async_trait::async_trait;

use crate::crypto::SealedToken;
use crate::ids::{BlobId, BucketAlias, JobId, OrgId, UserId};
use crate::key::{FolderPath, Key};

pub use rules::{FolderDifference, FolderFigures, QuotaExceeded};

/// Any error, kept as the source of a storage error so that the log can show the whole cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the metadata store failed, by what a caller can do about it. Each keeps the backend's own
/// error as its source: the server's log shows the whole chain, clients never see it. The
/// conversions from each driver's errors live in the backends (`sqlite.rs`, `postgres.rs`).
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database cannot be reached or did not answer in time; a retry later may succeed.
    #[error("the metadata database cannot be reached")]
    Unavailable(#[source] BoxError),
    /// The write collided with a concurrent one (busy, deadlock, serialization); a retry may
    /// succeed.
    #[error("a metadata write collided with a concurrent one")]
    Conflict(#[source] BoxError),
    /// The database or its disk is full.
    #[error("the metadata database is out of space")]
    Full(#[source] BoxError),
    /// Stored metadata is damaged or contradicts itself (run `stowage fsck`).
    #[error("the stored metadata is damaged")]
    Corrupt(#[source] BoxError),
    /// The store's settings cannot work (a malformed connection string...).
    #[error("the metadata store settings are invalid: {0}")]
    Config(String),
    /// A statement failed for another reason.
    #[error("a metadata query failed")]
    Failed(#[source] BoxError),
    #[error("the metadata store is shutting down")]
    Closed,
    /// The store's schema cannot be read or brought up to date, or is newer than this binary.
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
}

impl MetaError {
    /// An organization that exists but has no root folder row.
    pub(crate) fn no_root_folder(org: &OrgId) -> MetaError {
        MetaError::Corrupt(format!("organization {org} has no root folder").into())
    }

    /// A failure that is not a driver's error, described in a sentence.
    pub(crate) fn failed(what: impl Into<String>) -> MetaError {
        MetaError::Failed(what.into().into())
    }

    /// The same error for one more caller (one failed transaction answers every write it held):
    /// the same kind, with the original error as the cause.
    pub(crate) fn shared(e: &std::sync::Arc<MetaError>) -> MetaError {
        let cause = || -> BoxError { Box::new(SharedCause(e.clone())) };
        match &**e {
            MetaError::Unavailable(_) => MetaError::Unavailable(cause()),
            MetaError::Conflict(_) => MetaError::Conflict(cause()),
            MetaError::Full(_) => MetaError::Full(cause()),
            MetaError::Corrupt(_) => MetaError::Corrupt(cause()),
            MetaError::Config(what) => MetaError::Config(what.clone()),
            MetaError::Failed(_) | MetaError::Schema(_) => MetaError::Failed(cause()),
            MetaError::Closed => MetaError::Closed,
        }
    }
}

/// The cause of a [`MetaError::shared`] copy: the original error's cause (or the error itself).
#[derive(Debug)]
struct SharedCause(std::sync::Arc<MetaError>);

impl std::fmt::Display for SharedCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::error::Error::source(&*self.0) {
            Some(cause) => std::fmt::Display::fmt(cause, f),
            None => std::fmt::Display::fmt(&*self.0, f),
        }
    }
}

impl std::error::Error for SharedCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0).and_then(std::error::Error::source)
    }
}

pub type MetaResult<T> = Result<T, MetaError>;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Read, write and delete, plus the admin flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions {
    pub(crate) read: bool,
    pub(crate) write: bool,
    pub(crate) delete: bool,
    pub(crate) admin: bool,
}

impl Permissions {
    pub const ALL: Permissions = Permissions {
        read: true,
        write: true,
        delete: true,
        admin: true,
    };

    /// Parses `read,write,delete` (any subset, any order; `admin` also accepted).
    pub(crate) fn parse(list: &str) -> Result<Permissions, String> {
        let mut p = Permissions::default();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "read" => p.read = true,
                "write" => p.write = true,
                "delete" => p.delete = true,
                "admin" => p.admin = true,
                other => return Err(format!("unknown permission '{other}' (expected read, write, delete)")),
            }
        }
        Ok(p)
    }

    pub(crate) fn describe(&self) -> String {
        let mut words = Vec::new();
        for (on, word) in [
            (self.read, "read"),
            (self.write, "write"),
            (self.delete, "delete"),
            (self.admin, "admin"),
        ] {
            if on {
                words.push(word);
            }
        }
        if words.is_empty() {
            "none".into()
        } else {
            words.join(",")
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub(crate) id: OrgId,
    pub(crate) name: String,
    /// Per-organization overrides; `None` means the configured default.
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_files: Option<u64>,
    pub(crate) usage: Usage,
    pub(crate) created: Millis,
    /// The organization's S3 bucket name beside its id, if it has one.
    pub(crate) bucket: Option<String>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub(crate) id: UserId,
    pub(crate) name: String,
    pub(crate) token: SealedToken,
    pub(crate) disabled: bool,
    pub(crate) created: Millis,
    /// May create and delete buckets (organizations) through the S3 API.
    pub(crate) server_admin: bool,
}

/// An S3 access key: a user's credential for the S3 API, apart from its API token.
#[derive(Debug, Clone)]
pub struct S3Key {
    pub(crate) access_key: String,
    pub(crate) user: UserId,
    /// The only organization the key reaches, whatever the user's memberships.
    pub(crate) org: Option<OrgId>,
    /// The key may only read, whatever the user's permissions.
    pub(crate) read_only: bool,
    pub(crate) secret: SealedToken,
    pub(crate) created: Millis,
    pub(crate) revoked: Option<Millis>,
    /// Read with the key: whether its user is disabled (which disables its keys).
    pub(crate) user_disabled: bool,
}

impl S3Key {
    /// A key signs requests while it is not revoked and its user is not disabled.
    pub(crate) fn usable(&self) -> bool {
        self.revoked.is_none() && !self.user_disabled
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub(crate) org: OrgId,
    pub(crate) user: UserId,
    pub(crate) permissions: Permissions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub(crate) bytes: u64,
    pub(crate) files: u64,
}

/// The quota that applies to one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub(crate) max_bytes: u64,
    pub(crate) max_files: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub(crate) key: Key,
    pub(crate) size: u64,
    pub(crate) md5: String,
    pub(crate) mime: String,
    pub(crate) preview: Option<String>,
    pub(crate) created: Millis,
    pub(crate) modified: Millis,
    pub(crate) blob: BlobId,
    /// The S3 ETag when it is not the quoted content md5 (a multipart object's
    /// `"<md5 of the part md5s>-N"`), as the service gave it; `None`: the quoted `md5`.
    pub(crate) etag: Option<String>,
    /// The object's S3 user metadata (`x-amz-meta-*`) as the service gave it (a JSON object),
    /// or `None`.
    pub(crate) user_meta: Option<String>,
}

/// A stored object as `put_object` receives it.
#[derive(Debug, Clone)]
pub struct NewObject {
    pub(crate) key: Key,
    pub(crate) size: u64,
    pub(crate) md5: String,
    pub(crate) mime: String,
    pub(crate) preview: Option<String>,
    pub(crate) blob: BlobId,
    pub(crate) now: Millis,
    /// Set only by `stowage migrate`: the object's original creation time. `now` is then its
    /// original modification time, kept as is rather than stamped with the clock.
    pub(crate) created: Option<Millis>,
    /// See [`ObjectMeta::etag`].
    pub(crate) etag: Option<String>,
    /// See [`ObjectMeta::user_meta`].
    pub(crate) user_meta: Option<String>,
    /// Store only when no file has the key yet (S3's `If-None-Match: *`); otherwise the put is
    /// refused with [`PutRefusal::Exists`], decided inside the write's transaction.
    pub(crate) if_absent: bool,
}

impl NewObject {
    /// The object as it reads back once stored (a new object's creation time is its `now`).
    pub(crate) fn as_stored(&self) -> ObjectMeta {
        ObjectMeta {
            key: self.key.clone(),
            size: self.size,
            md5: self.md5.clone(),
            mime: self.mime.clone(),
            preview: self.preview.clone(),
            created: self.created.unwrap_or(self.now),
            modified: self.now,
            blob: self.blob.clone(),
            etag: self.etag.clone(),
            user_meta: self.user_meta.clone(),
        }
    }
}

/// Why a write was refused; each is an ordinary failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutRefusal {
    /// A proper prefix of the key is a file.
    AncestorIsFile(String),
    /// The key is a folder.
    IsFolder,
    /// The write would take the organization over its quota.
    Quota(QuotaExceeded),
    /// A file has the key and the put asked to store only when none has ([`NewObject::if_absent`]).
    Exists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored; the blob that held the previous content, if any, now awaits collection.
    Stored {
        replaced: Option<BlobId>,
    },
    Refused(PutRefusal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    File,
    Folder { files: u64, bytes: u64 },
    NotFound,
}

/// One entry of a listing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub(crate) name: String,
    pub(crate) is_folder: bool,
    pub(crate) size: u64,
    pub(crate) mime: String,
    pub(crate) modified: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    pub(crate) entries: Vec<ListEntry>,
    /// Direct children in all: folders plus files.
    pub(crate) total_entries: u64,
    /// The organization's usage, read in the same transaction as the page.
    pub(crate) usage: Usage,
}

/// One entry of an S3 listing of a folder's direct children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Child {
    File(ObjectMeta),
    /// A folder (it holds at least one file); its S3 name is its name followed by `/`.
    Folder(FolderPath),
}

/// One file inside a download job, pinned to the blob it had when the job was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEntry {
    pub(crate) key: Key,
    pub(crate) blob: BlobId,
    pub(crate) size: u64,
    pub(crate) modified: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub(crate) id: JobId,
    pub(crate) org: OrgId,
    pub(crate) created: Millis,
    pub(crate) expires: Millis,
}

/// Held by `stowage backup` while it copies the bodies a metadata snapshot names: while it lives,
/// collection (`collectable_blobs`) finds nothing, so no body the snapshot names is deleted
/// under the backup. Dropping it (or the process ending) lets collection resume.
pub struct CollectionHold {
    _held: Box<dyn std::any::Any + Send>,
}

impl CollectionHold {
    fn new(held: impl std::any::Any + Send) -> CollectionHold {
        CollectionHold { _held: Box::new(held) }
    }
}

/// The whole store as one consistent snapshot saw it (download jobs and pending collection
/// excepted): what `stowage backup` copies from a distributed store.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub orgs: Vec<Organization>,
    pub users: Vec<User>,
    pub members: Vec<Membership>,
    pub objects: Vec<(OrgId, ObjectMeta)>,
    pub s3_keys: Vec<S3Key>,
}

/// Copies an S3 key from another store (`stowage migrate`, `stowage backup`): its id, sealed
/// secret (both sides need the same server key), limits and times, its revocation included. A
/// key the destination already holds is left as it is.
pub(crate) async fn import_s3_key(to: &dyn Identities, key: &S3Key) -> MetaResult<()> {
    if to.s3_key(&key.access_key).await?.is_some() {
        return Ok(());
    }
    to.create_s3_key(key).await?;
    if let Some(revoked) = key.revoked {
        to.revoke_s3_key(&key.access_key, revoked).await?;
    }
    Ok(())
}

/// Bounds on one download job, enforced where the job is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Most files one job may cover.
    pub max_files: u64,
    /// Most unexpired jobs one organization may hold: recording one more expires the oldest.
    pub max_live_jobs: u64,
}

impl JobLimits {
    /// No bounds (migration, tests).
    pub const NONE: JobLimits = JobLimits {
        max_files: u64::MAX,
        max_live_jobs: u64::MAX,
    };
}

/// What recording a download job did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Created(Job),
    /// No key names anything.
    NothingFound,
    /// The keys cover more than `max_files` files; nothing was recorded.
    TooManyFiles {
        limit: u64,
    },
}

impl JobOutcome {
    /// The job, when one was created.
    pub fn job(self) -> Option<Job> {
        match self {
            JobOutcome::Created(job) => Some(job),
            _ => None,
        }
    }
}

/// A named key is a file, a folder, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    File(Box<ObjectMeta>),
    Folder,
    Missing,
}

/// Why a bucket name was not given to an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketRefusal {
    UnknownOrg,
    /// Another organization has that bucket name.
    Taken(OrgId),
}

/// What deleting an organization did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrgDeletion {
    /// Deleted, with its memberships, its download jobs, the S3 keys limited to it and its pending
    /// multipart uploads (their parts' blobs await collection).
    Deleted,
    /// It holds objects; nothing was changed.
    NotEmpty,
    Unknown,
}

/// Organizations, users and memberships: what authentication, authorization and `stowage admin`
/// use.
#[async_trait]
pub trait Identities: Send + Sync + 'static {
    async fn create_org(
        &self,
        name: &str,
        max_bytes: Option<u64>,
        max_files: Option<u64>,
        now: Millis,
    ) -> MetaResult<OrgId>;

    async fn org(&self, org: &OrgId) -> MetaResult<Option<Organization>>;

    async fn list_orgs(&self) -> MetaResult<Vec<Organization>>;

    /// Sets the per-organization quota overrides; returns false when the organization is unknown.
    async fn set_quota(&self, org: &OrgId, max_bytes: Option<u64>, max_files: Option<u64>) -> MetaResult<bool>;

    /// Creates an organization with a bucket name, and when `admin` is given, that user as its
    /// administrator member with every permission, in one transaction; refused (nothing created)
    /// when another organization has the bucket name.
    async fn create_bucket_org(
        &self,
        name: &str,
        bucket: &BucketAlias,
        admin: Option<UserId>,
        now: Millis,
    ) -> MetaResult<Result<OrgId, BucketRefusal>>;

    /// Deletes an organization that holds no object (S3's DeleteBucket), atomically with the
    /// check: a write racing with it either lands first (and the deletion is refused) or finds
    /// the organization gone.
    async fn delete_empty_org(&self, org: &OrgId) -> MetaResult<OrgDeletion>;

    /// Gives an organization a bucket name (`None` takes it away).
    async fn set_org_bucket(&self, org: &OrgId, bucket: Option<&BucketAlias>) -> MetaResult<Result<(), BucketRefusal>>;

    /// The organization whose bucket name this is.
    async fn org_by_bucket(&self, bucket: &BucketAlias) -> MetaResult<Option<Organization>>;

    /// Creates a user; `seal` turns the new user's id into its sealed token. The first user of a
    /// store is always a server administrator; others when `server_admin` says so.
    async fn create_user(
        &self,
        name: &str,
        server_admin: bool,
        now: Millis,
        seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
    ) -> MetaResult<Option<UserId>>;

    /// Creates the first organization and the first user (a server administrator), an admin member of it with every
    /// permission, in one transaction, and only when the store has no user yet (`None` then):
    /// several servers starting at once on one empty store create them once. `seal` turns the new
    /// user's id into its sealed token.
    async fn create_first_identities(
        &self,
        org_name: &str,
        user_name: &str,
        now: Millis,
        seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
    ) -> MetaResult<Option<(OrgId, UserId)>>;

    async fn user(&self, user: UserId) -> MetaResult<Option<User>>;

    async fn list_users(&self) -> MetaResult<Vec<User>>;

    async fn set_user_token(&self, user: UserId, token: SealedToken) -> MetaResult<bool>;

    async fn set_user_disabled(&self, user: UserId, disabled: bool) -> MetaResult<bool>;

    /// Flags or unflags a user as server administrator; false when the user is unknown.
    async fn set_user_server_admin(&self, user: UserId, server_admin: bool) -> MetaResult<bool>;

    /// Records a new S3 key (`revoked` and `user_disabled` are ignored); false when its user or
    /// its organization is unknown.
    async fn create_s3_key(&self, key: &S3Key) -> MetaResult<bool>;

    /// The S3 key with this access key id, revoked or not.
    async fn s3_key(&self, access_key: &str) -> MetaResult<Option<S3Key>>;

    /// S3 keys, of one user or of all, by user then creation.
    async fn list_s3_keys(&self, user: Option<UserId>) -> MetaResult<Vec<S3Key>>;

    /// Revokes an S3 key (a revoked key keeps its first revocation time); false when unknown.
    async fn revoke_s3_key(&self, access_key: &str, now: Millis) -> MetaResult<bool>;

    /// Adds or updates a membership; false when the organization or the user is unknown.
    async fn set_member(&self, org: &OrgId, user: UserId, permissions: Permissions) -> MetaResult<bool>;

    async fn remove_member(&self, org: &OrgId, user: UserId) -> MetaResult<bool>;

    async fn membership(&self, org: &OrgId, user: UserId) -> MetaResult<Option<Membership>>;

    /// A user's standing in one organization in one query: whether the user is disabled and, when
    /// a member, its permissions; `None` when there is no such user.
    async fn standing(&self, org: &OrgId, user: UserId) -> MetaResult<Option<Standing>>;

    async fn members(&self, org: &OrgId) -> MetaResult<Vec<Membership>>;

    /// A user's memberships, by organization id.
    async fn user_memberships(&self, user: UserId) -> MetaResult<Vec<Membership>>;
}

/// Objects, folders, listings and usage: the API's reads and writes of an organization's keys.
#[async_trait]
pub trait Objects: Send + Sync + 'static {
    async fn key_kind(&self, org: &OrgId, key: &Key) -> MetaResult<KeyKind>;

    /// Creates or replaces an object, atomically with folders, usage and the quota check.
    async fn put_object(&self, org: &OrgId, object: NewObject, quota: Quota) -> MetaResult<PutOutcome>;

    /// Deletes a file, or a folder with everything under it; freed blobs await collection.
    async fn delete(&self, org: &OrgId, key: &Key) -> MetaResult<DeleteOutcome>;

    async fn list(&self, org: &OrgId, folder: &FolderPath, page: u64, page_size: u64) -> MetaResult<ListPage>;

    async fn usage(&self, org: &OrgId) -> MetaResult<Usage>;

    /// The bytes and files under a folder (the root: the organization's usage); `None` when no
    /// such folder exists.
    async fn folder_usage(&self, org: &OrgId, folder: &FolderPath) -> MetaResult<Option<Usage>>;

    /// The md5 of each file directly in `folder` whose name is between `first` and `last`
    /// (inclusive, byte order): the files of one listing page, in one query over the listing
    /// index (the web console shows them beside the listing).
    async fn file_md5s(
        &self,
        org: &OrgId,
        folder: &FolderPath,
        first: &str,
        last: &str,
    ) -> MetaResult<Vec<(String, String)>>;

    /// Up to `limit` files of the organization whose key is >= `from` (or > `from` when
    /// `!inclusive`), in byte order of the key (SQLite BINARY; PostgreSQL COLLATE "C"): one range
    /// scan of the objects' primary key.
    async fn files_from(&self, org: &OrgId, from: &str, inclusive: bool, limit: usize) -> MetaResult<Vec<ObjectMeta>>;

    /// Up to `limit` direct children of `folder`, files and subfolders merged in the byte order of
    /// their S3 names (a file's name; a folder's name followed by '/'), starting at names >= `from`
    /// (> when `!inclusive`), where `from` is compared against those S3 names (relative to the
    /// folder). Range scans of the listing indexes, reading O(`limit`) rows (see
    /// [`rules::S3FolderOrder`]); one snapshot.
    async fn children_from(
        &self,
        org: &OrgId,
        folder: &FolderPath,
        from: &str,
        inclusive: bool,
        limit: usize,
    ) -> MetaResult<Vec<Child>>;
}

/// A pending S3 multipart upload: what CreateMultipartUpload recorded for the object to come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartUpload {
    /// The upload id the service chose (unique within the organization).
    pub(crate) id: String,
    pub(crate) org: OrgId,
    pub(crate) key: Key,
    /// Who created it.
    pub(crate) user: UserId,
    pub(crate) created: Millis,
    pub(crate) mime: String,
    /// As [`ObjectMeta::user_meta`].
    pub(crate) user_meta: Option<String>,
}

/// One stored part of a pending multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRecord {
    pub(crate) number: u32,
    pub(crate) blob: BlobId,
    pub(crate) size: u64,
    /// The part's content md5 (hex), from which its ETag and the object's ETag are made.
    pub(crate) md5: String,
    pub(crate) modified: Millis,
}

/// What recording a part did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartOutcome {
    /// Recorded; the blob of the part it replaced, if any, now awaits collection.
    Stored {
        replaced: Option<BlobId>,
    },
    NoSuchUpload,
    /// The organization's stored bytes plus its pending parts would pass the byte quota.
    Quota(QuotaExceeded),
}

/// What completing an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteOutcome {
    /// The object is stored and the upload is gone (its parts' blobs await collection, as does the
    /// blob of the object it replaced, given here).
    Stored {
        replaced: Option<BlobId>,
    },
    NoSuchUpload,
    /// The object was refused as `put_object` refuses; the upload is left as it was.
    Refused(PutRefusal),
}

/// Pending S3 multipart uploads and their parts. The parts' bytes count against the byte quota
/// until the upload completes or ends; every part blob is referenced while its row exists, and
/// awaits collection once replaced, aborted or completed.
#[async_trait]
pub trait Uploads: Send + Sync + 'static {
    async fn create_upload(&self, upload: &MultipartUpload) -> MetaResult<()>;

    async fn upload(&self, org: &OrgId, id: &str) -> MetaResult<Option<MultipartUpload>>;

    /// Records a part; an earlier part with that number is replaced and its blob awaits collection
    /// (garbage table). Refused when the organization's stored bytes plus its pending parts' bytes
    /// plus this part would pass `quota.max_bytes` (race-free, decided in the transaction; the same
    /// quota sentence as `put_object`).
    async fn put_part(&self, org: &OrgId, id: &str, part: &PartRecord, quota: Quota) -> MetaResult<PartOutcome>;

    /// Parts with number > `after`, ascending, at most `limit`.
    async fn parts(&self, org: &OrgId, id: &str, after: u32, limit: usize) -> MetaResult<Vec<PartRecord>>;

    /// The organization's pending uploads whose key starts with `prefix`, ordered by (key, id) in
    /// byte order, after `after`, at most `limit`.
    async fn list_uploads(
        &self,
        org: &OrgId,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> MetaResult<Vec<MultipartUpload>>;

    /// In one transaction: removes the upload and all its parts (every part blob awaits
    /// collection) and puts `object` (a new blob the service assembled) with `put_object`'s rules;
    /// the quota check counts the object and no longer this upload's parts. A refusal leaves the
    /// upload in place.
    async fn complete_upload(
        &self,
        org: &OrgId,
        id: &str,
        object: NewObject,
        quota: Quota,
    ) -> MetaResult<CompleteOutcome>;

    /// Removes an upload and its parts (their blobs await collection); false when unknown.
    async fn abort_upload(&self, org: &OrgId, id: &str) -> MetaResult<bool>;

    /// Uploads created before `before`, oldest first, at most `limit`: for the collector.
    async fn expired_uploads(&self, before: Millis, limit: usize) -> MetaResult<Vec<(OrgId, String)>>;
}

/// A web console session as stored: see `service::session` for what each field decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// SHA-256 (hex) of the secret in the session cookie.
    pub(crate) id_hash: String,
    pub(crate) user: UserId,
    /// The token every state-changing console request must carry.
    pub(crate) csrf: String,
    /// A tag of the user's sealed API token when the session began.
    pub(crate) token_tag: String,
    pub(crate) created: Millis,
    pub(crate) last_seen: Millis,
}

/// The web console's sign-in sessions, shared by every server on the store.
#[async_trait]
pub trait Sessions: Send + Sync + 'static {
    async fn create_session(&self, session: &ConsoleSession) -> MetaResult<()>;

    async fn session(&self, id_hash: &str) -> MetaResult<Option<ConsoleSession>>;

    /// Records that the session was used at `now`.
    async fn touch_session(&self, id_hash: &str, now: Millis) -> MetaResult<()>;

    /// Ends a session; false when there was none.
    async fn delete_session(&self, id_hash: &str) -> MetaResult<bool>;

    /// Deletes the sessions last used before `idle_before` or created before `created_before`;
    /// returns how many.
    async fn delete_stale_sessions(&self, idle_before: Millis, created_before: Millis) -> MetaResult<u64>;
}

/// What [`Identities::standing`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub(crate) disabled: bool,
    /// `None` when the user is not a member of the organization.
    pub(crate) permissions: Option<Permissions>,
}

/// Download jobs: the blobs a zip download is pinned to.
#[async_trait]
pub trait Jobs: Send + Sync + 'static {
    /// Records a job over the given keys (files, or folders meaning everything under them), pinned
    /// to their current blobs, within `limits` (checked before anything is recorded, so a refused
    /// job costs at most `max_files` rows read).
    async fn create_job(
        &self,
        org: &OrgId,
        keys: &[Key],
        now: Millis,
        expires: Millis,
        limits: JobLimits,
    ) -> MetaResult<JobOutcome>;

    async fn job(&self, job: &JobId) -> MetaResult<Option<Job>>;

    async fn job_entries(&self, job: &JobId) -> MetaResult<Vec<JobEntry>>;
}

/// Health, collection, checking (`stowage fsck`) and copying (`stowage migrate`): work on the whole
/// store rather than on one request.
#[async_trait]
pub trait Maintenance: Send + Sync + 'static {
    /// Answers when the store can serve a query (for `/readyz`).
    async fn ping(&self) -> MetaResult<()>;

    /// Gives back what the store keeps only for speed and has not used for a while (idle
    /// connections and their caches); answers how many connections it closed. Called
    /// periodically by the server. A store whose idle resources live elsewhere (PostgreSQL's
    /// connections cost the database server, not this process) keeps this default.
    async fn shed_idle_memory(&self) -> MetaResult<usize> {
        Ok(0)
    }

    /// Blobs no object names, released (replaced or deleted) before `released_before`, that no
    /// job unexpired at `now` pins; at most `limit`.
    async fn collectable_blobs(&self, now: Millis, released_before: Millis, limit: usize) -> MetaResult<Vec<BlobId>>;

    /// Forgets collected blobs.
    async fn forget_blobs(&self, blobs: &[BlobId]) -> MetaResult<()>;

    /// Deletes jobs that expired before `before`; returns how many.
    async fn delete_expired_jobs(&self, before: Millis) -> MetaResult<u64>;

    /// Of `candidates`, the blobs no object, job, pending upload part or collection entry names.
    async fn unreferenced_blobs(&self, candidates: &[BlobId]) -> MetaResult<Vec<BlobId>>;

    /// Objects in (organization, key) order, after `after`, at most `limit`.
    async fn objects_after(&self, after: Option<(OrgId, Key)>, limit: usize) -> MetaResult<Vec<(OrgId, ObjectMeta)>>;

    /// Compares an organization's folder rows (and so its usage) with what its objects imply;
    /// with `repair`, rewrites the rows that differ, atomically. Returns the differences found.
    async fn check_folders(&self, org: &OrgId, repair: bool) -> MetaResult<Vec<FolderDifference>>;

    /// Copies an organization (id, name, quotas, creation time) from another store; an
    /// organization that already exists is left as it is. For `stowage migrate`.
    async fn import_org(&self, org: &Organization) -> MetaResult<()>;

    /// Copies a user (id, name, sealed token, status, creation time) from another store; a user
    /// that already exists is left as it is. For `stowage migrate`.
    async fn import_user(&self, user: &User) -> MetaResult<()>;
}

/// The whole metadata store, for what needs every part (the server bundles one for the service);
/// callers that need less take the narrower trait.
pub trait MetaStore: Identities + Objects + Jobs + Maintenance + Sessions + Uploads {}

impl<T: Identities + Objects + Jobs + Maintenance + Sessions + Uploads> MetaStore for T {}
