//! Wire types: the only place that knows the JSON field names of the API (spec section 5).

use std::fmt;

use serde::Serialize;

use crate::content::human_size;
use crate::meta::{Millis, ObjectMeta};
use crate::service::{DownloadTicket, Listing};

/// RFC 3339, UTC, milliseconds: `2021-11-26T15:18:27.693Z`.
pub(crate) fn format_time(ms: Millis) -> String {
    WireTime(ms).to_string()
}

/// A time as the wire shows it ([`format_time`]), written without an intermediate string.
#[derive(Clone, Copy)]
pub(crate) struct WireTime(pub(crate) Millis);

impl WireTime {
    /// The time's 24 bytes (`2021-11-26T15:18:27.693Z`), or `None` for a year outside 0..=9999,
    /// which RFC 3339 cannot write in four digits. Integer arithmetic only (the civil-from-days
    /// algorithm of H. Hinnant): a listing writes 1,000 of these per page, and going through
    /// `chrono` and `fmt` was a tenth of a page's CPU.
    fn digits(self) -> Option<[u8; 24]> {
        const DAY_MS: i64 = 86_400_000;
        let days = self.0.div_euclid(DAY_MS);
        let in_day = self.0.rem_euclid(DAY_MS);
        let z = days.checked_add(719_468)?;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = era.checked_mul(400)?.checked_add(yoe)? + i64::from(month <= 2);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                // `value % 10` is 0..=9 here: every field is non-negative and fits its width.
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, in_day / 3_600_000);
        put(14, 2, in_day / 60_000 % 60);
        put(17, 2, in_day / 1000 % 60);
        put(20, 3, in_day % 1000);
        Some(out)
    }
}

impl fmt::Display for WireTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.digits() {
            // The digits are ASCII by construction.
            Some(digits) => f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?),
            // Years RFC 3339 cannot write in four digits (and times chrono cannot represent,
            // shown as its default): chrono's own (signed, longer) form.
            None => {
                let time = chrono::DateTime::from_timestamp_millis(self.0).unwrap_or_default();
                f.write_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            }
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Outcome {
    pub(crate) success: bool,
    pub(crate) errors: Vec<String>,
}

impl Outcome {
    pub(crate) fn ok() -> Outcome {
        Outcome {
            success: true,
            errors: Vec::new(),
        }
    }

