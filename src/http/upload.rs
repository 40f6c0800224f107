//! `/object/set`: the multipart body is streamed part by part. No byte of `objectData` reaches
//! storage before the caller's write permission on the organization is known: when
//! `organizationId` came first (every known client sends it first), permission is checked and the
//! body streams into a fresh blob as it arrives; when `objectData` comes first, up to
//! [`LATE_ORGANIZATION_BUFFER`] of it is held in memory until `organizationId` arrives, and a
//! longer one is refused with a sentence saying to send `organizationId` first. Each request holds
//! one of the caller's upload slots (`max_uploads_per_user`). Multipart decoding for the other
//! endpoints (text fields only) lives here too.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use futures::{StreamExt, stream};

use super::fields::{BodyError, FieldError, Fields};
use super::wire::Outcome;
use super::{ApiError, ApiResult, AppState, header_text, ok, principal};
use crate::service::{Access, ServiceError, Upload};

/// Longest text part (`organizationId`, `key`).
const MAX_TEXT_PART: usize = 64 * 1024;
/// Most parts in one request.
const MAX_PARTS: usize = 64;
/// Most of `objectData` held in memory when it comes before `organizationId`.
const LATE_ORGANIZATION_BUFFER: usize = 1024 * 1024;
/// After refusing an oversized upload, how much more of the body is read (and dropped) so that
/// the client receives the 413 instead of a reset connection.
const DRAIN_AFTER_REFUSAL: u64 = 64 * 1024 * 1024;
/// ... and for how long at most: a body trickled slowly is not read for ever. The answer then
/// goes out and the connection closes with the rest of the body unread.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

const SET_SHAPE: &str = "send multipart/form-data with the parts organizationId, key and objectData (a file)";

fn multipart_error(e: multer::Error) -> ApiError {
    // multer's "failed to read stream" alone does not say why: add the cause (a body that stalled,
    // part headers that never end).
    let reason = match std::error::Error::source(&e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    };
    BodyError::Unparseable(format!("malformed multipart body: {reason}")).into()
}

async fn read_text_part(
    mut field: multer::Field<'_>,
    name: &'static str,
    backlog: &Backlog,
) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        backlog.delivered(chunk.len());
        if buf.len() + chunk.len() > MAX_TEXT_PART {
            return Err(FieldError::Invalid {
                field: name,
                reason: format!("it is longer than {MAX_TEXT_PART} bytes"),
            }
            .into());
        }
        buf.extend_from_slice(&chunk);
    }
    String::from_utf8(buf).map_err(|_| {
        FieldError::Invalid {
            field: name,
            reason: "it is not valid UTF-8".into(),
        }
        .into()
    })
}

fn set_once(slot: &mut Option<String>, value: String, name: &'static str) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(FieldError::Invalid {
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
        let value = read_text_part(field, "multipart field", &Backlog::default()).await?;
        pairs.push((name, value));
    }
    Ok(Fields::from_pairs(pairs))
}

/// Most bytes the multipart parser may hold that have not been handed out as part data: part
/// headers, boundaries, and whatever precedes the first boundary. Past it, the body is refused,
/// so a body that never reaches a boundary cannot grow the parser's buffer without bound.
const MAX_BACKLOG: u64 = 4 * 1024 * 1024;

/// Counts bytes read from the body minus bytes delivered as part data.
#[derive(Clone, Default)]
struct Backlog {
    held: Arc<AtomicU64>,
}

impl Backlog {
    /// The body as a stream that fails once the backlog passes [`MAX_BACKLOG`].
    fn watch(
        &self,
        body: impl futures::Stream<Item = Result<Bytes, axum::Error>> + Send + 'static,
    ) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let this = self.clone();
        body.map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            let len = chunk.len() as u64;
            if this.held.fetch_add(len, Ordering::Relaxed) + len > MAX_BACKLOG {
                return Err(std::io::Error::other(format!(
                    "more than {MAX_BACKLOG} bytes of part headers or framing without part data"
                )));
            }
            Ok(chunk)
        })
    }

    fn delivered(&self, bytes: usize) {
        let _ = self.held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            Some(held.saturating_sub(bytes as u64))
        });
    }
}

/// The request body, shared by the multipart parser and the handler. Once a refusal is decided,
/// the handler takes the body back and drains it directly: the parser would append whatever it
/// is given to its buffer and scan all of it again on every read while it looks for a boundary or
/// the end of a part's headers, so draining through it costs memory and quadratic time.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Option<BodyDataStream>>>);

impl SharedBody {
    fn new(body: Body) -> SharedBody {
        SharedBody(Arc::new(Mutex::new(Some(body.into_data_stream()))))
    }

    /// Takes the rest of the body; the parser sees its end from then on.
    fn take_rest(&self) -> Option<BodyDataStream> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl futures::Stream for SharedBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.0.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            Some(body) => body.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }
}

/// The parts of a set request as they arrive.
#[derive(Default)]
struct SetParts {
    organization: Option<String>,
    key: Option<String>,
    upload: Option<Upload>,
    /// `objectData` that came before `organizationId`, held until permission is known.
    early: Option<Vec<u8>>,
}

