//! Watching again what the cluster held when the agent started: a deployment whose inventory
//! names a settled content, handed over with that content's manifests
//! ([`super::Reconciler::resume`]), is taken up as if a run of it had just ended. Each object's
//! kind is resolved, its body built as an apply would build it, the watches of its types are
//! started, and each object is read and checked for drift with a dry-run apply, in apply order:
//! health, Modified, Missing, or with `correctDrift` put right (only what drifted is applied).
//!
//! *Invariant:* the inventory is only read here, never written: its `contentHash` keeps naming
//! the content the cluster holds, so the next `Hello` reports the same and the hub resends
//! nothing. A content the inventory no longer names is not watched (the worker ends).
//!
//! An object that is absent is Missing unless a dry run of its body is refused as invalid: then
//! the last run could not apply it either (a settled content may have such objects), and it is
//! Failed with the server's reason, as that run reported it.

use std::sync::Arc;

use serde_json::Value;
use tracing::{info, warn};

use super::observe::{Applied, Observed, Tracked};
use super::{Step, Worker};
use crate::cluster::{ApiError, Cluster, OwnedWatches};
use crate::drift::Fingerprint;
use crate::metrics::Metrics;
use crate::model::{Deployment, Desired, Inventory, ObjectRef, ObjectState, ObjectStatus};
use crate::plan::{applied_body, apply_order, manifest_head};
use crate::status::summarize;

impl Worker {
    /// Takes up `held` if the inventory still names it; reports what its objects are doing.
    pub(super) async fn resume(
        &mut self,
        held: Arc<Desired>,
        inventory: Inventory,
        corrections: &[(ObjectRef, u32)],
    ) -> Step {
        let inner = self.reconciler.inner.clone();
        let deployment = &held.deployment;
        if inventory.content_hash != deployment.content_hash {
            info!(held = %inventory.content_hash, "the content to watch again is no longer the one held");
            return Step::Removed;
        }
        self.inventory = Some(inventory);
        let rx = self.rx.clone();
        let superseded = move || rx.has_changed().unwrap_or(true);
        let looked = look_again(
            &inner.cluster,
            &inner.metrics,
            &inner.watches,
            &held,
            corrections,
            &superseded,
        )
        .await;
        match looked {
            Ok(Some(observed)) => {
                let status = summarize(deployment, observed.statuses());
                info!(revision = %deployment.revision, objects = observed.objects.len(), state = ?status.state, "watching the held content again");
                inner.board.publish(status);
                self.observed = Some(observed);
                Step::Done
            }
            Ok(None) => Step::Done,
            Err(e) => {
                warn!(error = %e, "could not look at the objects of the held content; retrying");
                Step::RetryLater
            }
        }
    }
}

/// Resolves, watches and checks every object of `held`; `None` when superseded meanwhile.
async fn look_again(
    cluster: &Cluster,
    metrics: &Metrics,
    watches: &OwnedWatches,
    held: &Desired,
    corrections: &[(ObjectRef, u32)],
    superseded: &(dyn Fn() -> bool + Send + Sync),
) -> Result<Option<Observed>, ApiError> {
    let deployment = &held.deployment;
    let mut objects = Vec::with_capacity(held.manifests.len());
    for (r, manifest) in deployment.manifests.iter().zip(&held.manifests) {
        objects.push(track(cluster, deployment, &r.source, manifest).await?);
    }
    for t in &mut objects {
        if let Some((_, n)) = corrections
            .iter()
            .find(|(o, _)| o.same_object(&t.status.object))
        {
            t.status.drift_corrections = *n;
        }
        if let Some(applied) = &t.applied {
            watches.ensure(&applied.resolved);
        }
    }
    let order = apply_order(objects.iter().map(|t| {
        (
            t.status.object.api_version.as_str(),
            t.status.object.kind.as_str(),
        )
    }));
    let mut observed = Observed {
        deployment: deployment.clone(),
        objects,
    };
    for i in order {
        if superseded() {
            return Ok(None);
        }
        look(&mut observed, cluster, metrics, i).await?;
    }
    Ok(Some(observed))
}

/// One object of the held content, as a run that applied it would have left it (its live
/// state not known yet), or failed when its manifest or kind cannot be used.
async fn track(
    cluster: &Cluster,
    deployment: &Deployment,
    source: &str,
    manifest: &Value,
) -> Result<Tracked, ApiError> {
    let mut status = ObjectStatus {
        source: source.to_string(),
        ..ObjectStatus::default()
    };
    let head = match manifest_head(manifest) {
        Ok(head) => head,
        Err(why) => return Ok(failed(status, why)),
    };
    status.object = ObjectRef {
        api_version: head.api_version.clone(),
        kind: head.kind.clone(),
        namespace: head.namespace.clone(),
        name: head.name.clone(),
    };
    let Some(resolved) = cluster.resolve(&head.api_version, &head.kind).await? else {
        let why = format!(
            "the cluster does not serve {} in {}",
            head.kind, head.api_version
        );
        return Ok(failed(status, why));
    };
    let body = applied_body(
        manifest,
        resolved.namespaced,
        &deployment.default_namespace,
        &deployment.deployment_id,
    );
    status.object.namespace = body
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok(Tracked {
        status,
        applied: Some(Applied {
            resolved,
            body: Arc::new(body),
            fingerprint: Fingerprint::UNKNOWN,
        }),
        correction: None,
    })
}

fn failed(mut status: ObjectStatus, why: String) -> Tracked {
    (status.state, status.message) = (ObjectState::Failed, why);
    Tracked {
        status,
        applied: None,
        correction: None,
    }
}

/// Reads object `i` and judges it; an absent one that the server would refuse is Failed.
async fn look(
    observed: &mut Observed,
    cluster: &Cluster,
    metrics: &Metrics,
    i: usize,
) -> Result<(), ApiError> {
    let t = &mut observed.objects[i];
    let Some(applied) = &t.applied else {
        return Ok(());
    };
    let object = &t.status.object;
    let (namespace, name) = (&object.namespace, &object.name);
    let live = cluster
        .get_object(&applied.resolved, namespace, name)
        .await?;
    if live.is_none()
        && let Err(e) = cluster
            .dry_run_apply(&applied.resolved, namespace, name, &applied.body)
            .await
        && matches!(e.code, 400 | 422)
    {
        *t = failed(t.status.clone(), e.message);
        return Ok(());
    }
    observed.judge(cluster, metrics, i, live).await;
    Ok(())
}
