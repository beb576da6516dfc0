//! The hub's lifecycle: `Hub::bind` opens the store, loads the CA and binds the listener
//! (nothing runs yet), `Hub::run` serves until the shutdown token fires, then drains.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::HubConfig;
use crate::fleet::Fleet;
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
    #[error("cannot listen on {addr}: {source}; is another hub running, or pick another --listen")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
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
    listener: TcpListener,
    admin_credential: PathBuf,
}

impl Hub {
    /// Open the store, load or create the CA, bind the listener and write the admin
    /// credential. Nothing is served until `run`.
    pub async fn bind(config: HubConfig) -> Result<Self, HubError> {
        let dir = &config.data_dir;
        create_private_dir(dir)?;
        let store = Store::open(&dir.join("store"))?;
        let pki = Arc::new(Pki::load_or_create(&dir.join("pki"), &config.server_names)?);
        let fleet = Fleet::load(store.clone())?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| HubError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| HubError::Bind {
            addr: config.listen,
            source,
        })?;
        let admin_credential = dir.join("admin.yaml");
        write_admin_credential(&admin_credential, &pki, addr)?;
        info!(addr = %addr, data_dir = %dir.display(), clusters = fleet.clusters().len(), "hub bound");
        Ok(Self {
            config,
            store,
            fleet,
            pki,
            listener,
            admin_credential,
        })
    }

    /// The address the gRPC listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Path of the admin credential (`<data-dir>/admin.yaml`).
    pub fn admin_credential_path(&self) -> &Path {
        &self.admin_credential
    }

    /// The CA agents must trust, PEM.
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem().to_string()
    }

    /// Serve until `shutdown` is cancelled, then stop every task within the grace period.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), HubError> {
        let tasks = TaskTracker::new();
        let sources = Arc::new(Sources::new(
            self.fleet.clone(),
            self.config.data_dir.join("git"),
            tasks.clone(),
            shutdown.clone(),
        ));
        for repo in self.store.repos()? {
            sources.watch(repo);
        }
        let ctx = Arc::new(crate::grpc::Context {
            fleet: self.fleet.clone(),
            pki: self.pki.clone(),
            sources,
            client_cert_ttl: self.config.client_cert_ttl,
            default_poll_interval: self.config.default_poll_interval,
            agent_url: self.config.agent_url_for(self.local_addr()),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        });
        let served = crate::grpc::serve(ctx, self.listener, shutdown.clone()).await;
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
        served.map_err(HubError::from)
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

/// Write (or refresh the server URL of) the admin credential. The admin certificate is
/// issued once and kept.
fn write_admin_credential(path: &Path, pki: &Pki, addr: SocketAddr) -> Result<(), HubError> {
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
    let server = format!("https://{host}:{}", addr.port());
    let existing = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_saphyr::from_str::<AdminCredential>(&s).ok());
    let cred = match existing {
        Some(c) if c.ca == pki.ca_pem() => AdminCredential { server, ..c },
        _ => {
            let (cert, key) = pki.issue_admin("admin", Duration::from_secs(365 * 86400))?;
            AdminCredential {
                server,
                ca: pki.ca_pem().to_string(),
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
