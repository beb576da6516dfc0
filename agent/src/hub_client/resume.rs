//! Held deployments after a (re)start: the hub does not resend a content the agent's `Hello`
//! reports as held, yet the agent keeps no manifests across restarts. So each session lists
//! the held contents that no worker has ([`resumable`]: inventories whose `contentHash` names
//! their recorded `spec`), and once the hub's `SyncComplete` says its answer to `Hello` is all
//! queued, fetches their manifests (the cache first, then `FetchManifests`, hash-verified) and
//! hands them to the reconciler to watch, not to apply.
//!
//! *Invariant:* a held content never displaces what the hub sent: it is queued after the
//! hub's answer to `Hello`, dropped from a batch that has other word on the same deployment,
//! and given only to a deployment without a worker.
//!
//! A refusal of the fetch (the hub replaced the content meanwhile: its new content or Removal
//! is on its way) costs only the watching of that deployment, never the session; other errors
//! end the session, and the next one tries again.

use tonic::Code;
use tonic::transport::Channel;
use tracing::{info, warn};

use super::dispatch::collect;
use super::manifests::Fetched;
use super::{HubClient, SessionError};
use crate::model::{Deployment, Desired, Inventory};

/// The held contents to watch again: inventories whose `contentHash` is their recorded `spec`'s
/// (a settled run of it) and whose deployment has no target (`targets` from the reconciler).
pub(super) fn resumable(
    inventories: &[Inventory],
    targets: &[(String, Option<String>)],
) -> Vec<Deployment> {
    inventories
        .iter()
        .filter(|inv| !targets.iter().any(|(id, _)| *id == inv.deployment_id))
        .filter_map(|inv| {
            let spec = inv.spec.as_ref()?;
            let settled = !inv.content_hash.is_empty()
                && spec.content_hash == inv.content_hash
                && spec.deployment_id == inv.deployment_id;
            settled.then(|| spec.clone())
        })
        .collect()
}

/// Whether a fetch error says "not these manifests", not "not now".
fn refused(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::PermissionDenied | Code::NotFound | Code::InvalidArgument
    )
}

impl HubClient {
    /// Fetches the manifests of the `held` contents that still lack a worker and hands them
    /// over to be watched. One fetch for all; if the hub refuses it, one per deployment.
    pub(super) async fn resume(
        &self,
        channel: &Channel,
        held: Vec<Deployment>,
    ) -> Result<(), SessionError> {
        let held: Vec<Deployment> = held
            .into_iter()
            .filter(|d| !self.reconciler.has_worker(&d.deployment_id))
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        if let Some(fetched) = self.fetch_held(channel, &held).await? {
            self.watch_again(held, &fetched);
            return Ok(());
        }
        for d in held {
            match self.fetch_held(channel, std::slice::from_ref(&d)).await? {
                Some(fetched) => self.watch_again(vec![d], &fetched),
                None => warn!(
                    deployment = %d.deployment_id,
                    content_hash = %d.content_hash,
                    "the hub refused the manifests of a held content; not watching it until the hub sends its content"
                ),
            }
        }
        Ok(())
    }

    /// The manifests of `held`, or `None` when the hub refuses them.
    async fn fetch_held(
        &self,
        channel: &Channel,
        held: &[Deployment],
    ) -> Result<Option<Fetched>, SessionError> {
        match self.manifests_of(channel, held).await {
            Ok(fetched) => Ok(Some(fetched)),
            Err(s) if refused(&s) => Ok(None),
            Err(s) => Err(SessionError::Hub(format!(
                "fetching the manifests of held contents: {}: {}",
                s.code(),
                s.message()
            ))),
        }
    }

    fn watch_again(&self, held: Vec<Deployment>, fetched: &Fetched) {
        for d in held {
            match collect(&d, fetched) {
                Ok(manifests) => {
                    info!(deployment = %d.deployment_id, revision = %d.revision, objects = manifests.len(), "watching a held content again");
                    self.reconciler.resume(Desired {
                        deployment: d,
                        manifests,
                    });
                }
                Err(why) => {
                    warn!(deployment = %d.deployment_id, error = %why, "a held content cannot be watched again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(id: &str, hash: &str, spec_hash: Option<&str>) -> Inventory {
        Inventory {
            deployment_id: id.into(),
            content_hash: hash.into(),
            spec: spec_hash.map(|h| Deployment {
                deployment_id: id.into(),
                content_hash: h.into(),
                ..Deployment::default()
            }),
            ..Inventory::default()
        }
    }

    #[test]
    fn only_settled_contents_without_a_worker_are_watched_again() {
        let inventories = [
            inventory("settled", "h", Some("h")),
            inventory("mid-apply", "", Some("h")),
            inventory("no-spec", "h", None),
            inventory("other-spec", "h", Some("g")),
            inventory("has-worker", "h", Some("h")),
        ];
        let targets = [("has-worker".to_string(), None)];
        let ids: Vec<String> = resumable(&inventories, &targets)
            .into_iter()
            .map(|d| d.deployment_id)
            .collect();
        assert_eq!(ids, ["settled"]);
    }
}
