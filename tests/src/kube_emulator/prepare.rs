//! What happens to a request body before the write path stores it: checks against the URL
//! (type, namespace, name), NamespaceLifecycle admission (404 for a missing namespace, 403 while
//! it terminates), the metadata and status the server owns on create and carries over on update,
//! and when `metadata.generation` moves.

use serde_json::{Map, Value, json};

use super::catalog::{GenerationPolicy, ResourceType, TypeKey};
use super::status::ApiError;
use super::store::State;
use super::write::WriteCtx;

pub(super) const UNTRACKED_META: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

pub(crate) fn namespaces_key() -> TypeKey {
    TypeKey {
        group: String::new(),
        resource: "namespaces".into(),
    }
}

/// Checks a request body against the URL and normalizes its type, namespace and name.
pub(super) fn check_body(
    ctx: &WriteCtx,
    body: Value,
    url_name: Option<&str>,
    apply: bool,
) -> Result<Value, ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::bad_request(
            "the body of the request was in an unknown format: expected a JSON object",
        ));
    };
    check_type(ctx, &obj, apply)?;
    obj.insert("apiVersion".into(), json!(ctx.rt.api_version()));
    obj.insert("kind".into(), json!(ctx.rt.kind));
    if obj.get("metadata").is_none_or(Value::is_null) {
        obj.insert("metadata".into(), json!({}));
    }
    let Some(Value::Object(meta)) = obj.get_mut("metadata") else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    check_string_maps(meta)?;
    check_namespace(ctx, meta)?;
    check_shapes(ctx, &obj)?;
    let meta = obj["metadata"].as_object_mut().expect("checked above");
    if let Some(url_name) = url_name {
        let body_name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
        if body_name.is_empty() && apply {
            meta.insert("name".into(), json!(url_name));
        } else if body_name != url_name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
            )));
        }
    }
    Ok(Value::Object(obj))
}

/// The body's `apiVersion` and `kind` must match the URL (apply bodies must carry both).
fn check_type(ctx: &WriteCtx, obj: &Map<String, Value>, apply: bool) -> Result<(), ApiError> {
    let rt = &ctx.rt;
    let text = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (kind, api_version) = (text("kind"), text("apiVersion"));
    if apply && (kind.is_empty() || api_version.is_empty()) {
        let what = if kind.is_empty() {
            "Kind"
        } else {
            "apiVersion"
        };
        let body = Value::Object(obj.clone());
        return Err(ApiError::bad_request(format!(
            "Object '{what}' is missing in '{body}'"
        )));
    }
    if !kind.is_empty() && kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the request body ({kind}) does not match the kind of the resource in the URL ({})",
            rt.kind
        )));
    }
    let served_custom_version = rt.custom.as_ref().is_some_and(|c| {
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        group == rt.group && c.served_versions.iter().any(|s| s == version)
    });
    if !api_version.is_empty() && api_version != rt.api_version() && !served_custom_version {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    Ok(())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn decode_error(found: &Value, field: &str, want: &str) -> ApiError {
    ApiError::bad_request(format!(
        "json: cannot unmarshal {} into Go struct field {field} of type {want}",
        json_type(found)
    ))
}

/// Fields whose JSON type a typed decoder would reject (and later code relies on).
fn check_shapes(ctx: &WriteCtx, obj: &Map<String, Value>) -> Result<(), ApiError> {
    let meta = &obj["metadata"];
    for f in [
        "name",
        "namespace",
        "generateName",
        "resourceVersion",
        "uid",
    ] {
        if let Some(v) = meta.get(f).filter(|v| !v.is_string() && !v.is_null()) {
            return Err(decode_error(
                v,
                &format!("ObjectMeta.metadata.{f}"),
                "string",
            ));
        }
    }
    if let Some(f) = meta.get("finalizers").filter(|f| !f.is_null()) {
        let strings = f.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if !strings {
            return Err(decode_error(
                f,
                "ObjectMeta.metadata.finalizers",
                "[]string",
            ));
        }
    }
    if ctx.rt.custom.is_none() {
        for f in ["spec", "status"] {
            if let Some(v) = obj.get(f).filter(|v| !v.is_object() && !v.is_null()) {
                return Err(decode_error(v, &format!("{}.{f}", ctx.rt.kind), "object"));
            }
        }
    }
    Ok(())
}

/// Labels and annotations are `map[string]string`: anything else fails to decode.
fn check_string_maps(meta: &Map<String, Value>) -> Result<(), ApiError> {
    for field in ["labels", "annotations"] {
        let Some(Value::Object(m)) = meta.get(field) else {
            continue;
        };
        if let Some(v) = m.values().find(|v| !v.is_string()) {
            let ty = match v {
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                Value::Null => "null",
                Value::Array(_) => "array",
                _ => "object",
            };
            return Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {ty} into Go struct field ObjectMeta.metadata.{field} of type string"
            )));
        }
    }
    Ok(())
}

