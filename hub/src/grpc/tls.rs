//! The hub's TLS listener: one port for agents and admins, TLS 1.3 by default, client
//! certificates verified against every CA the hub trusts right now.
//!
//! tonic's built-in TLS fixes its configuration at start; a CA rotation must change the
//! trusted CAs and the serving certificate without dropping a connection. So the handshake
//! happens here, with a rustls configuration rebuilt whenever the PKI's generation moves:
//! new connections get the new configuration, established ones keep theirs. tonic reads the
//! peer certificates from the resulting `tokio_rustls` stream as usual (`peer_certs()`).
//!
//! Handshakes run concurrently (one small task each, bounded by a timeout), so a slow or
//! hostile client cannot hold up the accept loop. A failed handshake is an audit log line
//! and a refusal metric: that is how a certificate from another CA shows up.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::metrics::{Metrics, Refusal};
use crate::pki::Pki;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS configuration could not be built from the PKI.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the hub's TLS material is unusable: {0}; check <data-dir>/pki")]
    Material(String),
}

/// Builds acceptors from the PKI, rebuilding when it changes.
pub struct Tls {
    pki: Arc<Pki>,
    allow_tls12: bool,
    generation: Mutex<watch::Receiver<u64>>,
    acceptor: Mutex<TlsAcceptor>,
}

impl Tls {
    pub fn new(pki: Arc<Pki>, allow_tls12: bool) -> Result<Self, TlsError> {
        let generation = pki.subscribe();
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&pki, allow_tls12)?));
        Ok(Self {
            pki,
            allow_tls12,
            generation: Mutex::new(generation),
            acceptor: Mutex::new(acceptor),
        })
    }

    /// The acceptor for the next connection: rebuilt first if the PKI changed.
    fn acceptor(&self) -> TlsAcceptor {
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let mut acceptor = self.acceptor.lock().unwrap_or_else(|e| e.into_inner());
        if generation.has_changed().unwrap_or(false) {
            generation.mark_unchanged();
            match server_config(&self.pki, self.allow_tls12) {
                Ok(config) => *acceptor = TlsAcceptor::from(Arc::new(config)),
                // Keep serving with what worked; the admin call that changed the PKI said so.
                Err(e) => warn!(error = %e, "cannot rebuild the TLS configuration"),
            }
        }
        acceptor.clone()
    }
}

fn server_config(pki: &Pki, allow_tls12: bool) -> Result<ServerConfig, TlsError> {
    let bad = |e: &dyn std::fmt::Display| TlsError::Material(e.to_string());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    // Registration comes before the agent has a certificate; every other call checks one.
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| bad(&e))?;
    let (cert_pem, key_pem) = pki.server_identity();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let versions: &[&rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ServerConfig::builder_with_protocol_versions(versions)
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accept connections on `listener` until `shutdown`, handshake each in its own task, and
/// hand the established TLS streams to the gRPC server through the returned channel.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> mpsc::Receiver<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(128);
    let accept_tasks = tasks.clone();
    tasks.spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, mostly: pause instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let (tx, metrics) = (tx.clone(), metrics.clone());
            accept_tasks.spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) if is_plain_disconnect(&e) => {
                        debug!(remote = %remote, error = %e, "connection closed before TLS completed");
                    }
                    Ok(Err(e)) => {
                        metrics.refused(Refusal::TlsHandshake);
                        warn!(remote = %remote, error = %e, reason = Refusal::TlsHandshake.as_str(), "TLS handshake refused");
                    }
                    Err(_) => debug!(remote = %remote, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

fn is_plain_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}
