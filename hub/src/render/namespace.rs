//! fleet.yaml `namespace:`: every namespaced object goes to that namespace, and a
//! cluster-scoped object fails the render, as in Fleet ("invalid cluster scoped object …
//! consider using defaultNamespace, not namespace").
//!
//! Limitation: without a cluster there is no discovery, so "cluster-scoped" means the kinds
//! listed here (Kubernetes' own plus a few common add-ons). A cluster-scoped kind of some
//! other CRD gets a namespace set, which the API server then rejects or ignores on apply.

use serde_json::Value;

use crate::bundle::SourcedObject;

/// (API group, kind) of cluster-scoped kinds.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "MutatingAdmissionPolicyBinding",
    ),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("node.k8s.io", "RuntimeClass"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("policy", "PodSecurityPolicy"),
    ("resource.k8s.io", "DeviceClass"),
    ("resource.k8s.io", "ResourceSlice"),
    ("snapshot.storage.k8s.io", "VolumeSnapshotClass"),
    ("snapshot.storage.k8s.io", "VolumeSnapshotContent"),
    ("cert-manager.io", "ClusterIssuer"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// Whether `obj` is of a known cluster-scoped kind.
pub fn is_cluster_scoped(obj: &Value) -> bool {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    CLUSTER_SCOPED.contains(&(group, kind))
}

/// Put every object in `namespace`; Err((source, message)) on a cluster-scoped one.
pub fn force(objects: &mut [SourcedObject], namespace: &str) -> Result<(), (String, String)> {
    for o in objects.iter_mut() {
        if is_cluster_scoped(&o.object) {
            let get = |k: &str| {
                o.object
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let name = o
                .object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err((
                o.source.clone(),
                format!(
                    "invalid cluster scoped object [name={name} kind={} apiVersion={}] found, consider using \"defaultNamespace\", not \"namespace\" in fleet.yaml",
                    get("kind"),
                    get("apiVersion")
                ),
            ));
        }
        if let Some(meta) = o.object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), Value::String(namespace.to_string()));
        }
    }
    Ok(())
}
