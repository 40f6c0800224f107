//! Server configuration: defaults (spec section 6), then a TOML file, then `STOWAGE_*`
//! environment variables, then command-line flags, each overriding the one before. Choices
//! (`metadata`, `blob_store`, `log_format`) are parsed here once into enums; an unknown key in the
//! file, or a `STOWAGE_*` variable that is a near miss of a setting's name, is refused with a
//! sentence naming it and where it came from.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Provider};
use serde::{Deserialize, Deserializer, Serialize};

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:5612";
pub(crate) const DEFAULT_DATA_DIR: &str = "./stowage-data";
/// The S3 API's default port, beside the QuantConnect API's 5612.
pub(crate) const DEFAULT_S3_API_PORT: u16 = 5613;

/// Everything `stowage serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Address and port to listen on.
    pub(crate) listen: SocketAddr,
    /// Where the metadata database, the server key and the object bodies live (when embedded).
    pub data_dir: PathBuf,
    /// Metadata store: `sqlite` (the default, in the data directory) or a `postgres://` URL.
    pub metadata: MetadataStore,
    /// Body store: `local` (the default, in the data directory) or `s3`.
    pub blob_store: BlobStoreKind,
    /// S3-compatible body store: bucket, endpoint (e.g. `http://127.0.0.1:8333`; empty for AWS),
    /// region, credentials, path-style addressing, plain-HTTP permission and a key prefix.
    pub(crate) s3_bucket: String,
    pub(crate) s3_endpoint: Option<String>,
    pub(crate) s3_region: String,
    pub(crate) s3_access_key_id: String,
    pub(crate) s3_secret_access_key: String,
    pub(crate) s3_path_style: bool,
    pub(crate) s3_allow_http: bool,
    pub(crate) s3_prefix: Option<String>,
    /// The server key as 64 hex characters, for deployments where several servers must share it;
    /// by default the key lives in `<data dir>/server.key`.
    pub(crate) server_key: Option<String>,
    /// Log lines as `text` (default) or `json` (one object per line, with request ids).
    pub log_format: LogFormat,
    /// Proxies (addresses or CIDR blocks, e.g. `10.0.0.0/8`) whose `X-Forwarded-For` names the
    /// real client; from anyone else the header is ignored. A list, or one comma-separated string.
    #[serde(deserialize_with = "string_list")]
    pub(crate) trusted_proxies: Vec<String>,
    /// Base URL of download links (e.g. `https://store.example.com`); by default taken from the
    /// request's `Host` header.
    pub(crate) public_url: Option<String>,
    /// Default storage quota per organization, in bytes.
    #[serde(deserialize_with = "byte_count")]
    pub(crate) default_max_bytes: u64,
    /// Default file-count quota per organization.
    pub(crate) default_max_files: u64,
    /// Largest object accepted by `/object/set`, in bytes.
    #[serde(deserialize_with = "byte_count")]
    pub(crate) max_object_size: u64,
    /// Oldest accepted `Timestamp`, in seconds.
    pub(crate) timestamp_max_age_secs: i64,
    /// Furthest accepted `Timestamp` in the future, in seconds.
    pub(crate) timestamp_max_future_secs: i64,
    /// Lifetime of a download URL (and of its job), in seconds.
    pub(crate) download_url_ttl_secs: i64,
    /// Seconds after a download URL expires that the bodies it names are still kept (a download
    /// started just before the expiry can finish; servers' clocks may differ). A replaced or
    /// deleted body is therefore stored for up to `download_url_ttl_secs` plus this longer.
    pub(crate) download_grace_secs: i64,
    /// Entries per `/object/list` page.
    pub(crate) list_page_size: u64,
    /// Bodies up to this size are kept in a table beside the blob files rather than in a file
    /// each (embedded store only; 0 keeps every body in its own file).
    #[serde(deserialize_with = "byte_count")]
    pub(crate) small_body_threshold: u64,
    /// Seconds between garbage-collection passes over unreferenced blobs and expired jobs.
    pub(crate) gc_interval_secs: u64,
    /// Seconds between sweeps for orphan blobs (bodies that no metadata names); one runs at start.
    pub(crate) orphan_sweep_interval_secs: u64,
    /// Failed authentications allowed per client address and per user id in a window (0: off).
    pub(crate) auth_failure_limit: u32,
    /// The window of `auth_failure_limit`, in seconds.
    pub(crate) auth_failure_window_secs: u64,
    /// Longest time a client may take to send its request headers, in seconds.
    pub(crate) header_read_timeout_secs: u64,
    /// Longest pause between two pieces of a request body, in seconds.
    pub(crate) body_idle_timeout_secs: u64,
    /// How long requests in flight may take to finish after SIGTERM, in seconds.
    pub shutdown_grace_secs: u64,
    /// HTTPS: the certificate chain and its private key (PEM files, reloaded on SIGHUP); both or
    /// neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Uploads (`/object/set` requests) one user may have in flight at once; more get 429.
    pub max_uploads_per_user: u32,
    /// Keys one `/object/get` request may name.
    pub max_keys_per_request: usize,
    /// Files one download job may cover.
    pub max_files_per_job: u64,
    /// Download jobs that have not expired one organization may hold; recording one more expires
    /// its oldest early.
    pub max_jobs_per_org: u64,
    /// A separate address for `GET /metrics` (e.g. `127.0.0.1:9612`), so that exposing the API
    /// does not expose the metrics; when set, the API's own address answers 404 for `/metrics`.
    /// Off by default: `/metrics` is served beside the API.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// A connection with no request in flight and no byte read or written for this long is
    /// closed (idle keep-alive, an HTTP/2 connection that sends nothing), in seconds.
    pub idle_timeout_secs: u64,
    /// Connections open at once; more are answered 503 (or closed) at once. Never more than the
    /// open-file limit allows (the server raises its soft limit to the hard one at start).
    pub max_connections: usize,
    /// Downloads (`/download/...` answers) sent at once over the whole server; more get 503 with
    /// `Retry-After`.
    pub max_downloads: usize,
    /// A web console session ends after this long without a request, in seconds.
    pub(crate) console_idle_timeout_secs: u64,
    /// A web console session ends this long after sign-in however active it is, in seconds.
    pub(crate) console_session_max_secs: u64,
    /// Address of the S3-compatible API (default `127.0.0.1:5613`), or `off`.
    pub s3_api_listen: S3Listen,
    /// The region the S3 API answers for and signatures name (default `us-east-1`).
    pub(crate) s3_api_region: String,
    /// Virtual-host-style S3 addressing: with `s3.example.com`, `BUCKET.s3.example.com` names a
    /// bucket. Path style (`s3.example.com/BUCKET`) always works.
    pub(crate) s3_api_domain: Option<String>,
    /// Seconds after which an S3 multipart upload that was neither completed nor aborted is
    /// removed with its parts (default 7 days).
    pub(crate) s3_api_multipart_expiry_secs: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 5612))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            metadata: MetadataStore::Sqlite,
            blob_store: BlobStoreKind::Local,
            s3_bucket: String::new(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_path_style: true,
            s3_allow_http: false,
            s3_prefix: None,
            server_key: None,
            log_format: LogFormat::Text,
            trusted_proxies: Vec::new(),
            public_url: None,
            default_max_bytes: 10 * 1024 * 1024 * 1024,
            default_max_files: 10_000,
            max_object_size: 5 * 1024 * 1024 * 1024,
            timestamp_max_age_secs: 7200,
            timestamp_max_future_secs: 300,
            download_url_ttl_secs: 3600,
            download_grace_secs: 600,
            list_page_size: 1000,
            small_body_threshold: crate::blob::small::DEFAULT_THRESHOLD as u64,
            gc_interval_secs: 30,
            orphan_sweep_interval_secs: 3600,
            auth_failure_limit: 50,
            auth_failure_window_secs: 60,
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            shutdown_grace_secs: 30,
            tls_cert: None,
            tls_key: None,
            max_uploads_per_user: 64,
            max_keys_per_request: 1000,
            max_files_per_job: 10_000,
            max_jobs_per_org: 500,
            metrics_listen: None,
            idle_timeout_secs: 60,
            max_connections: 4096,
            max_downloads: 64,
            console_idle_timeout_secs: 30 * 60,
            console_session_max_secs: 12 * 3600,
            s3_api_listen: S3Listen::On(SocketAddr::from(([127, 0, 0, 1], DEFAULT_S3_API_PORT))),
            s3_api_region: "us-east-1".into(),
            s3_api_domain: None,
            s3_api_multipart_expiry_secs: 7 * 24 * 3600,
        }
    }
}

