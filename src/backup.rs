//! `stowage backup` and `stowage restore`.
//!
//! A backup is itself an embedded data directory (`metadata.sqlite3`, `blobs/`, `server.key`)
//! that `stowage serve --data-dir` opens and `stowage fsck` checks, whatever the source's
//! backends were.
//!
//! Consistency while the server runs: the backup first holds off collection
//! ([`crate::meta::CollectionHold`]: a file lock beside the SQLite database, an advisory lock in
//! PostgreSQL), then takes one metadata snapshot (SQLite's `VACUUM INTO`, or one `REPEATABLE
//! READ` transaction in PostgreSQL), then the small-body table (after the metadata, so it holds
//! every small body the snapshot names), then brings in every body the snapshot names. An object
//! overwritten or deleted after the snapshot moves its body to `garbage`, but no collection pass
//! can delete it before the hold is released, at the very end.
//!
//! Incremental and atomic: the new backup is built in a sibling folder (`.NAME.partial`); bodies
//! the previous backup has are hard-linked from it, new ones are hard-linked from the store (same
//! filesystem) or copied; then the new folder and the previous one are exchanged in one rename
//! (`renameat2(RENAME_EXCHANGE)` on Linux) and the previous one is removed. An interrupted run
//! leaves the previous backup whole and a `.partial` folder that the next run discards.
//!
//! Restore: onto an embedded store, the same copy from the backup into a fresh data directory;
//! into a distributed store, [`crate::migrate`] from the backup.
//!
//! Pending S3 multipart uploads are not backed up: the copy holds neither their records nor their
//! parts' bodies (clients start such uploads again), and its organizations have no pending bytes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::blob::local::LocalBlobs;
use crate::blob::{BlobError, BlobStore, small};
use crate::config::{BlobStoreKind, Config, MetadataStore};
use crate::ids::OrgId;
use crate::meta::postgres::PostgresMeta;
use crate::meta::sqlite::{self, SqliteMeta};
use crate::meta::{
    CollectionHold, Identities, Maintenance, MetaError, NewObject, ObjectMeta, Objects, PutOutcome, Quota,
};

/// Objects read per metadata page, and bodies or rows in flight at once.
const PAGE: usize = 500;
const IN_FLIGHT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Migrate(#[from] crate::migrate::MigrateError),
    #[error(transparent)]
    Open(#[from] crate::server::ServeError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0} holds no stowage data (no metadata.sqlite3): nothing to back up or restore")]
    NoStore(PathBuf),
    #[error(
        "{0} exists and is not a stowage backup; back up into a new or empty folder, or into an \
         earlier backup to update it"
    )]
    NotABackup(PathBuf),
    #[error("{0} already holds a store; restore into a fresh data directory (move the old one away first)")]
    TargetInUse(PathBuf),
    #[error(
        "the destination store already has users; restore into an empty store (a new database and \
         bucket prefix), before any server has started on it"
    )]
    TargetHasUsers,
    #[error("cannot find the source's server key: set server_key, or keep server.key in {0}")]
    NoServerKey(PathBuf),
    #[error(
        "the server_key setting differs from the backup's server.key, so the backed-up tokens \
         would not work: use the backup's key"
    )]
    KeyMismatch,
    #[error("{org} {key}: the store names a body that is missing ({detail}); run `stowage fsck` on the source")]
    MissingBody { org: String, key: String, detail: String },
    #[error("the backup refused {org} {key}: {reason}")]
    Refused { org: String, key: String, reason: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// What a backup (or a restore onto an embedded store) did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    pub organizations: usize,
    pub users: usize,
    pub objects: u64,
    pub bytes: u64,
    /// Bodies brought in from the store in this run (hard-linked or copied), and their bytes.
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Bodies taken over from the previous backup.
    pub blobs_kept: u64,
    /// Bodies of the previous backup that the new one no longer names.
    pub blobs_dropped: u64,
    /// Bodies in the small-body table, copied with it.
    pub small_bodies: u64,
    pub seconds: f64,
}

impl BackupReport {
    /// The one-line summary printed after every run.
    pub fn summary(&self, verb: &str, to: &Path) -> String {
        format!(
            "{verb} {} object(s), {} byte(s) of {} organization(s) and {} user(s) to {} in {:.1} s: \
             {} body file(s) copied ({} bytes), {} kept from the previous backup, {} dropped, {} small bodies",
            self.objects,
            self.bytes,
            self.organizations,
            self.users,
            to.display(),
            self.seconds,
            self.blobs_copied,
            self.bytes_copied,
            self.blobs_kept,
            self.blobs_dropped,
            self.small_bodies
        )
    }
}

