//! ListObjects (V1) and ListObjectsV2 answers: the service's byte-order page, with S3's markers,
//! continuation tokens (the last key or common prefix of the page, base64url-encoded) and
//! `encoding-type=url`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use s3s::dto::{CommonPrefix, Object, Owner};
use s3s::{S3Result, s3_error};

use crate::service::s3::{S3Listing, etag_of};

/// Keys per page when the client asks for more or names none.
pub(super) const MAX_KEYS: usize = 1000;

/// The page size a request asks for (`max-keys`), within 0..=1000.
pub(super) fn page_size(max_keys: Option<i32>) -> S3Result<usize> {
    match max_keys {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys cannot be negative")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_KEYS).min(MAX_KEYS)),
    }
}

/// Whether the request asked for `encoding-type=url`; any other value is refused.
pub(super) fn url_encoded(encoding: Option<&s3s::dto::EncodingType>) -> S3Result<bool> {
    match encoding.map(|e| e.as_str()) {
        None => Ok(false),
        Some(e) if e.eq_ignore_ascii_case("url") => Ok(true),
        Some(other) => Err(s3_error!(
            InvalidArgument,
            "encoding-type '{other}' is not supported: the only encoding is 'url'"
        )),
    }
}

pub(super) fn token_of(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last.as_bytes())
}

/// The position a continuation token stands for.
pub(super) fn position_of(token: &str) -> S3Result<String> {
    URL_SAFE_NO_PAD
        .decode(token.as_bytes())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token is not one this server gave; start the listing again"
            )
        })
}

/// Characters a key keeps as they are under `encoding-type=url`.
const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

pub(super) fn encode(text: &str, url: bool) -> String {
    if url {
        percent_encoding::utf8_percent_encode(text, KEEP).to_string()
    } else {
        text.to_owned()
    }
}

/// The listing's objects and common prefixes as S3 shows them.
pub(super) fn entries(listing: &S3Listing, url: bool, owner: Option<&Owner>) -> (Vec<Object>, Vec<CommonPrefix>) {
    let objects = listing
        .objects
        .iter()
        .map(|o| Object {
            key: Some(encode(o.key.as_str(), url)),
            size: i64::try_from(o.size).ok(),
            e_tag: Some(super::ops::etag_value(&etag_of(o))),
            last_modified: Some(super::ops::timestamp(o.modified)),
            owner: owner.cloned(),
            storage_class: Some(s3s::dto::ObjectStorageClass::from_static(
                s3s::dto::ObjectStorageClass::STANDARD,
            )),
            ..Object::default()
        })
        .collect();
    let prefixes = listing
        .prefixes
        .iter()
        .map(|p| CommonPrefix {
            prefix: Some(encode(p, url)),
        })
        .collect();
    (objects, prefixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_foreign_ones_are_refused() {
        for last in ["a/b.csv", "données/é", "x/"] {
            assert_eq!(position_of(&token_of(last)).unwrap(), last);
        }
        assert!(position_of("not base64 !").is_err());
    }

    #[test]
    fn url_encoding_keeps_slashes_and_unreserved_characters() {
        assert_eq!(encode("a b/c+d~é.txt", true), "a%20b/c%2Bd~%C3%A9.txt");
        assert_eq!(encode("a b", false), "a b");
    }

    #[test]
    fn page_sizes_are_capped() {
        assert_eq!(page_size(None).unwrap(), 1000);
        assert_eq!(page_size(Some(5000)).unwrap(), 1000);
        assert_eq!(page_size(Some(0)).unwrap(), 0);
        assert!(page_size(Some(-1)).is_err());
    }
}