/// Fills the URL namespace in (or drops it for cluster-scoped types); a different one is a 400.
fn check_namespace(ctx: &WriteCtx, meta: &mut Map<String, Value>) -> Result<(), ApiError> {
    match (
        &ctx.namespace,
        meta.get("namespace").and_then(Value::as_str),
    ) {
        (Some(url), Some(body)) if !body.is_empty() && body != url => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        (Some(url), _) => {
            meta.insert("namespace".into(), json!(url));
        }
        (None, _) => {
            meta.remove("namespace");
        }
    }
    Ok(())
}

/// NamespaceLifecycle admission for creating `name` in the context's namespace.
pub(super) fn admit_namespace(state: &State, ctx: &WriteCtx, name: &str) -> Result<(), ApiError> {
    if !ctx.rt.namespaced {
        return Ok(());
    }
    let ns = ctx.ns();
    match state.get(&namespaces_key(), "", ns) {
        None => Err(ApiError::namespace_not_found(ns)),
        Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(
            ApiError::namespace_terminating(&ctx.rt.group, &ctx.rt.plural, name, ns),
        ),
        Some(_) => Ok(()),
    }
}

/// Refuses creates of custom resources whose CRD is being deleted.
pub(super) fn admit_custom(ctx: &WriteCtx) -> Result<(), ApiError> {
    if ctx.rt.custom.as_ref().is_some_and(|c| c.terminating) {
        return Err(ApiError::method_not_allowed(
            "create not allowed while custom resource definition is terminating",
        ));
    }
    Ok(())
}

pub(super) fn generate_name(obj: &mut Value) {
    let meta = &mut obj["metadata"];
    let prefix = meta["generateName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if meta["name"].as_str().is_none_or(str::is_empty) && !prefix.is_empty() {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        let suffix: String = bytes[..5]
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect();
        meta["name"] = json!(format!("{prefix}{suffix}"));
    }
}

/// The status a new object starts with, for types whose status is a subresource.
fn initial_status(rt: &ResourceType) -> Option<Value> {
    if rt.custom.is_some() {
        return None;
    }
    Some(match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Service") => json!({"loadBalancer": {}}),
        ("", "Namespace") => json!({"phase": "Active"}),
        ("", "PersistentVolumeClaim" | "Pod") => json!({"phase": "Pending"}),
        ("apiextensions.k8s.io", _) => {
            json!({"acceptedNames": {"kind": "", "plural": ""}, "conditions": [], "storedVersions": []})
        }
        _ => json!({}),
    })
}

/// Server-owned metadata and status of a new object.
pub(super) fn prepare_create(ctx: &WriteCtx, obj: &mut Value) {
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("checked body has metadata");
    UNTRACKED_META[2..].iter().for_each(|f| {
        meta.remove(*f);
    });
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(ctx.now));
    if ctx
        .rt
        .is("apiextensions.k8s.io", "CustomResourceDefinition")
    {
        let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
        let cleanup = json!("customresourcecleanup.apiextensions.k8s.io");
        if let Some(list) = finalizers.as_array_mut().filter(|l| !l.contains(&cleanup)) {
            list.push(cleanup);
        }
    }
    if ctx.rt.status_subresource {
        let m = obj.as_object_mut().expect("object");
        m.remove("status");
        if let Some(status) = initial_status(&ctx.rt) {
            m.insert("status".into(), status);
        }
    }
}

pub(super) fn with_status(live: &Value, from: &Value) -> Value {
    let mut out = live.clone();
    match from.get("status").filter(|s| !s.is_null()) {
        Some(s) => out["status"] = s.clone(),
        None => {
            out.as_object_mut().map(|m| m.remove("status"));
        }
    }
    out
}

pub(super) fn carry_server_meta(live: &Value, new: &mut Value) {
    let lm = live["metadata"].as_object().cloned().unwrap_or_default();
    let nm = new["metadata"]
        .as_object_mut()
        .expect("checked body has metadata");
    for f in UNTRACKED_META {
        match lm.get(f) {
            Some(v) => nm.insert(f.to_string(), v.clone()),
            None => nm.remove(f),
        };
    }
    new["apiVersion"] = live["apiVersion"].clone();
    new["kind"] = live["kind"].clone();
}

pub(super) fn next_generation(ctx: &WriteCtx, live: &Value, new: &Value) -> Option<i64> {
    let current = live
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let changed = |a: &Value, b: &Value| a != b;
    let bumped = match ctx.rt.generation {
        GenerationPolicy::None => return None,
        _ if ctx.status => false,
        GenerationPolicy::Spec => changed(&live["spec"], &new["spec"]),
        GenerationPolicy::SpecAndAnnotations => {
            changed(&live["spec"], &new["spec"])
                || changed(
                    &live["metadata"]["annotations"],
                    &new["metadata"]["annotations"],
                )
        }
        GenerationPolicy::AllButMetadata => {
            let strip = |v: &Value| -> Map<String, Value> {
                let mut m = v.as_object().cloned().unwrap_or_default();
                m.remove("metadata");
                if ctx.rt.status_subresource {
                    m.remove("status");
                }
                m
            };
            strip(live) != strip(new)
        }
    };
    Some(if bumped { current + 1 } else { current.max(1) })
}
