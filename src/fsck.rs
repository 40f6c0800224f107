//! `stowage fsck`: checks metadata against blobs and usage figures, and reports every difference.
//!
//! - every object's blob exists and has the object's size (with `--verify-content`, its md5 too);
//! - every blob is named by some object, job, pending multipart part or collection entry (otherwise it is an
//!   orphan);
//! - every folder row, the root's usage figures included, equals what the object rows imply.
//!
//! With `--repair`: folder rows are rewritten from the objects, objects whose body is missing or
//! damaged are removed (their content is gone either way), and orphan blobs older than ten
//! minutes are deleted (younger ones may be uploads about to commit). Safe while the server runs.

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use md5::{Digest, Md5};
use serde::Serialize;

use crate::blob::{BlobError, BlobStore};
use crate::ids::OrgId;
use crate::meta::{FolderFigures, Identities, KeyKind, Maintenance, MetaError, MetaStore, ObjectMeta, Objects};

/// Orphans younger than this are reported but never deleted.
const ORPHAN_REPAIR_AGE: Duration = Duration::from_secs(600);
/// Objects read per metadata query.
const PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// One difference between metadata and storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub(crate) enum Problem {
    MissingBlob {
        org: String,
        key: String,
        blob: String,
    },
    SizeMismatch {
        org: String,
        key: String,
        blob: String,
        expected: u64,
        actual: u64,
    },
    ContentMismatch {
        org: String,
        key: String,
        blob: String,
        expected: String,
        actual: String,
    },
    OrphanBlob {
        blob: String,
        size: u64,
        recent: bool,
    },
    FolderMismatch {
        org: String,
        path: String,
        stored: Option<Figures>,
        implied: Option<Figures>,
    },
    /// A file or directory of the data directory that others than its owner may open.
    LooseMode {
        path: String,
        mode: String,
    },
}

/// Folder figures as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Figures {
    pub(crate) bytes: u64,
    pub(crate) files: u64,
    pub(crate) child_folders: u64,
    pub(crate) child_files: u64,
    pub(crate) modified: i64,
}

