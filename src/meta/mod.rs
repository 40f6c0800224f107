//! The metadata store: organizations, users, memberships, objects, folders, usage counters,
//! download jobs and the list of blobs awaiting collection. [`MetaStore`] is the trait the
//! service layer talks to; `sqlite` is the embedded implementation, `postgres` the one for
//! several servers sharing one database.
//!
//! Every method that changes objects keeps the folder rows and the usage counters in the same
//! transaction, and enforces quotas inside it, so concurrent requests cannot overshoot them.

pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

use async_trait::async_trait;

use crate::crypto::SealedToken;
use crate::ids::{BlobId, JobId, OrgId, UserId};
use crate::key::{FolderPath, Key};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store: {0}")]
    Database(String),
    #[error("the metadata store is shutting down")]
    Closed,
}

impl From<rusqlite::Error> for MetaError {
    fn from(e: rusqlite::Error) -> MetaError {
        MetaError::Database(e.to_string())
    }
}

impl From<tokio_postgres::Error> for MetaError {
    fn from(e: tokio_postgres::Error) -> MetaError {
        MetaError::Database(postgres::describe_error(&e))
    }
}

impl From<deadpool_postgres::PoolError> for MetaError {
    fn from(e: deadpool_postgres::PoolError) -> MetaError {
        match e {
            deadpool_postgres::PoolError::Closed => MetaError::Closed,
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => MetaError::Database(format!("connection pool: {other}")),
        }
    }
}

pub type MetaResult<T> = Result<T, MetaError>;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Read, write and delete, plus the admin flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions {
    pub read: bool,
    pub write: bool,
    pub delete: bool,
    pub admin: bool,
}

impl Permissions {
    pub const ALL: Permissions = Permissions {
        read: true,
        write: true,
        delete: true,
        admin: true,
    };

    /// Parses `read,write,delete` (any subset, any order; `admin` also accepted).
    pub fn parse(list: &str) -> Result<Permissions, String> {
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

    pub fn describe(&self) -> String {
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
    pub id: OrgId,
    pub name: String,
    /// Per-organization overrides; `None` means the configured default.
    pub max_bytes: Option<u64>,
    pub max_files: Option<u64>,
    pub usage: Usage,
    pub created: Millis,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub token: SealedToken,
    pub disabled: bool,
    pub created: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub org: OrgId,
    pub user: UserId,
    pub permissions: Permissions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub bytes: u64,
    pub files: u64,
}

/// The quota that applies to one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max_bytes: u64,
    pub max_files: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: Key,
    pub size: u64,
    pub md5: String,
    pub mime: String,
    pub preview: Option<String>,
    pub created: Millis,
    pub modified: Millis,
    pub blob: BlobId,
}

/// A stored object as `put_object` receives it.
#[derive(Debug, Clone)]
pub struct NewObject {
    pub key: Key,
    pub size: u64,
    pub md5: String,
    pub mime: String,
    pub preview: Option<String>,
    pub blob: BlobId,
    pub now: Millis,
    /// Set only by `stowage migrate`: the object's original creation time. `now` is then its
    /// original modification time, kept as is rather than stamped with the clock.
    pub created: Option<Millis>,
}

/// Why a write was refused; each is an ordinary failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutRefusal {
    /// A proper prefix of the key is a file.
    AncestorIsFile(String),
    /// The key is a folder.
    IsFolder,
    Quota {
        usage: Usage,
        quota: Quota,
        added_bytes: u64,
        added_files: u64,
    },
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
    pub name: String,
    pub is_folder: bool,
    pub size: u64,
    pub mime: String,
    pub modified: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub entries: Vec<ListEntry>,
    /// Direct children in all: folders plus files.
    pub total_entries: u64,
}

/// One file inside a download job, pinned to the blob it had when the job was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEntry {
    pub key: Key,
    pub blob: BlobId,
    pub size: u64,
    pub modified: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub org: OrgId,
    pub created: Millis,
    pub expires: Millis,
}

/// Bounds on one download job, enforced where the job is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobLimits {
    /// Most files one job may cover.
    pub max_files: u64,
    /// Most unexpired jobs one organization may hold.
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
    /// The organization already holds `max_live_jobs` unexpired jobs; nothing was recorded.
    TooManyJobs {
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

/// The figures a folder row keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderFigures {
    pub bytes: u64,
    pub files: u64,
    pub child_folders: u64,
    pub child_files: u64,
    pub modified: Millis,
}

/// Folder rows as a set of objects implies them, accumulated object by object: the reference that
/// fsck compares each backend's incrementally kept rows with.
pub struct ImpliedFolders(std::collections::BTreeMap<String, FolderFigures>);

impl Default for ImpliedFolders {
    fn default() -> ImpliedFolders {
        ImpliedFolders(std::collections::BTreeMap::from([(
            String::new(),
            FolderFigures::default(),
        )]))
    }
}

impl ImpliedFolders {
    /// Counts one object in every folder above it.
    pub fn add(&mut self, key: &Key, size: u64, modified: Millis) {
        let ancestors = key.ancestors();
        let last = ancestors.len() - 1;
        for (i, folder) in ancestors.iter().enumerate() {
            let entry = self.0.entry(folder.as_str().to_owned()).or_default();
            entry.bytes += size;
            entry.files += 1;
            entry.modified = entry.modified.max(modified);
            if i == last {
                entry.child_files += 1;
            }
        }
    }

