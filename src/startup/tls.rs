//! TLS on the gRPC port, from AUTHD_TLS_CERT, AUTHD_TLS_KEY and AUTHD_TLS_CLIENT_CA, with
//! the files read again when they change: cert-manager and SPIFFE agents rewrite them
//! before the old certificate expires, and a restart for each renewal would drop every
//! connection. Every new connection checks the files' stamps (three `stat`s, nothing next
//! to a handshake); established connections keep the certificate they began with. A
//! rewrite that does not load (a file half-written, a key that does not match) leaves the
//! previous certificate in use, and is tried again at the next connection.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use rustls::{
    RootCertStore, ServerConfig,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::{Stream, StreamExt as _};

use crate::config::TlsConfig;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; beyond, new connections wait in the kernel's backlog,
/// so a flood of silent clients holds this many sockets, not one per connection made.
const HANDSHAKES_AT_ONCE: usize = 1024;

/// The certificate files, and the configuration last loaded from them.
#[derive(Debug)]
pub(super) struct ReloadingTls {
    files: Files,
    current: Mutex<Loaded>,
}

#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

#[derive(Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    stamps: Vec<Option<Stamp>>,
    /// The stamps of the last rewrite that failed to load, so it is reported once.
    refused: Option<Vec<Option<Stamp>>>,
}

/// What tells a rewritten file: its inode (a rename or symlink swap), its change time (any
/// rewrite, even one that keeps the modification time, and a change of permissions that
/// may make a refused file readable), its modification time and its length.
type Stamp = (u64, i64, i64, SystemTime, u64);

impl ReloadingTls {
    /// Loads the files `config` names; `None` when no certificate is set (plaintext).
    pub(super) fn from_config(config: &TlsConfig) -> anyhow::Result<Option<Self>> {
        let (Some(cert), Some(key)) = (&config.cert, &config.key) else {
            return Ok(None);
        };
        let files = Files {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: config.client_ca.clone(),
        };
        let stamps = files.stamps();
        let config = files.load()?;
        Ok(Some(Self {
            files,
            current: Mutex::new(Loaded {
                config,
                stamps,
                refused: None,
            }),
        }))
    }

    /// The configuration for a new connection: reloaded first if a file changed.
    fn config(&self) -> Arc<ServerConfig> {
        let stamps = self.files.stamps();
        let mut loaded = crate::sync::lock(&self.current);
        if stamps != loaded.stamps && loaded.refused.as_ref() != Some(&stamps) {
            match self.files.load() {
                Ok(config) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate files reloaded");
                    loaded.config = config;
                    loaded.stamps = stamps;
                    loaded.refused = None;
                }
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "TLS certificate files changed but do not load; keeping the previous ones");
                    loaded.refused = Some(stamps);
                }
            }
        }
        Arc::clone(&loaded.config)
    }

    /// TLS connections over `tcp`: each handshake runs on its own task, so a slow or
    /// silent client holds up nobody else; a failed one is dropped.
    pub(super) fn accept(
        self: Arc<Self>,
        mut tcp: impl Stream<Item = std::io::Result<TcpStream>> + Send + Unpin + 'static,
    ) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
        tokio::spawn(async move {
            loop {
                // Ends with the server: the listener closes when it stops taking these.
                let accepted = tokio::select! {
                    accepted = tcp.next() => accepted,
                    () = tx.closed() => return,
                };
                let Some(accepted) = accepted else { return };
                let Ok(stream) = accepted else { continue };
                let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                    return;
                };
                let acceptor = TlsAcceptor::from(self.config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                            drop(permit);
                        }
                        Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

impl Files {
    fn stamps(&self) -> Vec<Option<Stamp>> {
        let stamp = |path: &Path| {
            // Follows symlinks: Kubernetes swaps a `..data` link over the files.
            let meta = std::fs::metadata(path).ok()?;
            Some((
                meta.ino(),
                meta.ctime(),
                meta.ctime_nsec(),
                meta.modified().ok()?,
                meta.len(),
            ))
        };
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|path| stamp(path))
            .collect()
    }

    /// The rustls configuration, each failure named by its setting.
    fn load(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let read = |path: &Path, variable: &str| {
            std::fs::read(path)
                .with_context(|| format!("{variable}: cannot read {}", path.display()))
        };
        let chain = certificates(
            &read(&self.cert, "AUTHD_TLS_CERT")?,
            &self.cert,
            "AUTHD_TLS_CERT",
        )?;
        let key =
            PrivateKeyDer::from_pem_slice(&read(&self.key, "AUTHD_TLS_KEY")?).map_err(|_| {
                anyhow::anyhow!(
                    "AUTHD_TLS_KEY: {} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
                    self.key.display()
                )
            })?;
        // ring, as tonic's own TLS (the client side) uses.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates(
                    &read(path, "AUTHD_TLS_CLIENT_CA")?,
                    path,
                    "AUTHD_TLS_CLIENT_CA",
                )? {
                    roots
                        .add(ca)
                        .with_context(|| format!("AUTHD_TLS_CLIENT_CA: {}", path.display()))?;
                }
                // Verified when presented, not demanded of every connection: end users
                // log in without one; ValidateToken may demand one.
                let verifier: Arc<dyn ClientCertVerifier> =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()
                        .with_context(|| format!("AUTHD_TLS_CLIENT_CA: {}", path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).with_context(|| {
            format!(
                "AUTHD_TLS_CERT and AUTHD_TLS_KEY: {} and {} do not make a usable pair",
                self.cert.display(),
                self.key.display()
            )
        })?;
        // gRPC over HTTP/2; gRPC-Web and the JWKS over HTTP/1.1 too.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The certificates in `pem`; an error naming `variable` when there are none.
fn certificates(
    pem: &[u8],
    path: &Path,
    variable: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    // Any block that does not read fails the whole file: a chain cut off half-way must
    // not load as a shorter one.
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| anyhow::anyhow!("{variable}: {}: {err}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{variable}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        path.display()
    );
    Ok(certs)
}
