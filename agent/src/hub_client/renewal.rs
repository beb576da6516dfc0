//! Certificate renewal over the live stream, as a small state machine a session drives: when
//! the renewal time comes (or the hub asks, with a trust update), make a new key pair and send
//! its CSR; take the answer only if it certifies that key; retry with backoff after a refusal
//! or silence, while the certificate is still valid.
//!
//! The machine lives as long as one session. A session that ends with a request unanswered
//! leaves nothing behind: the next one starts from the shared schedule in
//! [`super::credentials`], which is already due, and asks again right after connecting.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::credentials::{Change, Current, renew_at};
use crate::backoff::Backoff;
use crate::config::BackoffConfig;
use crate::error::AgentError;
use crate::identity::{cert_info, new_key_and_csr, public_key_of};

/// How long the hub may take to answer a renewal; less when the certificate has less left.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest wait for an answer, however close the expiry.
const MIN_ANSWER_TIMEOUT: Duration = Duration::from_millis(500);

/// The hub's answer to a renewal, as the domain sees it.
#[derive(Debug)]
pub(crate) struct Issued {
    pub cert_pem: String,
    pub ca_pem: String,
    /// Non-empty when the hub refused.
    pub error: String,
}

/// A request on its way: the new key stays here until its certificate comes back.
struct Pending {
    key_pem: String,
    public_key: Vec<u8>,
    answer_by: Instant,
}

/// One session's renewal state.
pub(super) struct Renewal {
    next_at: Instant,
    pending: Option<Pending>,
    backoff: Backoff,
}

impl Renewal {
    /// Starts from the shared schedule: renews at once if it is due.
    pub fn new(renew_at: Instant, backoff: BackoffConfig) -> Self {
        Self {
            next_at: renew_at,
            pending: None,
            backoff: Backoff::new(backoff),
        }
    }

    /// When [`Renewal::due`] should be called next.
    pub fn wake_at(&self) -> Instant {
        self.pending.as_ref().map_or(self.next_at, |p| p.answer_by)
    }

    /// Renew at the next wake-up, whatever the schedule says (the hub rotated its CA). A
    /// request on its way is forgotten; its answer would be ignored.
    pub fn now(&mut self) {
        self.pending = None;
        self.next_at = Instant::now();
    }

    /// The wake-up time came: gives up on an unanswered request, or returns a new CSR to send.
    pub fn due(&mut self, current: &Current) -> Result<Option<String>, AgentError> {
        if self.pending.take().is_some() {
            warn!("the hub did not answer the certificate renewal in time; retrying");
            self.retry_later(current);
            return Ok(None);
        }
        let left = current.remaining();
        if left.is_zero() {
            // Too late: the hub ends this stream now, and the agent registers again.
            self.next_at = Instant::now() + self.backoff.max();
            return Ok(None);
        }
        let made = new_key_and_csr(&current.identity.cluster_name)?;
        let public_key = public_key_of(&made.key_pem).map_err(AgentError::Credentials)?;
        let timeout = ANSWER_TIMEOUT.min(left / 2).max(MIN_ANSWER_TIMEOUT);
        info!(expires_in = ?left, "renewing the client certificate");
        self.pending = Some(Pending {
            key_pem: made.key_pem,
            public_key,
            answer_by: Instant::now() + timeout,
        });
        Ok(Some(made.csr_pem))
    }

    /// The hub answered: the change to keep, if the answer certifies the key asked about.
    pub fn answered(&mut self, issued: Issued, current: &Current) -> Option<Change> {
        let Some(pending) = &self.pending else {
            debug!("ignoring a certificate that was not asked for on this stream");
            return None;
        };
        if !issued.error.is_empty() {
            warn!(hub_said = %issued.error, "the hub refused to renew the client certificate; retrying");
            self.pending = None;
            self.retry_later(current);
            return None;
        }
        let info = match cert_info(&issued.cert_pem) {
            Ok(info) => info,
            Err(e) => {
                warn!(error = %e, "the renewed certificate is unusable; retrying");
                self.pending = None;
                self.retry_later(current);
                return None;
            }
        };
        if info.public_key != pending.public_key {
            debug!("ignoring a certificate for an earlier renewal request");
            return None;
        }
        let pending = self.pending.take().expect("checked above");
        let jitter = rand::random_range(-0.1..=0.1);
        let next = renew_at(Instant::now(), SystemTime::now(), info.not_after, jitter);
        self.next_at = next;
        self.backoff.reset();
        info!(renew_in = ?next.saturating_duration_since(Instant::now()), "client certificate renewed");
        Some(Change::Renewed {
            key_pem: pending.key_pem,
            cert_pem: issued.cert_pem,
            ca_pem: issued.ca_pem,
            timing: Current {
                not_after: Some(info.not_after),
                renew_at: next,
                ..current.clone()
            },
        })
    }

