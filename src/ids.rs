//! Identifier newtypes: organizations, users, blobs and download jobs.

use std::fmt;

use rand::RngCore;

/// An organization id: 32 lowercase hex characters (the QuantConnect shape).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(String);

impl OrgId {
    pub(crate) fn generate() -> OrgId {
        OrgId(random_hex(16))
    }

    /// Accepts only the canonical shape; anything else is simply an unknown organization.
    pub(crate) fn parse(raw: &str) -> Option<OrgId> {
        let valid = raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| OrgId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user id: a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

impl UserId {
    pub(crate) fn parse(raw: &str) -> Option<UserId> {
        let raw = raw.trim();
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        raw.parse::<i64>().ok().filter(|id| *id > 0).map(UserId)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The name of a stored body in a blob store. Blobs are immutable; a fresh id per upload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(String);

impl BlobId {
    /// A time-ordered random id (UUID v7, simple form).
    pub(crate) fn generate() -> BlobId {
        BlobId(uuid::Uuid::now_v7().simple().to_string())
    }

    /// Accepts only ids this program could have generated (32 lowercase hex).
    pub(crate) fn parse(raw: &str) -> Option<BlobId> {
        OrgId::parse(raw).map(|id| BlobId(id.0))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The blob's shard: its last two hex digits. They come from the random part of the id (the
    /// first digits of a UUID v7 are a timestamp, the same for years), so blobs spread evenly
    /// over 256 shards.
    pub(crate) fn shard(&self) -> &str {
        &self.0[self.0.len() - 2..]
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A download job id: 128 random bits as 32 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId(String);

impl JobId {
    pub(crate) fn generate() -> JobId {
        JobId(random_hex(16))
    }

    pub(crate) fn parse(raw: &str) -> Option<JobId> {
        OrgId::parse(raw).map(|id| JobId(id.0))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `bytes` random bytes from the operating system's generator, as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids() {
        let id = OrgId::generate();
        assert_eq!(OrgId::parse(id.as_str()), Some(id));
        for bad in ["", " ", "0", &"A".repeat(32), &"g".repeat(32), &"0".repeat(33)] {
            assert!(OrgId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn blob_ids_spread_over_shards() {
        let shards: std::collections::HashSet<String> =
            (0..2000).map(|_| BlobId::generate().shard().to_owned()).collect();
        assert!(
            shards.len() > 200,
            "ids made together still spread: {} shards",
            shards.len()
        );
    }

    #[test]
    fn user_ids() {
        assert_eq!(UserId::parse("42"), Some(UserId(42)));
        for bad in ["", "0", "-1", "1.5", "abc", "99999999999999999999999"] {
            assert!(UserId::parse(bad).is_none(), "{bad}");
        }
    }
}
