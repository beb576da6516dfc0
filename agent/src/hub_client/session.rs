//! One `Connect` stream, from `Hello` until it breaks: answers `Ping`s, passes deployments to
//! the dispatcher (and, after the hub's `SyncComplete`, the held contents to watch again),
//! sends status in coalesced batches, and renews the client certificate on the stream when
//! its time comes or when the hub's trust update asks for it.

use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::agent_message::Kind as Out;
use flotilla_proto::agent::v1::agent_service_client::AgentServiceClient;
use flotilla_proto::agent::v1::hub_message::Kind as In;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::credentials::Change;
use super::dispatch::{Work, held};
use super::renewal::Renewal;
use super::resume::resumable;
use super::{FLUSH_EVERY, HubClient, OUTBOX, SessionError, convert};
use crate::model::Deployment;

impl HubClient {
    /// The `Hello` of a new session, and the held contents it must watch again.
    pub(super) async fn hello(&self) -> Result<(pb::AgentMessage, Vec<Deployment>), SessionError> {
        // Targets first: until this session dispatches, they only change by a worker that ends
        // after deleting its inventory, so the list below cannot show one the targets missed.
        let targets = self.reconciler.targets();
        let inventories = self
            .cluster
            .list_inventories()
            .await
            .map_err(SessionError::Cluster)?;
        let resume = resumable(&inventories, &targets);
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
        let hello = pb::AgentMessage {
            kind: Some(Out::Hello(hello)),
        };
        Ok((hello, resume))
    }

    /// One stream, from `Hello` until it breaks. `up_since` is set once the hub accepted it.
    pub(super) async fn session(&self, up_since: &mut Option<Instant>) -> Result<(), SessionError> {
        let (hello, mut resume) = self.hello().await?;
        // The identity and trust of this moment: a renewal on an earlier stream counts here.
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
        self.connected.notify_one();
        self.board.mark_all_pending();

        let mut renewal = Renewal::new(self.credentials.current().renew_at, self.backoff);
        let (work_tx, work_rx) = mpsc::unbounded_channel();
        let dispatcher = self.dispatch_loop(channel, work_rx, out.clone());
        tokio::pin!(dispatcher);
        let mut flush_at: Option<Instant> = None;
        let mut last_flush = Instant::now() - FLUSH_EVERY;
        loop {
            tokio::select! {
                message = inbound.message() => match message.map_err(SessionError::from_status)? {
                    None => return Ok(()),
                    Some(m) => self.receive(m, &out, &work_tx, &mut renewal, &mut resume).await?,
                },
                _ = tokio::time::sleep_until(renewal.wake_at()) => self.renew(&mut renewal, &out).await?,
                _ = self.board.changed(), if flush_at.is_none() => {
                    flush_at = Some((last_flush + FLUSH_EVERY).max(Instant::now()));
                }
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(Instant::now)), if flush_at.is_some() => {
                    flush_at = None;
                    last_flush = Instant::now();
                    self.flush(&out).await?;
                }
                ended = &mut dispatcher => return ended,
            }
        }
    }

    async fn receive(
        &self,
        m: pb::HubMessage,
        out: &mpsc::Sender<pb::AgentMessage>,
        work: &mpsc::UnboundedSender<Work>,
        renewal: &mut Renewal,
        resume: &mut Vec<Deployment>,
    ) -> Result<(), SessionError> {
        match m.kind {
            Some(In::Ping(p)) => send(out, Out::Pong(pb::Pong { nonce: p.nonce })).await?,
            Some(In::Deploy(d)) => drop(work.send(Work::Deploy(convert::deployment_from_proto(d)))),
            Some(In::Remove(r)) => drop(work.send(Work::Remove(convert::removal_from_proto(r)))),
            // Held deployments the hub did not answer about are unchanged; it sends a Removal
            // for the ones it no longer wants, so nothing is pruned on this signal alone. Its
            // answers are queued by now, so the held contents to watch again go behind them.
            Some(In::SyncComplete(_)) => {
                info!(held = resume.len(), "in sync with the hub");
                for d in resume.drain(..) {
                    drop(work.send(Work::Resume(d)));
                }
            }
            Some(In::Certificate(c)) => {
                let issued = convert::issued_from_proto(c);
                if let Some(change) = renewal.answered(issued, &self.credentials.current()) {
                    self.credentials.submit(change);
                }
            }
            Some(In::Trust(t)) => self.trust_update(t, renewal),
            None => debug!("ignoring an empty or unknown message from the hub"),
        }
        Ok(())
    }

    /// Keeps the hub's new CA bundle for future connections, and renews now if asked to.
    fn trust_update(&self, t: pb::TrustUpdate, renewal: &mut Renewal) {
        if t.ca_bundle_pem.contains("-----BEGIN CERTIFICATE-----") {
            if t.ca_bundle_pem != self.credentials.identity().ca_pem {
                info!(renew = t.renew, "the hub's CA bundle changed; keeping it");
                self.credentials.submit(Change::Trust {
                    ca_pem: t.ca_bundle_pem,
                });
            }
        } else {
            warn!("ignoring a trust update without a PEM certificate");
        }
        if t.renew {
            renewal.now();
        }
    }

    /// The renewal timer fired: asks for a certificate, or notes that an answer is late.
    async fn renew(
        &self,
        renewal: &mut Renewal,
        out: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        match renewal.due(&self.credentials.current()) {
            Ok(Some(csr_pem)) => send(out, Out::Renew(pb::RenewCertificate { csr_pem })).await,
            Ok(None) => Ok(()),
            Err(e) => Err(SessionError::Hub(e.to_string())),
        }
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
}

pub(super) async fn send(
    out: &mpsc::Sender<pb::AgentMessage>,
    kind: Out,
) -> Result<(), SessionError> {
    out.send(pb::AgentMessage { kind: Some(kind) })
        .await
        .map_err(|_| SessionError::Hub("the stream to the hub closed".into()))
}
