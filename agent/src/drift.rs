//! Drift, decided without I/O: which changes of a live object are worth a look (its
//! [`Fingerprint`] moved), and which fields differ between what a server-side apply would make
//! of the object (a `dryRun=All` apply) and the live object, minus fleet.yaml
//! `diff.comparePatches`.
//!
//! Comparing a dry-run apply with live, not a manifest with live, leaves defaulting and
//! normalisation out of the picture: the server fills defaults and canonicalises quantities
//! the same way on both sides, and fields other managers own (a controller's annotations) are
//! on both sides too. What differs is exactly what our apply would change back.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::{ComparePatch, ObjectRef};

/// Metadata that changes with every write or belongs to the server: never drift.
const NOISY_METADATA: &[&str] = &[
    "resourceVersion",
    "managedFields",
    "generation",
    "creationTimestamp",
    "uid",
    "selfLink",
];

/// A digest of a live object without its status and server-kept metadata: equal
/// fingerprints mean nothing but the status (or bookkeeping) changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Matches no live object: what is known of an object that has not been looked at yet
    /// (a held deployment after a restart), so that the next sight of it is checked.
    pub const UNKNOWN: Fingerprint = Fingerprint([0; 32]);
}

/// The fingerprint of a live object.
pub(crate) fn fingerprint(obj: &Value) -> Fingerprint {
    let mut hasher = Sha256::new();
    feed(&mut hasher, &comparable(obj));
    Fingerprint(hasher.finalize().into())
}

/// Hashes a value with object keys in sorted order, whatever order the map keeps.
fn feed(hasher: &mut Sha256, v: &Value) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            hasher.update(b"{");
            for k in keys {
                feed(hasher, &Value::String(k.clone()));
                feed(hasher, &map[k]);
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            items.iter().for_each(|i| feed(hasher, i));
            hasher.update(b"]");
        }
        other => {
            hasher.update(other.to_string().as_bytes());
            hasher.update(b",");
        }
    }
}

/// The object without `status` and the metadata in [`NOISY_METADATA`].
fn comparable(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(map) = out.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            NOISY_METADATA.iter().for_each(|f| drop(meta.remove(*f)));
        }
    }
    out
}

/// The compare patches that apply to `object`: each non-empty field must match.
pub(crate) fn patches_for<'a>(
    patches: &'a [ComparePatch],
    object: &ObjectRef,
) -> Vec<&'a ComparePatch> {
    let matches = |want: &str, have: &str| want.is_empty() || want == have;
    patches
        .iter()
        .filter(|p| {
            matches(&p.api_version, &object.api_version)
                && matches(&p.kind, &object.kind)
                && matches(&p.namespace, &object.namespace)
                && matches(&p.name, &object.name)
        })
        .collect()
}

/// The JSON pointers where `would` (a dry-run apply's answer) and `live` differ, in sorted
/// order, leaving out status, server metadata, what `patches` remove, and what lies at or under
/// their JSON pointers.
pub(crate) fn modified_fields(
    would: &Value,
    live: &Value,
    patches: &[&ComparePatch],
) -> Vec<String> {
    let (mut a, mut b) = (comparable(would), comparable(live));
    for path in patches.iter().flat_map(|p| &p.removed) {
        remove_at(&mut a, path);
        remove_at(&mut b, path);
    }
    let mut out = Vec::new();
    diff(&a, &b, String::new(), &mut out);
    let ignored = |field: &str| {
        patches.iter().flat_map(|p| &p.json_pointers).any(|p| {
            field == p
                || field
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    };
    out.retain(|f| !ignored(f));
    out
}

/// Collects the pointers of differing leaves. Objects are compared key by key; arrays of equal
/// length item by item; anything else (an array that grew, a changed type) as a whole.
fn diff(a: &Value, b: &Value, at: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = format!("{at}/{}", escape(k));
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => diff(l, r, path, out),
                    _ => out.push(path),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                diff(l, r, format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(if at.is_empty() { "/".into() } else { at }),
        _ => {}
    }
}

/// RFC 6901 escaping of one reference token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Removes what `pointer` names, if it is there (RFC 6902 `remove` without the error).
fn remove_at(v: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match v.pointer_mut(parent) {
        Some(Value::Object(map)) => drop(map.remove(&last)),
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
