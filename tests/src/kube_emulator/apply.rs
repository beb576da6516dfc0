//! The value side of server-side apply, after structured-merge-diff: the field set an applied
//! configuration claims, merging it into the live object (keyed lists merged by key, sets by
//! value, atomic values replaced), pruning the fields a manager stopped applying and nobody else
//! owns, and comparing two objects into changed and removed field sets (what ownership and
//! conflicts are computed from). Ownership bookkeeping lives in `managed.rs`.

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, PathElement, canonical_json};
use super::schema::{Schema, Shape, item_key};

/// The field set of an applied configuration: its leaves, and keyed-list items / set members.
pub(crate) fn field_set(v: &Value, s: &Schema) -> FieldSet {
    let mut out = FieldSet::default();
    collect(v, s, &mut Vec::new(), &mut out);
    out
}

fn collect(v: &Value, s: &Schema, path: &mut Vec<PathElement>, out: &mut FieldSet) {
    match (s.shape(v), v) {
        (Shape::Struct, Value::Object(m)) if !m.is_empty() => {
            for (k, cv) in m {
                path.push(PathElement::Field(k.clone()));
                collect(cv, &s.field(k), path, out);
                path.pop();
            }
        }
        (Shape::ListMap(keys), Value::Array(items)) if !items.is_empty() => {
            let item_schema = s.item();
            for item in items {
                let Some(key) = item_key(item, &keys) else {
                    continue;
                };
                path.push(PathElement::Key(key));
                out.insert(path);
                if let Value::Object(m) = item {
                    for (k, cv) in m {
                        path.push(PathElement::Field(k.clone()));
                        collect(cv, &item_schema.field(k), path, out);
                        path.pop();
                    }
                }
                path.pop();
            }
        }
        (Shape::ListSet, Value::Array(items)) if !items.is_empty() => {
            for item in items {
                path.push(PathElement::Value(canonical_json(item)));
                out.insert(path);
                path.pop();
            }
        }
        _ => out.insert(path),
    }
}

/// Merges an applied configuration into the live object (`None`: no live value).
pub(crate) fn merge(live: Option<&Value>, config: &Value, s: &Schema) -> Value {
    let Some(live) = live else {
        return config.clone();
    };
    match (s.shape(config), live, config) {
        (Shape::Struct, Value::Object(lm), Value::Object(cm)) if s.shape(live) == Shape::Struct => {
            let mut out = lm.clone();
            for (k, cv) in cm {
                if cv.is_null() {
                    out.remove(k);
                } else {
                    out.insert(k.clone(), merge(lm.get(k), cv, &s.field(k)));
                }
            }
            Value::Object(out)
        }
        (Shape::ListMap(keys), Value::Array(la), Value::Array(ca)) => {
            let item_schema = s.item();
            let mut out = la.clone();
            for citem in ca {
                let key = item_key(citem, &keys);
                let pos = key.as_ref().and_then(|k| {
                    out.iter()
                        .position(|l| item_key(l, &keys).as_ref() == Some(k))
                });
                match pos {
                    Some(p) => out[p] = merge(Some(&out[p]), citem, &item_schema),
                    None => out.push(citem.clone()),
                }
            }
            Value::Array(out)
        }
        (Shape::ListSet, Value::Array(la), Value::Array(ca)) => {
            let mut out = la.clone();
            out.extend(ca.iter().filter(|c| !la.contains(c)).cloned());
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// Removes from `v` the members of `remove` that `keep` does not also claim; a subtree that
/// `keep` claims in part is descended into instead of removed. Key fields of kept list items stay.
pub(crate) fn prune(v: &mut Value, remove: &FieldSet, keep: &FieldSet, s: &Schema) {
    let shape = s.shape(v);
    for (elem, rchild) in remove.children() {
        let empty = FieldSet::default();
        let kchild = keep.child(elem).unwrap_or(&empty);
        if rchild.is_member() && kchild.is_empty() {
            remove_element(v, elem, &shape);
            continue;
        }
        let child_schema = child_schema(s, elem);
        let keys = match &shape {
            Shape::ListMap(keys) => keys.iter().map(|k| k.name.clone()).collect(),
            _ => Vec::new(),
        };
        if let Some(cv) = element_mut(v, elem, &shape) {
            prune_item(cv, rchild, kchild, &child_schema, &keys);
        }
    }
}

/// Prunes inside a list item (or struct field), never removing the item's key fields.
fn prune_item(
    v: &mut Value,
    remove: &FieldSet,
    keep: &FieldSet,
    s: &Schema,
    key_fields: &[String],
) {
    if key_fields.is_empty() {
        return prune(v, remove, keep, s);
    }
    let mut remove = remove.clone();
    for k in key_fields {
        remove.remove_member(&[PathElement::Field(k.clone())]);
    }
    prune(v, &remove, keep, s);
}

fn child_schema<'a>(s: &Schema<'a>, elem: &PathElement) -> Schema<'a> {
    match elem {
        PathElement::Field(f) => s.field(f),
        _ => s.item(),
    }
}

fn element_mut<'v>(v: &'v mut Value, elem: &PathElement, shape: &Shape) -> Option<&'v mut Value> {
    match (elem, v) {
        (PathElement::Field(f), Value::Object(m)) => m.get_mut(f),
        (PathElement::Key(k), Value::Array(items)) => {
            let Shape::ListMap(keys) = shape else {
                return None;
            };
            items
                .iter_mut()
                .find(|i| item_key(i, keys).as_ref() == Some(k))
        }
        (PathElement::Value(j), Value::Array(items)) => {
            items.iter_mut().find(|i| canonical_json(i) == *j)
        }
        (PathElement::Index(i), Value::Array(items)) => items.get_mut(*i),
        _ => None,
    }
}

