//! The hub's gRPC surface: agent services and the admin API on one mTLS port.
//!
//! Boundary: the only module that sees protobuf types (`convert` translates). Callers are
//! identified by their verified client certificate alone (`pki::peer_cert`): a cluster's
//! certificate reaches its own deployments, an admin certificate reaches the admin API.

mod admin;
mod agent;
mod convert;
mod declarative;
mod preview;
mod register;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic::{Request, Status};
use tracing::{error, warn};

use flotilla_proto::admin::v1::admin_server::AdminServer;
use flotilla_proto::agent::v1::agent_service_server::AgentServiceServer;
use flotilla_proto::agent::v1::registration_server::RegistrationServer;

use crate::fleet::Fleet;
use crate::metrics::{Metrics, Refusal};
use crate::model::ClusterId;
use crate::pki::{PeerCert, PeerIdentity, Pki, peer_cert};
use crate::source::Sources;

/// What the services share.
pub struct Context {
    pub fleet: Arc<Fleet>,
    pub pki: Arc<Pki>,
    pub sources: Arc<Sources>,
    pub metrics: Arc<Metrics>,
    pub client_cert_ttl: Duration,
    pub default_poll_interval: Duration,
    /// Where the admin credential lives and the URL it names, rewritten after a CA change.
    pub admin_credential: PathBuf,
    pub admin_server_url: String,
    /// The URL agents dial (`HubConfig::agent_url_for` the bound listener).
    pub agent_url: String,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

/// Serve every gRPC service on `listener` until `shutdown`.
pub async fn serve(
    ctx: Arc<Context>,
    listener: TcpListener,
    tls: Arc<tls::Tls>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = tls::incoming(
        listener,
        tls,
        ctx.metrics.clone(),
        ctx.tasks.clone(),
        shutdown.clone(),
    );
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(RegistrationServer::new(register::RegistrationService(
            ctx.clone(),
        )))
        .add_service(AgentServiceServer::new(agent::AgentService(ctx.clone())))
        .add_service(AdminServer::new(admin::AdminService(ctx.clone())))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(incoming),
            shutdown.cancelled(),
        )
        .await
}

fn peer<T>(req: &Request<T>) -> Option<PeerCert> {
    let certs = req.peer_certs()?;
    peer_cert(certs.first()?.as_ref())
}

/// The registered cluster behind this call's client certificate, and that certificate.
fn authorize_cluster<T>(ctx: &Context, req: &Request<T>) -> Result<(ClusterId, PeerCert), Status> {
    let refuse = |reason: Refusal, id: Option<ClusterId>, status: Status| {
        ctx.metrics.refused(reason);
        match id {
            Some(id) => warn!(cluster = %id, reason = reason.as_str(), "agent call refused"),
            None => {
                warn!(remote = ?req.remote_addr(), reason = reason.as_str(), "agent call refused")
            }
        }
        Err(status)
    };
    let Some(cert) = peer(req) else {
        return refuse(
            Refusal::NotACluster,
            None,
            Status::unauthenticated(
                "a cluster client certificate is required; register first with a token",
            ),
        );
    };
    let PeerIdentity::Cluster(id) = cert.identity else {
        return refuse(
            Refusal::NotACluster,
            None,
            Status::unauthenticated(
                "this certificate does not name a cluster; agents use the certificate they got at registration",
            ),
        );
    };
    match ctx.fleet.cluster(id) {
        None => refuse(
            Refusal::ClusterDeleted,
            Some(id),
            Status::permission_denied(DELETED),
        ),
        Some(c) if !c.certificate.accepts(&cert.key_sha256) => refuse(
            Refusal::CertificateSuperseded,
            Some(id),
            Status::permission_denied(
                "this certificate was superseded by newer ones issued to the same cluster; if no other agent holds this cluster's identity, delete the cluster and register again",
            ),
        ),
        Some(_) => Ok((id, cert)),
    }
}

/// What a deleted cluster's agent is told.
const DELETED: &str = "this cluster was deleted on the hub, and its certificate is no longer accepted; to manage it again, re-install the agent with a new registration token (`flotilla agent manifest`)";

/// The admin behind this call's client certificate.
fn authorize_admin<T>(ctx: &Context, req: &Request<T>) -> Result<String, Status> {
    match peer(req).map(|c| c.identity) {
        Some(PeerIdentity::Admin(name)) => Ok(name),
        _ => {
            ctx.metrics.refused(Refusal::AdminRequired);
            warn!(remote = ?req.remote_addr(), reason = Refusal::AdminRequired.as_str(), "admin call refused");
            Err(Status::unauthenticated(
                "the admin API needs the admin credential the hub wrote at first start (<data-dir>/admin.yaml); pass it with --config",
            ))
        }
    }
}

/// Map an unexpected failure to a Status without leaking internals.
fn internal(e: impl std::fmt::Display) -> Status {
    error!(error = %e, "internal error");
    Status::internal(format!("hub internal error: {e}; see the hub's log"))
}
