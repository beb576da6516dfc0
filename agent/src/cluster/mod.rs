//! The agent's view of its Kubernetes cluster.
//!
//! *Boundary:* this module is the only kube-rs user. Above it, objects are `serde_json::Value`s
//! and outcomes are [`ApiError`]s; nothing outside knows about clients, discovery or URLs.
//!
//! - `request`: every API call, error decoding and retries (`Retry-After`);
//! - `discovery`: kind → resource and scope, cached, never guessed;
//! - `apply`: server-side apply, prune deletes, namespaces, waiting for CRDs;
//! - `inventory`: what each deployment owns, one ConfigMap per deployment;
//! - `secret_store`: the identity Secret, and the bootstrap Secret's token removal;
//! - `watch`: one watch per resource type the agent owns, as plain JSON observations.

mod apply;
mod discovery;
mod inventory;
mod request;
mod secret_store;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

pub(crate) use discovery::Resolved;
pub(crate) use request::{ApiError, Retry};
pub(crate) use watch::{Observation, OwnedWatches};

use crate::config::KubeSource;
use crate::error::AgentError;

/// No single API call may hang longer than this; watches ask the server to end them sooner.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A handle on the cluster: client, discovery cache and the agent's namespace. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Cluster {
    client: Client,
    discovery: Arc<discovery::Discovery>,
    /// The agent's own namespace (inventory, identity Secret).
    namespace: String,
    own_namespace_ready: Arc<tokio::sync::OnceCell<()>>,
}

impl Cluster {
    /// Builds a client from a kubeconfig file, or the in-cluster / default configuration.
    /// Nothing is sent to the API server yet.
    pub async fn connect(source: &KubeSource, namespace: &str) -> Result<Self, AgentError> {
        let mut config = match source {
            KubeSource::Kubeconfig(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                    AgentError::KubeConfig(format!("reading {}: {e}", path.display()))
                })?;
                Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| AgentError::KubeConfig(format!("using {}: {e}", path.display())))?
            }
            KubeSource::Infer => Config::infer()
                .await
                .map_err(|e| AgentError::KubeConfig(e.to_string()))?,
        };
        config.read_timeout = Some(READ_TIMEOUT);
        let client = Client::try_from(config).map_err(|e| AgentError::KubeConfig(e.to_string()))?;
        Ok(Self {
            client,
            discovery: Arc::default(),
            namespace: namespace.to_string(),
            own_namespace_ready: Arc::default(),
        })
    }

    /// The agent's own namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The server's `gitVersion` from `/version`.
    pub async fn server_version(&self) -> Result<String, ApiError> {
        let info = self
            .call_json(Retry::Transient, || {
                http::Request::get("/version")
                    .body(Vec::new())
                    .map_err(kube::core::request::Error::BuildRequest)
            })
            .await?;
        Ok(info
            .get("gitVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// The `metadata.uid` of namespace `name`.
    pub async fn namespace_uid(&self, name: &str) -> Result<String, ApiError> {
        let request = kube::core::Request::new("/api/v1/namespaces");
        let namespace = self
            .call_json(Retry::Transient, || {
                request.get(name, &kube::api::GetParams::default())
            })
            .await?;
        namespace
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .filter(|uid| !uid.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::local(format!("the namespace {name} has no uid")))
    }

    /// Creates the agent's namespace if needed, once per process.
    async fn ensure_own_namespace(&self) -> Result<(), ApiError> {
        self.own_namespace_ready
            .get_or_try_init(|| self.ensure_namespace(&self.namespace))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;
