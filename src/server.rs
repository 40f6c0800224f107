//! Opening a data directory and running `stowage serve`: the first start creates the server key,
//! a first organization and an admin member and prints their credentials once; later starts reuse
//! everything. Also the graceful shutdown on SIGTERM / Ctrl-C.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::blob::BlobStore;
use crate::blob::local::LocalBlobs;
use crate::blob::s3::S3Blobs;
use crate::blob::small::SmallAndLocalBlobs;
use crate::config::{BlobStoreKind, Config, MetadataStore};
use crate::crypto::{ServerKey, generate_token, write_private_file};
use crate::http::{AppState, app};

use crate::meta::postgres::PostgresMeta;
use crate::meta::schema as meta_schema;
use crate::meta::sqlite::SqliteMeta;
use crate::meta::{JobLimits, MetaError, MetaStore, Quota};
use crate::schema::Version;
use crate::service::{Limits, Service, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(
        "the data directory {0} is a file, not a directory: pass --data-dir with a directory (or a path that does not exist yet)"
    )]
    NotADirectory(String),
    #[error(
        "the data directory {0} does not exist, so it holds no store: pass --data-dir with the \
         directory `stowage serve` uses (run from the folder holding stowage-data, or see \
         STOWAGE_DATA_DIR), or add --create-data-dir to start a new, empty store there"
    )]
    NoDataDir(String),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
    #[error("cannot write {path}: {source}")]
    Credentials { path: String, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The metadata store and the server key a configuration names, created when missing.
pub struct Opened {
    pub meta: Arc<dyn MetaStore>,
    pub key: ServerKey,
}

/// Opens the metadata side of a configuration (shared by `serve`, `admin` and `fsck`): SQLite in
/// the data directory or PostgreSQL, and the server key from the configuration or the data
/// directory. Everything this process creates from here on is owner-only (0600/0700).
pub async fn open_data_dir(config: &Config) -> Result<Opened, ServeError> {
    // A PostgreSQL server that cannot be reached is refused before anything is created here.
    let postgres: Option<Arc<dyn MetaStore>> = match &config.metadata {
        MetadataStore::Sqlite => None,
        MetadataStore::Postgres(url) => Some(Arc::new(PostgresMeta::connect(url).await?)),
    };
    crate::modes::restrict_new_files();
    let dir = config.data_dir();
    if dir.exists() && !dir.is_dir() {
        return Err(ServeError::NotADirectory(dir.display().to_string()));
    }
    std::fs::create_dir_all(dir).map_err(|source| ServeError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let key = match &config.server_key {
        Some(hex) => ServerKey::from_hex(hex.trim())
            .ok_or_else(|| crate::crypto::CryptoError::MalformedKey("the server_key setting".into()))?,
        None => ServerKey::load_or_create(&config.key_path())?,
    };
    let meta = match postgres {
        Some(meta) => meta,
        None => Arc::new(SqliteMeta::open(&config.db_path())?),
    };
    Ok(Opened { meta, key })
}

/// Refuses a data directory that does not exist (or is a file) when the configuration keeps
/// something there (the SQLite metadata or the server key): a command run from the wrong folder
/// would otherwise create a new, empty store instead of working on the real one.
pub fn require_data_dir(config: &Config) -> Result<(), ServeError> {
    let dir = config.data_dir();
    let needed = config.metadata == MetadataStore::Sqlite
        || config.server_key.is_none()
        || config.blob_store == BlobStoreKind::Local;
    if dir.exists() && !dir.is_dir() {
        return Err(ServeError::NotADirectory(dir.display().to_string()));
    }
    if needed && !dir.exists() {
        return Err(ServeError::NoDataDir(dir.display().to_string()));
    }
    Ok(())
}

/// Opens the body store a configuration names. With `fresh_start`, a local store clears its
/// unfinished uploads (only the server may do that; `fsck` attaches without touching anything).
pub async fn open_blobs(config: &Config, fresh_start: bool) -> Result<Arc<dyn BlobStore>, ServeError> {
    if config.blob_store == BlobStoreKind::S3 {
        let blobs = S3Blobs::connect(config.s3_settings())?;
        blobs.check().await?;
        return Ok(Arc::new(blobs));
    }
    let dir = config.blob_dir();
    let threshold = usize::try_from(config.small_body_threshold).unwrap_or(usize::MAX);
    Ok(match (fresh_start, threshold) {
        (true, 0) => Arc::new(LocalBlobs::open(&dir)?),
        (true, _) => Arc::new(SmallAndLocalBlobs::open(&dir, threshold)?),
        // fsck and migrate read whatever is there, small bodies included.
        (false, _) => Arc::new(SmallAndLocalBlobs::attach(&dir)?),
    })
}

/// The schema version of one store and the newest this binary knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SchemaState {
    /// `None`: the store does not exist yet.
    pub version: Option<Version>,
    pub newest: Version,
}

/// The schema versions of a configuration's stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SchemaVersions {
    pub metadata: SchemaState,
    /// `None` when the bodies are not in the data directory (`blob_store = "s3"`).
    #[serde(rename = "smallBodies")]
    pub small_bodies: Option<SchemaState>,
}

