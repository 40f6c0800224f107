//! Safe extraction of downloaded archives: whatever names the server sends, no entry may land
//! outside the destination folder (no absolute paths, no `..`, no drive prefixes, no symlinks).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::ClientError;
use crate::key::Key;

/// The relative path an entry name may be written to, or `None` when it is unsafe.
pub(crate) fn safe_relative_path(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('\0') || name.starts_with('/') || name.starts_with('\\') {
        return None;
    }
    let mut path = PathBuf::new();
    for segment in name.split(['/', '\\']) {
        match segment {
            "" | "." => continue,
            ".." => return None,
            s if s.contains(':') => return None,
            s => path.push(s),
        }
    }
    (!path.as_os_str().is_empty()).then_some(path)
}

/// Extracts every file entry of `archive` under `destination`; returns the names written.
/// Every name is checked before anything is written: an unsafe archive writes nothing.
pub(crate) fn extract_zip(archive: &Path, destination: &Path) -> Result<Vec<String>, ClientError> {
    let mut zip = zip::ZipArchive::new(File::open(archive)?)?;
    let mut targets = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i)?;
        let name = entry.name().to_owned();
        match safe_relative_path(&name) {
            Some(relative) if !entry.is_symlink() => targets.push(destination.join(relative)),
            _ => return Err(ClientError::UnsafeEntry(name)),
        }
    }
    let mut names = Vec::new();
    for (i, target) in targets.into_iter().enumerate() {
        let mut entry = zip.by_index(i)?;
        let name = entry.name().to_owned();
        if entry.is_dir() {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = File::create(&target)?;
        io::copy(&mut entry, &mut out)?;
        names.push(name);
    }
    Ok(names)
}

/// Copies the entry named by `key` (normalized like the server does) to `out`.
pub(crate) fn copy_single_entry(archive: &Path, key: &str, out: &mut dyn Write) -> Result<(), ClientError> {
    let wanted = Key::parse(key).map_err(|e| ClientError::Usage(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(File::open(archive)?)?;
    if zip.len() != 1 {
        return Err(ClientError::Usage(format!(
            "{key} is a folder: --stdout writes one file"
        )));
    }
    let mut entry = zip.by_index(0)?;
    if entry.name() != wanted.as_str() {
        return Err(ClientError::Usage(format!(
            "{key} is a folder: --stdout writes one file"
        )));
    }
    io::copy(&mut entry, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn unsafe_names_are_refused() {
        for name in [
            "../evil",
            "/etc/passwd",
            "a/../../b",
            "\\windows",
            "C:/x",
            "a/..",
            "",
            "..\\x",
            "a\0b",
        ] {
            assert!(safe_relative_path(name).is_none(), "{name:?}");
        }
        assert_eq!(safe_relative_path("a/b/c.txt"), Some(PathBuf::from("a/b/c.txt")));
        assert_eq!(safe_relative_path("a//./b"), Some(PathBuf::from("a/b")));
        assert_eq!(
            safe_relative_path("résumé 2024/Δ.txt"),
            Some(PathBuf::from("résumé 2024/Δ.txt"))
        );
    }

    fn archive(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
        for (name, data) in entries {
            zip.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        file
    }

    #[test]
    fn extraction_stays_inside_the_destination() {
        let outer = tempfile::tempdir().unwrap();
        let destination = outer.path().join("dest");
        let good = archive(&[("a/b.txt", b"hello"), ("c", b"")]);
        let names = extract_zip(good.path(), &destination).unwrap();
        assert_eq!(names, ["a/b.txt", "c"]);
        assert_eq!(std::fs::read(destination.join("a/b.txt")).unwrap(), b"hello");
        let evil = archive(&[("ok.txt", b"fine"), ("../escaped.txt", b"bad")]);
        assert!(matches!(
            extract_zip(evil.path(), &destination),
            Err(ClientError::UnsafeEntry(_))
        ));
        assert!(!outer.path().join("escaped.txt").exists());
    }

    #[test]
    fn single_entry_to_a_writer() {
        let one = archive(&[("dir/file.bin", b"\x00\x01\x02")]);
        let mut out = Vec::new();
        copy_single_entry(one.path(), "/dir//file.bin", &mut out).unwrap();
        assert_eq!(out, b"\x00\x01\x02");
        let two = archive(&[("dir/a", b"1"), ("dir/b", b"2")]);
        assert!(copy_single_entry(two.path(), "dir", &mut Vec::new()).is_err());
    }
}
