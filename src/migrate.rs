//! `stowage migrate`: copies a whole store (organizations, users with their sealed tokens,
//! memberships, objects with their bodies and times) from one pair of backends to another, e.g.
//! from the embedded default to PostgreSQL plus S3, then verifies the copy.
//!
//! Resumable: organizations and users that exist are left alone, objects already present with
//! the same md5 and size are skipped, so an interrupted run is simply run again. A body copied but
//! not yet recorded when a run stops is an orphan that the destination's sweep removes.
//!
//! Pending S3 multipart uploads are not copied (neither their records nor their parts' bodies):
//! clients start them again on the destination.
//!
//! Writes should stop for the run (or at least for a final run): objects written to the source
//! during a run may or may not be copied, and deletions in the source are not carried over; the
//! verification then reports the difference.

use futures::TryStreamExt;
use md5::{Digest, Md5};
use serde::Serialize;

use crate::blob::{BlobError, BlobStore};
use crate::crypto::ServerKey;
use crate::ids::OrgId;
use crate::meta::{KeyKind, MetaError, MetaStore, NewObject, ObjectMeta, Organization, PutOutcome, Quota};

/// Objects read per metadata query.
const PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("the destination refused {org} {key}: {reason}")]
    Refused { org: String, key: String, reason: String },
    #[error(
        "the two stores use different server keys, so the copied tokens would not work: give the \
         destination the source's key (the server_key setting, or its server.key file)"
    )]
    KeyMismatch,
}

/// One side of a migration.
pub struct Side<'a> {
    pub meta: &'a dyn MetaStore,
    pub blobs: &'a dyn BlobStore,
    pub key: &'a ServerKey,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub organizations: usize,
    pub users: usize,
    pub(crate) memberships: usize,
    /// Objects copied in this run.
    pub copied: usize,
    /// Objects that were already in place (an earlier run).
    pub skipped: usize,
    pub bytes_copied: u64,
    /// Objects checked by the verification, and their bytes.
    pub verified_objects: usize,
    pub verified_bytes: u64,
    /// Every difference the verification found; empty when the copy is exact.
    pub differences: Vec<String>,
}

async fn copy_body(
    from: &dyn BlobStore,
    to: &dyn BlobStore,
    object: &ObjectMeta,
) -> Result<crate::ids::BlobId, MigrateError> {
    let mut body = from.open(&object.blob).await?;
    let mut writer = to.create().await?;
    loop {
        match body.try_next().await {
            Ok(Some(chunk)) => {
                if let Err(e) = writer.write(&chunk).await {
                    writer.abort().await;
                    return Err(e.into());
                }
            }
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(BlobError::Io(e).into());
            }
        }
    }
    Ok(writer.finish().await?)
}

async fn md5_of(blobs: &dyn BlobStore, object: &ObjectMeta) -> Result<String, MigrateError> {
    let mut body = blobs.open(&object.blob).await?;
    let mut digest = Md5::new();
    while let Some(chunk) = body.try_next().await.map_err(BlobError::Io)? {
        digest.update(&chunk);
    }
    Ok(hex::encode(digest.finalize()))
}

/// Copies everything from `from` to `to`, then verifies; `progress` hears about each stage.
pub async fn migrate(from: Side<'_>, to: Side<'_>, progress: &mut dyn FnMut(&str)) -> Result<Report, MigrateError> {
    let mut report = Report::default();
    let orgs = copy_identities(&from, &to, &mut report).await?;
    progress(&format!(
        "copied {} organization(s), {} user(s), {} membership(s)",
        report.organizations, report.users, report.memberships
    ));
    copy_objects(&from, &to, &mut report, progress).await?;
    verify_objects(&from, &to, &mut report).await?;
    verify_usage(&from, &to, &orgs, &mut report).await?;
    progress(&format!(
        "verified {} object(s), {} byte(s): {} difference(s)",
        report.verified_objects,
        report.verified_bytes,
        report.differences.len()
    ));
    Ok(report)
}

