//! The whole agent ([`crate::run`]) against a fake hub over real mTLS and the fake API server:
//! registration, `Hello`, `Ping`/`Pong`, deploy → fetch → `Ack` → status, resends, removal,
//! restart without a token, and a refused token. The real hub is exercised by the e2e tests.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::agent_message::Kind as Out;
use flotilla_proto::agent::v1::hub_message::Kind as In;
use flotilla_proto::agent::v1::{agent_service_server, registration_server};
use futures::Stream;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::fake::{FakeApi, Store};
use crate::{AgentConfig, AgentError, BackoffConfig, IdentityStoreConfig, KubeSource};

/// How long any expected event may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// What the fake hub saw.
#[derive(Debug)]
enum Seen {
    Registered(String),
    Message(Out),
    Fetch(Vec<String>),
}

struct HubState {
    seen: mpsc::UnboundedSender<Seen>,
    to_agent: Mutex<Option<mpsc::Sender<Result<pb::HubMessage, Status>>>>,
    manifests: Mutex<HashMap<String, Vec<u8>>>,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

#[derive(Clone)]
struct FakeHub(Arc<HubState>);

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl registration_server::Registration for FakeHub {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let req = req.into_inner();
        if req.token != "good" {
            return Err(Status::unauthenticated(
                "registration token refused: unknown token",
            ));
        }
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(&req.csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = csr
            .signed_by(&self.0.issuer)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.0
            .seen
            .send(Seen::Registered(req.cluster_name.clone()))
            .unwrap();
        Ok(Response::new(pb::RegisterResponse {
            cluster_id: "c-1".into(),
            certificate_pem: cert.pem(),
            ca_bundle_pem: self.0.issuer.pem(),
            cluster_name: req.cluster_name,
        }))
    }
}

#[tonic::async_trait]
impl agent_service_server::AgentService for FakeHub {
    type ConnectStream = Boxed<pb::HubMessage>;
    type FetchManifestsStream = Boxed<pb::Manifest>;

