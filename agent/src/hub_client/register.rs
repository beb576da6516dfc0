//! Reaching the hub: TLS endpoints (server-authenticated for registration, mutual afterwards)
//! and the one-time trade of a registration token for a cluster identity.

use std::time::Duration;

use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::registration_client::RegistrationClient;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::{AgentConfig, HubAddress};
use crate::error::AgentError;
use crate::identity::{Identity, IdentityStore, StoreError, new_key_and_csr};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings notice a hub that vanished without closing the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The PEM bundles to trust for the hub. The bundle the hub handed out (at registration, then
/// in every trust update of a CA rotation) wins: a configured CA goes stale when the hub's CA
/// rotates. The configured CA serves the first contact; with neither, the platform's roots
/// (an empty list).
pub(crate) fn trust_for(configured: Option<&str>, from_identity: Option<&str>) -> Vec<String> {
    let non_empty = |s: Option<&str>| s.filter(|s| !s.trim().is_empty()).map(str::to_owned);
    non_empty(from_identity)
        .or_else(|| non_empty(configured))
        .into_iter()
        .collect()
}

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

enum Attempt {
    Fatal(AgentError),
    Retry(String),
}

/// The stored identity, or a new one from the hub when there is none. Retries while the hub
/// cannot be reached; stops on a refusal. `Ok(None)` means shutdown came first.
pub(crate) async fn obtain_identity(
    config: &AgentConfig,
    hub: &HubAddress,
    store: &IdentityStore,
    shutdown: &CancellationToken,
) -> Result<Option<Identity>, AgentError> {
    let Some(stored) = patiently(config, shutdown, "read", || store.load()).await? else {
        return Ok(None);
    };
    if let Some(identity) = stored {
        if identity.hub_url != hub.url {
            warn!(stored = %identity.hub_url, configured = %hub.url, "the identity was issued by a hub at another URL; using it anyway");
        }
        info!(cluster_id = %identity.cluster_id, cluster = %identity.cluster_name, store = %store.location(), "using the stored identity");
        return Ok(Some(identity));
    }
    register(config, hub, store, shutdown).await
}

/// Trades the token for a certificate and stores the new identity.
async fn register(
    config: &AgentConfig,
    hub: &HubAddress,
    store: &IdentityStore,
    shutdown: &CancellationToken,
) -> Result<Option<Identity>, AgentError> {
    let token = config
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or(AgentError::NoToken)?;
    if config.cluster_name.is_empty() {
        return Err(AgentError::Config(
            "a cluster name is needed to register: pass --cluster-name".into(),
        ));
    }
    let keys = new_key_and_csr(&config.cluster_name)?;
    let request = pb::RegisterRequest {
        token: token.to_string(),
        cluster_name: config.cluster_name.clone(),
        labels: config.labels.clone().into_iter().collect(),
        csr_pem: keys.csr_pem.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let trust = trust_for(config.ca_pem.as_deref(), None);
    let endpoint = endpoint(hub, &trust, None)?;
    let mut backoff = Backoff::new(config.backoff);
    loop {
        match register_once(&endpoint, request.clone(), &config.cluster_name).await {
            Ok(answer) => {
                let identity = Identity {
                    cluster_id: answer.cluster_id,
                    cluster_name: answer.cluster_name,
                    key_pem: keys.key_pem,
                    cert_pem: answer.certificate_pem,
                    ca_pem: answer.ca_bundle_pem,
                    hub_url: hub.url.clone(),
                };
                info!(cluster_id = %identity.cluster_id, cluster = %identity.cluster_name, "registered with the hub");
                // The hub has spent the token on this key: keep trying to store it.
                let saved = patiently(config, shutdown, "write", || store.save(&identity)).await?;
                return Ok(saved.map(|()| identity));
            }
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(why)) => {
                let delay = backoff.next_delay();
                warn!(error = %why, ?delay, "could not register with the hub; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Runs an identity-store operation, retrying while the API server is unreachable.
/// `Ok(None)` means shutdown came first.
async fn patiently<T, F, Fut>(
    config: &AgentConfig,
    shutdown: &CancellationToken,
    action: &str,
    op: F,
) -> Result<Option<T>, AgentError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::new(config.backoff);
    loop {
        match op().await {
            Ok(t) => return Ok(Some(t)),
            Err(StoreError {
                error,
                transient: false,
            }) => return Err(error),
            Err(StoreError {
                error,
                transient: true,
            }) => {
                let delay = backoff.next_delay();
                warn!(%error, ?delay, action, "the identity store is unavailable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hubs_bundle_wins_then_the_configured_ca_then_platform_roots() {
        assert_eq!(trust_for(Some("A"), Some("B")), ["B"]);
        assert_eq!(trust_for(Some("A"), Some(" ")), ["A"]);
        assert_eq!(trust_for(None, Some("B")), ["B"]);
        assert!(trust_for(None, Some("")).is_empty());
        assert!(trust_for(None, None).is_empty());
    }
}
