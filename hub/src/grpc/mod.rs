//! The hub's gRPC surface: agent services and the admin API on one mTLS port.
//!
//! Boundary: the only module that sees protobuf types (`convert` translates). Callers are
//! identified by their verified client certificate alone (`pki::peer_identity`): a cluster's
//! certificate reaches its own deployments, an admin certificate reaches the admin API.

mod admin;
mod agent;
mod convert;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use tracing::{error, warn};

use flotilla_proto::admin::v1::admin_server::AdminServer;
use flotilla_proto::agent::v1::agent_service_server::AgentServiceServer;
use flotilla_proto::agent::v1::registration_server::RegistrationServer;

use crate::fleet::Fleet;
use crate::model::ClusterId;
use crate::pki::{PeerIdentity, Pki, peer_identity};
use crate::source::Sources;

/// What the services share.
pub struct Context {
    pub fleet: Arc<Fleet>,
    pub pki: Arc<Pki>,
    pub sources: Arc<Sources>,
    pub client_cert_ttl: Duration,
    pub default_poll_interval: Duration,
    /// The URL agents dial (`HubConfig::agent_url_for` the bound listener).
    pub agent_url: String,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

/// Serve every gRPC service on `listener` until `shutdown`.
pub async fn serve(
    ctx: Arc<Context>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (cert, key) = ctx.pki.server_identity();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ctx.pki.ca_pem()))
        // Registration comes before the agent has a certificate; every other call checks one.
        .client_auth_optional(true);
    Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(RegistrationServer::new(agent::RegistrationService(
            ctx.clone(),
        )))
        .add_service(AgentServiceServer::new(agent::AgentService(ctx.clone())))
        .add_service(AdminServer::new(admin::AdminService(ctx.clone())))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled(),
        )
        .await
}

fn identity<T>(req: &Request<T>) -> Option<PeerIdentity> {
    let certs = req.peer_certs()?;
    peer_identity(certs.first()?.as_ref())
}

/// The registered cluster behind this call's client certificate.
fn authorize_cluster<T>(ctx: &Context, req: &Request<T>) -> Result<ClusterId, Status> {
    match identity(req) {
        Some(PeerIdentity::Cluster(id)) if ctx.fleet.cluster(id).is_some() => Ok(id),
        Some(PeerIdentity::Cluster(id)) => {
            warn!(cluster = %id, "call from an unknown or deleted cluster refused");
            Err(Status::permission_denied(
                "this cluster is not registered on the hub (deleted?); re-install the agent with a new registration token",
            ))
        }
        _ => {
            warn!(remote = ?req.remote_addr(), "agent call without a cluster certificate refused");
            Err(Status::unauthenticated(
                "a cluster client certificate is required; register first with a token",
            ))
        }
    }
}

/// The admin behind this call's client certificate.
fn authorize_admin<T>(req: &Request<T>) -> Result<String, Status> {
    match identity(req) {
        Some(PeerIdentity::Admin(name)) => Ok(name),
        _ => {
            warn!(remote = ?req.remote_addr(), "admin call without an admin certificate refused");
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
