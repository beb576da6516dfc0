//! Validation on create and update, answered as 422 `Invalid` with one cause per field: object
//! names (RFC 1123 subdomain/label, DNS-1035 for Services, path segments for RBAC), labels and
//! annotations, finalizers on objects being deleted, and the kind-specific rules and immutable
//! fields that GitOps tools trip over. Workload and Service rules live in `workloads.rs`.

use serde_json::Value;

use super::catalog::ResourceType;
use super::status::{ApiError, FieldError};
use super::store::meta_str;
use super::workloads;

pub(crate) const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
pub(crate) const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

pub(crate) fn is_label_1123(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| alnum_lower(c) || c == '-')
        && s.starts_with(alnum_lower)
        && s.ends_with(alnum_lower)
}

pub(crate) fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label_1123)
}

fn is_1035(s: &str) -> bool {
    is_label_1123(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

fn is_qualified_part(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| ok(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(ok)
        && s.ends_with(ok)
}

/// A label/annotation key or finalizer: `[prefix/]name`.
fn qualified_name_error(s: &str) -> Option<&'static str> {
    let (prefix, name) = s.rsplit_once('/').map_or(("", s), |(p, n)| (p, n));
    if s.contains('/') && !is_subdomain(prefix) {
        return Some(
            "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
    }
    (!is_qualified_part(name)).then_some(QUALIFIED_MSG)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_part(s)
}

/// Validates `obj` of type `rt`; `old` is the live object on updates.
pub(crate) fn validate(
    rt: &ResourceType,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    metadata(rt, obj, old, &mut errs);
    let spec = &obj["spec"];
    let old_spec = old.map(|o| &o["spec"]);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "ConfigMap") | ("", "Secret") => config_data(obj, old, &mut errs),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            role_binding(obj, old, &mut errs)
        }
        ("", "PersistentVolumeClaim") => pvc(spec, old_spec, &mut errs),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj, old, &mut errs),
        ("networking.k8s.io", "Ingress") => ingress(spec, &mut errs),
        _ => workloads::validate(rt, obj, old, &mut errs),
    }
    if errs.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        &rt.group,
        &rt.kind,
        meta_str(obj, "name"),
        &errs,
    ))
}

fn metadata(rt: &ResourceType, obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let name = meta_str(obj, "name");
    let name_value = Value::String(name.to_string());
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if let Some(msg) = name_problem(rt, name) {
        errs.push(FieldError::invalid("metadata.name", &name_value, msg));
    }
    if let Some(Value::Object(labels)) = obj.pointer("/metadata/labels") {
        for (k, v) in labels {
            if let Some(msg) = qualified_name_error(k) {
                errs.push(FieldError::invalid(
                    "metadata.labels",
                    &Value::String(k.clone()),
                    msg,
                ));
            }
            let text = v.as_str().unwrap_or_default();
            if !is_label_value(text) {
                let detail = if text.len() > 63 {
                    "must be no more than 63 characters"
                } else {
                    LABEL_VALUE_MSG
                };
                errs.push(FieldError::invalid("metadata.labels", v, detail));
            }
        }
    }
    if let Some(Value::Object(annotations)) = obj.pointer("/metadata/annotations") {
        let mut total = 0;
        for (k, v) in annotations {
            total += k.len() + v.as_str().map_or(0, str::len);
            if let Some(msg) = qualified_name_error(k) {
                errs.push(FieldError::invalid(
                    "metadata.annotations",
                    &Value::String(k.clone()),
                    msg,
                ));
            }
        }
        if total > 262_144 {
            errs.push(FieldError::new(
                super::status::FieldErrorKind::Invalid,
                "metadata.annotations",
                None,
                "Too long: may not be more than 262144 bytes",
            ));
        }
    }
    finalizers(obj, old, errs);
}

/// Why `name` is not a valid name for `rt`, if it is not.
pub(crate) fn name_problem(rt: &ResourceType, name: &str) -> Option<&'static str> {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("rbac.authorization.k8s.io", _) => {
            if name == "." || name == ".." {
                Some("may not be '.' or '..'")
            } else if name.contains('/') {
                Some("may not contain '/'")
            } else if name.contains('%') {
                Some("may not contain '%'")
            } else {
                None
            }
        }
        ("", "Namespace") if name.len() > 63 => Some("must be no more than 63 characters"),
        ("", "Namespace") => (!is_label_1123(name)).then_some(LABEL_MSG),
        ("", "Service") if name.len() > 63 => Some("must be no more than 63 characters"),
        ("", "Service") => (!is_1035(name)).then_some(DNS1035_MSG),
        _ if name.len() > 253 => Some("must be no more than 253 characters"),
        _ => (!is_subdomain(name)).then_some(SUBDOMAIN_MSG),
    }
}

