//! The Flotilla agent: one per Kubernetes cluster. It dials out to the hub, trades a
//! registration token for a client certificate once (and renews that certificate over its
//! stream), receives the bundle deployments meant for its cluster, server-side applies them,
//! prunes what it owns that left a bundle, and reports status down to each object.
//!
//! The whole agent is [`run`]: the binary calls it, and so do end-to-end tests, in-process.
//! [`cli`] turns the binary's flags into an [`AgentConfig`].
//!
//! ```no_run
//! # async fn example() -> Result<(), flotilla_agent::AgentError> {
//! use flotilla_agent::*;
//! let config = AgentConfig {
//!     hub_url: Some("https://hub.example.com:8443".into()),
//!     token: Some("token-from-flotilla-token-create".into()),
//!     ca_pem: Some(std::fs::read_to_string("hub-ca.pem").unwrap()),
//!     cluster_name: Some("edge-1".into()),
//!     labels: [("env".to_string(), "prod".to_string())].into(),
//!     identity: IdentityStoreConfig::Dir("./flotilla-agent-state".into()),
//!     kube: KubeSource::Kubeconfig("kubeconfig.yaml".into()),
//!     ..AgentConfig::default()
//! };
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! run(config, shutdown).await
//! # }
//! ```
//!
//! # Code map
//! - `config`, `error`, [`cli`]: the public surface besides [`run`].
//! - `startup`: hub URL and CA from flags, bootstrap Secret or stored identity; the stored
//!   identity or a first registration.
//! - `bootstrap`: the install manifest's bootstrap Secret (`hubURL`, `caBundle`, `token`),
//!   the token removed once the agent has an identity; the derived cluster name.
//! - `identity`: key pairs, CSRs, certificate expiry, and the identity store (directory or
//!   Secret).
//! - `hub_client`: *Boundary:* the only module that sees protobuf types. Registration, the
//!   `Connect` stream, manifest fetching and caching, status batching, reconnects; the
//!   current identity, its renewal over the stream, trust updates, and registering again
//!   with the stored key after an expiry.
//! - `reconcile`: one worker per deployment id; an apply run and prune; on removal, prune or
//!   (fleet.yaml `keepResources`) release: objects left on the cluster without ownership marks.
//!   Between runs each worker watches its objects (`reconcile::observe`, fed by
//!   `reconcile::route`): health, drift (Modified, or reverted with `correctDrift`), Missing.
//!   After a (re)start, held contents are taken up to be watched, not applied
//!   (`hub_client::resume` → `reconcile::resume`).
//! - `plan`, `status`, `model`: pure decisions and domain types, tested without a cluster.
//!   `status::summarize` rolls objects up: ErrApplied > WaitApplied > Missing > Modified >
//!   NotReady > Ready, with the first such object's message.
//! - `health`: *pure*: whether an applied object is ready, from its kind's own signals.
//! - `drift`: *pure*: fingerprints of live objects (status and server metadata left out) and
//!   the fields where a dry-run apply and the live object differ, minus `diff.comparePatches`.
//! - `cluster`: *Boundary:* the only kube-rs user. API calls with retries, discovery,
//!   apply (and its dry run)/delete, inventory ConfigMaps, the identity Secret, and one watch
//!   per resource type the agent owns (`cluster::watch`).
//! - `metrics`: Prometheus metrics and their HTTP server (`--metrics-addr`, off by default).
//! - `backoff`: exponential backoff with full jitter.
//!
//! # Data flow
//! hub `BundleDeployment` → `hub_client` (fetch missing manifests, verify their hashes) →
//! `reconcile` worker (latest desired wins) → `cluster` (inventory widened, objects applied,
//! CRDs awaited, leftovers pruned, inventory narrowed) → `status::StatusBoard` (coalesced) →
//! `hub_client` (`StatusReport`, changes only).
//!
//! Afterwards: `cluster::watch` (one `watcher` per owned type, managed-by label) →
//! `reconcile::route` (by the `flotilla.dev/deployment-id` annotation) → the worker's
//! `Observed` (health; a changed fingerprint → GET + `dryRun=All` apply → drift) →
//! `status::StatusBoard`.
//!
//! After a (re)start: inventories with a settled content (`Hello` reports them, the hub
//! resends nothing) → after `SyncComplete`, their manifests (cache, else `FetchManifests`) →
//! the worker's observe target: kinds resolved, watches started, each object read and
//! dry-run checked → `status::StatusBoard`. Nothing that did not drift is applied; the
//! inventory is not written; any word from the hub on the deployment wins.
//!
//! # Identity lifecycle
//! Registered once with a token (from `--token` or the bootstrap Secret); renewed on the live
//! stream at about 2/3 of its remaining life (new key each time, saved before use, the stream
//! kept); CA bundles from trust updates saved and trusted for new connections; after an
//! expiry while offline, registered again with the stored key and the same cluster name,
//! which keeps the cluster id.
//!
//! # Shutdown
//! Cancelling the token passed to [`run`] ends the hub stream and every worker between API
//! calls; `run` waits a short grace period for them and returns.

pub mod cli;

mod backoff;
mod bootstrap;
mod cluster;
mod config;
mod drift;
mod error;
mod health;
mod hub_client;
mod identity;
mod metrics;
mod model;
mod plan;
mod reconcile;
mod startup;
mod status;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