/// Copies organizations, users (their sealed tokens as they are, once both sides are known to
/// share the server key) and memberships; returns the organizations.
async fn copy_identities(
    from: &Side<'_>,
    to: &Side<'_>,
    report: &mut Report,
) -> Result<Vec<Organization>, MigrateError> {
    let users = from.meta.list_users().await?;
    if let Some(user) = users.first()
        && from.key.unseal(user.id, &user.token).is_ok()
        && to.key.unseal(user.id, &user.token).is_err()
    {
        return Err(MigrateError::KeyMismatch);
    }
    let orgs = from.meta.list_orgs().await?;
    for org in &orgs {
        to.meta.import_org(org).await?;
    }
    report.organizations = orgs.len();
    for user in &users {
        to.meta.import_user(user).await?;
    }
    report.users = users.len();
    for org in &orgs {
        for member in from.meta.members(&org.id).await? {
            to.meta.set_member(&org.id, member.user, member.permissions).await?;
            report.memberships += 1;
        }
    }
    for key in from.meta.list_s3_keys(None).await? {
        crate::meta::import_s3_key(to.meta, &key).await?;
    }
    Ok(orgs)
}

/// Copies every object the destination does not hold yet (same md5 and size), body first.
async fn copy_objects(
    from: &Side<'_>,
    to: &Side<'_>,
    report: &mut Report,
    progress: &mut dyn FnMut(&str),
) -> Result<(), MigrateError> {
    let mut after = None;
    loop {
        let page = from.meta.objects_after(after.clone(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.0.clone(), last.1.key.clone()));
        for (org, object) in page {
            if let KeyKind::File(existing) = to.meta.key_kind(&org, &object.key).await?
                && existing.md5 == object.md5
                && existing.size == object.size
            {
                report.skipped += 1;
                continue;
            }
            copy_object(from, to, &org, &object).await?;
            report.copied += 1;
            report.bytes_copied += object.size;
        }
        progress(&format!(
            "objects: {} copied, {} already in place",
            report.copied, report.skipped
        ));
    }
    Ok(())
}

/// Copies one object: its body, then its row with the original times, outside any quota.
async fn copy_object(from: &Side<'_>, to: &Side<'_>, org: &OrgId, object: &ObjectMeta) -> Result<(), MigrateError> {
    let unlimited = Quota {
        max_bytes: u64::MAX / 4,
        max_files: u64::MAX / 4,
    };
    let blob = copy_body(from.blobs, to.blobs, object).await?;
    let copy = NewObject {
        key: object.key.clone(),
        size: object.size,
        md5: object.md5.clone(),
        mime: object.mime.clone(),
        preview: object.preview.clone(),
        blob: blob.clone(),
        now: object.modified,
        created: Some(object.created),
        etag: object.etag.clone(),
        user_meta: object.user_meta.clone(),
        if_absent: false,
    };
    match to.meta.put_object(org, copy, unlimited).await? {
        PutOutcome::Stored { .. } => Ok(()),
        PutOutcome::Refused(reason) => {
            let _ = to.blobs.delete(&blob).await;
            Err(MigrateError::Refused {
                org: org.to_string(),
                key: object.key.to_string(),
                reason: format!("{reason:?}"),
            })
        }
    }
}

/// Verification: every source object is in the destination with the same metadata, and the
/// destination's body has the recorded md5.
async fn verify_objects(from: &Side<'_>, to: &Side<'_>, report: &mut Report) -> Result<(), MigrateError> {
    let mut after = None;
    loop {
        let page = from.meta.objects_after(after.clone(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.0.clone(), last.1.key.clone()));
        for (org, object) in page {
            report.verified_objects += 1;
            report.verified_bytes += object.size;
            let copy = match to.meta.key_kind(&org, &object.key).await? {
                KeyKind::File(copy) => copy,
                _ => {
                    report
                        .differences
                        .push(format!("{org} {}: missing in the destination", object.key));
                    continue;
                }
            };
            let same = copy.md5 == object.md5
                && copy.size == object.size
                && copy.created == object.created
                && copy.modified == object.modified
                && copy.mime == object.mime;
            if !same {
                report
                    .differences
                    .push(format!("{org} {}: metadata differs", object.key));
                continue;
            }
            let body_md5 = md5_of(to.blobs, &copy).await?;
            if body_md5 != object.md5 {
                report
                    .differences
                    .push(format!("{org} {}: the copied body has md5 {body_md5}", object.key));
            }
        }
    }
    Ok(())
}

/// Verification: each organization's usage figures agree.
async fn verify_usage(
    from: &Side<'_>,
    to: &Side<'_>,
    orgs: &[Organization],
    report: &mut Report,
) -> Result<(), MigrateError> {
    for org in orgs {
        let (source, copy) = (from.meta.usage(&org.id).await?, to.meta.usage(&org.id).await?);
        if source != copy {
            report.differences.push(format!(
                "{}: usage {} bytes / {} files in the source, {} / {} in the destination",
                org.id, source.bytes, source.files, copy.bytes, copy.files
            ));
        }
    }
    Ok(())
}
