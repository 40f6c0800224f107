//! The web console under `/console/`, on the API's listener: server-rendered pages (askama
//! templates in `templates/console/`, auto-escaped, compiled into the binary), one stylesheet and
//! one script embedded from `assets/console/`, and the requests its pages make. Handlers decode,
//! call the [`Service`](crate::service::Service) (which makes every decision: sessions,
//! permissions, quotas, key rules) and render.
//!
//! Safety, for every answer: a Content-Security-Policy that allows only this server's own script
//! and stylesheet (no inline scripts) and `frame-ancestors 'none'`; `nosniff`; no caching.
//! The session is an HttpOnly, SameSite=Strict cookie scoped to `/console` (Secure over HTTPS or
//! behind a trusted proxy that says `X-Forwarded-Proto: https`) holding only a random secret; the
//! API token never reaches a page. Every state-changing request must carry the session's CSRF token
//! (form field `csrf` or header `X-CSRF-Token`) and an `Origin` that is this server, else 403.

use std::net::SocketAddr;

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use futures::StreamExt;
use serde::Deserialize;

use super::{ApiError, AppState, Https, base_url, header_text, read_small_body, upload};
use crate::content::human_size;
use crate::meta::{ListEntry, Millis, Permissions};
use crate::service::{ConsoleUser, OrgView, ServiceError};

const COOKIE: &str = "stowage_session";
/// The sign-in form's own CSRF cookie (double submit: the form carries the same value).
const SIGN_IN_COOKIE: &str = "stowage_sign_in";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("../../assets/console/console.css");
const JS: &str = include_str!("../../assets/console/console.js");

/// The console's routes (merged into the API router).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(orgs_page))
        .route("/console/assets/{name}", get(asset))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/account", get(account_page))
        .route("/console/account/rotate", post(rotate_token))
        .route("/console/server", get(server_page))
        .route("/console/server/orgs", post(create_org))
        .route("/console/server/quota", post(set_quota))
        .route("/console/server/users", post(create_user))
        .route("/console/server/users/disable", post(disable_user))
        .route("/console/server/users/enable", post(enable_user))
        .route("/console/o/{org}", get(folder_redirect))
        .route("/console/o/{org}/", get(folder_page))
        .route("/console/o/{org}/props", get(properties_page))
        .route("/console/o/{org}/file", get(download_file))
        .route("/console/o/{org}/zip", post(download_zip))
        .route("/console/o/{org}/upload", put(upload_file))
        .route("/console/o/{org}/delete", get(delete_page).post(delete))
        .route("/console/o/{org}/members", get(members_page).post(set_member))
        .route("/console/o/{org}/members/remove", post(remove_member))
        .route("/console/{*rest}", axum::routing::any(unknown_page))
        .layer(axum::middleware::from_fn(security_headers))
}

/// The headers every console answer carries.
async fn security_headers(request: Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return page_error(StatusCode::NOT_FOUND, "Not found", "There is no such file.", None),
    };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

// --- rendering and errors ----------------------------------------------------------------------

/// The signed-in part of every page's header.
struct Chrome {
    user_name: String,
    user_id: String,
    csrf: String,
    server_admin: bool,
}

impl Chrome {
    fn of(user: &ConsoleUser) -> Option<Chrome> {
        Some(Chrome {
            user_name: user.name.clone(),
            user_id: user.id().to_string(),
            csrf: user.csrf.clone(),
            server_admin: user.server_admin,
        })
    }
}

fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => {
            let mut response = (status, html).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "a console page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be shown; try again.",
            )
                .into_response()
        }
    }
}

/// A page, or the page of its refusal (`uri`: the address asked for, the retry link of a storage
/// failure).
fn answer<T: Template>(result: Result<T, Refusal>, uri: &str) -> Response {
    match result {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => e.page(uri),
    }
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage<'a> {
    chrome: Option<Chrome>,
    heading: &'a str,
    sentence: &'a str,
    retry: Option<String>,
}

fn page_error(status: StatusCode, heading: &str, sentence: &str, retry: Option<String>) -> Response {
    render(
        status,
        &MessagePage {
            chrome: None,
            heading,
            sentence,
            retry,
        },
    )
}

/// Any other address under /console: a page saying so, with the way back (never the API's JSON).
async fn unknown_page() -> Response {
    page_error(
        StatusCode::NOT_FOUND,
        "Page not found",
        "There is no console page at this address. Start again from your organizations at /console/.",
        None,
    )
}

