//! Secrets: the server key file, API token generation and sealing at rest, the request-hash
//! check of the auth recipe, and the HMAC signatures of download URLs.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids::UserId;

/// Length of the server key in bytes.
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("cannot read or write the server key {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
    #[error("the server key {0} is malformed: it must hold 64 hex characters")]
    MalformedKey(String),
    #[error("a stored token cannot be decrypted with this server key")]
    Unseal,
    #[error("a token could not be encrypted")]
    Seal,
}

/// The server's secret: seals API tokens and derives the download-URL signing key.
#[derive(Clone)]
pub struct ServerKey {
    bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(..)")
    }
}

/// A token sealed with the server key.
#[derive(Debug, Clone)]
pub struct SealedToken {
    pub(crate) nonce: Vec<u8>,
    pub(crate) ciphertext: Vec<u8>,
}

impl ServerKey {
    /// Reads `path`, or creates it (mode 0600) with a fresh random key when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<ServerKey, CryptoError> {
        let err = |source| CryptoError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                ServerKey::from_hex(text.trim()).ok_or_else(|| CryptoError::MalformedKey(path.display().to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; KEY_LEN];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                write_private_file(path, format!("{}\n", hex::encode(bytes)).as_bytes()).map_err(err)?;
                Ok(ServerKey { bytes })
            }
            Err(e) => Err(err(e)),
        }
    }

    pub(crate) fn from_hex(text: &str) -> Option<ServerKey> {
        let decoded = hex::decode(text).ok()?;
        let bytes: [u8; KEY_LEN] = decoded.try_into().ok()?;
        Some(ServerKey { bytes })
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.bytes).into())
    }

    /// Encrypts a token; the user id is bound in as associated data.
    pub fn seal(&self, user: UserId, token: &str) -> Result<SealedToken, CryptoError> {
        self.seal_bound(&user.0.to_le_bytes(), token)
    }

    pub(crate) fn unseal(&self, user: UserId, sealed: &SealedToken) -> Result<String, CryptoError> {
        self.unseal_bound(&user.0.to_le_bytes(), sealed)
    }

    /// Encrypts an S3 secret access key; its access key id is bound in as associated data (with
    /// a prefix no user id's bytes have), so a sealed secret opens only under its own key id.
    pub(crate) fn seal_s3_secret(&self, access_key: &str, secret: &str) -> Result<SealedToken, CryptoError> {
        self.seal_bound(&s3_binding(access_key), secret)
    }

    pub(crate) fn unseal_s3_secret(&self, access_key: &str, sealed: &SealedToken) -> Result<String, CryptoError> {
        self.unseal_bound(&s3_binding(access_key), sealed)
    }

    fn seal_bound(&self, aad: &[u8], token: &str) -> Result<SealedToken, CryptoError> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: token.as_bytes(),
                    aad,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        Ok(SealedToken {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    fn unseal_bound(&self, aad: &[u8], sealed: &SealedToken) -> Result<String, CryptoError> {
        if sealed.nonce.len() != 24 {
            return Err(CryptoError::Unseal);
        }
        let plain = self
            .cipher()
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Unseal)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Unseal)
    }

    /// A key for signing download URLs, derived from the server key.
    pub fn url_signer(&self) -> UrlSigner {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes).expect("HMAC takes keys of any length");
        mac.update(b"stowage download url signing key v1");
        UrlSigner {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }
}

/// The associated data an S3 secret is sealed with.
fn s3_binding(access_key: &str) -> Vec<u8> {
    [b"s3 access key:".as_slice(), access_key.as_bytes()].concat()
}

/// A new S3 access key id: `STW` and 17 characters of A-Z and 2-7 (85 random bits), the
/// 20-character shape of AWS's key ids, so that clients that check the shape accept it.
pub(crate) fn generate_s3_access_key() -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; 17];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let tail: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
        .collect();
    format!("STW{tail}")
}

/// A new S3 secret access key: 240 random bits as 40 base64url characters (AWS's length).
pub(crate) fn generate_s3_secret() -> String {
    let mut bytes = [0u8; 30];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Writes a file that only its owner can read (mode 0600), durably.
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A new API token: 256 random bits as 64 lowercase hex characters.
pub fn generate_token() -> String {
    crate::ids::random_hex(32)
}

/// The auth recipe: `lowercase_hex(sha256("<token>:<timestamp>"))`.
pub(crate) fn request_hash(token: &str, timestamp: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(token.as_bytes());
    digest.update(b":");
    digest.update(timestamp.as_bytes());
    hex::encode(digest.finalize())
}

/// Compares the hash a client sent with the expected one, in constant time, ignoring letter case.
pub(crate) fn hash_matches(expected_lower_hex: &str, sent: &str) -> bool {
    let sent = sent.to_ascii_lowercase();
    expected_lower_hex.as_bytes().ct_eq(sent.as_bytes()).into()
}

/// Signs and checks download URLs: `HMAC-SHA256(key, "<job id>.<expires>")`, base64url.
#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

impl UrlSigner {
    pub fn sign(&self, job: &str, expires_unix: i64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(format!("{job}.{expires_unix}").as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    pub(crate) fn verify(&self, job: &str, expires_unix: i64, signature: &str) -> bool {
        let expected = self.sign(job, expires_unix);
        expected.as_bytes().ct_eq(signature.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_is_bound_to_user() {
        let key = ServerKey::from_hex(&"11".repeat(32)).unwrap();
        let sealed = key.seal(UserId(7), "secret-token").unwrap();
        assert_ne!(sealed.ciphertext, b"secret-token");
        assert_eq!(key.unseal(UserId(7), &sealed).unwrap(), "secret-token");
        assert!(key.unseal(UserId(8), &sealed).is_err());
        let other = ServerKey::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.unseal(UserId(7), &sealed).is_err());
    }

    #[test]
    fn s3_secrets_open_only_under_their_key_id() {
        let key = ServerKey::from_hex(&"11".repeat(32)).unwrap();
        let (id, secret) = (generate_s3_access_key(), generate_s3_secret());
        assert!(id.len() == 20 && id.starts_with("STW"), "{id}");
        assert!(
            id.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
            "{id}"
        );
        assert_eq!(secret.len(), 40, "{secret}");
        assert_ne!(generate_s3_access_key(), id);
        let sealed = key.seal_s3_secret(&id, &secret).unwrap();
        assert_eq!(key.unseal_s3_secret(&id, &sealed).unwrap(), secret);
        assert!(key.unseal_s3_secret(&generate_s3_access_key(), &sealed).is_err());
        assert!(key.unseal(UserId(1), &sealed).is_err());
    }

    #[test]
    fn hash_recipe() {
        // sha256("token:1700000000")
        let hash = request_hash("token", "1700000000");
        assert_eq!(hash.len(), 64);
        assert!(hash_matches(&hash, &hash.to_uppercase()));
        assert!(!hash_matches(&hash, &request_hash("token", "1700000001")));
        assert!(!hash_matches(&hash, ""));
    }

    #[test]
    fn url_signatures() {
        let signer = ServerKey::from_hex(&"33".repeat(32)).unwrap().url_signer();
        let sig = signer.sign("job", 100);
        assert!(signer.verify("job", 100, &sig));
        assert!(!signer.verify("job", 101, &sig));
        assert!(!signer.verify("job2", 100, &sig));
    }
}
