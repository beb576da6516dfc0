//! The agent-facing services: `Registration` (token → certificate) and `AgentService`
//! (the long-lived stream and manifest downloads).
//!
//! One task per agent stream: it answers the agent's messages and, when the fleet index
//! says the cluster's desired set changed, sends the difference between what the agent
//! holds and what it should run. Nothing here polls.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::agent::v1 as wire;
use futures::Stream;
use sha2::Digest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Context, authorize_cluster, convert, internal};
use crate::fleet::{Fleet, Session};
use crate::model::{
    BundleContent, BundleId, Cluster, ClusterId, ContentHash, RegistrationToken, is_dns_label,
    unix_now,
};

/// How long an agent has to say Hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the hub pings an idle stream; the answer refreshes last-seen.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Most manifests one FetchManifests call may ask for.
const MAX_FETCH: usize = 1000;

/// `flotilla.agent.v1.Registration`.
pub struct RegistrationService(pub Arc<Context>);

#[tonic::async_trait]
impl wire::registration_server::Registration for RegistrationService {
    async fn register(
        &self,
        req: Request<wire::RegisterRequest>,
    ) -> Result<Response<wire::RegisterResponse>, Status> {
        let req = req.into_inner();
        let ctx = &self.0;
        if !is_dns_label(&req.cluster_name) {
            return Err(Status::invalid_argument(format!(
                "cluster name {:?} is not a lower-case RFC 1123 label (a-z, 0-9, '-', at most 63); pass a valid --cluster-name",
                req.cluster_name
            )));
        }
        let taken = || {
            Status::already_exists(format!(
                "a cluster named {:?} is already registered; choose another --cluster-name",
                req.cluster_name
            ))
        };
        if ctx.fleet.cluster_by_name(&req.cluster_name).is_some() {
            return Err(taken());
        }
        // Check the CSR before the token, so a malformed request does not spend a use.
        let id = ClusterId::new();
        let cert = ctx
            .pki
            .sign_cluster_csr(&req.csr_pem, id, &req.cluster_name, ctx.client_cert_ttl)
            .map_err(|e| {
                Status::invalid_argument(format!("{e}; the agent must send a PEM PKCS#10 CSR"))
            })?;
        let token = check_token(ctx, &req.token)?;
        let cluster = Cluster {
            id,
            name: req.cluster_name.clone(),
            labels: req.labels.into_iter().collect(),
            registered_at: unix_now(),
            agent_version: req.agent_version,
            kubernetes_version: String::new(),
        };
        // Checked again atomically: two agents may race for one name.
        if !ctx.fleet.add_cluster(cluster).map_err(internal)? {
            return Err(taken());
        }
        info!(cluster = %id, name = %req.cluster_name, token = %token.id, "cluster registered");
        Ok(Response::new(wire::RegisterResponse {
            cluster_id: id.to_string(),
            certificate_pem: cert,
            ca_bundle_pem: ctx.pki.ca_pem().to_string(),
            cluster_name: req.cluster_name,
        }))
    }
}

