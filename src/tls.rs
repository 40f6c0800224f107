//! HTTPS on the listener: the `tls_cert` and `tls_key` PEM files loaded into a rustls server
//! configuration (ring provider, TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`), reloaded on SIGHUP.
//!
//! A reload builds a complete new configuration first and swaps it in only when it loaded: new
//! handshakes use it, connections already open keep theirs, and a bad file (a renewal caught
//! halfway) leaves the server on its previous certificate with a warning in the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {detail}")]
    Certificate { path: String, detail: String },
    #[error("cannot read the TLS private key {path}: {detail}")]
    Key { path: String, detail: String },
    #[error("the TLS certificate {cert} and key {key} do not work together: {detail}")]
    Config { cert: String, key: String, detail: String },
}

/// The listener's TLS configuration, swapped whole on reload.
pub struct ReloadableTls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadableTls {
    /// Loads the certificate chain and the private key (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadableTls>, TlsError> {
        let config = server_config(cert, key)?;
        Ok(Arc::new(ReloadableTls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// Reads the files again; on success new handshakes use them.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.cert, &self.key)?);
        if let Ok(mut current) = self.current.write() {
            *current = config;
        }
        Ok(())
    }

    /// An acceptor with the configuration of the moment.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }

    /// Reloads on every SIGHUP until the process ends.
    #[cfg(unix)]
    pub fn reload_on_sighup(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP: certificates are read only at start");
                return None;
            }
        };
        let tls = self.clone();
        Some(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!(cert = %tls.cert.display(), "SIGHUP: reloaded the TLS certificate"),
                    Err(e) => tracing::warn!(error = %e, "SIGHUP: kept the previous TLS certificate"),
                }
            }
        }))
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let cert_error = |detail: String| TlsError::Certificate {
        path: cert.display().to_string(),
        detail,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("it holds no PEM certificate".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        detail: e.to_string(),
    })?;
    let config_error = |detail: String| TlsError::Config {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        detail,
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| config_error(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_files_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let missing = ReloadableTls::load(&cert, &key).map(|_| ()).unwrap_err().to_string();
        assert!(
            missing.contains("cannot read the TLS certificate") && missing.contains("cert.pem"),
            "{missing}"
        );
        std::fs::write(&cert, "not a certificate").unwrap_or_else(|e| panic!("{e}"));
        let empty = ReloadableTls::load(&cert, &key).map(|_| ()).unwrap_err().to_string();
        assert!(empty.contains("holds no PEM certificate"), "{empty}");
    }
}
