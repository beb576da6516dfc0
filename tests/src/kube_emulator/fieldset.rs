//! Field sets, the unit of ownership in server-side apply: a tree of path elements (`f:name`,
//! `k:{"name":"x"}` for an item of a keyed list, `v:"x"` for a set member, `i:0`) whose nodes may
//! be members. This is the structured-merge-diff model; it is encoded as `FieldsV1` in
//! `metadata.managedFields`, and printed as `.spec.containers[name="x"].image` in conflict causes.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PathElement {
    /// A struct field or map key: `f:name`.
    Field(String),
    /// An item of an associative list, by its key fields as canonical JSON: `k:{"name":"x"}`.
    Key(String),
    /// A member of a set-typed list, as canonical JSON: `v:"x"`.
    Value(String),
    /// A list index (only for lists that are neither keyed nor sets): `i:0`.
    Index(usize),
}

impl PathElement {
    fn encode(&self) -> String {
        match self {
            PathElement::Field(n) => format!("f:{n}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(PathElement::Field(rest.to_string())),
            "k:" => Some(PathElement::Key(rest.to_string())),
            "v:" => Some(PathElement::Value(rest.to_string())),
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }

    /// The structured-merge-diff `Path.String()` form of this element.
    fn display(&self) -> String {
        match self {
            PathElement::Field(n) => format!(".{n}"),
            PathElement::Key(k) => {
                let parsed: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                let parts: Vec<String> = parsed.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("[{}]", parts.join(","))
            }
            PathElement::Value(v) => format!("[={v}]"),
            PathElement::Index(i) => format!("[{i}]"),
        }
    }
}

/// Canonical JSON text: object keys sorted, no whitespace (the `k:`/`v:` encoding).
pub(crate) fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical_json(&m[*k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(canonical_json)
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// Formats a path as structured-merge-diff does: `.spec.containers[name="app"].image`.
pub(crate) fn path_string(path: &[PathElement]) -> String {
    path.iter().map(PathElement::display).collect()
}

/// A set of field paths, as a tree. Invariant: no child subtree is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub(crate) fn is_member(&self) -> bool {
        self.member
    }

    pub(crate) fn child(&self, e: &PathElement) -> Option<&FieldSet> {
        self.children.get(e)
    }

    pub(crate) fn children(&self) -> impl Iterator<Item = (&PathElement, &FieldSet)> {
        self.children.iter()
    }

    /// Adds `path` as a member (the empty path is never a member).
    pub(crate) fn insert(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let child = self.children.entry(first.clone()).or_default();
        if rest.is_empty() {
            child.member = true;
        } else {
            child.insert(rest);
        }
    }

    /// Adds every member of `set`, re-rooted under `prefix`.
    pub(crate) fn insert_set_at(&mut self, prefix: &[PathElement], set: &FieldSet) {
        if set.is_empty() {
            return;
        }
        let Some((first, rest)) = prefix.split_first() else {
            *self = self.union(set);
            return;
        };
        self.children
            .entry(first.clone())
            .or_default()
            .insert_set_at(rest, set);
    }

    /// Removes the member at `path` (keeping members below it).
    pub(crate) fn remove_member(&mut self, path: &[PathElement]) {
        let Some((first, rest)) = path.split_first() else {
            self.member = false;
            return;
        };
        if let Some(child) = self.children.get_mut(first) {
            child.remove_member(rest);
            if child.is_empty() {
                self.children.remove(first);
            }
        }
    }

    /// Unmarks every member whose last element satisfies `pred` (given the element and its depth).
    pub(crate) fn unmark(&mut self, pred: &impl Fn(&PathElement, usize) -> bool) {
        self.unmark_at(pred, 0);
    }

    fn unmark_at(&mut self, pred: &impl Fn(&PathElement, usize) -> bool, depth: usize) {
        for (e, c) in self.children.iter_mut() {
            if pred(e, depth) {
                c.member = false;
            }
            c.unmark_at(pred, depth + 1);
        }
        self.children.retain(|_, c| !c.is_empty());
    }

    pub(crate) fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (e, c) in &other.children {
            let merged = match out.children.get(e) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(e.clone(), merged);
        }
        out
    }

    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (e, c) in &self.children {
            let d = match other.children.get(e) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(e.clone(), d);
            }
        }
        out
    }

    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (e, c) in &self.children {
            if let Some(o) = other.children.get(e) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(e.clone(), i);
                }
            }
        }
        out
    }

    /// Every member path, depth first in element order.
    pub(crate) fn members(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect_members(&mut Vec::new(), &mut out);
        out
    }

    fn collect_members(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for (e, c) in &self.children {
            prefix.push(e.clone());
            if c.member {
                out.push(prefix.clone());
            }
            c.collect_members(prefix, out);
            prefix.pop();
        }
    }

    /// The `FieldsV1` JSON encoding (`{"f:spec":{"f:replicas":{}}}`, `".": {}` for a member with children).
    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (e, c) in &self.children {
            m.insert(e.encode(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Parses `FieldsV1` JSON; unknown entries are skipped.
    pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
        let mut out = FieldSet::default();
        if let Value::Object(m) = v {
            for (k, c) in m {
                if k == "." {
                    continue;
                }
                let Some(e) = PathElement::decode(k) else {
                    continue;
                };
                let mut child = FieldSet::from_fields_v1(c);
                let explicit_member = c
                    .as_object()
                    .is_some_and(|cm| cm.is_empty() || cm.contains_key("."));
                child.member = explicit_member;
                out.children.insert(e, child);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}});
        let set = FieldSet::from_fields_v1(&v);
        assert_eq!(set.to_fields_v1(), v);
        let paths: Vec<String> = set.members().iter().map(|p| path_string(p)).collect();
        assert!(paths.contains(&".spec.template.spec.containers[name=\"app\"].image".to_string()));
    }

    #[test]
    fn set_algebra() {
        let mut a = FieldSet::default();
        a.insert(&[PathElement::Field("a".into())]);
        a.insert(&[
            PathElement::Field("b".into()),
            PathElement::Field("c".into()),
        ]);
        let mut b = FieldSet::default();
        b.insert(&[
            PathElement::Field("b".into()),
            PathElement::Field("c".into()),
        ]);
        assert_eq!(a.difference(&b).members().len(), 1);
        assert_eq!(a.intersection(&b), b);
        assert_eq!(a.union(&b), a);
    }
}
