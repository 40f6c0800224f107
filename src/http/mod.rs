//! The HTTP layer: routing under `/api/v2/`, slash collapsing, request decoding, the auth check,
//! error → response mapping and panic catching. Handlers are thin: they decode, call the
//! [`Service`], and encode with the wire types.

mod console;
pub(crate) mod fields;
mod ops;
mod upload;
pub(crate) mod wire;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::net::TrustedProxies;
use crate::service::error::CauseChain;
use crate::service::{DownloadError, Principal, Service, ServiceError};
use fields::{BodyError, FieldError, Fields};
use wire::{JobResponse, ListResponse, Outcome, PropertiesResponse};

/// Largest body accepted by the endpoints other than `/object/set`.
const MAX_FIELDS_BODY: usize = 1024 * 1024;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    /// Base of download URLs; when `None`, taken from the request's `Host` header.
    pub public_url: Option<String>,
    /// Renders `/metrics`; `None` when no recorder is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error("Unknown endpoint: {0}")]
    UnknownEndpoint(String),
    #[error("Method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut bytes = Vec::with_capacity(128);
    if serde_json::to_writer(&mut bytes, body).is_err() {
        bytes = br#"{"success":false,"errors":["internal error"]}"#.to_vec();
    }
    json_bytes_response(status, bytes)
}

/// A response of JSON already written.
fn json_bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Service(ServiceError::Unauthorized(_)) => StatusCode::UNAUTHORIZED,
            ApiError::Service(ServiceError::RateLimited { .. } | ServiceError::TooManyUploads { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Service(ServiceError::TooLarge { .. }) | ApiError::Body(BodyError::TooLarge(_)) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Service(ServiceError::Unavailable(_))
            | ApiError::Download(DownloadError::Unavailable(_) | DownloadError::Busy { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Service(_) | ApiError::Field(_) => StatusCode::OK,
            ApiError::Body(_) => StatusCode::BAD_REQUEST,
            ApiError::Download(DownloadError::NotFound) | ApiError::UnknownEndpoint(_) => StatusCode::NOT_FOUND,
            ApiError::Download(DownloadError::Expired) => StatusCode::GONE,
            ApiError::Download(DownloadError::Revoked) => StatusCode::FORBIDDEN,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        };
        if status == StatusCode::SERVICE_UNAVAILABLE && !matches!(self, ApiError::Download(DownloadError::Busy { .. }))
        {
            // The client reads the fixed sentence; the log (inside the request's span, with its
            // id) keeps every cause under it.
            tracing::error!(error = %CauseChain(&self), "storage failure");
        }
        let retry_after = match &self {
            ApiError::Service(ServiceError::RateLimited { retry_after }) => Some(*retry_after),
            ApiError::Service(ServiceError::TooManyUploads { .. }) => Some(1),
            ApiError::Download(DownloadError::Busy { .. }) => Some(2),
            _ => None,
        };
        let mut response = json_response(status, &Outcome::failed(self.to_string()));
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"stowage\""),
            );
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

/// The API router, with panic catching and `/metrics` beside the API. Requests reach it through
/// [`prepare_request`].
pub fn app(state: AppState) -> Router {
    with_layers(api_routes().route("/metrics", get(ops::metrics)), state)
}

/// [`app`] without `/metrics` (it answers 404 here), for a server whose metrics have their own
/// address ([`metrics_app`]).
pub fn api_without_metrics(state: AppState) -> Router {
    with_layers(api_routes(), state)
}

/// The router of the separate metrics address (`metrics_listen`): `GET /metrics` and nothing
/// else.
pub fn metrics_app(state: AppState) -> Router {
    with_layers(Router::new().route("/metrics", get(ops::metrics)), state)
}

fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/authenticate", get(authenticate).post(authenticate))
        .route("/api/v2/object/set", post(upload::set))
        .route("/api/v2/object/properties", post(properties))
        .route("/api/v2/object/get", post(get_object))
        .route("/api/v2/object/delete", post(delete))
        .route("/api/v2/object/list", post(list))
        .route("/api/v2/download/{job}", get(download))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .merge(console::routes())
}

/// Fallbacks, request counting, panic catching and request ids around `routes`.
fn with_layers(routes: Router<AppState>, state: AppState) -> Router {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    let api = routes
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn(ops::track))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(state);
    // Outermost first: give every request an id (or keep the caller's), log within a span that
    // carries it, and echo it in the answer.
    api.layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// The address a request reached (this server's side of the connection).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalAddr(pub(crate) SocketAddr);

