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
use crate::config::Config;
use crate::crypto::{ServerKey, generate_token, write_private_file};
use crate::http::{AppState, app};

use crate::meta::postgres::PostgresMeta;
use crate::meta::sqlite::SqliteMeta;
use crate::meta::{MetaError, MetaStore};
use crate::service::{Limits, Service, now_ms};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("the server stopped with an error: {0}")]
    Serve(std::io::Error),
    #[error("cannot write {path}: {source}")]
    Credentials { path: String, source: std::io::Error },
}

/// The metadata store and the server key a configuration names, created when missing.
pub struct Opened {
    pub meta: Arc<dyn MetaStore>,
    pub key: ServerKey,
}

/// Opens the metadata side of a configuration (shared by `serve`, `admin` and `fsck`): SQLite in
/// the data directory or PostgreSQL, and the server key from the configuration or the data
/// directory.
pub async fn open_data_dir(config: &Config) -> Result<Opened, ServeError> {
    let dir = config.data_dir();
    std::fs::create_dir_all(dir).map_err(|source| ServeError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let key = match &config.server_key {
        Some(hex) => ServerKey::from_hex(hex.trim())
            .ok_or_else(|| crate::crypto::CryptoError::MalformedKey("the server_key setting".into()))?,
        None => ServerKey::load_or_create(&config.key_path())?,
    };
    let meta: Arc<dyn MetaStore> = if config.metadata == "sqlite" {
        Arc::new(SqliteMeta::open(&config.db_path())?)
    } else {
        Arc::new(PostgresMeta::connect(&config.metadata).await?)
    };
    Ok(Opened { meta, key })
}

/// Opens the body store a configuration names. With `fresh_start`, a local store clears its
/// unfinished uploads (only the server may do that; `fsck` attaches without touching anything).
pub async fn open_blobs(config: &Config, fresh_start: bool) -> Result<Arc<dyn BlobStore>, ServeError> {
    if config.blob_store == "s3" {
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
    let base = format!("http://{local}/api/v2");
    println!(
        "\nstowage: created the first organization and an admin user (shown once; also in {}):\n\
         \n  userId:         {}\n  apiToken:       {}\n  organizationId: {}\n\
         \nTry it:\n\
         \n  TS=$(date +%s); HASH=$(printf '%s' \"{}:$TS\" | sha256sum | cut -d' ' -f1)\
         \n  curl -s -u \"{}:$HASH\" -H \"Timestamp: $TS\" -H 'Content-Type: application/json' \\\
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
    pub trusted_proxies: crate::http::TrustedProxies,
}

impl ConnectionLimits {
    pub(crate) fn from_config(config: &Config) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs.max(1)),
            body_idle_timeout: Duration::from_secs(config.body_idle_timeout_secs.max(1)),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
            trusted_proxies: crate::http::TrustedProxies::parse(&config.trusted_proxies).unwrap_or_default(),
        }
    }
}

/// Largest request head (request line and headers) accepted, in bytes.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let opened = open_data_dir(&config).await?;
    let credentials = bootstrap(&config, &opened).await?;
    let blobs = open_blobs(&config, true).await?;
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
    let memory_release = spawn_memory_release(MEMORY_RELEASE_INTERVAL);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| tracing::warn!(error = %e, "metrics are off"))
        .ok();
    let state = AppState {
        metrics,
        service,
        public_url: config.public_url.clone(),
    };

    let listen_error = |source| ServeError::Listen {
        addr: config.listen.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(listen_error)?;
    let local = listener.local_addr().map_err(listen_error)?;
    if let Some(credentials) = credentials {
        print_credentials(&credentials, &config, local);
    }
    println!(
        "stowage listening on http://{local}/api/v2 (data in {})",
        display_dir(config.data_dir())
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%local, "listening");

    let result = run(
        listener,
        app(state),
        ConnectionLimits::from_config(&config),
        shutdown_signal(),
    )
    .await;
    collector.abort();
    memory_release.abort();
    result
}

/// Accepts connections on `listener` and serves `router` on them until `shutdown` completes,
/// then stops accepting and gives requests in flight `limits.shutdown_grace` to finish.
///
/// Per connection: TCP_NODELAY; HTTP/1 request heads must arrive within the header timeout and
/// fit in 64 KiB; request bodies fail after a pause longer than the body idle timeout. Each
/// request carries the client's address (`ConnectInfo`) and the address it reached
/// (`LocalAddr`), and has runs of `/` in its path collapsed.
pub async fn run(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
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
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let body_timeout = limits.body_idle_timeout;
        let proxies = limits.trusted_proxies.clone();
        let service = router
            .clone()
            .map_request(move |request: hyper::Request<hyper::body::Incoming>| {
                crate::http::prepare_request(request.map(axum::body::Body::new), peer, local, body_timeout, &proxies)
            });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte = limits.header_read_timeout;
        tokio::spawn(async move {
            // A connection that never sends a byte: hyper's header timeout only starts once the
            // first request begins, so bound the wait for it here.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(first_byte, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            let connection =
                builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(connection.into_owned()).await {
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
const MEMORY_RELEASE_INTERVAL: Duration = Duration::from_secs(10);

/// Hands freed heap memory back to the operating system every `interval`. glibc's malloc keeps
/// what a burst of concurrent requests freed in its arenas: without this, a server idle after a
/// load of 16 connections stayed at 45-110 MiB instead of going back towards its start-up size.
/// (mimalloc was tried instead and kept more, with one heap per thread.)
fn spawn_memory_release(interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            ticker.tick().await;
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
    })
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