fn finalizers(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let list = |o: &Value| super::string_list(o.pointer("/metadata/finalizers"));
    let new = list(obj);
    for f in &new {
        if let Some(msg) = qualified_name_error(f) {
            errs.push(FieldError::invalid(
                "metadata.finalizers",
                &Value::String(f.clone()),
                msg,
            ));
        }
    }
    let Some(old) = old.filter(|o| o.pointer("/metadata/deletionTimestamp").is_some()) else {
        return;
    };
    let before = list(old);
    let added: Vec<&String> = new.iter().filter(|f| !before.contains(f)).collect();
    if !added.is_empty() {
        let detail = format!(
            "no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
        );
        errs.push(FieldError::forbidden("metadata.finalizers", detail));
    }
}

fn config_data(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    for field in ["data", "binaryData"] {
        if let Some(Value::Object(data)) = obj.get(field) {
            for k in data.keys() {
                let ok = !k.is_empty()
                    && k.len() <= 253
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                if !ok {
                    errs.push(FieldError::invalid(
                        format!("{field}[{k}]"),
                        &Value::String(k.clone()),
                        CONFIG_KEY_MSG,
                    ));
                }
            }
        }
    }
    let Some(old) = old else { return };
    if old["immutable"] == true {
        if obj["immutable"] != true {
            errs.push(FieldError::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
        for field in ["data", "binaryData"] {
            if obj.get(field) != old.get(field) {
                errs.push(FieldError::forbidden(
                    field,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
    }
    if obj.get("type").is_some() && obj.get("type") != old.get("type") {
        errs.push(FieldError::immutable("type", &obj["type"]));
    }
}

fn role_binding(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let role_ref = &obj["roleRef"];
    if !role_ref.is_object() {
        errs.push(FieldError::required("roleRef.name", ""));
        return;
    }
    for f in ["kind", "name"] {
        if role_ref[f].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("roleRef.{f}"), ""));
        }
    }
    if let Some(old) = old
        && old["roleRef"] != *role_ref
    {
        errs.push(FieldError::invalid(
            "roleRef",
            role_ref,
            "cannot change roleRef",
        ));
    }
}

fn pvc(spec: &Value, old_spec: Option<&Value>, errs: &mut Vec<FieldError>) {
    let Some(old_spec) = old_spec else { return };
    let strip = |s: &Value| {
        let mut s = s.clone();
        if let Some(r) = s.pointer_mut("/resources").and_then(Value::as_object_mut) {
            r.remove("requests");
        }
        if let Some(m) = s.as_object_mut() {
            m.remove("volumeAttributesClassName");
        }
        s
    };
    if strip(spec) != strip(old_spec) {
        errs.push(FieldError::forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
}

fn ingress(spec: &Value, errs: &mut Vec<FieldError>) {
    let rules = spec["rules"].as_array().cloned().unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        for (j, path) in rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if path["pathType"].as_str().is_none() {
                let field = format!("spec.rules[{i}].http.paths[{j}].pathType");
                errs.push(FieldError::required(field, "pathType must be specified"));
            }
        }
    }
}

fn crd(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldError>) {
    let spec = &obj["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec
        .pointer("/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else if !group.contains('.') || !is_subdomain(group) {
        errs.push(FieldError::invalid(
            "spec.group",
            &spec["group"],
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    } else if !is_label_1123(plural) {
        errs.push(FieldError::invalid(
            "spec.names.plural",
            &spec["names"]["plural"],
            LABEL_MSG,
        ));
    }
    if spec
        .pointer("/names/kind")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    let name = meta_str(obj, "name");
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            &obj["metadata"]["name"],
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        errs.push(FieldError::not_supported(
            "spec.scope",
            &spec["scope"],
            &["Cluster", "Namespaced"],
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::invalid(
            "spec.versions",
            &spec["versions"],
            "must have exactly one version marked as storage version",
        ));
    } else if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            &Value::Null,
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        if v.pointer("/schema/openAPIV3Schema").is_none() {
            errs.push(FieldError::required(
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "schemas are required",
            ));
        }
    }
    if let Some(old) = old
        && old["spec"]["group"] != spec["group"]
    {
        errs.push(FieldError::immutable("spec.group", &spec["group"]));
    }
}
