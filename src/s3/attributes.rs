//! What the S3 door keeps beside an object (the metadata store's `user_meta` column, opaque to
//! the layers below): the user metadata (`x-amz-meta-*`, names lowercased) and the checksums
//! (`x-amz-checksum-*`) computed over the body when it was stored, as one JSON object
//! `{"meta": {...}, "checksums": {"CRC32": "...", ...}}`. A QuantConnect upload has neither.

use std::collections::BTreeMap;

use s3s::dto::{Checksum, Metadata};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Attributes {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) meta: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) checksums: BTreeMap<String, String>,
}

impl Attributes {
    /// The attributes of a new object: its metadata and the checksums computed over its body.
    pub(super) fn new(metadata: Option<&Metadata>, checksums: &Checksum) -> Attributes {
        let meta = metadata
            .map(|m| m.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect())
            .unwrap_or_default();
        let mut attributes = Attributes {
            meta,
            checksums: BTreeMap::new(),
        };
        attributes.set_checksums(checksums);
        attributes
    }

    pub(super) fn set_checksums(&mut self, checksums: &Checksum) {
        let pairs = [
            ("CRC32", &checksums.checksum_crc32),
            ("CRC32C", &checksums.checksum_crc32c),
            ("SHA1", &checksums.checksum_sha1),
            ("SHA256", &checksums.checksum_sha256),
            ("CRC64NVME", &checksums.checksum_crc64nvme),
        ];
        for (name, value) in pairs {
            if let Some(value) = value {
                self.checksums.insert(name.to_owned(), value.clone());
            }
        }
    }

    /// As stored: `None` when there is nothing to keep.
    pub(super) fn encode(&self) -> Option<String> {
        if self.meta.is_empty() && self.checksums.is_empty() {
            return None;
        }
        serde_json::to_string(self).ok()
    }

    /// The attributes of a stored object (none for an object without, or with unreadable ones).
    pub(super) fn decode(stored: Option<&str>) -> Attributes {
        stored.and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default()
    }

    pub(super) fn metadata(&self) -> Option<Metadata> {
        (!self.meta.is_empty()).then(|| self.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    pub(super) fn checksum(&self) -> Checksum {
        let get = |name: &str| self.checksums.get(name).cloned();
        Checksum {
            checksum_crc32: get("CRC32"),
            checksum_crc32c: get("CRC32C"),
            checksum_sha1: get("SHA1"),
            checksum_sha256: get("SHA256"),
            checksum_crc64nvme: get("CRC64NVME"),
            ..Checksum::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_and_nothing_is_stored_for_none() {
        assert_eq!(Attributes::default().encode(), None);
        let mut metadata = Metadata::new();
        metadata.insert("Model-Version".into(), "7".into());
        let checksums = Checksum {
            checksum_crc32: Some("NhCmhg==".into()),
            ..Checksum::default()
        };
        let attributes = Attributes::new(Some(&metadata), &checksums);
        let stored = attributes.encode().unwrap();
        assert_eq!(
            stored,
            r#"{"meta":{"model-version":"7"},"checksums":{"CRC32":"NhCmhg=="}}"#
        );
        let back = Attributes::decode(Some(&stored));
        assert_eq!(back, attributes);
        assert_eq!(back.checksum().checksum_crc32.as_deref(), Some("NhCmhg=="));
        assert_eq!(
            back.metadata().unwrap().get("model-version").map(String::as_str),
            Some("7")
        );
        assert_eq!(Attributes::decode(Some("not json")), Attributes::default());
        assert_eq!(Attributes::decode(None), Attributes::default());
    }
}