    /// Schedules another try after a backoff delay, well within the time left.
    fn retry_later(&mut self, current: &Current) {
        let left = current.remaining();
        let delay = self.backoff.next_delay().min(left / 2);
        self.next_at = Instant::now() + delay;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use rcgen::{CertificateParams, KeyPair};

    fn current_with(key: &KeyPair, lifetime: Duration) -> Current {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_after = (SystemTime::now() + lifetime).into();
        let cert = params.self_signed(key).unwrap();
        Current::new(Identity {
            cluster_id: "c-1".into(),
            cluster_name: "edge-1".into(),
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
            ca_pem: "ca".into(),
            hub_url: "https://h:1".into(),
        })
    }

    /// A certificate for the key of the CSR, as the hub would sign it.
    fn sign(csr_pem: &str, lifetime: Duration) -> String {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        csr.params.not_after = (SystemTime::now() + lifetime).into();
        let issuer_key = KeyPair::generate().unwrap();
        let issuer = rcgen::CertifiedIssuer::self_signed(
            CertificateParams::new(Vec::<String>::new()).unwrap(),
            issuer_key,
        )
        .unwrap();
        csr.signed_by(&issuer).unwrap().pem()
    }

    fn backoff() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
        }
    }

    #[test]
    fn takes_only_the_certificate_for_the_new_key() {
        let current = current_with(&KeyPair::generate().unwrap(), Duration::from_secs(600));
        let mut r = Renewal::new(Instant::now(), backoff());
        let csr = r.due(&current).unwrap().expect("a CSR");
        // A certificate for another key (an older request's) is not this answer.
        let stray = Issued {
            cert_pem: sign(
                &new_key_and_csr("edge-1").unwrap().csr_pem,
                Duration::from_secs(900),
            ),
            ca_pem: String::new(),
            error: String::new(),
        };
        assert!(r.answered(stray, &current).is_none());
        let issued = Issued {
            cert_pem: sign(&csr, Duration::from_secs(900)),
            ca_pem: "new-ca".into(),
            error: String::new(),
        };
        let Some(Change::Renewed {
            key_pem, timing, ..
        }) = r.answered(issued, &current)
        else {
            panic!("no renewal");
        };
        assert_ne!(key_pem, current.identity.key_pem, "a new key");
        assert!(timing.remaining() > Duration::from_secs(800));
        let wait = r.wake_at() - Instant::now();
        assert!(
            wait > Duration::from_secs(500) && wait < Duration::from_secs(700),
            "{wait:?}"
        );
    }

    #[test]
    fn a_refusal_or_silence_is_retried_soon_and_within_the_time_left() {
        let current = current_with(&KeyPair::generate().unwrap(), Duration::from_secs(60));
        let mut r = Renewal::new(Instant::now(), backoff());
        r.due(&current).unwrap().expect("a CSR");
        let refused = Issued {
            cert_pem: String::new(),
            ca_pem: String::new(),
            error: "try again later".into(),
        };
        assert!(r.answered(refused, &current).is_none());
        assert!(r.wake_at() <= Instant::now() + Duration::from_millis(10));
        r.due(&current).unwrap().expect("asks again");
        let answer_by = r.wake_at() - Instant::now();
        assert!(answer_by <= Duration::from_secs(30), "{answer_by:?}");
        // Silence: the next wake-up gives up on the request, and the one after asks again.
        assert_eq!(r.due(&current).unwrap(), None);
        assert!(r.wake_at() <= Instant::now() + Duration::from_millis(20));
        assert!(r.due(&current).unwrap().is_some());
    }

    #[test]
    fn an_expired_certificate_is_not_renewed_and_a_trust_update_renews_now() {
        let expired = current_with(&KeyPair::generate().unwrap(), Duration::ZERO);
        let mut r = Renewal::new(Instant::now(), backoff());
        assert_eq!(r.due(&expired).unwrap(), None);
        assert!(r.wake_at() > Instant::now());
        r.now();
        assert!(r.wake_at() <= Instant::now());
    }
}
