//! A typed client of the Object Store API, ours or QuantConnect's: signs every request with the
//! auth recipe, turns `success: false` and HTTP errors into the server's sentence, and streams
//! bodies both ways.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::crypto::request_hash;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {}", root_cause(.cause))]
    Network { url: String, cause: reqwest::Error },
    #[error("{0}")]
    Server(String),
    #[error("{url} answered HTTP {status}: {message}")]
    Http { url: String, status: u16, message: String },
    /// HTTP 401. The server's own sentence is not repeated: it may echo the request's hash.
    #[error(
        "{url} refused the credentials of user {user}: either the API token is wrong for that user \
         id, or this machine's clock is off from the server's by more than it accepts (compare \
         `date -u` on both)"
    )]
    Unauthorized { url: String, user: String },
    #[error("{url} answered something that is not the API's JSON: {detail}")]
    BadResponse { url: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the downloaded archive cannot be read: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error(
        "refusing to extract '{0}': it would land outside the destination folder (an absolute path, `..`, or a symbolic link); nothing was written"
    )]
    UnsafeEntry(String),
    /// An archive bigger than its budget (what the server announced, or `--max-size`).
    #[error("refusing the download: {0}")]
    Oversized(String),
    #[error("{0}")]
    Usage(String),
    #[error("the download job {0} was not ready after 5 minutes")]
    JobTimeout(String),
}

impl ClientError {
    /// Names the user whose credentials a 401 refused.
    pub fn for_user(self, user_id: &str) -> ClientError {
        match self {
            ClientError::Unauthorized { url, .. } => ClientError::Unauthorized {
                url,
                user: user_id.to_owned(),
            },
            other => other,
        }
    }
}

/// The innermost cause of an error (reqwest repeats the URL at every level of its chain).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Who is calling, and where.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) url: String,
    pub(crate) user_id: String,
    pub(crate) api_token: String,
}

/// Object metadata as `/object/properties` returns it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub(crate) struct Metadata {
    pub(crate) key: String,
    pub(crate) modified: String,
    pub(crate) created: String,
    pub(crate) size: u64,
    pub(crate) md5: String,
    pub(crate) mime: String,
    pub(crate) preview: Option<String>,
}

/// One entry of `/object/list`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub(crate) struct ListedObject {
    pub(crate) key: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) modified: Option<String>,
    #[serde(default)]
    pub(crate) mime: Option<String>,
    #[serde(default)]
    pub(crate) folder: bool,
    #[serde(default)]
    pub(crate) size: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ListPage {
    #[serde(default)]
    pub(crate) objects: Vec<ListedObject>,
    #[serde(default, rename = "totalPages")]
    pub(crate) total_pages: Option<u64>,
    #[serde(default, rename = "objectStorageUsed")]
    pub(crate) used: Option<u64>,
    #[serde(default, rename = "objectStorageUsedHuman")]
    pub(crate) used_human: Option<String>,
}

/// A page of `/object/list` parsed without keeping its entries (see [`ApiClient::list_page_len`]).
#[derive(Deserialize)]
struct ListPageLen {
    objects: Vec<serde::de::IgnoredAny>,
}

/// The part of every answer that says whether it succeeded; the rest is skipped unread.
#[derive(Deserialize)]
struct Envelope {
    success: Option<Value>,
    errors: Option<Value>,
}

pub(crate) struct ApiClient {
    credentials: Credentials,
    http: reqwest::Client,
}

impl ApiClient {
    pub(crate) fn new(credentials: Credentials) -> Result<ApiClient, ClientError> {
        ApiClient::with_ca(credentials, None)
    }

