//! The `flotilla-agent` flags, and how they become an [`AgentConfig`] (raw arguments first,
//! then a validated, typed configuration). In the library, so that a test can parse exactly
//! the arguments and environment of the Deployment that `flotilla agent manifest` prints.
//!
//! Every environment variable the agent reads is a clap `env =` attribute here; nothing else
//! reads the process environment. [`Args::try_parse_with_env`] takes the environment as a
//! function, for tests.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::config::{
    AgentConfig, BackoffConfig, DEFAULT_IDENTITY_SECRET, DEFAULT_NAMESPACE, DEFAULT_STATE_DIR,
    IdentityStoreConfig, KubeSource,
};
use crate::error::AgentError;

/// Command-line flags of `flotilla-agent`.
#[derive(Parser)]
#[command(
    name = "flotilla-agent",
    version,
    about = "Flotilla agent: applies the hub's bundles to this cluster"
)]
pub struct Args {
    /// The hub's address, https://host:port [default: the bootstrap Secret's hubURL].
    #[arg(long = "hub", env = "FLOTILLA_HUB")]
    pub hub: Option<String>,
    /// Registration token, only for the first start. Prefer the env variable or the bootstrap
    /// Secret: arguments show in `ps`.
    #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file with the CA certificate(s) of the hub [default: the bootstrap Secret's
    /// caBundle, else the platform's roots].
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// A Secret in the agent's namespace with the keys hubURL, caBundle and token, as the
    /// install manifest creates it; flags win over its values. The agent deletes its token
    /// once it has an identity.
    #[arg(long, env = "FLOTILLA_BOOTSTRAP_SECRET")]
    pub bootstrap_secret: Option<String>,
    /// The cluster's name on the hub (lower-case RFC 1123 label) [default: c- and 12 hex
    /// digits of the kube-system namespace's UID].
    #[arg(long, env = "FLOTILLA_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// A label reported about the cluster, k=v; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The agent's own namespace (inventory, identity and bootstrap Secrets).
    #[arg(long, env = "FLOTILLA_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Keep the identity in files in this directory [default outside a cluster: ./flotilla-agent-state].
    #[arg(long, conflicts_with = "identity_secret")]
    pub state_dir: Option<PathBuf>,
    /// Keep the identity in this Secret of the agent's namespace [default in a cluster: flotilla-agent-identity].
    #[arg(long)]
    pub identity_secret: Option<String>,
    /// Kubeconfig file; default: the in-cluster service account, else the default kubeconfig.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`GET /metrics`), e.g. 0.0.0.0:9090
    /// [default: off].
    #[arg(long, env = "FLOTILLA_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Set by Kubernetes in every pod: tells that the agent runs in a cluster.
    #[arg(long, env = "KUBERNETES_SERVICE_HOST", hide = true)]
    pub kubernetes_service_host: Option<String>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not k=v"))?;
    Ok((k.to_string(), v.to_string()))
}

impl Args {
    /// Parses `args` (the first is the program name) with `env` in place of the process
    /// environment; flags win over it, as over the real one.
    pub fn try_parse_with_env<I, T>(
        args: I,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = Self::command().mut_args(|arg| {
            let Some(var) = arg.get_env().map(|v| v.to_string_lossy().into_owned()) else {
                return arg;
            };
            let arg = arg.env(None::<&str>);
            // clap ignores empty variables too.
            match env(&var).filter(|v| !v.is_empty()) {
                Some(value) => arg.default_value(value),
                None => arg,
            }
        });
        let matches = command.try_get_matches_from(args)?;
        Self::from_arg_matches(&matches)
    }

