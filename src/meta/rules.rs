//! The metadata store's decisions, written once for every backend: the quota decision and its
//! sentence, what a put or a delete changes in the folder rows above a key, which rows a listing
//! page reads, the arithmetic on usage figures, and what a folder check compares. The backends
//! keep only their SQL and their transactions and call these functions; nothing here touches a
//! database.
//!
//! Figures are `u64` in the code and `i64` in the databases (both store signed 64-bit integers):
//! [`to_u64`] and [`to_i64`] convert between them, saturating, never wrapping.

use std::collections::BTreeMap;

use crate::ids::OrgId;
use crate::key::{FolderPath, Key};

use super::{Millis, NewObject, Quota, Usage};

/// A stored figure as the code counts it: a negative value (a damaged row) counts as zero.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A figure as a database stores it: beyond `i64::MAX` it stays at `i64::MAX`.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A count of rows (or a listing limit) as a database takes it.
pub(crate) fn count_to_i64(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// --- puts ---------------------------------------------------------------------------------------

/// The object a key names before a put replaces it: what the put needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replaced {
    pub(crate) size: u64,
    pub(crate) created: Millis,
    pub(crate) blob: String,
}

/// What a put adds to its organization's usage and to every folder above its key: signed bytes
/// (an overwrite that shrinks takes bytes off) and files (1 for a new key, 0 for an overwrite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PutDelta {
    pub(crate) bytes: i64,
    pub(crate) files: i64,
}

impl PutDelta {
    /// The change a body of `size` bytes makes, over the object it replaces (if any).
    pub(crate) fn of(size: u64, replaced: Option<&Replaced>) -> PutDelta {
        match replaced {
            Some(old) => PutDelta {
                bytes: to_i64(size).saturating_sub(to_i64(old.size)),
                files: 0,
            },
            None => PutDelta {
                bytes: to_i64(size),
                files: 1,
            },
        }
    }

    /// The change to `folder`'s count of direct child files: only the key's own folder gains one.
    pub(crate) fn child_files_in(&self, folder: &FolderPath, key: &Key) -> i64 {
        if folder.as_str() == key.parent_str() {
            self.files
        } else {
            0
        }
    }
}

/// When a put is stamped: the caller's time, or the later of it and the store's clock at the
/// moment the write holds its lock (so commit order and time order agree). A migrated object
/// (`created` set) keeps its original time.
pub(crate) fn write_time(object: &NewObject, store_clock: Millis) -> Millis {
    if object.created.is_some() {
        object.now
    } else {
        object.now.max(store_clock)
    }
}

/// The creation time a put records: the replaced object's, or the migrated original, or now.
pub(crate) fn creation_time(object: &NewObject, replaced: Option<&Replaced>, now: Millis) -> Millis {
    match replaced {
        Some(old) => old.created,
        None => object.created.unwrap_or(now),
    }
}

/// Why a put would take an organization over its quota; the sentence is what the client reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error("File quota exceeded: the organization holds {used} of {limit} files")]
    Files { used: u64, limit: u64 },
    #[error(
        "Storage quota exceeded: the organization uses {used} of {limit} bytes and this upload would add {added} bytes"
    )]
    Bytes { used: u64, limit: u64, added: u64 },
}

/// The quota decision: a put that adds a file beyond `max_files`, or bytes beyond `max_bytes`, is
/// refused (files first); reaching a limit exactly is allowed, and a put that adds nothing (an
/// overwrite that does not grow) is never refused.
pub(crate) fn check_quota(usage: Usage, quota: Quota, delta: PutDelta) -> Result<(), QuotaExceeded> {
    let added_files = to_u64(delta.files);
    if added_files > 0 && usage.files.saturating_add(added_files) > quota.max_files {
        return Err(QuotaExceeded::Files {
            used: usage.files,
            limit: quota.max_files,
        });
    }
    let added_bytes = to_u64(delta.bytes);
    if added_bytes > 0 && usage.bytes.saturating_add(added_bytes) > quota.max_bytes {
        return Err(QuotaExceeded::Bytes {
            used: usage.bytes,
            limit: quota.max_bytes,
            added: added_bytes,
        });
    }
    Ok(())
}

