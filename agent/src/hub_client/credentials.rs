//! The identity the agent presents to the hub right now, the CAs it trusts for the hub, and
//! when to renew. Every session builds its endpoint from here, so a renewed certificate or a
//! new CA bundle counts from the next connection on, while the stream it arrived on stays up.
//!
//! Changes (a renewed certificate, a trust update, a re-registration) are saved to the
//! identity store first, retrying while the store is unavailable, and only then switched to,
//! one at a time in the order they came (`Keeper`).
//!
//! *Invariant:* the renewal time is measured from when the agent received or loaded the
//! certificate, never from its `notBefore`: the hub backdates that to tolerate clock skew.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{error, info, warn};

use super::register::endpoint;
use crate::config::{BackoffConfig, HubAddress};
use crate::error::AgentError;
use crate::identity::{Identity, IdentityStore, cert_info, patiently};

/// Renew at this share of the lifetime left when the certificate arrived...
const RENEW_AT: f64 = 2.0 / 3.0;
/// ...give or take this share of that, so that a fleet does not renew in one wave.
const JITTER: f64 = 0.1;

/// The identity in use and its timing.
#[derive(Clone, Debug)]
pub(crate) struct Current {
    pub identity: Identity,
    /// `None` when the certificate is unreadable: treated as expired.
    pub not_after: Option<SystemTime>,
    pub renew_at: Instant,
}

impl Current {
    /// Times a certificate received (or loaded) just now.
    pub fn new(identity: Identity) -> Self {
        let not_after = match cert_info(&identity.cert_pem) {
            Ok(info) => Some(info.not_after),
            Err(e) => {
                warn!(error = %e, "the client certificate is unreadable; treating it as expired");
                None
            }
        };
        let jitter = rand::random_range(-JITTER..=JITTER);
        let renew_at = not_after.map_or_else(Instant::now, |t| {
            renew_at(Instant::now(), SystemTime::now(), t, jitter)
        });
        Self {
            identity,
            not_after,
            renew_at,
        }
    }

    /// How long the certificate is still valid by this machine's clock.
    pub fn remaining(&self) -> Duration {
        self.not_after
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or_default()
    }
}

/// When to renew a certificate received at `(received, received_wall)` that expires at
/// `not_after`: at [`RENEW_AT`] of the time left then, stretched by `jitter` (±[`JITTER`]).
pub(crate) fn renew_at(
    received: Instant,
    received_wall: SystemTime,
    not_after: SystemTime,
    jitter: f64,
) -> Instant {
    let left = not_after.duration_since(received_wall).unwrap_or_default();
    received + left.mul_f64(RENEW_AT * (1.0 + jitter.clamp(-JITTER, JITTER)))
}

/// A change of identity, applied to the identity current when its turn comes.
#[derive(Debug)]
pub(crate) enum Change {
    /// A renewed certificate for a new key, timed when it arrived.
    Renewed {
        key_pem: String,
        cert_pem: String,
        /// Empty: keep the bundle held.
        ca_pem: String,
        timing: Current,
    },
    /// The hub's CA bundle changed.
    Trust { ca_pem: String },
    /// A whole new identity (registered again).
    Replaced(Identity),
}

/// The identity shared by all sessions.
pub(crate) struct Credentials {
    hub: HubAddress,
    /// The CA configured by flag or bootstrap Secret.
    configured_ca: Option<String>,
    current: Mutex<Current>,
    /// Moves on with every new certificate, so connections made with an older one can be
    /// replaced.
    generation: AtomicU64,
    store: IdentityStore,
    backoff: BackoffConfig,
    changes: mpsc::UnboundedSender<Change>,
    /// Serializes save-then-switch.
    writing: tokio::sync::Mutex<()>,
}

/// Applies queued [`Change`]s in order; run it with [`Keeper::run`].
pub(crate) struct Keeper {
    credentials: Arc<Credentials>,
    changes: mpsc::UnboundedReceiver<Change>,
}

impl Credentials {
    pub fn new(
        hub: HubAddress,
        configured_ca: Option<String>,
        identity: Identity,
        store: IdentityStore,
        backoff: BackoffConfig,
    ) -> (Arc<Self>, Keeper) {
        let (changes, queued) = mpsc::unbounded_channel();
        let credentials = Arc::new(Self {
            hub,
            configured_ca,
            current: Mutex::new(Current::new(identity)),
            generation: AtomicU64::new(0),
            store,
            backoff,
            changes,
            writing: tokio::sync::Mutex::default(),
        });
        let keeper = Keeper {
            credentials: credentials.clone(),
            changes: queued,
        };
        (credentials, keeper)
    }

    pub fn current(&self) -> Current {
        self.current.lock().expect("not poisoned").clone()
    }

    pub fn identity(&self) -> Identity {
        self.current().identity
    }