/// Reads the schema versions of the stores a configuration names, changing nothing (opening a
/// store is what upgrades it).
pub async fn schema_versions(config: &Config) -> Result<SchemaVersions, ServeError> {
    let meta_error = MetaError::Schema;
    let metadata = match &config.metadata {
        MetadataStore::Sqlite => {
            crate::schema::sqlite_version(&config.db_path(), meta_schema::STORE, meta_schema::V1_TABLE)
                .map_err(meta_error)?
        }
        MetadataStore::Postgres(url) => Some(PostgresMeta::schema_version(url).await?).filter(|v| *v > 0),
    };
    let small_bodies = if config.blob_store == BlobStoreKind::S3 {
        None
    } else {
        let version = crate::blob::small::schema_version(&config.blob_dir()).map_err(crate::blob::BlobError::Schema)?;
        Some(SchemaState {
            version,
            newest: crate::schema::newest(crate::blob::small::SCHEMA),
        })
    };
    Ok(SchemaVersions {
        metadata: SchemaState {
            version: metadata,
            newest: crate::schema::newest(meta_schema::SQLITE),
        },
        small_bodies,
    })
}

/// What the first start prints and writes to `initial-credentials.json`.
#[derive(Debug, Serialize)]
pub(crate) struct InitialCredentials {
    #[serde(rename = "userId")]
    pub(crate) user_id: i64,
    #[serde(rename = "apiToken")]
    pub(crate) api_token: String,
    #[serde(rename = "organizationId")]
    pub(crate) organization_id: String,
}

/// On a store without users, creates the first organization and an admin member with read,
/// write and delete, and writes their credentials (mode 0600). Returns them when created.
pub(crate) async fn bootstrap(config: &Config, opened: &Opened) -> Result<Option<InitialCredentials>, ServeError> {
    let now = now_ms();
    let token = generate_token();
    let sealing_key = opened.key.clone();
    let sealed_token = token.clone();
    let created = opened
        .meta
        .create_first_identities(
            "default",
            "admin",
            now,
            Box::new(move |id| sealing_key.seal(id, &sealed_token).ok()),
        )
        .await?;
    // Someone is there already (a restart, or another server that started at the same time).
    let Some((org, user)) = created else {
        return Ok(None);
    };
    let credentials = InitialCredentials {
        user_id: user.0,
        api_token: token,
        organization_id: org.to_string(),
    };
    let path = config.credentials_path();
    let text = serde_json::to_vec_pretty(&credentials).unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    write_private_file(&path, &text).map_err(|source| ServeError::Credentials {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Some(credentials))
}

fn print_credentials(credentials: &InitialCredentials, config: &Config, local: std::net::SocketAddr) {
    let scheme = if config.tls_cert.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{local}/api/v2");
    println!(
        "\nstowage: created the first organization and an admin user (shown once; also in {}):\n\
         \n  userId:         {}\n  apiToken:       {}\n  organizationId: {}\n\
         \nTry it:\n\
         \n  TS=$(date +%s); HASH=$(printf '%s' \"{}:$TS\" | sha256sum | cut -d' ' -f1)\
         \n  curl -sS --fail-with-body -u \"{}:$HASH\" -H \"Timestamp: $TS\" -H 'Content-Type: application/json' \\\
         \n       -d '{{\"organizationId\": \"{}\"}}' {}/object/list\n",
        config.credentials_path().display(),
        credentials.user_id,
        credentials.api_token,
        credentials.organization_id,
        credentials.api_token,
        credentials.user_id,
        credentials.organization_id,
        base,
    );
}

/// Bounds of the connection layer.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Longest time a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Longest pause between two pieces of a request body.
    pub body_idle_timeout: Duration,
    /// How long requests in flight may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: crate::net::TrustedProxies,
    /// A connection with no request in flight and no byte moving for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; more are turned away.
    pub max_connections: usize,
}

