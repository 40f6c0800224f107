//! Wire types: the only place that knows the JSON field names of the API (spec section 5).

use serde::Serialize;

use crate::content::human_size;
use crate::meta::{ListEntry, Millis, ObjectMeta};
use crate::service::{DownloadTicket, Listing};

/// RFC 3339, UTC, milliseconds: `2021-11-26T15:18:27.693Z`.
pub fn format_time(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Serialize)]
pub struct Outcome {
    pub success: bool,
    pub errors: Vec<String>,
}

impl Outcome {
    pub fn ok() -> Outcome {
        Outcome {
            success: true,
            errors: Vec::new(),
        }
    }

    pub fn failed(message: String) -> Outcome {
        Outcome {
            success: false,
            errors: vec![message],
        }
    }
}

#[derive(Serialize)]
pub struct Metadata {
    pub key: String,
    pub modified: String,
    pub created: String,
    pub size: u64,
    pub md5: String,
    pub mime: String,
    pub preview: Option<String>,
}

#[derive(Serialize)]
pub struct PropertiesResponse {
    pub success: bool,
    pub errors: Vec<String>,
    pub metadata: Metadata,
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
pub struct JobResponse {
    pub success: bool,
    pub errors: Vec<String>,
    #[serde(rename = "jobId")]
    pub job_id: String,
    pub url: Option<String>,
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

#[derive(Serialize)]
pub struct ListObject {
    pub key: String,
    pub name: String,
    pub modified: String,
    pub mime: String,
    pub folder: bool,
    #[serde(rename = "isFolder")]
    pub is_folder: bool,
    pub size: u64,
}

#[derive(Serialize)]
pub struct ListResponse {
    pub success: bool,
    pub errors: Vec<String>,
    pub path: String,
    pub objects: Vec<ListObject>,
    pub page: u64,
    #[serde(rename = "totalPages")]
    pub total_pages: u64,
    #[serde(rename = "objectStorageUsed")]
    pub object_storage_used: u64,
    #[serde(rename = "objectStorageUsedHuman")]
    pub object_storage_used_human: String,
}

impl ListResponse {
    /// `path_as_sent` is the request's path exactly as given (`None` or empty for the root).
    pub fn new(path_as_sent: Option<&str>, listing: Listing) -> ListResponse {
        let echoed = match path_as_sent {
            Some(p) if !p.is_empty() => p.to_owned(),
            _ => "/".to_owned(),
        };
        // Entry keys: the path as sent without its trailing slashes, then '/', then the name.
        let prefix = echoed.trim_end_matches('/');
        let objects = listing.entries.into_iter().map(|entry: ListEntry| ListObject {
            key: format!("{prefix}/{}", entry.name),
            modified: format_time(entry.modified),
            folder: entry.is_folder,
            is_folder: entry.is_folder,
            name: entry.name,
            mime: entry.mime,
            size: entry.size,
        });
        ListResponse {
            success: true,
            errors: Vec::new(),
            path: echoed.clone(),
            objects: objects.collect(),
            page: listing.page,
            total_pages: listing.total_pages,
            object_storage_used: listing.usage.bytes,
            object_storage_used_human: human_size(listing.usage.bytes),
        }
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
}