impl From<FolderFigures> for Figures {
    fn from(f: FolderFigures) -> Figures {
        Figures {
            bytes: f.bytes,
            files: f.files,
            child_folders: f.child_folders,
            child_files: f.child_files,
            modified: f.modified,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub(crate) organizations: usize,
    pub(crate) objects: usize,
    pub(crate) blobs: usize,
    pub(crate) problems: Vec<Problem>,
    /// How many of the problems `--repair` fixed.
    pub(crate) repaired: usize,
    /// Files in the blob store's `tmp/` (uploads in progress or left by a crash).
    pub unfinished_uploads: usize,
}

impl Report {
    /// Problems left after any repair.
    pub fn unresolved(&self) -> usize {
        self.problems.len() - self.repaired
    }

    pub fn to_text(&self) -> String {
        let mut lines: Vec<String> = self.problems.iter().map(describe).collect();
        lines.push(format!(
            "checked {} organization(s), {} object(s), {} blob(s): {} problem(s), {} repaired, {} unfinished upload(s)",
            self.organizations,
            self.objects,
            self.blobs,
            self.problems.len(),
            self.repaired,
            self.unfinished_uploads
        ));
        lines.join("\n")
    }
}

fn describe(problem: &Problem) -> String {
    match problem {
        Problem::MissingBlob { org, key, blob } => format!("missing body: {org} {key} (blob {blob})"),
        Problem::LooseMode { path, mode } => format!(
            "loose access mode {mode} on {path}: other local users may read it (the server tightens it to 0700/0600 \
             at start; --repair does it now)"
        ),
        Problem::SizeMismatch {
            org,
            key,
            blob,
            expected,
            actual,
        } => {
            format!("size mismatch: {org} {key} (blob {blob}) is {actual} bytes, metadata says {expected}")
        }
        Problem::ContentMismatch {
            org,
            key,
            blob,
            expected,
            actual,
        } => {
            format!("content mismatch: {org} {key} (blob {blob}) has md5 {actual}, metadata says {expected}")
        }
        Problem::OrphanBlob { blob, size, recent } => {
            format!(
                "orphan blob: {blob} ({size} bytes){}",
                if *recent {
                    ", written in the last 10 minutes"
                } else {
                    ""
                }
            )
        }
        Problem::FolderMismatch {
            org,
            path,
            stored,
            implied,
        } => {
            let show = |f: &Option<Figures>| match f {
                Some(f) => format!(
                    "bytes {} files {} folders {} direct files {} modified {}",
                    f.bytes, f.files, f.child_folders, f.child_files, f.modified
                ),
                None => "no folder".into(),
            };
            let name = if path.is_empty() {
                "(root: usage)".to_owned()
            } else {
                path.clone()
            };
            format!(
                "folder mismatch: {org} {name}: stored [{}], objects imply [{}]",
                show(stored),
                show(implied)
            )
        }
    }
}

async fn md5_of(blobs: &dyn BlobStore, blob: &crate::ids::BlobId) -> Result<String, BlobError> {
    let mut stream = blobs.open(blob).await?;
    let mut digest = Md5::new();
    while let Some(chunk) = stream.try_next().await? {
        digest.update(&chunk);
    }
    Ok(hex::encode(digest.finalize()))
}

/// Reports files and directories of the data directory that others may open; with `repair`,
/// tightens them.
pub fn check_modes(data_dir: &std::path::Path, repair: bool, report: &mut Report) -> std::io::Result<()> {
    for (path, mode) in crate::modes::loose(data_dir)? {
        report.problems.push(Problem::LooseMode {
            path: path.display().to_string(),
            mode: format!("{mode:04o}"),
        });
    }
    if repair {
        report.repaired += crate::modes::tighten(data_dir)?;
    }
    Ok(())
}

/// Runs every check; with `repair`, fixes what it can.
pub async fn check(
    meta: &dyn MetaStore,
    blobs: &dyn BlobStore,
    repair: bool,
    verify_content: bool,
) -> Result<Report, FsckError> {
    let mut report = Report::default();
    check_objects(meta, blobs, repair, verify_content, &mut report).await?;
    check_orphans(meta, blobs, repair, &mut report).await?;
    check_folder_rows(meta, repair, &mut report).await?;
    Ok(report)
}

/// Objects against their blobs: each blob exists, has the object's size and (with
/// `verify_content`) its md5. With `repair`, an object whose blob is damaged is deleted.
async fn check_objects<M: Maintenance + Objects + ?Sized>(
    meta: &M,
    blobs: &dyn BlobStore,
    repair: bool,
    verify_content: bool,
    report: &mut Report,
) -> Result<(), FsckError> {
    let mut after = None;
    loop {
        let page = meta.objects_after(after.clone(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.0.clone(), last.1.key.clone()));
        for (org, object) in page {
            report.objects += 1;
            let Some(problem) = blob_problem(blobs, &org, &object, verify_content).await? else {
                continue;
            };
            // Only if the key still names the damaged blob (the server may have replaced it).
            let current = meta.key_kind(&org, &object.key).await?;
            if repair && matches!(&current, KeyKind::File(now) if now.blob == object.blob) {
                meta.delete(&org, &object.key).await?;
                report.repaired += 1;
            }
            report.problems.push(problem);
        }
    }
    Ok(())
}

/// What is wrong with an object's blob, if anything.
async fn blob_problem(
    blobs: &dyn BlobStore,
    org: &OrgId,
    object: &ObjectMeta,
    verify_content: bool,
) -> Result<Option<Problem>, FsckError> {
    let (org, key, blob) = (org.to_string(), object.key.to_string(), object.blob.to_string());
    Ok(match blobs.size(&object.blob).await? {
        None => Some(Problem::MissingBlob { org, key, blob }),
        Some(actual) if actual != object.size => Some(Problem::SizeMismatch {
            org,
            key,
            blob,
            expected: object.size,
            actual,
        }),
        Some(_) if verify_content => {
            let actual = md5_of(blobs, &object.blob).await?;
            (actual != object.md5).then(|| Problem::ContentMismatch {
                org,
                key,
                blob,
                expected: object.md5.clone(),
                actual,
            })
        }
        Some(_) => None,
    })
}

/// Blobs against metadata: every blob is named by something. With `repair`, orphans older than
/// [`ORPHAN_REPAIR_AGE`] are deleted (a younger one may belong to an upload about to commit).
async fn check_orphans(
    meta: &dyn Maintenance,
    blobs: &dyn BlobStore,
    repair: bool,
    report: &mut Report,
) -> Result<(), FsckError> {
    let young = SystemTime::now() - ORPHAN_REPAIR_AGE;
    for shard in blobs.shards() {
        let listed = blobs.list_shard(&shard).await?;
        report.blobs += listed.len();
        let ids: Vec<_> = listed.iter().map(|b| b.id.clone()).collect();
        let orphans = meta.unreferenced_blobs(&ids).await?;
        for blob in listed.into_iter().filter(|b| orphans.contains(&b.id)) {
            let recent = blob.written >= young;
            if repair && !recent {
                blobs.delete(&blob.id).await?;
                report.repaired += 1;
            }
            report.problems.push(Problem::OrphanBlob {
                blob: blob.id.to_string(),
                size: blob.size,
                recent,
            });
        }
    }
    Ok(())
}

/// Folder rows and usage against the objects, organization by organization; with `repair`, the
/// rows that differ are rewritten.
async fn check_folder_rows<M: Identities + Maintenance + ?Sized>(
    meta: &M,
    repair: bool,
    report: &mut Report,
) -> Result<(), FsckError> {
    let orgs = meta.list_orgs().await?;
    report.organizations = orgs.len();
    for org in orgs {
        let differences = meta.check_folders(&org.id, repair).await?;
        if repair {
            report.repaired += differences.len();
        }
        report
            .problems
            .extend(differences.into_iter().map(|d| Problem::FolderMismatch {
                org: OrgId::to_string(&d.org),
                path: d.path.as_str().to_owned(),
                stored: d.stored.map(Figures::from),
                implied: d.implied.map(Figures::from),
            }));
    }
    Ok(())
}
