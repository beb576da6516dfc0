//! The agent's configuration: plain data, built by [`crate::cli`] from flags (or by a test
//! harness), validated once by [`crate::run`], and never mutated afterwards.
//!
//! Runtime handles (the Kubernetes client, the hub channel) are built from it in `run`; nothing
//! here does I/O. What a bootstrap Secret supplies is merged in `run`, flags first.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The namespace the agent keeps its own state in when none is given.
pub const DEFAULT_NAMESPACE: &str = "flotilla-system";

/// The name of the identity Secret when the agent runs inside a cluster.
pub const DEFAULT_IDENTITY_SECRET: &str = "flotilla-agent-identity";

/// The identity directory when the agent runs outside a cluster.
pub const DEFAULT_STATE_DIR: &str = "./flotilla-agent-state";

/// Everything one agent needs to know to run.
///
/// `Default` is an agent outside a cluster with nothing configured yet: start from it with
/// `..AgentConfig::default()` so that new fields do not break callers.
#[derive(Clone)]
pub struct AgentConfig {
    /// The hub's gRPC address, `https://host:port`. `None`: the bootstrap Secret's `hubURL`,
    /// else the URL the stored identity was issued by.
    pub hub_url: Option<String>,
    /// A registration token from `flotilla token create`; needed to register, and again only
    /// if the certificate expires while the agent is offline. `None`: the bootstrap Secret's
    /// `token`, read when needed.
    pub token: Option<String>,
    /// PEM certificates to trust for the hub before it has handed out its CA bundle.
    /// `None`: the bootstrap Secret's `caBundle`, else the platform's native roots. Once the
    /// agent holds an identity, the bundle the hub gave it (kept current by trust updates)
    /// is what new connections trust.
    pub ca_pem: Option<String>,
    /// The cluster name asked for at registration (lower-case RFC 1123 label). `None`: `c-`
    /// and the first 12 hex digits of the UID of the `kube-system` namespace, which stays the
    /// same when the agent is re-installed.
    pub cluster_name: Option<String>,
    /// Labels reported about the cluster at registration.
    pub labels: BTreeMap<String, String>,
    /// The agent's own namespace: inventory ConfigMaps and the identity Secret live here.
    pub namespace: String,
    /// Where the agent's identity (key, certificate, cluster id) is kept.
    pub identity: IdentityStoreConfig,
    /// A Secret in [`AgentConfig::namespace`] with the keys `hubURL`, `caBundle` and `token`,
    /// as the install manifest of `flotilla agent manifest` creates it. The fields above win
    /// over its values. Once the agent holds a working identity it deletes the `token` key.
    pub bootstrap_secret: Option<String>,
    /// How to reach the Kubernetes API.
    pub kube: KubeSource,
    /// Reconnect and retry pacing.
    pub backoff: BackoffConfig,
    /// Where to serve Prometheus metrics (`GET /metrics`); `None` (the default): nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl fmt::Debug for AgentConfig {
    // Hand-written so that the registration token never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("hub_url", &self.hub_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("cluster_name", &self.cluster_name)
            .field("labels", &self.labels)
            .field("namespace", &self.namespace)
            .field("identity", &self.identity)
            .field("bootstrap_secret", &self.bootstrap_secret)
            .field("kube", &self.kube)
            .field("backoff", &self.backoff)
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            hub_url: None,
            token: None,
            ca_pem: None,
            cluster_name: None,
            labels: BTreeMap::new(),
            namespace: DEFAULT_NAMESPACE.into(),
            identity: IdentityStoreConfig::Dir(DEFAULT_STATE_DIR.into()),
            bootstrap_secret: None,
            kube: KubeSource::Infer,
            backoff: BackoffConfig::default(),
            metrics_addr: None,
        }
    }
}

/// Where the agent keeps its identity between restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityStoreConfig {
    /// Files in this directory (private key mode 0600). For agents outside a cluster.
    Dir(PathBuf),
    /// A Secret with this name in [`AgentConfig::namespace`]. For agents inside a cluster.
    Secret {
        /// The Secret's name.
        name: String,
    },
}

/// How the agent reaches the Kubernetes API of its cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KubeSource {
    /// This kubeconfig file, with its current context.
    Kubeconfig(PathBuf),
    /// The in-cluster service account when running in a pod, else the default kubeconfig
    /// (`$KUBECONFIG` or `~/.kube/config`).
    #[default]
    Infer,
}

/// Exponential backoff with full jitter: attempt `n` waits a random time in
/// `[0, min(max, initial * 2^n)]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The ceiling of the first delay.
    pub initial: Duration,
    /// The largest delay; also the pause after the hub refused the agent's certificate.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

/// The hub address split into what TLS needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HubAddress {
    /// The URL as given, used as the gRPC endpoint.
    pub url: String,
    /// The host name the hub's certificate must carry.
    pub host: String,
}

impl HubAddress {
    /// Accepts `https://host[:port][/]` only: the agent never talks to the hub in clear text.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("the hub URL {url:?} must start with https://"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(format!(
                "the hub URL {url:?} must look like https://host:port"
            ));
        }
        let host = if let Some(v6) = authority.strip_prefix('[') {
            v6.split(']').next().unwrap_or_default().to_string()
        } else {
            authority.split(':').next().unwrap_or_default().to_string()
        };
        if host.is_empty() {
            return Err(format!("the hub URL {url:?} has no host"));
        }
        Ok(Self {
            url: format!("https://{authority}"),
            host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_address_takes_host_for_tls() {
        let a = HubAddress::parse("https://hub.example.com:8443/").unwrap();
        assert_eq!(a.host, "hub.example.com");
        assert_eq!(a.url, "https://hub.example.com:8443");
        assert_eq!(
            HubAddress::parse("https://127.0.0.1:1").unwrap().host,
            "127.0.0.1"
        );
        assert_eq!(HubAddress::parse("https://[::1]:443").unwrap().host, "::1");
    }

    #[test]
    fn hub_address_refuses_plain_text_and_paths() {
        assert!(HubAddress::parse("http://hub:80").is_err());
        assert!(HubAddress::parse("https://").is_err());
        assert!(HubAddress::parse("https://hub/x").is_err());
    }

    #[test]
    fn debug_hides_the_token() {
        let c = AgentConfig {
            hub_url: Some("https://h:1".into()),
            token: Some("s3cret".into()),
            cluster_name: Some("c".into()),
            ..AgentConfig::default()
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
