//! A Kubernetes API server emulator over HTTPS, for end-to-end tests only (never shipped): the
//! real `flotilla-agent` talks to it through kube-rs exactly as to a kube-apiserver. It speaks the
//! real REST API with real semantics (discovery, CRDs that become served once Established,
//! server-side apply with managedFields and conflicts, defaulting, validation, finalizers,
//! namespace lifecycle, Status errors, watches) and never special-cases any client.
//!
//! Code map: `server`/`http`/`resources` take requests; `read`, `watch`, `write` (+ `ssa`,
//! `apply`, `managed`, `fieldset`, `schema`, `patch`) and `lifecycle` implement the verbs;
//! `defaults`, `quantity`, `validate`, `workloads`, `custom` are admission; `store` is the etcd;
//! `catalog`/`discovery` the served types; `status` the error wire format; `controllers` the
//! workload controllers of a healthy cluster (rollouts done, Jobs complete, claims Bound,
//! load balancers addressed), which tests may pause to drive status by hand.

mod apply;
mod catalog;
mod controllers;
mod core;
mod custom;
mod defaults;
mod discovery;
mod fieldset;
mod http;
mod lifecycle;
mod managed;
mod patch;
mod prepare;
mod quantity;
mod read;
mod resources;
mod schema;
mod selector;
mod server;
mod ssa;
mod status;
mod store;
mod tls;
mod validate;
mod watch;
mod workloads;
mod write;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument as _, info, warn};

use self::catalog::ResourceType;
use self::core::Core;
pub use self::core::RequestRecord;
use self::read::Representation;
use self::status::ApiError;
use self::store::{State, now_rfc3339};
use self::write::WriteCtx;

/// How long [`KubeEmulator::shutdown`] waits for connections and controllers to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Failures of the emulator's own API.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("generating certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("configuring TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("binding the listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("{kind} is not served at {api_version}")]
    UnknownKind { api_version: String, kind: String },
    #[error("the API server refused: {code} {message}")]
    Rejected { code: u16, message: String },
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("building the client: {0}")]
    Client(#[from] kube::Error),
}

impl From<ApiError> for EmulatorError {
    fn from(e: ApiError) -> Self {
        let message = e
            .to_status()
            .and_then(|s| s["message"].as_str().map(String::from));
        EmulatorError::Rejected {
            code: e.code(),
            message: message.unwrap_or_else(|| "404 page not found".into()),
        }
    }
}

/// A running emulator. Clones share it; it stops on [`KubeEmulator::shutdown`] or when the last
/// clone is dropped.
#[derive(Clone)]
pub struct KubeEmulator {
    inner: Arc<Handle>,
}

struct Handle {
    core: Arc<Core>,
    addr: SocketAddr,
    ca_pem: String,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.core.cancel.cancel();
    }
}

/// The strings of a JSON array (other items skipped); empty when `v` is not an array.
fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

impl KubeEmulator {
    /// Binds 127.0.0.1:0 and serves HTTPS with a fresh CA; `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease` exist from the start.
    pub async fn start() -> Result<Self, EmulatorError> {
        let pki = tls::generate()?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut state = State::new(pki.ca_pem.clone());
        bootstrap(&mut state)?;
        let core = Arc::new(Core::new(state, token));
        let acceptor = TlsAcceptor::from(pki.server_config);
        let serve = server::serve(listener, acceptor, core.clone(), addr.to_string().into());
        core.tasks
            .spawn(serve.instrument(tracing::info_span!("kube_emulator", %addr)));
        info!(%addr, "kube emulator started");
        Ok(KubeEmulator {
            inner: Arc::new(Handle {
                core,
                addr,
                ca_pem: pki.ca_pem,
            }),
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.inner.addr)
    }

    /// The CA certificate (PEM) the server certificate is signed by.
    pub fn ca_pem(&self) -> &str {
        &self.inner.ca_pem
    }

    /// The bearer token requests must carry.
    pub fn token(&self) -> &str {
        &self.inner.core.token
    }

    /// A kubeconfig (CA data, bearer token, one current context with namespace `default`).
    pub fn kubeconfig(&self) -> String {
        tls::kubeconfig(&self.url(), self.ca_pem(), self.token())
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// A kube-rs client configured from [`KubeEmulator::kubeconfig`].
    pub async fn client(&self) -> Result<kube::Client, EmulatorError> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig())?;
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Runs `f` on the store and starts the background work its writes asked for.
    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let core = &self.inner.core;
        let mut state = core.lock();
        let out = f(&mut state);
        let effects = std::mem::take(&mut state.effects);
        drop(state);
        core.spawn_effects(effects);
        out
    }

