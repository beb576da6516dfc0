//! The agent's side of the hub connection: the only code that sees the wire types.
//!
//! One long-lived `Connect` stream at a time, over mTLS. Each session says `Hello` (agent and
//! Kubernetes versions, the deployments held: per the inventories and the reconciler's current
//! targets, see [`held`]), then answers `Ping`s,
//! fetches the manifests of new deployments, hands them to the reconciler, `Ack`s them, and
//! sends status changes in coalesced batches (at most one report per ~100 ms, only when
//! something changed). When a session ends the client reconnects forever with exponential
//! backoff and full jitter; a refused certificate waits the maximum backoff each time.
//!
//! - `convert`: wire ↔ domain types;
//! - `manifests`: the shared manifest cache and `FetchManifests`;
//! - `register`: TLS endpoints and the one-time registration.

mod convert;
mod credentials;
mod manifests;
mod register;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::agent_message::Kind as Out;
use flotilla_proto::agent::v1::agent_service_client::AgentServiceClient;
use flotilla_proto::agent::v1::hub_message::Kind as In;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tracing::{debug, error, info, warn};

pub(crate) use credentials::Credentials;
pub(crate) use manifests::ManifestCache;
pub(crate) use register::obtain_identity;

use crate::backoff::Backoff;
use crate::cluster::{ApiError, Cluster};
use crate::config::BackoffConfig;
use crate::model::{Deployment, Desired, HeldDeployment};
use crate::reconcile::Reconciler;
use crate::status::{StatusBoard, failed_whole};
use manifests::Fetched;

/// Status reports go out at most this often.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A stream that stayed up this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Outgoing messages buffered per stream.
const OUTBOX: usize = 64;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The hub refused this agent's certificate: retrying soon cannot help.
    #[error("{0}")]
    Refused(String),
    /// The agent could not verify the hub's certificate: retrying soon cannot help either.
    #[error("{0}")]
    Untrusted(String),
    #[error("{0}")]
    Hub(String),
    #[error("could not read the inventory from the Kubernetes API (needed for Hello): {0}")]
    Cluster(ApiError),
}

impl SessionError {
    fn from_status(s: tonic::Status) -> Self {
        let text = format!("{}: {}", s.code(), s.message());
        match s.code() {
            Code::Unauthenticated | Code::PermissionDenied => Self::Refused(text),
            _ => Self::classify(text),
        }
    }

    fn from_transport(e: &tonic::transport::Error) -> Self {
        Self::classify(register::describe_transport(e))
    }

    /// Tells certificate problems from others by rustls' wording. With TLS 1.3 a hub that
    /// rejects the client certificate says so in an alert after the handshake, so this also
    /// looks at errors of the first call, not only of the connect.
    fn classify(text: String) -> Self {
        let t = text.to_ascii_lowercase();
        if t.contains("invalid peer certificate") {
            Self::Untrusted(text)
        } else if t.contains("alert") && t.contains("certificate") {
            Self::Refused(text)
        } else {
            Self::Hub(text)
        }
    }
}

/// Work for the dispatcher, in the order the hub sent it.
enum Work {
    Deploy(Deployment),
    Remove(String),
}

/// Everything a session needs; lives for the whole agent.
pub(crate) struct HubClient {
    /// The current certificate and trust; renewed during sessions.
    pub credentials: Arc<Credentials>,
    pub cluster: Cluster,
    pub reconciler: Reconciler,
    pub board: Arc<StatusBoard>,
    pub cache: Arc<ManifestCache>,
    pub backoff: BackoffConfig,
    /// Where the identity is stored, for the message when the hub refuses it.
    pub identity_location: String,
}