impl ConnectionLimits {
    pub(crate) fn from_config(config: &Config) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs.max(1)),
            body_idle_timeout: Duration::from_secs(config.body_idle_timeout_secs.max(1)),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
            trusted_proxies: crate::net::TrustedProxies::parse(&config.trusted_proxies).unwrap_or_default(),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
            max_connections: config.max_connections,
        }
    }
}

impl Limits {
    /// The service's limits from the configuration.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            default_quota: Quota {
                max_bytes: config.default_max_bytes,
                max_files: config.default_max_files,
            },
            max_object_size: config.max_object_size,
            timestamp_max_age: config.timestamp_max_age_secs,
            timestamp_max_future: config.timestamp_max_future_secs,
            download_ttl_secs: config.download_url_ttl_secs,
            download_grace_secs: config.download_grace_secs,
            list_page_size: config.list_page_size,
            auth_failure_limit: config.auth_failure_limit,
            auth_failure_window: Duration::from_secs(config.auth_failure_window_secs),
            max_uploads_per_user: config.max_uploads_per_user,
            max_keys_per_request: config.max_keys_per_request,
            jobs: JobLimits {
                max_files: config.max_files_per_job,
                max_live_jobs: config.max_jobs_per_org,
            },
            max_downloads: config.max_downloads,
            console_idle_ms: secs_to_ms(config.console_idle_timeout_secs),
            console_max_ms: secs_to_ms(config.console_session_max_secs),
            multipart_expiry_ms: secs_to_ms(config.s3_api_multipart_expiry_secs),
        }
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000)
}

