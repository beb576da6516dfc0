//! One run of applying a deployment: resolve kinds, record ownership, apply in order, wait for
//! CRDs, prune what left, record the new inventory, report.
//!
//! *Invariant:* an object is in the inventory ConfigMap before it is applied (the inventory
//! is first widened to old ∪ new), so a crash mid-apply leaks nothing; the inventory is
//! narrowed to the new set only after apply and prune. One failed object never stops the
//! others: its API server message becomes its status.
//!
//! *Invariant:* an object the bundle still lists is never pruned, even when its kind cannot be
//! resolved now (a version the server stopped serving, a CRD that went away): prune spares
//! every inventory entry such a manifest may denote.
//!
//! *Invariant:* the content being applied (its `spec`, with `keepResources`) is recorded
//! together with the widened objects, before any of its objects is applied: a removal after a
//! crash mid-apply still honours the options of what the cluster may hold.
//!
//! *Invariant:* the inventory's `contentHash` names a content only once a run of it settled
//! (everything applied, or only failures a new commit must fix). While another content is
//! being applied, or after a run that still needs retries, it is empty: `Hello` then makes the
//! hub send the desired state again after a restart, instead of believing it applied.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{info, warn};

use super::observe::{Applied, Tracked, health_state};
use super::prune::prune_objects;
use crate::cluster::{ApiError, Cluster, Resolved, Retry};
use crate::drift::fingerprint;
use crate::model::{Deployment, Desired, Inventory, ObjectRef, ObjectState, ObjectStatus};
use crate::plan::{
    Category, ManifestHead, applied_body, apply_order, category, effective_default_namespace,
    group_of, manifest_head, may_denote, to_prune, union,
};
use crate::status::{StatusBoard, summarize};

/// How long a freshly applied CRD may take to become `Established`.
const CRD_DEADLINE: Duration = Duration::from_secs(30);
/// Lookups of a kind whose CRD was just established (50 ms doubling: about 3 s in all).
const DISCOVERY_PATIENCE: u32 = 6;

/// One object of the run.
struct Item {
    source: String,
    manifest: Arc<Value>,
    /// `None` when the manifest lacks apiVersion, kind or name (then it is already failed).
    head: Option<ManifestHead>,
    category: Category,
    resolved: Option<Resolved>,
    /// Its identity; the namespace is settled once the kind's scope is known.
    object: ObjectRef,
    state: ObjectState,
    message: String,
    /// Whether a later attempt could succeed without a new bundle (not a validation error).
    worth_retrying: bool,
    /// What was applied, once it was.
    applied: Option<Applied>,
    /// Drift corrections of this object while the agent runs, carried across runs.
    drift_corrections: u32,
}

impl Item {
    fn new(source: &str, manifest: Arc<Value>) -> Self {
        let head = manifest_head(&manifest);
        let (api_version, kind) = match &head {
            Ok(h) => (h.api_version.clone(), h.kind.clone()),
            Err(_) => (String::new(), String::new()),
        };
        let mut item = Item {
            source: source.to_string(),
            object: ObjectRef {
                api_version: api_version.clone(),
                kind: kind.clone(),
                namespace: head
                    .as_ref()
                    .map(|h| h.namespace.clone())
                    .unwrap_or_default(),
                name: head.as_ref().map(|h| h.name.clone()).unwrap_or_default(),
            },
            category: category(&api_version, &kind),
            head: head.as_ref().ok().cloned(),
            manifest,
            resolved: None,
            state: ObjectState::Waiting,
            message: String::new(),
            worth_retrying: false,
            applied: None,
            drift_corrections: 0,
        };
        if let Err(why) = head {
            item.fail(why, false);
        }
        item
    }

    fn fail(&mut self, message: String, worth_retrying: bool) {
        self.state = ObjectState::Failed;
        self.message = message;
        self.worth_retrying = worth_retrying;
    }

    fn status(&self) -> ObjectStatus {
        ObjectStatus {
            object: self.object.clone(),
            source: self.source.clone(),
            state: self.state,
            message: self.message.clone(),
            modified_fields: Vec::new(),
            drift_corrections: self.drift_corrections,
        }
    }

    /// Records a successful apply: what was sent, and the object's health from the answer.
    fn applied(&mut self, resolved: Resolved, body: Value, live: &Value) {
        self.applied = Some(Applied {
            resolved,
            body: Arc::new(body),
            fingerprint: fingerprint(live),
        });
        (self.state, self.message) = health_state(live);
    }

    fn tracked(&self) -> Tracked {
        Tracked {
            status: self.status(),
            applied: self.applied.clone(),
            correction: None,
        }
    }
}

