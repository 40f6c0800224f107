//! Operating endpoints for a fleet behind a load balancer: `/healthz` (the process answers),
//! `/readyz` (the metadata and blob stores answer) and `/metrics` (Prometheus text format), plus
//! the middleware that counts requests by endpoint and status and times them.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

pub(super) async fn healthz() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match state.service.ready().await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"ready"}"#.to_owned(),
        )
            .into_response(),
        Err(failure) => {
            // The answer gets the fixed sentence; the log keeps every cause.
            tracing::warn!(reason = %super::CauseChain(&failure), "not ready");
            let body = serde_json::json!({ "status": "unavailable", "reason": failure.to_string() }).to_string();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => {
            let mut response = handle.render().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"metrics are off"}"#,
        )
            .into_response(),
    }
}

/// Counts every request by endpoint (the route pattern, never the raw path) and status, and
/// records its latency.
pub(super) async fn track(request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("endpoint", endpoint), ("method", method), ("status", status)];
    metrics::counter!("stowage_http_requests_total", &labels).increment(1);
    metrics::histogram!("stowage_http_request_duration_seconds", &labels[..2]).record(started.elapsed().as_secs_f64());
    response
}
