//! After an apply run: what the deployment's objects are doing on the cluster. Watch
//! observations update each object's health; a change beyond the status is checked for drift;
//! an object that went away is Missing. With `correctDrift` both are put right at once (and
//! counted).
//!
//! A drift check asks the server, never a local diff: it reads the live object and a dry-run
//! apply of exactly the body that was applied, and compares the two ([`crate::drift`]). Any
//! doubt (a changed fingerprint, a delete, an object missing from a relist) leads to that
//! check, which reads the object first: a stale or reordered watch event can cost a request,
//! never a false report.
//!
//! *Invariant:* only objects of the current content are looked at; the agent's own prune
//! deletes are of objects the content no longer has, so they are never taken for Missing.
//!
//! What is watched is what a run of this process applied, or, after a restart, the content the
//! cluster held, taken up by [`super::resume`] as if that run had just ended.

use std::sync::Arc;

use serde_json::Value;
use tracing::{info, warn};

use crate::cluster::{ApiError, Cluster, Observation, Resolved, Retry};
use crate::drift::{Fingerprint, fingerprint, modified_fields, patches_for};
use crate::health::{Health, assess};
use crate::metrics::{Correction, Metrics};
use crate::model::{Deployment, ObjectRef, ObjectState, ObjectStatus};

/// What was applied of one object, to compare the cluster with.
#[derive(Clone, Debug)]
pub(super) struct Applied {
    pub resolved: Resolved,
    /// The exact body sent (namespace settled, ownership marks on).
    pub body: Arc<Value>,
    /// The live object's fingerprint when it was last known to match.
    pub fingerprint: Fingerprint,
}

/// One object of the content as last reported.
#[derive(Clone, Debug)]
pub(super) struct Tracked {
    pub status: ObjectStatus,
    /// `None` when the object was not applied (failed, waiting).
    pub applied: Option<Applied>,
    /// What the last drift correction did: the message of the object while it is ready.
    pub correction: Option<String>,
}

/// The state and message of an applied object, from its live health.
pub(super) fn health_state(live: &Value) -> (ObjectState, String) {
    match assess(live) {
        Health::Ready => (ObjectState::Ready, String::new()),
        Health::NotReady(why) => (ObjectState::NotReady, why),
    }
}

impl Tracked {
    fn set_health(&mut self, live: &Value) {
        (self.status.state, self.status.message) = health_state(live);
        self.status.modified_fields.clear();
        if let (ObjectState::Ready, Some(note)) = (self.status.state, &self.correction) {
            self.status.message.clone_from(note);
        }
    }
}

/// The objects of the content last applied, and how they are doing.
pub(super) struct Observed {
    pub deployment: Deployment,
    pub objects: Vec<Tracked>,
}

/// Identity of a live object: group, kind, namespace, name.
fn identity(obj: &Value) -> ObjectRef {
    let text = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    ObjectRef {
        api_version: text("/apiVersion"),
        kind: text("/kind"),
        namespace: text("/metadata/namespace"),
        name: text("/metadata/name"),
    }
}

impl Observed {
    /// Drift corrections so far, per object, to carry into the next run.
    pub fn corrections(&self) -> Vec<(ObjectRef, u32)> {
        self.objects
            .iter()
            .filter(|t| t.status.drift_corrections > 0)
            .map(|t| (t.status.object.clone(), t.status.drift_corrections))
            .collect()
    }

    pub fn statuses(&self) -> Vec<ObjectStatus> {
        self.objects.iter().map(|t| t.status.clone()).collect()
    }

    /// Index of the applied object `obj` denotes.
    fn find(&self, obj: &ObjectRef) -> Option<usize> {
        self.objects
            .iter()
            .position(|t| t.applied.is_some() && t.status.object.same_object(obj))
    }

    /// Takes one observation into account.
    pub async fn observe(&mut self, cluster: &Cluster, metrics: &Metrics, o: Observation) {
        match o {
            Observation::Applied(live) => {
                if let Some(i) = self.find(&identity(&live)) {
                    self.seen(cluster, metrics, i, &live).await;
                }
            }
            Observation::Deleted(gone) => {
                if let Some(i) = self.find(&identity(&gone)) {
                    self.check(cluster, metrics, i).await;
                }
            }
            Observation::Listed {
                group,
                kind,
                objects,
            } => self.listed(cluster, metrics, &group, &kind, objects).await,
        }
    }

    /// After a relist: objects listed are seen; ours of that type that are not are checked.
    async fn listed(
        &mut self,
        cluster: &Cluster,
        metrics: &Metrics,
        group: &str,
        kind: &str,
        objects: Vec<Value>,
    ) {
        let mut unseen: Vec<usize> = (0..self.objects.len())
            .filter(|&i| {
                let t = &self.objects[i];
                t.applied.is_some()
                    && t.status.object.group() == group
                    && t.status.object.kind == kind
            })
            .collect();
        for live in objects {
            if let Some(i) = self.find(&identity(&live)) {
                unseen.retain(|&u| u != i);
                self.seen(cluster, metrics, i, &live).await;
            }
        }
        for i in unseen {
            self.check(cluster, metrics, i).await;
        }
    }