    /// A client that also trusts the certificate authorities in the PEM file `ca_cert`.
    pub(crate) fn with_ca(
        credentials: Credentials,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<ApiClient, ClientError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        if let Some(path) = ca_cert {
            let unusable = |detail: String| {
                ClientError::Usage(format!(
                    "cannot use {} as a certificate authority (--ca-cert / STOWAGE_CA_CERT): {detail}",
                    path.display()
                ))
            };
            let pem = std::fs::read(path).map_err(|e| unusable(e.to_string()))?;
            let authorities = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| unusable(e.to_string()))?;
            if authorities.is_empty() {
                return Err(unusable("it holds no PEM certificate".into()));
            }
            for authority in authorities {
                builder = builder.add_root_certificate(authority);
            }
        }
        let http = builder.build().map_err(|source| ClientError::Network {
            url: credentials.url.clone(),
            cause: source,
        })?;
        Ok(ApiClient { credentials, http })
    }

    fn url(&self, endpoint: &str) -> String {
        format!(
            "{}/{}",
            self.credentials.url.trim_end_matches('/'),
            endpoint.trim_start_matches('/')
        )
    }

    fn signed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let hash = request_hash(&self.credentials.api_token, &timestamp);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{hash}", self.credentials.user_id));
        request
            .header("Timestamp", timestamp)
            .header("Authorization", format!("Basic {basic}"))
    }

    /// Reads an API answer: HTTP errors and `success: false` become the server's sentence.
    async fn answer(url: &str, response: reqwest::Response) -> Result<Value, ClientError> {
        ApiClient::answer_as(url, response).await
    }

    /// Reads an API answer straight into `T` (no intermediate `Value` tree: a 1000-entry listing
    /// parsed through one cost the load generator more CPU than the server spent answering).
    async fn answer_as<T: DeserializeOwned>(url: &str, response: reqwest::Response) -> Result<T, ClientError> {
        let status = response.status();
        // The bytes as received: JSON is parsed from them directly (decoding them into a `String`
        // first was a seventh of the load generator's CPU on a 1000-entry listing).
        let body = response.bytes().await.map_err(|source| ClientError::Network {
            url: url.to_owned(),
            cause: source,
        })?;
        let envelope: Option<Envelope> = serde_json::from_slice(&body).ok();
        let sentence = envelope
            .as_ref()
            .and_then(|b| b.errors.as_ref())
            .and_then(Value::as_array)
            .map(|errors| errors.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "));
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                url: url.to_owned(),
                user: "this user id".into(),
            });
        }
        if !status.is_success() {
            let message = sentence.filter(|s| !s.is_empty()).unwrap_or_else(|| {
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
                    .trim()
                    .to_owned()
            });
            return Err(ClientError::Http {
                url: url.to_owned(),
                status: status.as_u16(),
                message,
            });
        }
        let envelope = envelope.ok_or_else(|| ClientError::BadResponse {
            url: url.to_owned(),
            detail: "not JSON".into(),
        })?;
        if envelope.success.as_ref().and_then(Value::as_bool) != Some(true) {
            let sentence = sentence
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "the request failed".into());
            return Err(ClientError::Server(sentence));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
            url: url.to_owned(),
            detail: e.to_string(),
        })
    }

    pub(crate) async fn post(&self, endpoint: &str, payload: Value) -> Result<Value, ClientError> {
        self.post_as(endpoint, payload).await
    }

    /// Posts `payload` and reads the answer into `T`.
    pub(crate) async fn post_as<T: DeserializeOwned>(&self, endpoint: &str, payload: Value) -> Result<T, ClientError> {
        let url = self.url(endpoint);
        let response = self
            .signed(self.http.post(&url))
            .json(&payload)
            .send()
            .await
            .map_err(|source| ClientError::Network {
                url: url.clone(),
                cause: source,
            })?;
        ApiClient::answer_as(&url, response).await
    }

    pub(crate) async fn authenticate(&self) -> Result<(), ClientError> {
        let url = self.url("authenticate");
        let response = self
            .signed(self.http.post(&url))
            .send()
            .await
            .map_err(|source| ClientError::Network {
                url: url.clone(),
                cause: source,
            })?;
        ApiClient::answer(&url, response).await.map(|_| ())
    }

    /// Uploads a body (streamed; `length` when known).
    pub(crate) async fn set(
        &self,
        org: &str,
        key: &str,
        body: reqwest::Body,
        length: Option<u64>,
    ) -> Result<(), ClientError> {
        let url = self.url("object/set");
        let file_name = key.rsplit('/').next().unwrap_or(key).to_owned();
        let part = match length {
            Some(length) => reqwest::multipart::Part::stream_with_length(body, length),
            None => reqwest::multipart::Part::stream(body),
        }
        .file_name(file_name);
        let form = reqwest::multipart::Form::new()
            .text("organizationId", org.to_owned())
            .text("key", key.to_owned())
            .part("objectData", part);
        let response = self
            .signed(self.http.post(&url))
            .multipart(form)
            .send()
            .await
            .map_err(|source| ClientError::Network {
                url: url.clone(),
                cause: source,
            })?;
        ApiClient::answer(&url, response).await.map(|_| ())
    }

    pub(crate) async fn properties(&self, org: &str, key: &str) -> Result<Metadata, ClientError> {
        let body = self
            .post("object/properties", json!({ "organizationId": org, "key": key }))
            .await?;
        let url = self.url("object/properties");
        serde_json::from_value(body.get("metadata").cloned().unwrap_or(Value::Null)).map_err(|e| {
            ClientError::BadResponse {
                url,
                detail: e.to_string(),
            }
        })
    }

    pub(crate) async fn delete(&self, org: &str, key: &str) -> Result<(), ClientError> {
        self.post("object/delete", json!({ "organizationId": org, "key": key }))
            .await
            .map(|_| ())
    }

    /// How many entries a page of `/object/list` holds. The whole answer is read and parsed (its
    /// JSON checked to the last byte), but the entries are not kept: the load generator shares
    /// the server's cores, and copying 4,000 strings out of each page cost it as much CPU as the
    /// server spent answering.
    pub(crate) async fn list_page_len(&self, org: &str, path: &str, page: u64) -> Result<usize, ClientError> {
        let counted: ListPageLen = self
            .post_as(
                "object/list",
                json!({ "organizationId": org, "path": path, "page": page }),
            )
            .await?;
        Ok(counted.objects.len())
    }

    pub(crate) async fn list_page(&self, org: &str, path: &str, page: u64) -> Result<ListPage, ClientError> {
        self.post_as(
            "object/list",
            json!({ "organizationId": org, "path": path, "page": page }),
        )
        .await
    }

    /// Runs a download job to its URL: creates it, then polls every 3 s for up to 5 minutes.
    pub(crate) async fn download_url(&self, org: &str, keys: &[String]) -> Result<String, ClientError> {
        let mut body = self
            .post("object/get", json!({ "organizationId": org, "keys": keys }))
            .await?;
        let job = body.get("jobId").and_then(Value::as_str).unwrap_or_default().to_owned();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(url) = body.get("url").and_then(Value::as_str).filter(|u| !u.is_empty()) {
                return Ok(url.to_owned());
            }
            if job.is_empty() {
                return Err(ClientError::BadResponse {
                    url: self.url("object/get"),
                    detail: "no jobId".into(),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::JobTimeout(job));
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            body = self
                .post("object/get", json!({ "organizationId": org, "jobId": job }))
                .await?;
        }
    }

    /// Starts a plain GET of a download URL (no auth: the URL carries its own token).
    pub(crate) async fn fetch(&self, url: &str) -> Result<reqwest::Response, ClientError> {
        let response = self.http.get(url).send().await.map_err(|source| ClientError::Network {
            url: url.to_owned(),
            cause: source,
        })?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = ApiClient::answer(url, response).await.err();
            let message = match body {
                Some(ClientError::Http { message, .. }) => message,
                _ => "download failed".into(),
            };
            return Err(ClientError::Http {
                url: url.to_owned(),
                status,
                message,
            });
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> reqwest::Response {
        let answer = axum::http::Response::builder()
            .status(status)
            .body(body.to_owned())
            .expect("a response");
        reqwest::Response::from(answer)
    }

    async fn read(status: u16, body: &str) -> Result<ListPage, ClientError> {
        ApiClient::answer_as::<ListPage>("http://h/api/v2/object/list", response(status, body)).await
    }

    #[tokio::test]
    async fn answers_are_read_into_their_type_or_into_the_servers_sentence() {
        let page = read(
            200,
            r#"{"success":true,"errors":[],"objects":[{"key":"/a","name":"a","size":3}]}"#,
        )
        .await
        .expect("a page");
        assert_eq!(page.objects.len(), 1);
        assert_eq!(page.objects[0].size, 3);

        let refused = read(200, r#"{"success":false,"errors":["No such file","twice"]}"#).await;
        assert!(
            matches!(refused, Err(ClientError::Server(ref s)) if s == "No such file; twice"),
            "{refused:?}"
        );

        let odd = read(200, r#"{"success":"yes","errors":"not a list"}"#).await;
        assert!(
            matches!(odd, Err(ClientError::Server(ref s)) if s == "the request failed"),
            "{odd:?}"
        );

        let refused = read(401, r#"{"success":false,"errors":["Hash does not match: 9f2c0e"]}"#).await;
        let sentence = refused.map(|_| ()).unwrap_err().for_user("7").to_string();
        assert_eq!(
            sentence,
            "http://h/api/v2/object/list refused the credentials of user 7: either the API token is \
             wrong for that user id, or this machine's clock is off from the server's by more than it \
             accepts (compare `date -u` on both)"
        );

        let http = read(403, r#"{"success":false,"errors":["Forbidden here"]}"#).await;
        assert!(
            matches!(http, Err(ClientError::Http { status: 403, ref message, .. }) if message == "Forbidden here"),
            "{http:?}"
        );

        let html = read(502, "<html>bad gateway</html>").await;
        assert!(
            matches!(html, Err(ClientError::Http { status: 502, ref message, .. }) if message.contains("bad gateway")),
            "{html:?}"
        );

        let not_json = read(200, "hello").await;
        assert!(matches!(not_json, Err(ClientError::BadResponse { .. })), "{not_json:?}");

        let wrong_shape = read(200, r#"{"success":true,"objects":"none"}"#).await;
        assert!(
            matches!(wrong_shape, Err(ClientError::BadResponse { .. })),
            "{wrong_shape:?}"
        );
    }
}