/// A folder row a put creates (its bytes, files and time are the put's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewFolder<'a> {
    pub(crate) path: &'a FolderPath,
    pub(crate) parent: Option<FolderPath>,
    pub(crate) child_folders: i64,
    pub(crate) child_files: i64,
}

/// The folder rows a put creates, and the existing folders that gain a child folder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FolderGrowth<'a> {
    pub(crate) created: Vec<NewFolder<'a>>,
    pub(crate) gaining_child: Vec<FolderPath>,
}

/// Given the ancestors of `key` that had no row (root first), the rows to create: each counts the
/// new folders directly under it and, for the key's own folder, the new file; an existing folder
/// right above a new one gains a child folder.
pub(crate) fn folder_growth<'a>(key: &Key, missing: &[&'a FolderPath], delta: PutDelta) -> FolderGrowth<'a> {
    let parents: Vec<Option<FolderPath>> = missing.iter().map(|f| f.parent()).collect();
    let mut growth = FolderGrowth::default();
    for (folder, parent) in missing.iter().zip(&parents) {
        let children = parents.iter().filter(|p| p.as_ref() == Some(*folder)).count();
        growth.created.push(NewFolder {
            path: folder,
            parent: parent.clone(),
            child_folders: count_to_i64(children),
            child_files: delta.child_files_in(folder, key),
        });
        if let Some(parent) = parent
            && !missing.contains(&parent)
        {
            growth.gaining_child.push(parent.clone());
        }
    }
    growth
}

// --- deletes ------------------------------------------------------------------------------------

/// What a delete takes off the folder rows above it, walked from the deleted entry's folder up to
/// the root: `bytes` and `files` off every one; one child file (a deleted file) or one child
/// folder (a deleted folder) off the first; and one child folder off any folder whose child was
/// removed because the delete left it empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Detach {
    pub(crate) bytes: i64,
    pub(crate) files: i64,
    child_files: i64,
    child_folders: i64,
}

/// What one folder row loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DetachStep {
    pub(crate) bytes: i64,
    pub(crate) files: i64,
    pub(crate) child_files: i64,
    pub(crate) child_folders: i64,
}

impl Detach {
    /// A deleted file of `size` bytes.
    pub(crate) fn file(size: u64) -> Detach {
        Detach {
            bytes: to_i64(size),
            files: 1,
            child_files: 1,
            child_folders: 0,
        }
    }

    /// A deleted folder that held `bytes` in `files` files.
    pub(crate) fn folder(bytes: u64, files: u64) -> Detach {
        Detach {
            bytes: to_i64(bytes),
            files: to_i64(files),
            child_files: 0,
            child_folders: 1,
        }
    }

    /// What the next folder up loses (call once per folder, from the deleted entry's up).
    pub(crate) fn step(&mut self) -> DetachStep {
        let step = DetachStep {
            bytes: self.bytes,
            files: self.files,
            child_files: self.child_files,
            child_folders: self.child_folders,
        };
        self.child_files = 0;
        self.child_folders = 0;
        step
    }

    /// Whether `folder`, left with `remaining_files`, goes away (the root never does); if so, its
    /// parent loses it as a child folder at the next step.
    pub(crate) fn removes(&mut self, folder: &FolderPath, remaining_files: i64) -> bool {
        let removed = remaining_files <= 0 && !folder.is_root();
        if removed {
            self.child_folders = 1;
        }
        removed
    }
}

// --- listings -----------------------------------------------------------------------------------

/// Which rows one page of a folder listing reads: child folders first (by name), then files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PagePlan {
    /// Direct children in all (the listing's `total`).
    pub(crate) total: u64,
    offset: u64,
    page_size: u64,
    child_folders: u64,
}

/// A `LIMIT`/`OFFSET` window, as the databases take them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) limit: i64,
    pub(crate) offset: i64,
}

impl PagePlan {
    /// Page `page` (from 0) of `page_size` entries of a folder with these direct children.
    pub(crate) fn new(child_folders: u64, child_files: u64, page: u64, page_size: u64) -> PagePlan {
        PagePlan {
            total: child_folders.saturating_add(child_files),
            offset: page.saturating_mul(page_size),
            page_size,
            child_folders,
        }
    }

    /// The window of child folders to read, if the page holds any.
    pub(crate) fn folders(&self) -> Option<Window> {
        (self.offset < self.total && self.offset < self.child_folders).then(|| Window {
            limit: to_i64(self.page_size),
            offset: to_i64(self.offset),
        })
    }

