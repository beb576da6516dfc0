//! Where the identity is kept between restarts: files in a directory (private key mode 0600,
//! each file written through a rename, the record last) or a Secret in the agent's namespace.
//! Every write replaces the whole identity, so a renewal never leaves a key beside a
//! certificate that does not match it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Identity;
use crate::backoff::Backoff;
use crate::cluster::{ApiError, Cluster};
use crate::config::{BackoffConfig, IdentityStoreConfig};
use crate::error::AgentError;

/// Where the identity lives.
pub(crate) enum IdentityStore {
    /// Files in a directory.
    Dir(PathBuf),
    /// A Secret in the agent's namespace.
    Secret { cluster: Cluster, name: String },
}

/// The non-secret part, stored as `cluster.json` / Secret keys.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterRecord {
    cluster_id: String,
    cluster_name: String,
    hub_url: String,
}

const KEY_FILE: &str = "tls.key";
const CERT_FILE: &str = "tls.crt";
const CA_FILE: &str = "ca.crt";
/// Written last: its presence means the other files are complete.
const RECORD_FILE: &str = "cluster.json";

impl IdentityStore {
    pub fn new(config: &IdentityStoreConfig, cluster: &Cluster) -> Self {
        match config {
            IdentityStoreConfig::Dir(dir) => Self::Dir(dir.clone()),
            IdentityStoreConfig::Secret { name } => Self::Secret {
                cluster: cluster.clone(),
                name: name.clone(),
            },
        }
    }

    /// For messages: the directory, or `Secret namespace/name`.
    pub fn location(&self) -> String {
        match self {
            Self::Dir(dir) => dir.display().to_string(),
            Self::Secret { cluster, name } => format!("Secret {}/{name}", cluster.namespace()),
        }
    }

    fn error(&self, action: &'static str, message: impl ToString) -> AgentError {
        AgentError::IdentityStore {
            action,
            location: self.location(),
            message: message.to_string(),
        }
    }

    fn secret_error(&self, action: &'static str, e: ApiError) -> StoreError {
        StoreError {
            transient: e.is_transient(),
            error: self.error(action, e),
        }
    }

    /// The stored identity, or `None` before the first registration.
    pub async fn load(&self) -> Result<Option<Identity>, StoreError> {
        let map = match self {
            Self::Dir(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || read_dir_store(&dir))
                    .await
                    .map_err(|e| self.error("read", e))?
                    .map_err(|e| self.error("read", e))?
            }
            Self::Secret { cluster, name } => cluster
                .read_secret(name)
                .await
                .map_err(|e| self.secret_error("read", e))?,
        };
        let identity = map.map(|m| identity_from_map(&m).map_err(|e| self.error("read", e)));
        Ok(identity.transpose()?)
    }

    /// Stores an identity, replacing any previous one.
    pub async fn save(&self, identity: &Identity) -> Result<(), StoreError> {
        let map = identity_to_map(identity);
        match self {
            Self::Dir(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || write_dir_store(&dir, &map))
                    .await
                    .map_err(|e| self.error("write", e))?
                    .map_err(|e| self.error("write", e).into())
            }
            Self::Secret { cluster, name } => cluster
                .write_secret(name, map)
                .await
                .map_err(|e| self.secret_error("write", e)),
        }
    }
}