/// Why a console request was not served.
enum Refusal {
    /// No valid session: back to sign-in, then to `next`.
    SignIn {
        next: String,
    },
    /// A state change without the right CSRF token or Origin.
    Forged(&'static str),
    /// A form value that cannot be used (the sentence says why).
    Invalid(String),
    Service(ServiceError),
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Refusal {
        Refusal::Service(e)
    }
}

/// The status a service error is answered with on a page.
fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::OrganizationNotFound | ServiceError::PermissionDenied(_) | ServiceError::ServerAdminOnly => {
            StatusCode::FORBIDDEN
        }
        ServiceError::ObjectNotFound(_) | ServiceError::UserNotFound(_) | ServiceError::NotAMember(_) => {
            StatusCode::NOT_FOUND
        }
        ServiceError::RateLimited { .. } | ServiceError::TooManyUploads { .. } => StatusCode::TOO_MANY_REQUESTS,
        ServiceError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl Refusal {
    /// The answer, as a page; `uri` is the address asked for (the retry link of a storage
    /// failure).
    fn page(self, uri: &str) -> Response {
        match self {
            Refusal::SignIn { next } => {
                let mut response = Redirect::to(&format!("/console/sign-in?next={}", encode(&next))).into_response();
                forget_session(&mut response);
                response
            }
            Refusal::Forged(why) => page_error(StatusCode::FORBIDDEN, "Request refused", why, None),
            Refusal::Invalid(why) => page_error(StatusCode::BAD_REQUEST, "That did not work", &why, None),
            Refusal::Service(e) => {
                let status = status_of(&e);
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    tracing::error!(error = %super::CauseChain(&e), "storage failure (console)");
                    let sentence = format!("{e}.");
                    return page_error(status, "The store is not answering", &sentence, Some(uri.to_owned()));
                }
                page_error(status, "That did not work", &e.to_string(), None)
            }
        }
    }

    /// The answer for the upload script: JSON `{success, error}`.
    fn json(self) -> Response {
        let (status, error) = match self {
            Refusal::SignIn { .. } => (
                StatusCode::UNAUTHORIZED,
                "your session has ended; sign in again and retry".to_owned(),
            ),
            Refusal::Forged(why) => (StatusCode::FORBIDDEN, why.to_owned()),
            Refusal::Invalid(why) => (StatusCode::BAD_REQUEST, why),
            Refusal::Service(e) => (status_of(&e), e.to_string()),
        };
        upload_answer(status, Some(error))
    }
}

fn upload_answer(status: StatusCode, error: Option<String>) -> Response {
    let body = serde_json::json!({ "success": error.is_none(), "error": error });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn when(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

// --- sessions, cookies, CSRF -------------------------------------------------------------------

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Tells the browser to drop its session cookie.
fn forget_session(response: &mut Response) {
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("stowage_session=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
}

/// Marks a request that a trusted proxy says reached it over HTTPS (set by `prepare_request`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProxiedHttps;

fn over_https(request_extensions: &axum::http::Extensions) -> bool {
    request_extensions.get::<Https>().is_some() || request_extensions.get::<ProxiedHttps>().is_some()
}

fn session_cookie(name: &str, value: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("stowage_session=; Path=/console; Max-Age=0"))
}

/// What a console handler knows about its request before the body.
struct Asked {
    uri: String,
    headers: HeaderMap,
    https: bool,
    origin_ok: bool,
}

impl Asked {
    fn of(state: &AppState, request: &Request) -> Asked {
        let headers = request.headers().clone();
        let https = over_https(request.extensions());
        // The origins this server answers as: the configured public URL and the address the
        // browser used (scheme + Host).
        let base = base_url(state, request);
        let host = header_text(&headers, header::HOST.as_str()).unwrap_or_default();
        let scheme = if https { "https" } else { "http" };
        let own = format!("{scheme}://{host}");
        let origin = header_text(&headers, header::ORIGIN.as_str());
        let origin_ok = origin.is_some_and(|o| o == base.trim_end_matches('/') || (!host.is_empty() && o == own));
        Asked {
            uri: request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/console/".into()),
            headers,
            https,
            origin_ok,
        }
    }

    /// The signed-in user; a missing or ended session sends the browser to sign in (and back
    /// here afterwards, for a page).
    async fn user(&self, state: &AppState) -> Result<ConsoleUser, Refusal> {
        let next = if self.uri.starts_with("/console/") {
            self.uri.clone()
        } else {
            "/console/".into()
        };
        let Some(secret) = cookie(&self.headers, COOKIE).filter(|s| !s.is_empty()) else {
            return Err(Refusal::SignIn { next });
        };
        match state.service.console_session(secret).await? {
            Some(user) => Ok(user),
            None => Err(Refusal::SignIn { next }),
        }
    }

    /// The signed-in user of a state-changing request: Origin and CSRF token must match.
    async fn changing(&self, state: &AppState, csrf: Option<&str>) -> Result<ConsoleUser, Refusal> {
        if !self.origin_ok {
            return Err(Refusal::Forged(
                "This request did not come from this console's own pages (its Origin is missing or another site's), so it was refused.",
            ));
        }
        let user = self.user(state).await.map_err(|e| match e {
            // A form posted after the session ended: sign in, then start from the folder list.
            Refusal::SignIn { .. } => Refusal::SignIn {
                next: "/console/".into(),
            },
            other => other,
        })?;
        let sent = csrf
            .or_else(|| header_text(&self.headers, "x-csrf-token"))
            .unwrap_or_default();
        let matches: bool = subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), user.csrf.as_bytes()).into();
        if !matches {
            return Err(Refusal::Forged(
                "This form is out of date or was not made by this console (its CSRF token does not match your session). Go back, reload the page and try again.",
            ));
        }
        Ok(user)
    }
}

