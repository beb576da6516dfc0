//! Reaching the hub: TLS endpoints (server-authenticated for registration, mutual afterwards)
//! and the trade of a registration token for a cluster identity: once for a new key, and again
//! with the stored key when the certificate expired while the agent was offline.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::registration_client::RegistrationClient;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::{BackoffConfig, HubAddress};
use crate::error::AgentError;
use crate::identity::{Identity, IdentityStore, csr_for_key, new_key_and_csr, patiently};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings notice a hub that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// A TLS endpoint for the hub: trusting `trust` (platform roots if empty), checking the
/// certificate against the URL's host, and presenting `identity` when given.
pub(crate) fn endpoint(
    hub: &HubAddress,
    trust: &[String],
    identity: Option<&Identity>,
) -> Result<Endpoint, AgentError> {
    let mut tls = ClientTlsConfig::new().domain_name(hub.host.clone());
    tls = if trust.is_empty() {
        tls.with_native_roots()
    } else {
        tls.ca_certificates(trust.iter().map(Certificate::from_pem))
    };
    if let Some(id) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            &id.cert_pem,
            &id.key_pem,
        ));
    }
    Endpoint::from_shared(hub.url.clone())
        .map_err(|e| AgentError::Config(format!("the hub URL {:?} is unusable: {e}", hub.url)))?
        .tls_config(tls)
        .map_err(|e| AgentError::Tls(e.to_string()))
        .map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
        })
}

/// The outcome of one failed registration attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The hub said no; retrying the same request cannot help.
    Fatal(AgentError),
    /// The hub could not be reached or was unavailable.
    Retry(String),
}

/// What registering sends besides the key.
pub(crate) struct Registration {
    pub hub: HubAddress,
    /// The CAs to trust for the hub (server-authenticated TLS only).
    pub trust: Vec<String>,
    pub token: String,
    pub cluster_name: String,
    pub labels: BTreeMap<String, String>,
}

impl Registration {
    fn request(&self, csr_pem: String) -> pb::RegisterRequest {
        pb::RegisterRequest {
            token: self.token.clone(),
            cluster_name: self.cluster_name.clone(),
            labels: self.labels.clone().into_iter().collect(),
            csr_pem,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn identity(&self, answer: pb::RegisterResponse, key_pem: String) -> Identity {
        Identity {
            cluster_id: answer.cluster_id,
            cluster_name: answer.cluster_name,
            key_pem,
            cert_pem: answer.certificate_pem,
            ca_pem: answer.ca_bundle_pem,
            hub_url: self.hub.url.clone(),
        }
    }

    /// Trades the token for a certificate for a new key and stores the new identity.
    /// Retries while the hub cannot be reached; stops on a refusal. `Ok(None)` means shutdown
    /// came first.
    pub async fn register_new(
        &self,
        store: &IdentityStore,
        backoff: BackoffConfig,
        shutdown: &CancellationToken,
    ) -> Result<Option<Identity>, AgentError> {
        let keys = new_key_and_csr(&self.cluster_name)?;
        let request = self.request(keys.csr_pem.clone());
        let endpoint = endpoint(&self.hub, &self.trust, None)?;
        let mut delays = Backoff::new(backoff);
        loop {
            match register_once(&endpoint, request.clone(), &self.cluster_name).await {
                Ok(answer) => {
                    let identity = self.identity(answer, keys.key_pem);
                    info!(cluster_id = %identity.cluster_id, cluster = %identity.cluster_name, "registered with the hub");
                    // The hub has spent the token on this key: keep trying to store it.
                    let saved =
                        patiently(backoff, shutdown, "write", || store.save(&identity)).await?;
                    return Ok(saved.map(|()| identity));
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(why)) => {
                    let delay = delays.next_delay();
                    warn!(error = %why, ?delay, "could not register with the hub; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One attempt to register again as the cluster `stored` is, with its key: the hub then
    /// re-issues a certificate for the same cluster id. The caller stores the answer.
    pub async fn register_again(&self, stored: &Identity) -> Result<Identity, Attempt> {
        let csr_pem = csr_for_key(&stored.key_pem, &self.cluster_name).map_err(Attempt::Fatal)?;
        let endpoint = endpoint(&self.hub, &self.trust, None).map_err(Attempt::Fatal)?;
        let answer = register_once(&endpoint, self.request(csr_pem), &self.cluster_name).await?;
        let identity = self.identity(answer, stored.key_pem.clone());
        if identity.cluster_id != stored.cluster_id {
            warn!(stored = %stored.cluster_id, issued = %identity.cluster_id, "the hub registered this agent as a different cluster");
        }
        Ok(identity)
    }
}

async fn register_once(
    endpoint: &Endpoint,
    request: pb::RegisterRequest,
    name: &str,
) -> Result<pb::RegisterResponse, Attempt> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Attempt::Retry(describe_transport(&e)))?;
    let mut client = RegistrationClient::new(channel);
    let mut request = tonic::Request::new(request);
    request.set_timeout(REGISTER_TIMEOUT);
    let answer = client
        .register(request)
        .await
        .map_err(|status| match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => {
                Attempt::Fatal(AgentError::TokenRefused(status.message().to_string()))
            }
            Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition => {
                Attempt::Fatal(AgentError::RegistrationRefused {
                    name: name.to_string(),
                    message: status.message().to_string(),
                })
            }
            _ => Attempt::Retry(format!("{}: {}", status.code(), status.message())),
        })?;
    let answer = answer.into_inner();
    if answer.certificate_pem.is_empty() || answer.cluster_id.is_empty() {
        return Err(Attempt::Fatal(AgentError::Credentials(
            "the hub's registration answer has no certificate or cluster id".into(),
        )));
    }
    Ok(answer)
}

/// A transport error with its causes: tonic's top-level message ("transport error") alone
/// does not tell a refused connection from a certificate problem.
pub(crate) fn describe_transport(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