impl HubClient {
    /// Keeps a session with the hub open until `shutdown`.
    pub async fn run(&self, shutdown: &CancellationToken) {
        let mut backoff = Backoff::new(self.backoff);
        loop {
            let mut up_since = None;
            let ended = tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = self.session(&mut up_since) => ended,
            };
            if up_since.is_some_and(|t: Instant| t.elapsed() >= STABLE_AFTER) {
                backoff.reset();
            }
            let delay = match ended {
                Ok(()) => {
                    info!("the hub closed the stream");
                    backoff.next_delay()
                }
                Err(SessionError::Refused(why)) => {
                    error!(
                        error = %why,
                        identity = %self.identity_location,
                        "the hub refused this agent's certificate: the cluster may have been deleted on the hub \
                         or its certificate revoked; if it persists, delete the stored identity and register \
                         again with a new token"
                    );
                    backoff.max()
                }
                Err(SessionError::Untrusted(why)) => {
                    error!(
                        error = %why,
                        "could not verify the hub's certificate: check --ca (the hub's CA certificate) and that \
                         the host in the hub URL is a name in the hub's certificate"
                    );
                    backoff.max()
                }
                Err(e) => {
                    warn!(error = %e, "the hub session ended; reconnecting");
                    backoff.next_delay()
                }
            };
            debug!(?delay, "reconnecting after a pause");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn hello(&self) -> Result<pb::AgentMessage, SessionError> {
        // Targets first: until this session dispatches, they only change by a worker that ends
        // after deleting its inventory, so the list below cannot show one the targets missed.
        let targets = self.reconciler.targets();
        let inventories = self
            .cluster
            .list_inventories()
            .await
            .map_err(SessionError::Cluster)?;
        let held: Vec<pb::HeldDeployment> = held(inventories, targets)
            .into_iter()
            .map(convert::held_to_proto)
            .collect();
        let kubernetes_version = self.cluster.server_version().await.unwrap_or_else(|e| {
            warn!(error = %e, "could not read the Kubernetes version");
            String::new()
        });
        let hello = pb::Hello {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            kubernetes_version,
            held,
        };
        Ok(pb::AgentMessage {
            kind: Some(Out::Hello(hello)),
        })
    }

    /// One stream, from `Hello` until it breaks. `up_since` is set once the hub accepted it.
    async fn session(&self, up_since: &mut Option<Instant>) -> Result<(), SessionError> {
        let hello = self.hello().await?;
        let endpoint = self
            .credentials
            .endpoint()
            .map_err(|e| SessionError::Hub(e.to_string()))?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| SessionError::from_transport(&e))?;
        let (out, outbox) = mpsc::channel(OUTBOX);
        out.try_send(hello).expect("a new outbox has room");
        let mut client =
            AgentServiceClient::new(channel.clone()).max_decoding_message_size(64 * 1024 * 1024);
        let mut inbound = client
            .connect(ReceiverStream::new(outbox))
            .await
            .map_err(SessionError::from_status)?
            .into_inner();
        *up_since = Some(Instant::now());
        info!("connected to the hub");
        self.board.mark_all_pending();

        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let dispatcher = self.dispatch_loop(channel, work_rx, out.clone());
        tokio::pin!(dispatcher);
        let mut flush_at: Option<Instant> = None;
        let mut last_flush = Instant::now() - FLUSH_EVERY;
        loop {
            tokio::select! {
                message = inbound.message() => match message.map_err(SessionError::from_status)? {
                    None => return Ok(()),
                    Some(m) => self.receive(m, &out, &work_tx).await?,
                },
                _ = self.board.changed(), if flush_at.is_none() => {
                    flush_at = Some((last_flush + FLUSH_EVERY).max(Instant::now()));
                }
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    flush_at = None;
                    last_flush = Instant::now();
                    self.flush(&out).await?;
                }
                ended = &mut dispatcher => return ended,
                _ = tokio::time::sleep_until(self.credentials.renew_at()) => {
                    let csr_pem = self.credentials.start_renewal().map_err(|e| SessionError::Hub(e.to_string()))?;
                    info!("renewing the client certificate");
                    send(&out, Out::Renew(pb::RenewCertificate { csr_pem })).await?;
                }
            }
        }
    }

    async fn receive(
        &self,
        m: pb::HubMessage,
        out: &mpsc::Sender<pb::AgentMessage>,
        work: &mpsc::UnboundedSender<Work>,
    ) -> Result<(), SessionError> {
        match m.kind {
            Some(In::Ping(p)) => send(out, Out::Pong(pb::Pong { nonce: p.nonce })).await?,
            Some(In::Deploy(d)) => drop(work.send(Work::Deploy(convert::deployment_from_proto(d)))),
            Some(In::Remove(r)) => drop(work.send(Work::Remove(r.deployment_id))),
            // Held deployments the hub did not answer about are unchanged; it sends a Removal
            // for the ones it no longer wants, so nothing is pruned on this signal alone.
            Some(In::SyncComplete(_)) => info!("in sync with the hub"),
            Some(In::Certificate(c)) => {
                self.credentials
                    .issued(c.certificate_pem, c.ca_bundle_pem, c.error)
                    .await
            }
            Some(In::Trust(t)) => {
                self.credentials.trust(t.ca_bundle_pem).await;
                if t.renew {
                    info!("the hub signs with a new CA; renewing now");
                    self.credentials.renew_now();
                }
            }
            None => debug!("ignoring an empty or unknown message from the hub"),
        }
        Ok(())
    }

    async fn flush(&self, out: &mpsc::Sender<pb::AgentMessage>) -> Result<(), SessionError> {
        let pending = self.board.take_pending();
        if pending.is_empty() {
            return Ok(());
        }
        debug!(deployments = pending.len(), "sending a status report");
        let report = pb::StatusReport {
            deployments: pending.into_iter().map(convert::status_to_proto).collect(),
        };
        send(out, Out::Status(report)).await
    }

    /// Takes work in batches so that one `FetchManifests` serves many deployments.
    async fn dispatch_loop(
        &self,
        channel: Channel,
        mut work: mpsc::UnboundedReceiver<Work>,
        out: mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        let mut channel = channel;
        let mut generation = self.credentials.generation();
        while let Some(first) = work.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = work.try_recv() {
                batch.push(more);
            }
            // After renewals the stream's connection carries a certificate the hub no longer
            // accepts for new calls: fetch over a connection with the current one.
            if self.credentials.generation() != generation {
                generation = self.credentials.generation();
                let endpoint = self
                    .credentials
                    .endpoint()
                    .map_err(|e| SessionError::Hub(e.to_string()))?;
                channel = endpoint
                    .connect()
                    .await
                    .map_err(|e| SessionError::from_transport(&e))?;
            }
            self.dispatch(&channel, batch, &out).await?;
        }
        Ok(())
    }

    async fn dispatch(
        &self,
        channel: &Channel,
        batch: Vec<Work>,
        out: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        let batch = latest_per_deployment(batch);
        // Hold what the cache has for the whole batch, so nothing is dropped under our feet.
        let mut have: HashMap<String, Arc<Value>> = HashMap::new();
        let mut missing = BTreeSet::new();
        for work in &batch {
            let Work::Deploy(d) = work else { continue };
            if self
                .reconciler
                .is_desired(&d.deployment_id, &d.content_hash)
            {
                continue;
            }
            for m in &d.manifests {
                match self.cache.get(&m.hash) {
                    Some(v) => drop(have.insert(m.hash.clone(), v)),
                    None => drop(missing.insert(m.hash.clone())),
                }
            }
        }
        let mut fetched = Fetched::default();
        if !missing.is_empty() {
            debug!(manifests = missing.len(), "fetching manifests");
            // Any refusal here (even PERMISSION_DENIED for a hash the hub replaced meanwhile) is
            // healed by a new session: the hub then sends its current desired state again.
            fetched = manifests::fetch(channel.clone(), missing)
                .await
                .map_err(|s| {
                    SessionError::Hub(format!("fetching manifests: {}: {}", s.code(), s.message()))
                })?;
            self.cache.insert_all(&fetched.good);
            debug!(cached = self.cache.live(), "manifests fetched");
        }
        fetched.good.extend(have);
        for work in batch {
            match work {
                Work::Remove(id) => {
                    info!(deployment = %id, "removal received");
                    self.reconciler.remove(&id);
                }
                Work::Deploy(d) => self.accept(d, &fetched, out).await?,
            }
        }
        Ok(())
    }

    async fn accept(
        &self,
        d: Deployment,
        fetched: &Fetched,
        out: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        let ack = pb::Ack {
            deployment_id: d.deployment_id.clone(),
            content_hash: d.content_hash.clone(),
        };
        if !self
            .reconciler
            .is_desired(&d.deployment_id, &d.content_hash)
        {
            match collect(&d, fetched) {
                Ok(manifests) => {
                    info!(deployment = %d.deployment_id, revision = %d.revision, objects = manifests.len(), "deployment received");
                    self.reconciler.deploy(Desired {
                        deployment: d,
                        manifests,
                    });
                }
                Err(why) => {
                    warn!(deployment = %d.deployment_id, error = %why, "deployment unusable");
                    self.board.publish(failed_whole(&d, why));
                    return Ok(());
                }
            }
        }
        send(out, Out::Ack(ack)).await
    }
}