/// Takes a consistent backup of the store `source` describes into `to` (created, or updated
/// incrementally when it holds an earlier backup).
pub async fn backup(source: &Config, to: &Path) -> Result<BackupReport, BackupError> {
    copy_store(source, to, false).await
}

/// Where the new backup is built, and the previous one it replaces.
struct Destination {
    target: PathBuf,
    staging: PathBuf,
    aside: PathBuf,
    /// The blob directory of the backup this run replaces.
    previous: Option<PathBuf>,
}

impl Destination {
    fn prepare(target: &Path, fresh_only: bool) -> Result<Destination, BackupError> {
        let name = target
            .file_name()
            .ok_or_else(|| BackupError::NotABackup(target.to_owned()))?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(io(format!("cannot create {}", parent.display())))?;
        let staging = parent.join(format!(".{name}.partial"));
        let aside = parent.join(format!(".{name}.old"));
        // A swap interrupted between its two renames (systems without an atomic exchange).
        if !target.exists() && aside.join("metadata.sqlite3").exists() {
            std::fs::rename(&aside, target).map_err(io(format!("cannot restore {}", aside.display())))?;
        }
        if aside.exists() {
            std::fs::remove_dir_all(&aside).map_err(io(format!("cannot remove {}", aside.display())))?;
        }
        let previous = if target.join("metadata.sqlite3").exists() {
            if fresh_only {
                return Err(BackupError::TargetInUse(target.to_owned()));
            }
            Some(target.join("blobs"))
        } else if target.exists() {
            let empty = std::fs::read_dir(target)
                .map_err(|_| BackupError::NotABackup(target.to_owned()))?
                .next()
                .is_none();
            if !empty {
                return Err(BackupError::NotABackup(target.to_owned()));
            }
            None
        } else {
            None
        };
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(format!("cannot remove {}", staging.display())))?;
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&staging)
                .map_err(io(format!("cannot create {}", staging.display())))?;
        }
        Ok(Destination {
            target: target.to_owned(),
            staging,
            aside,
            previous,
        })
    }

    fn db(&self) -> PathBuf {
        self.staging.join("metadata.sqlite3")
    }

    fn blob_dir(&self) -> PathBuf {
        self.staging.join("blobs")
    }

    /// Makes everything durable, then puts the new backup in place of the previous one.
    fn commit(self) -> Result<(), BackupError> {
        let blobs = self.blob_dir();
        for entry in std::fs::read_dir(&blobs).map_err(io(format!("cannot read {}", blobs.display())))? {
            let path = entry.map_err(io("cannot read the new backup"))?.path();
            if path.is_dir() {
                sync_dir(&path)?;
            }
        }
        sync_dir(&blobs)?;
        sync_dir(&self.staging)?;
        if self.target.exists() {
            exchange(&self.staging, &self.target, &self.aside)?;
            // `staging` now holds the previous backup.
            std::fs::remove_dir_all(&self.staging).map_err(io(format!(
                "cannot remove the previous backup {}",
                self.staging.display()
            )))?;
        } else {
            std::fs::rename(&self.staging, &self.target)
                .map_err(io(format!("cannot move the backup to {}", self.target.display())))?;
        }
        if let Some(parent) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot sync {}", dir.display())))
}

/// Swaps the folders `a` and `b` in one step.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(a: &Path, b: &Path, _aside: &Path) -> Result<(), BackupError> {
    use std::os::unix::ffi::OsStrExt;
    let cstr =
        |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| std::io::Error::other(e.to_string()));
    let result = (|| {
        let (a, b) = (cstr(a)?, cstr(b)?);
        // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    })();
    result.map_err(io(format!("cannot put the new backup in place of {}", b.display())))
}

/// Moves `b` aside, `a` to `b`; a run interrupted in between finds `b` missing and moves it back.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(a: &Path, b: &Path, aside: &Path) -> Result<(), BackupError> {
    std::fs::rename(b, aside).map_err(io(format!("cannot move {} aside", b.display())))?;
    std::fs::rename(a, b).map_err(io(format!("cannot move the backup to {}", b.display())))?;
    std::fs::rename(aside, a).map_err(io(format!("cannot move {} back", aside.display())))
}

