//! The metadata store's decisions, written once for every backend: the quota decision and its
//! sentence (pending multipart parts included), what a put or a delete changes in the folder rows
//! above a key, which rows a listing page reads, the byte order of S3 listings, the arithmetic on
//! usage figures, and what a folder check compares. The backends
//! keep only their SQL and their transactions and call these functions; nothing here touches a
//! database.
//!
//! Figures are `u64` in the code and `i64` in the databases (both store signed 64-bit integers):
//! [`to_u64`] and [`to_i64`] convert between them, saturating, never wrapping.

use std::collections::BTreeMap;

use crate::ids::OrgId;
use crate::key::{FolderPath, Key};

use super::{Child, Millis, NewObject, ObjectMeta, PutRefusal, Quota, Usage};

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

/// A put that asked to store only when the key is free ([`NewObject::if_absent`]) is refused
/// when a file has the key (decided where the write holds its lock, so two such puts racing for
/// one key cannot both store).
pub(crate) fn refuse_existing(object: &NewObject, replaced: Option<&Replaced>) -> Option<PutRefusal> {
    (object.if_absent && replaced.is_some()).then_some(PutRefusal::Exists)
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

/// The usage a byte-quota decision counts: the stored bytes plus the bytes of the organization's
/// pending multipart parts (`pending`), less `released` (the parts of the upload that the write
/// completes, which it turns into the object it puts). Files are the stored files.
pub(crate) fn counted_usage(stored: Usage, pending: u64, released: u64) -> Usage {
    Usage {
        bytes: stored.bytes.saturating_add(pending.saturating_sub(released)),
        files: stored.files,
    }
}

/// The quota decisions of a batch of puts to one organization, made in order: each put is
/// checked against the usage as the puts accepted before it in the batch left it, and a refused
/// put changes nothing (so it never fails the others).
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuotaRun {
    usage: Usage,
}

impl QuotaRun {
    /// Starts from the usage a quota decision counts (see [`counted_usage`]).
    pub(crate) fn new(usage: Usage) -> QuotaRun {
        QuotaRun { usage }
    }

    /// Decides one put; an accepted put's delta is added to the running usage.
    pub(crate) fn decide(&mut self, quota: Quota, delta: PutDelta) -> Result<(), QuotaExceeded> {
        check_quota(self.usage, quota, delta)?;
        self.usage = Usage {
            bytes: add_signed(self.usage.bytes, delta.bytes),
            files: add_signed(self.usage.files, delta.files),
        };
        Ok(())
    }
}

/// `value + delta`, saturating at 0 and `u64::MAX`.
fn add_signed(value: u64, delta: i64) -> u64 {
    if delta >= 0 {
        value.saturating_add(delta.unsigned_abs())
    } else {
        value.saturating_sub(delta.unsigned_abs())
    }
}

/// Whether a put of `b` can share a batch's checks with an earlier put of `a`: the two keys must
/// not be the same, nor one a folder above the other, since then the earlier put would change what
/// the later one's checks read (the object it replaces, an ancestor that is a file, a key that is
/// a folder).
pub(crate) fn independent_puts(a: &Key, b: &Key) -> bool {
    let (a, b) = (a.as_str(), b.as_str());
    let below = |inner: &str, outer: &str| {
        inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
    };
    a != b && !below(a, b) && !below(b, a)
}

/// What a batch of puts adds to one existing folder row: bytes, files, direct child files, and the
/// newest modification time among the puts below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FolderChange {
    pub(crate) path: FolderPath,
    pub(crate) bytes: i64,
    pub(crate) files: i64,
    pub(crate) child_files: i64,
    pub(crate) modified: Millis,
}

