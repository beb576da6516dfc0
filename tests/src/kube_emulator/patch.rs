//! The non-apply PATCH flavours: JSON merge patch (RFC 7386), strategic merge patch (merge patch
//! plus keyed-list merging by the same list keys server-side apply uses, and the `$patch`
//! directives), and JSON patch (RFC 6902). Each turns the live object into the patched object,
//! which then goes through the same update path as a PUT.

use serde_json::{Map, Value};

use super::schema::{Schema, Shape, item_key};
use super::status::ApiError;

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(pm) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    for (k, pv) in pm {
        if pv.is_null() {
            out.remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), pv);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// Strategic merge patch, with keyed lists merged by key and `$patch: delete|replace`.
pub(crate) fn strategic_merge(target: &Value, patch: &Value, s: &Schema) -> Value {
    match (target, patch) {
        (Value::Object(tm), Value::Object(pm)) => {
            if pm.get("$patch").is_some_and(|d| d == "replace") {
                return strip_directives(patch);
            }
            let mut out = tm.clone();
            for (k, pv) in pm {
                if k.starts_with('$') {
                    continue;
                }
                if pv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = match out.get(k) {
                    Some(tv) => strategic_merge(tv, pv, &s.field(k)),
                    None => strip_directives(pv),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(ta), Value::Array(pa)) => match s.shape(target) {
            Shape::ListMap(keys) => {
                let item_schema = s.item();
                let mut out = ta.clone();
                for pitem in pa {
                    let key = item_key(pitem, &keys);
                    let pos = key.as_ref().and_then(|k| {
                        out.iter()
                            .position(|t| item_key(t, &keys).as_ref() == Some(k))
                    });
                    let delete = pitem.get("$patch").is_some_and(|d| d == "delete");
                    match (pos, delete) {
                        (Some(p), true) => {
                            out.remove(p);
                        }
                        (None, true) => {}
                        (Some(p), false) => out[p] = strategic_merge(&out[p], pitem, &item_schema),
                        (None, false) => out.push(strip_directives(pitem)),
                    }
                }
                Value::Array(out)
            }
            _ => strip_directives(patch),
        },
        _ => strip_directives(patch),
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// RFC 6902 JSON patch.
pub(crate) fn json_patch(target: &Value, ops: &Value) -> Result<Value, ApiError> {
    let Value::Array(ops) = ops else {
        return Err(ApiError::bad_request(
            "json patch must be a JSON array of operations",
        ));
    };
    let mut doc = target.clone();
    for op in ops {
        let path = op["path"]
            .as_str()
            .ok_or_else(|| ApiError::unprocessable("json patch operation has no path"))?;
        match op["op"].as_str().unwrap_or_default() {
            "add" => add(&mut doc, path, op["value"].clone())?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)?;
                add(&mut doc, path, op["value"].clone())?;
            }
            "move" | "copy" => {
                let from = op["from"]
                    .as_str()
                    .ok_or_else(|| ApiError::unprocessable("json patch move/copy needs from"))?;
                let value = if op["op"] == "move" {
                    remove(&mut doc, from)?
                } else {
                    doc.pointer(from).cloned().ok_or_else(|| missing(from))?
                };
                add(&mut doc, path, value)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(ApiError::unprocessable(format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
            other => return Err(ApiError::unprocessable(format!("Unexpected kind: {other}"))),
        }
    }
    Ok(doc)
}

fn missing(path: &str) -> ApiError {
    ApiError::unprocessable(format!("doc is missing path: {path:?}: missing value"))
}

fn split(path: &str) -> Result<(String, String), ApiError> {
    let (parent, last) = path.rsplit_once('/').ok_or_else(|| missing(path))?;
    Ok((
        parent.to_string(),
        last.replace("~1", "/").replace("~0", "~"),
    ))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, value);
        }
        Some(Value::Array(items)) => {
            let idx = if last == "-" {
                items.len()
            } else {
                last.parse().map_err(|_| missing(path))?
            };
            if idx > items.len() {
                return Err(missing(path));
            }
            items.insert(idx, value);
        }
        _ => return Err(missing(path)),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, last) = split(path)?;
    match doc.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(|| missing(path)),
        Some(Value::Array(items)) => {
            let idx: usize = last.parse().map_err(|_| missing(path))?;
            if idx >= items.len() {
                return Err(missing(path));
            }
            Ok(items.remove(idx))
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patch() {
        let live = json!({"a": 1, "b": {"c": 2, "d": 3}});
        assert_eq!(
            merge_patch(&live, &json!({"b": {"c": null, "e": 4}})),
            json!({"a": 1, "b": {"d": 3, "e": 4}})
        );
        let ops = json!([{"op": "replace", "path": "/a", "value": 5}, {"op": "add", "path": "/l", "value": []},
            {"op": "add", "path": "/l/-", "value": "x"}, {"op": "remove", "path": "/b/d"}]);
        assert_eq!(
            json_patch(&live, &ops).unwrap(),
            json!({"a": 5, "b": {"c": 2}, "l": ["x"]})
        );
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let s = Schema::root("Deployment", None, false);
        let live = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}});
        let out = strategic_merge(&live, &patch, &s);
        assert_eq!(
            out.pointer("/spec/template/spec/containers/1/image"),
            Some(&json!("b:2"))
        );
        assert_eq!(
            out.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("a:1"))
        );
    }
}
