//! Server configuration: defaults (spec section 6), then a TOML file, then `STOWAGE_*`
//! environment variables, then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:5612";
pub(crate) const DEFAULT_DATA_DIR: &str = "./stowage-data";

/// Everything `stowage serve` can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// Address and port to listen on.
    pub(crate) listen: SocketAddr,
    /// Where the metadata database, the server key and the object bodies live (when embedded).
    pub data_dir: PathBuf,
    /// Metadata store: `sqlite` (the default, in the data directory) or a `postgres://` URL.
    pub metadata: String,
    /// Body store: `local` (the default, in the data directory) or `s3`.
    pub blob_store: String,
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
    pub log_format: String,
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
    pub(crate) shutdown_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 5612))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            metadata: "sqlite".into(),
            blob_store: "local".into(),
            s3_bucket: String::new(),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_path_style: true,
            s3_allow_http: false,
            s3_prefix: None,
            server_key: None,
            log_format: "text".into(),
            trusted_proxies: Vec::new(),
            public_url: None,
            default_max_bytes: 10 * 1024 * 1024 * 1024,
            default_max_files: 10_000,
            max_object_size: 5 * 1024 * 1024 * 1024,
            timestamp_max_age_secs: 7200,
            timestamp_max_future_secs: 300,
            download_url_ttl_secs: 3600,
            list_page_size: 1000,
            small_body_threshold: crate::blob::small::DEFAULT_THRESHOLD as u64,
            gc_interval_secs: 30,
            orphan_sweep_interval_secs: 3600,
            auth_failure_limit: 50,
            auth_failure_window_secs: 60,
            header_read_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// Overrides given on the command line.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// A configuration from one TOML file and the defaults only, ignoring the environment (the
    /// destination of `stowage migrate`, whose environment describes the source).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError(format!("config file {} does not exist", path.display())));
        }
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
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
            if !file.exists() {
                return Err(ConfigError(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment =
            figment.merge(Env::prefixed("STOWAGE_").only(&ENV_KEYS.iter().map(|k| k.to_owned()).collect::<Vec<_>>()));
        let mut config: Config = figment.extract().map_err(|e| ConfigError(e.to_string()))?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.list_page_size == 0 {
            return Err(ConfigError("list_page_size must be at least 1".into()));
        }
        if self.download_url_ttl_secs <= 0 || self.download_url_ttl_secs > 366 * 24 * 3600 {
            return Err(ConfigError(
                "download_url_ttl_secs must be between 1 second and a year".into(),
            ));
        }
        if self.timestamp_max_age_secs < 0 || self.timestamp_max_future_secs < 0 {
            return Err(ConfigError("timestamp windows cannot be negative".into()));
        }
        if self.metadata != "sqlite"
            && !self.metadata.starts_with("postgres://")
            && !self.metadata.starts_with("postgresql://")
        {
            return Err(ConfigError(format!(
                "metadata must be \"sqlite\" or a postgres:// URL, got \"{}\"",
                self.metadata
            )));
        }
        if self.log_format != "text" && self.log_format != "json" {
            return Err(ConfigError(format!(
                "log_format must be \"text\" or \"json\", got \"{}\"",
                self.log_format
            )));
        }
        crate::http::TrustedProxies::parse(&self.trusted_proxies).map_err(ConfigError)?;
        if self.blob_store != "local" && self.blob_store != "s3" {
            return Err(ConfigError(format!(
                "blob_store must be \"local\" or \"s3\", got \"{}\"",
                self.blob_store
            )));
        }
        if self.blob_store == "s3" && self.s3_bucket.is_empty() {
            return Err(ConfigError("blob_store = \"s3\" needs s3_bucket".into()));
        }
        if let Some(key) = &self.server_key
            && crate::crypto::ServerKey::from_hex(key.trim()).is_none()
        {
            return Err(ConfigError("server_key must be 64 hex characters".into()));
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
    pub(crate) fn shared_stores(&self) -> bool {
        self.metadata != "sqlite" || self.blob_store != "local"
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

/// The environment variables read as configuration (others with the prefix, such as the
/// client's `STOWAGE_URL`, are not configuration of the server).
const ENV_KEYS: [&str; 31] = [
    "small_body_threshold",
    "log_format",
    "trusted_proxies",
    "listen",
    "data_dir",
    "metadata",
    "blob_store",
    "s3_bucket",
    "s3_endpoint",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_path_style",
    "s3_allow_http",
    "s3_prefix",
    "server_key",
    "public_url",
    "default_max_bytes",
    "default_max_files",
    "max_object_size",
    "timestamp_max_age_secs",
    "timestamp_max_future_secs",
    "download_url_ttl_secs",
    "list_page_size",
    "gc_interval_secs",
    "orphan_sweep_interval_secs",
    "auth_failure_limit",
    "auth_failure_window_secs",
    "header_read_timeout_secs",
    "body_idle_timeout_secs",
    "shutdown_grace_secs",
];

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
    text.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("'{text}' is not a byte count: {e}"))
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
