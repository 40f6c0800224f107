//! The service's typed errors. Each says, in a sentence a user can act on, what went wrong; the
//! HTTP layer maps each kind to its status (most are ordinary failures: HTTP 200, `success: false`).

use crate::blob::BlobError;
use crate::key::KeyError;
use crate::meta::MetaError;

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
    })]
    PermissionDenied(Access),
    #[error("Missing required field '{0}'")]
    MissingField(&'static str),
    #[error("Invalid field '{field}': {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error(transparent)]
    BadKey(#[from] KeyError),
    #[error("Object not found: {0}")]
    ObjectNotFound(String),
    #[error("{0} is a folder")]
    IsFolder(String),
    #[error("Cannot store '{key}': '{file}' is a file, so it cannot also be a folder")]
    AncestorIsFile { key: String, file: String },
    #[error("Cannot store '{0}': it is a folder, so it cannot also be a file")]
    KeyIsFolder(String),
    #[error(
        "Storage quota exceeded: the organization uses {used} of {limit} bytes and this upload would add {added} bytes"
    )]
    QuotaBytes { used: u64, limit: u64, added: u64 },
    #[error("File quota exceeded: the organization holds {used} of {limit} files")]
    QuotaFiles { used: u64, limit: u64 },
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
    #[error(
        "This organization already has {limit} download jobs that have not expired; use one of them or wait for them to expire"
    )]
    TooManyJobs { limit: u64 },
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
    #[error("Storage unavailable: {0}")]
    Unavailable(String),
}

impl From<MetaError> for ServiceError {
    fn from(e: MetaError) -> ServiceError {
        ServiceError::Unavailable(e.to_string())
    }
}

impl From<BlobError> for ServiceError {
    fn from(e: BlobError) -> ServiceError {
        ServiceError::Unavailable(e.to_string())
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;
