//! Safe extraction of downloaded archives: whatever names the server sends, no entry may land
//! outside the destination folder (no absolute paths, no `..`, no drive prefixes, no symlinks in
//! the archive, no writing through a symlink already in the destination), and no archive may
//! write more than its [`Budget`] (a zip bomb, or a server sending more than it announced). An
//! archive is extracted into a staging folder inside the destination first: a refused archive
//! leaves nothing behind, and files already there are replaced only once everything fit.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::ClientError;
use crate::content::human_size;
use crate::key::Key;

/// The most bytes an archive may hold once extracted, and why (said when it is exceeded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Budget {
    pub(crate) limit: u64,
    /// What set the limit, e.g. "--max-size 10 GiB".
    pub(crate) reason: String,
}

impl Budget {
    /// The limit for what the server announced (`announced` bytes for the keys asked for), with
    /// an allowance for files that changed between the announcement and the archive, and the
    /// user's `--max-size` when given, whichever is smaller.
    pub(crate) fn new(announced: u64, max_size: Option<u64>) -> Budget {
        let allowed = announced.saturating_add(announced / 100).saturating_add(ANNOUNCE_SLACK);
        match max_size {
            Some(max) if max < allowed => Budget {
                limit: max,
                reason: format!("--max-size {}", human_size(max)),
            },
            _ => Budget {
                limit: allowed,
                reason: format!(
                    "the server announced {} for these keys; if they grew since, run the command again",
                    human_size(announced)
                ),
            },
        }
    }

    /// The most bytes the archive itself may take to download: the extracted limit plus zip's
    /// own headers (a few hundred bytes per entry).
    pub(crate) fn archive_limit(&self) -> u64 {
        self.limit.saturating_add(self.limit / 4).saturating_add(ARCHIVE_SLACK)
    }

    pub(crate) fn exceeded(&self, what: &str) -> ClientError {
        ClientError::Oversized(format!(
            "{what} holds more than {} ({}); nothing was written",
            human_size(self.limit),
            self.reason
        ))
    }
}

/// Room for files that grew between the size announcement and the archive.
const ANNOUNCE_SLACK: u64 = 1024 * 1024;
/// Room for zip headers beyond [`Budget::archive_limit`]'s proportional share.
const ARCHIVE_SLACK: u64 = 16 * 1024 * 1024;

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

/// Copies at most `budget_left` bytes of `entry` to `out`; more is an error.
fn bounded_copy(
    entry: &mut dyn Read,
    out: &mut dyn Write,
    budget_left: u64,
    budget: &Budget,
) -> Result<u64, ClientError> {
    let copied = io::copy(&mut entry.take(budget_left.saturating_add(1)), out)?;
    if copied > budget_left {
        return Err(budget.exceeded("the archive"));
    }
    Ok(copied)
}

