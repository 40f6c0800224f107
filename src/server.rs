//! Opening a data directory and running `stowage serve`: the first start creates the server key,
//! a first organization and an admin member and prints their credentials once; later starts reuse
//! everything. Also the graceful shutdown on SIGTERM / Ctrl-C.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::blob::local::LocalBlobs;
use crate::config::Config;
use crate::crypto::{ServerKey, generate_token, write_private_file};
use crate::http::{AppState, app};
use crate::ids::{OrgId, UserId};
use crate::meta::sqlite::SqliteMeta;
use crate::meta::{MetaError, MetaStore, Permissions};
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

/// The metadata store and the server key of a data directory, created when missing.
pub struct Opened {
    pub meta: Arc<SqliteMeta>,
    pub key: ServerKey,
}

/// Opens the metadata side of a data directory (shared by `serve` and `admin`).
pub fn open_data_dir(config: &Config) -> Result<Opened, ServeError> {
    let dir = config.data_dir();
    std::fs::create_dir_all(dir).map_err(|source| ServeError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let key = ServerKey::load_or_create(&config.key_path())?;
    let meta = Arc::new(SqliteMeta::open(&config.db_path())?);
    Ok(Opened { meta, key })
}

/// What the first start prints and writes to `initial-credentials.json`.
#[derive(Debug, Serialize)]
pub struct InitialCredentials {
    #[serde(rename = "userId")]
    pub user_id: i64,
    #[serde(rename = "apiToken")]
    pub api_token: String,
    #[serde(rename = "organizationId")]
    pub organization_id: String,
}

/// On a store without users, creates the first organization and an admin member with read,
/// write and delete, and writes their credentials (mode 0600). Returns them when created.
pub async fn bootstrap(config: &Config, opened: &Opened) -> Result<Option<InitialCredentials>, ServeError> {
    if !opened.meta.list_users().await?.is_empty() {
        return Ok(None);
    }
    let now = now_ms();
    let org: OrgId = opened.meta.create_org("default", None, None, now).await?;
    let token = generate_token();
    let sealing_key = opened.key.clone();
    let sealed_token = token.clone();
    let user: UserId = opened
        .meta
        .create_user(
            "admin",
            now,
            Box::new(move |id| sealing_key.seal(id, &sealed_token).ok()),
        )
        .await?
        .ok_or_else(|| MetaError::Database("the first user could not be created".into()))?;
    opened.meta.set_member(&org, user, Permissions::ALL).await?;
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

fn print_credentials(credentials: &InitialCredentials, config: &Config) {
    let base = format!("http://{}/api/v2", config.listen);
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

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let opened = open_data_dir(&config)?;
    if let Some(credentials) = bootstrap(&config, &opened).await? {
        print_credentials(&credentials, &config);
    }
    let blobs = Arc::new(LocalBlobs::open(&config.blob_dir())?);
    let service = Arc::new(Service::new(
        opened.meta.clone(),
        blobs,
        Limits::from_config(&config),
        opened.key.clone(),
    ));
    let collector = service.spawn_collector(Duration::from_secs(config.gc_interval_secs.max(1)));
    let state = AppState {
        service,
        public_url: config.public_url.clone(),
    };

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen.to_string(),
        source,
    })?;
    println!(
        "stowage listening on http://{local}/api/v2 (data in {})",
        display_dir(config.data_dir())
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%local, "listening");

    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    let make_service = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
        std::net::SocketAddr,
    >(app(state));
    let result = axum::serve(listener, make_service)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    collector.abort();
    result.map_err(ServeError::Serve)
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
    tracing::info!("shutting down: no new connections, finishing requests in flight");
}