/// Reads a small urlencoded form body.
async fn form<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Refusal> {
    const UNREADABLE: &str = "The form could not be read (it is too large or broken); reload the page and try again.";
    let bytes = read_small_body(body).await.map_err(|_| Refusal::Forged(UNREADABLE))?;
    decode_form(&bytes).ok_or(Refusal::Forged(UNREADABLE))
}

/// Decodes `application/x-www-form-urlencoded` into a struct of optional strings.
fn decode_form<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let map: serde_json::Map<String, serde_json::Value> = form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
        .collect();
    serde_json::from_value(serde_json::Value::Object(map)).ok()
}

// --- sign in and out ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    chrome: Option<Chrome>,
    csrf: String,
    next: String,
    user: String,
    message: Option<String>,
}

#[derive(Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
}

/// Only a console address may be the page after sign-in (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console/") && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/console/".into(),
    }
}

fn sign_in_form(next: &str, user: &str, message: Option<String>, https: bool, status: StatusCode) -> Response {
    let csrf = crate::ids::random_hex(16);
    let mut response = render(
        status,
        &SignInPage {
            chrome: None,
            csrf: csrf.clone(),
            next: next.to_owned(),
            user: user.to_owned(),
            message,
        },
    );
    response
        .headers_mut()
        .append(header::SET_COOKIE, session_cookie(SIGN_IN_COOKIE, &csrf, https));
    response
}

async fn sign_in_page(State(state): State<AppState>, Query(q): Query<NextQuery>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let next = safe_next(q.next.as_deref());
    if asked.user(&state).await.is_ok() {
        return Redirect::to(&next).into_response();
    }
    sign_in_form(&next, "", None, asked.https, StatusCode::OK)
}

#[derive(Deserialize)]
struct SignInForm {
    csrf: Option<String>,
    next: Option<String>,
    user: Option<String>,
    token: Option<String>,
}

async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let asked = Asked::of(&state, &request);
    let form: SignInForm = match form(request.into_body()).await {
        Ok(f) => f,
        Err(e) => return e.page(&asked.uri),
    };
    let expected = cookie(&asked.headers, SIGN_IN_COOKIE).unwrap_or_default();
    let sent = form.csrf.as_deref().unwrap_or_default();
    let csrf_ok: bool =
        !expected.is_empty() && subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), expected.as_bytes()).into();
    if !asked.origin_ok || !csrf_ok {
        return Refusal::Forged(
            "This sign-in did not come from this console's own sign-in page; open the sign-in page and try again.",
        )
        .page(&asked.uri);
    }
    let next = safe_next(form.next.as_deref());
    let user = form.user.unwrap_or_default();
    let token = form.token.unwrap_or_default();
    match state.service.sign_in(&user, &token, client.ip()).await {
        Ok(session) => {
            let mut response = Redirect::to(&next).into_response();
            let headers = response.headers_mut();
            headers.append(header::SET_COOKIE, session_cookie(COOKIE, &session.secret, asked.https));
            headers.append(
                header::SET_COOKIE,
                HeaderValue::from_static("stowage_sign_in=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict"),
            );
            response
        }
        Err(ServiceError::Unauthorized(_)) => sign_in_form(
            &next,
            &user,
            Some("The user ID or the API token is not right. Check both and try again.".into()),
            asked.https,
            StatusCode::UNAUTHORIZED,
        ),
        Err(e @ ServiceError::RateLimited { .. }) => sign_in_form(
            &next,
            &user,
            Some(e.to_string()),
            asked.https,
            StatusCode::TOO_MANY_REQUESTS,
        ),
        Err(e) => Refusal::Service(e).page("/console/sign-in"),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn sign_out(State(state): State<AppState>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let form: CsrfForm = form(request.into_body()).await?;
        asked.changing(&state, form.csrf.as_deref()).await?;
        if let Some(secret) = cookie(&asked.headers, COOKIE) {
            state.service.sign_out(secret).await?;
        }
        Ok::<_, Refusal>(())
    }
    .await;
    match result {
        Ok(()) | Err(Refusal::SignIn { .. }) => {
            let mut response = Redirect::to("/console/sign-in").into_response();
            forget_session(&mut response);
            response
        }
        Err(e) => e.page(&asked.uri),
    }
}

// --- organizations and folders -----------------------------------------------------------------

struct OrgRow {
    id: String,
    name: String,
    permissions: String,
    admin: bool,
}

