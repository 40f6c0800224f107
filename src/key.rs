//! Object keys and folder paths: the one place where raw key strings from a request are
//! normalized and validated (spec section 4). Nothing below the HTTP layer sees a raw key.
//!
//! Normalization: `\` becomes `/`, leading `/` are removed, runs of `/` collapse to one.
//! A [`Key`] names a file and may not end in `/`; a [`FolderPath`] names a folder (or the root)
//! and may.

use std::fmt;

/// Longest key, in bytes of UTF-8 after normalization.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// Most segments in a key.
pub(crate) const MAX_KEY_SEGMENTS: usize = 100;

/// Why a key or path was refused. The message names the key as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("Invalid key '{0}': the key is empty")]
    Empty(String),
    #[error("Invalid key '{0}': a trailing '/' names a folder, and a file key cannot end with '/'")]
    TrailingSlash(String),
    #[error("Invalid key '{0}': '.' and '..' are not allowed as path segments")]
    DotSegment(String),
    #[error("Invalid key '{0}': control characters are not allowed")]
    ControlCharacter(String),
    #[error("Invalid key '{key}': it is {bytes} bytes long, the limit is {MAX_KEY_BYTES} bytes")]
    TooLong { key: String, bytes: usize },
    #[error("Invalid key '{key}': it has {segments} segments, the limit is {MAX_KEY_SEGMENTS}")]
    TooDeep { key: String, segments: usize },
    #[error(
        "Invalid key '{raw}': stowage keys have no leading '/', no empty segment ('//') and no '\\'; it would be stored as '{stored}', so rename it to that"
    )]
    NotAsStored { raw: String, stored: String },
}

/// A normalized, valid file key such as `models/m1.json`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

/// A normalized folder path: `""` is the root, otherwise a key-shaped path without trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FolderPath(String);

/// The key as shown in an error: at most 100 characters, then `…`.
fn shown(raw: &str) -> String {
    match raw.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &raw[..cut]),
        None => raw.to_owned(),
    }
}

/// Applies the normalization rules without validating: `\` → `/`, strip leading `/`, collapse runs.
fn normalize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut previous_slash = true; // drops leading slashes
    for c in raw.chars() {
        let c = if c == '\\' { '/' } else { c };
        if c == '/' {
            if !previous_slash {
                out.push('/');
            }
            previous_slash = true;
        } else {
            out.push(c);
            previous_slash = false;
        }
    }
    out
}

/// Validates a normalized path without a trailing slash (segments, characters, size).
fn validate(raw: &str, normalized: &str) -> Result<(), KeyError> {
    if normalized.is_empty() {
        return Err(KeyError::Empty(shown(raw)));
    }
    if normalized
        .chars()
        .any(|c| c.is_control() && (c <= '\u{1f}' || c == '\u{7f}'))
    {
        return Err(KeyError::ControlCharacter(shown(raw)));
    }
    if normalized.split('/').any(|s| s == "." || s == "..") {
        return Err(KeyError::DotSegment(shown(raw)));
    }
    if normalized.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong {
            key: shown(raw),
            bytes: normalized.len(),
        });
    }
    let segments = normalized.split('/').count();
    if segments > MAX_KEY_SEGMENTS {
        return Err(KeyError::TooDeep {
            key: shown(raw),
            segments,
        });
    }
    Ok(())
}

impl Key {
    /// Parses a file key as a client sent it.
    pub(crate) fn parse(raw: &str) -> Result<Key, KeyError> {
        let normalized = normalize(raw);
        if normalized.ends_with('/') {
            return Err(KeyError::TrailingSlash(shown(raw)));
        }
        validate(raw, &normalized)?;
        Ok(Key(normalized))
    }

    /// Parses a file key that must be stored exactly as sent (the S3 API, where a key is an
    /// opaque string): one the normalization would change is refused rather than renamed.
    pub(crate) fn parse_exact(raw: &str) -> Result<Key, KeyError> {
        let key = Key::parse(raw)?;
        if key.0 != raw {
            return Err(KeyError::NotAsStored {
                raw: shown(raw),
                stored: shown(&key.0),
            });
        }
        Ok(key)
    }

