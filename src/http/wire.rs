//! Wire types: the only place that knows the JSON field names of the API (spec section 5).

use std::fmt;

use serde::{Serialize, Serializer};

use crate::content::human_size;
use crate::meta::{ListEntry, Millis, ObjectMeta};
use crate::service::{DownloadTicket, Listing};

/// RFC 3339, UTC, milliseconds: `2021-11-26T15:18:27.693Z`.
pub(crate) fn format_time(ms: Millis) -> String {
    WireTime(ms).to_string()
}

/// A time as the wire shows it ([`format_time`]), written without an intermediate string.
#[derive(Clone, Copy)]
pub(crate) struct WireTime(pub(crate) Millis);

impl fmt::Display for WireTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::{Datelike, Timelike};
        let time = chrono::DateTime::from_timestamp_millis(self.0).unwrap_or_default();
        if !(0..=9999).contains(&time.year()) {
            // Years RFC 3339 cannot write in four digits: chrono's own (signed, longer) form.
            return f.write_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        }
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            time.year(),
            time.month(),
            time.day(),
            time.hour(),
            time.minute(),
            time.second(),
            time.timestamp_subsec_millis()
        )
    }
}

impl Serialize for WireTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
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

/// One entry of a listing, borrowed from the listing: a 1000-entry page is written straight into
/// the response without a string allocated per key, name or time.
#[derive(Serialize)]
struct ListObject<'a> {
    key: EntryKey<'a>,
    name: &'a str,
    modified: WireTime,
    mime: &'a str,
    folder: bool,
    #[serde(rename = "isFolder")]
    is_folder: bool,
    size: u64,
}

/// An entry's key: the path as sent without its trailing slashes, then '/', then the name.
struct EntryKey<'a> {
    prefix: &'a str,
    name: &'a str,
}

impl Serialize for EntryKey<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}/{}", self.prefix, self.name))
    }
}

/// The `objects` array of a listing.
struct ListObjects<'a> {
    prefix: &'a str,
    entries: &'a [ListEntry],
}

impl Serialize for ListObjects<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.entries.iter().map(|entry| ListObject {
            key: EntryKey {
                prefix: self.prefix,
                name: &entry.name,
            },
            name: &entry.name,
            modified: WireTime(entry.modified),
            mime: &entry.mime,
            folder: entry.is_folder,
            is_folder: entry.is_folder,
            size: entry.size,
        }))
    }
}

#[derive(Serialize)]
pub(crate) struct ListResponse<'a> {
    success: bool,
    errors: [&'a str; 0],
    path: &'a str,
    objects: ListObjects<'a>,
    page: u64,
    #[serde(rename = "totalPages")]
    total_pages: u64,
    #[serde(rename = "objectStorageUsed")]
    object_storage_used: u64,
    #[serde(rename = "objectStorageUsedHuman")]
    object_storage_used_human: String,
}

impl<'a> ListResponse<'a> {
    /// `path_as_sent` is the request's path exactly as given (`None` or empty for the root).
    pub(crate) fn new(path_as_sent: Option<&'a str>, listing: &'a Listing) -> ListResponse<'a> {
        let echoed = match path_as_sent {
            Some(p) if !p.is_empty() => p,
            _ => "/",
        };
        ListResponse {
            success: true,
            errors: [],
            path: echoed,
            objects: ListObjects {
                prefix: echoed.trim_end_matches('/'),
                entries: &listing.entries,
            },
            page: listing.page,
            total_pages: listing.total_pages,
            object_storage_used: listing.usage.bytes,
            object_storage_used_human: human_size(listing.usage.bytes),
        }
    }

    /// About how many bytes the JSON takes, to size the response buffer once.
    pub(crate) fn size_hint(&self) -> usize {
        let per_entry = 150 + 2 * self.objects.prefix.len();
        256 + self
            .objects
            .entries
            .iter()
            .map(|entry| per_entry + 2 * entry.name.len() + entry.mime.len())
            .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let bytes = serde_json::to_vec(&response).expect("serializes");
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
        let json = serde_json::to_value(&root).expect("serializes");
        assert_eq!(json["path"], "/");
        assert_eq!(json["objects"][0]["key"], "/sub");
    }
}