/// Where the bodies come from.
enum Bodies {
    /// Files of a local blob directory: hard-linked when possible.
    Files(LocalBlobs),
    /// Any other body store: streamed.
    Store(Arc<dyn BlobStore>),
}

/// How one body got into the new backup.
enum Placed {
    Small,
    Kept,
    Copied,
}

struct Transfer {
    bodies: Bodies,
    small: HashSet<String>,
    previous: Option<LocalBlobs>,
    into: LocalBlobs,
}

impl Transfer {
    async fn place(&self, org: &OrgId, object: &ObjectMeta) -> Result<Placed, BackupError> {
        let id = &object.blob;
        if self.small.contains(id.as_str()) {
            return Ok(Placed::Small);
        }
        let dest = self.into.path_of(id);
        if let Some(previous) = &self.previous {
            let old = previous.path_of(id);
            if old.exists() {
                std::fs::hard_link(&old, &dest).map_err(io(format!("cannot link {}", old.display())))?;
                return Ok(Placed::Kept);
            }
        }
        let missing = |detail: String| BackupError::MissingBody {
            org: org.to_string(),
            key: object.key.to_string(),
            detail,
        };
        match &self.bodies {
            Bodies::Files(files) => {
                let src = files.path_of(id);
                if std::fs::hard_link(&src, &dest).is_err() {
                    // Another filesystem (or no links allowed): copy, durably.
                    std::fs::copy(&src, &dest).map_err(|e| missing(e.to_string()))?;
                    std::fs::File::open(&dest)
                        .and_then(|f| f.sync_all())
                        .map_err(io(format!("cannot sync {}", dest.display())))?;
                }
            }
            Bodies::Store(store) => {
                let mut body = store.open(id).await.map_err(|e| missing(e.to_string()))?;
                let mut file = tokio::fs::File::create(&dest)
                    .await
                    .map_err(io(format!("cannot create {}", dest.display())))?;
                while let Some(chunk) = body.try_next().await.map_err(|e| missing(e.to_string()))? {
                    file.write_all(&chunk)
                        .await
                        .map_err(io(format!("cannot write {}", dest.display())))?;
                }
                file.sync_all()
                    .await
                    .map_err(io(format!("cannot sync {}", dest.display())))?;
            }
        }
        Ok(Placed::Copied)
    }
}

/// The server key of `config` as hex text: the setting, else the data directory's key file.
fn server_key_text(config: &Config) -> Result<String, BackupError> {
    if let Some(hex) = &config.server_key {
        return Ok(hex.trim().to_lowercase());
    }
    std::fs::read_to_string(config.key_path())
        .map(|text| text.trim().to_lowercase())
        .map_err(|_| BackupError::NoServerKey(config.data_dir.clone()))
}