#[derive(Template)]
#[template(path = "console/orgs.html")]
struct OrgsPage {
    chrome: Option<Chrome>,
    orgs: Vec<OrgRow>,
}

async fn orgs_page(State(state): State<AppState>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let user = asked.user(&state).await?;
        let orgs = state.service.my_orgs(&user.principal).await?;
        Ok::<_, Refusal>(OrgsPage {
            chrome: Chrome::of(&user),
            orgs: orgs
                .into_iter()
                .map(|o| OrgRow {
                    id: o.org.id.to_string(),
                    name: o.org.name.clone(),
                    permissions: o.permissions.describe(),
                    admin: o.permissions.admin,
                })
                .collect(),
        })
    }
    .await;
    answer(result, &asked.uri)
}

async fn folder_redirect(Path(org): Path<String>) -> Redirect {
    Redirect::to(&format!("/console/o/{}/", encode(&org)))
}

struct Crumb {
    name: String,
    href: String,
}

/// Links to the organization's root and each folder above and including `path`.
fn crumbs(org: &str, org_name: &str, path: &str) -> Vec<Crumb> {
    let mut out = vec![Crumb {
        name: org_name.to_owned(),
        href: format!("/console/o/{org}/"),
    }];
    let mut so_far = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(part);
        out.push(Crumb {
            name: part.to_owned(),
            href: format!("/console/o/{org}/?path={}", encode(&so_far)),
        });
    }
    out
}

struct UsageView {
    bytes_text: String,
    max_bytes_text: String,
    bytes_pct: u64,
    files: u64,
    max_files: u64,
    files_pct: u64,
}

fn percent(used: u64, max: u64) -> u64 {
    if max == 0 {
        return 100;
    }
    ((u128::from(used) * 100 / u128::from(max)).min(100)) as u64
}

fn usage_view(view: &OrgView, used: crate::meta::Usage) -> UsageView {
    UsageView {
        bytes_text: human_size(used.bytes),
        max_bytes_text: human_size(view.quota.max_bytes),
        bytes_pct: percent(used.bytes, view.quota.max_bytes),
        files: used.files,
        max_files: view.quota.max_files,
        files_pct: percent(used.files, view.quota.max_files),
    }
}

struct EntryRow {
    name: String,
    is_folder: bool,
    size: String,
    modified: String,
    md5: String,
    mime: String,
    href: String,
    download: String,
    delete: String,
}

#[derive(Template)]
#[template(path = "console/folder.html")]
struct FolderPage {
    chrome: Option<Chrome>,
    org: String,
    org_name: String,
    csrf: String,
    path: String,
    path_q: String,
    crumbs: Vec<Crumb>,
    usage: UsageView,
    can_write: bool,
    can_delete: bool,
    admin: bool,
    entries: Vec<EntryRow>,
    total_text: String,
    page_no: u64,
    total_pages: u64,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
struct FolderQuery {
    path: Option<String>,
    page: Option<String>,
}

fn entry_row(org: &str, path: &str, entry: &ListEntry, md5: Option<&String>) -> EntryRow {
    let key = if path.is_empty() {
        entry.name.clone()
    } else {
        format!("{path}/{}", entry.name)
    };
    let k = encode(&key);
    EntryRow {
        name: entry.name.clone(),
        is_folder: entry.is_folder,
        size: human_size(entry.size),
        modified: when(entry.modified),
        md5: md5.cloned().unwrap_or_default(),
        mime: if entry.is_folder {
            "folder".into()
        } else {
            entry.mime.clone()
        },
        href: if entry.is_folder {
            format!("/console/o/{org}/?path={k}")
        } else {
            format!("/console/o/{org}/props?key={k}")
        },
        download: format!("/console/o/{org}/file?key={k}"),
        delete: format!("/console/o/{org}/delete?key={k}"),
    }
}

async fn folder_page(
    State(state): State<AppState>,
    Path(org): Path<String>,
    Query(q): Query<FolderQuery>,
    request: Request,
) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let user = asked.user(&state).await?;
        let view = state.service.my_org(&user.principal, &org).await?;
        let path = q.path.unwrap_or_default().trim_matches('/').to_owned();
        let page: u64 = q.page.as_deref().and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
        let listing = state.service.list(&user.principal, &org, &path, page - 1).await?;
        let md5s = state
            .service
            .page_md5s(&user.principal, &org, &path, &listing.entries)
            .await?;
        let org_id = view.org.id.to_string();
        let link = |p: u64| format!("/console/o/{org_id}/?path={}&page={p}", encode(&path));
        let p = view.permissions;
        Ok::<_, Refusal>(FolderPage {
            chrome: Chrome::of(&user),
            csrf: user.csrf.clone(),
            crumbs: crumbs(&org_id, &view.org.name, &path),
            usage: usage_view(&view, listing.usage),
            can_write: p.write,
            can_delete: p.delete,
            admin: p.admin,
            entries: listing
                .entries
                .iter()
                .map(|e| entry_row(&org_id, &path, e, md5s.get(&e.name)))
                .collect(),
            total_text: match listing.entries.len() {
                1 => "1 entry on this page".to_owned(),
                n => format!("{n} entries on this page"),
            },
            page_no: page,
            total_pages: listing.total_pages,
            prev: (page > 1).then(|| link(page - 1)),
            next: (page < listing.total_pages).then(|| link(page + 1)),
            path_q: encode(&path),
            path,
            org_name: view.org.name.clone(),
            org: org_id,
        })
    }
    .await;
    answer(result, &asked.uri)
}

