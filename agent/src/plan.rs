//! Pure decisions about applying a deployment: apply order, ownership marks (and the patch
//! that takes them off again), namespace defaulting, names derived from the deployment id, and
//! what to prune.
//!
//! *Invariant:* nothing here does I/O; the reconciler feeds in facts it learned from the API
//! server (scope from discovery, the previous inventory) and gets decisions back.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::model::ObjectRef;

/// Field manager of every server-side apply the agent makes.
pub(crate) const FIELD_MANAGER: &str = "flotilla";
/// Label on everything the agent applies for a bundle.
pub(crate) const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub(crate) const MANAGED_BY_VALUE: &str = "flotilla";
/// Label carrying a label-safe hash of the deployment id, for selecting a deployment's objects.
pub(crate) const DEPLOYMENT_LABEL: &str = "flotilla.dev/deployment";
/// Annotation carrying the deployment id itself; prune deletes only objects that carry it.
pub(crate) const DEPLOYMENT_ID_ANNOTATION: &str = "flotilla.dev/deployment-id";

/// Where an object goes in the apply order. Variants are in apply order; within one
/// category, bundle order is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Category {
    Namespace,
    CustomResourceDefinition,
    /// What workloads need to exist first: RBAC, service accounts, config, storage, services.
    Foundation,
    Workload,
    /// Other built-in kinds (ingresses, webhooks, ...).
    OtherBuiltIn,
    /// Kinds served by a CustomResourceDefinition or an aggregated API: after their CRDs.
    Custom,
}

const FOUNDATION: &[&str] = &[
    "PriorityClass",
    "StorageClass",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
];

const WORKLOADS: &[&str] = &[
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "Job",
    "CronJob",
    "HorizontalPodAutoscaler",
];

/// The group part of an `apiVersion` (empty for `v1`).
pub(crate) fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Whether a group is served by Kubernetes itself: the core group, the historical dot-less
/// groups (`apps`, `batch`, ...) and the protected `*.k8s.io` / `*.kubernetes.io` groups.
/// This is known without asking the server, which matters before a bundle's CRDs exist.
pub(crate) fn is_builtin_group(group: &str) -> bool {
    !group.contains('.') || group.ends_with(".k8s.io") || group.ends_with(".kubernetes.io")
}

/// The apply category of a kind.
pub(crate) fn category(api_version: &str, kind: &str) -> Category {
    let group = group_of(api_version);
    if !is_builtin_group(group) {
        return Category::Custom;
    }
    match kind {
        "Namespace" if group.is_empty() => Category::Namespace,
        "CustomResourceDefinition" if group == "apiextensions.k8s.io" => {
            Category::CustomResourceDefinition
        }
        k if FOUNDATION.contains(&k) => Category::Foundation,
        k if WORKLOADS.contains(&k) => Category::Workload,
        _ => Category::OtherBuiltIn,
    }
}

/// Indices of `objects` (apiVersion, kind) in apply order; stable within a category.
pub(crate) fn apply_order<'a>(objects: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<usize> {
    let mut keyed: Vec<(Category, usize)> = objects
        .into_iter()
        .enumerate()
        .map(|(i, (av, k))| (category(av, k), i))
        .collect();
    keyed.sort_by_key(|&(c, i)| (c, i));
    keyed.into_iter().map(|(_, i)| i).collect()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The `flotilla.dev/deployment` label value: the first 63 hex digits of sha256(id), which is
/// a valid label value whatever characters the id has.
pub(crate) fn deployment_label_value(deployment_id: &str) -> String {
    let mut h = sha256_hex(deployment_id);
    h.truncate(63);
    h
}

/// Name of the inventory ConfigMap of a deployment.
pub(crate) fn inventory_name(deployment_id: &str) -> String {
    format!("flotilla-inv-{}", &sha256_hex(deployment_id)[..16])
}

/// The namespace for namespaced objects that name none.
pub(crate) fn effective_default_namespace(default_namespace: &str) -> &str {
    if default_namespace.is_empty() {
        "default"
    } else {
        default_namespace
    }
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let root = obj
        .as_object_mut()
        .expect("manifests are JSON objects (checked when parsed)");
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("just made an object")
}

fn string_map<'a>(meta: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let m = meta.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("just made an object")
}

/// Marks an object as owned by a deployment. Only values that are stable across revisions are
/// added: a per-revision annotation would bump `metadata.generation` on every commit.
pub(crate) fn mark_owned(obj: &mut Value, deployment_id: &str) {
    let meta = metadata_mut(obj);
    let labels = string_map(meta, "labels");
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    labels.insert(
        DEPLOYMENT_LABEL.into(),
        deployment_label_value(deployment_id).into(),
    );
    let annotations = string_map(meta, "annotations");
    annotations.insert(DEPLOYMENT_ID_ANNOTATION.into(), deployment_id.into());
}

/// The deployment id in a live object's ownership annotation, if any.
pub(crate) fn owner(live: &Value) -> Option<&str> {
    live.pointer("/metadata/annotations")
        .and_then(|a| a.get(DEPLOYMENT_ID_ANNOTATION))
        .and_then(Value::as_str)
}

/// Whether a live object carries this deployment's ownership annotation.
pub(crate) fn is_owned_by(live: &Value, deployment_id: &str) -> bool {
    owner(live) == Some(deployment_id)
}