/// Whether and where the S3-compatible API listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum S3Listen {
    On(SocketAddr),
    Off,
}

impl std::str::FromStr for S3Listen {
    type Err = String;
    fn from_str(text: &str) -> Result<S3Listen, String> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("off") {
            return Ok(S3Listen::Off);
        }
        trimmed
            .parse()
            .map(S3Listen::On)
            .map_err(|_| format!("\"{text}\" is neither an address with a port (such as 127.0.0.1:5613) nor \"off\""))
    }
}

impl TryFrom<String> for S3Listen {
    type Error = String;
    fn try_from(text: String) -> Result<S3Listen, String> {
        text.parse()
    }
}

impl From<S3Listen> for String {
    fn from(listen: S3Listen) -> String {
        match listen {
            S3Listen::On(addr) => addr.to_string(),
            S3Listen::Off => "off".into(),
        }
    }
}

/// Where the metadata lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MetadataStore {
    /// SQLite in the data directory (the default).
    Sqlite,
    /// A PostgreSQL server, by URL (`postgres://user:pass@host:5432/db`).
    Postgres(String),
}

impl TryFrom<String> for MetadataStore {
    type Error = String;
    fn try_from(text: String) -> Result<MetadataStore, String> {
        let trimmed = text.trim();
        if trimmed == "sqlite" {
            Ok(MetadataStore::Sqlite)
        } else if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            Ok(MetadataStore::Postgres(trimmed.to_owned()))
        } else {
            Err(format!(
                "\"{text}\" is neither \"sqlite\" nor a postgres://user:password@host:5432/database URL"
            ))
        }
    }
}