#[derive(Template)]
#[template(path = "console/properties.html")]
struct PropertiesPage {
    chrome: Option<Chrome>,
    crumbs: Vec<Crumb>,
    name: String,
    key: String,
    size: String,
    modified: String,
    created: String,
    md5: String,
    mime: String,
    preview: Option<String>,
    download: String,
    delete: String,
    can_delete: bool,
}

#[derive(Deserialize, Default)]
struct KeyQuery {
    key: Option<String>,
}

async fn properties_page(
    State(state): State<AppState>,
    Path(org): Path<String>,
    Query(q): Query<KeyQuery>,
    request: Request,
) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let user = asked.user(&state).await?;
        let view = state.service.my_org(&user.principal, &org).await?;
        let key = q.key.unwrap_or_default();
        let meta = state.service.properties(&user.principal, &org, &key).await?;
        let org_id = view.org.id.to_string();
        let full = meta.key.as_str().to_owned();
        let (parent, name) = full.rsplit_once('/').unwrap_or(("", &full));
        let k = encode(&full);
        Ok::<_, Refusal>(PropertiesPage {
            chrome: Chrome::of(&user),
            crumbs: crumbs(&org_id, &view.org.name, parent),
            name: name.to_owned(),
            size: format!("{} ({} bytes)", human_size(meta.size), meta.size),
            modified: when(meta.modified),
            created: when(meta.created),
            md5: meta.md5.clone(),
            mime: meta.mime.clone(),
            preview: meta.preview.clone(),
            download: format!("/console/o/{org_id}/file?key={k}"),
            delete: format!("/console/o/{org_id}/delete?key={k}"),
            can_delete: view.permissions.delete,
            key: full.clone(),
        })
    }
    .await;
    answer(result, &asked.uri)
}

/// A file name safe in a `Content-Disposition` header: the ASCII fallback keeps letters, digits
/// and `.-_ ()`; the full name goes in `filename*` (RFC 5987), percent-encoded.
fn disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_ ()".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let fallback = if fallback.trim_matches(['.', ' ']).is_empty() {
        "download".to_owned()
    } else {
        fallback
    };
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

async fn download_file(
    State(state): State<AppState>,
    Path(org): Path<String>,
    Query(q): Query<KeyQuery>,
    request: Request,
) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let user = asked.user(&state).await?;
        let key = q.key.unwrap_or_default();
        Ok::<_, Refusal>(state.service.open_file(&user.principal, &org, &key).await?)
    }
    .await;
    let (meta, stream) = match result {
        Ok(ok) => ok,
        Err(e) => return e.page(&asked.uri),
    };
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    if let Ok(value) = HeaderValue::from_str(&disposition(meta.key.name())) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

#[derive(Deserialize)]
struct KeyForm {
    csrf: Option<String>,
    key: Option<String>,
}

/// A folder as a zip: a download job, then the browser follows its signed link.
async fn download_zip(State(state): State<AppState>, Path(org): Path<String>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let base = base_url(&state, &request);
    let result = async {
        let form: KeyForm = form(request.into_body()).await?;
        let user = asked.changing(&state, form.csrf.as_deref()).await?;
        let key = form.key.unwrap_or_default();
        let ticket = state
            .service
            .create_download(&user.principal, &org, &[key], &base)
            .await?;
        Ok::<_, Refusal>(ticket.url.unwrap_or_default())
    }
    .await;
    match result {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => e.page(&asked.uri),
    }
}

// --- upload ------------------------------------------------------------------------------------

/// One file, streamed as the raw request body (`PUT …/upload?key=`), for the page's script:
/// answers JSON `{success, error}` with the refusal in words.
async fn upload_file(
    State(state): State<AppState>,
    Path(org): Path<String>,
    Query(q): Query<KeyQuery>,
    request: Request,
) -> Response {
    let asked = Asked::of(&state, &request);
    let body = request.into_body();
    let key = q.key.unwrap_or_default();
    let checked = async {
        let user = asked.changing(&state, None).await?;
        let slot = state.service.upload_slot(&user.principal)?;
        state.service.check_upload(&user.principal, &org, &key).await?;
        let declared: Option<u64> =
            header_text(&asked.headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok());
        let limit = state.service.limits().max_object_size;
        if declared.is_some_and(|d| d > limit) {
            return Err(ServiceError::TooLarge { limit }.into());
        }
        Ok::<_, Refusal>((user, slot))
    }
    .await;
    let (user, _slot) = match checked {
        Ok(ok) => ok,
        Err(e) => {
            // Read (and drop) the body first, so that the browser sees the answer.
            let _ = upload::drain_body(body, ApiError::UnknownEndpoint(String::new())).await;
            return e.json();
        }
    };
    let stored = async {
        let mut upload = state.service.begin_upload().await?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let pushed = match chunk {
                Ok(chunk) => upload.push(chunk).await,
                Err(_) => Err(ServiceError::UploadBroken),
            };
            if let Err(e) = pushed {
                upload.abort().await;
                return Err(e);
            }
        }
        state.service.finish_set(&user.principal, &org, &key, upload).await
    }
    .await;
    match stored {
        Ok(()) => upload_answer(StatusCode::OK, None),
        Err(e) => Refusal::Service(e).json(),
    }
}

