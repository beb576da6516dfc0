//! The agent's current credentials for the hub, and their renewal.
//!
//! The certificate is short-lived. At about two thirds of its remaining life (measured from
//! when the agent got it, with ±10% jitter so a fleet does not renew at once) the session
//! sends a `RenewCertificate` with a CSR for a NEW key; the answer is stored in the identity
//! store and used for every new connection. The live stream is kept: the hub extends its
//! life to the new certificate's. A `TrustUpdate` (CA rotation) replaces the CA bundle and
//! may ask for a renewal at once.
//!
//! *Invariant:* a new key is only ever written to the identity store together with the
//! certificate the hub issued for it.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::time::Instant;
use tonic::transport::Endpoint;
use tracing::{info, warn};

use super::register::{endpoint, trust_for};
use crate::config::HubAddress;
use crate::error::AgentError;
use crate::identity::{Identity, IdentityStore, new_key_and_csr};

/// How long a renewal may wait for its answer before it is sent again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause after a refused renewal.
const RETRY_AFTER_REFUSAL: Duration = Duration::from_secs(10);

struct Current {
    identity: Identity,
    /// Counts certificate changes, so connections made with an older one can be replaced.
    generation: u64,
    renew_at: Instant,
    /// The key of a renewal in flight.
    pending_key: Option<String>,
}

/// What the agent presents to the hub, shared by every session.
pub(crate) struct Credentials {
    hub: HubAddress,
    configured_ca: Option<String>,
    store: IdentityStore,
    current: Mutex<Current>,
}

impl Credentials {
    pub fn new(
        hub: HubAddress,
        configured_ca: Option<String>,
        store: IdentityStore,
        identity: Identity,
    ) -> Self {
        let renew_at = renewal_time(&identity.cert_pem);
        Self {
            hub,
            configured_ca,
            store,
            current: Mutex::new(Current {
                identity,
                generation: 0,
                renew_at,
                pending_key: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A TLS endpoint with the current certificate and trust.
    pub fn endpoint(&self) -> Result<Endpoint, AgentError> {
        let id = self.lock().identity.clone();
        let trust = trust_for(self.configured_ca.as_deref(), Some(&id.ca_pem));
        endpoint(&self.hub, &trust, Some(&id))
    }

    /// Moves on with every new certificate.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// When the next renewal (or the retry of one in flight) is due.
    pub fn renew_at(&self) -> Instant {
        self.lock().renew_at
    }

    /// Make a new key and the CSR to send for it; the key waits for the hub's certificate.
    pub fn start_renewal(&self) -> Result<String, AgentError> {
        let mut cur = self.lock();
        let made = new_key_and_csr(&cur.identity.cluster_name)?;
        cur.pending_key = Some(made.key_pem);
        cur.renew_at = Instant::now() + ANSWER_TIMEOUT;
        Ok(made.csr_pem)
    }

    /// Ask for a renewal as soon as the session can send one.
    pub fn renew_now(&self) {
        self.lock().renew_at = Instant::now();
    }

    /// The hub's answer to a renewal: store and use the new certificate, or try again later.
    pub async fn issued(&self, certificate_pem: String, ca_bundle_pem: String, error: String) {
        let renewed = {
            let mut cur = self.lock();
            let Some(key_pem) = cur.pending_key.take() else {
                warn!("a certificate arrived without a renewal in flight; ignored");
                return;
            };
            if !error.is_empty() || certificate_pem.is_empty() {
                warn!(error = %error, "the hub refused to renew the certificate; retrying");
                cur.renew_at = Instant::now() + RETRY_AFTER_REFUSAL;
                return;
            }
            let mut identity = cur.identity.clone();
            identity.key_pem = key_pem;
            identity.cert_pem = certificate_pem;
            if !ca_bundle_pem.trim().is_empty() {
                identity.ca_pem = ca_bundle_pem;
            }
            identity
        };
        // Stored before it is used: a restart must find the key that matches the certificate.
        if let Err(e) = self.store.save(&renewed).await {
            warn!(error = %e.error, "could not store the renewed certificate; keeping the current one");
            self.lock().renew_at = Instant::now() + RETRY_AFTER_REFUSAL;
            return;
        }
        let mut cur = self.lock();
        cur.renew_at = renewal_time(&renewed.cert_pem);
        cur.identity = renewed;
        cur.generation += 1;
        info!(next_renewal_in = ?cur.renew_at.saturating_duration_since(Instant::now()), "client certificate renewed");
    }

    /// The hub's CAs changed: store the new bundle for future connections.
    pub async fn trust(&self, ca_bundle_pem: String) {
        if ca_bundle_pem.trim().is_empty() {
            return;
        }
        let updated = {
            let mut cur = self.lock();
            if cur.identity.ca_pem == ca_bundle_pem {
                return;
            }
            cur.identity.ca_pem = ca_bundle_pem;
            cur.identity.clone()
        };
        match self.store.save(&updated).await {
            Ok(()) => info!("the hub's CA bundle changed; stored"),
            Err(e) => warn!(error = %e.error, "could not store the hub's new CA bundle"),
        }
    }
}

/// When to renew a certificate received now: at about two thirds of its remaining life.
fn renewal_time(cert_pem: &str) -> Instant {
    let now = Instant::now();
    let Some(not_after) = not_after(cert_pem) else {
        warn!("cannot read the certificate's expiry; renewing now");
        return now;
    };
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let left = (not_after as f64 - unix_now).max(0.0);
    let jitter = rand::rng().random_range(0.9..1.1);
    now + Duration::from_secs_f64(left * 2.0 / 3.0 * jitter)
}

/// Unix seconds when the PEM certificate expires.
pub(crate) fn not_after(cert_pem: &str) -> Option<i64> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(ttl: Duration) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        // Backdated like the hub's: the lifetime counts from now, not from not_before.
        p.not_before = now - Duration::from_secs(300);
        p.not_after = now + ttl;
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn renews_at_two_thirds_of_the_remaining_life_not_from_not_before() {
        let start = Instant::now();
        let at = renewal_time(&cert(Duration::from_secs(30))) - start;
        assert!(
            at >= Duration::from_secs(17) && at <= Duration::from_secs(23),
            "{at:?}"
        );
        assert!(renewal_time("not a certificate") <= Instant::now());
        assert!(not_after(&cert(Duration::from_secs(60))).is_some());
    }
}
