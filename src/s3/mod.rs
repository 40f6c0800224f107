//! The S3-compatible front door: the S3 protocol (routing, XML, SigV4 header and presigned
//! signatures, aws-chunked bodies) comes from `s3s`, kept behind this module; what each request
//! means is decided by the service layer ([`crate::service::Service`]'s `s3_*` use cases), the same
//! one the QuantConnect API uses, so both doors see one store with one set of rules.
//!
//! This module owns the listener's request path: failed-authentication limits, request ids
//! (`x-amz-request-id`), per-operation metrics, the translation of service errors into S3 error
//! codes (`error.rs`), credentials and access checks (`auth.rs`), and the operations (`ops.rs`,
//! with listings in `list.rs` and HTTP preconditions and ranges in `conditions.rs`).

mod attributes;
mod auth;
mod conditions;
mod error;
mod host;
mod list;
mod ops;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use crate::service::Service;

/// How the S3 door is set up.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// The region requests are signed for and `GetBucketLocation` names.
    pub region: String,
    /// With a domain, `BUCKET.DOMAIN` names a bucket (virtual-host style).
    pub domain: Option<String>,
    /// Largest XML request body (DeleteObjects, CompleteMultipartUpload), in bytes.
    pub max_xml_bytes: usize,
}

/// What one request did, as the access check saw it (for failed-authentication counting and
/// metrics): filled in by `auth.rs`, read after the answer.
#[derive(Debug, Default)]
pub(crate) struct CallRecord {
    /// The request carried a valid signature and reached the access check.
    authenticated: AtomicBool,
    operation: std::sync::Mutex<Option<String>>,
}

impl CallRecord {
    pub(crate) fn authenticated(&self, operation: &str) {
        self.authenticated.store(true, Ordering::Relaxed);
        if let Ok(mut slot) = self.operation.lock() {
            *slot = Some(operation.to_owned());
        }
    }

    pub(crate) fn operation(&self, operation: &str) {
        if let Ok(mut slot) = self.operation.lock() {
            *slot = Some(operation.to_owned());
        }
    }

    fn operation_name(&self) -> String {
        self.operation
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

#[derive(Clone)]
struct Door {
    service: Arc<Service>,
    s3: s3s::service::S3Service,
}

/// The S3 door as a router for [`crate::server::run_with_tls`] (with paths kept as sent: a
/// signature covers the exact path).
pub fn router(service: Arc<Service>, settings: S3Settings) -> axum::Router {
    let mut builder = s3s::service::S3ServiceBuilder::new(ops::Stowage::new(service.clone(), settings.region.clone()));
    builder.set_auth(auth::Keys::new(service.clone()));
    builder.set_access(auth::Access::new(service.clone()));
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = settings.max_xml_bytes;
    // Browser-form uploads (POST object) would be buffered whole: keep them small.
    config.post_object_max_file_size = 0;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(config))));
    if let Some(domain) = settings.domain.as_deref().filter(|d| !d.is_empty()) {
        builder.set_host(host::Domain::new(domain));
    }
    let door = Door {
        service,
        s3: builder.build(),
    };
    axum::Router::new().fallback(handle).with_state(door)
}

/// A browser-form upload (POST object): a POST whose body is `multipart/form-data`.
fn is_form_upload(request: &Request) -> bool {
    request.method() == axum::http::Method::POST
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// Every S3 request: refuse addresses over the failed-authentication limit, give the request an
/// id, let `s3s` parse, authenticate and route it into [`ops::Stowage`], then count it.
async fn handle(
    State(door): State<Door>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    let span =
        tracing::info_span!("s3", request_id = %request_id, method = %request.method(), path = %request.uri().path());
    let _entered = span.enter();
    let record = Arc::new(CallRecord::default());
    let mut sends_body = false;
    let mut response = if let Some(retry_after) = door.service.s3_address_blocked(client.ip()) {
        error::slow_down(retry_after, &request_id)
    } else if is_form_upload(&request) {
        // s3s would buffer the whole form before any check: refuse it unread.
        error::form_upload_not_implemented(&request_id)
    } else {
        request.extensions_mut().insert(record.clone());
        // A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112
        // section 6.3); say so, as s3s checks signed payloads against a known length.
        let headers = request.headers();
        sends_body = headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() != "0");
        if !headers.contains_key(header::CONTENT_LENGTH) && !headers.contains_key(header::TRANSFER_ENCODING) {
            request
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        // One key lookup per request: the secret lookup hands its identity to the access check.
        let answer = auth::LOOKED_UP
            .scope(std::cell::RefCell::new(None), door.s3.clone().oneshot(request))
            .await;
        match answer {
            Ok(response) => response.map(Body::new),
            Err(e) => {
                tracing::error!(error = ?e, "the S3 layer failed to answer");
                error::internal(&request_id)
            }
        }
    };
    // s3s answers HeadObject 200 whatever the operation says; a ranged HEAD is 206 (as GET).
    if response.status() == StatusCode::OK && response.headers().contains_key(header::CONTENT_RANGE) {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    let status = response.status();
    if sends_body && (status.is_client_error() || status.is_server_error()) {
        // Refused before its body was read (a client waiting on `Expect: 100-continue` may then
        // never send it): close the connection rather than read the next request from the
        // middle of an unread body.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if !record.authenticated.load(Ordering::Relaxed) && status == StatusCode::FORBIDDEN {
        door.service.s3_authentication_failed(client.ip());
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amz-request-id", value);
    }
    let operation = record.operation_name();
    let labels = [("operation", operation), ("status", status.as_u16().to_string())];
    metrics::counter!("stowage_s3_requests_total", &labels).increment(1);
    metrics::histogram!("stowage_s3_request_duration_seconds", &labels[..1]).record(started.elapsed().as_secs_f64());
    if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
        tracing::warn!(status = status.as_u16(), "S3 request failed");
    } else {
        tracing::debug!(status = status.as_u16(), "S3 request");
    }
    response.into_response()
}