/// The state of one run.
struct Run<'a> {
    cluster: &'a Cluster,
    deployment: &'a Deployment,
    items: Vec<Item>,
    /// Indices of `items` in apply order.
    order: Vec<usize>,
    inventory: Inventory,
    /// Discovery failed for some kind: the desired set is not fully known, so nothing is pruned.
    /// (A kind that discovery answered is not served does not stop prune: see [`Run::spared`].)
    uncertain: bool,
    default_namespace_ready: bool,
    /// CRDs this run applied, by name.
    crds_applied: Vec<String>,
    /// The groups of the CRDs this run saw established.
    crd_groups: Vec<String>,
    crds_settled: bool,
    /// Drift corrections so far, by object.
    corrections: &'a [(ObjectRef, u32)],
}

/// How a run ended.
pub(super) struct Outcome {
    /// The inventory as now recorded.
    pub inventory: Inventory,
    /// No retry needed: all applied, only permanent failures, or superseded.
    pub settled: bool,
    /// Every object of the content, when the run went through to the end (not superseded,
    /// inventory written): what the worker then watches.
    pub objects: Option<Vec<Tracked>>,
}

/// Applies `desired` on top of `inventory`, carrying the drift `corrections` counted so far.
pub(super) async fn run(
    cluster: &Cluster,
    board: &StatusBoard,
    desired: &Desired,
    inventory: Inventory,
    announce: bool,
    superseded: &(dyn Fn() -> bool + Send + Sync),
    corrections: &[(ObjectRef, u32)],
) -> Outcome {
    let mut run = Run::new(cluster, desired, inventory, corrections);
    if announce {
        board.publish(run.summary());
    }
    match run.apply_all(superseded).await {
        Ok(Loop::Completely) => run.finish(board).await,
        Ok(Loop::Superseded) => Outcome {
            inventory: run.inventory,
            settled: true,
            objects: None,
        },
        Err(e) => run.give_up(board, e),
    }
}

/// How the apply loop ended.
enum Loop {
    Completely,
    /// A newer desired state arrived; the rest was skipped.
    Superseded,
}

impl<'a> Run<'a> {
    fn new(
        cluster: &'a Cluster,
        desired: &'a Desired,
        inventory: Inventory,
        corrections: &'a [(ObjectRef, u32)],
    ) -> Self {
        let deployment = &desired.deployment;
        let items: Vec<Item> = deployment
            .manifests
            .iter()
            .zip(&desired.manifests)
            .map(|(r, m)| Item::new(&r.source, m.clone()))
            .collect();
        let order = apply_order(
            items
                .iter()
                .map(|i| (i.object.api_version.as_str(), i.object.kind.as_str())),
        );
        Run {
            cluster,
            deployment,
            items,
            order,
            inventory,
            uncertain: false,
            default_namespace_ready: false,
            crds_applied: Vec::new(),
            crd_groups: Vec::new(),
            crds_settled: false,
            corrections,
        }
    }