    /// The window of files to read once `folders_read` child folders filled part of the page.
    pub(crate) fn files(&self, folders_read: usize) -> Option<Window> {
        let room = self
            .page_size
            .saturating_sub(u64::try_from(folders_read).unwrap_or(u64::MAX));
        (self.offset < self.total && room > 0).then(|| Window {
            limit: to_i64(room),
            offset: to_i64(self.offset.saturating_sub(self.child_folders)),
        })
    }
}

// --- download jobs ------------------------------------------------------------------------------

/// How many of an organization's `live` unexpired jobs expire early (the oldest first) so that,
/// with the job about to be recorded, it holds at most `max_live` (at least one: the new job).
/// A reader that keeps asking for files never runs out of jobs; the oldest links stop instead.
pub(crate) fn jobs_to_expire(live: u64, max_live: u64) -> i64 {
    to_i64(live.saturating_add(1).saturating_sub(max_live.max(1)))
}

// --- checking (fsck) ----------------------------------------------------------------------------

/// The figures a folder row keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderFigures {
    pub(crate) bytes: u64,
    pub(crate) files: u64,
    pub(crate) child_folders: u64,
    pub(crate) child_files: u64,
    pub(crate) modified: Millis,
}

/// Folder rows by path (the root is [`FolderPath::root`]).
pub(crate) type FolderRows = BTreeMap<FolderPath, FolderFigures>;

/// Folder rows as a set of objects implies them, accumulated object by object: the reference that
/// fsck compares each backend's incrementally kept rows with.
pub(crate) struct ImpliedFolders(FolderRows);

impl Default for ImpliedFolders {
    fn default() -> ImpliedFolders {
        ImpliedFolders(BTreeMap::from([(FolderPath::root(), FolderFigures::default())]))
    }
}

impl ImpliedFolders {
    /// Counts one object in every folder above it.
    pub(crate) fn add(&mut self, key: &Key, size: u64, modified: Millis) {
        let parent = key.parent_str();
        for folder in key.ancestors() {
            let is_parent = folder.as_str() == parent;
            let entry = self.0.entry(folder).or_default();
            entry.bytes = entry.bytes.saturating_add(size);
            entry.files = entry.files.saturating_add(1);
            entry.modified = entry.modified.max(modified);
            if is_parent {
                entry.child_files = entry.child_files.saturating_add(1);
            }
        }
    }

    /// The folders by path, with their direct child folders counted.
    pub(crate) fn finish(mut self) -> FolderRows {
        let parents: Vec<FolderPath> = self.0.keys().filter_map(FolderPath::parent).collect();
        for parent in parents {
            if let Some(entry) = self.0.get_mut(&parent) {
                entry.child_folders = entry.child_folders.saturating_add(1);
            }
        }
        self.0
    }
}

/// A folder whose stored row differs from what the object rows imply (`None`: no row / no folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderDifference {
    pub(crate) org: OrgId,
    pub(crate) path: FolderPath,
    pub(crate) stored: Option<FolderFigures>,
    pub(crate) implied: Option<FolderFigures>,
}