pub(super) async fn set(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult {
    let body = request.into_body();
    // Every refusal before the body is consumed reads (and drops) the rest of it first, up to a
    // bound, so that clients which send the whole body before reading see the answer instead of
    // a reset connection (unless the client asked `Expect: 100-continue`: see `refuse_unread`).
    let who = match principal(&state, &headers, client).await {
        Ok(who) => who,
        Err(e) => return Err(refuse_unread(&headers, body, e).await),
    };
    let _slot = match state.service.upload_slot(&who) {
        Ok(slot) => slot,
        Err(e) => return Err(refuse_unread(&headers, body, e.into()).await),
    };
    let content_type = header_text(&headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    let limit = state.service.limits().max_object_size;
    let declared: Option<u64> = header_text(&headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|length| length > limit.saturating_add(MAX_TEXT_PART as u64 * 4)) {
        return Err(refuse_unread(&headers, body, ServiceError::TooLarge { limit }.into()).await);
    }
    if !content_type.to_ascii_lowercase().starts_with("multipart/form-data") {
        let missing = FieldError::Invalid {
            field: "objectData",
            reason: format!("it is missing: {SET_SHAPE}"),
        };
        return Err(refuse_unread(&headers, body, missing.into()).await);
    }
    let boundary = match multer::parse_boundary(content_type) {
        Ok(boundary) => boundary,
        Err(e) => return Err(refuse_unread(&headers, body, multipart_error(e)).await),
    };
    let backlog = Backlog::default();
    let shared = SharedBody::new(body);
    let mut multipart = multer::Multipart::new(backlog.watch(shared.clone()), boundary);
    let mut parts = SetParts::default();
    let mut result = receive(&state, &who, &mut multipart, &mut parts, &backlog).await;
    drop(multipart);
    if result.is_ok()
        && let Some(early) = parts.early.take()
    {
        result = upload_early(&state, &who, parts.organization.as_deref(), early, &mut parts.upload).await;
    }
    let SetParts {
        organization,
        key,
        upload,
        ..
    } = parts;
    if let Err(e) = result {
        if let Some(upload) = upload {
            upload.abort().await;
        }
        return Err(match shared.take_rest() {
            Some(rest) => drain_body(Body::from_stream(rest), e).await,
            None => e,
        });
    }
    let Some(upload) = upload else {
        return Err(FieldError::Invalid {
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
            return Err(FieldError::Missing(missing).into());
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
    backlog: &Backlog,
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
                read_text_part(field, "organizationId", backlog).await?,
                "organizationId",
            )?,
            "key" => set_once(&mut parts.key, read_text_part(field, "key", backlog).await?, "key")?,
            "objectData" => {
                if parts.upload.is_some() || parts.early.is_some() {
                    return Err(FieldError::Invalid {
                        field: "objectData",
                        reason: "it is given more than once; send it once".into(),
                    }
                    .into());
                }
                let Some(org) = &parts.organization else {
                    parts.early = Some(hold_early(&mut field, backlog).await?);
                    continue;
                };
                state.service.authorize(who, org, Access::Write).await?;
                let upload = parts.upload.insert(state.service.begin_upload().await?);
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    backlog.delivered(chunk.len());
                    upload.push(chunk).await?;
                }
            }
            _ => skip(&mut field, backlog).await?,
        }
    }
    Ok(())
}

/// Holds `objectData` that came before `organizationId` in memory, up to
/// [`LATE_ORGANIZATION_BUFFER`]: nothing is stored for a caller whose permission is not known.
async fn hold_early(field: &mut multer::Field<'_>, backlog: &Backlog) -> Result<Vec<u8>, ApiError> {
    let mut held = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        backlog.delivered(chunk.len());
        if held.len() + chunk.len() > LATE_ORGANIZATION_BUFFER {
            return Err(FieldError::Invalid {
                field: "objectData",
                reason: format!(
                    "it came before organizationId and is longer than {} KiB; send organizationId (and key) \
                     before objectData",
                    LATE_ORGANIZATION_BUFFER / 1024
                ),
            }
            .into());
        }
        held.extend_from_slice(&chunk);
    }
    Ok(held)
}

/// Stores `objectData` that was held until the organization was known, once write permission
/// on it is checked. Without `organizationId` nothing is stored (the caller reports it missing).
async fn upload_early(
    state: &AppState,
    who: &crate::service::Principal,
    organization: Option<&str>,
    early: Vec<u8>,
    slot: &mut Option<Upload>,
) -> Result<(), ApiError> {
    let Some(org) = organization else {
        return Err(FieldError::Missing("organizationId").into());
    };
    state.service.authorize(who, org, Access::Write).await?;
    let upload = slot.insert(state.service.begin_upload().await?);
    upload.push(Bytes::from(early)).await?;
    Ok(())
}

/// Refuses a request whose body has not been read yet. A client that asked `Expect:
/// 100-continue` has not sent the body and will not once it has the answer: it is refused at once.
/// Any other client may be sending the body before it reads: the body is drained first.
pub(super) async fn refuse_unread(headers: &HeaderMap, body: Body, error: ApiError) -> ApiError {
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        return error;
    }
    drain_body(body, error).await
}

/// Reads and drops an unread body, up to a bound in bytes and in time, then hands back the error
/// to answer with.
pub(super) async fn drain_body(body: Body, error: ApiError) -> ApiError {
    let mut stream = body.into_data_stream();
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_AFTER_REFUSAL {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    error
}

/// Reads and drops the rest of a part that is not used.
async fn skip(field: &mut multer::Field<'_>, backlog: &Backlog) -> Result<(), ApiError> {
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        backlog.delivered(chunk.len());
    }
    Ok(())
}