/// Copies the store `source` describes into the embedded data directory `to`: the backup, and a
/// restore onto an embedded store (`fresh_only`: refuse a directory that already holds a store).
async fn copy_store(source: &Config, to: &Path, fresh_only: bool) -> Result<BackupReport, BackupError> {
    // A backup is a data directory: owner-only (0700/0600) like the store it copies.
    crate::modes::restrict_new_files();
    let started = Instant::now();
    if source.metadata == MetadataStore::Sqlite && !source.db_path().exists() {
        return Err(BackupError::NoStore(source.data_dir.clone()));
    }
    let key = server_key_text(source)?;
    let dest = Destination::prepare(to, fresh_only)?;
    let into = LocalBlobs::open(&dest.blob_dir())?;
    crate::crypto::write_private_file(&dest.staging.join("server.key"), format!("{key}\n").as_bytes())
        .map_err(io("cannot write the backup's server.key"))?;

    // Collection stays off from before the snapshot until every body it names is in place.
    let (hold, small, copy): (CollectionHold, HashSet<String>, SqliteMeta) =
        if let MetadataStore::Postgres(url) = &source.metadata {
            let meta = PostgresMeta::connect(url).await?;
            let hold = meta.hold_collection().await?;
            let snapshot = meta.snapshot().await?;
            let copy = SqliteMeta::open(&dest.db())?;
            import_snapshot(&copy, snapshot).await?;
            (hold, HashSet::new(), copy)
        } else {
            let (db, blob_dir, dest_db, dest_blobs) = (source.db_path(), source.blob_dir(), dest.db(), dest.blob_dir());
            let (hold, small) = tokio::task::spawn_blocking(move || -> Result<_, BackupError> {
                let hold = sqlite::hold_collection(&db)?;
                sqlite::snapshot_into(&db, &dest_db)?;
                let small_db = dest_blobs.join("small.sqlite3");
                let small = if small::snapshot_into(&blob_dir, &small_db)? {
                    small::ids_in(&small_db)?
                } else {
                    HashSet::new()
                };
                Ok((hold, small))
            })
            .await
            .map_err(|e| BackupError::Io {
                what: "the snapshot stopped".into(),
                source: std::io::Error::other(e.to_string()),
            })??;
            (hold, small, SqliteMeta::open(&dest.db())?)
        };

    let bodies = if source.blob_store == BlobStoreKind::Local && !source.shared_stores() {
        Bodies::Files(LocalBlobs::attach(&source.blob_dir()))
    } else {
        Bodies::Store(crate::server::open_blobs(source, false).await?)
    };
    let transfer = Transfer {
        bodies,
        small,
        previous: dest.previous.as_deref().map(LocalBlobs::attach),
        into,
    };
    let mut report = BackupReport {
        organizations: copy.list_orgs().await?.len(),
        users: copy.list_users().await?.len(),
        ..BackupReport::default()
    };
    let total: u64 = {
        let mut n = 0;
        for org in copy.list_orgs().await? {
            n += org.usage.files;
        }
        n
    };
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("backup {bar:30} {pos}/{len} objects, {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut named_small = HashSet::new();
    let mut after = None;
    loop {
        let page = copy.objects_after(after.clone(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.0.clone(), last.1.key.clone()));
        let transfer = &transfer;
        let placed: Vec<(Placed, &ObjectMeta)> = futures::stream::iter(page.iter())
            .map(|(org, object)| async move { Ok::<_, BackupError>((transfer.place(org, object).await?, object)) })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        for (how, object) in placed {
            let size = object.size;
            report.objects += 1;
            report.bytes += size;
            match how {
                Placed::Small => {
                    report.small_bodies += 1;
                    named_small.insert(object.blob.as_str().to_owned());
                }
                Placed::Kept => report.blobs_kept += 1,
                Placed::Copied => {
                    report.blobs_copied += 1;
                    report.bytes_copied += size;
                }
            }
        }
        bar.set_position(report.objects);
        bar.set_message(bytesize::ByteSize(report.bytes).to_string());
    }
    bar.finish_and_clear();
    drop(copy);
    // The small-body table was copied whole: keep only the bodies the snapshot names (uploads in
    // flight and bodies awaiting collection are not part of the backup).
    if !transfer.small.is_empty() {
        let small_db = dest.blob_dir().join("small.sqlite3");
        tokio::task::spawn_blocking(move || small::retain_only(&small_db, &named_small))
            .await
            .map_err(|e| BackupError::Io {
                what: "the small-body copy stopped".into(),
                source: std::io::Error::other(e.to_string()),
            })??;
    }
    if let Some(previous) = &dest.previous {
        report.blobs_dropped = count_blob_files(previous).saturating_sub(report.blobs_kept);
    }
    dest.commit()?;
    drop(hold);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Body files in a blob directory (the small-body table and unfinished uploads aside).
fn count_blob_files(root: &Path) -> u64 {
    let Ok(shards) = std::fs::read_dir(root) else { return 0 };
    shards
        .flatten()
        .filter(|shard| shard.file_name() != "tmp" && shard.path().is_dir())
        .filter_map(|shard| std::fs::read_dir(shard.path()).ok())
        .map(|files| files.count() as u64)
        .sum()
}

/// Writes a distributed store's snapshot into a fresh embedded database, ids, sealed tokens,
/// quotas and times included.
async fn import_snapshot(copy: &SqliteMeta, snapshot: crate::meta::Snapshot) -> Result<(), BackupError> {
    for org in &snapshot.orgs {
        copy.import_org(org).await?;
    }
    for user in &snapshot.users {
        copy.import_user(user).await?;
    }
    for member in &snapshot.members {
        copy.set_member(&member.org, member.user, member.permissions).await?;
    }
    for key in &snapshot.s3_keys {
        crate::meta::import_s3_key(copy, key).await?;
    }
    let unlimited = Quota {
        max_bytes: u64::MAX / 4,
        max_files: u64::MAX / 4,
    };
    // Many writes in flight, so that the writer commits them in groups.
    futures::stream::iter(snapshot.objects)
        .map(|(org, object)| async move {
            let copy_of = NewObject {
                key: object.key.clone(),
                size: object.size,
                md5: object.md5.clone(),
                mime: object.mime.clone(),
                preview: object.preview.clone(),
                blob: object.blob.clone(),
                now: object.modified,
                created: Some(object.created),
                etag: object.etag.clone(),
                user_meta: object.user_meta.clone(),
                if_absent: false,
            };
            match copy.put_object(&org, copy_of, unlimited).await? {
                PutOutcome::Stored { .. } => Ok(()),
                PutOutcome::Refused(reason) => Err(BackupError::Refused {
                    org: org.to_string(),
                    key: object.key.to_string(),
                    reason: format!("{reason:?}"),
                }),
            }
        })
        .buffer_unordered(PAGE)
        .try_collect::<()>()
        .await
}

/// What a restore did: a copy onto an embedded store, or a migration into a distributed one.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RestoreReport {
    Embedded(BackupReport),
    Distributed(crate::migrate::Report),
}

/// Puts the backup in `from` back into the store `target` describes, which must be empty: a
/// fresh embedded data directory, or a distributed store without users.
pub async fn restore(
    from: &Path,
    target: &Config,
    progress: &mut dyn FnMut(&str),
) -> Result<RestoreReport, BackupError> {
    let backup = Config {
        data_dir: from.to_owned(),
        ..Config::default()
    };
    if !backup.db_path().exists() {
        return Err(BackupError::NoStore(from.to_owned()));
    }
    let key = server_key_text(&backup)?;
    if let Some(setting) = &target.server_key
        && setting.trim().to_lowercase() != key
    {
        return Err(BackupError::KeyMismatch);
    }
    if !target.shared_stores() {
        return Ok(RestoreReport::Embedded(
            copy_store(&backup, &target.data_dir, true).await?,
        ));
    }
    // A distributed store reads its key from the setting, else from its data directory: put the
    // backup's there when there is none yet.
    if target.server_key.is_none() && !target.key_path().exists() {
        std::fs::create_dir_all(&target.data_dir)
            .map_err(io(format!("cannot create {}", target.data_dir.display())))?;
        crate::crypto::write_private_file(&target.key_path(), format!("{key}\n").as_bytes())
            .map_err(io(format!("cannot write {}", target.key_path().display())))?;
    }
    let source = crate::server::open_data_dir(&backup).await?;
    let source_blobs = crate::server::open_blobs(&backup, false).await?;
    let to = crate::server::open_data_dir(target).await?;
    if !to.meta.list_users().await?.is_empty() {
        return Err(BackupError::TargetHasUsers);
    }
    let to_blobs = crate::server::open_blobs(target, true).await?;
    let report = crate::migrate::migrate(
        crate::migrate::Side {
            meta: &*source.meta,
            blobs: &*source_blobs,
            key: &source.key,
        },
        crate::migrate::Side {
            meta: &*to.meta,
            blobs: &*to_blobs,
            key: &to.key,
        },
        progress,
    )
    .await?;
    Ok(RestoreReport::Distributed(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BlobId;
    use crate::key::Key;

    fn object(key: &str) -> NewObject {
        NewObject {
            key: Key::parse(key).unwrap_or_else(|e| panic!("{e}")),
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
        }
    }

    /// A body overwritten while a backup holds collection off is not offered for deletion until
    /// the hold is released; the hold file lock is what the collector checks.
    #[tokio::test]
    async fn collection_finds_nothing_while_a_backup_holds_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("metadata.sqlite3");
        let meta = SqliteMeta::open(&db).unwrap_or_else(|e| panic!("{e}"));
        let org = meta
            .create_org("o", None, None, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let quota = Quota {
            max_bytes: 1000,
            max_files: 10,
        };
        let first = object("a.txt");
        let old_blob = first.blob.clone();
        meta.put_object(&org, first, quota)
            .await
            .unwrap_or_else(|e| panic!("{e}"));

        let hold = sqlite::hold_collection(&db).unwrap_or_else(|e| panic!("{e}"));
        // Overwritten after the snapshot: its old body awaits collection...
        meta.put_object(&org, object("a.txt"), quota)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // ...but no collection pass sees it while the hold lasts.
        assert_eq!(
            meta.collectable_blobs(i64::MAX / 2, i64::MAX, 100).await.ok(),
            Some(vec![])
        );
        drop(hold);
        assert_eq!(
            meta.collectable_blobs(i64::MAX / 2, i64::MAX, 100).await.ok(),
            Some(vec![old_blob])
        );
    }
}
