//! `/object/set`: the multipart body is streamed part by part. `objectData` may come before or
//! after `key` and `organizationId`, so the body goes into a fresh blob as it arrives; when the
//! organization is already known, permission is checked before a byte is stored. Multipart
//! decoding for the other endpoints (text fields only) lives here too.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use futures::stream;

use super::fields::{BodyError, Fields};
use super::wire::Outcome;
use super::{ApiError, ApiResult, AppState, header_text, ok, principal};
use crate::service::{Access, ServiceError, Upload};

/// Longest text part (`organizationId`, `key`).
const MAX_TEXT_PART: usize = 64 * 1024;
/// Most parts in one request.
const MAX_PARTS: usize = 64;
/// After refusing an oversized upload, how much more of the body is read (and dropped) so that
/// the client receives the 413 instead of a reset connection.
const DRAIN_AFTER_REFUSAL: u64 = 64 * 1024 * 1024;

const SET_SHAPE: &str = "send multipart/form-data with the parts organizationId, key and objectData (a file)";

fn multipart_error(e: multer::Error) -> ApiError {
    BodyError::Unparseable(format!("malformed multipart body: {e}")).into()
}

async fn read_text_part(mut field: multer::Field<'_>, name: &'static str) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if buf.len() + chunk.len() > MAX_TEXT_PART {
            return Err(ServiceError::InvalidField {
                field: name,
                reason: format!("it is longer than {MAX_TEXT_PART} bytes"),
            }
            .into());
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| {
        ServiceError::InvalidField {
            field: name,
            reason: "it is not valid UTF-8".into(),
        }
        .into()
    })
}

fn set_once(slot: &mut Option<String>, value: String, name: &'static str) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(ServiceError::InvalidField {
            field: name,
            reason: "it is given more than once; send it once".into(),
        }
        .into());
    }
    *slot = Some(value);
    Ok(())
}

/// Text fields of a small multipart body (for the endpoints other than `/object/set`).
pub(super) async fn text_fields(content_type: &str, body: Bytes) -> Result<Fields, ApiError> {
    let boundary = multer::parse_boundary(content_type).map_err(multipart_error)?;
    let mut multipart = multer::Multipart::new(stream::once(async move { Ok::<_, std::io::Error>(body) }), boundary);
    let mut pairs = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        if pairs.len() >= MAX_PARTS {
            return Err(BodyError::Unparseable(format!("more than {MAX_PARTS} parts")).into());
        }
        let name = field.name().unwrap_or_default().to_owned();
        let value = read_text_part(field, "multipart field").await?;
        pairs.push((name, value));
    }
    Ok(Fields::from_pairs(pairs))
}

/// The parts of a set request as they arrive.
#[derive(Default)]
struct SetParts {
    organization: Option<String>,
    key: Option<String>,
    upload: Option<Upload>,
}

pub(super) async fn set(State(state): State<AppState>, headers: HeaderMap, request: Request) -> ApiResult {
    let who = principal(&state, &headers).await?;
    let content_type = header_text(&headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    let limit = state.service.limits().max_object_size;
    let declared: Option<u64> = header_text(&headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|length| length > limit.saturating_add(MAX_TEXT_PART as u64 * 4)) {
        return Err(ServiceError::TooLarge { limit }.into());
    }
    if !content_type.to_ascii_lowercase().starts_with("multipart/form-data") {
        return Err(ServiceError::InvalidField {
            field: "objectData",
            reason: format!("it is missing: {SET_SHAPE}"),
        }
        .into());
    }
    let boundary = multer::parse_boundary(content_type).map_err(multipart_error)?;
    let mut multipart = multer::Multipart::new(request.into_body().into_data_stream(), boundary);
    let mut parts = SetParts::default();
    let result = receive(&state, &who, &mut multipart, &mut parts).await;
    let SetParts {
        organization,
        key,
        upload,
    } = parts;
    if let Err(e) = result {
        if let Some(upload) = upload {
            upload.abort().await;
        }
        return Err(e);
    }
    let Some(upload) = upload else {
        return Err(ServiceError::InvalidField {
            field: "objectData",
            reason: format!("it is missing: {SET_SHAPE}"),
        }
        .into());
    };
    let (organization, key) = match (organization, key) {
        (Some(organization), Some(key)) => (organization, key),
        (organization, _) => {
            upload.abort().await;
            let missing = if organization.is_none() {
                "organizationId"
            } else {
                "key"
            };
            return Err(ServiceError::MissingField(missing).into());
        }
    };
    state.service.finish_set(&who, &organization, &key, upload).await?;
    ok(&Outcome::ok())
}

async fn receive(
    state: &AppState,
    who: &crate::service::Principal,
    multipart: &mut multer::Multipart<'static>,
    parts: &mut SetParts,
) -> Result<(), ApiError> {
    let mut count = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        count += 1;
        if count > MAX_PARTS {
            return Err(BodyError::Unparseable(format!("more than {MAX_PARTS} parts")).into());
        }
        match field.name().unwrap_or_default() {
            "organizationId" => set_once(
                &mut parts.organization,
                read_text_part(field, "organizationId").await?,
                "organizationId",
            )?,
            "key" => set_once(&mut parts.key, read_text_part(field, "key").await?, "key")?,
            "objectData" => {
                if parts.upload.is_some() {
                    return Err(ServiceError::InvalidField {
                        field: "objectData",
                        reason: "it is given more than once; send it once".into(),
                    }
                    .into());
                }
                if let Some(org) = &parts.organization {
                    state.service.authorize(who, org, Access::Write).await?;
                }
                let upload = parts.upload.insert(state.service.begin_upload().await?);
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    if let Err(e) = upload.push(&chunk).await {
                        if matches!(e, ServiceError::TooLarge { .. }) {
                            drain(&mut field).await;
                        }
                        return Err(e.into());
                    }
                }
            }
            _ => drain(&mut field).await,
        }
    }
    Ok(())
}

/// Reads and drops the rest of a part, up to a bound.
async fn drain(field: &mut multer::Field<'_>) {
    let mut seen = 0u64;
    while let Ok(Some(chunk)) = field.chunk().await {
        seen += chunk.len() as u64;
        if seen > DRAIN_AFTER_REFUSAL {
            break;
        }
    }
}