// --- delete ------------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/delete.html")]
struct DeletePage {
    chrome: Option<Chrome>,
    org: String,
    csrf: String,
    key: String,
    summary: String,
    back: String,
}

fn parent_link(org: &str, key: &str) -> String {
    let trimmed = key.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, _)) => format!("/console/o/{org}/?path={}", encode(parent)),
        None => format!("/console/o/{org}/"),
    }
}

async fn delete_page(
    State(state): State<AppState>,
    Path(org): Path<String>,
    Query(q): Query<KeyQuery>,
    request: Request,
) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let user = asked.user(&state).await?;
        let key = q.key.unwrap_or_default();
        let plan = state.service.delete_plan(&user.principal, &org, &key).await?;
        let files = if plan.usage.files == 1 {
            "1 file".to_owned()
        } else {
            format!("{} files", plan.usage.files)
        };
        let summary = if plan.is_folder {
            format!(
                "This deletes the folder and everything in it: {files}, {} ({} bytes).",
                human_size(plan.usage.bytes),
                plan.usage.bytes
            )
        } else {
            format!(
                "This deletes 1 file of {} ({} bytes).",
                human_size(plan.usage.bytes),
                plan.usage.bytes
            )
        };
        Ok::<_, Refusal>(DeletePage {
            chrome: Chrome::of(&user),
            csrf: user.csrf.clone(),
            back: parent_link(&org, &key),
            org: org.clone(),
            key,
            summary,
        })
    }
    .await;
    answer(result, &asked.uri)
}

async fn delete(State(state): State<AppState>, Path(org): Path<String>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let form: KeyForm = form(request.into_body()).await?;
        let user = asked.changing(&state, form.csrf.as_deref()).await?;
        let key = form.key.unwrap_or_default();
        state.service.delete(&user.principal, &org, &key).await?;
        Ok::<_, Refusal>(parent_link(&org, &key))
    }
    .await;
    match result {
        Ok(back) => Redirect::to(&back).into_response(),
        Err(e) => e.page(&asked.uri),
    }
}

// --- members -----------------------------------------------------------------------------------

struct MemberRow {
    id: String,
    name: String,
    disabled: bool,
    read: bool,
    write: bool,
    delete: bool,
    admin: bool,
}

#[derive(Template)]
#[template(path = "console/members.html")]
struct MembersPage {
    chrome: Option<Chrome>,
    org: String,
    org_name: String,
    csrf: String,
    members: Vec<MemberRow>,
    message: Option<String>,
}

async fn members_view(
    state: &AppState,
    user: &ConsoleUser,
    org: &str,
    message: Option<String>,
) -> Result<MembersPage, Refusal> {
    let view = state.service.my_org(&user.principal, org).await?;
    let members = state.service.members(&user.principal, org).await?;
    Ok(MembersPage {
        chrome: Chrome::of(user),
        org: view.org.id.to_string(),
        org_name: view.org.name.clone(),
        csrf: user.csrf.clone(),
        members: members
            .into_iter()
            .map(|m| MemberRow {
                id: m.membership.user.to_string(),
                name: m.name,
                disabled: m.disabled,
                read: m.membership.permissions.read,
                write: m.membership.permissions.write,
                delete: m.membership.permissions.delete,
                admin: m.membership.permissions.admin,
            })
            .collect(),
        message,
    })
}

async fn members_page(State(state): State<AppState>, Path(org): Path<String>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let user = asked.user(&state).await?;
        members_view(&state, &user, &org, None).await
    }
    .await;
    answer(result, &asked.uri)
}

#[derive(Deserialize)]
struct MemberForm {
    csrf: Option<String>,
    user: Option<String>,
    read: Option<String>,
    write: Option<String>,
    delete: Option<String>,
    admin: Option<String>,
}