    /// The folders by path (the root is `""`), with their direct child folders counted.
    pub fn finish(mut self) -> std::collections::BTreeMap<String, FolderFigures> {
        let paths: Vec<String> = self.0.keys().filter(|p| !p.is_empty()).cloned().collect();
        for path in paths {
            let parent = path.rfind('/').map(|i| path[..i].to_owned()).unwrap_or_default();
            if let Some(entry) = self.0.get_mut(&parent) {
                entry.child_folders += 1;
            }
        }
        self.0
    }
}

/// The folders whose stored row differs from the implied one. An empty root's modification time
/// is its organization's creation time, which no object implies, so it is not compared.
pub fn compare_folders(
    org: &OrgId,
    implied: &std::collections::BTreeMap<String, FolderFigures>,
    stored: &std::collections::BTreeMap<String, FolderFigures>,
) -> Vec<FolderDifference> {
    let mut paths: Vec<&String> = implied.keys().chain(stored.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    for path in paths {
        let (mut want, have) = (implied.get(path).copied(), stored.get(path).copied());
        if let (true, Some(w), Some(h)) = (path.is_empty(), want.as_mut(), have)
            && w.files == 0
        {
            w.modified = h.modified;
        }
        if want != have {
            out.push(FolderDifference {
                org: org.clone(),
                path: path.clone(),
                stored: have,
                implied: want,
            });
        }
    }
    out
}

/// A folder whose stored row differs from what the object rows imply (`None`: no row / no folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderDifference {
    pub org: OrgId,
    pub path: String,
    pub stored: Option<FolderFigures>,
    pub implied: Option<FolderFigures>,
}

#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Answers when the store can serve a query (for `/readyz`).
    async fn ping(&self) -> MetaResult<()>;

    // --- organizations, users, memberships ---
    async fn create_org(
        &self,
        name: &str,
        max_bytes: Option<u64>,
        max_files: Option<u64>,
        now: Millis,
    ) -> MetaResult<OrgId>;
    async fn org(&self, org: &OrgId) -> MetaResult<Option<Organization>>;
    async fn list_orgs(&self) -> MetaResult<Vec<Organization>>;
    /// Copies an organization (id, name, quotas, creation time) from another store; an
    /// organization that already exists is left as it is. For `stowage migrate`.
    async fn import_org(&self, org: &Organization) -> MetaResult<()>;
    /// Copies a user (id, name, sealed token, status, creation time) from another store; a user
    /// that already exists is left as it is. For `stowage migrate`.
    async fn import_user(&self, user: &User) -> MetaResult<()>;
    /// Sets the per-organization quota overrides; returns false when the organization is unknown.
    async fn set_quota(&self, org: &OrgId, max_bytes: Option<u64>, max_files: Option<u64>) -> MetaResult<bool>;
    /// Creates a user; `seal` turns the new user's id into its sealed token.
    async fn create_user(
        &self,
        name: &str,
        now: Millis,
        seal: Box<dyn FnOnce(UserId) -> Option<SealedToken> + Send>,
    ) -> MetaResult<Option<UserId>>;
    /// Creates the first organization and the first user, an admin member of it with every
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
    /// Adds or updates a membership; false when the organization or the user is unknown.
    async fn set_member(&self, org: &OrgId, user: UserId, permissions: Permissions) -> MetaResult<bool>;
    async fn remove_member(&self, org: &OrgId, user: UserId) -> MetaResult<bool>;
    async fn membership(&self, org: &OrgId, user: UserId) -> MetaResult<Option<Membership>>;
    async fn members(&self, org: &OrgId) -> MetaResult<Vec<Membership>>;

    // --- objects ---
    async fn key_kind(&self, org: &OrgId, key: &Key) -> MetaResult<KeyKind>;
    /// Creates or replaces an object, atomically with folders, usage and the quota check.
    async fn put_object(&self, org: &OrgId, object: NewObject, quota: Quota) -> MetaResult<PutOutcome>;
    /// Deletes a file, or a folder with everything under it; freed blobs await collection.
    async fn delete(&self, org: &OrgId, key: &Key) -> MetaResult<DeleteOutcome>;
    async fn list(&self, org: &OrgId, folder: &FolderPath, page: u64, page_size: u64) -> MetaResult<ListPage>;
    async fn usage(&self, org: &OrgId) -> MetaResult<Usage>;

    // --- download jobs ---
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

    // --- collection ---
    /// Blobs no object names and no unexpired job pins, at most `limit`.
    async fn collectable_blobs(&self, now: Millis, limit: usize) -> MetaResult<Vec<BlobId>>;
    /// Forgets collected blobs.
    async fn forget_blobs(&self, blobs: &[BlobId]) -> MetaResult<()>;
    /// Deletes jobs that expired before `before`; returns how many.
    async fn delete_expired_jobs(&self, before: Millis) -> MetaResult<u64>;
    /// Of `candidates`, the blobs no object, job or collection entry names.
    async fn unreferenced_blobs(&self, candidates: &[BlobId]) -> MetaResult<Vec<BlobId>>;

    // --- checking (fsck) ---
    /// Objects in (organization, key) order, after `after`, at most `limit`.
    async fn objects_after(&self, after: Option<(OrgId, Key)>, limit: usize) -> MetaResult<Vec<(OrgId, ObjectMeta)>>;
    /// Compares an organization's folder rows (and so its usage) with what its objects imply;
    /// with `repair`, rewrites the rows that differ, atomically. Returns the differences found.
    async fn check_folders(&self, org: &OrgId, repair: bool) -> MetaResult<Vec<FolderDifference>>;
}