fn remove_element(v: &mut Value, elem: &PathElement, shape: &Shape) {
    match (elem, v) {
        (PathElement::Field(f), Value::Object(m)) => {
            m.remove(f);
        }
        (PathElement::Key(k), Value::Array(items)) => {
            if let Shape::ListMap(keys) = shape {
                items.retain(|i| item_key(i, keys).as_ref() != Some(k));
            }
        }
        (PathElement::Value(j), Value::Array(items)) => items.retain(|i| canonical_json(i) != *j),
        (PathElement::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
        }
        _ => {}
    }
}

/// The difference between two versions of an object, as field sets.
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    /// Fields added or modified (an added struct/map/item is a member too, with its fields).
    pub changed: FieldSet,
    /// Fields removed.
    pub removed: FieldSet,
}

/// Compares `old` to `new` (both objects at the root).
pub(crate) fn compare(old: &Value, new: &Value, s: &Schema) -> Comparison {
    let mut out = Comparison::default();
    compare_at(Some(old), Some(new), s, &mut Vec::new(), &mut out);
    out
}

fn compare_at(
    old: Option<&Value>,
    new: Option<&Value>,
    s: &Schema,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => {
            out.changed.insert(path);
            out.changed.insert_set_at(path, &field_set(n, s));
        }
        (Some(o), None) => {
            out.removed.insert(path);
            out.removed.insert_set_at(path, &field_set(o, s));
        }
        (Some(o), Some(n)) => match (s.shape(o), s.shape(n), o, n) {
            (Shape::Struct, Shape::Struct, Value::Object(om), Value::Object(nm)) => {
                compare_fields(om, nm, s, path, out);
            }
            (Shape::ListMap(keys), Shape::ListMap(_), Value::Array(oa), Value::Array(na)) => {
                let index = |items: &Vec<Value>| -> Option<Map<String, Value>> {
                    items
                        .iter()
                        .map(|i| item_key(i, &keys).map(|k| (k, i.clone())))
                        .collect()
                };
                let (Some(oi), Some(ni)) = (index(oa), index(na)) else {
                    return leaf_change(o, n, path, out);
                };
                let item_schema = s.item();
                let mut all: Vec<&String> = oi.keys().chain(ni.keys()).collect();
                all.sort();
                all.dedup();
                for k in all {
                    path.push(PathElement::Key(k.clone()));
                    match (oi.get(k), ni.get(k)) {
                        (Some(ov), Some(nv)) => compare_item(ov, nv, &item_schema, path, out),
                        (ov, nv) => compare_at(ov, nv, &item_schema, path, out),
                    }
                    path.pop();
                }
            }
            (Shape::ListSet, Shape::ListSet, Value::Array(oa), Value::Array(na)) => {
                for item in na.iter().filter(|i| !oa.contains(i)) {
                    path.push(PathElement::Value(canonical_json(item)));
                    out.changed.insert(path);
                    path.pop();
                }
                for item in oa.iter().filter(|i| !na.contains(i)) {
                    path.push(PathElement::Value(canonical_json(item)));
                    out.removed.insert(path);
                    path.pop();
                }
            }
            _ => leaf_change(o, n, path, out),
        },
    }
}

/// Compares the union of two maps' fields, in key order.
fn compare_fields(
    om: &serde_json::Map<String, Value>,
    nm: &serde_json::Map<String, Value>,
    s: &Schema,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    let mut keys: Vec<&String> = om.keys().chain(nm.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        path.push(PathElement::Field(k.clone()));
        compare_at(om.get(k), nm.get(k), &s.field(k), path, out);
        path.pop();
    }
}

/// Compares two items of a keyed list: their fields, not the item as a whole.
fn compare_item(
    o: &Value,
    n: &Value,
    s: &Schema,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) {
    match (o, n) {
        (Value::Object(om), Value::Object(nm)) => {
            compare_fields(om, nm, s, path, out);
        }
        _ => leaf_change(o, n, path, out),
    }
}

fn leaf_change(o: &Value, n: &Value, path: &[PathElement], out: &mut Comparison) {
    if o != n {
        out.changed.insert(path);
    }
}