    /// The configuration these flags describe; reads the --ca file.
    pub fn into_config(self) -> Result<AgentConfig, AgentError> {
        let in_cluster = self.kubernetes_service_host.is_some();
        let identity = match (self.state_dir, self.identity_secret) {
            (Some(dir), _) => IdentityStoreConfig::Dir(dir),
            (None, Some(name)) => IdentityStoreConfig::Secret { name },
            (None, None) if in_cluster => IdentityStoreConfig::Secret {
                name: DEFAULT_IDENTITY_SECRET.into(),
            },
            (None, None) => IdentityStoreConfig::Dir(DEFAULT_STATE_DIR.into()),
        };
        let ca_pem = match &self.ca {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                AgentError::Config(format!(
                    "reading --ca {}: {e}; pass a readable PEM file with the hub's CA certificate",
                    path.display()
                ))
            })?),
            None => None,
        };
        if self.cluster_name.as_deref() == Some("") {
            return Err(AgentError::Config(
                "--cluster-name is empty: pass the cluster's name on the hub, or leave it out to derive one".into(),
            ));
        }
        Ok(AgentConfig {
            hub_url: self.hub.filter(|h| !h.is_empty()),
            token: self.token.filter(|t| !t.is_empty()),
            ca_pem,
            cluster_name: self.cluster_name,
            labels: self.labels.into_iter().collect(),
            namespace: self.namespace,
            identity,
            bootstrap_secret: self.bootstrap_secret,
            kube: self
                .kubeconfig
                .map_or(KubeSource::Infer, KubeSource::Kubeconfig),
            backoff: BackoffConfig::default(),
            metrics_addr: self.metrics_addr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<AgentConfig, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let args = std::iter::once("flotilla-agent").chain(args.iter().copied());
        Args::try_parse_with_env(args, lookup)
            .map_err(|e| e.to_string())?
            .into_config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_install_manifests_args_and_env_make_an_in_cluster_config() {
        // The container of deploy/agent/deployment.yaml, as a pod runs it.
        let c = parse(
            &[
                "--bootstrap-secret=flotilla-agent-bootstrap",
                "--identity-secret=flotilla-agent-identity",
            ],
            &[
                ("FLOTILLA_NAMESPACE", "fleet-agent"),
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.bootstrap_secret.as_deref(),
            Some("flotilla-agent-bootstrap")
        );
        assert_eq!(c.namespace, "fleet-agent");
        assert_eq!((c.hub_url, c.token, c.cluster_name), (None, None, None));
        assert_eq!(
            c.identity,
            IdentityStoreConfig::Secret {
                name: "flotilla-agent-identity".into()
            }
        );
    }

    #[test]
    fn env_gives_the_bootstrap_secret_and_flags_win_over_env() {
        let env = [
            ("FLOTILLA_BOOTSTRAP_SECRET", "from-env"),
            ("FLOTILLA_HUB", "https://env:1"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ];
        let c = parse(&[], &env).unwrap();
        assert_eq!(c.bootstrap_secret.as_deref(), Some("from-env"));
        assert_eq!(c.hub_url.as_deref(), Some("https://env:1"));
        assert_eq!(
            c.identity,
            IdentityStoreConfig::Secret {
                name: DEFAULT_IDENTITY_SECRET.into()
            }
        );
        let c = parse(
            &["--bootstrap-secret", "flag", "--hub", "https://f:2"],
            &env,
        )
        .unwrap();
        assert_eq!(c.bootstrap_secret.as_deref(), Some("flag"));
        assert_eq!(c.hub_url.as_deref(), Some("https://f:2"));
    }

    #[test]
    fn outside_a_cluster_the_defaults_need_no_env() {
        let c = parse(&["--hub", "https://h:1", "--label", "env=prod"], &[]).unwrap();
        assert_eq!(
            c.identity,
            IdentityStoreConfig::Dir(DEFAULT_STATE_DIR.into())
        );
        assert_eq!(c.namespace, DEFAULT_NAMESPACE);
        assert_eq!(c.labels.get("env").map(String::as_str), Some("prod"));
        let err = parse(&["--cluster-name", ""], &[]).unwrap_err();
        assert!(err.contains("--cluster-name is empty"), "{err}");
        let err = parse(&["--ca", "/nonexistent/ca.pem"], &[]).unwrap_err();
        assert!(
            err.contains("reading --ca") && err.contains("pass"),
            "{err}"
        );
        assert!(parse(&["--label", "novalue"], &[]).is_err());
        assert_eq!(c.metrics_addr, None, "metrics are off unless asked for");
        let c = parse(&["--metrics-addr", "0.0.0.0:9090"], &[]).unwrap();
        assert_eq!(c.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));
        assert!(parse(&["--metrics-addr", "nine"], &[]).is_err());
    }
}