/// The JSON merge patch (RFC 7386) that releases `live`: it takes off the ownership marks
/// [`mark_owned`] put on (the managed-by label only while it still says `flotilla`) and
/// carries the `resourceVersion` it was read at, so the server refuses it with 409 Conflict
/// if the object changed since (read it again and decide again). Without the deployment-id
/// annotation no prune will ever delete the object again.
///
/// A merge patch, not a server-side apply: an apply by our field manager that leaves the
/// marks out would also drop every other field only we own (the whole spec), which is the
/// opposite of keeping the object. Fields the patch removes leave every manager's
/// `managedFields` entry; the rest of our entry stays, as with any object left behind.
pub(crate) fn release_patch(live: &Value) -> Value {
    let label = |key: &str| {
        live.pointer("/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
    };
    let mut patch = json!({"metadata": {"annotations": {DEPLOYMENT_ID_ANNOTATION: null}}});
    let meta = &mut patch["metadata"];
    if let Some(rv) = live
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
    {
        meta["resourceVersion"] = rv.into();
    }
    // Indexing a missing key of an object inserts it: `labels` appears only when needed.
    if label(MANAGED_BY_LABEL) == Some(MANAGED_BY_VALUE) {
        meta["labels"][MANAGED_BY_LABEL] = Value::Null;
    }
    if label(DEPLOYMENT_LABEL).is_some() {
        meta["labels"][DEPLOYMENT_LABEL] = Value::Null;
    }
    patch
}

/// Settles `metadata.namespace` from the scope discovery reported: a namespaced object without
/// one gets `default_namespace`; a cluster-scoped object loses one it should not have.
/// Returns the namespace the object now has (empty when cluster-scoped).
pub(crate) fn settle_namespace(
    obj: &mut Value,
    namespaced: bool,
    default_namespace: &str,
) -> String {
    let meta = metadata_mut(obj);
    if !namespaced {
        meta.remove("namespace");
        return String::new();
    }
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() => ns.to_string(),
        _ => {
            let ns = effective_default_namespace(default_namespace).to_string();
            meta.insert("namespace".into(), Value::String(ns.clone()));
            ns
        }
    }
}

/// The body the agent applies for `manifest` (and compares the cluster with): its namespace
/// settled for the kind's scope, ownership marks on. One recipe for apply runs and for
/// watching held deployments again, so a dry run after a restart sends what an apply sent.
pub(crate) fn applied_body(
    manifest: &Value,
    namespaced: bool,
    default_namespace: &str,
    deployment_id: &str,
) -> Value {
    let mut body = manifest.clone();
    settle_namespace(&mut body, namespaced, default_namespace);
    mark_owned(&mut body, deployment_id);
    body
}

/// What a manifest says about itself, checked before anything is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ManifestHead {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// As written in the manifest, possibly empty.
    pub namespace: String,
}

/// Reads apiVersion, kind and name, which every manifest must have.
pub(crate) fn manifest_head(obj: &Value) -> Result<ManifestHead, String> {
    let text = |ptr: &str| {
        obj.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if !obj.is_object() {
        return Err("the manifest is not a JSON object".into());
    }
    let head = ManifestHead {
        api_version: text("/apiVersion"),
        kind: text("/kind"),
        name: text("/metadata/name"),
        namespace: text("/metadata/namespace"),
    };
    for (value, field) in [
        (&head.api_version, "apiVersion"),
        (&head.kind, "kind"),
        (&head.name, "metadata.name"),
    ] {
        if value.is_empty() {
            return Err(format!("the manifest has no {field}"));
        }
    }
    Ok(head)
}

/// Objects of the previous inventory that the desired set no longer has, in reverse apply
/// order (dependents before what they depend on: CRs before CRDs, workloads before namespaces).
pub(crate) fn to_prune(previous: &[ObjectRef], desired: &[ObjectRef]) -> Vec<ObjectRef> {
    previous
        .iter()
        .rev()
        .filter(|old| !desired.iter().any(|new| new.same_object(old)))
        .cloned()
        .collect()
}

/// Whether a manifest whose kind discovery could not resolve may denote `object` (an entry of
/// the previous inventory): same group, kind and name, in the namespace it would settle to.
/// Without its scope, that is its own namespace (or, naming none, the default one) if the kind
/// is namespaced, or none if it is cluster-scoped. Prune must spare such objects: a bundle that
/// still lists them wants them, whatever the cluster serves today.
pub(crate) fn may_denote(head: &ManifestHead, default_namespace: &str, object: &ObjectRef) -> bool {
    let namespace = if head.namespace.is_empty() {
        effective_default_namespace(default_namespace)
    } else {
        &head.namespace
    };
    group_of(&head.api_version) == object.group()
        && head.kind == object.kind
        && head.name == object.name
        && (object.namespace.is_empty() || object.namespace == namespace)
}

/// `a ∪ b` by object identity, keeping `a`'s order then `b`'s newcomers; where both name the
/// same object, `b`'s apiVersion (the newer) is kept.
pub(crate) fn union(a: &[ObjectRef], b: &[ObjectRef]) -> Vec<ObjectRef> {
    let mut out = a.to_vec();
    for o in b {
        match out.iter_mut().find(|x| x.same_object(o)) {
            Some(x) => x.api_version.clone_from(&o.api_version),
            None => out.push(o.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests;