pub use config::{
    AgentConfig, BackoffConfig, DEFAULT_IDENTITY_SECRET, DEFAULT_NAMESPACE, DEFAULT_STATE_DIR,
    IdentityStoreConfig, KubeSource,
};
pub use error::AgentError;

use bootstrap::BootstrapSecret;
use cluster::Cluster;
use hub_client::{Credentials, HubClient, ManifestCache, Recovery};
use identity::IdentityStore;
use metrics::Metrics;
use reconcile::Reconciler;
use status::StatusBoard;

/// How long `run` waits for deployment workers after shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown` is cancelled.
///
/// Loads the stored identity or registers with a token (from `config.token` or the bootstrap
/// Secret), then keeps a stream to the hub open, reconnecting forever with backoff, renewing
/// its certificate on the stream, and applies what the hub sends. Returns `Ok(())` after
/// shutdown, or an [`AgentError`] when the agent cannot work without a person: invalid
/// configuration, no identity and no token, a refused registration, an unusable identity
/// store or Kubernetes configuration. A hub or API server that is unreachable is retried, not
/// returned; so is a certificate that expired while the agent was offline (it registers again
/// when a token is available).
///
/// Installs the aws-lc-rs rustls provider as the process default if none is installed yet.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    // Err means a provider is already installed (by main, a test, or an earlier run): fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    validate(&config)?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            AgentError::Config(format!(
                "cannot serve metrics on {addr}: {e}; pass another --metrics-addr or leave it out"
            ))
        })?),
        None => None,
    };
    let cluster = Cluster::connect(&config.kube, &config.namespace).await?;
    let store = IdentityStore::new(&config.identity, &cluster);
    let bootstrap = config
        .bootstrap_secret
        .as_deref()
        .map(|name| BootstrapSecret::new(&cluster, name));
    let Some(start) =
        startup::prepare(&config, &cluster, &store, bootstrap.as_ref(), &shutdown).await?
    else {
        return Ok(());
    };
    let (cluster_name, cluster_id) = (
        start.identity.cluster_name.clone(),
        start.identity.cluster_id.clone(),
    );
    let hub_url = start.hub.url.clone();
    let (credentials, keeper) = Credentials::new(
        start.hub,
        start.ca_pem,
        start.identity,
        store,
        config.backoff,
    );

    let tracker = TaskTracker::new();
    tracker.spawn(
        keeper
            .run(shutdown.clone())
            .instrument(info_span!("identity_keeper")),
    );
    let connected = Arc::new(Notify::new());
    if let Some(secret) = bootstrap {
        let creds = credentials.clone();
        tracker.spawn(
            bootstrap::keep_token_removed(
                secret,
                move || !creds.expired(),
                connected.clone(),
                shutdown.clone(),
            )
            .instrument(info_span!("bootstrap_token")),
        );
    }
    let board = Arc::new(StatusBoard::default());
    let metrics = Arc::new(Metrics::default());
    if let Some(listener) = metrics_listener {
        info!(addr = ?listener.local_addr().ok(), "serving metrics");
        let serve = metrics::serve(
            listener,
            metrics.clone(),
            board.clone(),
            tracker.clone(),
            shutdown.clone(),
        );
        tracker.spawn(serve.instrument(info_span!("metrics")));
    }
    let reconciler = Reconciler::new(
        cluster.clone(),
        board.clone(),
        metrics,
        config.backoff,
        tracker.clone(),
        shutdown.clone(),
    );
    let client = HubClient {
        credentials,
        recovery: Recovery {
            labels: config.labels.clone(),
            tokens: start.tokens,
        },
        cluster,
        reconciler,
        board,
        cache: Arc::new(ManifestCache::default()),
        backoff: config.backoff,
        connected,
    };
    info!(cluster = %cluster_name, %cluster_id, hub = %hub_url, "agent started");
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

/// What can be checked before any I/O; the hub URL is checked once its source is known.
fn validate(config: &AgentConfig) -> Result<(), AgentError> {
    if config.namespace.is_empty() {
        return Err(AgentError::Config(
            "the agent namespace is empty: pass --namespace (or set FLOTILLA_NAMESPACE)".into(),
        ));
    }
    if let Some(url) = config.hub_url.as_deref().filter(|u| !u.is_empty()) {
        config::HubAddress::parse(url).map_err(AgentError::Config)?;
    }
    if let Some(ca) = &config.ca_pem
        && !ca.contains("-----BEGIN CERTIFICATE-----")
    {
        return Err(AgentError::Tls(
            "the CA file holds no PEM certificate".into(),
        ));
    }
    for (what, name) in [
        ("identity", identity_secret_name(&config.identity)),
        ("bootstrap", config.bootstrap_secret.as_deref()),
    ] {
        if name == Some("") {
            return Err(AgentError::Config(format!(
                "the {what} Secret name is empty: pass --{what}-secret NAME"
            )));
        }
    }
    Ok(())
}

fn identity_secret_name(store: &IdentityStoreConfig) -> Option<&str> {
    match store {
        IdentityStoreConfig::Secret { name } => Some(name),
        IdentityStoreConfig::Dir(_) => None,
    }
}

#[cfg(test)]
mod tests;