impl From<MetadataStore> for String {
    fn from(store: MetadataStore) -> String {
        match store {
            MetadataStore::Sqlite => "sqlite".into(),
            MetadataStore::Postgres(url) => url,
        }
    }
}

/// Where object bodies live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BlobStoreKind {
    /// Files in the data directory (the default).
    Local,
    /// An S3-compatible service (`s3_*` settings).
    S3,
}

impl TryFrom<String> for BlobStoreKind {
    type Error = String;
    fn try_from(text: String) -> Result<BlobStoreKind, String> {
        match text.trim() {
            "local" => Ok(BlobStoreKind::Local),
            "s3" => Ok(BlobStoreKind::S3),
            _ => Err(format!("\"{text}\" is neither \"local\" nor \"s3\"")),
        }
    }
}

impl From<BlobStoreKind> for String {
    fn from(kind: BlobStoreKind) -> String {
        match kind {
            BlobStoreKind::Local => "local".into(),
            BlobStoreKind::S3 => "s3".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LogFormat {
    /// Human-readable lines (the default); coloured only on a terminal.
    Text,
    /// One JSON object per line, with the request id.
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;
    fn try_from(text: String) -> Result<LogFormat, String> {
        match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("\"{text}\" is neither \"text\" nor \"json\"")),
        }
    }
}

impl From<LogFormat> for String {
    fn from(format: LogFormat) -> String {
        match format {
            LogFormat::Text => "text".into(),
            LogFormat::Json => "json".into(),
        }
    }
}

/// A configuration that cannot be used, with a sentence saying which setting and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// Overrides given on the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub metrics_listen: Option<SocketAddr>,
    pub s3_api_listen: Option<S3Listen>,
}

