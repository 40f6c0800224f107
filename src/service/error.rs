//! The service's typed errors. Each says, in a sentence a user can act on, what went wrong; the
//! HTTP layer maps each kind to its status (most are ordinary failures: HTTP 200, `success: false`).

use crate::blob::{BlobError, BoxError};
use crate::ids::BucketAliasError;
use crate::key::KeyError;
use crate::meta::{MetaError, QuotaExceeded};

/// Why authentication failed (HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("UserID not valid: send 'Authorization: Basic base64(<userId>:<hash>)'")]
    MissingAuthorization,
    #[error(
        "UserID not valid: the Authorization header must be 'Basic base64(<userId>:<hash>)' with a numeric user id"
    )]
    MalformedAuthorization,
    #[error("UserID not valid: {0}")]
    UnknownUser(String),
    #[error("Timestamp header missing: send the current Unix time in seconds in a 'Timestamp' header")]
    MissingTimestamp,
    #[error("Timestamp '{0}' is not a Unix time in whole seconds")]
    UnparseableTimestamp(String),
    #[error("Timestamp '{timestamp}' is too old: it must be at most {max_age} seconds before the server's time")]
    StaleTimestamp { timestamp: String, max_age: i64 },
    #[error(
        "Timestamp '{timestamp}' is too far in the future: it must be at most {max_future} seconds after the server's time"
    )]
    FutureTimestamp { timestamp: String, max_future: i64 },
    #[error("The API token is not the one of user {0}")]
    WrongToken(String),
    /// One sentence for an unknown key, a revoked one and one whose user is disabled: a caller
    /// learns nothing about which keys exist.
    #[error(
        "The S3 access key id '{0}' is not valid: it does not exist, was revoked, or its user is disabled; ask the operator for a key (stowage admin s3-key create)"
    )]
    InvalidAccessKey(String),
    #[error("Hash doesn't match. UID: {user} Hash: {hash} Timestamp: '{timestamp}'")]
    HashMismatch {
        user: String,
        hash: String,
        timestamp: String,
    },
}

/// What a member may be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Delete,
    /// Manage the organization's members.
    Admin,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("Organization not found or access denied")]
    OrganizationNotFound,
    #[error("The current user does not have permission to {} the organization Object Store.", match .0 {
        Access::Read => "read from",
        Access::Write => "write to",
        Access::Delete => "delete objects from",
        Access::Admin => "manage the members of",
    })]
    PermissionDenied(Access),
    #[error(transparent)]
    BadKey(#[from] KeyError),
    #[error("The bucket '{0}' does not exist, or this key cannot reach it")]
    NoSuchBucket(String),
    #[error("This S3 key is read-only: it cannot {}", match .0 {
        Access::Read => "read",
        Access::Write => "write",
        Access::Delete => "delete",
        Access::Admin => "manage members",
    })]
    KeyReadOnly(Access),
    #[error(
        "Only server administrators may create or delete buckets; ask the operator (stowage admin user set --server-admin true)"
    )]
    NotServerAdmin,
    #[error(
        "This S3 key is read-only or limited to one organization, so it cannot create or delete buckets; use a key without --org and --read-only"
    )]
    KeyCannotManageBuckets,
    #[error(transparent)]
    BadBucketName(#[from] BucketAliasError),
    #[error("The bucket name '{0}' is taken: choose another")]
    BucketTaken(String),
    #[error("The bucket '{0}' is not empty: delete its objects first")]
    BucketNotEmpty(String),
    #[error("Object not found: {0}")]
    ObjectNotFound(String),
    #[error("{0} is a folder")]
    IsFolder(String),
    #[error("Cannot store '{key}': '{file}' is a file, so it cannot also be a folder")]
    AncestorIsFile { key: String, file: String },
    #[error("Cannot store '{0}': it is a folder, so it cannot also be a file")]
    KeyIsFolder(String),
    /// The sentence is the metadata rules' (`meta::rules::QuotaExceeded`).
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    #[error("No keys given: send 'keys' with at least one key")]
    NoKeys,
    #[error("None of the requested keys exist")]
    NothingFound,
    #[error(
        "Too many keys: this request names {given} keys and at most {limit} are allowed; name their folders instead, or split the request"
    )]
    TooManyKeys { given: usize, limit: usize },
    #[error(
        "This download would cover more than {limit} files; ask for fewer keys or smaller folders, or ask the operator to raise max_files_per_job"
    )]
    JobTooLarge { limit: u64 },
    #[error("Download job not found: {0}")]
    JobNotFound(String),
    #[error("Download job {0} has expired; create a new one")]
    JobExpired(String),
    #[error("The object is larger than the maximum object size of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("Too many failed authentications; try again in {retry_after} seconds")]
    RateLimited { retry_after: u64 },
    #[error(
        "Too many uploads in flight: this user already has {limit} uploads running; wait for one to finish and try again"
    )]
    TooManyUploads { limit: u32 },
    #[error("The upload broke off before the whole file arrived; try again")]
    UploadBroken,
    #[error("Only a server administrator can do this")]
    ServerAdminOnly,
    #[error("An organization named \"{0}\" already exists; choose another name")]
    DuplicateOrgName(String),
    #[error("{0} is empty: fill it in")]
    EmptyName(&'static str),
    #[error("You cannot disable your own account here; ask another server administrator")]
    DisableSelf,
    #[error("There is no user with id '{0}'")]
    UserNotFound(String),
    #[error("User {0} is not a member of this organization")]
    NotAMember(String),
    #[error("This change would leave the organization without an admin; make another member an admin first")]
    LastAdmin,
    #[error("You already own the bucket '{0}'")]
    BucketAlreadyOwned(String),
    #[error("An object already exists at '{0}' and the request asked to create it only if absent (If-None-Match: *)")]
    ObjectExists(String),
    #[error(
        "The body's {algorithm} is {computed}, not the {sent} the request declared: the body was damaged on the way; nothing was stored, send it again"
    )]
    BadDigest {
        algorithm: &'static str,
        sent: String,
        computed: String,
    },
    #[error("The upload '{0}' does not exist: it was completed, aborted or has expired")]
    NoSuchUpload(String),
    #[error("{0}")]
    InvalidPart(String),
    #[error("The parts must be listed in ascending order of part number, each once")]
    InvalidPartOrder,
    #[error("Part {part} is {size} bytes; every part but the last must be at least {min} bytes")]
    EntityTooSmall { part: u32, size: u64, min: u64 },
    #[error("Part number {0} is out of range: part numbers go from 1 to 10000")]
    PartNumberOutOfRange(i64),
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Unavailable(#[from] StorageFailure),
}

