//! Status views of the fleet, as JSON documents (the CLI's `-o json|yaml`, the web page and
//! the admin API share them): the fleet at a glance, one GitRepo, one cluster.
//!
//! Built from the incrementally maintained rollups: the fleet and GitRepo views cost the
//! number of scopes plus the deployments that are not Ready, never a pass over every
//! deployment; a cluster view costs that cluster's deployments.

use serde_json::{Value, json};

use super::{Fleet, view_state};
use crate::model::{BundleId, DeploymentState, ObjectState, unix_now};
use crate::rollup::{Counts, Entry, Scope};

/// How many not-Ready deployments a view lists (the counts cover all of them).
pub const NOT_READY_LIMIT: usize = 100;

fn counts_json(c: &Counts) -> Value {
    json!(c.by_name())
}

fn object_state(s: ObjectState) -> &'static str {
    match s {
        ObjectState::Applied => "Applied",
        ObjectState::Failed => "Failed",
        ObjectState::Waiting => "Waiting",
        ObjectState::Ready => "Ready",
        ObjectState::NotReady => "NotReady",
        ObjectState::Modified => "Modified",
        ObjectState::Missing => "Missing",
    }
}

impl Fleet {
    /// A receiver whose value grows whenever a status view may have changed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.read().changed.subscribe()
    }

    /// The fleet at a glance: counts by state, the environments x bundles grid, GitRepos,
    /// environments, and the deployments that are not Ready (at most `NOT_READY_LIMIT`).
    pub fn summary_view(&self) -> Value {
        let st = self.read();
        let r = &st.rollups;
        let cells: Vec<Value> = r
            .scopes_where(|s| matches!(s, Scope::Cell(..)))
            .into_iter()
            .filter_map(|(s, c)| match s {
                Scope::Cell(env, bundle) => Some(json!({
                    "environment": env, "bundle": bundle.0, "total": c.total(),
                    "worst": c.worst().map(DeploymentState::as_str), "counts": counts_json(&c),
                })),
                _ => None,
            })
            .collect();
        let mut environments: Vec<String> = Vec::new();
        let mut bundles: Vec<String> = Vec::new();
        for c in &cells {
            let env = c["environment"].as_str().unwrap_or_default().to_string();
            let b = c["bundle"].as_str().unwrap_or_default().to_string();
            if !environments.contains(&env) {
                environments.push(env);
            }
            if !bundles.contains(&b) {
                bundles.push(b);
            }
        }
        environments.sort();
        bundles.sort();
        let scoped = |f: fn(&Scope) -> Option<String>| -> Vec<Value> {
            r.scopes_where(|s| f(s).is_some())
                .into_iter()
                .map(|(s, c)| {
                    json!({"name": f(&s), "total": c.total(),
                        "worst": c.worst().map(DeploymentState::as_str), "counts": counts_json(&c)})
                })
                .collect()
        };
        let gitrepos = scoped(|s| match s {
            Scope::GitRepo(n) => Some(n.to_string()),
            _ => None,
        });
        let envs = scoped(|s| match s {
            Scope::Environment(n) => Some(n.to_string()),
            _ => None,
        });
        let (not_ready, not_ready_total) = r.unhealthy(None, NOT_READY_LIMIT);
        let connected = st
            .clusters
            .values()
            .filter(|e| e.presence.connected)
            .count();
        let bundle_errors: Vec<Value> = st
            .bundles
            .values()
            .flat_map(|m| m.values())
            .filter_map(|b| {
                b.error
                    .as_ref()
                    .map(|e| json!({"bundle": b.id.0, "environment": b.env, "error": e}))
            })
            .collect();
        let fleet = r.counts(&Scope::Fleet);
        json!({
            "generatedAt": unix_now(),
            "clusters": {"total": st.clusters.len(), "connected": connected},
            "total": fleet.total(),
            "worst": fleet.worst().map(DeploymentState::as_str),
            "states": counts_json(&fleet),
            "environments": environments,
            "bundles": bundles,
            "cells": cells,
            "gitrepos": gitrepos,
            "environmentRollups": envs,
            "notReady": self.not_ready_json(&st, not_ready),
            "notReadyTotal": not_ready_total,
            "bundleErrors": bundle_errors,
        })
    }

    fn not_ready_json(
        &self,
        st: &super::State,
        list: Vec<(crate::model::ClusterId, BundleId, Entry)>,
    ) -> Vec<Value> {
        list.into_iter()
            .map(|(c, b, e)| {
                let name = st
                    .clusters
                    .get(&c)
                    .map(|x| x.cluster.name.clone())
                    .unwrap_or_default();
                json!({"cluster": name, "environment": e.environment, "bundle": b.0,
                    "gitrepo": e.repo, "state": e.state.as_str(), "message": e.message,
                    "revision": e.revision})
            })
            .collect()
    }

    /// One GitRepo: its counts, each bundle's, each environment's, and what is not Ready.
    pub fn gitrepo_view(&self, name: &str) -> Value {
        let st = self.read();
        let r = &st.rollups;
        let counts = r.counts(&Scope::GitRepo(name.into()));
        let prefix = format!("{name}/");
        let bundles: Vec<Value> = r
            .scopes_where(
                |s| matches!(s, Scope::Bundle(b) if b.0 == name || b.0.starts_with(&prefix)),
            )
            .into_iter()
            .map(|(s, c)| {
                let Scope::Bundle(b) = s else { unreachable!("filtered") };
                let error = st
                    .bundles
                    .iter()
                    .filter(|((repo, _), _)| repo == name)
                    .filter_map(|(_, m)| m.get(&b).and_then(|x| x.error.clone()))
                    .next();
                json!({"name": b.0, "total": c.total(), "worst": c.worst().map(DeploymentState::as_str),
                    "counts": counts_json(&c), "error": error})
            })
            .collect();
        let environments: Vec<Value> = r
            .scopes_where(|s| matches!(s, Scope::Cell(..)))
            .into_iter()
            .filter_map(|(s, c)| match s {
                Scope::Cell(env, b) if b.0 == name || b.0.starts_with(&prefix) => {
                    Some(json!({"environment": env, "bundle": b.0, "total": c.total(),
                        "worst": c.worst().map(DeploymentState::as_str), "counts": counts_json(&c)}))
                }
                _ => None,
            })
            .collect();
        let (not_ready, total) = r.unhealthy(Some(name), NOT_READY_LIMIT);
        json!({
            "name": name,
            "total": counts.total(),
            "worst": counts.worst().map(DeploymentState::as_str),
            "states": counts_json(&counts),
            "bundles": bundles,
            "cells": environments,
            "notReady": self.not_ready_json(&st, not_ready),
            "notReadyTotal": total,
        })
    }

    /// One cluster: every deployment with its objects and, with `history`, its last
    /// transitions. None if there is no such cluster.
    pub fn cluster_view(&self, name: &str, history: bool) -> Option<Value> {
        let st = self.read();
        let id = *st.names.get(name)?;
        let entry = st.clusters.get(&id)?;
        let counts = st.rollups.counts(&Scope::Cluster(id));
        let deployments: Vec<Value> = st
            .desired
            .get(&id)
            .into_iter()
            .flatten()
            .map(|(bundle, placed)| {
                let reported = st.status.get(id, bundle);
                let (state, message) = view_state(placed, reported);
                let objects: Vec<Value> = reported
                    .map(|r| {
                        r.objects
                            .iter()
                            .map(|o| {
                                json!({"apiVersion": o.api_version, "kind": o.kind,
                                    "namespace": o.namespace, "name": o.name,
                                    "state": object_state(o.state), "message": o.message,
                                    "source": o.source, "modifiedFields": o.modified_fields,
                                    "driftCorrections": o.drift_corrections})
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let mut d = json!({
                    "bundle": bundle.0, "gitrepo": placed.repo, "environment": placed.env,
                    "state": state.as_str(), "message": message,
                    "desiredRevision": super::desired_revision(placed),
                    "reportedRevision": reported.map(|r| r.revision.clone()).unwrap_or_default(),
                    "updatedAt": reported.map(|r| r.updated_at).unwrap_or_default(),
                    "objects": objects,
                });
                if history {
                    let h = st.rollups.history(id, bundle);
                    d["history"] = json!(
                        h.iter()
                            .map(|t| json!({"at": t.at, "state": t.state.as_str(),
                            "revision": t.revision, "message": t.message}))
                            .collect::<Vec<_>>()
                    );
                }
                d
            })
            .collect();
        let groups: Vec<&str> = st
            .groups
            .values()
            .filter(|g| g.contains(&entry.cluster.labels))
            .map(|g| g.name.as_str())
            .collect();
        Some(json!({
            "name": entry.cluster.name,
            "id": id.to_string(),
            "labels": entry.cluster.labels,
            "groups": groups,
            "connected": entry.presence.connected,
            "lastSeen": entry.presence.last_seen,
            "total": counts.total(),
            "worst": counts.worst().map(DeploymentState::as_str),
            "states": counts_json(&counts),
            "deployments": deployments,
        }))
    }

    /// A cluster group's counts: the sum of its member clusters' rollups.
    pub fn group_counts(&self, name: &str) -> Option<Value> {
        let st = self.read();
        let group = st.groups.get(name)?;
        let mut total = Counts::default();
        let mut members = 0;
        for e in st.clusters.values() {
            if group.contains(&e.cluster.labels) {
                members += 1;
                total = total.plus(&st.rollups.counts(&Scope::Cluster(e.cluster.id)));
            }
        }
        Some(
            json!({"name": name, "clusters": members, "total": total.total(),
            "worst": total.worst().map(DeploymentState::as_str), "states": counts_json(&total)}),
        )
    }
}
