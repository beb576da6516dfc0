//! Deleting what a deployment no longer wants, and removing a deployment altogether.
//!
//! *Invariant:* an object is deleted only if the live object carries this deployment's
//! `flotilla.dev/deployment-id` annotation; anything else was taken over by someone else (or
//! another bundle) and is left alone. The check and the delete are one decision: the delete
//! carries the `uid` and `resourceVersion` just read as preconditions, so an object another
//! bundle applied in between (a file moved from bundle A to bundle B in one commit) is refused
//! by the server with 409, read again, and found not ours. Objects whose delete failed stay in
//! the inventory so the next run tries again; nothing is ever forgotten while it may still be
//! ours.

use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::model::{Inventory, ObjectRef};
use crate::plan::is_owned_by;

/// Deletes `objects` (already in reverse apply order) where they are still ours. Returns the
/// ones that may still exist because something failed, in their original apply order.
pub(super) async fn prune_objects(
    cluster: &Cluster,
    deployment_id: &str,
    objects: Vec<ObjectRef>,
) -> Vec<ObjectRef> {
    let mut kept = Vec::new();
    for object in objects {
        if !prune_one(cluster, deployment_id, &object).await {
            kept.push(object);
        }
    }
    kept.reverse();
    kept
}

/// Reads (and decides) again at most this often when the object keeps changing under us.
const ATTEMPTS: u32 = 3;

/// Returns whether the object is settled: deleted, gone already, or not ours.
async fn prune_one(cluster: &Cluster, deployment_id: &str, object: &ObjectRef) -> bool {
    let resolved = match cluster.resolve(&object.api_version, &object.kind).await {
        Ok(Some(r)) => r,
        // The kind is not served any more (its CRD went away), so neither is the object.
        Ok(None) => return true,
        Err(e) => {
            warn!(%object, error = %e, "could not look up a kind to prune; will retry");
            return false;
        }
    };
    for _ in 0..ATTEMPTS {
        let live = match cluster
            .get_object(&resolved, &object.namespace, &object.name)
            .await
        {
            Ok(Some(live)) => live,
            Ok(None) => return true,
            Err(e) => {
                warn!(%object, error = %e, "could not read an object to prune; will retry");
                return false;
            }
        };
        if !is_owned_by(&live, deployment_id) {
            info!(%object, "not pruning an object this deployment does not own");
            return true;
        }
        if live.pointer("/metadata/deletionTimestamp").is_some() {
            return true;
        }
        match cluster
            .delete_object(&resolved, &object.namespace, &object.name, &live)
            .await
        {
            Ok(()) => {
                info!(%object, "pruned");
                return true;
            }
            // Changed since it was read (perhaps taken over): read it and decide again.
            Err(e) if e.is_conflict() => {
                debug!(%object, error = %e, "the object changed before its delete; reading it again");
            }
            Err(e) => {
                warn!(%object, error = %e, "could not prune an object; will retry");
                return false;
            }
        }
    }
    warn!(%object, "the object kept changing while being pruned; will retry");
    false
}

/// Prunes everything in the inventory, then deletes the inventory itself. On failure, returns
/// the inventory of what is left (already written back, when possible).
pub(super) async fn remove(cluster: &Cluster, mut inventory: Inventory) -> Result<(), Inventory> {
    let objects: Vec<ObjectRef> = inventory.objects.iter().rev().cloned().collect();
    let kept = prune_objects(cluster, &inventory.deployment_id, objects).await;
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
