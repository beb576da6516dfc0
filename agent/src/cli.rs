//! The binary's flags, and how they become an [`AgentConfig`] (raw arguments first, then a
//! validated, typed configuration).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use flotilla_agent::{AgentConfig, BackoffConfig, IdentityStoreConfig, KubeSource};

/// Command-line flags of `flotilla-agent`.
#[derive(Parser)]
#[command(
    version,
    about = "Flotilla agent: applies the hub's bundles to this cluster"
)]
pub struct Args {
    /// The hub's address, https://host:port.
    #[arg(long = "hub", env = "FLOTILLA_HUB")]
    hub: String,
    /// Registration token, only for the first start. Prefer the env variable: arguments show in `ps`.
    #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM file with the CA certificate(s) of the hub; default: the platform's roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The cluster's name on the hub (lower-case RFC 1123 label).
    #[arg(long, env = "FLOTILLA_CLUSTER_NAME")]
    cluster_name: String,
    /// A label reported about the cluster, k=v; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The agent's own namespace (inventory, identity Secret).
    #[arg(long, default_value = flotilla_agent::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Keep the identity in files in this directory [default outside a cluster: ./flotilla-agent-state].
    #[arg(long, conflicts_with = "identity_secret")]
    state_dir: Option<PathBuf>,
    /// Keep the identity in this Secret of the agent's namespace [default in a cluster: flotilla-agent-identity].
    #[arg(long)]
    identity_secret: Option<String>,
    /// Kubeconfig file; default: the in-cluster service account, else the default kubeconfig.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not k=v"))?;
    Ok((k.to_string(), v.to_string()))
}

impl Args {
    /// The configuration these flags describe; reads the --ca file.
    pub fn into_config(self) -> anyhow::Result<AgentConfig> {
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let identity = match (self.state_dir, self.identity_secret) {
            (Some(dir), _) => IdentityStoreConfig::Dir(dir),
            (None, Some(name)) => IdentityStoreConfig::Secret { name },
            (None, None) if in_cluster => IdentityStoreConfig::Secret {
                name: flotilla_agent::DEFAULT_IDENTITY_SECRET.into(),
            },
            (None, None) => IdentityStoreConfig::Dir("./flotilla-agent-state".into()),
        };
        let ca_pem = match &self.ca {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading --ca {}", path.display()))?,
            ),
            None => None,
        };
        if self.cluster_name.is_empty() {
            bail!("--cluster-name is empty: pass the cluster's name on the hub");
        }
        Ok(AgentConfig {
            hub_url: self.hub,
            token: self.token,
            ca_pem,
            cluster_name: self.cluster_name,
            labels: self.labels.into_iter().collect(),
            namespace: self.namespace,
            identity,
            kube: self
                .kubeconfig
                .map_or(KubeSource::Infer, KubeSource::Kubeconfig),
            backoff: BackoffConfig::default(),
        })
    }
}
