//! The listener: accepts TCP connections, does the TLS handshake, and serves each connection
//! with hyper's automatic HTTP/1.1 or HTTP/2 (whatever ALPN negotiated). Every connection and
//! every HTTP/2 stream task is spawned on the emulator's task tracker and ends on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, warn};

use super::core::Core;
use super::http;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Spawns hyper's background futures on the tracker, so shutdown can wait for them.
#[derive(Clone)]
struct TrackedExecutor(TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// Accepts connections until shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    core: Arc<Core>,
    address: Arc<str>,
) {
    loop {
        let accepted = tokio::select! {
            _ = core.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let span = tracing::debug_span!("kube_emulator_connection", %peer);
                let conn = connection(tcp, acceptor.clone(), core.clone(), address.clone());
                core.tasks.spawn(conn.instrument(span));
            }
            Err(error) => {
                warn!(%error, "kube emulator accept failed");
                tokio::task::yield_now().await;
            }
        }
    }
    debug!("kube emulator listener stopped");
}

async fn connection(tcp: TcpStream, acceptor: TlsAcceptor, core: Arc<Core>, address: Arc<str>) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        _ = core.cancel.cancelled() => return,
        tls = handshake => match tls {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => return debug!(%error, "TLS handshake failed"),
            Err(_) => return debug!("TLS handshake timed out"),
        },
    };
    let service_core = core.clone();
    let service = service_fn(move |req| http::handle(service_core.clone(), address.clone(), req));
    let builder = auto::Builder::new(TrackedExecutor(core.tasks.clone()));
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::select! {
        _ = core.cancel.cancelled() => {}
        result = conn => if let Err(error) = result {
            debug!(%error, "connection ended with an error");
        },
    }
}