/// Check a registration token and count its use. Refusals are audit-logged by token id; the
/// secret never reaches a log.
fn check_token(ctx: &Context, token: &str) -> Result<RegistrationToken, Status> {
    let refuse = |id: &str, why: &str| {
        warn!(token = %id, reason = why, "registration refused");
        Status::unauthenticated(format!(
            "registration token refused: {why}; create a new one with `flotilla token create` on the hub"
        ))
    };
    let Some((id, _)) = token.split_once('.') else {
        return Err(refuse(
            "-",
            "it is not a Flotilla token (expected <id>.<secret>)",
        ));
    };
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let now = unix_now();
    let outcome = ctx.fleet.store().use_token(id, |t| {
        if !constant_time_eq(t.secret_sha256.as_bytes(), digest.as_bytes()) {
            Err("it is not known to this hub")
        } else if t.expires_at <= now {
            Err("it has expired")
        } else if t.max_uses != 0 && t.uses >= t.max_uses {
            Err("it has been used as many times as it allows")
        } else {
            Ok(())
        }
    });
    match outcome.map_err(internal)? {
        None => Err(refuse(id, "it is not known to this hub")),
        Some(Err(why)) => Err(refuse(id, why)),
        Some(Ok(t)) => Ok(t),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `flotilla.agent.v1.AgentService`.
pub struct AgentService(pub Arc<Context>);

type ManifestStream = Pin<Box<dyn Stream<Item = Result<wire::Manifest, Status>> + Send>>;

#[tonic::async_trait]
impl wire::agent_service_server::AgentService for AgentService {
    type ConnectStream = ReceiverStream<Result<wire::HubMessage, Status>>;
    type FetchManifestsStream = ManifestStream;

    async fn connect(
        &self,
        req: Request<Streaming<wire::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let cluster = authorize_cluster(&self.0, &req)?;
        let (tx, rx) = mpsc::channel(64);
        let stream = AgentStream {
            fleet: self.0.fleet.clone(),
            cluster,
            tx,
            sent: HashMap::new(),
        };
        let shutdown = self.0.shutdown.clone();
        let inbound = req.into_inner();
        self.0.tasks.spawn(
            stream
                .run(inbound, shutdown)
                .instrument(info_span!("agent_stream", cluster = %cluster)),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_manifests(
        &self,
        req: Request<wire::FetchManifestsRequest>,
    ) -> Result<Response<ManifestStream>, Status> {
        let cluster = authorize_cluster(&self.0, &req)?;
        let hashes = req.into_inner().hashes;
        if hashes.len() > MAX_FETCH {
            return Err(Status::invalid_argument(format!(
                "ask for at most {MAX_FETCH} manifests per call"
            )));
        }
        // An agent may read only the manifests of its own deployments.
        let allowed: HashSet<ContentHash> = self
            .0
            .fleet
            .desired(cluster)
            .iter()
            .flat_map(|(_, c)| c.manifests.iter().map(|m| m.hash.clone()))
            .collect();
        let mut out = Vec::with_capacity(hashes.len());
        for hash in hashes {
            if !allowed.contains(&ContentHash(hash.clone())) {
                warn!(cluster = %cluster, hash = %hash, "manifest request outside the cluster's deployments refused");
                return Err(Status::permission_denied(format!(
                    "manifest {hash} is not part of this cluster's deployments"
                )));
            }
            let json = self.0.fleet.store().manifest(&hash).map_err(internal)?;
            let json = json.ok_or_else(|| {
                Status::not_found(format!("manifest {hash} is not stored on the hub"))
            })?;
            out.push(Ok(wire::Manifest { hash, json }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
    }
}

/// The hub's side of one agent stream.
struct AgentStream {
    fleet: Arc<Fleet>,
    cluster: ClusterId,
    tx: mpsc::Sender<Result<wire::HubMessage, Status>>,
    /// What the agent holds (or has been sent): deployment → content hash.
    sent: HashMap<BundleId, ContentHash>,
}

/// The stream ended; why is only logged.
struct Closed;

impl AgentStream {
    async fn run(
        mut self,
        mut inbound: Streaming<wire::AgentMessage>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(wire::AgentMessage {
                kind: Some(wire::agent_message::Kind::Hello(h)),
            }))) => h,
            _ => {
                let _ = self
                    .tx
                    .send(Err(Status::invalid_argument(
                        "the first message on a stream must be Hello",
                    )))
                    .await;
                return;
            }
        };
        if let Err(e) = self.fleet.update_cluster_info(
            self.cluster,
            &hello.agent_version,
            &hello.kubernetes_version,
        ) {
            warn!(error = %e, "cannot record the agent's versions");
        }
        let Some(session) = self.fleet.connect(self.cluster) else {
            return;
        };
        info!(held = hello.held.len(), agent_version = %hello.agent_version, "agent connected");
        self.sent = hello
            .held
            .into_iter()
            .map(|h| (BundleId(h.deployment_id), ContentHash(h.content_hash)))
            .collect();
        if self.sync().await.is_err()
            || self
                .send(wire::hub_message::Kind::SyncComplete(wire::SyncComplete {}))
                .await
                .is_err()
        {
            return;
        }
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut nonce = 0u64;
        loop {
            let step = tokio::select! {
                // Cancellation first: a replaced stream must not consume the change
                // notification its successor shares.
                biased;
                _ = shutdown.cancelled() => break,
                _ = session.cancelled.cancelled() => {
                    let _ = self.tx.send(Err(Status::aborted("a newer stream from this cluster replaced this one"))).await;
                    break;
                }
                _ = session.changed.notified() => self.send_changes(&session).await,
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => self.handle(m),
                    Ok(None) => break,
                    Err(e) => { debug!(error = %e, "agent stream error"); break }
                },
                _ = ping.tick() => { nonce += 1; self.send(wire::hub_message::Kind::Ping(wire::Ping { nonce })).await }
            };
            if step.is_err() {
                break;
            }
        }
        info!("agent disconnected");
    }

    /// Send what differs between what the agent holds and what it should run.
    async fn sync(&mut self) -> Result<(), Closed> {
        let desired = self.fleet.full_sync(self.cluster);
        let wanted: HashSet<&BundleId> = desired.iter().map(|(b, _)| b).collect();
        let gone: Vec<BundleId> = self
            .sent
            .keys()
            .filter(|b| !wanted.contains(b))
            .cloned()
            .collect();
        for id in gone {
            self.remove(id).await?;
        }
        for (id, content) in desired {
            self.deploy(id, &content).await?;
        }
        Ok(())
    }

    /// Send what changed since the last look: the bundles the fleet index marked.
    async fn send_changes(&mut self, session: &Session) -> Result<(), Closed> {
        for (id, content) in self.fleet.take_changes(session) {
            match content {
                Some(c) => self.deploy(id, &c).await?,
                None => self.remove(id).await?,
            }
        }
        Ok(())
    }

    async fn deploy(&mut self, id: BundleId, content: &BundleContent) -> Result<(), Closed> {
        if self.sent.get(&id) == Some(&content.content_hash) {
            return Ok(());
        }
        self.sent.insert(id.clone(), content.content_hash.clone());
        self.send(wire::hub_message::Kind::Deploy(convert::deployment(
            &id, content,
        )))
        .await
    }

    async fn remove(&mut self, id: BundleId) -> Result<(), Closed> {
        if self.sent.remove(&id).is_none() {
            return Ok(());
        }
        self.send(wire::hub_message::Kind::Remove(wire::Removal {
            deployment_id: id.0,
        }))
        .await
    }

    fn handle(&mut self, msg: wire::AgentMessage) -> Result<(), Closed> {
        self.fleet.seen(self.cluster);
        match msg.kind {
            Some(wire::agent_message::Kind::Status(report)) => {
                for s in report.deployments {
                    let Some((bundle, status)) = convert::reported(s) else {
                        warn!("status with an unknown state ignored");
                        continue;
                    };
                    match self.fleet.record_status(self.cluster, &bundle, status) {
                        Ok(true) => {}
                        Ok(false) => {
                            warn!(bundle = %bundle, "status for a deployment this cluster does not run refused")
                        }
                        Err(e) => warn!(error = %e, "cannot store status"),
                    }
                }
            }
            Some(wire::agent_message::Kind::Ack(ack)) => {
                debug!(deployment = %ack.deployment_id, "deployment acknowledged")
            }
            Some(wire::agent_message::Kind::Hello(_)) => {
                warn!("second Hello on one stream ignored")
            }
            // Certificate renewal: implemented on main.
            Some(wire::agent_message::Kind::Renew(_)) => {}
            Some(wire::agent_message::Kind::Pong(_)) | None => {}
        }
        Ok(())
    }

    async fn send(&self, kind: wire::hub_message::Kind) -> Result<(), Closed> {
        self.tx
            .send(Ok(wire::HubMessage { kind: Some(kind) }))
            .await
            .map_err(|_| Closed)
    }
}
