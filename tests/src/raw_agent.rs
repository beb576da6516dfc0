//! A raw agent: the agent wire protocol spoken directly, without the real agent's good
//! manners, to check what the hub refuses (a certificate from another CA, status for a
//! deployment that is not the caller's, a deleted cluster's certificate, a reused token).

use flotilla_proto::agent::v1 as wire;
use flotilla_proto::agent::v1::agent_service_client::AgentServiceClient;
use flotilla_proto::agent::v1::registration_client::RegistrationClient;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, SanType,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A client certificate and its key, PEM.
#[derive(Clone)]
pub struct RawIdentity {
    pub cluster_id: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A fresh key pair (ECDSA P-256, as the agent makes).
pub fn new_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key generation")
}

/// A PEM CSR for `key`.
pub fn csr(key: &KeyPair, name: &str) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .serialize_request(key)
        .expect("CSR")
        .pem()
        .expect("PEM")
}

/// A TLS channel to the hub trusting `ca_pem`, presenting `identity` if given.
pub async fn channel(
    hub_url: &str,
    ca_pem: &str,
    identity: Option<&RawIdentity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    Endpoint::from_shared(hub_url.to_string())?
        .tls_config(tls)?
        .connect()
        .await
}

/// Register cluster `name` with `token` for `key`.
pub async fn register(
    hub_url: &str,
    ca_pem: &str,
    token: &str,
    name: &str,
    key: &KeyPair,
) -> Result<RawIdentity, tonic::Status> {
    let ch = channel(hub_url, ca_pem, None)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let answer = RegistrationClient::new(ch)
        .register(wire::RegisterRequest {
            token: token.into(),
            cluster_name: name.into(),
            labels: Default::default(),
            csr_pem: csr(key, name),
            agent_version: "raw".into(),
        })
        .await?
        .into_inner();
    Ok(RawIdentity {
        cluster_id: answer.cluster_id,
        cert_pem: answer.certificate_pem,
        key_pem: key.serialize_pem(),
    })
}

/// A client certificate that claims cluster `cluster_id` but comes from a CA the hub has
/// never seen.
pub fn foreign_identity(cluster_id: &str) -> RawIdentity {
    let ca_key = new_key();
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "Flotilla hub CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).expect("issuer");
    let key = new_key();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        format!("flotilla://cluster/{cluster_id}")
            .try_into()
            .expect("URI"),
    )];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    RawIdentity {
        cluster_id: cluster_id.into(),
        cert_pem: params.signed_by(&key, &issuer).expect("cert").pem(),
        key_pem: key.serialize_pem(),
    }
}

/// An open agent stream: what to send, and what the hub answers.
pub struct RawStream {
    pub tx: mpsc::Sender<wire::AgentMessage>,
    pub rx: tonic::Streaming<wire::HubMessage>,
}

impl RawStream {
    /// Open a stream on `channel` and say Hello holding nothing.
    pub async fn open(channel: Channel) -> Result<Self, tonic::Status> {
        let (tx, outbox) = mpsc::channel(16);
        tx.send(message(wire::agent_message::Kind::Hello(wire::Hello {
            agent_version: "raw".into(),
            kubernetes_version: String::new(),
            held: Vec::new(),
        })))
        .await
        .expect("a new outbox has room");
        let rx = AgentServiceClient::new(channel)
            .connect(ReceiverStream::new(outbox))
            .await?
            .into_inner();
        Ok(Self { tx, rx })
    }

    /// Send one message; the hub may already have closed the stream.
    pub async fn send(&self, kind: wire::agent_message::Kind) {
        let _ = self.tx.send(message(kind)).await;
    }

    /// Read until the hub ends the stream; returns the error it ended with, if any, and
    /// every message before it.
    pub async fn until_closed(&mut self) -> (Vec<wire::HubMessage>, Option<tonic::Status>) {
        let mut seen = Vec::new();
        loop {
            match self.rx.message().await {
                Ok(Some(m)) => seen.push(m),
                Ok(None) => return (seen, None),
                Err(e) => return (seen, Some(e)),
            }
        }
    }

    /// Read until `pick` accepts a message, skipping others.
    pub async fn next_matching<T>(
        &mut self,
        pick: impl Fn(wire::hub_message::Kind) -> Option<T>,
    ) -> Result<T, tonic::Status> {
        loop {
            match self.rx.message().await? {
                Some(wire::HubMessage { kind: Some(k) }) => {
                    if let Some(t) = pick(k) {
                        return Ok(t);
                    }
                }
                Some(_) => {}
                None => return Err(tonic::Status::cancelled("the hub closed the stream")),
            }
        }
    }
}

fn message(kind: wire::agent_message::Kind) -> wire::AgentMessage {
    wire::AgentMessage { kind: Some(kind) }
}