/// Largest request head (request line and headers) accepted, in bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Runs the server until SIGTERM or Ctrl-C.
///
/// Start-up order: the settings were validated when loaded; the listener is bound, then the
/// remote stores are reached, and only then is anything created in the data directory. A start
/// that fails (port in use, unreachable database) leaves no half-made store whose first
/// credentials nobody saw.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let listener = bind(config.listen).await?;
    let local = listener.local_addr().map_err(|e| listen_error(config.listen, &e))?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            let listener = bind(addr).await?;
            let local = listener.local_addr().map_err(|e| listen_error(addr, &e))?;
            Some((listener, local))
        }
        None => None,
    };
    let s3_listener = match config.s3_api_listen {
        crate::config::S3Listen::On(addr) => {
            let listener = bind_s3(addr).await?;
            let local = listener.local_addr().map_err(|e| listen_error(addr, &e))?;
            Some((listener, local))
        }
        crate::config::S3Listen::Off => None,
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::ReloadableTls::load(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let (opened, blobs) = open_stores(&config).await?;
    match crate::modes::tighten(config.data_dir()) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            entries = n,
            "tightened the data directory to owner-only access (0700/0600)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot tighten the data directory's access modes"),
    }
    let credentials = bootstrap(&config, &opened).await?;
    let service = Arc::new(Service::new(
        opened.meta.clone(),
        blobs,
        Limits::from_config(&config),
        opened.key.clone(),
    ));
    let collector = service.spawn_collector(
        Duration::from_secs(config.gc_interval_secs.max(1)),
        Duration::from_secs(config.orphan_sweep_interval_secs.max(60)),
        config.shared_stores(),
    );
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics are off"))
        .ok();
    let memory_release = spawn_memory_release(service.clone(), metrics.clone(), MEMORY_RELEASE_INTERVAL);
    let state = AppState {
        metrics,
        service,
        public_url: config.public_url.clone(),
    };

    let reloader = tls.as_ref().and_then(|tls| tls.reload_on_sighup());
    match credentials {
        Some(credentials) => print_credentials(&credentials, &config, local),
        None => remind_credentials(&config),
    }
    if let Some((_, metrics_local)) = &metrics_listener {
        println!("stowage serving metrics on {scheme}://{metrics_local}/metrics (not on the API's address)");
        tracing::info!(%metrics_local, "metrics listening");
    }
    println!(
        "stowage listening on {scheme}://{local}/api/v2 (data in {})",
        display_dir(config.data_dir())
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%local, "listening");
    if let Some((_, s3_local)) = &s3_listener {
        println!(
            "stowage S3 API listening on {scheme}://{s3_local} (region {})",
            config.s3_api_region
        );
        let _ = std::io::stdout().flush();
        tracing::info!(%s3_local, "S3 API listening");
    }

    let mut limits = ConnectionLimits::from_config(&config);
    limits.max_connections = crate::conn::connection_budget(limits.max_connections);
    let s3_router = s3_listener.as_ref().map(|_| {
        crate::s3::router(
            state.service.clone(),
            crate::s3::S3Settings {
                region: config.s3_api_region.clone(),
                domain: config.s3_api_domain.clone(),
                max_xml_bytes: S3_MAX_XML_BYTES,
            },
        )
    });
    // One cap over the three listeners: they share the open-file limit.
    let slots = Arc::new(tokio::sync::Semaphore::new(
        limits.max_connections.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    // One signal stops every listener.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let metrics = async {
        match metrics_listener {
            Some((metrics_listener, _)) => {
                serve_listener(
                    metrics_listener,
                    crate::http::metrics_app(state.clone()),
                    Paths::Collapse,
                    limits.clone(),
                    tls.clone(),
                    until_stopped(stopped.clone()),
                    slots.clone(),
                )
                .await
            }
            None => Ok(()),
        }
    };
    let s3 = async {
        match (s3_listener, s3_router) {
            (Some((s3_listener, _)), Some(router)) => {
                serve_listener(
                    s3_listener,
                    router,
                    Paths::AsSent,
                    limits.clone(),
                    tls.clone(),
                    until_stopped(stopped.clone()),
                    slots.clone(),
                )
                .await
            }
            _ => Ok(()),
        }
    };
    let api_router = match config.metrics_listen {
        Some(_) => crate::http::api_without_metrics(state.clone()),
        None => app(state.clone()),
    };
    let api = serve_listener(
        listener,
        api_router,
        Paths::Collapse,
        limits.clone(),
        tls.clone(),
        until_stopped(stopped.clone()),
        slots.clone(),
    );
    let (api, metrics, s3) = tokio::join!(api, metrics, s3);
    signal.abort();
    let result = api.and(metrics).and(s3);
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    collector.abort();
    memory_release.abort();
    result
}

/// Largest XML body an S3 request may send (DeleteObjects of 1,000 long keys fits).
const S3_MAX_XML_BYTES: usize = 2 * 1024 * 1024;

/// Binds the S3 API's socket; a port in use names the setting that chose it.
async fn bind_s3(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            ServeError::Listen {
                addr: addr.to_string(),
                reason: format!(
                    "another program is already listening on port {} (perhaps another stowage serve); \
                     stop it, choose another address for the S3 API with --s3-api-listen or \
                     STOWAGE_S3_API_LISTEN, or turn the S3 API off with --s3-api-listen off",
                    addr.port()
                ),
            }
        } else {
            listen_error(addr, &e)
        }
    })
}

/// Whether a listener's requests have runs of `/` in their path collapsed (the QuantConnect
/// API, where `/api/v2//object/set` is a real request shape) or keep the path as sent (S3,
/// whose signatures cover the exact path and whose keys are opaque).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paths {
    Collapse,
    AsSent,
}

/// Binds the listening socket, with a sentence a person can act on when that fails.
async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| listen_error(addr, &e))
}