impl Config {
    /// A configuration from one TOML file and the defaults only, ignoring the environment (the
    /// destination of `stowage migrate`, whose environment describes the source).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let file = toml_file(path)?;
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(file)
            .extract()
            .map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the layered configuration. The file is `overrides.config_file`, else
    /// `STOWAGE_CONFIG`, else `stowage.toml` in the working directory when it exists.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = overrides
            .config_file
            .clone()
            .or_else(|| std::env::var_os("STOWAGE_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("stowage.toml")).filter(|p| p.exists()));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = &file {
            figment = figment.merge(toml_file(file)?);
        }
        check_environment(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()))?;
        let names = setting_names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        figment = figment.merge(Env::prefixed(ENV_PREFIX).only(&names));
        let mut config: Config = figment.extract().map_err(describe)?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(metrics) = overrides.metrics_listen {
            config.metrics_listen = Some(metrics);
        }
        if let Some(s3) = overrides.s3_api_listen {
            config.s3_api_listen = s3;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_uploads_per_user == 0
            || self.max_keys_per_request == 0
            || self.max_files_per_job == 0
            || self.max_jobs_per_org == 0
        {
            return Err(ConfigError(
                "max_uploads_per_user, max_keys_per_request, max_files_per_job and max_jobs_per_org must each be at least 1"
                    .into(),
            ));
        }
        if self.max_connections == 0 || self.max_downloads == 0 {
            return Err(ConfigError(
                "max_connections and max_downloads must each be at least 1".into(),
            ));
        }
        if self.list_page_size == 0 {
            return Err(ConfigError("list_page_size must be at least 1".into()));
        }
        if self.download_url_ttl_secs <= 0 || self.download_url_ttl_secs > 366 * 24 * 3600 {
            return Err(ConfigError(
                "download_url_ttl_secs must be between 1 second and a year".into(),
            ));
        }
        if self.download_grace_secs < 0 || self.download_grace_secs > 7 * 24 * 3600 {
            return Err(ConfigError(
                "download_grace_secs must be between 0 and a week (604800 seconds)".into(),
            ));
        }
        if self.timestamp_max_age_secs < 0 || self.timestamp_max_future_secs < 0 {
            return Err(ConfigError("timestamp windows cannot be negative".into()));
        }
        if self.console_idle_timeout_secs == 0 || self.console_session_max_secs == 0 {
            return Err(ConfigError(
                "console_idle_timeout_secs and console_session_max_secs must each be at least 1 second (a web console session could not last at all)".into(),
            ));
        }
        crate::net::TrustedProxies::parse(&self.trusted_proxies).map_err(ConfigError)?;
        if self.blob_store == BlobStoreKind::S3 && self.s3_bucket.is_empty() {
            return Err(ConfigError(
                "blob_store = \"s3\" needs s3_bucket (STOWAGE_S3_BUCKET): the bucket to keep bodies in".into(),
            ));
        }
        if let Some(key) = &self.server_key
            && crate::crypto::ServerKey::from_hex(key.trim()).is_none()
        {
            return Err(ConfigError("server_key must be 64 hex characters".into()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError(
                "HTTPS needs both tls_cert (the certificate chain) and tls_key (its private key)".into(),
            ));
        }
        if let Some(metrics) = self.metrics_listen
            && metrics == self.listen
            && metrics.port() != 0
        {
            return Err(ConfigError(format!(
                "metrics_listen ({metrics}) is the API's own address: give /metrics another port, \
                 or leave metrics_listen unset to serve it beside the API"
            )));
        }
        if let S3Listen::On(s3) = self.s3_api_listen
            && s3.port() != 0
            && (s3 == self.listen || Some(s3) == self.metrics_listen)
        {
            return Err(ConfigError(format!(
                "s3_api_listen ({s3}) is also the address of the QuantConnect API or of /metrics: \
                 give the S3 API its own port (the default is {DEFAULT_S3_API_PORT}), or set s3_api_listen = \"off\""
            )));
        }
        if self.s3_api_region.trim().is_empty() {
            return Err(ConfigError(
                "s3_api_region cannot be empty (the default is us-east-1)".into(),
            ));
        }
        if self.s3_api_multipart_expiry_secs == 0 {
            return Err(ConfigError(
                "s3_api_multipart_expiry_secs must be at least 1 second (the default is a week, 604800)".into(),
            ));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError(format!(
                "public_url must start with http:// or https://, got {url}"
            )));
        }
        Ok(())
    }

    /// The S3 settings of `blob_store = "s3"`.
    pub(crate) fn s3_settings(&self) -> crate::blob::s3::S3Settings {
        crate::blob::s3::S3Settings {
            bucket: self.s3_bucket.clone(),
            endpoint: self.s3_endpoint.clone().filter(|e| !e.is_empty()),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            path_style: self.s3_path_style,
            allow_http: self.s3_allow_http,
            prefix: self.s3_prefix.clone().filter(|p| !p.is_empty()),
        }
    }

