//! The resource types the emulated server serves: a fixed table of built-in kinds plus the types
//! defined by established CustomResourceDefinitions. Discovery, routing and the write path all
//! resolve a request's group/version/resource here, so a type that is not in the catalog is not
//! served at all (the plain-text 404 of the real server).

use std::sync::Arc;

use serde_json::Value;

/// When `metadata.generation` moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GenerationPolicy {
    /// The kind has no generation (ConfigMap, Secret, Service, RBAC...).
    None,
    /// Bumps when `spec` changes.
    Spec,
    /// Bumps when `spec` or `metadata.annotations` change (Deployment).
    SpecAndAnnotations,
    /// Custom resources: bumps on any change outside `metadata` (and `status` when it is a subresource).
    AllButMetadata,
}

/// Identifies a stored collection: the same for every version of a type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TypeKey {
    pub group: String,
    pub resource: String,
}

/// A served group/version/resource.
#[derive(Debug)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    pub generation: GenerationPolicy,
    /// Set for custom resources.
    pub custom: Option<CustomInfo>,
}

/// What a custom resource type carries from its CRD.
#[derive(Debug)]
pub(crate) struct CustomInfo {
    pub schema: Option<Value>,
    pub served_versions: Vec<String>,
    pub terminating: bool,
}

impl ResourceType {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub(crate) fn key(&self) -> TypeKey {
        TypeKey {
            group: self.group.clone(),
            resource: self.plural.clone(),
        }
    }

    pub(crate) fn is(&self, group: &str, kind: &str) -> bool {
        self.group == group && self.kind == kind
    }

    pub(crate) fn verbs(&self) -> Vec<&'static str> {
        if self.is("", "Namespace") {
            return vec![
                "create", "delete", "get", "list", "patch", "update", "watch",
            ];
        }
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

struct Builtin(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
    GenerationPolicy,
);

use GenerationPolicy as G;

/// group, version, kind, plural, namespaced, short names, status subresource, generation.
#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    Builtin("", "v1", "Namespace", "namespaces", false, &["ns"], true, G::None),
    Builtin("", "v1", "ConfigMap", "configmaps", true, &["cm"], false, G::None),
    Builtin("", "v1", "Secret", "secrets", true, &[], false, G::None),
    Builtin("", "v1", "Service", "services", true, &["svc"], true, G::None),
    Builtin("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"], false, G::None),
    Builtin("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, &["pvc"], true, G::None),
    Builtin("", "v1", "PersistentVolume", "persistentvolumes", false, &["pv"], true, G::None),
    Builtin("", "v1", "Pod", "pods", true, &["po"], true, G::Spec),
    Builtin("", "v1", "Endpoints", "endpoints", true, &["ep"], false, G::None),
    Builtin("", "v1", "Event", "events", true, &["ev"], false, G::None),
    Builtin("", "v1", "LimitRange", "limitranges", true, &["limits"], false, G::None),
    Builtin("", "v1", "ResourceQuota", "resourcequotas", true, &["quota"], true, G::None),
    Builtin("apps", "v1", "Deployment", "deployments", true, &["deploy"], true, G::SpecAndAnnotations),
    Builtin("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"], true, G::Spec),
    Builtin("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], true, G::Spec),
    Builtin("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"], true, G::Spec),
    Builtin("apps", "v1", "ControllerRevision", "controllerrevisions", true, &[], false, G::None),
    Builtin("batch", "v1", "Job", "jobs", true, &[], true, G::Spec),
    Builtin("batch", "v1", "CronJob", "cronjobs", true, &["cj"], true, G::Spec),
    Builtin("networking.k8s.io", "v1", "Ingress", "ingresses", true, &["ing"], true, G::Spec),
    Builtin("networking.k8s.io", "v1", "IngressClass", "ingressclasses", false, &[], false, G::Spec),
    Builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, &["netpol"], false, G::Spec),
    Builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, &["pdb"], true, G::Spec),
    Builtin("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, &["hpa"], true, G::None),
    Builtin("rbac.authorization.k8s.io", "v1", "Role", "roles", true, &[], false, G::None),
    Builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, &[], false, G::None),
    Builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, &[], false, G::None),
    Builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, &[], false, G::None),
    Builtin("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, &["sc"], false, G::None),
    Builtin("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", false, &["pc"], false, G::None),
    Builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false, &["crd", "crds"], true, G::Spec),
];

const ALL_CATEGORY: &[&str] = &[
    "Pod",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
];

/// Every served type.
pub(crate) struct Catalog {
    builtin: Vec<Arc<ResourceType>>,
    custom: Vec<Arc<ResourceType>>,
}