/// Readies a request for the router: collapses runs of `/` in its path, records the client's
/// address (through trusted proxies) and the local address, and makes its body fail after
/// `body_idle_timeout` without data.
pub(crate) fn prepare_request(
    request: Request,
    peer: SocketAddr,
    local: SocketAddr,
    body_idle_timeout: Duration,
    proxies: &TrustedProxies,
    collapse: bool,
) -> Request {
    let mut request = if collapse { collapse_slashes(request) } else { request };
    let client = proxies.client(peer, request.headers());
    if proxies.says_https(peer, request.headers()) {
        request.extensions_mut().insert(console::ProxiedHttps);
    }
    request.extensions_mut().insert(ConnectInfo(client));
    request.extensions_mut().insert(LocalAddr(local));
    request.map(|body| Body::new(tower_http::timeout::TimeoutBody::new(body_idle_timeout, body)))
}

/// `/api/v2//object/set` is a real request shape: runs of `/` in the path collapse to one.
fn collapse_slashes(mut request: Request) -> Request {
    let path = request.uri().path();
    if !path.contains("//") {
        return request;
    }
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    let rebuilt = match request.uri().query() {
        Some(query) => format!("{collapsed}?{query}"),
        None => collapsed,
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = rebuilt.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    tracing::error!(request_id = %id, "a request handler panicked");
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &Outcome::failed(format!("internal error (request id {id})")),
    )
}

