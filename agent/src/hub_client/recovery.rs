//! An agent whose certificate expired (it was offline past the expiry, or renewing failed)
//! registers again: the stored key and cluster name in a CSR, with a registration token, and
//! the hub re-issues a certificate for the same cluster id. Without a token it says once what
//! to do (and again every few minutes) and keeps looking, slowly: a re-applied install puts a
//! token in the bootstrap Secret, which is read again on every try.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::HubClient;
use super::credentials::Change;
use super::register::{Attempt, Registration};
use crate::backoff::Backoff;
use crate::bootstrap::TokenSource;

/// How often the "no token" error is repeated while the agent waits for one.
const REMIND_EVERY: Duration = Duration::from_secs(600);

/// What registering again needs besides the stored identity.
pub(crate) struct Recovery {
    pub labels: BTreeMap<String, String>,
    pub tokens: TokenSource,
}

impl HubClient {
    /// Registers again with the stored key until it works; `false` when shutdown came first.
    pub(super) async fn recover(&self, shutdown: &CancellationToken) -> bool {
        let mut backoff = Backoff::new(self.backoff);
        let mut reminded: Option<Instant> = None;
        loop {
            let delay = match self.recovery.tokens.token().await {
                None => {
                    if reminded.is_none_or(|t| t.elapsed() >= REMIND_EVERY) {
                        reminded = Some(Instant::now());
                        error!(
                            identity = %self.credentials.location(),
                            what_to_do = %self.recovery.tokens.where_to_put_one(),
                            "the client certificate expired and there is no registration token to register \
                             again with: the agent waits for one"
                        );
                    } else {
                        debug!("still no registration token");
                    }
                    backoff.max()
                }
                Some(token) => match self.register_again(token, shutdown).await {
                    Ok(()) => {
                        self.connected.notify_one();
                        return true;
                    }
                    Err(Attempt::Fatal(e)) => {
                        error!(
                            error = %e,
                            what_to_do = %self.recovery.tokens.where_to_put_one(),
                            "could not register again after the certificate expired; retrying slowly"
                        );
                        backoff.max()
                    }
                    Err(Attempt::Retry(why)) => {
                        let delay = backoff.next_delay();
                        warn!(error = %why, ?delay, "could not reach the hub to register again; retrying");
                        delay
                    }
                },
            };
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn register_again(
        &self,
        token: String,
        shutdown: &CancellationToken,
    ) -> Result<(), Attempt> {
        let stored = self.credentials.identity();
        let registration = Registration {
            hub: self.credentials.hub().clone(),
            trust: self.credentials.registration_trust(),
            token,
            cluster_name: stored.cluster_name.clone(),
            labels: self.recovery.labels.clone(),
        };
        let identity = registration.register_again(&stored).await?;
        info!(cluster_id = %identity.cluster_id, cluster = %identity.cluster_name, "registered again with the stored key");
        // Cut short only by shutdown, which `run` notices next.
        self.credentials
            .apply(Change::Replaced(identity), shutdown)
            .await;
        Ok(())
    }
}