/// What `Hello` reports as held: every inventory, and every deployment the reconciler has a
/// target for, even one not recorded yet (received, but queued behind other applies). The
/// current target wins over an inventory of the same id: one being applied is reported with
/// the content the worker is applying (the hub then resends nothing, or a newer content, or a
/// Removal), and one being removed is not reported at all (so the hub sends it again if it
/// wants it after all, instead of letting the removal finish unnoticed).
fn held(
    inventories: Vec<crate::model::Inventory>,
    targets: Vec<(String, Option<String>)>,
) -> Vec<HeldDeployment> {
    let mut held: std::collections::BTreeMap<String, String> = inventories
        .into_iter()
        .map(|inv| (inv.deployment_id, inv.content_hash))
        .collect();
    for (id, target) in targets {
        match target {
            Some(hash) => drop(held.insert(id, hash)),
            None => drop(held.remove(&id)),
        }
    }
    held.into_iter()
        .map(|(deployment_id, content_hash)| HeldDeployment {
            deployment_id,
            content_hash,
        })
        .collect()
}

/// Drops work that a later item of the same batch replaces (a deployment sent twice, or sent
/// and then removed), so that no manifests are fetched for states already gone.
fn latest_per_deployment(batch: Vec<Work>) -> Vec<Work> {
    let id = |w: &Work| match w {
        Work::Deploy(d) => d.deployment_id.clone(),
        Work::Remove(id) => id.clone(),
    };
    let last: HashMap<String, usize> = batch.iter().enumerate().map(|(i, w)| (id(w), i)).collect();
    batch
        .into_iter()
        .enumerate()
        .filter(|(i, w)| last[&id(w)] == *i)
        .map(|(_, w)| w)
        .collect()
}