    /// Counts the certificates used so far (see [`Credentials::apply`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether the certificate has expired (or is unreadable) by this machine's clock.
    pub fn expired(&self) -> bool {
        self.current().remaining().is_zero()
    }

    /// Where the identity is stored, for messages.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// The hub address.
    pub fn hub(&self) -> &HubAddress {
        &self.hub
    }

    /// A mutual-TLS endpoint with the current identity, trusting [`Self::stream_trust`].
    pub fn endpoint(&self) -> Result<Endpoint, AgentError> {
        let identity = self.identity();
        endpoint(&self.hub, &self.stream_trust(), Some(&identity))
    }

    /// The CAs for connections with the certificate: the bundle the hub gave (it follows CA
    /// rotations); the configured CA only while there is none.
    pub fn stream_trust(&self) -> Vec<String> {
        let from_hub = self.identity().ca_pem;
        stream_trust(self.configured_ca.as_deref(), &from_hub)
    }

    /// The CAs for registering again: both the configured CA (a re-applied install may carry
    /// a newer one) and the hub's bundle.
    pub fn registration_trust(&self) -> Vec<String> {
        let from_hub = self.identity().ca_pem;
        let mut trust: Vec<String> = self.configured_ca.iter().cloned().collect();
        trust.push(from_hub);
        trust.retain(|p| !p.trim().is_empty());
        trust.dedup();
        trust
    }

    /// Queues a change for the [`Keeper`]; sessions do not wait for the store.
    pub fn submit(&self, change: Change) {
        // Err only after the keeper stopped, at shutdown.
        let _ = self.changes.send(change);
    }

    /// Saves the changed identity, then uses it. `false` when shutdown came first.
    pub async fn apply(&self, change: Change, shutdown: &CancellationToken) -> bool {
        let _turn = self.writing.lock().await;
        let new_certificate = !matches!(change, Change::Trust { .. });
        let next = {
            let current = self.current();
            match change {
                Change::Renewed {
                    key_pem,
                    cert_pem,
                    ca_pem,
                    mut timing,
                } => {
                    timing.identity = Identity {
                        key_pem,
                        cert_pem,
                        ca_pem: non_empty_or(ca_pem, current.identity.ca_pem),
                        ..current.identity
                    };
                    timing
                }
                Change::Trust { ca_pem } => Current {
                    identity: Identity {
                        ca_pem,
                        ..current.identity
                    },
                    ..current
                },
                Change::Replaced(identity) => Current::new(identity),
            }
        };
        let saved = patiently(self.backoff, shutdown, "write", || {
            self.store.save(&next.identity)
        })
        .await;
        match saved {
            Ok(Some(())) => info!(store = %self.store.location(), "stored the agent identity"),
            Ok(None) => return false,
            // Still valid for this process; a restart would fall back to the stored one.
            Err(e) => error!(error = %e, "could not store the changed identity; using it anyway"),
        }
        *self.current.lock().expect("not poisoned") = next;
        if new_certificate {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        true
    }
}

impl Keeper {
    /// Applies changes until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let change = tokio::select! {
                _ = shutdown.cancelled() => return,
                change = self.changes.recv() => change,
            };
            let Some(change) = change else { return };
            if !self.credentials.apply(change, &shutdown).await {
                return;
            }
        }
    }
}

fn non_empty_or(value: String, fallback: String) -> String {
    if value.trim().is_empty() {
        fallback
    } else {
        value
    }
}

/// The hub's bundle when there is one, else the configured CA, else the platform's roots
/// (an empty list).
fn stream_trust(configured: Option<&str>, from_hub: &str) -> Vec<String> {
    [Some(from_hub), configured]
        .into_iter()
        .flatten()
        .find(|p| !p.trim().is_empty())
        .map(str::to_owned)
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hubs_bundle_wins_for_streams_then_the_configured_ca_then_platform_roots() {
        assert_eq!(stream_trust(Some("A"), "B"), ["B"]);
        assert_eq!(stream_trust(Some("A"), " "), ["A"]);
        assert!(stream_trust(None, "").is_empty());
    }

    #[test]
    fn renewal_comes_at_two_thirds_of_the_time_left_on_arrival_with_jitter() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let at = |jitter: f64, left: u64| {
            renew_at(now, wall, wall + Duration::from_secs(left), jitter) - now
        };
        assert_eq!(at(0.0, 3), Duration::from_secs(2));
        assert_eq!(at(0.0, 86_400), Duration::from_secs(57_600));
        assert_eq!(at(0.1, 300), Duration::from_secs(220));
        assert_eq!(at(-0.1, 300), Duration::from_secs(180));
        // Jitter beyond the bound is clamped; an expired certificate is renewed at once.
        assert_eq!(at(5.0, 300), Duration::from_secs(220));
        assert_eq!(renew_at(now, wall, wall - Duration::from_secs(9), 0.0), now);
    }
}
