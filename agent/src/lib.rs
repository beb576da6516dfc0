//! The Flotilla agent: one per Kubernetes cluster. It dials out to the hub, trades a
//! registration token for a client certificate once, receives the bundle deployments meant for
//! its cluster, server-side applies them, prunes what it owns that left a bundle, and reports
//! status down to each object.
//!
//! The whole agent is [`run`]: the binary calls it, and so do end-to-end tests, in-process.
//!
//! ```no_run
//! # async fn example() -> Result<(), flotilla_agent::AgentError> {
//! use flotilla_agent::*;
//! let config = AgentConfig {
//!     hub_url: "https://hub.example.com:8443".into(),
//!     token: Some("token-from-flotilla-token-create".into()),
//!     ca_pem: Some(std::fs::read_to_string("hub-ca.pem").unwrap()),
//!     cluster_name: "edge-1".into(),
//!     labels: [("env".to_string(), "prod".to_string())].into(),
//!     namespace: DEFAULT_NAMESPACE.into(),
//!     identity: IdentityStoreConfig::Dir("./flotilla-agent-state".into()),
//!     kube: KubeSource::Kubeconfig("kubeconfig.yaml".into()),
//!     backoff: BackoffConfig::default(),
//! };
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! run(config, shutdown).await
//! # }
//! ```
//!
//! # Code map
//! - `config`, `error`: the public surface besides [`run`].
//! - `identity`: key pair, CSR, and the identity store (directory or Secret).
//! - `hub_client`: *Boundary:* the only module that sees protobuf types. Registration, the
//!   `Connect` stream, manifest fetching and caching, status batching, reconnects.
//! - `reconcile`: one worker per deployment id; an apply run and prune.
//! - `plan`, `status`, `model`: pure decisions and domain types, tested without a cluster.
//! - `cluster`: *Boundary:* the only kube-rs user. API calls with retries, discovery,
//!   apply/delete, inventory ConfigMaps, the identity Secret.
//! - `backoff`: exponential backoff with full jitter.
//!
//! # Data flow
//! hub `BundleDeployment` → `hub_client` (fetch missing manifests, verify their hashes) →
//! `reconcile` worker (latest desired wins) → `cluster` (inventory widened, objects applied,
//! CRDs awaited, leftovers pruned, inventory narrowed) → `status::StatusBoard` (coalesced) →
//! `hub_client` (`StatusReport`, changes only).
//!
//! # Shutdown
//! Cancelling the token passed to [`run`] ends the hub stream and every worker between API
//! calls; `run` waits a short grace period for them and returns.

mod backoff;
mod cluster;
mod config;
mod error;
mod hub_client;
mod identity;
mod model;
mod plan;
mod reconcile;
mod status;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{
    AgentConfig, BackoffConfig, DEFAULT_IDENTITY_SECRET, DEFAULT_NAMESPACE, IdentityStoreConfig,
    KubeSource,
};
pub use error::AgentError;

use cluster::Cluster;
use config::HubAddress;
use hub_client::{Credentials, HubClient, ManifestCache};
use identity::IdentityStore;
use reconcile::Reconciler;
use status::StatusBoard;

/// How long `run` waits for deployment workers after shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown` is cancelled.
///
/// Loads the stored identity or registers with `config.token`, then keeps a stream to the hub
/// open, reconnecting forever with backoff, and applies what the hub sends. Returns `Ok(())`
/// after shutdown, or an [`AgentError`] when the agent cannot work without a person: invalid
/// configuration, no identity and no token, a refused registration, an unusable identity
/// store or Kubernetes configuration. A hub or API server that is unreachable is retried, not
/// returned.
///
/// Installs the aws-lc-rs rustls provider as the process default if none is installed yet.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    // Err means a provider is already installed (by main, a test, or an earlier run): fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let hub = validate(&config)?;
    let cluster = Cluster::connect(&config.kube, &config.namespace).await?;
    let store = IdentityStore::new(&config.identity, &cluster);
    let Some(identity) = hub_client::obtain_identity(&config, &hub, &store, &shutdown).await?
    else {
        return Ok(());
    };
    let identity_location = store.location();
    let credentials = Arc::new(Credentials::new(
        hub.clone(),
        config.ca_pem.clone(),
        store,
        identity.clone(),
    ));
    // Fail fast on unusable TLS material instead of in every session.
    credentials.endpoint()?;

    let tracker = TaskTracker::new();
    let board = Arc::new(StatusBoard::default());
    let reconciler = Reconciler::new(
        cluster.clone(),
        board.clone(),
        config.backoff,
        tracker.clone(),
        shutdown.clone(),
    );
    let client = HubClient {
        credentials,
        cluster,
        reconciler,
        board,
        cache: Arc::new(ManifestCache::default()),
        backoff: config.backoff,
        identity_location,
    };
    info!(cluster = %identity.cluster_name, cluster_id = %identity.cluster_id, hub = %hub.url, "agent started");
    client.run(&shutdown).await;

    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!("some deployment workers did not stop in time");
    }
    info!("agent stopped");
    Ok(())
}

fn validate(config: &AgentConfig) -> Result<HubAddress, AgentError> {
    let hub = HubAddress::parse(&config.hub_url).map_err(AgentError::Config)?;
    if config.namespace.is_empty() {
        return Err(AgentError::Config(
            "the agent namespace is empty: pass --namespace".into(),
        ));
    }
    if let Some(ca) = &config.ca_pem
        && !ca.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(AgentError::Tls(
            "the CA file holds no PEM certificate".into(),
        ));
    }
    if let IdentityStoreConfig::Secret { name } = &config.identity
        && name.is_empty()
    {
        return Err(AgentError::Config(
            "the identity Secret name is empty: pass --identity-secret NAME".into(),
        ));
    }
    Ok(hub)
}

#[cfg(test)]
mod tests;