    /// Parses a key that may name a file or a folder (`/object/get`, `/object/delete`):
    /// a trailing `/` is allowed and dropped.
    pub(crate) fn parse_file_or_folder(raw: &str) -> Result<Key, KeyError> {
        let normalized = normalize(raw);
        let trimmed = normalized.strip_suffix('/').unwrap_or(&normalized);
        validate(raw, trimmed)?;
        Ok(Key(trimmed.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The path of the folder holding this key (`""` for a key at the root), without a copy.
    pub(crate) fn parent_str(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[..i],
            None => "",
        }
    }

    /// The folder holding this key (`""` for a key at the root).
    pub(crate) fn parent(&self) -> FolderPath {
        match self.0.rfind('/') {
            Some(i) => FolderPath(self.0[..i].to_owned()),
            None => FolderPath::root(),
        }
    }

    /// The last segment.
    pub(crate) fn name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// Every folder above this key, from the root (`""`) down to the parent.
    pub(crate) fn ancestors(&self) -> Vec<FolderPath> {
        let mut out = vec![FolderPath::root()];
        for (i, c) in self.0.char_indices() {
            if c == '/' {
                out.push(FolderPath(self.0[..i].to_owned()));
            }
        }
        out
    }

    /// This key seen as a folder path (for folder deletes and downloads).
    pub(crate) fn as_folder(&self) -> FolderPath {
        FolderPath(self.0.clone())
    }
}

impl FolderPath {
    pub(crate) fn root() -> FolderPath {
        FolderPath(String::new())
    }

    /// Parses a folder path as a client sent it; empty and `/` are the root.
    pub(crate) fn parse(raw: &str) -> Result<FolderPath, KeyError> {
        let normalized = normalize(raw);
        let trimmed = normalized.strip_suffix('/').unwrap_or(&normalized);
        if trimmed.is_empty() {
            return Ok(FolderPath::root());
        }
        validate(raw, trimmed)?;
        Ok(FolderPath(trimmed.to_owned()))
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The folder above, or `None` for the root.
    pub(crate) fn parent(&self) -> Option<FolderPath> {
        if self.is_root() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => FolderPath(self.0[..i].to_owned()),
            None => FolderPath::root(),
        })
    }

    /// The last segment (`""` for the root).
    pub(crate) fn name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The half-open range `[low, high)` of keys strictly inside this folder, in byte order:
    /// `a/b/` up to `a/b0` (`0` follows `/`). For the root, every key.
    pub(crate) fn descendant_range(&self) -> (String, String) {
        if self.is_root() {
            return (String::new(), "\u{10ffff}".repeat(2));
        }
        (format!("{}/", self.0), format!("{}0", self.0))
    }

    /// The path of a direct child with the given name.
    #[cfg(test)]
    pub(crate) fn child(&self, name: &str) -> String {
        if self.is_root() {
            name.to_owned()
        } else {
            format!("{}/{}", self.0, name)
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for FolderPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalizes_slashes() {
        for raw in ["/a/b", "a/b", "a//b", "\\a\\b", "//a///b"] {
            assert_eq!(Key::parse(raw).unwrap().as_str(), "a/b", "{raw}");
        }
    }

    #[test]
    fn exact_keys_are_refused_rather_than_renamed() {
        assert_eq!(Key::parse_exact("a/b c.parquet").unwrap().as_str(), "a/b c.parquet");
        for raw in ["/a/b", "a//b", "\\a", "a\\b"] {
            let refused = Key::parse_exact(raw).unwrap_err();
            assert!(matches!(refused, KeyError::NotAsStored { .. }), "{raw:?}: {refused}");
            assert!(refused.to_string().contains("would be stored as"), "{refused}");
        }
        assert!(matches!(Key::parse_exact("a/../b"), Err(KeyError::DotSegment(_))));
        assert!(matches!(Key::parse_exact("dir/"), Err(KeyError::TrailingSlash(_))));
    }

    #[test]
    fn rejects_spec_forms() {
        let long = "k".repeat(1025);
        let deep = vec!["d"; 101].join("/");
        for raw in [
            "", "/", "//", "a/../b", "./x", "a/\0b", "a/\u{1}b", "a\u{7f}b", "a/", &long, &deep,
        ] {
            assert!(Key::parse(raw).is_err(), "{raw:?}");
        }
        assert!(Key::parse(&"k".repeat(1024)).is_ok());
        assert!(Key::parse(&vec!["d"; 100].join("/")).is_ok());
        assert!(Key::parse("résumé 2024/Δ model #1.txt").is_ok());
        assert!(Key::parse("..a/b..").is_ok());
        let huge = "k".repeat(900_000);
        assert!(
            Key::parse(&huge).unwrap_err().to_string().len() < 300,
            "errors do not echo huge keys"
        );
    }

    #[test]
    fn folder_paths() {
        assert!(FolderPath::parse("").unwrap().is_root());
        assert!(FolderPath::parse("/").unwrap().is_root());
        assert_eq!(FolderPath::parse("/a//b/").unwrap().as_str(), "a/b");
        assert!(FolderPath::parse("a/../b").is_err());
        let key = Key::parse("a/b/c").unwrap();
        let ancestors: Vec<_> = key.ancestors().iter().map(|p| p.as_str().to_owned()).collect();
        assert_eq!(ancestors, ["", "a", "a/b"]);
        assert_eq!(key.parent().as_str(), "a/b");
        assert_eq!(key.name(), "c");
        assert_eq!(
            FolderPath::parse("a/b").unwrap().descendant_range(),
            ("a/b/".into(), "a/b0".into())
        );
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(raw in "[a-c/\\\\.]{0,12}") {
            if let Ok(key) = Key::parse(&raw) {
                let again = Key::parse(key.as_str()).unwrap();
                prop_assert_eq!(&again, &key);
                prop_assert!(!key.as_str().starts_with('/'));
                prop_assert!(!key.as_str().contains("//"));
                prop_assert!(!key.as_str().ends_with('/'));
                prop_assert!(key.as_str().split('/').all(|s| s != "." && s != ".."));
            }
        }

        #[test]
        fn never_panics(raw in any::<String>()) {
            let _ = Key::parse(&raw);
            let _ = Key::parse_file_or_folder(&raw);
            let _ = FolderPath::parse(&raw);
        }
    }
}
