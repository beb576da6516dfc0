//! The test harness: a fake hub on 127.0.0.1:0 with a fresh CA, the stateful fake API server,
//! a temporary directory for the identity, and ways to wait on what happens (one deadline,
//! no fixed sleeps).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::agent_message::Kind as Out;
use flotilla_proto::agent::v1::hub_message::Kind as In;
use flotilla_proto::agent::v1::{agent_service_server, registration_server};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

pub(crate) use super::fake_hub::Seen;
use super::fake_hub::{FakeHub, HubState};
use crate::cluster::fake::{FakeApi, Store};
use crate::identity::IdentityStore;
use crate::{AgentConfig, AgentError, BackoffConfig, IdentityStoreConfig, KubeSource};

/// How long any expected event may take.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

pub(crate) struct Harness {
    pub hub: FakeHub,
    pub seen: mpsc::UnboundedReceiver<Seen>,
    pub url: String,
    pub api: FakeApi,
    pub store: Store,
    pub dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

/// A self-signed CA.
pub(crate) fn new_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap()
}

impl Harness {
    pub async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let issuer = new_ca();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                server_cert.pem(),
                server_key.serialize_pem(),
            ))
            .client_ca_root(Certificate::from_pem(issuer.pem()))
            .client_auth_optional(true);
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let hub = FakeHub(Arc::new(HubState {
            seen: seen_tx,
            to_agent: Mutex::default(),
            manifests: Mutex::default(),
            bundle: Mutex::new(issuer.pem()),
            issuer,
            lifetime: Mutex::default(),
            refuse_renewals: Default::default(),
            connects: Default::default(),
            issued_keys: Mutex::default(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let router = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(registration_server::RegistrationServer::new(hub.clone()))
            .add_service(agent_service_server::AgentServiceServer::new(hub.clone()));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server =
            tokio::spawn(async move { router.serve_with_incoming(incoming).await.unwrap() });
        let (api, store) = FakeApi::stateful(0).await;
        Harness {
            hub,
            seen,
            url,
            api,
            store,
            dir: tempfile::tempdir().unwrap(),
            _server: server,
        }
    }

    /// The CA certificate of the fake hub.
    pub fn ca_pem(&self) -> String {
        self.hub.0.issuer.pem()
    }

    /// Certificates issued from now on live this long.
    pub fn issue_for(&self, lifetime: Duration) {
        *self.hub.0.lifetime.lock().unwrap() = Some(lifetime);
    }

    /// How many streams the hub accepted.
    pub fn connects(&self) -> usize {
        self.hub.0.connects.load(Ordering::SeqCst)
    }

    pub async fn config(&self, token: Option<&str>) -> AgentConfig {
        let kubeconfig = self.dir.path().join("kube");
        std::fs::create_dir_all(&kubeconfig).unwrap();
        drop(self.api.cluster(&kubeconfig).await); // writes kubeconfig/kubeconfig
        AgentConfig {
            hub_url: Some(self.url.clone()),
            token: token.map(str::to_owned),
            ca_pem: Some(self.ca_pem()),
            cluster_name: Some("edge-1".into()),
            labels: BTreeMap::from([("env".into(), "test".into())]),
            namespace: "flotilla-system".into(),
            identity: IdentityStoreConfig::Dir(self.dir.path().join("state")),
            bootstrap_secret: None,
            kube: KubeSource::Kubeconfig(kubeconfig.join("kubeconfig")),
            backoff: BackoffConfig {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
            metrics_addr: None,
        }
    }

    /// The identity store the agents of [`Harness::config`] use.
    pub fn identity_store(&self) -> IdentityStore {
        IdentityStore::Dir(self.dir.path().join("state"))
    }

    /// The next thing the hub sees that `pick` accepts; others are dropped.
    pub async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(Seen) -> Option<T>) -> T {
        let wait = async {
            while let Some(s) = self.seen.recv().await {
                if let Some(t) = pick(s) {
                    return t;
                }
            }
            panic!("the hub closed");
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    pub async fn send(&self, kind: In) {
        let tx = self
            .hub
            .0
            .to_agent
            .lock()
            .unwrap()
            .clone()
            .expect("an agent stream");
        tx.send(Ok(pb::HubMessage { kind: Some(kind) }))
            .await
            .unwrap();
    }

    pub fn offer(&self, manifest: serde_json::Value) -> pb::ManifestRef {
        let json = manifest.to_string().into_bytes();
        let hash = hex::encode(Sha256::digest(&json));
        self.hub
            .0
            .manifests
            .lock()
            .unwrap()
            .insert(hash.clone(), json);
        pb::ManifestRef {
            hash,
            source: format!(
                "app/{}.yaml#0",
                manifest["metadata"]["name"].as_str().unwrap()
            ),
        }
    }

    /// Waits until the fake cluster satisfies `check`.
    pub async fn wait_cluster(
        &self,
        what: &str,
        check: impl Fn(&BTreeMap<String, serde_json::Value>) -> bool,
    ) {
        eventually(what, || async { check(&self.store.lock().unwrap()) }).await
    }

    /// Starts the agent (with `token`, if any) against this harness.
    pub async fn spawn_agent(&self, token: Option<&str>) -> RunningAgent {
        self.spawn(self.config(token).await)
    }

    /// Starts the agent with `config`.
    pub fn spawn(&self, config: AgentConfig) -> RunningAgent {
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::run(config, stop.clone()));
        RunningAgent { stop, task }
    }
}

/// Polls `check` until it holds, within [`DEADLINE`].
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let wait = async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// An agent spawned by [`Harness::spawn`].
pub(crate) struct RunningAgent {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    /// Cancels the agent and requires it to end cleanly within the deadline.
    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

// Pickers for [`Harness::expect`]: each accepts one kind of event.

pub(crate) fn registered(s: Seen) -> Option<String> {
    registration(s).map(|(name, _)| name)
}

/// A registration's name and public key.
pub(crate) fn registration(s: Seen) -> Option<(String, Vec<u8>)> {
    match s {
        Seen::Registered { name, public_key } => Some((name, public_key)),
        _ => None,
    }
}

pub(crate) fn fetch_hashes(s: Seen) -> Option<Vec<String>> {
    match s {
        Seen::Fetch(f) => Some(f),
        _ => None,
    }
}

pub(crate) fn hello(s: Seen) -> Option<pb::Hello> {
    match s {
        Seen::Message(Out::Hello(h)) => Some(h),
        _ => None,
    }
}

pub(crate) fn pong_nonce(s: Seen) -> Option<u64> {
    match s {
        Seen::Message(Out::Pong(p)) => Some(p.nonce),
        _ => None,
    }
}

pub(crate) fn acked(s: Seen) -> Option<pb::Ack> {
    match s {
        Seen::Message(Out::Ack(a)) => Some(a),
        _ => None,
    }
}

/// The public key of a certificate the hub issued on renewal.
pub(crate) fn renewed(s: Seen) -> Option<Vec<u8>> {
    match s {
        Seen::Renewed { public_key } => Some(public_key),
        _ => None,
    }
}