    fn resolve(
        state: &State,
        api_version: &str,
        kind: &str,
    ) -> Result<Arc<ResourceType>, EmulatorError> {
        let (group, version) = split_api_version(api_version);
        state
            .catalog
            .by_kind(group, version, kind)
            .ok_or_else(|| EmulatorError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })
    }

    /// One object as a GET would return it, without HTTP.
    pub fn get_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.inner.core.lock();
        let rt = Self::resolve(&state, api_version, kind).ok()?;
        read::get(
            &state,
            &rt,
            namespace.unwrap_or_default(),
            name,
            Representation::Full,
        )
        .ok()
    }

    /// Objects of a kind (in one namespace, or all), with `apiVersion` and `kind` set.
    pub fn list_objects(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let state = self.inner.core.lock();
        let Ok(rt) = Self::resolve(&state, api_version, kind) else {
            return Vec::new();
        };
        state
            .list(&rt.key(), namespace)
            .map(|o| read::serve(&rt, o, Representation::Full))
            .collect()
    }

    /// Replaces the status subresource as a controller would (manager `kube-controller-manager`).
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, EmulatorError> {
        self.with_state(|state| {
            let rt = Self::resolve(state, api_version, kind)?;
            let now = now_rfc3339();
            Ok(write::write_status(
                state,
                rt,
                namespace,
                name,
                status,
                "kube-controller-manager",
                &now,
            )?)
        })
    }

    /// Stops (or restarts) the workload controllers: while paused, Deployments, StatefulSets,
    /// DaemonSets, Jobs, PersistentVolumeClaims and LoadBalancer Services keep whatever status
    /// [`KubeEmulator::set_status`] gives them.
    pub fn pause_workload_controllers(&self, paused: bool) {
        self.inner.core.lock().workload_controllers_paused = paused;
    }

    /// Updates an object as `manager` would with a read-modify-PUT (an `Update` in managedFields),
    /// e.g. a hand edit by `kubectl-edit`. `edit` gets the live object.
    pub fn edit_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        manager: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Value, EmulatorError> {
        self.with_state(|state| {
            let rt = Self::resolve(state, api_version, kind)?;
            let mut obj = read::get(
                state,
                &rt,
                namespace.unwrap_or_default(),
                name,
                Representation::Full,
            )?;
            edit(&mut obj);
            let ctx = direct_ctx(rt, namespace, manager);
            Ok(write::update(state, &ctx, name, obj)?.object)
        })
    }

    /// Creates an object as `manager` would with a POST.
    pub fn create_object(&self, manager: &str, object: Value) -> Result<Value, EmulatorError> {
        self.with_state(|state| {
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let rt = Self::resolve(
                state,
                api_version,
                object["kind"].as_str().unwrap_or_default(),
            )?;
            let ns = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .filter(|_| rt.namespaced);
            let ctx = direct_ctx(rt, ns, manager);
            Ok(write::create(state, &ctx, object)?)
        })
    }

    /// Deletes an object as a DELETE would (finalizers are honoured).
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), EmulatorError> {
        self.with_state(|state| {
            let rt = Self::resolve(state, api_version, kind)?;
            lifecycle::delete(
                state,
                &rt,
                namespace.unwrap_or_default(),
                name,
                &lifecycle::DeleteOpts::default(),
            )?;
            Ok(())
        })
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> String {
        self.inner.core.lock().resource_version().to_string()
    }

    /// How many HTTP requests have been answered (or are being answered).
    pub fn request_count(&self) -> u64 {
        self.inner.core.request_count()
    }

    /// Every answered request, oldest first (the last 20 000).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.core.requests()
    }

    /// Answers the next `count` resource requests with `status` instead of serving them: 429 as
    /// API Priority and Fairness does (plain text, `Retry-After: 1`), other codes as a Status.
    pub fn inject_failures(&self, status: u16, count: usize) {
        self.inner.core.inject_failures(status, count);
    }

    /// Drops all watch history, as an etcd compaction would: watches resuming from an earlier
    /// resourceVersion get 410 Expired.
    pub fn compact_watch_history(&self) {
        self.inner.core.lock().compact();
    }

    /// Stops serving, ends watches and background work, and waits for every task to finish.
    pub async fn shutdown(self) {
        let core = self.inner.core.clone();
        core.cancel.cancel();
        core.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, core.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                remaining = core.tasks.len(),
                "kube emulator tasks still running after shutdown grace"
            );
        }
        info!(addr = %self.inner.addr, "kube emulator stopped");
    }
}

fn direct_ctx(rt: Arc<ResourceType>, namespace: Option<&str>, manager: &str) -> WriteCtx {
    let namespace = namespace.filter(|_| rt.namespaced).map(String::from);
    WriteCtx {
        rt,
        namespace,
        status: false,
        manager: manager.to_string(),
        dry_run: false,
        now: now_rfc3339(),
    }
}

/// What every cluster has before anyone talks to it.
fn bootstrap(state: &mut State) -> Result<(), EmulatorError> {
    let ns_type = state
        .catalog
        .by_kind("", "v1", "Namespace")
        .expect("built-in Namespace");
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let ctx = direct_ctx(ns_type.clone(), None, "kube-apiserver");
        write::create(state, &ctx, json!({"metadata": {"name": ns}}))?;
    }
    let svc_type = state
        .catalog
        .by_kind("", "v1", "Service")
        .expect("built-in Service");
    let service = json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
    });
    write::create(
        state,
        &direct_ctx(svc_type, Some("default"), "kube-apiserver"),
        service,
    )?;
    Ok(())
}