/// Runs an identity-store operation, retrying while the store is unavailable (the API server
/// unreachable or overloaded). `Ok(None)` means shutdown came first.
pub(crate) async fn patiently<T, F, Fut>(
    backoff: BackoffConfig,
    shutdown: &CancellationToken,
    action: &str,
    op: F,
) -> Result<Option<T>, AgentError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delays = Backoff::new(backoff);
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
                let delay = delays.next_delay();
                warn!(%error, ?delay, action, "the identity store is unavailable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// A failed read or write of the identity (or of another Secret read at start); `transient` when the API server was unreachable
/// or overloaded, so that trying again later may work.
#[derive(Debug)]
pub(crate) struct StoreError {
    pub error: AgentError,
    pub transient: bool,
}

impl From<AgentError> for StoreError {
    fn from(error: AgentError) -> Self {
        Self {
            error,
            transient: false,
        }
    }
}

fn identity_to_map(identity: &Identity) -> BTreeMap<String, Vec<u8>> {
    let record = ClusterRecord {
        cluster_id: identity.cluster_id.clone(),
        cluster_name: identity.cluster_name.clone(),
        hub_url: identity.hub_url.clone(),
    };
    BTreeMap::from([
        (
            RECORD_FILE.to_string(),
            serde_json::to_vec_pretty(&record).expect("plain data serializes"),
        ),
        (KEY_FILE.to_string(), identity.key_pem.clone().into_bytes()),
        (
            CERT_FILE.to_string(),
            identity.cert_pem.clone().into_bytes(),
        ),
        (CA_FILE.to_string(), identity.ca_pem.clone().into_bytes()),
    ])
}

fn identity_from_map(map: &BTreeMap<String, Vec<u8>>) -> Result<Identity, String> {
    let text = |k: &str| -> Result<String, String> {
        let bytes = map.get(k).ok_or_else(|| format!("{k} is missing"))?;
        String::from_utf8(bytes.clone()).map_err(|_| format!("{k} is not text"))
    };
    let record: ClusterRecord = serde_json::from_str(&text(RECORD_FILE)?)
        .map_err(|e| format!("{RECORD_FILE} is unreadable: {e}"))?;
    Ok(Identity {
        cluster_id: record.cluster_id,
        cluster_name: record.cluster_name,
        hub_url: record.hub_url,
        key_pem: text(KEY_FILE)?,
        cert_pem: text(CERT_FILE)?,
        ca_pem: map
            .get(CA_FILE)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
    })
}

/// Reads the directory store; `None` when the record file is absent (never registered).
fn read_dir_store(dir: &Path) -> std::io::Result<Option<BTreeMap<String, Vec<u8>>>> {
    if !dir.join(RECORD_FILE).exists() {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    for name in [RECORD_FILE, KEY_FILE, CERT_FILE, CA_FILE] {
        match std::fs::read(dir.join(name)) {
            Ok(bytes) => {
                map.insert(name.to_string(), bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == CA_FILE => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{name}: {e}"))),
        }
    }
    Ok(Some(map))
}

/// Writes each file through a temporary file and a rename, the record last, so a crash never
/// leaves a half-written identity that looks complete.
fn write_dir_store(dir: &Path, map: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for name in [KEY_FILE, CERT_FILE, CA_FILE, RECORD_FILE] {
        if let Some(bytes) = map.get(name) {
            write_atomically(&dir.join(name), bytes, name == KEY_FILE)?;
        }
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp)?;
    #[cfg(unix)]
    {
        // `mode` applies only when creating; a stale temporary file keeps its old mode.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(if private {
            0o600
        } else {
            0o644
        }))?;
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            cluster_id: "6f1c".into(),
            cluster_name: "edge-1".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n".into(),
            cert_pem: "cert".into(),
            ca_pem: "ca".into(),
            hub_url: "https://hub:8443".into(),
        }
    }

    #[tokio::test]
    async fn dir_store_round_trips_with_a_private_key_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::Dir(tmp.path().join("state"));
        assert_eq!(store.load().await.unwrap(), None);
        store.save(&identity()).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(identity()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tmp.path().join("state").join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn dir_store_overwrites_and_reports_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::Dir(tmp.path().to_path_buf());
        store.save(&identity()).await.unwrap();
        let newer = Identity {
            cert_pem: "renewed".into(),
            ..identity()
        };
        store.save(&newer).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(newer));
        std::fs::remove_file(tmp.path().join(KEY_FILE)).unwrap();
        let err = store.load().await.unwrap_err().error.to_string();
        assert!(
            err.contains("tls.key") && err.contains("could not read"),
            "{err}"
        );
    }
}
