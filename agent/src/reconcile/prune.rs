//! Deleting what a deployment no longer wants, and removing a deployment altogether: by
//! deleting its objects, or, when its content says `keepResources`, by releasing them (they
//! stay on the cluster with the ownership marks taken off, see [`crate::plan::release_patch`]).
//!
//! *Invariant:* an object is deleted or released only if the live object carries this
//! deployment's `flotilla.dev/deployment-id` annotation; anything else was taken over by
//! someone else (or another bundle) and is left alone. The check and the write are one
//! decision: the delete carries the `uid` and `resourceVersion` just read as preconditions,
//! and the release patch the `resourceVersion`, so an object another bundle applied in between
//! (a file moved from bundle A to bundle B in one commit) is refused by the server with 409,
//! read again, and found not ours. Objects whose delete or release failed stay in the
//! inventory so the next run tries again; nothing is ever forgotten while it may still be ours.
//! A released object carries no annotation, so no later prune can ever delete it.

use tracing::{debug, info, warn};

use crate::cluster::{ApiError, Cluster, Resolved};
use crate::model::{Inventory, ObjectRef};
use crate::plan::{is_owned_by, release_patch};

/// What a removal does with each object that is still the deployment's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Disposal {
    /// Delete it: prune.
    Delete,
    /// Leave it on the cluster, unowned (fleet.yaml `keepResources`).
    Release,
}

/// How one object came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Deleted or released now.
    Done,
    /// Nothing to do: gone already, being deleted, or not ours.
    Settled,
    /// Something failed: it may still be ours.
    Failed,
}

/// Deletes `objects` (already in reverse apply order) where they are still ours. Returns the
/// ones that may still exist because something failed, in their original apply order.
pub(super) async fn prune_objects(
    cluster: &Cluster,
    deployment_id: &str,
    objects: Vec<ObjectRef>,
) -> Vec<ObjectRef> {
    dispose_all(cluster, deployment_id, objects, Disposal::Delete)
        .await
        .1
}

/// Disposes of `objects` in the order given. Returns how many were deleted or released now,
/// and the ones that may still be ours because something failed, in reverse of that order.
async fn dispose_all(
    cluster: &Cluster,
    deployment_id: &str,
    objects: Vec<ObjectRef>,
    disposal: Disposal,
) -> (usize, Vec<ObjectRef>) {
    let (mut done, mut kept) = (0, Vec::new());
    for object in objects {
        match dispose_one(cluster, deployment_id, &object, disposal).await {
            Outcome::Done => done += 1,
            Outcome::Settled => {}
            Outcome::Failed => kept.push(object),
        }
    }
    kept.reverse();
    (done, kept)
}

/// Reads (and decides) again at most this often when the object keeps changing under us.
const ATTEMPTS: u32 = 3;

async fn dispose_one(
    cluster: &Cluster,
    deployment_id: &str,
    object: &ObjectRef,
    disposal: Disposal,
) -> Outcome {
    let resolved = match cluster.resolve(&object.api_version, &object.kind).await {
        Ok(Some(r)) => r,
        // The kind is not served any more (its CRD went away), so neither is the object.
        Ok(None) => return Outcome::Settled,
        Err(e) => {
            warn!(%object, error = %e, "could not look up the kind of an object to remove; will retry");
            return Outcome::Failed;
        }
    };
    for _ in 0..ATTEMPTS {
        let live = match cluster
            .get_object(&resolved, &object.namespace, &object.name)
            .await
        {
            Ok(Some(live)) => live,
            Ok(None) => return Outcome::Settled,
            Err(e) => {
                warn!(%object, error = %e, "could not read an object to remove; will retry");
                return Outcome::Failed;
            }
        };
        if !is_owned_by(&live, deployment_id) {
            info!(%object, "leaving alone an object this deployment does not own");
            return Outcome::Settled;
        }
        if live.pointer("/metadata/deletionTimestamp").is_some() {
            return Outcome::Settled;
        }
        match write(cluster, &resolved, object, &live, disposal).await {
            Ok(()) => {
                match disposal {
                    Disposal::Delete => info!(%object, "pruned"),
                    Disposal::Release => info!(%object, "released: left on the cluster, unowned"),
                }
                return Outcome::Done;
            }
            // Deleted by someone else since it was read.
            Err(e) if e.is_not_found() => return Outcome::Settled,
            // Changed since it was read (perhaps taken over): read it and decide again.
            Err(e) if e.is_conflict() => {
                debug!(%object, error = %e, "the object changed before it could be removed; reading it again");
            }
            Err(e) => {
                warn!(%object, error = %e, ?disposal, "could not remove an object; will retry");
                return Outcome::Failed;
            }
        }
    }
    warn!(%object, "the object kept changing while being removed; will retry");
    Outcome::Failed
}

/// The one write of a disposal, conditional on the object being exactly as `live`.
async fn write(
    cluster: &Cluster,
    resolved: &Resolved,
    object: &ObjectRef,
    live: &serde_json::Value,
    disposal: Disposal,
) -> Result<(), ApiError> {
    match disposal {
        Disposal::Delete => {
            cluster
                .delete_object(resolved, &object.namespace, &object.name, live)
                .await
        }
        Disposal::Release => {
            let patch = release_patch(live);
            cluster
                .merge_patch_object(resolved, &object.namespace, &object.name, &patch)
                .await
        }
    }
}

/// Deletes or releases everything in the inventory (in reverse apply order), then deletes the
/// inventory itself. On failure, returns the inventory of what is left (already written back,
/// when possible, with its spec: a retry after a restart disposes the same way).
pub(super) async fn remove(
    cluster: &Cluster,
    mut inventory: Inventory,
    disposal: Disposal,
) -> Result<(), Inventory> {
    let objects: Vec<ObjectRef> = inventory.objects.iter().rev().cloned().collect();
    let (done, kept) = dispose_all(cluster, &inventory.deployment_id, objects, disposal).await;
    match disposal {
        Disposal::Delete => info!(
            pruned = done,
            left = kept.len(),
            "pruned the deployment's objects"
        ),
        Disposal::Release => info!(
            released = done,
            left = kept.len(),
            "released the deployment's objects: they stay on the cluster without ownership marks"
        ),
    }
    let unchanged = kept == inventory.objects;
    inventory.objects = kept;
    if inventory.objects.is_empty() {
        return match cluster.delete_inventory(&inventory.deployment_id).await {
            Ok(()) => Ok(()),
            Err(e) => {
                warn!(error = %e, "could not delete the inventory; will retry");
                Err(inventory)
            }
        };
    }
    if !unchanged && let Err(e) = cluster.write_inventory(&inventory).await {
        warn!(error = %e, "could not update the inventory");
    }
    Err(inventory)
}
