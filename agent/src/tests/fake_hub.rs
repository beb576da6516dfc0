//! A fake hub over real mTLS: `Register` (token `good`, any name, always cluster id `c-1`),
//! `Connect` and `FetchManifests`. It signs CSRs with certificates of a settable lifetime,
//! answers `RenewCertificate` (or refuses a set number of times), and like the real hub ends a
//! stream with `UNAUTHENTICATED` when the newest certificate on it expires, and refuses calls
//! over a connection whose certificate is older than the previous one issued. What it sees
//! goes to the test as [`Seen`] events.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::agent_message::Kind as Out;
use flotilla_proto::agent::v1::hub_message::Kind as In;
use flotilla_proto::agent::v1::{agent_service_server, registration_server};
use futures::Stream;
use rcgen::{CertifiedIssuer, ExtendedKeyUsagePurpose, KeyPair, PublicKeyData};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// What the fake hub saw.
#[derive(Debug)]
pub(crate) enum Seen {
    /// A registration: the name asked for and the CSR's public key.
    Registered {
        name: String,
        public_key: Vec<u8>,
    },
    /// A message on a stream.
    Message(Out),
    Fetch(Vec<String>),
    /// A renewal answered with a certificate for this public key.
    Renewed {
        public_key: Vec<u8>,
    },
}

pub(crate) struct HubState {
    pub seen: mpsc::UnboundedSender<Seen>,
    pub to_agent: Mutex<Option<mpsc::Sender<Result<pb::HubMessage, Status>>>>,
    pub manifests: Mutex<HashMap<String, Vec<u8>>>,
    pub issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA bundle handed out; the issuer's certificate unless a test rotates it.
    pub bundle: Mutex<String>,
    /// The lifetime of issued certificates; `None`: rcgen's default (centuries).
    pub lifetime: Mutex<Option<Duration>>,
    /// Renewals to refuse before answering again.
    pub refuse_renewals: AtomicUsize,
    /// `Connect` calls accepted so far.
    pub connects: AtomicUsize,
    /// The public keys certified so far, oldest first: only the last two are accepted.
    pub issued_keys: Mutex<Vec<Vec<u8>>>,
}

#[derive(Clone)]
pub(crate) struct FakeHub(pub Arc<HubState>);

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl FakeHub {
    /// Signs a CSR's public key for client auth, backdated a minute as the real hub does.
    fn sign(&self, csr_pem: &str) -> Result<(String, Vec<u8>, SystemTime), String> {
        let mut csr =
            rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| e.to_string())?;
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let mut not_after = SystemTime::now() + Duration::from_secs(100 * 365 * 86_400);
        if let Some(lifetime) = *self.0.lifetime.lock().unwrap() {
            not_after = SystemTime::now() + lifetime;
            csr.params.not_before = (SystemTime::now() - Duration::from_secs(60)).into();
            csr.params.not_after = not_after.into();
        }
        let public_key = csr.public_key.der_bytes().to_vec();
        let cert = csr.signed_by(&self.0.issuer).map_err(|e| e.to_string())?;
        self.0.issued_keys.lock().unwrap().push(public_key.clone());
        Ok((cert.pem(), public_key, not_after))
    }

    fn renew(&self, csr_pem: &str) -> (pb::CertificateIssued, Option<SystemTime>) {
        let refuse = self
            .0
            .refuse_renewals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let refused = |error: String| pb::CertificateIssued {
            error,
            ..Default::default()
        };
        if refuse {
            return (refused("the hub is busy; try again later".into()), None);
        }
        match self.sign(csr_pem) {
            Ok((pem, public_key, not_after)) => {
                let _ = self.0.seen.send(Seen::Renewed { public_key });
                let seconds = not_after
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let issued = pb::CertificateIssued {
                    certificate_pem: pem,
                    ca_bundle_pem: self.0.bundle.lock().unwrap().clone(),
                    not_after: seconds as i64,
                    error: String::new(),
                };
                (issued, Some(not_after))
            }
            Err(e) => (refused(e), None),
        }
    }

    /// Relays what the agent sends, answers renewals, and ends the stream when its newest
    /// certificate expires.
    async fn serve_stream(
        self,
        mut inbound: Streaming<pb::AgentMessage>,
        tx: mpsc::Sender<Result<pb::HubMessage, Status>>,
        mut expires: SystemTime,
    ) {
        loop {
            let left = expires
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(Duration::from_secs(86_400));
            let message = tokio::select! {
                m = inbound.message() => m,
                _ = tokio::time::sleep(left) => {
                    let expired = Status::unauthenticated("the client certificate of this stream expired");
                    let _ = tx.send(Err(expired)).await;
                    return;
                }
            };
            let Ok(Some(m)) = message else { return };
            let kind = m.kind.unwrap();
            if let Out::Renew(r) = &kind {
                let (answer, not_after) = self.renew(&r.csr_pem);
                expires = expires.max(not_after.unwrap_or(expires));
                let answer = pb::HubMessage {
                    kind: Some(In::Certificate(answer)),
                };
                let _ = tx.send(Ok(answer)).await;
            }
            let _ = self.0.seen.send(Seen::Message(kind));
        }
    }
}

/// The connection's certificate, if its key is the current or the previous one issued (the
/// real hub's rule for every call), with its expiry.
fn authorize<T>(hub: &HubState, req: &Request<T>) -> Result<SystemTime, Status> {
    let Some(certs) = req.peer_certs().filter(|c| !c.is_empty()) else {
        return Err(Status::unauthenticated("a client certificate is required"));
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    let key = cert.public_key().subject_public_key.data.to_vec();
    let issued = hub.issued_keys.lock().unwrap();
    if !issued.iter().rev().take(2).any(|k| *k == key) {
        return Err(Status::permission_denied(
            "this certificate was superseded by newer ones issued to the same cluster",
        ));
    }
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(cert.validity().not_after.timestamp() as u64))
}

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
        let (cert, public_key, _) = self.sign(&req.csr_pem).map_err(Status::invalid_argument)?;
        self.0
            .seen
            .send(Seen::Registered {
                name: req.cluster_name.clone(),
                public_key,
            })
            .unwrap();
        Ok(Response::new(pb::RegisterResponse {
            cluster_id: "c-1".into(),
            certificate_pem: cert,
            ca_bundle_pem: self.0.bundle.lock().unwrap().clone(),
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
        let expires = authorize(&self.0, &req)?;
        self.0.connects.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(16);
        *self.0.to_agent.lock().unwrap() = Some(tx.clone());
        tokio::spawn(self.clone().serve_stream(req.into_inner(), tx, expires));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_manifests(
        &self,
        req: Request<pb::FetchManifestsRequest>,
    ) -> Result<Response<Self::FetchManifestsStream>, Status> {
        authorize(&self.0, &req)?;
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
