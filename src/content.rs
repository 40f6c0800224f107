//! What the service derives from an object's bytes while they stream past: size, md5, and the
//! first 4 KiB that decide text-or-binary, `mime` and `preview` (spec section 5.2). Also the
//! human-readable usage figure of `/object/list`.

use md5::{Digest, Md5};

/// How much of the content decides whether it is text.
pub(crate) const SNIFF_BYTES: usize = 4096;
/// Longest preview, in bytes.
pub(crate) const PREVIEW_BYTES: usize = 1024;

/// Accumulates size, md5 and the head of a body chunk by chunk.
#[derive(Default)]
pub(crate) struct ContentDigest {
    size: u64,
    md5: Md5,
    head: Vec<u8>,
}

/// The finished figures of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentFacts {
    pub(crate) size: u64,
    pub(crate) md5: String,
    /// `Some(preview)` for text, `None` for binary content.
    pub(crate) preview: Option<String>,
}

impl ContentDigest {
    pub(crate) fn new() -> ContentDigest {
        ContentDigest::default()
    }

    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.size += chunk.len() as u64;
        self.md5.update(chunk);
        if self.head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn finish(self) -> ContentFacts {
        let cut = self.size > self.head.len() as u64;
        ContentFacts {
            size: self.size,
            md5: hex::encode(self.md5.finalize()),
            preview: text_preview(&self.head, cut),
        }
    }
}

/// `Some(first KiB)` when `head` (the first 4 KiB) is text: valid UTF-8 without NUL bytes, where a
/// character may be cut at the end only when `cut` says the content goes on past the head.
/// `None` for binary content.
pub(crate) fn text_preview(head: &[u8], cut: bool) -> Option<String> {
    if head.contains(&0) {
        return None;
    }
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) => {
            // A cut character at the very end of the sniffed window is fine; anything else is binary.
            if e.error_len().is_some() || !cut {
                return None;
            }
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()?
        }
    };
    let mut end = valid.len().min(PREVIEW_BYTES);
    while !valid.is_char_boundary(end) {
        end -= 1;
    }
    Some(valid[..end].to_owned())
}

/// The mime of a key: from a well-known extension, else by content.
pub(crate) fn mime_for(key_name: &str, is_text: bool) -> String {
    let extension = key_name
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty());
    if let Some(ext) = extension
        && let Some(mime) = mime_guess::from_ext(&ext.to_ascii_lowercase()).first()
    {
        return mime.essence_str().to_owned();
    }
    if is_text {
        "text/plain".to_owned()
    } else {
        "application/octet-stream".to_owned()
    }
}

/// `objectStorageUsedHuman`: 1000-based units, two decimals except for bytes.
pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    let mut scale = 1u64;
    while unit + 1 < UNITS.len() && bytes / scale >= 1000 {
        scale *= 1000;
        unit += 1;
    }
    format!("{:.2} {}", bytes as f64 / scale as f64, UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(bytes: &[u8]) -> ContentFacts {
        let mut digest = ContentDigest::new();
        for chunk in bytes.chunks(7) {
            digest.update(chunk);
        }
        digest.finish()
    }

    #[test]
    fn hello_world() {
        let f = facts(b"Hello, world!");
        assert_eq!(f.md5, "6cd3556deb0da54bca060b4c39479839");
        assert_eq!(f.size, 13);
        assert_eq!(f.preview.as_deref(), Some("Hello, world!"));
        assert_eq!(mime_for("test_key_1", true), "text/plain");
    }

    #[test]
    fn previews() {
        assert_eq!(facts(b"").preview.as_deref(), Some(""));
        assert_eq!(facts("é".repeat(3000).as_bytes()).preview.unwrap(), "é".repeat(512));
        assert_eq!(facts("€".repeat(1000).as_bytes()).preview.unwrap(), "€".repeat(341));
        assert_eq!(facts(b"a\0b").preview, None);
        assert_eq!(facts(&[0xff, 0xfe, 0x41]).preview, None);
        // a 3-byte character cut by the 4 KiB boundary is still text
        let mut text = "a".repeat(4095).into_bytes();
        text.extend_from_slice("€".as_bytes());
        assert!(facts(&text).preview.is_some());
        // ...but a short body that ends inside a character is not text.
        assert_eq!(facts(b"a\xe2\x82").preview, None);
        let binary: Vec<u8> = (0..=255u8).cycle().take(2048).collect();
        assert_eq!(facts(&binary).preview, None);
    }

    #[test]
    fn mimes() {
        assert_eq!(mime_for("m.json", true), "application/json");
        assert_eq!(mime_for("m.JSON", false), "application/json");
        assert_eq!(mime_for("d.csv", true), "text/csv");
        assert_eq!(mime_for("weights", false), "application/octet-stream");
        assert_eq!(mime_for("notes.", true), "text/plain");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(900_000), "900.00 KB");
        assert_eq!(human_size(2061), "2.06 KB");
        assert_eq!(human_size(2_270_000_000), "2.27 GB");
        assert_eq!(human_size(999_999), "1000.00 KB");
        assert_eq!(human_size(u64::MAX), "18.45 EB");
    }
}