/// The folders whose stored row differs from the implied one. An empty root's modification time
/// is its organization's creation time, which no object implies, so it is not compared.
pub(crate) fn compare_folders(org: &OrgId, implied: &FolderRows, stored: &FolderRows) -> Vec<FolderDifference> {
    let mut paths: Vec<&FolderPath> = implied.keys().chain(stored.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut out = Vec::new();
    for path in paths {
        let (mut want, have) = (implied.get(path).copied(), stored.get(path).copied());
        if let (true, Some(w), Some(h)) = (path.is_root(), want.as_mut(), have)
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

#[cfg(test)]
mod tests {

    #[test]
    fn the_oldest_jobs_expire_to_make_room_for_a_new_one() {
        assert_eq!(jobs_to_expire(0, 500), 0);
        assert_eq!(jobs_to_expire(498, 500), 0);
        assert_eq!(jobs_to_expire(499, 500), 0, "the new job is the 500th");
        assert_eq!(jobs_to_expire(500, 500), 1);
        assert_eq!(jobs_to_expire(900, 500), 401, "a lower limit than before trims at once");
        assert_eq!(jobs_to_expire(3, 0), 3, "a limit of 0 still leaves the new job");
        assert_eq!(jobs_to_expire(u64::MAX, 1), i64::MAX, "saturates");
    }

    use super::*;
    use crate::ids::BlobId;

    fn key(raw: &str) -> Key {
        Key::parse(raw).unwrap()
    }

    fn folder(raw: &str) -> FolderPath {
        FolderPath::parse(raw).unwrap()
    }

    fn replaced(size: u64) -> Replaced {
        Replaced {
            size,
            created: 5,
            blob: "old".into(),
        }
    }

    fn new_object(created: Option<Millis>, now: Millis) -> NewObject {
        NewObject {
            key: key("a/b"),
            size: 1,
            md5: String::new(),
            mime: String::new(),
            preview: None,
            blob: BlobId::generate(),
            now,
            created,
        }
    }

    #[test]
    fn conversions_saturate_instead_of_wrapping() {
        assert_eq!(to_u64(-3), 0);
        assert_eq!(to_u64(i64::MAX), i64::MAX as u64);
        assert_eq!(to_i64(u64::MAX), i64::MAX);
        assert_eq!(to_i64(7), 7);
        assert_eq!(count_to_i64(usize::MAX), i64::MAX);
    }

    #[test]
    fn a_put_adds_a_file_or_the_growth_of_an_overwrite() {
        assert_eq!(PutDelta::of(10, None), PutDelta { bytes: 10, files: 1 });
        assert_eq!(PutDelta::of(4, Some(&replaced(10))), PutDelta { bytes: -6, files: 0 });
        assert_eq!(
            PutDelta::of(u64::MAX, Some(&replaced(0))),
            PutDelta {
                bytes: i64::MAX,
                files: 0
            }
        );
        let delta = PutDelta::of(1, None);
        assert_eq!(delta.child_files_in(&folder("a/b"), &key("a/b/c")), 1);
        assert_eq!(delta.child_files_in(&folder("a"), &key("a/b/c")), 0);
        assert_eq!(delta.child_files_in(&FolderPath::root(), &key("c")), 1);
    }

    #[test]
    fn times_follow_the_store_clock_except_for_migrated_objects() {
        assert_eq!(write_time(&new_object(None, 10), 20), 20);
        assert_eq!(write_time(&new_object(None, 30), 20), 30);
        assert_eq!(write_time(&new_object(Some(1), 10), 20), 10);
        assert_eq!(creation_time(&new_object(Some(1), 10), None, 20), 1);
        assert_eq!(creation_time(&new_object(None, 10), None, 20), 20);
        assert_eq!(creation_time(&new_object(Some(1), 10), Some(&replaced(1)), 20), 5);
    }

    #[test]
    fn the_quota_refuses_files_first_then_bytes_and_allows_reaching_a_limit() {
        let quota = Quota {
            max_bytes: 100,
            max_files: 2,
        };
        let usage = Usage { bytes: 90, files: 1 };
        assert_eq!(check_quota(usage, quota, PutDelta { bytes: 10, files: 1 }), Ok(()));
        let over = check_quota(usage, quota, PutDelta { bytes: 11, files: 1 }).unwrap_err();
        assert_eq!(
            over,
            QuotaExceeded::Bytes {
                used: 90,
                limit: 100,
                added: 11
            }
        );
        assert_eq!(
            over.to_string(),
            "Storage quota exceeded: the organization uses 90 of 100 bytes and this upload would add 11 bytes"
        );
        let full = Usage { bytes: 200, files: 2 };
        let refused = check_quota(full, quota, PutDelta { bytes: 1, files: 1 }).unwrap_err();
        assert_eq!(refused, QuotaExceeded::Files { used: 2, limit: 2 });
        assert_eq!(
            refused.to_string(),
            "File quota exceeded: the organization holds 2 of 2 files"
        );
        // Overwrites that do not grow pass even over the quota; saturating sums never wrap.
        assert_eq!(check_quota(full, quota, PutDelta { bytes: -5, files: 0 }), Ok(()));
        let huge = Usage {
            bytes: u64::MAX,
            files: u64::MAX,
        };
        assert!(matches!(
            check_quota(huge, quota, PutDelta { bytes: 0, files: 1 }),
            Err(QuotaExceeded::Files { .. })
        ));
    }

    #[test]
    fn a_put_creates_the_missing_folders_and_counts_them_in_their_parents() {
        let k = key("a/b/c/file");
        let ancestors = k.ancestors();
        let missing: Vec<&FolderPath> = ancestors[2..].iter().collect();
        let growth = folder_growth(&k, &missing, PutDelta { bytes: 3, files: 1 });
        let rows: Vec<_> = growth
            .created
            .iter()
            .map(|f| {
                (
                    f.path.as_str(),
                    f.parent.as_ref().map(FolderPath::as_str),
                    f.child_folders,
                    f.child_files,
                )
            })
            .collect();
        assert_eq!(rows, [("a/b", Some("a"), 1, 0), ("a/b/c", Some("a/b"), 0, 1)]);
        assert_eq!(growth.gaining_child, [folder("a")]);
        assert_eq!(
            folder_growth(&k, &[], PutDelta { bytes: 3, files: 1 }),
            FolderGrowth::default()
        );
    }

    #[test]
    fn a_delete_takes_its_figures_off_every_folder_and_removes_emptied_ones() {
        let mut detach = Detach::file(7);
        let first = detach.step();
        assert_eq!(
            first,
            DetachStep {
                bytes: 7,
                files: 1,
                child_files: 1,
                child_folders: 0
            }
        );
        assert!(detach.removes(&folder("a/b"), 0));
        assert_eq!(detach.step().child_folders, 1, "the parent loses the emptied folder");
        assert!(!detach.removes(&folder("a"), 2));
        assert_eq!(detach.step().child_folders, 0);
        assert!(!detach.removes(&FolderPath::root(), 0), "the root stays");
        let mut detach = Detach::folder(10, 2);
        assert_eq!(
            detach.step(),
            DetachStep {
                bytes: 10,
                files: 2,
                child_files: 0,
                child_folders: 1
            }
        );
    }

    #[test]
    fn a_page_reads_folders_then_files() {
        // 3 folders and 4 files, pages of 2.
        let plan = |page| PagePlan::new(3, 4, page, 2);
        assert_eq!(plan(0).total, 7);
        assert_eq!(plan(0).folders(), Some(Window { limit: 2, offset: 0 }));
        assert_eq!(plan(0).files(2), None);
        assert_eq!(plan(1).folders(), Some(Window { limit: 2, offset: 2 }));
        assert_eq!(plan(1).files(1), Some(Window { limit: 1, offset: 0 }));
        assert_eq!(plan(2).folders(), None);
        assert_eq!(plan(2).files(0), Some(Window { limit: 2, offset: 1 }));
        assert_eq!((plan(4).folders(), plan(4).files(0)), (None, None), "past the end");
        let far = PagePlan::new(1, 1, u64::MAX, u64::MAX);
        assert_eq!((far.folders(), far.files(0)), (None, None));
    }

    #[test]
    fn implied_folders_count_every_object_in_every_folder_above_it() {
        let mut implied = ImpliedFolders::default();
        implied.add(&key("a/b/x"), 3, 10);
        implied.add(&key("a/y"), 4, 20);
        implied.add(&key("z"), 5, 5);
        let rows = implied.finish();
        let figures = |path: &str| rows[&folder(path)];
        assert_eq!(
            figures(""),
            FolderFigures {
                bytes: 12,
                files: 3,
                child_folders: 1,
                child_files: 1,
                modified: 20
            }
        );
        assert_eq!(
            figures("a"),
            FolderFigures {
                bytes: 7,
                files: 2,
                child_folders: 1,
                child_files: 1,
                modified: 20
            }
        );
        assert_eq!(figures("a/b").child_files, 1);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn folder_differences_name_each_folder_once_and_skip_an_empty_roots_time() {
        let org = OrgId::generate();
        let implied = ImpliedFolders::default().finish();
        let mut stored = implied.clone();
        stored.get_mut(&FolderPath::root()).unwrap().modified = 99;
        assert!(compare_folders(&org, &implied, &stored).is_empty());
        stored.insert(folder("stray"), FolderFigures::default());
        let differences = compare_folders(&org, &implied, &stored);
        assert_eq!(differences.len(), 1);
        assert_eq!(differences[0].path, folder("stray"));
        assert_eq!(differences[0].implied, None);
    }
}
