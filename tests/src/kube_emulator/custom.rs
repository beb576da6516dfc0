//! Custom resources against their CRD's structural schema, as the real server treats them:
//! unknown fields are pruned (unless `x-kubernetes-preserve-unknown-fields`), `default`s are
//! filled in, nulls of non-nullable fields are dropped, and types, `required`, `enum` and
//! numeric bounds are checked, answering 422 with the real `... in body must be of type` causes.

use serde_json::{Map, Value};

use super::catalog::ResourceType;
use super::status::{ApiError, FieldError};
use super::store::meta_str;

/// Prunes, defaults and validates a custom resource in place (a no-op for built-in kinds).
pub(crate) fn prune_default_validate(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let Some(schema) = rt.custom.as_ref().and_then(|c| c.schema.as_ref()) else {
        return Ok(());
    };
    let name = meta_str(obj, "name").to_string();
    let mut errs = Vec::new();
    if let Value::Object(m) = obj {
        let keep = |k: &str| matches!(k, "apiVersion" | "kind" | "metadata");
        let mut rest: Map<String, Value> = m
            .iter()
            .filter(|(k, _)| !keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut rest_value = Value::Object(std::mem::take(&mut rest));
        object(&mut rest_value, schema, "", &mut errs);
        m.retain(|k, _| keep(k));
        if let Value::Object(r) = rest_value {
            m.extend(r);
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(&rt.group, &rt.kind, &name, &errs))
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(v: &mut Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let int_or_string = s["x-kubernetes-int-or-string"] == true;
    let actual = type_name(v);
    let expected = s["type"].as_str();
    let type_ok = match expected {
        _ if int_or_string => matches!(actual, "integer" | "string"),
        None => true,
        Some("number") => matches!(actual, "integer" | "number"),
        Some(t) => t == actual,
    };
    if !type_ok {
        let shown = if int_or_string {
            "integer,string"
        } else {
            expected.unwrap_or_default()
        };
        let detail = format!("{path} in body must be of type {shown}: {actual:?}");
        errs.push(FieldError::invalid(
            path,
            &Value::String(actual.into()),
            detail,
        ));
        return;
    }
    match v {
        Value::Object(_) => object(v, s, path, errs),
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, item_schema, &format!("{path}[{i}]"), errs);
                }
            }
        }
        _ => scalar(v, s, path, errs),
    }
}

fn object(v: &mut Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Value::Object(m) = v else { return };
    let props = s["properties"].as_object();
    let additional = s.get("additionalProperties");
    let preserve = s["x-kubernetes-preserve-unknown-fields"] == true;
    for (k, ps) in props.into_iter().flatten() {
        if !m.contains_key(k)
            && let Some(d) = ps.get("default")
        {
            m.insert(k.clone(), d.clone());
        }
    }
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        let child_schema = props
            .and_then(|p| p.get(&k))
            .or(additional.filter(|a| a.is_object()));
        match child_schema {
            Some(cs) => {
                if m[&k].is_null() && cs["nullable"] != true {
                    m.remove(&k);
                    continue;
                }
                if let Some(child) = m.get_mut(&k) {
                    walk(child, cs, &join(path, &k), errs);
                }
            }
            None if preserve || additional == Some(&Value::Bool(true)) => {}
            None => {
                m.remove(&k);
            }
        }
    }
    for r in s["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !m.contains_key(r) {
            errs.push(FieldError::required(join(path, r), ""));
        }
    }
}

fn scalar(v: &Value, s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(allowed) = s["enum"].as_array()
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(super::status::go_value).collect();
        let err = FieldError::new(
            super::status::FieldErrorKind::NotSupported,
            path,
            Some(v.clone()),
            list.join(", "),
        );
        errs.push(err);
    }
    if let (Some(n), Some(min)) = (v.as_f64(), s["minimum"].as_f64())
        && n < min
    {
        errs.push(FieldError::invalid(
            path,
            v,
            format!("{path} in body should be greater than or equal to {min}"),
        ));
    }
    if let (Some(n), Some(max)) = (v.as_f64(), s["maximum"].as_f64())
        && n > max
    {
        errs.push(FieldError::invalid(
            path,
            v,
            format!("{path} in body should be less than or equal to {max}"),
        ));
    }
    if let (Some(text), Some(max)) = (v.as_str(), s["maxLength"].as_u64())
        && text.chars().count() as u64 > max
    {
        errs.push(FieldError::new(
            super::status::FieldErrorKind::Invalid,
            path,
            Some(v.clone()),
            format!("may not be more than {max} bytes"),
        ));
    }
}