impl Catalog {
    pub(crate) fn new() -> Self {
        let builtin = BUILTINS
            .iter()
            .map(
                |Builtin(group, version, kind, plural, namespaced, short, status, generation)| {
                    Arc::new(ResourceType {
                        group: group.to_string(),
                        version: version.to_string(),
                        kind: kind.to_string(),
                        plural: plural.to_string(),
                        singular: kind.to_lowercase(),
                        namespaced: *namespaced,
                        short_names: short.iter().map(|s| s.to_string()).collect(),
                        categories: if ALL_CATEGORY.contains(kind) {
                            vec!["all".into()]
                        } else {
                            vec![]
                        },
                        status_subresource: *status,
                        generation: *generation,
                        custom: None,
                    })
                },
            )
            .collect();
        Catalog {
            builtin,
            custom: Vec::new(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.builtin.iter().chain(self.custom.iter())
    }

    pub(crate) fn by_resource(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<ResourceType>> {
        self.all()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    pub(crate) fn by_kind(
        &self,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Option<Arc<ResourceType>> {
        self.all()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
            .cloned()
    }

    /// Any served version of a stored collection.
    pub(crate) fn by_key(&self, key: &TypeKey) -> Option<Arc<ResourceType>> {
        self.all()
            .find(|t| t.group == key.group && t.plural == key.resource)
            .cloned()
    }

    /// Served resources of one group/version, in table order.
    pub(crate) fn resources(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.all()
            .filter(|t| t.group == group && t.version == version)
            .cloned()
            .collect()
    }

    /// Non-core groups with their versions, preferred version first; built-in groups first.
    pub(crate) fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        let mut custom_groups: Vec<&str> = self.custom.iter().map(|t| t.group.as_str()).collect();
        custom_groups.sort();
        let names = self
            .builtin
            .iter()
            .map(|t| t.group.as_str())
            .chain(custom_groups);
        for name in names.filter(|g| !g.is_empty()) {
            if out.iter().any(|(g, _)| g == name) {
                continue;
            }
            let mut versions: Vec<String> = Vec::new();
            for t in self.all().filter(|t| t.group == name) {
                if !versions.contains(&t.version) {
                    versions.push(t.version.clone());
                }
            }
            versions.sort_by(|a, b| version_order(a, b));
            out.push((name.to_string(), versions));
        }
        out
    }

    /// Replaces the custom types with those of the given (established) CRDs.
    pub(crate) fn set_custom(&mut self, crds: &[&Value]) {
        self.custom = crds
            .iter()
            .flat_map(|crd| custom_types(crd))
            .map(Arc::new)
            .collect();
    }
}

/// Whether a CRD object has `Established=True`.
pub(crate) fn crd_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
}

fn custom_types(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let list_of = |v: &Value| super::string_list(Some(v));
    let versions: Vec<&Value> = spec["versions"]
        .as_array()
        .map(|vs| vs.iter().filter(|v| v["served"] == true).collect())
        .unwrap_or_default();
    let served: Vec<String> = versions.iter().map(|v| str_of(&v["name"])).collect();
    let kind = str_of(&names["kind"]);
    versions
        .iter()
        .map(|v| {
            let status = v
                .pointer("/subresources/status")
                .is_some_and(Value::is_object);
            ResourceType {
                group: str_of(&spec["group"]),
                version: str_of(&v["name"]),
                kind: kind.clone(),
                plural: str_of(&names["plural"]),
                singular: names["singular"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| kind.to_lowercase()),
                namespaced: spec["scope"] != "Cluster",
                short_names: list_of(&names["shortNames"]),
                categories: list_of(&names["categories"]),
                status_subresource: status,
                generation: G::AllButMetadata,
                custom: Some(CustomInfo {
                    schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                    served_versions: served.clone(),
                    terminating: crd.pointer("/metadata/deletionTimestamp").is_some(),
                }),
            }
        })
        .collect()
}

/// Kubernetes version priority: GA > beta > alpha (each by major then minor, descending), then
/// anything else alphabetically.
pub(crate) fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(v: &str) -> (u8, u64, u64) {
        let Some(rest) = v.strip_prefix('v') else {
            return (0, 0, 0);
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(major) = digits.parse::<u64>() else {
            return (0, 0, 0);
        };
        let tail = &rest[digits.len()..];
        let (class, minor) = if tail.is_empty() {
            (3, 0)
        } else if let Some(m) = tail.strip_prefix("beta") {
            (2, m.parse().unwrap_or(u64::MAX))
        } else if let Some(m) = tail.strip_prefix("alpha") {
            (1, m.parse().unwrap_or(u64::MAX))
        } else {
            return (0, 0, 0);
        };
        (class, major, minor)
    }
    let (ka, kb) = (key(a), key(b));
    if ka.0 == 0 && kb.0 == 0 {
        return a.cmp(b);
    }
    kb.cmp(&ka)
}