    pub(crate) fn failed(message: String) -> Outcome {
        Outcome {
            success: false,
            errors: vec![message],
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Metadata {
    pub(crate) key: String,
    pub(crate) modified: String,
    pub(crate) created: String,
    pub(crate) size: u64,
    pub(crate) md5: String,
    pub(crate) mime: String,
    pub(crate) preview: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct PropertiesResponse {
    pub(crate) success: bool,
    pub(crate) errors: Vec<String>,
    pub(crate) metadata: Metadata,
}

impl From<ObjectMeta> for PropertiesResponse {
    fn from(meta: ObjectMeta) -> PropertiesResponse {
        PropertiesResponse {
            success: true,
            errors: Vec::new(),
            metadata: Metadata {
                key: meta.key.to_string(),
                modified: format_time(meta.modified),
                created: format_time(meta.created),
                size: meta.size,
                md5: meta.md5,
                mime: meta.mime,
                preview: meta.preview,
            },
        }
    }
}

#[derive(Serialize)]
pub(crate) struct JobResponse {
    pub(crate) success: bool,
    pub(crate) errors: Vec<String>,
    #[serde(rename = "jobId")]
    pub(crate) job_id: String,
    pub(crate) url: Option<String>,
}

impl From<DownloadTicket> for JobResponse {
    fn from(ticket: DownloadTicket) -> JobResponse {
        JobResponse {
            success: true,
            errors: Vec::new(),
            job_id: ticket.job.to_string(),
            url: ticket.url,
        }
    }
}

/// The answer to `/object/list`, written by hand into one buffer ([`ListResponse::to_json`]):
/// a 1,000-entry page through `serde` spent over a third of the request's CPU escaping strings
/// byte by byte and formatting times through `fmt`. The shape and field names are those of
/// spec section 5; a test holds the output to what `serde_json` reads back.
pub(crate) struct ListResponse<'a> {
    /// The path as sent (`/` for the root).
    path: &'a str,
    /// The path without its trailing slashes: each entry's key is this, '/', its name.
    prefix: &'a str,
    listing: &'a Listing,
}

impl<'a> ListResponse<'a> {
    /// `path_as_sent` is the request's path exactly as given (`None` or empty for the root).
    pub(crate) fn new(path_as_sent: Option<&'a str>, listing: &'a Listing) -> ListResponse<'a> {
        let path = match path_as_sent {
            Some(p) if !p.is_empty() => p,
            _ => "/",
        };
        ListResponse {
            path,
            prefix: path.trim_end_matches('/'),
            listing,
        }
    }

    /// About how many bytes the JSON takes, to size the buffer once.
    fn size_hint(&self) -> usize {
        let per_entry = 150 + 2 * self.prefix.len();
        256 + self
            .listing
            .entries
            .iter()
            .map(|entry| per_entry + 2 * entry.name.len() + entry.mime.len())
            .sum::<usize>()
    }

    /// The JSON document.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint());
        out.extend_from_slice(br#"{"success":true,"errors":[],"path":"#);
        json_string(&mut out, &[self.path]);
        out.extend_from_slice(br#","objects":["#);
        let mut numbers = itoa::Buffer::new();
        for (i, entry) in self.listing.entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"key":"#);
            json_string(&mut out, &[self.prefix, "/", &entry.name]);
            out.extend_from_slice(br#","name":"#);
            json_string(&mut out, &[&entry.name]);
            out.extend_from_slice(br#","modified":"#);
            match WireTime(entry.modified).digits() {
                Some(digits) => {
                    out.push(b'"');
                    out.extend_from_slice(&digits);
                    out.push(b'"');
                }
                None => json_string(&mut out, &[&format_time(entry.modified)]),
            }
            out.extend_from_slice(br#","mime":"#);
            json_string(&mut out, &[&entry.mime]);
            out.extend_from_slice(if entry.is_folder {
                br#","folder":true,"isFolder":true,"size":"#.as_slice()
            } else {
                br#","folder":false,"isFolder":false,"size":"#.as_slice()
            });
            out.extend_from_slice(numbers.format(entry.size).as_bytes());
            out.push(b'}');
        }
        out.extend_from_slice(br#"],"page":"#);
        out.extend_from_slice(numbers.format(self.listing.page).as_bytes());
        out.extend_from_slice(br#","totalPages":"#);
        out.extend_from_slice(numbers.format(self.listing.total_pages).as_bytes());
        out.extend_from_slice(br#","objectStorageUsed":"#);
        out.extend_from_slice(numbers.format(self.listing.usage.bytes).as_bytes());
        out.extend_from_slice(br#","objectStorageUsedHuman":"#);
        json_string(&mut out, &[&human_size(self.listing.usage.bytes)]);
        out.push(b'}');
        out
    }
}

/// Writes the concatenation of `pieces` as one JSON string. A piece with nothing to escape (no
/// control character, quote or backslash: the usual case, checked without branching per byte)
/// is copied as it is; any other goes through `serde_json`'s escaping.
fn json_string(out: &mut Vec<u8>, pieces: &[&str]) {
    out.push(b'"');
    for piece in pieces {
        let plain = !piece
            .bytes()
            .fold(false, |seen, b| seen | (b < 0x20) | (b == b'"') | (b == b'\\'));
        if plain {
            out.extend_from_slice(piece.as_bytes());
        } else {
            let quoted = serde_json::Value::from(*piece).to_string();
            // `quoted` is the piece between two quotes; keep what is between them.
            out.extend_from_slice(
                quoted
                    .as_bytes()
                    .get(1..quoted.len().saturating_sub(1))
                    .unwrap_or_default(),
            );
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ListEntry;

    #[test]
    fn times_have_milliseconds() {
        assert_eq!(format_time(1_637_939_907_693), "2021-11-26T15:18:27.693Z");
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn times_match_chrono_rfc3339_everywhere() {
        for ms in [
            -62_135_596_800_000, // 0001-01-01
            -1,
            0,
            999,
            1_637_939_907_693,
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000, // 10000-01-01: chrono's longer form
            -62_167_219_200_001, // before year 0
            i64::MAX,
            i64::MIN,
        ] {
            let chrono = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            assert_eq!(format_time(ms), chrono, "{ms}");
        }
    }

    fn entry(name: &str, is_folder: bool) -> ListEntry {
        ListEntry {
            name: name.into(),
            is_folder,
            size: 7,
            mime: if is_folder { "directory" } else { "text/plain" }.into(),
            modified: 1_637_939_907_693,
        }
    }

    #[test]
    fn a_listing_is_written_with_the_wire_field_names() {
        let listing = Listing {
            entries: vec![entry("sub", true), entry("a \"quoted\" name.txt", false)],
            page: 0,
            total_pages: 1,
            usage: crate::meta::Usage { bytes: 2048, files: 1 },
        };
        let response = ListResponse::new(Some("dir//"), &listing);
        let bytes = response.to_json();
        assert!(
            bytes.len() <= response.size_hint(),
            "{} > {}",
            bytes.len(),
            response.size_hint()
        );
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "success": true,
                "errors": [],
                "path": "dir//",
                "objects": [
                    {"key": "dir/sub", "name": "sub", "modified": "2021-11-26T15:18:27.693Z",
                     "mime": "directory", "folder": true, "isFolder": true, "size": 7},
                    {"key": "dir/a \"quoted\" name.txt", "name": "a \"quoted\" name.txt",
                     "modified": "2021-11-26T15:18:27.693Z", "mime": "text/plain",
                     "folder": false, "isFolder": false, "size": 7},
                ],
                "page": 0,
                "totalPages": 1,
                "objectStorageUsed": 2048,
                "objectStorageUsedHuman": human_size(2048),
            })
        );
        let root = ListResponse::new(None, &listing);
        let json: serde_json::Value = serde_json::from_slice(&root.to_json()).expect("valid JSON");
        assert_eq!(json["path"], "/");
        assert_eq!(json["objects"][0]["key"], "/sub");
    }

    #[test]
    fn times_match_chrono_across_the_four_digit_years() {
        // A step that is prime in milliseconds walks through every field's values.
        let (first, last) = (-62_167_219_200_000_i64, 253_402_300_799_999_i64);
        let mut ms = first;
        while ms <= last {
            let chrono = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            assert_eq!(format_time(ms), chrono, "{ms}");
            ms += 3_162_277_661;
        }
        assert_eq!(WireTime(first - 1).digits(), None);
        assert_eq!(WireTime(last + 1).digits(), None);
        assert_eq!(WireTime(i64::MAX).digits(), None);
    }

    #[test]
    fn names_that_need_escaping_are_escaped_as_serde_json_does() {
        let names = [
            "back\\slash",
            "tab\there",
            "new\nline",
            "bell\u{7}",
            "quote\"",
            "unicode \u{e9}\u{1F600}\u{2028}",
            "plain.txt",
        ];
        let listing = Listing {
            entries: names.iter().map(|name| entry(name, false)).collect(),
            page: 3,
            total_pages: 9,
            usage: crate::meta::Usage {
                bytes: u64::MAX,
                files: 1,
            },
        };
        let bytes = ListResponse::new(Some("d\"ir\\/"), &listing).to_json();
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
        for (i, name) in names.iter().enumerate() {
            assert_eq!(json["objects"][i]["name"], *name);
            assert_eq!(json["objects"][i]["key"], format!("d\"ir\\/{name}"));
        }
        assert_eq!(json["path"], "d\"ir\\/");
        assert_eq!(json["page"], 3);
        assert_eq!(json["totalPages"], 9);
        assert_eq!(json["objectStorageUsed"], u64::MAX);
        // Byte for byte what serde_json writes for each string.
        let text = String::from_utf8(bytes).expect("UTF-8");
        for name in names {
            let written = serde_json::to_string(name).expect("serializes");
            assert!(text.contains(&written), "{written} not in {text}");
        }
    }

    #[test]
    fn an_empty_listing_is_a_valid_document() {
        let listing = Listing {
            entries: Vec::new(),
            page: 0,
            total_pages: 1,
            usage: crate::meta::Usage { bytes: 0, files: 0 },
        };
        let json: serde_json::Value =
            serde_json::from_slice(&ListResponse::new(Some(""), &listing).to_json()).expect("valid JSON");
        assert_eq!(json["objects"], serde_json::json!([]));
        assert_eq!(json["path"], "/");
    }
}
