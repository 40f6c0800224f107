//! Uploads whose metadata commit has an unknown outcome: `put_object` failed (the database went
//! away during the transaction, perhaps after it received the commit), so the body may or may not
//! be named by an object. The blob is kept at first; once the outcome has settled, the collector
//! asks the metadata store whether anything names it and deletes it if nothing does. Without this
//! every upload cut off by a database outage would stay behind as an orphan until the hourly
//! sweep (and `stowage fsck` would report it until then).

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Service, ServiceResult};
use crate::ids::BlobId;

/// How long after the failure a blob is first checked. A commit the database had received when
/// the connection broke finishes within moments (and a database restart ends every old session
/// before the store answers again); this leaves ample room for a slow one.
pub(crate) const SETTLE_AFTER: Duration = Duration::from_secs(30);
/// Blobs remembered at most; beyond that, the orphan sweep finds the rest (it is a backstop for
/// a database that stays away while uploads keep arriving).
const CAPACITY: usize = 100_000;
/// Blobs checked per collection pass.
const BATCH: usize = 1000;

/// The blobs of uploads with an unknown outcome, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Unsettled {
    blobs: Mutex<VecDeque<(Instant, BlobId)>>,
}

impl Unsettled {
    /// Remembers `blob`, written by an upload whose commit had an unknown outcome at `at`.
    pub(crate) fn add(&self, blob: BlobId, at: Instant) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        if blobs.len() >= CAPACITY {
            tracing::warn!(%blob, "too many uploads with an unknown outcome; the orphan sweep will check this one");
            return;
        }
        blobs.push_back((at, blob));
    }

    /// Up to [`BATCH`] blobs whose failure is at least `age` before `now`.
    fn due(&self, now: Instant, age: Duration) -> Vec<BlobId> {
        let blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        blobs
            .iter()
            .take_while(|(at, _)| now.saturating_duration_since(*at) >= age)
            .take(BATCH)
            .map(|(_, blob)| blob.clone())
            .collect()
    }

    /// Forgets `settled`.
    fn forget(&self, settled: &HashSet<BlobId>) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        blobs.retain(|(_, blob)| !settled.contains(blob));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Service {
    /// Checks the blobs of uploads with an unknown outcome that failed at least `age` ago: a
    /// blob an object (or a collection entry) names is forgotten, one nothing names is deleted.
    /// A blob that cannot be deleted, or a metadata store that does not answer, leaves the blobs
    /// for the next pass. Returns how many blobs were deleted.
    pub(crate) async fn settle_uploads(&self, age: Duration) -> ServiceResult<usize> {
        let due = self.unsettled.due(Instant::now(), age);
        if due.is_empty() {
            return Ok(0);
        }
        let orphans: HashSet<BlobId> = self.meta.unreferenced_blobs(&due).await?.into_iter().collect();
        let mut settled: HashSet<BlobId> = due.into_iter().filter(|b| !orphans.contains(b)).collect();
        let mut deleted = 0;
        for blob in orphans {
            match self.blobs.delete(&blob).await {
                Ok(()) => {
                    tracing::info!(%blob, "removed the body of an upload whose commit did not happen");
                    settled.insert(blob);
                    deleted += 1;
                }
                Err(e) => tracing::warn!(%blob, error = %e, "cannot delete an unreferenced blob; will retry"),
            }
        }
        self.unsettled.forget(&settled);
        Ok(deleted)
    }

    /// Blobs of uploads with an unknown outcome not yet settled.
    #[cfg(test)]
    fn unsettled_uploads(&self) -> usize {
        self.unsettled.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::blob::BlobStore;
    use crate::blob::local::LocalBlobs;
    use crate::config::Config;
    use crate::crypto::ServerKey;
    use crate::key::Key;
    use crate::meta::sqlite::SqliteMeta;
    use crate::meta::{Identities, NewObject, Objects, Quota};
    use crate::service::Limits;

    fn ok<T, E: std::fmt::Display>(result: Result<T, E>) -> T {
        result.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_blob_is_due_once_it_is_old_enough_and_forgotten_once_settled() {
        let unsettled = Unsettled::default();
        let start = Instant::now();
        let (old, young) = (BlobId::generate(), BlobId::generate());
        unsettled.add(old.clone(), start);
        unsettled.add(young.clone(), start + Duration::from_secs(20));
        let age = Duration::from_secs(30);
        assert_eq!(
            unsettled.due(start + Duration::from_secs(29), age),
            Vec::<BlobId>::new()
        );
        assert_eq!(unsettled.due(start + Duration::from_secs(30), age), vec![old.clone()]);
        assert_eq!(
            unsettled.due(start + Duration::from_secs(50), age),
            vec![old.clone(), young.clone()]
        );
        unsettled.forget(&HashSet::from([old]));
        assert_eq!(unsettled.due(start + Duration::from_secs(50), age), vec![young]);
        assert_eq!(unsettled.len(), 1);
    }

    /// After a commit with an unknown outcome, the blob that no object names is deleted and the
    /// one an object names (the commit happened) is kept; both are forgotten.
    #[tokio::test]
    async fn settling_deletes_only_the_blob_nothing_names() {
        let dir = ok(tempfile::tempdir());
        let meta = Arc::new(ok(SqliteMeta::open(&dir.path().join("metadata.sqlite3"))));
        let blobs = Arc::new(ok(LocalBlobs::open(&dir.path().join("blobs"))));
        let key = ok(ServerKey::load_or_create(&dir.path().join("server.key")));
        let service = Service::new(
            meta.clone(),
            blobs.clone(),
            Limits::from_config(&Config::default()),
            key,
        );

        let mut stored = Vec::new();
        for body in [&b"committed"[..], b"rolled back"] {
            let mut writer = ok(blobs.create().await);
            ok(writer.write(body).await);
            stored.push(ok(writer.finish().await));
        }
        let (committed, rolled_back) = (stored[0].clone(), stored[1].clone());
        let org = ok(meta.create_org("o", None, None, 1).await);
        let object = NewObject {
            key: ok(Key::parse("a.txt")),
            size: 9,
            md5: String::new(),
            mime: "text/plain".into(),
            preview: None,
            blob: committed.clone(),
            now: 1,
            created: None,
            etag: None,
            user_meta: None,
            if_absent: false,
        };
        let quota = Quota {
            max_bytes: 1000,
            max_files: 10,
        };
        ok(meta.put_object(&org, object, quota).await);
        service.unsettled.add(committed.clone(), Instant::now());
        service.unsettled.add(rolled_back.clone(), Instant::now());

        // Too young: nothing is checked yet.
        assert_eq!(ok(service.settle_uploads(SETTLE_AFTER).await), 0);
        assert_eq!(service.unsettled_uploads(), 2);

        assert_eq!(ok(service.settle_uploads(Duration::ZERO).await), 1);
        assert_eq!(service.unsettled_uploads(), 0);
        // The committed body is still there (`ok` fails the test otherwise).
        ok(blobs.open(&committed).await.map(|_| ()));
        assert!(matches!(
            blobs.open(&rolled_back).await.map(|_| ()),
            Err(crate::blob::BlobError::NotFound(_))
        ));
    }
}