async fn set_member(State(state): State<AppState>, Path(org): Path<String>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let form: MemberForm = form(request.into_body()).await?;
        let user = asked.changing(&state, form.csrf.as_deref()).await?;
        let member = form.user.unwrap_or_default();
        let permissions = Permissions {
            read: form.read.is_some(),
            write: form.write.is_some(),
            delete: form.delete.is_some(),
            admin: form.admin.is_some(),
        };
        state
            .service
            .set_member(&user.principal, &org, &member, permissions)
            .await?;
        let message = format!("User {} now has: {}.", member.trim(), permissions.describe());
        members_view(&state, &user, &org, Some(message)).await
    }
    .await;
    answer(result, &asked.uri)
}

#[derive(Deserialize)]
struct UserForm {
    csrf: Option<String>,
    user: Option<String>,
}

async fn remove_member(State(state): State<AppState>, Path(org): Path<String>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let form: UserForm = form(request.into_body()).await?;
        let user = asked.changing(&state, form.csrf.as_deref()).await?;
        let member = form.user.unwrap_or_default();
        state.service.remove_member(&user.principal, &org, &member).await?;
        let message = format!("User {} is no longer a member.", member.trim());
        members_view(&state, &user, &org, Some(message)).await
    }
    .await;
    answer(result, &asked.uri)
}

// --- account -----------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    chrome: Option<Chrome>,
    csrf: String,
    new_token: Option<String>,
}

async fn account_page(State(state): State<AppState>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    match asked.user(&state).await {
        Ok(user) => render(
            StatusCode::OK,
            &AccountPage {
                chrome: Chrome::of(&user),
                csrf: user.csrf.clone(),
                new_token: None,
            },
        ),
        Err(e) => e.page(&asked.uri),
    }
}

/// Rotates the caller's own token. The session ends with the old token: the page shows the new
/// token once, signed out.
async fn rotate_token(State(state): State<AppState>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let form: CsrfForm = form(request.into_body()).await?;
        let user = asked.changing(&state, form.csrf.as_deref()).await?;
        Ok::<_, Refusal>(state.service.rotate_own_token(&user.principal).await?)
    }
    .await;
    match result {
        Ok(token) => {
            let mut response = render(
                StatusCode::OK,
                &AccountPage {
                    chrome: None,
                    csrf: String::new(),
                    new_token: Some(token),
                },
            );
            forget_session(&mut response);
            response
        }
        Err(e) => e.page(&asked.uri),
    }
}

// --- the whole server (server administrators) --------------------------------------------------

struct ServerOrgRow {
    id: String,
    name: String,
    used: String,
    max_bytes: String,
    max_files: String,
}

struct ServerUserRow {
    id: String,
    name: String,
    disabled: bool,
    server_admin: bool,
}

#[derive(Template)]
#[template(path = "console/server.html")]
struct ServerPage {
    chrome: Option<Chrome>,
    csrf: String,
    orgs: Vec<ServerOrgRow>,
    users: Vec<ServerUserRow>,
    message: Option<String>,
    new_token: Option<String>,
}

async fn server_view(
    state: &AppState,
    user: &ConsoleUser,
    message: Option<String>,
    new_token: Option<String>,
) -> Result<ServerPage, Refusal> {
    let orgs = state.service.all_orgs(&user.principal).await?;
    let users = state.service.all_users(&user.principal).await?;
    Ok(ServerPage {
        chrome: Chrome::of(user),
        csrf: user.csrf.clone(),
        orgs: orgs
            .into_iter()
            .map(|(o, quota)| ServerOrgRow {
                id: o.id.to_string(),
                used: format!(
                    "{} of {}, {} of {} files",
                    human_size(o.usage.bytes),
                    human_size(quota.max_bytes),
                    o.usage.files,
                    quota.max_files
                ),
                max_bytes: o.max_bytes.map(|b| b.to_string()).unwrap_or_default(),
                max_files: o.max_files.map(|f| f.to_string()).unwrap_or_default(),
                name: o.name,
            })
            .collect(),
        users: users
            .into_iter()
            .map(|u| ServerUserRow {
                id: u.id.to_string(),
                name: u.name,
                disabled: u.disabled,
                server_admin: u.server_admin,
            })
            .collect(),
        message,
        new_token,
    })
}

async fn server_page(State(state): State<AppState>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let user = asked.user(&state).await?;
        server_view(&state, &user, None, None).await
    }
    .await;
    answer(result, &asked.uri)
}

#[derive(Deserialize)]
struct NameForm {
    csrf: Option<String>,
    name: Option<String>,
}

async fn create_org(State(state): State<AppState>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let form: NameForm = form(request.into_body()).await?;
        let user = asked.changing(&state, form.csrf.as_deref()).await?;
        let name = form.name.unwrap_or_default();
        let org = state.service.create_org(&user.principal, &name).await?;
        let message = format!("Created organization {} ({org}); you are its admin.", name.trim());
        server_view(&state, &user, Some(message), None).await
    }
    .await;
    answer(result, &asked.uri)
}

#[derive(Deserialize)]
struct QuotaForm {
    csrf: Option<String>,
    org: Option<String>,
    max_bytes: Option<String>,
    max_files: Option<String>,
}

