//! The hub's lifecycle: `Hub::bind` opens the store, loads the CA and binds the listener
//! (nothing runs yet), `Hub::run` serves until the shutdown token fires, then drains.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use crate::config::HubConfig;
use crate::fleet::Fleet;
use crate::grpc::tls::{Tls, TlsError};
use crate::http::Probe;
use crate::metrics::Metrics;
use crate::pki::{Pki, PkiError, write_private};
use crate::source::Sources;
use crate::store::{Store, StoreError};

/// Why the hub could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(
        "cannot listen on {addr}: {source}; is another hub running, or pick another --listen / --http-listen"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the HTTP (health, metrics) server failed: {0}")]
    Http(std::io::Error),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot write the admin credential: {0}")]
    Credential(String),
}

/// The admin credential file the hub writes at first start: what the CLI needs to reach it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminCredential {
    /// The hub's gRPC URL.
    pub server: String,
    /// The CA certificate to trust, PEM.
    pub ca: String,
    /// The admin client certificate, PEM.
    pub cert: String,
    /// The admin client key, PEM. Keep this file secret.
    pub key: String,
}

/// A hub that has bound its listener and is ready to run.
pub struct Hub {
    config: HubConfig,
    store: Store,
    fleet: Arc<Fleet>,
    pki: Arc<Pki>,
    tls: Arc<Tls>,
    metrics: Arc<Metrics>,
    listener: TcpListener,
    http_listener: TcpListener,
    server_url: String,
    admin_credential: PathBuf,
}

impl Hub {
    /// Open the store, load or create the CA, bind the listener and write the admin
    /// credential. Nothing is served until `run`.
    pub async fn bind(config: HubConfig) -> Result<Self, HubError> {
        let dir = &config.data_dir;
        create_private_dir(dir)?;
        // Renders run in private checkouts under the scratch directory; what a crashed hub
        // left there is of no use.
        let _ = std::fs::remove_dir_all(&config.renderers.scratch);
        create_private_dir(&config.renderers.scratch)?;
        let store = Store::open(&dir.join("store"))?;
        let pki = Arc::new(Pki::load_or_create(&dir.join("pki"), &config.server_names)?);
        let fleet = Fleet::load(store.clone())?;
        let tls = Arc::new(Tls::new(pki.clone(), config.allow_tls12)?);
        let listener = bind(config.listen).await?;
        let http_listener = bind(config.http_listen).await?;
        let addr = local(&listener, config.listen)?;
        let server_url = server_url(addr);
        let admin_credential = dir.join("admin.yaml");
        write_admin_credential(&admin_credential, &pki, &server_url)?;
        let metrics = Arc::new(Metrics::default());
        metrics.clusters.set(fleet.cluster_count() as i64);
        info!(
            addr = %addr,
            http = %local(&http_listener, config.http_listen)?,
            data_dir = %dir.display(),
            clusters = fleet.cluster_count(),
            "hub bound"
        );
        Ok(Self {
            config,
            store,
            fleet,
            pki,
            tls,
            metrics,
            listener,
            http_listener,
            server_url,
            admin_credential,
        })
    }

    /// The address the gRPC listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The address the HTTP (health, metrics) listener is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Path of the admin credential (`<data-dir>/admin.yaml`).
    pub fn admin_credential_path(&self) -> &Path {
        &self.admin_credential
    }

    /// The CA agents must trust, PEM.
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }

    /// Serve until `shutdown` is cancelled, then stop every task within the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), HubError> {
        let tasks = TaskTracker::new();
        let sources = Arc::new(Sources::new(
            self.fleet.clone(),
            self.metrics.clone(),
            self.config.data_dir.join("git"),
            self.config.credentials_dir.clone(),
            self.config.renderers.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        for repo in self.store.repos()? {
            sources.watch(repo)?;
        }
        tasks.spawn(
            fleet_upkeep(self.fleet.clone(), self.metrics.clone(), shutdown.clone())
                .instrument(tracing::info_span!("fleet_upkeep")),
        );
        let ctx = Arc::new(crate::grpc::Context {
            fleet: self.fleet.clone(),
            pki: self.pki.clone(),
            sources,
            metrics: self.metrics.clone(),
            client_cert_ttl: self.config.client_cert_ttl,
            default_poll_interval: self.config.default_poll_interval,
            admin_credential: self.admin_credential.clone(),
            admin_server_url: self.server_url.clone(),
            agent_url: self.config.agent_url_for(self.local_addr()),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        });
        let ready = Arc::new(AtomicBool::new(true));
        let probe = Probe {
            metrics: self.metrics.clone(),
            ready: ready.clone(),
        };
        let hooks = {
            let sources = ctx.sources.clone();
            crate::webhook::router(
                self.config.webhook_secret.as_ref().map(|s| s.0.clone()),
                Arc::new(move |event: &crate::webhook::PushEvent| sources.push(event)),
                self.metrics.clone(),
            )
        };
        let extra = if self.config.ui {
            hooks.merge(crate::ui::router(self.fleet.clone(), shutdown.clone()))
        } else {
            hooks
        };
        let http = tasks.spawn(crate::http::serve(
            self.http_listener,
            probe,
            extra,
            shutdown.clone(),
        ));
        let served = crate::grpc::serve(ctx, self.listener, self.tls, shutdown.clone()).await;
        ready.store(false, Ordering::Relaxed);
        shutdown.cancel();
        tasks.close();
        if tokio::time::timeout(self.config.shutdown_grace, tasks.wait())
            .await
            .is_err()
        {
            warn!(grace = ?self.config.shutdown_grace, "tasks still running after the shutdown grace period");
        }
        self.store.flush().await?;
        info!("hub stopped");
        served?;
        match http.await {
            Ok(Err(e)) => Err(HubError::Http(e)),
            _ => Ok(()),
        }
    }
}

/// Once a second: bring the fleet's metrics up to date (a last pass at shutdown).
async fn fleet_upkeep(fleet: Arc<Fleet>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let (connected, states) = fleet.gauges();
        metrics.observe_fleet(connected, &states, &fleet.take_ready_latencies());
        if stopping {
            return;
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), HubError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| HubError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, HubError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HubError::Bind { addr, source })
}

fn local(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, HubError> {
    listener
        .local_addr()
        .map_err(|source| HubError::Bind { addr, source })
}

/// The URL that reaches a listener bound to `addr` from this machine.
fn server_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    format!("https://{host}:{}", addr.port())
}

/// Write (or refresh the server URL of) the admin credential. The admin certificate is
/// kept while the hub's CA bundle is unchanged, and issued afresh from the active CA when a
/// CA rotation changed it.
pub(crate) fn write_admin_credential(path: &Path, pki: &Pki, server: &str) -> Result<(), HubError> {
    let server = server.to_string();
    let existing = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_saphyr::from_str::<AdminCredential>(&s).ok());
    let cred = match existing {
        Some(c) if c.ca == pki.ca_pem() => AdminCredential { server, ..c },
        _ => {
            let (cert, key) = pki.issue_admin("admin", Duration::from_secs(365 * 86400))?;
            AdminCredential {
                server,
                ca: pki.ca_pem(),
                cert,
                key,
            }
        }
    };
    let yaml = serde_saphyr::to_string(&cred).map_err(|e| HubError::Credential(e.to_string()))?;
    let text = format!(
        "# Flotilla admin credential: it grants full control of the hub. Keep it secret.\n{yaml}"
    );
    write_private(path, &text)?;
    Ok(())
}