    /// Whether several servers may share the stores (anything but the embedded default).
    pub fn shared_stores(&self) -> bool {
        self.metadata != MetadataStore::Sqlite || self.blob_store != BlobStoreKind::Local
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("metadata.sqlite3")
    }

    pub(crate) fn key_path(&self) -> PathBuf {
        self.data_dir.join("server.key")
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }

    pub(crate) fn credentials_path(&self) -> PathBuf {
        self.data_dir.join("initial-credentials.json")
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

const ENV_PREFIX: &str = "STOWAGE_";

/// The names of every setting, as written in the TOML file (and, upper-cased after
/// `STOWAGE_`, in the environment): the fields of [`Config`], read from its serialized default
/// so that a new setting is known without a second list.
pub fn setting_names() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(name, _)| name).collect(),
        _ => Vec::new(),
    }
}

/// `STOWAGE_*` variables that are not settings of the server but are read by other parts of
/// stowage (the client, the log filter, the test scripts): never refused.
const OTHER_VARIABLES: [&str; 7] = [
    "CONFIG",
    "LOG",
    "URL",
    "USER_ID",
    "API_TOKEN",
    "ORGANIZATION_ID",
    "CREDENTIALS",
];

/// Refuses a `STOWAGE_*` variable that is not a setting but is within two typing mistakes of
/// one (`STOWAGE_LISTN`, `STOWAGE_DEFAULT_MAX_BYTE`): such a variable was meant as that
/// setting, and ignoring it would run with the default. Other `STOWAGE_*` names belong to
/// clients and scripts and are left alone.
fn check_environment(names: impl Iterator<Item = String>) -> Result<(), ConfigError> {
    let settings = setting_names();
    for name in names {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        if settings.contains(&lower) || OTHER_VARIABLES.contains(&rest) {
            continue;
        }
        if let Some(meant) = settings.iter().find(|s| edit_distance(&lower, s) <= 2) {
            return Err(ConfigError(format!(
                "the environment variable {name} is not a setting; did you mean {ENV_PREFIX}{}? \
                 Rename or unset it",
                meant.to_ascii_uppercase()
            )));
        }
    }
    Ok(())
}

/// Levenshtein distance between two short ASCII names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// The TOML file as a provider, once it is known to exist and to name only settings.
fn toml_file(path: &Path) -> Result<figment::providers::Data<Toml>, ConfigError> {
    if !path.exists() {
        return Err(ConfigError(format!(
            "the configuration file {} does not exist",
            path.display()
        )));
    }
    if path.is_dir() {
        return Err(ConfigError(format!(
            "the configuration file {} is a directory, not a file",
            path.display()
        )));
    }
    let file = Toml::file(path);
    let data = file.data().map_err(describe)?;
    let settings = setting_names();
    for dict in data.values() {
        for key in dict.keys() {
            if !settings.contains(key) {
                let hint = settings
                    .iter()
                    .find(|s| edit_distance(key, s) <= 2)
                    .map(|s| format!("did you mean {s}? "))
                    .unwrap_or_default();
                return Err(ConfigError(format!(
                    "{} has an unknown setting \"{key}\"; {hint}the settings are listed in the README's Configuration section",
                    path.display()
                )));
            }
        }
    }
    Ok(file)
}

/// One sentence per figment error: the setting (as the user wrote it), where it came from, and
/// what is wrong, without figment's internal profile names (`default.listen`).
fn describe(error: figment::Error) -> ConfigError {
    let sentences: Vec<String> = error.into_iter().map(|e| describe_one(&e)).collect();
    ConfigError(sentences.join("; "))
}

fn describe_one(error: &figment::Error) -> String {
    let mut path: &[String] = &error.path;
    if let (Some(first), Some(profile)) = (path.first(), &error.profile)
        && first.as_str() == profile.as_str()
    {
        path = &path[1..];
    }
    let key = path.join(".");
    let origin = match &error.metadata {
        Some(metadata) => match &metadata.source {
            Some(figment::Source::File(file)) => format!(" in {}", file.display()),
            _ if metadata.name.contains("environment") && !key.is_empty() => {
                format!(" in the environment variable {ENV_PREFIX}{}", key.to_ascii_uppercase())
            }
            _ => String::new(),
        },
        None => String::new(),
    };
    let mut what = Reason(&error.kind).to_string();
    if key == "listen" {
        what.push_str(": write an address and a port, such as 127.0.0.1:5612 or 0.0.0.0:5612");
    }
    if key.is_empty() {
        format!("cannot read the configuration{origin}: {what}")
    } else {
        format!("the setting {key}{origin}: {what}")
    }
}

