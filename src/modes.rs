//! Access modes of the data directory: only the server's own user may read it. New files and
//! directories are created 0600 and 0700 whatever the inherited umask ([`restrict_new_files`]);
//! a store written by an older version is tightened at start ([`tighten`]); `stowage fsck` reports
//! anything looser ([`loose`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Mode bits that let anyone but the owner in.
const OTHERS: u32 = 0o077;

/// From now on, this process creates files 0600 and directories 0700 (umask 077).
pub fn restrict_new_files() {
    // SAFETY: umask has no preconditions; it only sets the process's file-creation mask.
    unsafe {
        libc::umask(OTHERS as libc::mode_t);
    }
}

/// Every file or directory under `dir` (and `dir` itself) whose mode lets others in, with its
/// mode. Symbolic links are not followed.
pub fn loose(dir: &Path) -> std::io::Result<Vec<(PathBuf, u32)>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        // A file may go away while the directory is walked (SQLite's journal, a finished upload).
        let meta = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            other => other?,
        };
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
        if mode & OTHERS != 0 {
            found.push((path, mode));
        }
    }
    Ok(found)
}

/// Takes everything under `dir` down to 0700 (directories) and 0600 (files); returns how many
/// entries changed.
pub fn tighten(dir: &Path) -> std::io::Result<usize> {
    let found = loose(dir)?;
    for (path, mode) in &found {
        let tight = if path.is_dir() { 0o700 } else { 0o600 };
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & tight)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(found.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_entries_are_found_and_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("blobs");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("body"), b"x").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::set_permissions(sub.join("body"), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(loose(dir.path()).unwrap().len(), 3);
        assert_eq!(tighten(dir.path()).unwrap(), 3);
        assert!(loose(dir.path()).unwrap().is_empty());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("body")), 0o600);
    }
}