    async fn connect(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        if req.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::unauthenticated("a client certificate is required"));
        }
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        *self.0.to_agent.lock().unwrap() = Some(tx);
        let seen = self.0.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let _ = seen.send(Seen::Message(m.kind.unwrap()));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_manifests(
        &self,
        req: Request<pb::FetchManifestsRequest>,
    ) -> Result<Response<Self::FetchManifestsStream>, Status> {
        let hashes = req.into_inner().hashes;
        self.0.seen.send(Seen::Fetch(hashes.clone())).unwrap();
        let manifests = self.0.manifests.lock().unwrap();
        let out: Vec<_> = hashes
            .into_iter()
            .filter_map(|h| {
                manifests.get(&h).map(|json| {
                    Ok(pb::Manifest {
                        hash: h,
                        json: json.clone(),
                    })
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
    }
}

struct Harness {
    hub: FakeHub,
    seen: mpsc::UnboundedReceiver<Seen>,
    url: String,
    api: FakeApi,
    store: Store,
    dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
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
            issuer,
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

    async fn config(&self, token: Option<&str>) -> AgentConfig {
        let kubeconfig = self.dir.path().join("kube");
        std::fs::create_dir_all(&kubeconfig).unwrap();
        drop(self.api.cluster(&kubeconfig).await); // writes kubeconfig/kubeconfig
        AgentConfig {
            hub_url: self.url.clone(),
            token: token.map(str::to_owned),
            ca_pem: Some(self.hub.0.issuer.pem()),
            cluster_name: "edge-1".into(),
            labels: BTreeMap::from([("env".into(), "test".into())]),
            namespace: "flotilla-system".into(),
            identity: IdentityStoreConfig::Dir(self.dir.path().join("state")),
            kube: KubeSource::Kubeconfig(kubeconfig.join("kubeconfig")),
            backoff: BackoffConfig {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
        }
    }

    /// The next thing the hub sees that `pick` accepts; others are dropped.
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(Seen) -> Option<T>) -> T {
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

    async fn send(&self, kind: In) {
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

    fn offer(&self, manifest: serde_json::Value) -> pb::ManifestRef {
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
    async fn wait_cluster(
        &self,
        what: &str,
        check: impl Fn(&BTreeMap<String, serde_json::Value>) -> bool,
    ) {
        let wait = async {
            while !check(&self.store.lock().unwrap()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    /// Starts the agent (with `token`, if any) against this harness.
    async fn spawn_agent(&self, token: Option<&str>) -> RunningAgent {
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::run(self.config(token).await, stop.clone()));
        RunningAgent { stop, task }
    }
}

/// An agent spawned by [`Harness::spawn_agent`].
struct RunningAgent {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    /// Cancels the agent and requires it to end cleanly within the deadline.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

// Pickers for [`Harness::expect`]: each accepts one kind of event.

fn registered(s: Seen) -> Option<String> {
    match s {
        Seen::Registered(n) => Some(n),
        _ => None,
    }
}

fn fetch_hashes(s: Seen) -> Option<Vec<String>> {
    match s {
        Seen::Fetch(f) => Some(f),
        _ => None,
    }
}

fn hello(s: Seen) -> Option<pb::Hello> {
    match s {
        Seen::Message(Out::Hello(h)) => Some(h),
        _ => None,
    }
}

fn pong_nonce(s: Seen) -> Option<u64> {
    match s {
        Seen::Message(Out::Pong(p)) => Some(p.nonce),
        _ => None,
    }
}

fn acked(s: Seen) -> Option<pb::Ack> {
    match s {
        Seen::Message(Out::Ack(a)) => Some(a),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_deploys_reports_removes_and_restarts_without_a_token() {
    let mut h = Harness::start().await;
    let agent = h.spawn_agent(Some("good")).await;

    assert_eq!(h.expect("registration", registered).await, "edge-1");
    let first = h.expect("hello", hello).await;
    assert!(first.held.is_empty());
    assert_eq!(first.agent_version, env!("CARGO_PKG_VERSION"));

    h.send(In::Ping(pb::Ping { nonce: 7 })).await;
    let pong = h.expect("pong", pong_nonce).await;
    assert_eq!(pong, 7);

    let cm = h.offer(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}}));
    let web = h.offer(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}}));
    let deploy = pb::BundleDeployment {
        deployment_id: "apps/app".into(),
        bundle: "apps/app".into(),
        revision: "r1".into(),
        content_hash: "h1".into(),
        default_namespace: "apps".into(),
        manifests: vec![cm.clone(), web.clone()],
    };
    h.send(In::Deploy(deploy.clone())).await;
    let mut fetched = h.expect("fetch", fetch_hashes).await;
    fetched.sort();
    let mut wanted = vec![cm.hash.clone(), web.hash.clone()];
    wanted.sort();
    assert_eq!(fetched, wanted);
    let ack = h.expect("ack", acked).await;
    assert_eq!(
        (ack.deployment_id.as_str(), ack.content_hash.as_str()),
        ("apps/app", "h1")
    );
    let ready = h
        .expect("ready", |s| match s {
            Seen::Message(Out::Status(r)) => r
                .deployments
                .into_iter()
                .find(|d| d.state() == pb::DeploymentState::Ready),
            _ => None,
        })
        .await;
    assert_eq!((ready.revision.as_str(), ready.objects.len()), ("r1", 2));
    assert!(
        ready
            .objects
            .iter()
            .all(|o| o.state() == pb::ObjectState::Applied && o.namespace == "apps")
    );
    assert!(
        h.store
            .lock()
            .unwrap()
            .contains_key("/apis/apps/v1/namespaces/apps/deployments/web")
    );

    // The same content again is acknowledged without fetching anything.
    h.send(In::Deploy(deploy)).await;
    let again = h
        .expect("second ack", |s| match s {
            Seen::Fetch(_) => panic!("nothing should be fetched for a resend"),
            s => acked(s),
        })
        .await;
    assert_eq!(again.content_hash, "h1");

    agent.stop().await;

    // A restart needs no token: the identity is stored, and Hello tells what is held.
    let agent = h.spawn_agent(None).await;
    let second = h
        .expect("hello after restart", |s| match s {
            Seen::Registered(_) => panic!("a restart must not register again"),
            s => hello(s),
        })
        .await;
    assert_eq!(second.held.len(), 1);
    assert_eq!(
        (
            second.held[0].deployment_id.as_str(),
            second.held[0].content_hash.as_str()
        ),
        ("apps/app", "h1")
    );

    h.send(In::Remove(pb::Removal {
        deployment_id: "apps/app".into(),
    }))
    .await;
    h.wait_cluster("removal", |objects| {
        !objects.keys().any(|k| {
            k.contains("/deployments/web")
                || k.contains("/configmaps/settings")
                || k.contains("flotilla-inv-")
        })
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_agent_with_advice_and_no_token_is_asked_for() {
    let h = Harness::start().await;
    let err = tokio::time::timeout(
        DEADLINE,
        crate::run(h.config(Some("bad")).await, CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, AgentError::TokenRefused(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("flotilla token create") && !text.contains("bad"),
        "{text}"
    );

    let err = crate::run(h.config(None).await, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::NoToken), "{err}");
}