    /// A live version of object `i`: health only if just its status moved, else a check.
    async fn seen(&mut self, cluster: &Cluster, metrics: &Metrics, i: usize, live: &Value) {
        let t = &mut self.objects[i];
        let Some(applied) = &t.applied else { return };
        if applied.fingerprint != fingerprint(live) || t.status.state == ObjectState::Missing {
            return self.check(cluster, metrics, i).await;
        }
        // Drift stays reported until a change to the object clears it.
        if t.status.state != ObjectState::Modified {
            t.set_health(live);
        }
    }

    /// Reads object `i`, then [`Observed::judge`]s it.
    async fn check(&mut self, cluster: &Cluster, metrics: &Metrics, i: usize) {
        let t = &self.objects[i];
        let Some(applied) = &t.applied else {
            return;
        };
        let object = &t.status.object;
        match cluster
            .get_object(&applied.resolved, &object.namespace, &object.name)
            .await
        {
            Ok(live) => self.judge(cluster, metrics, i, live).await,
            Err(e) => warn!(%object, error = %e, "could not read an object to check it"),
        }
    }

    /// Compares object `i` as just read (`None`: absent) with a dry-run apply of its body;
    /// reports (or corrects) what differs, and a Missing object.
    pub async fn judge(
        &mut self,
        cluster: &Cluster,
        metrics: &Metrics,
        i: usize,
        live: Option<Value>,
    ) {
        let correct = self.deployment.correct_drift;
        let patches = patches_for(
            &self.deployment.compare_patches,
            &self.objects[i].status.object,
        );
        let t = &mut self.objects[i];
        let Some(applied) = t.applied.clone() else {
            return;
        };
        let object = t.status.object.clone();
        let Some(live) = live else {
            if !correct {
                info!(%object, "an applied object was deleted from the cluster");
                t.status.state = ObjectState::Missing;
                t.status.message =
                    "deleted from the cluster; the next apply of this deployment re-creates it"
                        .into();
                t.status.modified_fields.clear();
                return;
            }
            return correct_now(cluster, metrics, t, Correction::Missing, Vec::new()).await;
        };
        if live.pointer("/metadata/deletionTimestamp").is_some() {
            return t.set_health(&live);
        }
        let would = match cluster
            .dry_run_apply(
                &applied.resolved,
                &object.namespace,
                &object.name,
                &applied.body,
            )
            .await
        {
            Ok(would) => would,
            Err(e) => {
                warn!(%object, error = %e, "could not compare the object with what was applied");
                return t.set_health(&live);
            }
        };
        let fields = modified_fields(&would, &live, &patches);
        if let Some(a) = &mut t.applied {
            a.fingerprint = fingerprint(&live);
        }
        if fields.is_empty() {
            return t.set_health(&live);
        }
        if correct {
            return correct_now(cluster, metrics, t, Correction::Modified, fields).await;
        }
        info!(%object, fields = ?fields, "drift found");
        t.status.state = ObjectState::Modified;
        t.status.message = format!("modified on the cluster: {}", fields.join(", "));
        t.status.modified_fields = fields;
    }
}

/// Applies the object again (correctDrift), counts it, and says so in its message.
async fn correct_now(
    cluster: &Cluster,
    metrics: &Metrics,
    t: &mut Tracked,
    why: Correction,
    fields: Vec<String>,
) {
    let Some(applied) = &mut t.applied else {
        return;
    };
    let object = &t.status.object;
    match apply_again(cluster, applied, object).await {
        Ok(live) => {
            applied.fingerprint = fingerprint(&live);
            t.status.drift_corrections += 1;
            metrics.drift_corrected(why);
            info!(%object, ?why, fields = ?fields, corrections = t.status.drift_corrections, "drift corrected");
            t.correction = Some(match why {
                Correction::Missing => "re-created after it was deleted from the cluster".into(),
                Correction::Modified => format!("drift corrected: {}", fields.join(", ")),
            });
            t.set_health(&live);
        }
        Err(e) => {
            warn!(%object, error = %e, "could not correct drift");
            t.status.state = match why {
                Correction::Missing => ObjectState::Missing,
                Correction::Modified => ObjectState::Modified,
            };
            t.status.message = format!("could not correct drift: {e}");
            t.status.modified_fields = fields;
        }
    }
}

async fn apply_again(
    cluster: &Cluster,
    applied: &Applied,
    object: &ObjectRef,
) -> Result<Value, ApiError> {
    cluster
        .apply_object(
            &applied.resolved,
            &object.namespace,
            &object.name,
            &applied.body,
            Retry::Transient,
        )
        .await
}
