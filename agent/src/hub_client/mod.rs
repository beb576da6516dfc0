//! The agent's side of the hub connection: the only code that sees the wire types.
//!
//! One long-lived `Connect` stream at a time, over mTLS, with the identity current when it
//! opens. Each session says `Hello` (agent and Kubernetes versions, the deployments held: per
//! the inventories and the reconciler's current targets), then answers `Ping`s, fetches the
//! manifests of new deployments, hands them to the reconciler, `Ack`s them, after the hub's
//! `SyncComplete` has the held contents no worker has watched again, sends status
//! changes in coalesced batches, and renews the client certificate on the stream before it
//! expires. When a session ends the client reconnects forever with exponential backoff and
//! full jitter. A certificate that expired meanwhile is replaced by registering again with the
//! stored key (`recovery`); a refused one waits the maximum backoff each time.
//!
//! - `convert`: wire ↔ domain types;
//! - `credentials`: the current identity and trust, saved before they are used;
//! - `session`: one stream; `dispatch`: deployments → manifests → reconciler;
//! - `resume`: held contents (after a restart) → manifests → reconciler, to watch, not apply;
//! - `renewal`: renewing on the stream; `recovery`: registering again after expiry;
//! - `manifests`: the shared manifest cache and `FetchManifests`;
//! - `register`: TLS endpoints and registration.

mod convert;
mod credentials;
mod dispatch;
mod manifests;
mod recovery;
mod register;
mod renewal;
mod resume;
mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{debug, error, info, warn};

pub(crate) use credentials::Credentials;
pub(crate) use manifests::ManifestCache;
pub(crate) use recovery::Recovery;
pub(crate) use register::Registration;

use crate::backoff::Backoff;
use crate::cluster::{ApiError, Cluster};
use crate::config::BackoffConfig;
use crate::reconcile::Reconciler;
use crate::status::StatusBoard;

/// Status reports go out at most this often.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A stream that stayed up this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Outgoing messages buffered per stream.
const OUTBOX: usize = 64;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The hub says the cluster was deleted: only a person can help.
    #[error("{0}")]
    Deleted(String),
    /// The hub refused this agent's certificate (expired, superseded, unknown CA).
    #[error("{0}")]
    Refused(String),
    /// The agent could not verify the hub's certificate: retrying soon cannot help either.
    #[error("{0}")]
    Untrusted(String),
    #[error("{0}")]
    Hub(String),
    #[error("could not read the inventory from the Kubernetes API (needed for Hello): {0}")]
    Cluster(ApiError),
}

impl SessionError {
    fn from_status(s: tonic::Status) -> Self {
        let text = format!("{}: {}", s.code(), s.message());
        match s.code() {
            Code::PermissionDenied if s.message().contains("deleted") => Self::Deleted(text),
            Code::Unauthenticated | Code::PermissionDenied => Self::Refused(text),
            _ => Self::classify(text),
        }
    }

    fn from_transport(e: &tonic::transport::Error) -> Self {
        Self::classify(register::describe_transport(e))
    }

    /// Tells certificate problems from others by rustls' wording. With TLS 1.3 a hub that
    /// rejects the client certificate says so in an alert after the handshake, so this also
    /// looks at errors of the first call, not only of the connect.
    fn classify(text: String) -> Self {
        let t = text.to_ascii_lowercase();
        if t.contains("invalid peer certificate") {
            Self::Untrusted(text)
        } else if t.contains("alert") && t.contains("certificate") {
            Self::Refused(text)
        } else {
            Self::Hub(text)
        }
    }
}

/// Everything a session needs; lives for the whole agent.
pub(crate) struct HubClient {
    pub credentials: Arc<Credentials>,
    pub recovery: Recovery,
    pub cluster: Cluster,
    pub reconciler: Reconciler,
    pub board: Arc<StatusBoard>,
    pub cache: Arc<ManifestCache>,
    pub backoff: BackoffConfig,
    /// Notified each time the hub accepts a stream (the identity works).
    pub connected: Arc<Notify>,
}

impl HubClient {
    /// Keeps a session with the hub open until `shutdown`.
    pub async fn run(&self, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new(self.backoff);
        loop {
            if self.credentials.expired() && !self.recover(shutdown).await {
                return;
            }
            let mut up_since = None;
            let ended = tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = self.session(&mut up_since) => ended,
            };
            if up_since.is_some_and(|t: Instant| t.elapsed() >= STABLE_AFTER) {
                backoff.reset();
            }
            let delay = match ended {
                Ok(()) => {
                    info!("the hub closed the stream");
                    backoff.next_delay()
                }
                Err(SessionError::Refused(_)) if self.credentials.expired() => {
                    info!("the hub refused the expired client certificate; registering again");
                    Duration::ZERO
                }
                Err(e) => self.explain(e, &mut backoff),
            };
            debug!(?delay, "reconnecting after a pause");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Logs why a session ended, with what to do about it; returns the pause before the next.
    fn explain(&self, ended: SessionError, backoff: &mut Backoff) -> Duration {
        let identity = self.credentials.location();
        match ended {
            SessionError::Deleted(why) => {
                error!(
                    hub_said = %why,
                    %identity,
                    "the hub says this cluster was deleted there: to manage it again, delete the stored identity \
                     and re-install the agent with a new registration token (`flotilla agent manifest --token ...` \
                     | kubectl apply -f -), then restart the agent"
                );
                backoff.max()
            }
            SessionError::Refused(why) => {
                error!(
                    hub_said = %why,
                    %identity,
                    "the hub refused this agent's certificate: if the hub says it was superseded, another agent \
                     may hold this cluster's identity; if this persists, delete the stored identity and register \
                     again with a new token from `flotilla token create`"
                );
                backoff.max()
            }
            SessionError::Untrusted(why) => {
                error!(
                    error = %why,
                    "could not verify the hub's certificate: check --ca (or the bootstrap Secret's caBundle: the \
                     hub's CA certificate) and that the host in the hub URL is a name in the hub's certificate"
                );
                backoff.max()
            }
            e => {
                warn!(error = %e, "the hub session ended; reconnecting");
                backoff.next_delay()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_problems_are_told_apart() {
        let kind = |t: &str| match SessionError::classify(t.into()) {
            SessionError::Refused(_) => "refused",
            SessionError::Untrusted(_) => "untrusted",
            _ => "other",
        };
        assert_eq!(
            kind("transport error: invalid peer certificate: UnknownIssuer"),
            "untrusted"
        );
        assert_eq!(
            kind("h2 protocol error: received fatal alert: BadCertificate"),
            "refused"
        );
        assert_eq!(kind("received fatal alert: CertificateRequired"), "refused");
        assert_eq!(
            kind("transport error: tcp connect error: Connection refused (os error 111)"),
            "other"
        );
        let status = tonic::Status::permission_denied("this cluster was deleted on the hub");
        assert!(matches!(
            SessionError::from_status(status),
            SessionError::Deleted(_)
        ));
        let status = tonic::Status::permission_denied("superseded");
        assert!(matches!(
            SessionError::from_status(status),
            SessionError::Refused(_)
        ));
        assert!(matches!(
            SessionError::from_status(tonic::Status::unavailable("x")),
            SessionError::Hub(_)
        ));
    }
}
