//! The agent stream and manifest downloads (`flotilla.agent.v1.AgentService`).
//!
//! One task per agent stream: it answers the agent's messages and, when the fleet index
//! says the cluster's desired set changed, sends the difference between what the agent
//! holds and what it should run. Nothing here polls. The stream also carries certificate
//! renewals and trust updates (CA rotation), and it ends when its certificate expires
//! unless a renewal on it extended it.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::agent::v1 as wire;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Context, DELETED, authorize_cluster, convert, internal};
use crate::fleet::Session;
use crate::metrics::Refusal;
use crate::model::{BundleContent, BundleId, ClusterId, ContentHash, unix_now};

/// How long an agent has to say Hello after opening its stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the hub pings an idle stream; the answer refreshes last-seen.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Most manifests one FetchManifests call may ask for.
const MAX_FETCH: usize = 1000;

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
        let (cluster, cert) = authorize_cluster(&self.0, &req)?;
        let (tx, rx) = mpsc::channel(64);
        let stream = AgentStream {
            ctx: self.0.clone(),
            cluster,
            tx,
            sent: HashMap::new(),
            keep: HashSet::new(),
            known: HashSet::new(),
            key_sha256: cert.key_sha256,
            expires: cert.not_after,
        };
        let inbound = req.into_inner();
        self.0.tasks.spawn(
            stream
                .run(inbound)
                .instrument(info_span!("agent_stream", cluster = %cluster)),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_manifests(
        &self,
        req: Request<wire::FetchManifestsRequest>,
    ) -> Result<Response<ManifestStream>, Status> {
        let (cluster, _) = authorize_cluster(&self.0, &req)?;
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
                self.0.metrics.refused(Refusal::ManifestNotAssigned);
                warn!(cluster = %cluster, hash = %hash, reason = Refusal::ManifestNotAssigned.as_str(), "manifest request refused");
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
    ctx: Arc<Context>,
    cluster: ClusterId,
    tx: mpsc::Sender<Result<wire::HubMessage, Status>>,
    /// What the agent holds (or has been sent): deployment → content hash.
    sent: HashMap<BundleId, ContentHash>,
    /// Deployments last sent with `keep_resources`: their removal releases the objects.
    keep: HashSet<BundleId>,
    /// Every deployment this agent held or was sent on this stream: the only ones it can
    /// legitimately report about.
    known: HashSet<BundleId>,
    /// The key of the stream's newest certificate: the one a renewal must come from.
    key_sha256: String,
    /// Unix seconds when the stream's newest certificate expires; the stream ends then.
    expires: i64,
}

/// The stream ended; why is only logged.
struct Closed;

impl AgentStream {
    async fn run(self, inbound: Streaming<wire::AgentMessage>) {
        let metrics = self.ctx.metrics.clone();
        metrics.streams_opened.inc();
        metrics.streams.inc();
        let reason = self.serve(inbound).await;
        metrics.streams.dec();
        metrics.stream_closed(reason);
        info!(reason, "agent disconnected");
    }

    /// Serve the stream; returns why it ended.
    async fn serve(mut self, mut inbound: Streaming<wire::AgentMessage>) -> &'static str {
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
                return "no_hello";
            }
        };
        let fleet = self.ctx.fleet.clone();
        if let Err(e) = fleet.update_cluster_info(
            self.cluster,
            &hello.agent_version,
            &hello.kubernetes_version,
        ) {
            warn!(error = %e, "cannot record the agent's versions");
        }
        let Some(session) = fleet.connect(self.cluster) else {
            let _ = self.tx.send(Err(Status::permission_denied(DELETED))).await;
            return "deleted";
        };
        info!(held = hello.held.len(), agent_version = %hello.agent_version, "agent connected");
        self.sent = hello
            .held
            .into_iter()
            .map(|h| (BundleId(h.deployment_id), ContentHash(h.content_hash)))
            .collect();
        self.known = self.sent.keys().cloned().collect();
        if self.sync().await.is_err()
            || self
                .send(wire::hub_message::Kind::SyncComplete(wire::SyncComplete {}))
                .await
                .is_err()
        {
            return "disconnected";
        }
        // An agent that missed a CA rotation while away learns of it now.
        let mut trust = self.ctx.pki.subscribe();
        if self.on_previous_ca() && self.send_trust().await.is_err() {
            return "disconnected";
        }
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut nonce = 0u64;
        let shutdown = self.ctx.shutdown.clone();
        // One timer for the stream's certificate, moved only when a renewal extends it: not
        // a new timer for every message.
        let expiry = tokio::time::sleep(self.time_left());
        tokio::pin!(expiry);
        let mut expires = self.expires;
        loop {
            let step = tokio::select! {
                // Cancellation first: a replaced stream must not consume the change
                // notification its successor shares.
                biased;
                _ = shutdown.cancelled() => return "shutdown",
                _ = session.cancelled.cancelled() => return self.cancelled().await,
                _ = &mut expiry => return self.expired().await,
                _ = session.changed.notified() => self.send_changes(&session).await,
                Ok(()) = trust.changed() => self.send_trust().await,
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => self.handle(m).await,
                    Ok(None) => return "disconnected",
                    Err(e) => { debug!(error = %e, "agent stream error"); return "disconnected" }
                },
                _ = ping.tick() => { nonce += 1; self.send(wire::hub_message::Kind::Ping(wire::Ping { nonce })).await }
            };
            if step.is_err() {
                return "disconnected";
            }
            if self.expires != expires {
                expires = self.expires;
                expiry
                    .as_mut()
                    .reset(tokio::time::Instant::now() + self.time_left());
            }
        }
    }

    /// The session was cancelled: the cluster was deleted, or a newer stream took over.
    async fn cancelled(&self) -> &'static str {
        if self.ctx.fleet.cluster(self.cluster).is_none() {
            warn!(
                reason = Refusal::ClusterDeleted.as_str(),
                "stream of a deleted cluster closed"
            );
            let _ = self.tx.send(Err(Status::permission_denied(DELETED))).await;
            "deleted"
        } else {
            let _ = self
                .tx
                .send(Err(Status::aborted(
                    "a newer stream from this cluster replaced this one",
                )))
                .await;
            "replaced"
        }
    }

    fn time_left(&self) -> Duration {
        Duration::from_secs(self.expires.saturating_sub(unix_now()).max(0) as u64)
    }

    async fn expired(&self) -> &'static str {
        self.ctx.metrics.refused(Refusal::CertificateExpired);
        warn!(
            reason = Refusal::CertificateExpired.as_str(),
            "stream closed: its certificate expired without renewal"
        );
        let _ = self
            .tx
            .send(Err(Status::unauthenticated(
                "the client certificate of this stream expired; the agent renews it well before expiry, so check the agent's clock and its log for renewal errors",
            )))
            .await;
        "certificate_expired"
    }

    /// Whether the cluster's current certificate comes from a CA that is being retired.
    fn on_previous_ca(&self) -> bool {
        self.ctx
            .fleet
            .cluster(self.cluster)
            .is_some_and(|c| c.certificate.ca_fingerprint != self.ctx.pki.active_fingerprint())
    }

    /// Tell the agent which CAs to trust, and to renew if its certificate is from an old CA.
    async fn send_trust(&self) -> Result<(), Closed> {
        let renew = self.on_previous_ca();
        info!(renew, "sending the hub's trust bundle");
        self.send(wire::hub_message::Kind::Trust(wire::TrustUpdate {
            ca_bundle_pem: self.ctx.pki.ca_pem(),
            renew,
        }))
        .await
    }

    /// Sign a renewal CSR for this stream's cluster.
    async fn renew(&mut self, csr_pem: &str) -> Result<(), Closed> {
        let answer = match self.issue(csr_pem) {
            Ok(issued) => {
                self.expires = self.expires.max(issued.not_after);
                self.key_sha256 = issued.key_sha256;
                info!(not_after = issued.not_after, "client certificate renewed");
                wire::CertificateIssued {
                    certificate_pem: issued.pem,
                    ca_bundle_pem: self.ctx.pki.ca_pem(),
                    not_after: issued.not_after,
                    error: String::new(),
                }
            }
            Err(error) => {
                warn!(error = %error, "certificate renewal refused");
                wire::CertificateIssued {
                    error,
                    ..Default::default()
                }
            }
        };
        self.send(wire::hub_message::Kind::Certificate(answer))
            .await
    }

    fn issue(&self, csr_pem: &str) -> Result<crate::pki::IssuedCert, String> {
        let ctx = &self.ctx;
        let cluster = ctx.fleet.cluster(self.cluster).ok_or(DELETED)?;
        if !cluster.certificate.accepts(&self.key_sha256) {
            ctx.metrics.refused(Refusal::CertificateSuperseded);
            warn!(
                reason = Refusal::CertificateSuperseded.as_str(),
                "renewal from a superseded certificate refused"
            );
            return Err("this stream's certificate was superseded by newer ones issued to the same cluster; if no other agent holds this cluster's identity, delete the cluster and register again".into());
        }
        let issued = ctx
            .pki
            .sign_cluster_csr(csr_pem, self.cluster, &cluster.name, ctx.client_cert_ttl)
            .map_err(|e| format!("{e}; send a PEM PKCS#10 CSR"))?;
        let record = cluster.certificate.renewed(
            issued.key_sha256.clone(),
            issued.not_after,
            issued.ca_fingerprint.clone(),
        );
        match ctx.fleet.set_certificate(self.cluster, record) {
            Ok(true) => {}
            Ok(false) => return Err(DELETED.into()),
            Err(e) => {
                warn!(error = %e, "cannot record the renewed certificate");
                return Err("the hub could not record the certificate; try again later".into());
            }
        }
        ctx.metrics.certificate_issued("renewal");
        Ok(issued)
    }

    /// Send what differs between what the agent holds and what it should run.
    async fn sync(&mut self) -> Result<(), Closed> {
        let desired = self.ctx.fleet.full_sync(self.cluster);
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
        for (id, content) in self.ctx.fleet.take_changes(session) {
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
        self.known.insert(id.clone());
        if content.keep_resources {
            self.keep.insert(id.clone());
        } else {
            self.keep.remove(&id);
        }
        self.send(wire::hub_message::Kind::Deploy(convert::deployment(
            &id, content,
        )))
        .await
    }

    async fn remove(&mut self, id: BundleId) -> Result<(), Closed> {
        if self.sent.remove(&id).is_none() {
            return Ok(());
        }
        let keep_resources = self.keep.remove(&id);
        self.send(wire::hub_message::Kind::Remove(wire::Removal {
            deployment_id: id.0,
            keep_resources,
        }))
        .await
    }

    async fn handle(&mut self, msg: wire::AgentMessage) -> Result<(), Closed> {
        self.ctx.fleet.seen(self.cluster);
        match msg.kind {
            Some(wire::agent_message::Kind::Status(report)) => {
                for s in report.deployments {
                    let Some((bundle, status)) = convert::reported(s) else {
                        warn!("status with an unknown state ignored");
                        continue;
                    };
                    if !self.known.contains(&bundle) {
                        return self.refuse_status(&bundle).await;
                    }
                    match self.ctx.fleet.record_status(self.cluster, &bundle, status) {
                        Ok(true) => {}
                        // Removed meanwhile: the agent has a Removal on its way.
                        Ok(false) => {
                            debug!(bundle = %bundle, "status for a removed deployment ignored")
                        }
                        Err(e) => warn!(error = %e, "cannot store status"),
                    }
                }
            }
            Some(wire::agent_message::Kind::Renew(r)) => return self.renew(&r.csr_pem).await,
            Some(wire::agent_message::Kind::Ack(ack)) => {
                debug!(deployment = %ack.deployment_id, "deployment acknowledged")
            }
            Some(wire::agent_message::Kind::Hello(_)) => {
                warn!("second Hello on one stream ignored")
            }
            Some(wire::agent_message::Kind::Pong(_)) | None => {}
        }
        Ok(())
    }

    /// A status about a deployment this agent never held nor was sent: not its own.
    async fn refuse_status(&self, bundle: &BundleId) -> Result<(), Closed> {
        self.ctx.metrics.refused(Refusal::StatusNotAssigned);
        warn!(bundle = %bundle, reason = Refusal::StatusNotAssigned.as_str(), "status report refused");
        let _ = self
            .tx
            .send(Err(Status::permission_denied(format!(
                "deployment {bundle} is not assigned to this cluster; an agent reports status only for deployments the hub sent it"
            ))))
            .await;
        Err(Closed)
    }

    async fn send(&self, kind: wire::hub_message::Kind) -> Result<(), Closed> {
        self.tx
            .send(Ok(wire::HubMessage { kind: Some(kind) }))
            .await
            .map_err(|_| Closed)
    }
}
