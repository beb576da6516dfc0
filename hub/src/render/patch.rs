//! The three patch styles of Fleet's overlay `_patch` files, chosen as Fleet (wrangler's
//! `patch.Apply`) chooses: a list is a JSON Patch (RFC 6902); a mapping patching a built-in
//! Kubernetes kind is a strategic merge patch; any other mapping is a JSON Merge Patch
//! (RFC 7386). Patches may be written in YAML. The result is written back as JSON, as Fleet
//! does.
//!
//! The strategic merge is Kubernetes' algorithm for the lists that matter in practice
//! (containers, env, ports, volumes, volumeMounts, … merged by their key; finalizers as a
//! set; `$patch: replace|delete` directives); other lists are replaced, which is also what
//! Kubernetes does for lists without a merge key.

use serde_json::{Map, Value};

/// Patch the single-document file `base` with `patch`; returns the new file content.
pub fn apply_file(base: &[u8], patch: &[u8]) -> Result<Vec<u8>, String> {
    let mut target = single_document(base).map_err(|m| format!("the file it patches: {m}"))?;
    let patch = single_document(patch)?;
    match &patch {
        Value::Array(ops) => json_patch(&mut target, ops)?,
        Value::Object(_) if is_builtin(&target) => strategic_merge(&mut target, &patch),
        Value::Object(_) => merge_patch(&mut target, &patch),
        _ => return Err("a patch is a mapping (merge patch) or a list (JSON patch)".into()),
    }
    Ok(serde_json::to_vec_pretty(&target).expect("JSON values serialize"))
}

fn single_document(data: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("invalid YAML: {e}"))?;
    let mut docs = docs.into_iter().filter(|d| !d.is_null());
    match (docs.next(), docs.next()) {
        (Some(doc), None) => Ok(doc),
        (None, _) => Err("is empty".into()),
        (Some(_), Some(_)) => {
            Err("has several YAML documents; overlay patches work on single-document files".into())
        }
    }
}

/// API groups compiled into Kubernetes' client scheme: their kinds get strategic merges.
const BUILTIN_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "extensions",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "admissionregistration.k8s.io",
    "certificates.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "internal.apiserver.k8s.io",
    "storagemigration.k8s.io",
];

fn is_builtin(obj: &Value) -> bool {
    let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str) else {
        return false;
    };
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    BUILTIN_GROUPS.contains(&group)
}

/// RFC 7386.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// RFC 6902, all six operations.
pub fn json_patch(target: &mut Value, ops: &[Value]) -> Result<(), String> {
    for (i, op) in ops.iter().enumerate() {
        let at = |m: String| format!("JSON patch operation {i}: {m}");
        let field = |name: &str| op.get(name).ok_or_else(|| at(format!("needs `{name}`")));
        let path = field("path")?
            .as_str()
            .ok_or_else(|| at("`path` must be a string".into()))?;
        let from = || -> Result<&str, String> {
            field("from")?
                .as_str()
                .ok_or_else(|| at("`from` must be a string".into()))
        };
        match op.get("op").and_then(Value::as_str) {
            Some("add") => add(target, path, field("value")?.clone()),
            Some("remove") => remove(target, path).map(drop),
            Some("replace") => {
                remove(target, path)?;
                add(target, path, field("value")?.clone())
            }
            Some("move") => {
                let v = remove(target, from()?)?;
                add(target, path, v)
            }
            Some("copy") => {
                let v = target
                    .pointer(&pointer(from()?)?)
                    .cloned()
                    .ok_or_else(|| format!("{} not found", from().unwrap_or_default()))?;
                add(target, path, v)
            }
            Some("test") => match target.pointer(&pointer(path)?) {
                Some(v) if v == field("value")? => Ok(()),
                _ => Err(format!("test of {path} failed")),
            },
            other => Err(format!("unknown op {other:?}")),
        }
        .map_err(at)?;
    }
    Ok(())
}

fn pointer(path: &str) -> Result<String, String> {
    if path.is_empty() || path.starts_with('/') {
        Ok(path.to_string())
    } else {
        Err(format!("{path:?} is not a JSON pointer (it starts with /)"))
    }
}

/// The parent of `path` and the last token, unescaped.
fn split_pointer(path: &str) -> Result<(String, String), String> {
    let path = pointer(path)?;
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| "cannot change the whole document".to_string())?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if last == "-" {
                a.len()
            } else {
                index(&last, a.len() + 1)?
            };
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("{parent:?} not found (the parent of {path})")),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("{path} not found");
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(missing),
        Some(Value::Array(a)) => {
            let i = index(&last, a.len())?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

fn index(token: &str, len: usize) -> Result<usize, String> {
    token
        .parse::<usize>()
        .ok()
        .filter(|i| *i < len)
        .ok_or_else(|| format!("{token:?} is not an index of the list"))
}

/// Kubernetes' strategic merge patch for the fields that have merge keys.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object");
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(gone)) = (t.get_mut(field), v) {
                list.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let delete = v.get("$patch").and_then(Value::as_str) == Some("delete");
        match (t.get_mut(k), v) {
            _ if v.is_null() || delete => {
                t.remove(k);
            }
            (Some(base @ Value::Object(_)), Value::Object(_)) => strategic_merge(base, v),
            (Some(Value::Array(base)), Value::Array(items)) => merge_list(k, base, items),
            _ => {
                t.insert(k.clone(), strip_directives(v));
            }
        }
    }
}

/// The merge key of a list field of a built-in kind, or None to replace the list.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "secrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => "containerPort",
        "ports" => "port",
        _ => return None,
    })
}

fn merge_list(field: &str, base: &mut Vec<Value>, items: &[Value]) {
    let directive = |v: &Value| v.get("$patch").and_then(Value::as_str).map(str::to_string);
    if items
        .iter()
        .any(|i| directive(i).as_deref() == Some("replace"))
    {
        *base = items
            .iter()
            .filter(|i| directive(i).is_none())
            .map(strip_directives)
            .collect();
        return;
    }
    if field == "finalizers" {
        for i in items {
            if !base.contains(i) {
                base.push(i.clone());
            }
        }
        return;
    }
    let all: Vec<Value> = base.iter().chain(items).cloned().collect();
    let Some(key) = merge_key(field, &all) else {
        *base = items.iter().map(strip_directives).collect();
        return;
    };
    for item in items {
        let id = item.get(key);
        let found = base.iter().position(|b| id.is_some() && b.get(key) == id);
        match (directive(item).as_deref(), found) {
            (Some("delete"), Some(i)) => {
                base.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => strategic_merge(&mut base[i], item),
            (_, None) => base.push(strip_directives(item)),
        }
    }
}

/// `v` without `$…` directive keys (at any depth).
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}
