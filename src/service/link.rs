//! Single-file download jobs that live only in their id: a get of one file (what LEAN and the lean
//! CLI ask for) records nothing. The job id carries the organization, the key, the body it was
//! pinned to and the expiry, sealed with an HMAC of the server key, so any server of the
//! deployment can answer a poll or a download of it, and a crash loses nothing (a job is
//! re-creatable). The body stays because collection keeps every replaced or deleted body for as
//! long as a link may still name it (`collect_garbage`'s hold).
//!
//! Owns the id's encoding and its check; the service decides when to make one and what a
//! download of it must verify (expiry, the creator's standing).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::crypto::UrlSigner;
use crate::ids::{BlobId, OrgId};
use crate::key::Key;
use crate::meta::{JobEntry, Millis};

/// First character of a link job's id (stored jobs' ids are lowercase hex).
const MARK: char = 'L';
/// What the MAC covers besides the payload, so that a link id can never pass for anything else
/// the server key signs.
const CONTEXT: &str = "single-file-link";
/// Keys longer than this get a stored job instead, so every link id stays well inside the URL
/// and JSON sizes clients accept.
pub(crate) const MAX_KEY_BYTES: usize = 1024;

/// A single-file job, as its id carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkJob {
    pub(crate) org: OrgId,
    pub(crate) entry: JobEntry,
    /// Unix seconds.
    pub(crate) expires: i64,
}

impl LinkJob {
    /// The job's id: `L<payload, base64url>.<MAC>`.
    pub(crate) fn encode(&self, signer: &UrlSigner) -> String {
        let payload = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.org,
            self.entry.blob,
            self.entry.size,
            self.entry.modified,
            self.expires,
            self.entry.key.as_str()
        );
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let mac = signer.sign(&format!("{CONTEXT}:{payload}"), self.expires);
        format!("{MARK}{payload}.{mac}")
    }

    /// Whether `raw` is shaped like a link job's id (whether or not it is valid).
    pub(crate) fn is_link(raw: &str) -> bool {
        raw.starts_with(MARK)
    }

    /// The job `raw` names, when it is a link job's id this deployment made (whatever its expiry).
    pub(crate) fn decode(raw: &str, signer: &UrlSigner) -> Option<LinkJob> {
        let (payload, mac) = raw.strip_prefix(MARK)?.split_once('.')?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut fields = text.splitn(6, '\n');
        let org = OrgId::parse(fields.next()?)?;
        let blob = BlobId::parse(fields.next()?)?;
        let size: u64 = fields.next()?.parse().ok()?;
        let modified: Millis = fields.next()?.parse().ok()?;
        let expires: i64 = fields.next()?.parse().ok()?;
        let key = Key::parse(fields.next()?).ok()?;
        if !signer.verify(&format!("{CONTEXT}:{payload}"), expires, mac) {
            return None;
        }
        Some(LinkJob {
            org,
            entry: JobEntry {
                key,
                blob,
                size,
                modified,
            },
            expires,
        })
    }

    /// A short name for the job, for the zip's file name.
    pub(crate) fn short_name(raw: &str) -> &str {
        let mac = raw.rsplit_once('.').map_or(raw, |(_, mac)| mac);
        mac.get(..22).unwrap_or(mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ServerKey;

    fn signer(byte: &str) -> UrlSigner {
        ServerKey::from_hex(&byte.repeat(32)).expect("a valid key").url_signer()
    }

    fn job(key: &str) -> LinkJob {
        LinkJob {
            org: OrgId::parse(&"ab".repeat(16)).expect("an org id"),
            entry: JobEntry {
                key: Key::parse(key).expect("a key"),
                blob: BlobId::generate(),
                size: 4096,
                modified: 1_700_000_000_123,
            },
            expires: 1_800_000_000,
        }
    }

    #[test]
    fn an_id_decodes_to_the_job_it_was_made_from() {
        let signer = signer("11");
        for key in ["models/a.bin", "x", "dir with spaces/ünïcode line (1).txt"] {
            let job = job(key);
            let id = job.encode(&signer);
            assert!(LinkJob::is_link(&id));
            assert!(
                id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{id}"
            );
            assert_eq!(LinkJob::decode(&id, &signer), Some(job));
        }
    }

    #[test]
    fn a_changed_or_foreign_id_is_refused() {
        let signer = signer("11");
        let id = job("models/a.bin").encode(&signer);
        assert_eq!(
            LinkJob::decode(&id, &self::signer("22")),
            None,
            "another deployment's key"
        );
        let (payload, mac) = id.split_once('.').expect("a dot");
        let other = job("models/b.bin").encode(&signer);
        let (other_payload, _) = other.split_once('.').expect("a dot");
        assert_eq!(
            LinkJob::decode(&format!("{other_payload}.{mac}"), &signer),
            None,
            "swapped payload"
        );
        assert_eq!(LinkJob::decode(payload, &signer), None, "no MAC");
        assert_eq!(LinkJob::decode(&id[1..], &signer), None, "no mark");
        assert_eq!(LinkJob::decode(&"ab".repeat(16), &signer), None, "a stored job's id");
        assert_eq!(LinkJob::decode("L", &signer), None);
        assert_eq!(LinkJob::decode("L!!.x", &signer), None);
    }

    #[test]
    fn the_short_name_is_part_of_the_mac() {
        let id = job("a").encode(&signer("11"));
        let name = LinkJob::short_name(&id);
        assert_eq!(name.len(), 22);
        assert!(id.ends_with(name) || id.contains(name));
    }
}