/// The folder changes of several puts whose folders all exist, summed per folder (one row each, in
/// path order): what applying [`PutDelta`]s one by one to every folder above each key would do.
pub(crate) fn sum_folder_changes<'a>(puts: impl IntoIterator<Item = (&'a Key, PutDelta, Millis)>) -> Vec<FolderChange> {
    let mut sums: BTreeMap<FolderPath, FolderChange> = BTreeMap::new();
    for (key, delta, now) in puts {
        for folder in key.ancestors() {
            let child_files = delta.child_files_in(&folder, key);
            let change = sums.entry(folder.clone()).or_insert_with(|| FolderChange {
                path: folder,
                bytes: 0,
                files: 0,
                child_files: 0,
                modified: now,
            });
            change.bytes = change.bytes.saturating_add(delta.bytes);
            change.files = change.files.saturating_add(delta.files);
            change.child_files = change.child_files.saturating_add(child_files);
            change.modified = change.modified.max(now);
        }
    }
    sums.into_values().collect()
}

/// What storing a part of `size` bytes adds to the pending bytes, over the part with that number
/// it replaces (of `replaced` bytes): never a file.
pub(crate) fn part_delta(size: u64, replaced: Option<u64>) -> PutDelta {
    PutDelta {
        bytes: to_i64(size).saturating_sub(to_i64(replaced.unwrap_or(0))),
        files: 0,
    }
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

// --- listing marks -------------------------------------------------------------------------------
//
// A page far into a big folder used to be found by OFFSET: the database stepped over every entry
// before it, so page N cost N pages. [`ListingMarks`] remembers, per folder and kind of child,
// the name at every `stride`-th rank (ranks `stride`, `2 * stride`, ...), and a window then reads
// `name >= mark ORDER BY name LIMIT limit OFFSET (offset - rank of mark)`: it steps over fewer
// than `stride` entries wherever it starts.
//
// Why a mark is never stale: marks are kept for one `children_version` of the folder row, a value
// taken from a store-wide counter (a sequence) every time the set of the folder's children changes
// (a new file or child folder, a deleted one) and whenever the row is written anew (so a folder
// deleted and made again never shows an old version). A reader reads the version in the same
// snapshot as the rows; equal versions of one folder mean the same names in the same order, so
// marks found at a version hold for every snapshot that shows it, on every server sharing the
// database. Overwrites change sizes and times, not names: they keep the version, and the entries'
// figures are read from the rows anyway. The marks are bounded in memory (`budget` bytes, least
// recently used folders dropped first).

/// Which children of a folder a listing window reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ChildKind {
    Folders,
    Files,
}

/// The names at every `stride`-th rank of the children of folders (see the section comment).
#[derive(Debug)]
pub(crate) struct ListingMarks {
    stride: u64,
    budget: usize,
    state: std::sync::Mutex<MarksState>,
}

#[derive(Debug, Default)]
struct MarksState {
    entries: std::collections::HashMap<MarksKey, Marks>,
    bytes: usize,
    tick: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MarksKey {
    org: String,
    folder: String,
    kind: ChildKind,
}

#[derive(Debug)]
struct Marks {
    version: i64,
    /// `names[i]` is the name at rank `(i + 1) * stride`.
    names: Vec<String>,
    bytes: usize,
    used: u64,
}

/// A window read by name from a mark: `name >= from ORDER BY name LIMIT limit OFFSET skip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keyset {
    pub(crate) from: String,
    pub(crate) limit: i64,
    pub(crate) skip: i64,
}

/// The marks a window needs before it can be read: `marks` times, the name `stride` entries
/// after the last one found (`from` first), i.e. the names `stride`, `2 * stride`, ... entries
/// after `from`, as far as there are any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MarkScan {
    pub(crate) from: String,
    pub(crate) marks: i64,
    pub(crate) stride: i64,
    key: MarksKey,
    version: i64,
    /// How many marks precede `from` (`from` is at rank `known * stride`).
    known: u64,
    offset: u64,
    limit: i64,
}

/// How a window is read: at once, or after a scan for the marks it lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seek {
    Read(Keyset),
    Scan(MarkScan),
}

/// Bytes a stored name costs (its text and its `String`).
fn name_cost(name: &str) -> usize {
    name.len() + std::mem::size_of::<String>()
}

/// A server's marks: a window steps over fewer than this many entries before its first one.
const MARK_STRIDE: u64 = 512;
/// A server's marks: at most about this many bytes (a folder of 1,000,000 files takes ~90 KiB).
const MARKS_BUDGET: usize = 8 << 20;