/// figment's error kinds in words.
struct Reason<'a>(&'a figment::error::Kind);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use figment::error::Kind;
        match self.0 {
            Kind::InvalidType(found, expected) => write!(f, "expected {expected}, found {found}"),
            Kind::InvalidValue(found, expected) => write!(f, "expected {expected}, found {found}"),
            other => write!(f, "{other}"),
        }
    }
}

/// Accepts a list of strings, or one string of comma-separated items (as environment variables
/// give it).
fn string_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Raw::deserialize(deserializer)? {
        Raw::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Raw::Many(list) => list,
    })
}

/// Accepts a byte count as an integer or as a string such as `"5 GiB"` or `"500 MB"`.
fn byte_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(n) => Ok(n),
        Raw::Text(text) => parse_byte_count(&text).map_err(serde::de::Error::custom),
    }
}

/// Parses `"1048576"`, `"5 GiB"`, `"500MB"` into bytes.
pub(crate) fn parse_byte_count(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    text.parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(|_| {
        format!(
            "\"{text}\" is not a size: write a number of bytes, or a number and a unit such as \"500 MB\" or \"5 GiB\""
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_byte_count("1048576"), Ok(1_048_576));
        assert_eq!(parse_byte_count("5 GiB"), Ok(5 * 1024 * 1024 * 1024));
        assert_eq!(parse_byte_count("500 MB"), Ok(500_000_000));
        assert!(parse_byte_count("lots").is_err());
    }

    #[test]
    fn console_sessions_must_be_able_to_last() {
        assert!(Config::default().validate().is_ok());
        for config in [
            Config {
                console_idle_timeout_secs: 0,
                ..Config::default()
            },
            Config {
                console_session_max_secs: 0,
                ..Config::default()
            },
        ] {
            let refusal = config.validate().expect_err("zero").0;
            assert!(
                refusal.contains("console_idle_timeout_secs and console_session_max_secs"),
                "{refusal}"
            );
        }
    }

    #[test]
    fn choices_are_parsed_once_into_enums() {
        let parse = |text: &str| MetadataStore::try_from(text.to_owned());
        assert_eq!(parse("sqlite"), Ok(MetadataStore::Sqlite));
        assert_eq!(
            parse("postgres://u:p@h:5432/db"),
            Ok(MetadataStore::Postgres("postgres://u:p@h:5432/db".into()))
        );
        assert!(parse("mysql://h/db").is_err_and(|e| e.contains("neither \"sqlite\" nor a postgres://")));
        assert_eq!(BlobStoreKind::try_from("s3".to_owned()), Ok(BlobStoreKind::S3));
        assert!(BlobStoreKind::try_from("gcs".to_owned()).is_err_and(|e| e.contains("neither \"local\" nor \"s3\"")));
        assert_eq!(LogFormat::try_from("json".to_owned()), Ok(LogFormat::Json));
        assert!(LogFormat::try_from("xml".to_owned()).is_err());
        assert!(setting_names().contains(&"log_format".to_owned()));
        assert_eq!(edit_distance("lsten", "listen"), 1);
        assert_eq!(edit_distance("listen", "listen"), 0);
        assert!(edit_distance("url", "listen") > 2);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own closure type
    fn an_unknown_key_in_the_file_is_refused_naming_the_key_and_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("stowage.toml", "listen = \"127.0.0.1:1\"\ndefault_max_byte = 5\n")?;
            let error = Config::load(&Overrides::default()).map(|_| ()).unwrap_err().to_string();
            assert_eq!(
                error,
                "configuration: stowage.toml has an unknown setting \"default_max_byte\"; did you mean \
                 default_max_bytes? the settings are listed in the README's Configuration section"
            );
            jail.create_file("other.toml", "colour = true\n")?;
            let error = Config::from_file(Path::new("other.toml"))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("other.toml has an unknown setting \"colour\";"),
                "{error}"
            );
            assert!(!error.contains("did you mean"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own closure type
    fn a_misspelt_variable_is_refused_and_other_stowage_variables_are_not() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("STOWAGE_URL", "http://example.invalid/api/v2");
            jail.set_env("STOWAGE_TEST_BACKEND", "embedded");
            jail.set_env("STOWAGE_ORG_ID", "abc");
            assert!(Config::load(&Overrides::default()).is_ok());
            jail.set_env("STOWAGE_DEFAULT_MAX_FILE", "9");
            let error = Config::load(&Overrides::default()).map(|_| ()).unwrap_err().to_string();
            assert_eq!(
                error,
                "configuration: the environment variable STOWAGE_DEFAULT_MAX_FILE is not a setting; \
                 did you mean STOWAGE_DEFAULT_MAX_FILES? Rename or unset it"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own closure type
    fn a_bad_value_names_the_setting_and_where_it_came_from() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("stowage.toml", "max_object_size = \"lots\"\n")?;
            let error = Config::load(&Overrides::default()).map(|_| ()).unwrap_err().to_string();
            assert!(
                error.starts_with("configuration: the setting max_object_size in "),
                "{error}"
            );
            assert!(error.contains("stowage.toml: \"lots\" is not a size"), "{error}");
            assert!(!error.contains("default."), "no internal profile names: {error}");
            jail.create_file("stowage.toml", "")?;
            jail.set_env("STOWAGE_LISTEN", "everywhere");
            let error = Config::load(&Overrides::default()).map(|_| ()).unwrap_err().to_string();
            assert!(
                error.starts_with("configuration: the setting listen in the environment variable STOWAGE_LISTEN: "),
                "{error}"
            );
            assert!(error.ends_with("such as 127.0.0.1:5612 or 0.0.0.0:5612"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own closure type
    fn s3_api_listen_is_on_by_default_can_be_off_and_not_another_listener() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(&Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.s3_api_listen, S3Listen::On("127.0.0.1:5613".parse().unwrap()));
            jail.set_env("STOWAGE_S3_API_LISTEN", "off");
            let config = Config::load(&Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.s3_api_listen, S3Listen::Off);
            jail.set_env("STOWAGE_S3_API_LISTEN", "127.0.0.1:5612");
            let refused = Config::load(&Overrides::default()).map(|_| ()).unwrap_err().to_string();
            assert!(
                refused.contains("s3_api_listen (127.0.0.1:5612) is also the address"),
                "{refused}"
            );
            jail.set_env("STOWAGE_S3_API_LISTEN", "somewhere");
            let refused = Config::load(&Overrides::default()).map(|_| ()).unwrap_err().to_string();
            assert!(refused.contains("neither an address with a port"), "{refused}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own closure type
    fn metrics_listen_is_off_by_default_and_not_the_api_address() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(
                Config::load(&Overrides::default()).map(|c| c.metrics_listen).ok(),
                Some(None)
            );
            jail.set_env("STOWAGE_METRICS_LISTEN", "127.0.0.1:9612");
            let config = Config::load(&Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.metrics_listen, Some("127.0.0.1:9612".parse().unwrap()));
            jail.set_env("STOWAGE_LISTEN", "127.0.0.1:9612");
            let error = Config::load(&Overrides::default()).map(|_| ()).unwrap_err().to_string();
            assert_eq!(
                error,
                "configuration: metrics_listen (127.0.0.1:9612) is the API's own address: give /metrics \
                 another port, or leave metrics_listen unset to serve it beside the API"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own closure type
    fn file_env_and_flags_layer() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "list_page_size = 7\nmax_object_size = \"1 MiB\"\ndefault_max_files = 3\n",
            )?;
            jail.set_env("STOWAGE_DEFAULT_MAX_FILES", "9");
            jail.set_env("STOWAGE_URL", "http://example.invalid/api/v2");
            let overrides = Overrides {
                config_file: Some("custom.toml".into()),
                listen: Some("127.0.0.1:9999".parse().unwrap()),
                data_dir: None,
                metrics_listen: None,
                s3_api_listen: None,
            };
            let config = Config::load(&overrides).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.list_page_size, 7);
            assert_eq!(config.max_object_size, 1024 * 1024);
            assert_eq!(config.default_max_files, 9);
            assert_eq!(config.listen.port(), 9999);
            assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
            Ok(())
        });
    }
}