/// The manifests of a deployment, in its order, or why they are not all usable.
fn collect(d: &Deployment, fetched: &Fetched) -> Result<Vec<Arc<Value>>, String> {
    d.manifests
        .iter()
        .map(|m| {
            if let Some(why) = fetched.bad.get(&m.hash) {
                return Err(format!("{}: {why}", m.source));
            }
            fetched
                .good
                .get(&m.hash)
                .cloned()
                .ok_or_else(|| format!("{}: the hub did not return manifest {}", m.source, m.hash))
        })
        .collect()
}

async fn send(out: &mpsc::Sender<pb::AgentMessage>, kind: Out) -> Result<(), SessionError> {
    out.send(pb::AgentMessage { kind: Some(kind) })
        .await
        .map_err(|_| SessionError::Hub("the stream to the hub closed".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_problems_are_told_apart() {
        let kind = |t: &str| match SessionError::classify(t.into()) {
            SessionError::Refused(_) => "refused",
            SessionError::Untrusted(_) => "untrusted",
            _ => "other",
        };
        assert_eq!(
            kind("transport error: invalid peer certificate: UnknownIssuer"),
            "untrusted"
        );
        assert_eq!(
            kind("h2 protocol error: received fatal alert: BadCertificate"),
            "refused"
        );
        assert_eq!(kind("received fatal alert: CertificateRequired"), "refused");
        assert_eq!(
            kind("transport error: tcp connect error: Connection refused (os error 111)"),
            "other"
        );
        let status = tonic::Status::permission_denied("cluster deleted");
        assert!(matches!(
            SessionError::from_status(status),
            SessionError::Refused(_)
        ));
        assert!(matches!(
            SessionError::from_status(tonic::Status::unavailable("x")),
            SessionError::Hub(_)
        ));
    }

    #[test]
    fn a_batch_keeps_only_the_latest_word_per_deployment() {
        let deploy = |id: &str, hash: &str| {
            Work::Deploy(Deployment {
                deployment_id: id.into(),
                bundle: String::new(),
                revision: String::new(),
                content_hash: hash.into(),
                default_namespace: String::new(),
                manifests: Vec::new(),
            })
        };
        let batch = vec![
            deploy("a", "1"),
            deploy("b", "1"),
            deploy("a", "2"),
            Work::Remove("b".into()),
            deploy("c", "1"),
        ];
        let kept: Vec<String> = latest_per_deployment(batch)
            .into_iter()
            .map(|w| match w {
                Work::Deploy(d) => format!("deploy {} {}", d.deployment_id, d.content_hash),
                Work::Remove(id) => format!("remove {id}"),
            })
            .collect();
        assert_eq!(kept, ["deploy a 2", "remove b", "deploy c 1"]);
    }

    #[tokio::test]
    async fn hello_holds_what_is_queued_and_the_current_target_wins() {
        use crate::cluster::fake::{FakeApi, Reply};
        use serde_json::json;
        use tokio_util::task::TaskTracker;

        let inventory = |id: &str, hash: &str| {
            json!({"metadata": {"name": crate::plan::inventory_name(id)},
            "data": {"deploymentId": id, "contentHash": hash, "objects": "[]"}})
        };
        let listed = json!({"metadata": {}, "items": [
            inventory("applying", "old"), inventory("removing", "r"), inventory("settled", "s")]});
        let api = FakeApi::start(move |r| match r.path() {
            "/version" => Reply::json(200, json!({"gitVersion": "v1.32.3"})),
            "/api/v1/namespaces/flotilla-system/configmaps" => Reply::json(200, listed.clone()),
            // Workers cannot read their inventory yet: they keep their targets, unrecorded.
            _ => Reply::json(
                403,
                json!({"kind": "Status", "code": 403, "reason": "Forbidden", "message": "not yet"}),
            ),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let cluster = api.cluster(dir.path()).await;
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let board = Arc::new(StatusBoard::default());
        let reconciler = Reconciler::new(
            cluster.clone(),
            board.clone(),
            BackoffConfig::default(),
            tracker.clone(),
            shutdown.clone(),
        );
        let target = |id: &str, hash: &str| Desired {
            deployment: Deployment {
                deployment_id: id.into(),
                bundle: id.into(),
                revision: "r".into(),
                content_hash: hash.into(),
                default_namespace: String::new(),
                manifests: Vec::new(),
            },
            manifests: Vec::new(),
        };
        reconciler.deploy(target("applying", "new"));
        reconciler.deploy(target("queued", "q"));
        reconciler.remove("removing");
        let state = tempfile::tempdir().unwrap();
        let credentials = Credentials::new(
            crate::config::HubAddress::parse("https://127.0.0.1:9").unwrap(),
            None,
            crate::identity::IdentityStore::Dir(state.path().to_path_buf()),
            crate::identity::Identity {
                cluster_id: "id".into(),
                cluster_name: "c".into(),
                key_pem: String::new(),
                cert_pem: String::new(),
                ca_pem: String::new(),
                hub_url: "https://127.0.0.1:9".into(),
            },
        );
        let client = HubClient {
            credentials: Arc::new(credentials),
            cluster,
            reconciler,
            board,
            cache: Arc::new(ManifestCache::default()),
            backoff: BackoffConfig::default(),
            identity_location: String::new(),
        };
        let Some(Out::Hello(hello)) = client.hello().await.unwrap().kind else {
            panic!("not a Hello");
        };
        let held: Vec<(&str, &str)> = hello
            .held
            .iter()
            .map(|h| (h.deployment_id.as_str(), h.content_hash.as_str()))
            .collect();
        assert_eq!(
            held,
            [("applying", "new"), ("queued", "q"), ("settled", "s")],
            "queued deployments are held; a removal in progress is not"
        );
        assert_eq!(hello.kubernetes_version, "v1.32.3");
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn collect_keeps_order_and_explains_gaps() {
        let d = Deployment {
            deployment_id: "d".into(),
            bundle: "b".into(),
            revision: "r".into(),
            content_hash: "h".into(),
            default_namespace: String::new(),
            manifests: vec![
                crate::model::ManifestRef {
                    hash: "2".into(),
                    source: "b.yaml#0".into(),
                },
                crate::model::ManifestRef {
                    hash: "1".into(),
                    source: "a.yaml#0".into(),
                },
            ],
        };
        let mut fetched = Fetched::default();
        fetched
            .good
            .insert("1".into(), Arc::new(serde_json::json!({"n": 1})));
        fetched
            .good
            .insert("2".into(), Arc::new(serde_json::json!({"n": 2})));
        let got = collect(&d, &fetched).unwrap();
        assert_eq!(
            (got[0]["n"].as_i64(), got[1]["n"].as_i64()),
            (Some(2), Some(1))
        );
        fetched.good.remove("1");
        assert_eq!(
            collect(&d, &fetched).unwrap_err(),
            "a.yaml#0: the hub did not return manifest 1"
        );
        fetched.bad.insert("2".into(), "bad hash".into());
        assert_eq!(collect(&d, &fetched).unwrap_err(), "b.yaml#0: bad hash");
    }
}
