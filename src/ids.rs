//! Identifier newtypes: organizations, users, blobs and download jobs, and organizations'
//! bucket names (the S3 alias an organization may carry).

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

/// An organization's S3 bucket name (its alias beside its id): a valid S3 bucket name that does
/// not look like an organization id, so that a bucket name always resolves one way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketAlias(String);

/// Why a bucket name cannot be an organization's alias, in the words of S3's naming rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketAliasError {
    #[error("the bucket name \"{0}\" must be 3 to 63 characters long")]
    Length(String),
    #[error(
        "the bucket name \"{0}\" may hold only lowercase letters, digits, dots (.) and hyphens (-), \
         and must begin and end with a letter or a digit"
    )]
    Characters(String),
    #[error("the bucket name \"{0}\" must not have two dots in a row, or a dot beside a hyphen")]
    Dots(String),
    #[error("the bucket name \"{0}\" must not look like an IP address")]
    IpAddress(String),
    #[error("the bucket name \"{0}\" begins or ends with a part S3 reserves (xn--, sthree-, -s3alias, --ol-s3)")]
    Reserved(String),
    #[error(
        "the bucket name \"{0}\" looks like an organization id (32 hex digits); every organization's id \
         already works as its bucket name, so choose a name that is not 32 hex digits"
    )]
    LooksLikeOrgId(String),
}

impl BucketAlias {
    /// Checks S3's bucket naming rules (those of general purpose buckets) and refuses names of an
    /// organization id's shape.
    pub fn parse(raw: &str) -> Result<BucketAlias, BucketAliasError> {
        let owned = || raw.to_owned();
        if !(3..=63).contains(&raw.len()) {
            return Err(BucketAliasError::Length(owned()));
        }
        let bytes = raw.as_bytes();
        let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-';
        let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !bytes.iter().all(allowed) || !edge(bytes[0]) || !edge(bytes[bytes.len() - 1]) {
            return Err(BucketAliasError::Characters(owned()));
        }
        if raw.contains("..") || raw.contains(".-") || raw.contains("-.") {
            return Err(BucketAliasError::Dots(owned()));
        }
        if raw.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(BucketAliasError::IpAddress(owned()));
        }
        if ["xn--", "sthree-"].iter().any(|p| raw.starts_with(p))
            || ["-s3alias", "--ol-s3"].iter().any(|s| raw.ends_with(s))
        {
            return Err(BucketAliasError::Reserved(owned()));
        }
        if OrgId::parse(raw).is_some() {
            return Err(BucketAliasError::LooksLikeOrgId(owned()));
        }
        Ok(BucketAlias(owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketAlias {
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
    fn bucket_aliases_follow_s3_naming_and_never_look_like_an_org_id() {
        for good in ["abc", "my-bucket", "data.team-1", &"a".repeat(63), "test-multipart"] {
            assert_eq!(BucketAlias::parse(good).map(|b| b.to_string()), Ok(good.to_owned()));
        }
        let org = OrgId::generate();
        let refused = |raw: &str| BucketAlias::parse(raw).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused("ab").contains("3 to 63 characters"));
        assert!(refused(&"a".repeat(64)).contains("3 to 63 characters"));
        for bad in ["My-Bucket", "-abc", "abc-", "a_b", "ab c", "ab/c", "ab\u{e9}c"] {
            assert!(refused(bad).contains("lowercase letters"), "{bad}");
        }
        for bad in ["a..b", "a.-b", "a-.b"] {
            assert!(refused(bad).contains("two dots"), "{bad}");
        }
        assert!(refused("192.168.5.4").contains("IP address"));
        for bad in ["xn--abc", "sthree-abc", "abc-s3alias", "abc--ol-s3"] {
            assert!(refused(bad).contains("reserves"), "{bad}");
        }
        assert!(refused(org.as_str()).contains("looks like an organization id"));
    }

    #[test]
    fn user_ids() {
        assert_eq!(UserId::parse("42"), Some(UserId(42)));
        for bad in ["", "0", "-1", "1.5", "abc", "99999999999999999999999"] {
            assert!(UserId::parse(bad).is_none(), "{bad}");
        }
    }
}