/// A quota field: empty is the server's default; bytes take sizes such as `50 GiB`.
fn quota_field(raw: Option<&str>, bytes: bool) -> Result<Option<u64>, Refusal> {
    let raw = raw.unwrap_or_default().trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let parsed = if bytes {
        crate::config::parse_byte_count(raw).ok()
    } else {
        raw.parse::<u64>().ok()
    };
    match parsed {
        Some(value) => Ok(Some(value)),
        None if bytes => Err(Refusal::Invalid(format!(
            "'{raw}' is not a size: write a number of bytes or a size such as 500 MB or 50 GiB, or leave it empty for the default"
        ))),
        None => Err(Refusal::Invalid(format!(
            "'{raw}' is not a number of files: write a whole number, or leave it empty for the default"
        ))),
    }
}

async fn set_quota(State(state): State<AppState>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let form: QuotaForm = form(request.into_body()).await?;
        let user = asked.changing(&state, form.csrf.as_deref()).await?;
        let max_bytes = quota_field(form.max_bytes.as_deref(), true)?;
        let max_files = quota_field(form.max_files.as_deref(), false)?;
        let org = form.org.unwrap_or_default();
        state
            .service
            .set_org_quota(&user.principal, &org, max_bytes, max_files)
            .await?;
        let message = format!("Quota of organization {} saved.", org.trim());
        server_view(&state, &user, Some(message), None).await
    }
    .await;
    answer(result, &asked.uri)
}

async fn create_user(State(state): State<AppState>, request: Request) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let form: NameForm = form(request.into_body()).await?;
        let user = asked.changing(&state, form.csrf.as_deref()).await?;
        let name = form.name.unwrap_or_default();
        let (id, token) = state.service.create_user(&user.principal, &name).await?;
        let message = format!("Created user {id} ({}).", name.trim());
        server_view(&state, &user, Some(message), Some(token)).await
    }
    .await;
    answer(result, &asked.uri)
}

async fn disable_user(State(state): State<AppState>, request: Request) -> Response {
    user_status(state, request, true).await
}

async fn enable_user(State(state): State<AppState>, request: Request) -> Response {
    user_status(state, request, false).await
}

async fn user_status(state: AppState, request: Request, disabled: bool) -> Response {
    let asked = Asked::of(&state, &request);
    let result = async {
        let form: UserForm = form(request.into_body()).await?;
        let user = asked.changing(&state, form.csrf.as_deref()).await?;
        let target = form.user.unwrap_or_default();
        state
            .service
            .set_user_disabled(&user.principal, &target, disabled)
            .await?;
        let done = if disabled { "disabled" } else { "enabled" };
        let message = format!("User {} {done}.", target.trim());
        server_view(&state, &user, Some(message), None).await
    }
    .await;
    answer(result, &asked.uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_are_safe() {
        assert_eq!(
            disposition("report.csv"),
            "attachment; filename=\"report.csv\"; filename*=UTF-8''report.csv"
        );
        let hostile = disposition("a\"b\r\n;c<é>.txt");
        assert!(!hostile.contains('\r') && !hostile.contains('\n'));
        assert!(
            hostile.starts_with("attachment; filename=\"a_b___c___.txt\""),
            "{hostile}"
        );
        assert!(hostile.ends_with("a%22b%0D%0A%3Bc%3C%C3%A9%3E.txt"), "{hostile}");
        assert!(disposition("..").starts_with("attachment; filename=\"download\""));
    }

    #[test]
    fn only_console_pages_follow_sign_in() {
        assert_eq!(safe_next(Some("/console/o/x/?path=a")), "/console/o/x/?path=a");
        for bad in [
            "https://evil.example/",
            "//evil.example/console/",
            "/api/v2/x",
            "/console/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/console/", "{bad}");
        }
        assert_eq!(safe_next(None), "/console/");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; stowage_session=abc; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn breadcrumbs_link_every_folder() {
        let c = crumbs("o", "Org", "a/b c");
        let names: Vec<_> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Org", "a", "b c"]);
        assert_eq!(c[2].href, "/console/o/o/?path=a%2Fb+c");
    }

    #[test]
    fn quota_fields_take_sizes_or_nothing() {
        assert_eq!(quota_field(Some(" "), true).ok(), Some(None));
        assert_eq!(quota_field(Some("1 KiB"), true).ok(), Some(Some(1024)));
        assert_eq!(quota_field(Some("500"), false).ok(), Some(Some(500)));
        match quota_field(Some("lots"), false) {
            Err(Refusal::Invalid(why)) => assert!(why.contains("not a number of files"), "{why}"),
            _ => panic!("'lots' was taken as a number of files"),
        }
    }

    #[test]
    fn percentages_are_bounded() {
        assert_eq!(percent(5, 10), 50);
        assert_eq!(percent(20, 10), 100);
        assert_eq!(percent(1, 0), 100);
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }
}
