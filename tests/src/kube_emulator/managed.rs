//! Field ownership, as `metadata.managedFields` records it: one entry per (manager, operation,
//! subresource, and for updates apiVersion). Updates (POST/PUT/merge PATCH) take the fields they
//! change from everybody else; applies claim exactly the fields of their configuration and fail
//! with a 409 listing every field whose value another manager owns, unless forced.

use serde_json::{Value, json};

use super::apply::Comparison;
use super::fieldset::{FieldSet, path_string};
use super::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Operation {
    Apply,
    Update,
}

/// Who is writing: the identity of a managedFields entry.
#[derive(Clone, Debug)]
pub(crate) struct Actor {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub subresource: String,
}

#[derive(Clone, Debug)]
struct Entry {
    actor: Actor,
    time: Option<String>,
    set: FieldSet,
}

impl Actor {
    fn same(&self, other: &Actor) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// How conflict messages name a manager (`"x" using apps/v1` for updates).
    fn display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == Operation::Update {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }
}

/// The decoded managedFields of an object.
#[derive(Clone, Debug, Default)]
pub(crate) struct Managed {
    entries: Vec<Entry>,
}

impl Managed {
    pub(crate) fn decode(obj: &Value) -> Managed {
        let Some(items) = obj
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
        else {
            return Managed::default();
        };
        let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let entries = items
            .iter()
            .map(|e| Entry {
                actor: Actor {
                    manager: str_of(&e["manager"]),
                    operation: if e["operation"] == "Apply" {
                        Operation::Apply
                    } else {
                        Operation::Update
                    },
                    api_version: str_of(&e["apiVersion"]),
                    subresource: str_of(&e["subresource"]),
                },
                time: e["time"].as_str().map(String::from),
                set: FieldSet::from_fields_v1(&e["fieldsV1"]),
            })
            .collect();
        Managed { entries }
    }

    /// The managedFields JSON, sorted as the real server sorts it; an entry whose fields did not
    /// change keeps its old time (so a no-op write stays a no-op).
    pub(crate) fn encode(&self, previous: &Managed) -> Value {
        let mut entries = self.entries.clone();
        for e in &mut entries {
            if let Some(p) = previous.entries.iter().find(|p| p.actor.same(&e.actor))
                && p.set == e.set
                && p.actor.api_version == e.actor.api_version
            {
                e.time = p.time.clone();
            }
        }
        entries.sort_by(|a, b| {
            (
                a.actor.operation,
                &a.time,
                &a.actor.manager,
                &a.actor.subresource,
                &a.actor.api_version,
            )
                .cmp(&(
                    b.actor.operation,
                    &b.time,
                    &b.actor.manager,
                    &b.actor.subresource,
                    &b.actor.api_version,
                ))
        });
        let items: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "manager": e.actor.manager,
                    "operation": if e.actor.operation == Operation::Apply { "Apply" } else { "Update" },
                    "apiVersion": e.actor.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": e.set.to_fields_v1(),
                });
                if !e.actor.subresource.is_empty() {
                    v["subresource"] = json!(e.actor.subresource);
                }
                v
            })
            .collect();
        Value::Array(items)
    }

    /// The fields `actor` owns (empty if it has no entry).
    pub(crate) fn owned_by(&self, actor: &Actor) -> FieldSet {
        self.entries
            .iter()
            .find(|e| e.actor.same(actor))
            .map(|e| e.set.clone())
            .unwrap_or_default()
    }

    /// The union of the fields every other manager owns.
    pub(crate) fn owned_by_others(&self, actor: &Actor) -> FieldSet {
        self.entries
            .iter()
            .filter(|e| !e.actor.same(actor))
            .fold(FieldSet::default(), |acc, e| acc.union(&e.set))
    }

    /// Records a non-apply write: the writer takes every changed field from the others.
    pub(crate) fn record_update(&mut self, actor: &Actor, cmp: &Comparison, now: &str) {
        for e in self.entries.iter_mut().filter(|e| !e.actor.same(actor)) {
            e.set = e.set.difference(&cmp.changed).difference(&cmp.removed);
        }
        let mine = self
            .owned_by(actor)
            .difference(&cmp.removed)
            .union(&cmp.changed);
        self.set_entry(actor, mine, now);
    }

    /// Records an apply of `applied`; without `force`, any changed field another manager owns
    /// is a conflict.
    pub(crate) fn record_apply(
        &mut self,
        actor: &Actor,
        applied: FieldSet,
        cmp: &Comparison,
        force: bool,
        now: &str,
    ) -> Result<(), ApiError> {
        let conflicts: Vec<(Actor, FieldSet)> = self
            .entries
            .iter()
            .filter(|e| !e.actor.same(actor))
            .map(|e| (e.actor.clone(), e.set.intersection(&cmp.changed)))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        if !force && !conflicts.is_empty() {
            return Err(conflict_error(&conflicts));
        }
        for e in self.entries.iter_mut().filter(|e| !e.actor.same(actor)) {
            e.set = e.set.difference(&cmp.changed).difference(&cmp.removed);
        }
        self.set_entry(actor, applied, now);
        Ok(())
    }

    fn set_entry(&mut self, actor: &Actor, set: FieldSet, now: &str) {
        self.entries.retain(|e| !e.actor.same(actor));
        self.entries.push(Entry {
            actor: actor.clone(),
            time: Some(now.to_string()),
            set,
        });
        self.entries.retain(|e| !e.set.is_empty());
    }
}

fn conflict_error(conflicts: &[(Actor, FieldSet)]) -> ApiError {
    let mut by_manager: Vec<(String, Vec<String>)> = conflicts
        .iter()
        .map(|(a, set)| {
            (
                a.display(),
                set.members().iter().map(|p| path_string(p)).collect(),
            )
        })
        .collect();
    by_manager.sort();
    let causes: Vec<Value> = by_manager
        .iter()
        .flat_map(|(m, paths)| {
            paths.iter().map(move |p| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": p})
            })
        })
        .collect();
    let total = causes.len();
    let message = if total == 1 {
        let (m, paths) = &by_manager[0];
        format!(
            "Apply failed with 1 conflict: conflict with {m}: {}",
            paths[0]
        )
    } else {
        let mut lines = Vec::new();
        for (m, paths) in &by_manager {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(paths.iter().map(|p| format!("- {p}")));
        }
        format!("Apply failed with {total} conflicts: {}", lines.join("\n"))
    };
    ApiError::apply_conflict(message, causes)
}