/// A storage failure, kept whole (its source is the store's error) for the server's log. Clients
/// read only its fixed sentence: which store failed and that they may retry, never the backend's
/// own text (an SQL message, an S3 error body, a path).
#[derive(Debug, thiserror::Error)]
pub enum StorageFailure {
    #[error("Storage unavailable: {}", meta_sentence(.0))]
    Meta(#[source] MetaError),
    #[error("Storage unavailable: {}", blob_sentence(.0))]
    Blob(#[source] BlobError),
    #[error("Storage unavailable: a stored API token could not be read; ask an administrator to rotate it")]
    Token(#[source] BoxError),
}

fn meta_sentence(e: &MetaError) -> &'static str {
    match e {
        MetaError::Unavailable(_) | MetaError::Closed => "the metadata store cannot be reached; try again later",
        MetaError::Conflict(_) => "the metadata store was busy with a concurrent change; try again",
        MetaError::Full(_) => "the metadata store is out of space; try again later",
        MetaError::Corrupt(_) => {
            "the metadata store holds damaged data; try again later, and tell an administrator to run 'stowage fsck'"
        }
        MetaError::Config(_) | MetaError::Failed(_) | MetaError::Schema(_) => {
            "the metadata store could not complete the request; try again later"
        }
    }
}

fn blob_sentence(e: &BlobError) -> &'static str {
    match e {
        BlobError::Full(_) => "the blob store is out of space; try again later",
        BlobError::Unavailable { .. } => "the blob store cannot be reached; try again later",
        BlobError::NotFound(_) => "a stored object body is missing; try again later, and tell an administrator",
        BlobError::Io(_) | BlobError::Store { .. } | BlobError::Config(_) | BlobError::Schema(_) => {
            "the blob store could not complete the request; try again later"
        }
    }
}

impl From<MetaError> for StorageFailure {
    fn from(e: MetaError) -> StorageFailure {
        StorageFailure::Meta(e)
    }
}

impl From<BlobError> for StorageFailure {
    fn from(e: BlobError) -> StorageFailure {
        StorageFailure::Blob(e)
    }
}

impl From<MetaError> for ServiceError {
    fn from(e: MetaError) -> ServiceError {
        ServiceError::Unavailable(e.into())
    }
}

impl From<BlobError> for ServiceError {
    fn from(e: BlobError) -> ServiceError {
        ServiceError::Unavailable(e.into())
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// An error and every cause under it, `: `-separated (for the log).
pub(crate) struct CauseChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for CauseChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}