async fn unknown_endpoint(request: Request) -> ApiError {
    ApiError::UnknownEndpoint(format!("{} {}", request.method(), request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the auth headers of a request from `client`.
async fn principal(state: &AppState, headers: &HeaderMap, client: SocketAddr) -> Result<Principal, ApiError> {
    let authorization = header_text(headers, header::AUTHORIZATION.as_str());
    let timestamp = header_text(headers, "timestamp");
    Ok(state
        .service
        .authenticate(authorization, timestamp, client.ip())
        .await?)
}

/// Checks the auth headers, then reads and decodes the small body. A refusal before the body is
/// read (authentication, a declared length over the limit) drains the body first, up to a bound,
/// so that a client which sends the whole body before reading sees the answer instead of a reset
/// connection; a client that asked `Expect: 100-continue` is answered at once.
async fn authenticated_fields(
    state: &AppState,
    headers: &HeaderMap,
    client: SocketAddr,
    body: Body,
) -> Result<(Principal, Fields), ApiError> {
    let who = match principal(state, headers, client).await {
        Ok(who) => who,
        Err(e) => return Err(upload::refuse_unread(headers, body, e).await),
    };
    let declared: Option<usize> = header_text(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|length| length > MAX_FIELDS_BODY) {
        let refusal = ApiError::from(BodyError::TooLarge(MAX_FIELDS_BODY));
        return Err(upload::refuse_unread(headers, body, refusal).await);
    }
    Ok((who, read_fields(headers, body).await?))
}

/// Reads a small request body whole. A body over [`MAX_FIELDS_BODY`] is refused (413) after the
/// rest of it has been read and dropped (up to a bound), so that a client which sends the whole
/// body before reading sees the answer instead of a reset connection.
async fn read_small_body(body: Body) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Unparseable(e.to_string()))?;
        if buf.len() + chunk.len() > MAX_FIELDS_BODY {
            let refusal = ApiError::from(BodyError::TooLarge(MAX_FIELDS_BODY));
            return Err(upload::drain_body(Body::from_stream(stream), refusal).await);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Reads and decodes a small request body.
async fn read_fields(headers: &HeaderMap, body: Body) -> Result<Fields, ApiError> {
    let bytes = read_small_body(body).await?;
    let content_type = header_text(headers, header::CONTENT_TYPE.as_str());
    if let Some(ct) = content_type
        && ct.to_ascii_lowercase().starts_with("multipart/form-data")
    {
        return upload::text_fields(ct, bytes).await;
    }
    if bytes.len() <= DECODE_INLINE_BYTES {
        return Ok(Fields::decode(content_type, &bytes)?);
    }
    // A large body (a job request naming 50,000 keys: ~100 ms of CPU in a debug build) is
    // decoded on the blocking pool, so that the requests of everyone else keep the runtime's
    // few threads.
    let content_type = content_type.map(str::to_owned);
    tokio::task::spawn_blocking(move || Fields::decode(content_type.as_deref(), &bytes))
        .await
        .map_err(|e| BodyError::Unparseable(e.to_string()))?
        .map_err(ApiError::from)
}

/// Bodies up to this size are decoded on the runtime's own threads.
const DECODE_INLINE_BYTES: usize = 16 * 1024;

/// Marks a request that arrived over TLS (set by the accept loop).
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// Where clients reach this server: the configured public URL, else `http(s)://` and the `Host`
/// header (or the URI's authority under HTTP/2), else the address the request reached.
fn base_url(state: &AppState, request: &Request) -> String {
    if let Some(url) = &state.public_url {
        return url.clone();
    }
    let valid = |h: &&str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
    let host = header_text(request.headers(), header::HOST.as_str())
        .filter(valid)
        .map(str::to_owned)
        .or_else(|| {
            request
                .uri()
                .authority()
                .map(|a| a.as_str().to_owned())
                .filter(|a| valid(&a.as_str()))
        })
        .or_else(|| request.extensions().get::<LocalAddr>().map(|l| l.0.to_string()))
        .unwrap_or_else(|| "127.0.0.1:5612".to_owned());
    let scheme = if request.extensions().get::<Https>().is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

fn ok<T: Serialize>(body: &T) -> ApiResult {
    Ok(json_response(StatusCode::OK, body))
}

async fn authenticate(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> ApiResult {
    principal(&state, &headers, client).await?;
    ok(&Outcome::ok())
}

async fn properties(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult {
    let (who, fields) = authenticated_fields(&state, &headers, client, request.into_body()).await?;
    let org = fields.required_text("organizationId")?;
    let key = fields.required_text("key")?;
    let meta = state.service.properties(&who, &org, &key).await?;
    ok(&PropertiesResponse::from(meta))
}

async fn get_object(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult {
    let base = base_url(&state, &request);
    let (who, fields) = authenticated_fields(&state, &headers, client, request.into_body()).await?;
    let org = fields.required_text("organizationId")?;
    if let Some(job) = fields.text("jobId")? {
        let ticket = state.service.poll_download(&who, &org, &job, &base).await?;
        return ok(&JobResponse::from(ticket));
    }
    if let Some(keys) = fields.text_list("keys")? {
        let ticket = state.service.create_download(&who, &org, &keys, &base).await?;
        return ok(&JobResponse::from(ticket));
    }
    if let Some(key) = fields.text("key")? {
        // Legacy shape (lean CLI 2023-08 to 2024-04): answers exactly like /object/properties.
        let meta = state.service.properties(&who, &org, &key).await?;
        return ok(&PropertiesResponse::from(meta));
    }
    if fields.has("keys") {
        return Err(ServiceError::NoKeys.into());
    }
    Err(FieldError::Missing("keys").into())
}

async fn delete(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult {
    let (who, fields) = authenticated_fields(&state, &headers, client, request.into_body()).await?;
    let org = fields.required_text("organizationId")?;
    let key = fields.required_text("key")?;
    state.service.delete(&who, &org, &key).await?;
    ok(&Outcome::ok())
}

async fn list(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult {
    let (who, fields) = authenticated_fields(&state, &headers, client, request.into_body()).await?;
    let org = fields.required_text("organizationId")?;
    let path = fields.text("path")?;
    let page = fields.page("page")?;
    let listing = state
        .service
        .list(&who, &org, path.as_deref().unwrap_or(""), page)
        .await?;
    Ok(json_bytes_response(
        StatusCode::OK,
        ListResponse::new(path.as_deref(), &listing).to_json(),
    ))
}

/// The one value of a query parameter; empty when it is missing or given more than once.
fn query_param(query: Option<&str>, name: &str) -> String {
    let mut values = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).filter(|(k, _)| k == name);
    match (values.next(), values.next()) {
        (Some((_, value)), None) => value.into_owned(),
        _ => String::new(),
    }
}

/// A download URL. Anything malformed in it (a job id that is not UTF-8, a parameter given twice)
/// is an unknown link (JSON 404), never an extractor's plain-text rejection.
async fn download(
    State(state): State<AppState>,
    job: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let Ok(Path(job)) = job else {
        return Err(DownloadError::NotFound.into());
    };
    let expires = query_param(query.as_deref(), "expires");
    let user = query_param(query.as_deref(), "user");
    let signature = query_param(query.as_deref(), "signature");
    let (job, stream) = state.service.open_download(&job, &expires, &user, &signature).await?;
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"stowage-{job}.zip\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slashes_collapse() {
        let request = Request::builder()
            .uri("/api/v2//object///set?a=b//c")
            .body(Body::empty())
            .unwrap();
        let request = collapse_slashes(request);
        assert_eq!(request.uri().path(), "/api/v2/object/set");
        assert_eq!(request.uri().query(), Some("a=b//c"));
    }
}