fn listen_error(addr: std::net::SocketAddr, error: &std::io::Error) -> ServeError {
    let reason = match error.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another program is already listening on port {} (perhaps another stowage serve); \
             stop it, or choose another address with --listen or STOWAGE_LISTEN",
            addr.port()
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            "this machine has no such address; use one of its own addresses, or 0.0.0.0 for all of them".into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges); choose a port above 1023".into()
        }
        _ => error.to_string(),
    };
    ServeError::Listen {
        addr: addr.to_string(),
        reason,
    }
}

/// Opens both stores of a configuration: a remote body store (S3) is reached before the data
/// directory is created, so that an unreachable one creates nothing.
async fn open_stores(config: &Config) -> Result<(Opened, Arc<dyn BlobStore>), ServeError> {
    if config.blob_store == BlobStoreKind::S3 {
        let blobs = open_blobs(config, true).await?;
        return Ok((open_data_dir(config).await?, blobs));
    }
    let opened = open_data_dir(config).await?;
    Ok((opened, open_blobs(config, true).await?))
}

/// On every start after the first, while `initial-credentials.json` is still there, says where
/// it is: the first credentials are never lost, and the file is not forgotten either.
fn remind_credentials(config: &Config) {
    let path = config.credentials_path();
    if path.exists() {
        println!(
            "stowage: the first user's credentials are in {}; keep them somewhere safe, then delete that file",
            display_dir(&path)
        );
    }
}

/// Accepts connections on `listener` and serves `router` on them until `shutdown` completes,
/// then stops accepting and gives requests in flight `limits.shutdown_grace` to finish.
///
/// At most `limits.max_connections` connections are open at once (see `conn.rs`). Per
/// connection: TCP_NODELAY; HTTP/1 request heads must arrive within the header timeout and
/// fit in 64 KiB; request bodies fail after a pause longer than the body idle timeout; the
/// connection ends when idle for the idle timeout, or when the peer takes no answer byte for the
/// body idle timeout. Each
/// request carries the client's address (`ConnectInfo`) and the address it reached
/// (`LocalAddr`), and has runs of `/` in its path collapsed.
pub async fn run(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    run_with_tls(listener, router, Paths::Collapse, limits, None, shutdown).await
}

/// [`run`], with HTTPS when `tls` is given: the handshake must finish within the header timeout,
/// and requests carry [`crate::http::Https`] (download links then use `https`).
pub async fn run_with_tls(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    paths: Paths,
    limits: ConnectionLimits,
    tls: Option<Arc<crate::tls::ReloadableTls>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let slots = Arc::new(tokio::sync::Semaphore::new(
        limits.max_connections.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    serve_listener(listener, router, paths, limits, tls, shutdown, slots).await
}

/// [`run_with_tls`] with the connection cap's places in `slots`, shared by every listener of one
/// server.
async fn serve_listener(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    paths: Paths,
    limits: ConnectionLimits,
    tls: Option<Arc<crate::tls::ReloadableTls>>,
    shutdown: impl std::future::Future<Output = ()>,
    slots: Arc<tokio::sync::Semaphore>,
) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    let local = listener.local_addr().map_err(ServeError::Serve)?;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut gate = crate::conn::Gate::sharing(limits.max_connections, slots);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    gate.accept_failed(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some((stream, slot)) = gate.admit(stream, tls.is_none()) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body_timeout = limits.body_idle_timeout;
        let (tls, https) = (tls.clone(), tls.is_some());
        let proxies = limits.trusted_proxies.clone();
        let service = router
            .clone()
            .map_request(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = crate::http::prepare_request(
                    request.map(axum::body::Body::new),
                    peer,
                    local,
                    body_timeout,
                    &proxies,
                    paths == Paths::Collapse,
                );
                if https {
                    request.extensions_mut().insert(crate::http::Https);
                }
                request
            });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte = limits.header_read_timeout;
        let (idle, stall) = (limits.idle_timeout, limits.body_idle_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            // A connection that never sends a byte: hyper's header timeout only starts once the
            // first request begins, so bound the wait for it here.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(first_byte, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            let activity = crate::conn::Activity::new();
            let stream = crate::conn::Io::new(stream, activity.clone());
            let stream: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(tls) => match tokio::time::timeout(first_byte, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            let service = TowerToHyperService::new(crate::conn::track_requests(service, activity.clone()));
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let served = crate::conn::watch(watcher.watch(connection.into_owned()), activity, idle, stall);
            if let Some(Err(e)) = served.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all requests finished"),
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(grace = ?limits.shutdown_grace, "requests still in flight after the grace period; stopping")
        }
    }
    Ok(())
}

/// A connection's byte stream: plain TCP or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

fn display_dir(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_owned())
        .display()
        .to_string()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}