    /// Applies every object in order; CRDs are awaited before what follows them, and custom
    /// kinds looked up (and recorded in the inventory) once their CRDs are in.
    async fn apply_all(
        &mut self,
        superseded: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<Loop, ApiError> {
        self.resolve_all(true).await;
        self.record_ownership().await?;
        let mut custom_kinds_looked_up = false;
        for position in 0..self.order.len() {
            if superseded() {
                return Ok(Loop::Superseded);
            }
            let i = self.order[position];
            let category = self.items[i].category;
            if category > Category::CustomResourceDefinition {
                self.settle_crds().await;
            }
            if category == Category::Custom && !custom_kinds_looked_up {
                custom_kinds_looked_up = true;
                self.resolve_all(false).await;
                self.record_ownership().await?;
            }
            self.apply_one(i).await;
        }
        self.settle_crds().await;
        Ok(Loop::Completely)
    }

    fn summary(&self) -> crate::model::DeploymentStatus {
        let objects = self.items.iter().map(Item::status).collect();
        summarize(self.deployment, objects)
    }

    /// The objects whose identity is known, in apply order: the desired set.
    fn desired_objects(&self) -> Vec<ObjectRef> {
        self.order
            .iter()
            .map(|&i| &self.items[i])
            .filter(|i| i.resolved.is_some())
            .map(|i| i.object.clone())
            .collect()
    }

    /// Whether a manifest of this run whose kind is not resolved (not served, or discovery
    /// failed) may denote `object`, which prune must then leave alone.
    fn spared(&self, object: &ObjectRef) -> bool {
        self.items
            .iter()
            .filter(|i| i.resolved.is_none())
            .filter_map(|i| i.head.as_ref())
            .any(|head| may_denote(head, &self.deployment.default_namespace, object))
    }

    /// Looks up kinds not resolved yet. In the first pass a custom kind that is not served
    /// waits for this run's CRDs; in the second it fails.
    async fn resolve_all(&mut self, first_pass: bool) {
        let default_namespace =
            effective_default_namespace(&self.deployment.default_namespace).to_string();
        for i in self.order.clone() {
            let Some(head) = self.items[i].head.clone() else {
                continue;
            };
            if self.items[i].resolved.is_some() || self.items[i].state == ObjectState::Failed {
                continue;
            }
            let patient = !first_pass
                && self
                    .crd_groups
                    .iter()
                    .any(|g| g == group_of(&head.api_version));
            let found = self.lookup(&head, patient).await;
            let item = &mut self.items[i];
            match found {
                Ok(Some(r)) => {
                    item.object.namespace = match (r.namespaced, head.namespace.is_empty()) {
                        (false, _) => String::new(),
                        (true, true) => default_namespace.clone(),
                        (true, false) => head.namespace.clone(),
                    };
                    item.resolved = Some(r);
                    item.drift_corrections = self
                        .corrections
                        .iter()
                        .find(|(o, _)| o.same_object(&item.object))
                        .map_or(0, |(_, n)| *n);
                }
                Ok(None) if first_pass && item.category == Category::Custom => {}
                Ok(None) if item.category == Category::Custom => item.fail(
                    format!(
                        "the cluster does not serve {} in {}: its CustomResourceDefinition is not installed",
                        head.kind, head.api_version
                    ),
                    true,
                ),
                Ok(None) => item.fail(format!("the cluster does not serve {} in {}", head.kind, head.api_version), true),
                Err(e) => {
                    self.uncertain = true;
                    item.fail(format!("could not look up {} in discovery: {e}", head.kind), true);
                }
            }
        }
    }

    /// Resolves a kind. When `patient` (a custom kind whose CRD this run just established),
    /// a miss is asked again a few times: API servers publish a new group in discovery a
    /// moment after the CRD reports `Established`.
    async fn lookup(
        &self,
        head: &ManifestHead,
        patient: bool,
    ) -> Result<Option<Resolved>, ApiError> {
        let mut pause = Duration::from_millis(50);
        for _ in 0..DISCOVERY_PATIENCE {
            match self.cluster.resolve(&head.api_version, &head.kind).await? {
                Some(r) => return Ok(Some(r)),
                None if patient => tokio::time::sleep(pause).await,
                None => return Ok(None),
            }
            pause *= 2;
        }
        self.cluster.resolve(&head.api_version, &head.kind).await
    }

    /// Widens the recorded inventory to cover every object about to be applied, and records
    /// this content as the one applied. Once another content is being applied the cluster no
    /// longer holds the recorded one completely, so its content hash is cleared (a restart
    /// then has the hub send the desired state again).
    async fn record_ownership(&mut self) -> Result<(), ApiError> {
        let widened = union(&self.inventory.objects, &self.desired_objects());
        let content_hash = if self.inventory.content_hash == self.deployment.content_hash {
            self.inventory.content_hash.clone()
        } else {
            String::new()
        };
        let next = Inventory {
            objects: widened,
            content_hash,
            revision: self.deployment.revision.clone(),
            spec: Some(self.deployment.clone()),
            ..self.inventory.clone()
        };
        if next == self.inventory {
            return Ok(());
        }
        self.cluster.write_inventory(&next).await?;
        self.inventory = next;
        Ok(())
    }

    /// Reports a run stopped because its inventory could not be written (objects not yet
    /// applied stay Waiting); the worker retries it.
    fn give_up(self, board: &StatusBoard, e: ApiError) -> Outcome {
        let mut status = self.summary();
        status.state = crate::model::DeploymentState::ErrApplied;
        status.message = format!(
            "could not record the inventory in namespace {}: {e}; check that the agent may write ConfigMaps there",
            self.cluster.namespace()
        );
        warn!(error = %e, "could not write the inventory");
        board.publish(status);
        Outcome {
            inventory: self.inventory,
            settled: false,
            objects: None,
        }
    }

    async fn ensure_default_namespace(&mut self) -> Result<(), String> {
        if self.default_namespace_ready {
            return Ok(());
        }
        let ns = effective_default_namespace(&self.deployment.default_namespace);
        self.cluster.ensure_namespace(ns).await.map_err(|e| {
            format!("the namespace {ns} does not exist and could not be created: {e}")
        })?;
        self.default_namespace_ready = true;
        Ok(())
    }

    async fn apply_one(&mut self, i: usize) {
        let (Some(r), Some(head)) = (self.items[i].resolved.clone(), self.items[i].head.clone())
        else {
            return;
        };
        // The deployment's namespace (fleet.yaml `defaultNamespace` or `namespace`) is created
        // as Fleet creates it, whether an object relies on it or names it; other namespaces
        // are the bundle's to declare.
        let in_default = head.namespace.is_empty()
            || head.namespace == effective_default_namespace(&self.deployment.default_namespace);
        if r.namespaced
            && in_default
            && let Err(why) = self.ensure_default_namespace().await
        {
            self.items[i].fail(why, true);
            return;
        }
        let item = &mut self.items[i];
        let body = applied_body(
            &item.manifest,
            r.namespaced,
            &self.deployment.default_namespace,
            &self.deployment.deployment_id,
        );
        // Right after a CRD is established the server may briefly refuse its kinds.
        let retry = if item.category == Category::Custom && !self.crds_applied.is_empty() {
            Retry::AlsoNotFound
        } else {
            Retry::Transient
        };
        match self
            .cluster
            .apply_object(&r, &item.object.namespace, &head.name, &body, retry)
            .await
        {
            Ok(live) => {
                item.applied(r, body, &live);
                if item.category == Category::CustomResourceDefinition {
                    self.crds_applied.push(head.name.clone());
                }
            }
            Err(e) => {
                let permanent = matches!(e.code, 400 | 422);
                item.fail(e.message, !permanent);
            }
        }
    }

    /// Waits until every CRD applied in this run is established (which also refreshes
    /// discovery for its group). A CRD that is not gets the reason as its message.
    async fn settle_crds(&mut self) {
        if self.crds_settled {
            return;
        }
        self.crds_settled = true;
        for name in self.crds_applied.clone() {
            let established = self.cluster.wait_established(&name, CRD_DEADLINE).await;
            let crd = self.items.iter_mut().find(|i| {
                i.category == Category::CustomResourceDefinition && i.object.name == name
            });
            match (established, crd) {
                (Ok(group), crd) => {
                    self.crd_groups.push(group);
                    if let Some(item) = crd {
                        (item.state, item.message) = (ObjectState::Ready, String::new());
                    }
                }
                (Err(why), crd) => {
                    warn!(crd = %name, %why, "CustomResourceDefinition not established");
                    if let Some(item) = crd {
                        (item.state, item.message) = (ObjectState::NotReady, why);
                    }
                }
            }
        }
    }

    /// Prunes, records the new inventory and reports.
    ///
    /// What a new content no longer lists is pruned whatever its `keep_resources` says. Fleet
    /// documents `keepResources` as keeping "the deployed resources when removing the bundle"
    /// (BundleDeploymentOptions in its CRD reference), and its agent reads the flag only when
    /// it deletes a bundle deployment (`helmdeployer.deleteByRelease` then forgets the Helm
    /// release instead of uninstalling it); an upgrade still drops what the chart no longer
    /// renders. So the flag is about removing the deployment ([`super::prune::remove`]), not
    /// about objects that leave its content.
    async fn finish(mut self, board: &StatusBoard) -> Outcome {
        let desired = self.desired_objects();
        let objects = if self.uncertain {
            warn!("not pruning: some kinds could not be looked up");
            union(&self.inventory.objects, &desired)
        } else {
            let (spared, gone): (Vec<ObjectRef>, Vec<ObjectRef>) =
                to_prune(&self.inventory.objects, &desired)
                    .into_iter()
                    .partition(|o| self.spared(o));
            for object in &spared {
                warn!(%object, "not pruning: the bundle still lists it, but its kind is not served now");
            }
            let kept = prune_objects(self.cluster, &self.deployment.deployment_id, gone).await;
            // Still owned, in the order they were recorded.
            let left: Vec<ObjectRef> = self
                .inventory
                .objects
                .iter()
                .filter(|o| kept.contains(o) || spared.contains(o))
                .cloned()
                .collect();
            union(&desired, &left)
        };
        let failed: Vec<&Item> = self
            .items
            .iter()
            .filter(|i| i.state == ObjectState::Failed)
            .collect();
        let settled = failed.iter().all(|i| !i.worth_retrying) && objects.len() == desired.len();
        let failed = failed.len();
        let next = Inventory {
            deployment_id: self.deployment.deployment_id.clone(),
            // Only a settled run may claim its content: see the module's invariant.
            content_hash: if settled {
                self.deployment.content_hash.clone()
            } else {
                String::new()
            },
            revision: self.deployment.revision.clone(),
            spec: Some(self.deployment.clone()),
            objects,
        };
        // A retry or a re-apply of the same content changes nothing here: stay quiet.
        if next != self.inventory
            && let Err(e) = self.cluster.write_inventory(&next).await
        {
            return self.give_up(board, e);
        }
        self.inventory = next;
        let status = self.summary();
        info!(revision = %self.deployment.revision, objects = self.items.len(), failed, settled, "applied");
        board.publish(status);
        Outcome {
            inventory: self.inventory,
            settled,
            objects: Some(self.items.iter().map(Item::tracked).collect()),
        }
    }
}