impl ListingMarks {
    /// A server's marks ([`MARK_STRIDE`], [`MARKS_BUDGET`]).
    pub(crate) fn standard() -> ListingMarks {
        ListingMarks::new(MARK_STRIDE, MARKS_BUDGET)
    }

    /// Marks every `stride` names (at least 1), at most about `budget` bytes of them.
    pub(crate) fn new(stride: u64, budget: usize) -> ListingMarks {
        ListingMarks {
            stride: stride.max(1),
            budget,
            state: std::sync::Mutex::new(MarksState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MarksState> {
        // The state is whole after every operation: a panic elsewhere leaves nothing half done.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How to read `window` of the `kind` children of `folder` at children version `version`.
    pub(crate) fn seek(&self, org: &OrgId, folder: &FolderPath, kind: ChildKind, version: i64, window: Window) -> Seek {
        let offset = to_u64(window.offset);
        if offset < self.stride {
            return Seek::Read(Keyset {
                from: String::new(),
                limit: window.limit,
                skip: window.offset,
            });
        }
        let key = MarksKey {
            org: org.as_str().to_owned(),
            folder: folder.as_str().to_owned(),
            kind,
        };
        let wanted = offset / self.stride;
        let (known, from) = {
            let mut state = self.state();
            state.tick += 1;
            let tick = state.tick;
            match state.entries.get_mut(&key) {
                Some(marks) if marks.version == version && !marks.names.is_empty() => {
                    marks.used = tick;
                    let known = wanted.min(u64::try_from(marks.names.len()).unwrap_or(u64::MAX));
                    // Mark `known` (from 1) is `names[known - 1]`; no mark is the empty name.
                    let from = usize::try_from(known)
                        .ok()
                        .and_then(|known| known.checked_sub(1))
                        .and_then(|index| marks.names.get(index))
                        .cloned()
                        .unwrap_or_default();
                    (known, from)
                }
                _ => (0, String::new()),
            }
        };
        let rank = known.saturating_mul(self.stride);
        if known == wanted {
            return Seek::Read(Keyset {
                from,
                limit: window.limit,
                skip: to_i64(offset - rank),
            });
        }
        Seek::Scan(MarkScan {
            from,
            marks: to_i64(wanted - known),
            stride: to_i64(self.stride),
            key,
            version,
            known,
            offset,
            limit: window.limit,
        })
    }

    /// Keeps the marks `scan` found (`names`, in order) and says how to read its window.
    pub(crate) fn scanned(&self, scan: MarkScan, names: Vec<String>) -> Keyset {
        let found = u64::try_from(names.len()).unwrap_or(u64::MAX);
        let known = scan.known.saturating_add(found);
        let rank = known.saturating_mul(self.stride);
        let keyset = Keyset {
            from: names.last().cloned().unwrap_or(scan.from),
            limit: scan.limit,
            skip: to_i64(scan.offset.saturating_sub(rank)),
        };
        if !names.is_empty() {
            self.keep(scan.key, scan.version, scan.known, names);
        }
        keyset
    }

    /// Adds `names` (the marks after the first `known`) to the marks of `key` at `version`, when
    /// they continue them (or start them afresh at a newer version).
    fn keep(&self, key: MarksKey, version: i64, known: u64, names: Vec<String>) {
        let mut state = self.state();
        state.tick += 1;
        let tick = state.tick;
        let known = usize::try_from(known).unwrap_or(usize::MAX);
        let added = match state.entries.get_mut(&key) {
            Some(marks) if marks.version == version => {
                // Another reader may have added some of the same marks meanwhile.
                let have = marks.names.len();
                if have < known {
                    0
                } else {
                    let new: Vec<String> = names.into_iter().skip(have - known).collect();
                    let bytes: usize = new.iter().map(|n| name_cost(n)).sum();
                    marks.names.extend(new);
                    marks.bytes += bytes;
                    marks.used = tick;
                    bytes
                }
            }
            // Marks of a newer version stay; marks that do not start at rank 0 cannot start afresh.
            Some(marks) if marks.version > version => 0,
            _ if known > 0 => 0,
            _ => {
                let bytes = names.iter().map(|n| name_cost(n)).sum::<usize>()
                    + key.org.len()
                    + key.folder.len()
                    + std::mem::size_of::<(MarksKey, Marks)>();
                if let Some(old) = state.entries.insert(
                    key,
                    Marks {
                        version,
                        names,
                        bytes,
                        used: tick,
                    },
                ) {
                    state.bytes = state.bytes.saturating_sub(old.bytes);
                }
                bytes
            }
        };
        state.bytes += added;
        if state.bytes > self.budget {
            // Drop the least recently used folders down to half the budget: eviction then runs
            // once per many insertions.
            let mut by_use: Vec<(u64, MarksKey)> = state.entries.iter().map(|(k, m)| (m.used, k.clone())).collect();
            by_use.sort_unstable_by_key(|(used, _)| *used);
            for (_, key) in by_use {
                if state.bytes <= self.budget / 2 {
                    break;
                }
                if let Some(gone) = state.entries.remove(&key) {
                    state.bytes = state.bytes.saturating_sub(gone.bytes);
                }
            }
        }
    }

    /// Bytes held (for tests).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.state().bytes
    }
}

// --- S3 listings ---------------------------------------------------------------------------------
//
// S3 lists a folder's children in the byte order of their S3 names: a file's name, a folder's
// name followed by '/'. Files read in name order from `objects_listing` are in that order
// already. Folders are not: '/' (0x2F) sorts after a few bytes that names may hold ('-', '.',
// ' ', '!'...), so folder "a" (S3 name "a/") comes after folder "a-b" ("a-b/") although "a" <
// "a-b". The two orders differ only there: the names that sort between `n` and `n + "/"` are the
// names that extend `n` with a byte below '/', and they come before `n` in S3 order.
// [`S3FolderOrder`] turns folders read in name order from `folders_listing` into S3 order while
// holding back at most one chain of such prefixes, so a page of `limit` folders reads at most
// `limit` + (longest chain) + 1 rows.

/// The byte order of a file named `file` against a folder named `folder` by their S3 names
/// (`file` against `folder + "/"`), without building the latter.
pub(crate) fn file_vs_folder(file: &str, folder: &str) -> std::cmp::Ordering {
    file.as_bytes().iter().cmp(folder.as_bytes().iter().chain(b"/"))
}

/// The folder names below `from` in name order whose S3 names are still at or past it: the proper
/// prefixes of `from` followed in it by a byte below '/' (and, when `inclusive`, `from` without
/// its trailing '/'), shortest first. Every other folder at or past `from` has a name >= `from`;
/// a listing reads these few names by key and the rest as one range from `from`.
pub(crate) fn folder_prefixes_from(from: &str, inclusive: bool) -> Vec<&str> {
    let bytes = from.as_bytes();
    let mut out = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'/' {
            // A name holds no '/': no longer prefix is a name.
            if inclusive && i > 0 && i + 1 == bytes.len() {
                out.push(&from[..i]);
            }
            break;
        }
        if b < b'/' && i > 0 {
            // An ASCII byte: `i` is a character boundary.
            out.push(&from[..i]);
        }
    }
    out
}

/// Folder names read in name order, handed out in S3-name order (see the section's note): a name
/// is held while the names read after it extend it with a byte below '/'.
#[derive(Debug, Default)]
pub(crate) struct S3FolderOrder {
    /// Held names: each a prefix of the next, followed in it by a byte below '/'.
    held: Vec<String>,
    ordered: Vec<String>,
}

impl S3FolderOrder {
    /// Takes the next folder name (names must come in increasing byte order).
    pub(crate) fn push(&mut self, name: String) {
        while let Some(top) = self.held.last() {
            let extends = name.as_bytes().starts_with(top.as_bytes())
                && name.as_bytes().get(top.len()).is_some_and(|&b| b < b'/');
            if extends {
                break;
            }
            self.ordered.extend(self.held.pop());
        }
        self.held.push(name);
    }

    /// How many names are known to come first, in order.
    pub(crate) fn ready(&self) -> usize {
        self.ordered.len()
    }

    /// The names in S3 order, the first `limit` of them: call once the names read so far are all
    /// there are, or once [`S3FolderOrder::ready`] reached `limit` (held names come after every
    /// name handed out, and after every name read later).
    pub(crate) fn finish(mut self, limit: usize) -> Vec<String> {
        while let Some(name) = self.held.pop() {
            self.ordered.push(name);
        }
        self.ordered.truncate(limit);
        self.ordered
    }
}

/// Merges files (in name order) with folders (in S3 order) into the first `limit` children in
/// S3-name order. Correct when each list holds the first `limit` of its kind (or all of them).
pub(crate) fn merge_children(files: Vec<ObjectMeta>, folders: Vec<FolderPath>, limit: usize) -> Vec<Child> {
    let mut out = Vec::with_capacity(limit.min(files.len() + folders.len()));
    let mut files = files.into_iter().peekable();
    let mut folders = folders.into_iter().peekable();
    while out.len() < limit {
        let take_file = match (files.peek(), folders.peek()) {
            (Some(file), Some(folder)) => file_vs_folder(file.key.name(), folder.name()).is_lt(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_file {
            files.next().map(Child::File)
        } else {
            folders.next().map(Child::Folder)
        };
        out.extend(next);
    }
    out
}

/// The folder named `name` directly in `folder` (`None` for a stored name that is not one).
pub(crate) fn child_folder(folder: &FolderPath, name: &str) -> Option<FolderPath> {
    let path = if folder.is_root() {
        name.to_owned()
    } else {
        format!("{}/{name}", folder.as_str())
    };
    FolderPath::parse(&path).ok()
}

/// How many folder rows a listing reads per query while it orders them (a few more than the
/// page, so that one query usually suffices: see [`S3FolderOrder`]).
pub(crate) fn folder_batch(limit: usize) -> usize {
    limit.saturating_add(8).min(1024)
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
            etag: None,
            user_meta: None,
            if_absent: false,
        }
    }

    #[test]
    fn a_put_if_absent_is_refused_only_over_an_existing_file() {
        let mut object = new_object(None, 1);
        assert_eq!(refuse_existing(&object, Some(&replaced(1))), None);
        object.if_absent = true;
        assert_eq!(refuse_existing(&object, None), None);
        assert_eq!(refuse_existing(&object, Some(&replaced(1))), Some(PutRefusal::Exists));
    }

    /// The S3 order of folder names, the slow way.
    fn s3_sorted(names: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = names.iter().map(|n| format!("{n}/")).collect();
        out.sort();
        out.into_iter().map(|n| n.trim_end_matches('/').to_owned()).collect()
    }

    fn reorder(names: &[&str], limit: usize) -> Vec<String> {
        let mut sorted: Vec<&str> = names.to_vec();
        sorted.sort();
        let mut order = S3FolderOrder::default();
        for name in sorted {
            order.push(name.to_owned());
        }
        order.finish(limit)
    }

    #[test]
    fn folders_come_in_the_order_of_their_s3_names() {
        let names = [
            "a", "a-b", "a-b-c", "a.b", "a0", "a b", "b", "a-", "é", "a-c", "ab", "a--",
        ];
        assert_eq!(reorder(&names, 100), s3_sorted(&names));
        assert_eq!(reorder(&names, 3), s3_sorted(&names)[..3].to_vec());
        assert_eq!(reorder(&["a", "a-b"], 100), ["a-b", "a"]);
        assert_eq!(reorder(&["a", "a0"], 100), ["a", "a0"]);
        assert!(reorder(&[], 5).is_empty());
    }

    #[test]
    fn folder_order_holds_back_only_a_chain_of_prefixes() {
        let mut order = S3FolderOrder::default();
        order.push("a".into());
        order.push("a-1".into());
        assert_eq!(order.ready(), 0, "both still wait: a-1-x may come");
        order.push("a-2".into());
        assert_eq!(order.ready(), 1, "a-1 is done");
        order.push("b".into());
        assert_eq!(order.ready(), 3, "a-2 and a are done");
        assert_eq!(order.finish(10), ["a-1", "a-2", "a", "b"]);
    }

    #[test]
    fn the_folders_below_from_that_still_count_are_its_prefixes_before_low_bytes() {
        assert_eq!(folder_prefixes_from("a-b.c", true), ["a", "a-b"]);
        assert_eq!(folder_prefixes_from("abc", true), Vec::<&str>::new());
        assert_eq!(folder_prefixes_from("", true), Vec::<&str>::new());
        assert_eq!(folder_prefixes_from("a/", true), ["a"]);
        assert_eq!(folder_prefixes_from("a/", false), Vec::<&str>::new());
        assert_eq!(folder_prefixes_from("a-b/x", true), ["a"], "nothing past a '/'");
        assert_eq!(folder_prefixes_from("/a-", true), Vec::<&str>::new());
        assert_eq!(folder_prefixes_from("é-x", true), ["é"]);
        // Against the definition: every folder whose S3 name is at or past `from` is either
        // named >= `from` or one of these prefixes.
        let names = ["a", "a-", "a-b", "a-b-c", "a.b", "a0", "b", "a b", "é", "é-"];
        for from in [
            "", "a", "a-", "a-b", "a-b/", "a-b-", "a-c", "a/", "a/x", "a.", "a0", "b/", "é-", "z",
        ] {
            for inclusive in [true, false] {
                let prefixes = folder_prefixes_from(from, inclusive);
                for name in names {
                    let s3 = format!("{name}/");
                    let wanted = if inclusive {
                        s3.as_str() >= from
                    } else {
                        s3.as_str() > from
                    };
                    let found = name >= from || prefixes.contains(&name);
                    assert_eq!(found, wanted, "{name} from {from:?} inclusive {inclusive}");
                }
            }
        }
    }

    fn meta_of(raw: &str) -> ObjectMeta {
        ObjectMeta {
            key: key(raw),
            size: 0,
            md5: String::new(),
            mime: String::new(),
            preview: None,
            created: 0,
            modified: 0,
            blob: BlobId::generate(),
            etag: None,
            user_meta: None,
        }
    }

    #[test]
    fn files_and_folders_merge_by_s3_name() {
        let files = ["a-b", "a0", "a1"].map(meta_of).to_vec();
        let folders = ["a", "a.x", "b"].map(folder).to_vec();
        let mut folders_s3 = folders.clone();
        folders_s3.sort_by_key(|f| format!("{}/", f.name()));
        let names = |children: &[Child]| -> Vec<String> {
            children
                .iter()
                .map(|c| match c {
                    Child::File(f) => f.key.name().to_owned(),
                    Child::Folder(f) => format!("{}/", f.name()),
                })
                .collect()
        };
        let merged = merge_children(files.clone(), folders_s3.clone(), 100);
        assert_eq!(names(&merged), ["a-b", "a.x/", "a/", "a0", "a1", "b/"]);
        assert_eq!(names(&merge_children(files, folders_s3, 2)), ["a-b", "a.x/"]);
        assert_eq!(file_vs_folder("a", "a"), std::cmp::Ordering::Less);
        assert_eq!(file_vs_folder("a0", "a"), std::cmp::Ordering::Greater);
        assert_eq!(file_vs_folder("a/", "a"), std::cmp::Ordering::Equal);
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
    fn pending_parts_count_against_the_byte_quota_only() {
        let quota = Quota {
            max_bytes: 100,
            max_files: 1,
        };
        let stored = Usage { bytes: 50, files: 1 };
        let usage = counted_usage(stored, 40, 0);
        assert_eq!(usage, Usage { bytes: 90, files: 1 });
        assert_eq!(
            check_quota(usage, quota, part_delta(11, None)),
            Err(QuotaExceeded::Bytes {
                used: 90,
                limit: 100,
                added: 11
            })
        );
        assert_eq!(
            check_quota(usage, quota, part_delta(10, None)),
            Ok(()),
            "no file is added"
        );
        assert_eq!(part_delta(5, Some(8)), PutDelta { bytes: -3, files: 0 });
        assert_eq!(check_quota(usage, quota, part_delta(15, Some(5))), Ok(()));
        // A completion releases its own parts: the object takes their place.
        assert_eq!(counted_usage(stored, 40, 30), Usage { bytes: 60, files: 1 });
        assert_eq!(
            counted_usage(stored, 10, 30),
            Usage { bytes: 50, files: 1 },
            "saturates"
        );
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

    /// A folder's names read as the database would read a keyset window.
    fn keyset_rows(names: &[String], keyset: &Keyset) -> Vec<String> {
        names
            .iter()
            .filter(|n| n.as_str() >= keyset.from.as_str())
            .skip(usize::try_from(keyset.skip).unwrap())
            .take(usize::try_from(keyset.limit).unwrap())
            .cloned()
            .collect()
    }

    /// A folder's names read as the database would read a mark scan.
    fn scan_rows(names: &[String], scan: &MarkScan) -> Vec<String> {
        let stride = usize::try_from(scan.stride).unwrap();
        let mut found: Vec<String> = Vec::new();
        let mut from = scan.from.clone();
        for _ in 0..scan.marks {
            let next = names.iter().filter(|n| n.as_str() >= from.as_str()).nth(stride);
            let Some(next) = next else { break };
            found.push(next.clone());
            from = next.clone();
        }
        found
    }

    /// One window read through the marks, and whether it needed a scan.
    fn read_window(
        marks: &ListingMarks,
        names: &[String],
        version: i64,
        offset: i64,
        limit: i64,
    ) -> (Vec<String>, bool) {
        let window = Window { limit, offset };
        match marks.seek(&test_org(), &folder("big"), ChildKind::Files, version, window) {
            Seek::Read(keyset) => (keyset_rows(names, &keyset), false),
            Seek::Scan(scan) => {
                let found = scan_rows(names, &scan);
                (keyset_rows(names, &marks.scanned(scan, found)), true)
            }
        }
    }

    fn test_org() -> OrgId {
        OrgId::parse("0123456789abcdef0123456789abcdef").unwrap()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("f{i:04}")).collect()
    }

    #[test]
    fn a_window_read_from_marks_is_the_offset_window() {
        let all = names(50);
        let marks = ListingMarks::new(4, 1 << 20);
        for pass in 0..2 {
            for offset in (0..=52).rev() {
                let (rows, scanned) = read_window(&marks, &all, 7, offset, 3);
                let at = usize::try_from(offset).unwrap().min(all.len());
                assert_eq!(rows, all[at..(at + 3).min(all.len())], "offset {offset}, pass {pass}");
                // (A listing never reads past the end: there is no mark there to find.)
                assert!(
                    !(pass == 1 && scanned && offset < 50),
                    "the second pass finds every mark"
                );
            }
        }
        // Small offsets never touch the marks.
        let fresh = ListingMarks::new(4, 1 << 20);
        assert_eq!(read_window(&fresh, &all, 7, 3, 3), (all[3..6].to_vec(), false));
        // A far window first, then a farther one: the second scans only from the last mark.
        let (_, scanned) = read_window(&fresh, &all, 7, 21, 2);
        assert!(scanned);
        let window = Window { limit: 2, offset: 45 };
        match fresh.seek(&test_org(), &folder("big"), ChildKind::Files, 7, window) {
            Seek::Scan(scan) => {
                assert_eq!((scan.from.as_str(), scan.marks), ("f0020", 6));
                assert_eq!(
                    scan_rows(&all, &scan),
                    ["f0024", "f0028", "f0032", "f0036", "f0040", "f0044"]
                );
            }
            other => panic!("expected a scan, got {other:?}"),
        }
    }

    #[test]
    fn marks_of_another_version_are_not_used() {
        let mut all = names(40);
        let marks = ListingMarks::new(4, 1 << 20);
        assert_eq!(read_window(&marks, &all, 1, 30, 5).0, all[30..35]);
        // A name before every mark: the folder row now shows version 2.
        all.insert(0, "a".into());
        let (rows, scanned) = read_window(&marks, &all, 2, 30, 5);
        assert_eq!(rows, all[30..35]);
        assert!(scanned, "version 2 has no marks yet");
        // A reader still at version 1 (an older snapshot) finds no marks of its version and
        // does not replace the newer ones.
        let old = names(40);
        assert_eq!(read_window(&marks, &old, 1, 30, 5), (old[30..35].to_vec(), true));
        assert_eq!(read_window(&marks, &all, 2, 30, 5), (all[30..35].to_vec(), false));
    }

    #[test]
    fn marks_stay_within_their_budget() {
        let all = names(200);
        let marks = ListingMarks::new(1, 64 << 10);
        let window = Window { limit: 1, offset: 150 };
        let mut last = OrgId::generate();
        for version in 0..100 {
            last = OrgId::generate();
            let Seek::Scan(scan) = marks.seek(&last, &folder("big"), ChildKind::Folders, version, window) else {
                panic!("a new folder has no marks");
            };
            let found = scan_rows(&all, &scan);
            assert_eq!(keyset_rows(&all, &marks.scanned(scan, found)), ["f0150"]);
            assert!(marks.bytes() <= 64 << 10, "{} bytes held", marks.bytes());
        }
        assert!(marks.bytes() > 16 << 10, "the marks are kept up to their budget");
        let newest = marks.seek(&last, &folder("big"), ChildKind::Folders, 99, window);
        assert!(matches!(newest, Seek::Read(_)), "the most recent marks stay");
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

    #[test]
    fn a_batchs_quota_decisions_run_in_order_and_a_refusal_changes_nothing() {
        let quota = Quota {
            max_bytes: 100,
            max_files: 3,
        };
        let mut run = QuotaRun::new(Usage { bytes: 40, files: 1 });
        assert_eq!(run.decide(quota, PutDelta::of(50, None)), Ok(()));
        // 90 bytes used: 20 more would overshoot; the refusal names the usage the batch reached.
        assert_eq!(
            run.decide(quota, PutDelta::of(20, None)),
            Err(QuotaExceeded::Bytes {
                used: 90,
                limit: 100,
                added: 20
            })
        );
        // The refused put added nothing: 10 bytes still fit, and it is the third file.
        assert_eq!(run.decide(quota, PutDelta::of(10, None)), Ok(()));
        assert_eq!(
            run.decide(quota, PutDelta::of(0, None)),
            Err(QuotaExceeded::Files { used: 3, limit: 3 })
        );
        // A replacement by a smaller body frees bytes for the puts after it.
        assert_eq!(run.decide(quota, PutDelta::of(0, Some(&replaced(30)))), Ok(()));
        assert_eq!(run.decide(quota, PutDelta::of(25, Some(&replaced(0)))), Ok(()));
        assert_eq!(
            run.decide(quota, PutDelta::of(6, Some(&replaced(0)))),
            Err(QuotaExceeded::Bytes {
                used: 95,
                limit: 100,
                added: 6
            })
        );
    }

    #[test]
    fn puts_are_independent_unless_same_key_or_one_is_above_the_other() {
        assert!(independent_puts(&key("a/b"), &key("a/c")));
        assert!(
            independent_puts(&key("a"), &key("ab/c")),
            "a prefix that is not a folder"
        );
        assert!(independent_puts(&key("a/b"), &key("a/bc")));
        assert!(!independent_puts(&key("a/b"), &key("a/b")));
        assert!(!independent_puts(&key("a"), &key("a/b")), "a file above a later key");
        assert!(
            !independent_puts(&key("a/b/c"), &key("a/b")),
            "a later key that is a folder"
        );
    }

    #[test]
    fn a_batchs_folder_changes_are_the_sums_of_its_puts() {
        let (x, y, z) = (key("d/x"), key("d/e/y"), key("z"));
        let changes = sum_folder_changes([
            (&x, PutDelta::of(10, None), 7),
            (&y, PutDelta::of(5, Some(&replaced(8))), 9),
            (&z, PutDelta::of(1, None), 3),
        ]);
        let row = |path: &str, bytes, files, child_files, modified| FolderChange {
            path: folder(path),
            bytes,
            files,
            child_files,
            modified,
        };
        assert_eq!(
            changes,
            vec![row("", 8, 2, 1, 9), row("d", 7, 1, 1, 9), row("d/e", -3, 0, 0, 9),]
        );
    }
}
