//! Just enough schema to merge and track ownership the way the real server does: which lists are
//! keyed (and by which fields), which are sets, and which values are atomic. Built-in kinds use a
//! table of the `+listType=map`/`+listMapKey`/`+structType=atomic` markers of the Kubernetes API
//! types that matter for workloads; custom resources read `x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys` and `x-kubernetes-map-type` from their CRD's `openAPIV3Schema`.

use serde_json::Value;

/// How a value merges and how its ownership is tracked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Shape {
    /// Replaced and owned as a whole (scalars, atomic lists, atomic structs such as label selectors).
    Atomic,
    /// A struct or granular map: merged and owned per field.
    Struct,
    /// An associative list (`+listType=map`): items merged and owned by their key fields.
    ListMap(Vec<KeyField>),
    /// A set of scalars (`+listType=set`).
    ListSet,
}

/// A key field of an associative list, with the default used when an item omits it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct KeyField {
    pub name: String,
    pub default: Option<Value>,
}

fn keys(names: &[&str]) -> Shape {
    Shape::ListMap(
        names
            .iter()
            .map(|n| KeyField {
                name: n.to_string(),
                default: None,
            })
            .collect(),
    )
}

fn ports_keys(port_field: &str) -> Shape {
    Shape::ListMap(vec![
        KeyField {
            name: port_field.to_string(),
            default: None,
        },
        KeyField {
            name: "protocol".into(),
            default: Some(Value::String("TCP".into())),
        },
    ])
}

/// A position in an object's schema.
#[derive(Clone, Debug)]
pub(crate) enum Schema<'a> {
    /// A built-in kind; `path` holds the field names from the root (list items add nothing).
    Builtin { kind: &'a str, path: Vec<String> },
    /// A custom resource's structural schema node (`None`: unknown, preserved fields).
    Custom(Option<&'a Value>),
}

impl<'a> Schema<'a> {
    /// The root schema of `kind`; `custom` is the CRD version's `openAPIV3Schema`, if any.
    pub(crate) fn root(kind: &'a str, custom: Option<&'a Value>, is_custom: bool) -> Self {
        if is_custom {
            Schema::Custom(custom)
        } else {
            Schema::Builtin {
                kind,
                path: Vec::new(),
            }
        }
    }

    /// The schema of field `name` of this struct or map.
    pub(crate) fn field(&self, name: &str) -> Schema<'a> {
        match self {
            Schema::Builtin { kind, path } => {
                let mut path = path.clone();
                path.push(name.to_string());
                Schema::Builtin { kind, path }
            }
            Schema::Custom(node) => {
                // Object metadata of a custom resource (or of a template in it) is an ObjectMeta.
                if name == "metadata" {
                    return Schema::Builtin {
                        kind: "",
                        path: vec!["metadata".into()],
                    };
                }
                let Some(n) = node else {
                    return Schema::Custom(None);
                };
                if let Some(p) = n.get("properties").and_then(|p| p.get(name)) {
                    return Schema::Custom(Some(p));
                }
                match n.get("additionalProperties") {
                    Some(ap @ Value::Object(_)) => Schema::Custom(Some(ap)),
                    _ => Schema::Custom(None),
                }
            }
        }
    }

    /// The schema of an item of this list.
    pub(crate) fn item(&self) -> Schema<'a> {
        match self {
            Schema::Builtin { .. } => self.clone(),
            Schema::Custom(node) => Schema::Custom(node.and_then(|n| n.get("items"))),
        }
    }

    /// The shape of `v` at this position.
    pub(crate) fn shape(&self, v: &Value) -> Shape {
        match (self, v) {
            (Schema::Builtin { kind, path }, Value::Array(_)) => builtin_list(kind, path),
            (Schema::Builtin { path, .. }, Value::Object(_)) => {
                let last = path.last().map(String::as_str).unwrap_or("");
                // LabelSelector / NodeSelector are `+structType=atomic`, Service and Pod
                // selectors `+mapType=atomic`.
                if last == "selector" || last.ends_with("Selector") {
                    Shape::Atomic
                } else {
                    Shape::Struct
                }
            }
            (Schema::Custom(node), Value::Array(_)) => custom_list(*node),
            (Schema::Custom(node), Value::Object(_)) => {
                let atomic = node
                    .and_then(|n| n.get("x-kubernetes-map-type"))
                    .is_some_and(|t| t == "atomic");
                if atomic { Shape::Atomic } else { Shape::Struct }
            }
            _ => Shape::Atomic,
        }
    }
}

fn builtin_list(kind: &str, path: &[String]) -> Shape {
    let n = path.len();
    let last = path.last().map(String::as_str).unwrap_or("");
    let parent = if n >= 2 { path[n - 2].as_str() } else { "" };
    let in_container = matches!(
        parent,
        "containers" | "initContainers" | "ephemeralContainers"
    );
    match last {
        "finalizers" if n == 2 && parent == "metadata" => Shape::ListSet,
        "ownerReferences" if parent == "metadata" => keys(&["uid"]),
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets" => keys(&["name"]),
        "resourceClaims" | "schedulingGates" => keys(&["name"]),
        "ports" if in_container => ports_keys("containerPort"),
        "ports" if kind == "Service" && path.len() == 2 && parent == "spec" => ports_keys("port"),
        "env" if in_container => keys(&["name"]),
        "volumeMounts" if in_container => keys(&["mountPath"]),
        "volumeDevices" if in_container => keys(&["devicePath"]),
        "conditions" => keys(&["type"]),
        "hostAliases" => keys(&["ip"]),
        "topologySpreadConstraints" => keys(&["topologyKey", "whenUnsatisfiable"]),
        _ => Shape::Atomic,
    }
}

fn custom_list(node: Option<&Value>) -> Shape {
    let Some(n) = node else { return Shape::Atomic };
    match n.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => Shape::ListSet,
        Some("map") => {
            let item_props = n.get("items").and_then(|i| i.get("properties"));
            let names = n
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array);
            let keys = names
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|k| KeyField {
                    name: k.to_string(),
                    default: item_props
                        .and_then(|p| p.get(k))
                        .and_then(|p| p.get("default"))
                        .cloned(),
                })
                .collect();
            Shape::ListMap(keys)
        }
        _ => Shape::Atomic,
    }
}

/// The key element of a keyed-list item (`None` when a key field is missing and has no default).
pub(crate) fn item_key(item: &Value, keys: &[KeyField]) -> Option<String> {
    let obj = item.as_object()?;
    let mut key = serde_json::Map::new();
    for k in keys {
        let v = obj
            .get(&k.name)
            .filter(|v| !v.is_null())
            .or(k.default.as_ref())?;
        key.insert(k.name.clone(), v.clone());
    }
    Some(super::fieldset::canonical_json(&Value::Object(key)))
}