/// How often freed heap memory is handed back to the operating system.
const MEMORY_RELEASE_INTERVAL: Duration = Duration::from_secs(5);

/// What SQLite may keep in its page caches, all connections of the process together (metadata
/// and small-body store), before it reuses cached pages instead of allocating more. The operating
/// system's page cache keeps the hot pages of the files once for all connections; a write
/// transaction may exceed it (dirty pages are never dropped). Without it, the caches of a busy
/// server's connections stayed allocated after the load had gone (about 10 MiB of a server's
/// 50 MiB idle after 100,000 uploads and listings).
const SQLITE_SOFT_HEAP_LIMIT: i64 = 4 * 1024 * 1024;

/// Hands freed heap memory back to the operating system every `interval`: the stores first close
/// idle connections and drop their caches, the metrics recorder folds the request durations it
/// gathered into its summaries ([`fold_metrics`]), then glibc's malloc returns the free pages.
/// malloc keeps what a burst of concurrent requests freed in its arenas: without this, a server
/// idle after a load of 16 connections stayed at 45-110 MiB instead of going back towards its
/// start-up size. (mimalloc was tried instead and kept more, with one heap per thread.)
fn spawn_memory_release(
    service: Arc<Service>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    // SAFETY: sqlite3_soft_heap_limit64 only sets a process-wide advisory limit; it may be called
    // at any time, from any thread.
    unsafe {
        rusqlite::ffi::sqlite3_soft_heap_limit64(SQLITE_SOFT_HEAP_LIMIT);
    }
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            ticker.tick().await;
            service.shed_idle_memory().await;
            fold_metrics(metrics.as_ref());
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
    })
}

/// Folds the histogram samples the recorder gathered since the last time (one per request) into
/// its summaries. The recorder keeps every sample until then: a server that nobody scraped grew
/// by the durations of all its requests (about 20 MiB of heap after a million uploads, without
/// end), since only a scrape of `/metrics` drained them.
fn fold_metrics(metrics: Option<&metrics_exporter_prometheus::PrometheusHandle>) {
    if let Some(metrics) = metrics {
        metrics.run_upkeep();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() {
    // SAFETY: malloc_trim has no preconditions; it only returns unused pages of glibc's heap to
    // the kernel, taking the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes glibc's malloc has handed out and not yet had back, in the whole process.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn heap_in_use() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        unsafe { libc::mallinfo2() }.uordblks
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn folding_metrics_frees_the_gathered_samples() {
        const SAMPLES: usize = 4_000_000; // 8 bytes each: about 32 MB
        const NOTICEABLE: usize = 16 * 1024 * 1024;
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let before = heap_in_use();
        metrics::with_local_recorder(&recorder, || {
            let histogram = metrics::histogram!("stowage_test_duration_seconds");
            for i in 0..SAMPLES {
                histogram.record(i as f64 * 1e-6);
            }
        });
        let gathered = heap_in_use();
        assert!(
            gathered.saturating_sub(before) > NOTICEABLE,
            "recording {SAMPLES} samples should hold them until they are folded ({before} -> {gathered} bytes)"
        );
        fold_metrics(Some(&handle));
        // The recorder frees drained samples through epoch-based reclamation: once later
        // requests have moved the epoch on, as they do on a running server.
        metrics::with_local_recorder(&recorder, || {
            let histogram = metrics::histogram!("stowage_test_duration_seconds");
            for _ in 0..10_000 {
                histogram.record(0.5);
            }
        });
        fold_metrics(Some(&handle));
        let folded = heap_in_use();
        assert!(
            gathered.saturating_sub(folded) > NOTICEABLE,
            "folding should free the samples ({gathered} -> {folded} bytes)"
        );
        assert!(
            handle.render().contains("stowage_test_duration_seconds_count 4010000"),
            "the summary counts every sample"
        );
    }
}
