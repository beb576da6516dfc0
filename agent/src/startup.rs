//! What the agent settles before its first session: the hub's address and the CA to trust
//! (from flags, else the bootstrap Secret, else the stored identity), and an identity: the
//! stored one, or a new one registered now with a registration token.
//!
//! An identity that is stored but expired is kept as it is here; the hub client registers
//! again with its key before connecting (see `hub_client::recovery`).

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bootstrap::{self, BootstrapSecret, BootstrapValues, TokenSource};
use crate::cluster::Cluster;
use crate::config::{AgentConfig, HubAddress};
use crate::error::AgentError;
use crate::hub_client::Registration;
use crate::identity::{Identity, IdentityStore, StoreError, patiently};

/// The settled inputs of the hub client.
pub(crate) struct Start {
    pub hub: HubAddress,
    /// The configured CA (flag or bootstrap Secret), if any.
    pub ca_pem: Option<String>,
    pub identity: Identity,
    pub tokens: TokenSource,
}

/// Reads the bootstrap Secret and the stored identity, and registers if there is none.
/// `Ok(None)` means shutdown came first.
pub(crate) async fn prepare(
    config: &AgentConfig,
    cluster: &Cluster,
    store: &IdentityStore,
    bootstrap: Option<&BootstrapSecret>,
    shutdown: &CancellationToken,
) -> Result<Option<Start>, AgentError> {
    let values = match bootstrap {
        None => BootstrapValues::default(),
        Some(secret) => match read_bootstrap(config, secret, shutdown).await? {
            None => return Ok(None),
            Some(values) => values,
        },
    };
    let Some(stored) = patiently(config.backoff, shutdown, "read", || store.load()).await? else {
        return Ok(None);
    };
    let hub_url = non_empty(config.hub_url.clone())
        .or(values.hub_url)
        .or_else(|| stored.as_ref().map(|i| i.hub_url.clone()))
        .filter(|u| !u.is_empty())
        .ok_or(AgentError::NoHubUrl)?;
    let hub = HubAddress::parse(&hub_url).map_err(AgentError::Config)?;
    let ca_pem = match non_empty(config.ca_pem.clone()) {
        Some(ca) => Some(ca),
        None => checked_bundle(values.ca_bundle, bootstrap)?,
    };
    let tokens = TokenSource::new(config.token.clone(), bootstrap.cloned());
    let identity = match stored {
        Some(identity) => {
            if identity.hub_url != hub.url {
                warn!(stored = %identity.hub_url, configured = %hub.url, "the identity was issued by a hub at another URL; using it anyway");
            }
            info!(cluster_id = %identity.cluster_id, cluster = %identity.cluster_name, store = %store.location(), "using the stored identity");
            identity
        }
        None => {
            let token = non_empty(config.token.clone())
                .or(values.token)
                .ok_or(AgentError::NoToken)?;
            let registration = Registration {
                hub: hub.clone(),
                trust: ca_pem.iter().cloned().collect(),
                token,
                cluster_name: cluster_name(config, cluster).await?,
                labels: config.labels.clone(),
            };
            match registration
                .register_new(store, config.backoff, shutdown)
                .await?
            {
                Some(identity) => identity,
                None => return Ok(None),
            }
        }
    };
    Ok(Some(Start {
        hub,
        ca_pem,
        identity,
        tokens,
    }))
}

/// The bootstrap Secret's values, retrying while the API server is unavailable; empty values
/// (with a warning) when the Secret does not exist. `Ok(None)` means shutdown came first.
async fn read_bootstrap(
    config: &AgentConfig,
    secret: &BootstrapSecret,
    shutdown: &CancellationToken,
) -> Result<Option<BootstrapValues>, AgentError> {
    let read = patiently(config.backoff, shutdown, "read", || async {
        secret.read().await.map_err(|e| StoreError {
            transient: e.is_transient(),
            error: AgentError::Bootstrap {
                location: secret.location(),
                message: e.to_string(),
            },
        })
    })
    .await?;
    Ok(read.map(|values| {
        values.unwrap_or_else(|| {
            warn!(secret = %secret.location(), "the bootstrap Secret does not exist; using flags and the stored identity only");
            BootstrapValues::default()
        })
    }))
}

/// The bootstrap Secret's CA bundle, refused when it holds no certificate (a placeholder).
fn checked_bundle(
    bundle: Option<String>,
    secret: Option<&BootstrapSecret>,
) -> Result<Option<String>, AgentError> {
    match (bundle, secret) {
        (Some(pem), Some(secret)) if !pem.contains("-----BEGIN CERTIFICATE-----") => {
            Err(AgentError::Bootstrap {
                location: secret.location(),
                message: format!("its {} holds no PEM certificate", bootstrap::CA_BUNDLE_KEY),
            })
        }
        (bundle, _) => Ok(bundle),
    }
}

/// The configured name, or one derived from the `kube-system` namespace.
async fn cluster_name(config: &AgentConfig, cluster: &Cluster) -> Result<String, AgentError> {
    match &config.cluster_name {
        Some(name) if name.is_empty() => Err(AgentError::Config(
            "the cluster name is empty: pass --cluster-name NAME, or leave it out to derive one"
                .into(),
        )),
        Some(name) => Ok(name.clone()),
        None => {
            let name = bootstrap::derive_cluster_name(cluster)
                .await
                .map_err(|e| AgentError::ClusterName(e.to_string()))?;
            info!(cluster = %name, "no cluster name given; derived one from the kube-system namespace");
            Ok(name)
        }
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}