/// Refuses a path whose existing parts inside `destination` include a symbolic link (writing
/// through it would land outside the destination).
fn refuse_links_on_the_way(destination: &Path, relative: &Path, name: &str) -> Result<(), ClientError> {
    let mut current = destination.to_owned();
    for part in relative.components() {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(ClientError::UnsafeEntry(name.to_owned()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Extracts every file entry of `archive` under `destination` within `budget`; returns the names
/// written. Every name and the declared sizes are checked before anything is written, the bytes
/// actually inflated are counted as they come, and the files reach `destination` only once the
/// whole archive is extracted: an unsafe or oversized archive writes nothing.
pub(crate) fn extract_zip(archive: &Path, destination: &Path, budget: &Budget) -> Result<Vec<String>, ClientError> {
    let mut zip = zip::ZipArchive::new(File::open(archive)?)?;
    let mut entries = Vec::with_capacity(zip.len());
    let mut declared: u64 = 0;
    for i in 0..zip.len() {
        let entry = zip.by_index_raw(i)?;
        let name = entry.name().to_owned();
        match safe_relative_path(&name) {
            Some(relative) if !entry.is_symlink() => {
                refuse_links_on_the_way(destination, &relative, &name)?;
                entries.push((name, relative, entry.is_dir()));
            }
            _ => return Err(ClientError::UnsafeEntry(name)),
        }
        declared = declared.saturating_add(entry.size());
    }
    if declared > budget.limit {
        return Err(budget.exceeded("the archive"));
    }
    let staging = tempfile::Builder::new()
        .prefix(".stowage-extract-")
        .tempdir_in(destination)?;
    let mut left = budget.limit;
    for (i, (_, relative, is_dir)) in entries.iter().enumerate() {
        let target = staging.path().join(relative);
        if *is_dir {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut entry = zip.by_index(i)?;
        let mut out = File::create(&target)?;
        left -= bounded_copy(&mut entry, &mut out, left, budget)?;
    }
    // Everything fit: move it into place (same file system, so each move is a rename).
    let mut names = Vec::new();
    for (name, relative, is_dir) in entries {
        refuse_links_on_the_way(destination, &relative, &name)?;
        let target = destination.join(&relative);
        if is_dir {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let staged = staging.path().join(&relative);
        // A name repeated in the archive was moved already; its last copy won in staging.
        if staged.exists() {
            std::fs::rename(&staged, &target)?;
            names.push(name);
        }
    }
    Ok(names)
}

/// Copies the entry named by `key` (normalized like the server does) to `out`, within `budget`.
pub(crate) fn copy_single_entry(
    archive: &Path,
    key: &str,
    out: &mut dyn Write,
    budget: &Budget,
) -> Result<(), ClientError> {
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
    if entry.size() > budget.limit {
        return Err(budget.exceeded(key));
    }
    bounded_copy(&mut entry, out, budget.limit, budget)?;
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
        archive_with(entries, zip::CompressionMethod::Stored)
    }

    fn archive_with(entries: &[(&str, &[u8])], method: zip::CompressionMethod) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
        for (name, data) in entries {
            zip.start_file(
                *name,
                zip::write::SimpleFileOptions::default().compression_method(method),
            )
            .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        file
    }

    fn roomy() -> Budget {
        Budget::new(1 << 20, None)
    }

    /// Every path under `dir`, relative, sorted.
    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                out.push(path.strip_prefix(root).unwrap().display().to_string());
                if path.is_dir() && !path.is_symlink() {
                    walk(root, &path, out);
                }
            }
        }
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    #[test]
    fn extraction_stays_inside_the_destination() {
        let outer = tempfile::tempdir().unwrap();
        let destination = outer.path().join("dest");
        std::fs::create_dir(&destination).unwrap();
        let good = archive(&[("a/b.txt", b"hello"), ("c", b"")]);
        let names = extract_zip(good.path(), &destination, &roomy()).unwrap();
        assert_eq!(names, ["a/b.txt", "c"]);
        assert_eq!(std::fs::read(destination.join("a/b.txt")).unwrap(), b"hello");
        assert_eq!(tree(&destination), ["a", "a/b.txt", "c"], "no staging folder left");
        for evil in ["../escaped.txt", "/tmp/absolute.txt", "C:\\x.txt"] {
            let archive = archive(&[("ok.txt", b"fine"), (evil, b"bad")]);
            let refused = extract_zip(archive.path(), &destination, &roomy());
            assert!(
                matches!(&refused, Err(ClientError::UnsafeEntry(name)) if name == evil),
                "{evil}: {refused:?}"
            );
        }
        assert!(!outer.path().join("escaped.txt").exists());
        assert_eq!(
            tree(&destination),
            ["a", "a/b.txt", "c"],
            "a refused archive writes nothing"
        );
    }

    #[test]
    fn symlinks_in_the_archive_or_on_the_way_are_refused() {
        let outer = tempfile::tempdir().unwrap();
        let destination = outer.path().join("dest");
        std::fs::create_dir(&destination).unwrap();
        // An archive entry that is a symlink.
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
        zip.add_symlink("link", "/etc", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.start_file("link/passwd", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"pwned").unwrap();
        zip.finish().unwrap();
        let refused = extract_zip(file.path(), &destination, &roomy());
        assert!(
            matches!(&refused, Err(ClientError::UnsafeEntry(name)) if name == "link"),
            "{refused:?}"
        );
        // A symlink already in the destination pointing outside it.
        let outside = outer.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, destination.join("via")).unwrap();
            let archive = archive(&[("via/planted.txt", b"bad")]);
            let refused = extract_zip(archive.path(), &destination, &roomy());
            assert!(
                matches!(&refused, Err(ClientError::UnsafeEntry(name)) if name == "via/planted.txt"),
                "{refused:?}"
            );
            assert!(!outside.join("planted.txt").exists());
        }
    }

    #[test]
    fn a_zip_bomb_is_stopped_and_leaves_nothing() {
        let outer = tempfile::tempdir().unwrap();
        let destination = outer.path().to_owned();
        std::fs::write(destination.join("kept.txt"), b"before").unwrap();
        // 8 MiB of zeros deflate to a few KiB; the server announced 1 KiB.
        let zeros = vec![0u8; 8 << 20];
        let bomb = archive_with(
            &[("kept.txt", b"after"), ("bomb.bin", &zeros)],
            zip::CompressionMethod::Deflated,
        );
        assert!(std::fs::metadata(bomb.path()).unwrap().len() < 64 * 1024);
        let budget = Budget::new(1024, None);
        let refused = extract_zip(bomb.path(), &destination, &budget).map(|_| ()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refusing the download: the archive holds more than 1.05 MB (the server announced 1.02 KB for these \
             keys; if they grew since, run the command again); nothing was written"
        );
        assert_eq!(tree(&destination), ["kept.txt"]);
        assert_eq!(std::fs::read(destination.join("kept.txt")).unwrap(), b"before");
        // --max-size is the bound when it is the smaller.
        let budget = Budget::new(1 << 30, Some(4 << 20));
        let refused = extract_zip(bomb.path(), &destination, &budget).map(|_| ()).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("holds more than 4.19 MB (--max-size 4.19 MB)"),
            "{refused}"
        );
        assert_eq!(tree(&destination), ["kept.txt"]);
    }

    /// An archive whose headers understate its entry's size: the bytes inflated are counted, not
    /// the sizes declared.
    #[test]
    fn an_entry_larger_than_it_declares_is_stopped() {
        let outer = tempfile::tempdir().unwrap();
        let honest = archive_with(&[("big.bin", &[7u8; 4096])], zip::CompressionMethod::Deflated);
        let mut bytes = std::fs::read(honest.path()).unwrap();
        // Rewrite the uncompressed size (4096) in the local and central headers to 16.
        let size = 4096u32.to_le_bytes();
        let mut patched = 0;
        for i in 0..bytes.len().saturating_sub(4) {
            if bytes[i..i + 4] == size {
                bytes[i..i + 4].copy_from_slice(&16u32.to_le_bytes());
                patched += 1;
            }
        }
        assert!(patched >= 2, "both headers patched");
        let lying = outer.path().join("lying.zip");
        std::fs::write(&lying, &bytes).unwrap();
        let destination = outer.path().join("dest");
        std::fs::create_dir(&destination).unwrap();
        let budget = Budget {
            limit: 1024,
            reason: "test".into(),
        };
        let result = extract_zip(&lying, &destination, &budget);
        // Either the zip reader refuses the lie (a size or checksum mismatch) or the count stops it.
        assert!(
            matches!(
                result,
                Err(ClientError::Oversized(_) | ClientError::Zip(_) | ClientError::Io(_))
            ),
            "{result:?}"
        );
        assert!(tree(&destination).is_empty(), "{:?}", tree(&destination));
    }

    #[test]
    fn single_entry_to_a_writer() {
        let one = archive(&[("dir/file.bin", b"\x00\x01\x02")]);
        let mut out = Vec::new();
        copy_single_entry(one.path(), "/dir//file.bin", &mut out, &roomy()).unwrap();
        assert_eq!(out, b"\x00\x01\x02");
        let two = archive(&[("dir/a", b"1"), ("dir/b", b"2")]);
        assert!(copy_single_entry(two.path(), "dir", &mut Vec::new(), &roomy()).is_err());
        let small = Budget {
            limit: 2,
            reason: "--max-size 2 B".into(),
        };
        let refused = copy_single_entry(one.path(), "dir/file.bin", &mut Vec::new(), &small).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "refusing the download: dir/file.bin holds more than 2 B (--max-size 2 B); nothing was written"
        );
    }
}
