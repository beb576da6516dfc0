//! Domain types of the agent: what the hub asks for ([`Deployment`]), what the agent records
//! about it ([`Inventory`]) and what it reports back ([`DeploymentStatus`]).
//!
//! *Boundary:* no proto and no kube types here. `hub_client::convert` is the one place that maps
//! these to and from the wire, `cluster::inventory` the one place that maps [`Inventory`] to a
//! ConfigMap.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One bundle as this cluster must run it: the desired state of one deployment id.
///
/// Persisted as the inventory's `spec` (JSON, camelCase). Fields added later carry
/// `#[serde(default)]`, so that inventories written by an older agent still read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Deployment {
    pub deployment_id: String,
    /// `<gitrepo>/<path>`, for people.
    pub bundle: String,
    /// The Git commit the content was rendered from.
    pub revision: String,
    /// Hash over the desired state; equal hashes mean equal desired state.
    pub content_hash: String,
    /// Namespace for namespaced objects that name none; empty means `default`.
    pub default_namespace: String,
    /// The objects, by content hash, in bundle order.
    pub manifests: Vec<ManifestRef>,
    /// fleet.yaml `keepResources`: when the deployment is removed, its objects are released
    /// (left on the cluster without ownership marks) instead of pruned. It does not stop the
    /// prune of an object that a new content of the same deployment no longer lists.
    #[serde(default)]
    pub keep_resources: bool,
    /// `correctDrift.enabled`: revert changes made by hand to owned objects (and re-create
    /// deleted ones) as soon as they are seen, instead of reporting them.
    #[serde(default)]
    pub correct_drift: bool,
    /// fleet.yaml `diff.comparePatches`: fields that are not drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare_patches: Vec<ComparePatch>,
}

/// A fleet.yaml `diff.comparePatches` entry: for objects matching every non-empty field, the
/// fields that are not compared for drift.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ComparePatch {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// JSON pointers (RFC 6901): a difference at or under one is not drift.
    pub json_pointers: Vec<String>,
    /// The paths of its RFC 6902 `remove` operations, taken off both sides before comparing.
    pub removed: Vec<String>,
}

/// The hub no longer wants a deployment on this cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Removal {
    pub deployment_id: String,
    /// The hub's view of the removed deployment's `keep_resources`. The agent keeps the
    /// objects when this or the recorded content's flag ([`Inventory::keeps_resources`]) says so.
    pub keep_resources: bool,
}

/// A reference to one manifest (one Kubernetes object) by content hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManifestRef {
    /// sha256 of the manifest's JSON, hex encoded.
    pub hash: String,
    /// Where it came from, e.g. `app/web.yaml#2`.
    pub source: String,
}

/// A deployment together with its manifests, ready to apply. The manifests are shared with the
/// manifest cache, which keeps one copy per hash for as long as a desired deployment holds it.
#[derive(Debug)]
pub(crate) struct Desired {
    pub deployment: Deployment,
    /// Parsed manifests, index for index with `deployment.manifests`.
    pub manifests: Vec<Arc<serde_json::Value>>,
}

/// Names one Kubernetes object. Two references denote the same object when group, kind,
/// namespace and name agree: the version is only how we spoke to it (see [`ObjectRef::same_object`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    #[serde(default)]
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// The API group: empty for the core group (`v1`).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// Whether both name the same object, whatever version each was written with (moving a
    /// manifest from `autoscaling/v2beta2` to `autoscaling/v2` must not prune the object).
    pub fn same_object(&self, other: &ObjectRef) -> bool {
        self.group() == other.group()
            && self.kind == other.kind
            && self.namespace == other.namespace
            && self.name == other.name
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{} in {}", self.kind, self.name, self.namespace)
        }
    }
}

/// What the inventory ConfigMap of one deployment records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Inventory {
    pub deployment_id: String,
    /// The content hash the cluster holds: set when a run of it settled (everything applied,
    /// or only failures that need a new commit), empty while another content is being applied
    /// or a run still needs retries. `Hello` reports it, so an empty one is sent again.
    pub content_hash: String,
    /// The revision of `spec`.
    pub revision: String,
    /// The content last applied, possibly not completely: recorded before the first of its
    /// objects is applied, so its options (`keep_resources`) govern every object it touched.
    pub spec: Option<Deployment>,
    /// Everything the agent may own for this deployment, in apply order.
    pub objects: Vec<ObjectRef>,
}

impl Inventory {
    /// Whether the recorded content asks for its objects to stay when the deployment is
    /// removed. Survives restarts, so a removal honours the content last applied even when
    /// the hub's `Removal` does not carry the flag.
    pub fn keeps_resources(&self) -> bool {
        self.spec.as_ref().is_some_and(|s| s.keep_resources)
    }
}

/// A deployment the agent holds, as announced in `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeldDeployment {
    pub deployment_id: String,
    pub content_hash: String,
}

/// Outcome for one object of a deployment. An applied object is `Ready` or `NotReady` by its
/// kind's health rules (`health`), unless it drifted (`Modified`) or went away (`Missing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ObjectState {
    /// The API server refused it (or it could not be sent); the message says why.
    Failed,
    /// Not applied yet.
    #[default]
    Waiting,
    /// Applied and healthy.
    Ready,
    /// Applied, not healthy (yet); the message says why.
    NotReady,
    /// Changed on the cluster since it was applied; `modified_fields` names where.
    Modified,
    /// Deleted from the cluster by someone else since it was applied.
    Missing,
}

/// One object's line in a status report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ObjectStatus {
    pub object: ObjectRef,
    pub source: String,
    pub state: ObjectState,
    pub message: String,
    /// JSON pointers of the fields that drifted, when `Modified`.
    pub modified_fields: Vec<String>,
    /// Drift reverted (correctDrift) while this agent runs.
    pub drift_corrections: u32,
}

/// The state of one deployment on this cluster, from the worst of its objects (see
/// `status::summarize` for the order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeploymentState {
    /// Being applied.
    WaitApplied,
    /// At least one object failed.
    ErrApplied,
    /// An object was deleted from the cluster.
    Missing,
    /// An object was changed on the cluster.
    Modified,
    /// Applied, and some object is not healthy.
    NotReady,
    /// Applied, and every object is healthy.
    Ready,
}

/// A deployment's status, as reported to the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeploymentStatus {
    pub deployment_id: String,
    pub content_hash: String,
    /// The Git commit of the content the status is about.
    pub revision: String,
    pub state: DeploymentState,
    /// The first failure, or empty.
    pub message: String,
    pub objects: Vec<ObjectStatus>,
}
