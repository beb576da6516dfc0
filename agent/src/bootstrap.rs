//! The bootstrap Secret of an agent installed with `kubectl apply` of the manifest that
//! `flotilla agent manifest` prints: `hubURL`, `caBundle` (PEM) and a registration `token`,
//! read at start (flags win over them) and read again whenever a token is needed later.
//!
//! *Invariant:* the token is never logged, and it does not stay at rest in the cluster: once
//! the agent holds an identity that has not expired, it deletes the `token` key (at start,
//! after every connection to the hub, and every few minutes, so a re-applied install loses it
//! again). While the certificate is expired the token is left alone: it is how the agent
//! registers again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cluster::{ApiError, Cluster};

/// The Secret key with the hub's URL.
pub(crate) const HUB_URL_KEY: &str = "hubURL";
/// The Secret key with the CA bundle to trust for the hub.
pub(crate) const CA_BUNDLE_KEY: &str = "caBundle";
/// The Secret key with the registration token.
pub(crate) const TOKEN_KEY: &str = "token";

/// How often the token key is looked for while nothing else prompts it.
const RECHECK_EVERY: Duration = Duration::from_secs(300);
/// Conflicting writers (a re-apply at the same moment) are outwaited this many times.
const REMOVE_ATTEMPTS: usize = 5;

/// What a bootstrap Secret holds; empty values count as absent.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct BootstrapValues {
    pub hub_url: Option<String>,
    pub ca_bundle: Option<String>,
    pub token: Option<String>,
}

impl fmt::Debug for BootstrapValues {
    // Hand-written so that the token never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapValues")
            .field("hub_url", &self.hub_url)
            .field("ca_bundle", &self.ca_bundle.as_ref().map(|_| "<pem>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The bootstrap Secret of the agent's namespace.
#[derive(Clone)]
pub(crate) struct BootstrapSecret {
    cluster: Cluster,
    name: String,
}

impl BootstrapSecret {
    pub fn new(cluster: &Cluster, name: &str) -> Self {
        Self {
            cluster: cluster.clone(),
            name: name.to_string(),
        }
    }

    /// For messages: `Secret namespace/name`.
    pub fn location(&self) -> String {
        format!("Secret {}/{}", self.cluster.namespace(), self.name)
    }

    /// The Secret's values, or `None` when there is no such Secret.
    pub async fn read(&self) -> Result<Option<BootstrapValues>, ApiError> {
        let Some(secret) = self.cluster.read_versioned_secret(&self.name).await? else {
            return Ok(None);
        };
        let text = |key: &str| {
            secret
                .data
                .get(key)
                .map(|v| String::from_utf8_lossy(v).trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Ok(Some(BootstrapValues {
            hub_url: text(HUB_URL_KEY),
            ca_bundle: text(CA_BUNDLE_KEY),
            token: text(TOKEN_KEY),
        }))
    }

    /// Deletes the `token` key if it is there; `Ok(true)` when it was removed now.
    pub async fn remove_token(&self) -> Result<bool, ApiError> {
        for _ in 0..REMOVE_ATTEMPTS {
            let Some(secret) = self.cluster.read_versioned_secret(&self.name).await? else {
                return Ok(false);
            };
            if !secret.data.contains_key(TOKEN_KEY) {
                return Ok(false);
            }
            if self
                .cluster
                .remove_secret_key(&self.name, TOKEN_KEY, &secret)
                .await?
            {
                return Ok(true);
            }
            debug!(secret = %self.location(), "the bootstrap Secret changed while removing its token; reading it again");
        }
        Err(ApiError::local(format!(
            "the {} kept changing while its token was being removed",
            self.location()
        )))
    }
}

/// Where a registration token comes from when one is needed: the configured one, else the
/// bootstrap Secret as it is at that moment (so a re-applied install counts without a restart).
#[derive(Clone, Default)]
pub(crate) struct TokenSource {
    configured: Option<String>,
    secret: Option<BootstrapSecret>,
}

impl TokenSource {
    pub fn new(configured: Option<String>, secret: Option<BootstrapSecret>) -> Self {
        Self {
            configured: configured.filter(|t| !t.is_empty()),
            secret,
        }
    }

    /// A token, or `None` when there is none right now.
    pub async fn token(&self) -> Option<String> {
        if let Some(token) = &self.configured {
            return Some(token.clone());
        }
        let secret = self.secret.as_ref()?;
        match secret.read().await {
            Ok(values) => values.and_then(|v| v.token),
            Err(e) => {
                warn!(secret = %secret.location(), error = %e, "could not read the bootstrap Secret for a registration token");
                None
            }
        }
    }

    /// Where a person should put a token, for messages.
    pub fn where_to_put_one(&self) -> String {
        match &self.secret {
            Some(s) => format!(
                "re-apply the install manifest from `flotilla agent manifest --token TOKEN` (it puts the token in the {}), with a fresh token from `flotilla token create`",
                s.location()
            ),
            None => "restart the agent with --token (or FLOTILLA_TOKEN) set to a fresh token from `flotilla token create`".into(),
        }
    }
}

/// Keeps the token key out of the bootstrap Secret while `identity_valid()`: now, whenever
/// `connected` is notified, and every few minutes, until `shutdown`.
pub(crate) async fn keep_token_removed(
    secret: BootstrapSecret,
    identity_valid: impl Fn() -> bool,
    connected: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        if identity_valid() {
            match secret.remove_token().await {
                Ok(true) => {
                    info!(secret = %secret.location(), "removed the registration token from the bootstrap Secret: this agent has its identity")
                }
                Ok(false) => {}
                Err(e) => {
                    warn!(secret = %secret.location(), error = %e, "could not remove the registration token from the bootstrap Secret; will try again")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = connected.notified() => {}
            _ = tokio::time::sleep(RECHECK_EVERY) => {}
        }
    }
}

/// The name a cluster gets without `--cluster-name`: `c-` and the first 12 hex digits of the
/// `kube-system` namespace's UID, lower case. That namespace lives as long as the cluster, so
/// re-installing the agent asks for the same name.
pub(crate) fn cluster_name_from_uid(uid: &str) -> Option<String> {
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 12).then(|| format!("c-{hex}"))
}

/// [`cluster_name_from_uid`] for this cluster.
pub(crate) async fn derive_cluster_name(cluster: &Cluster) -> Result<String, ApiError> {
    let uid = cluster.namespace_uid("kube-system").await?;
    cluster_name_from_uid(&uid)
        .ok_or_else(|| ApiError::local(format!("its uid {uid:?} has fewer than 12 hex digits")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_first_twelve_hex_digits() {
        assert_eq!(
            cluster_name_from_uid("6F1C2A9B-04D7-4E1F-9A0B-1234567890AB").as_deref(),
            Some("c-6f1c2a9b04d7")
        );
        assert_eq!(cluster_name_from_uid("abc"), None);
    }

    #[test]
    fn debug_hides_the_token() {
        let v = BootstrapValues {
            hub_url: Some("https://h:1".into()),
            ca_bundle: Some("-----BEGIN CERTIFICATE-----".into()),
            token: Some("id.s3cret".into()),
        };
        let text = format!("{v:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("BEGIN"),
            "{text}"
        );
    }
}
