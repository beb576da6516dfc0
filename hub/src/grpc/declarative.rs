//! The declarative half of the admin API: `apply`, `get`, `delete`, `cluster label` and
//! `preview`. Documents travel as JSON; `objects` validates them, this module only
//! converts and applies.

use std::collections::BTreeMap;

use flotilla_proto::admin::v1 as api;
use serde_json::{Value, json};
use tonic::Status;
use tracing::info;

use super::{Context, convert, internal};
use crate::model::{GitRepo, GitRepoStatus};
use crate::objects::{self, HubObject, Kind};

/// Validate every document, then apply them in order. Nothing is applied if one is invalid.
pub fn apply(
    ctx: &Context,
    admin: &str,
    req: api::ApplyRequest,
) -> Result<api::ApplyResponse, Status> {
    if req.documents.is_empty() {
        return Err(Status::invalid_argument(
            "no documents to apply; pass -f FILE or -f DIR with GitRepo or ClusterGroup YAML",
        ));
    }
    let default_poll = ctx.default_poll_interval.as_secs() as u32;
    let mut parsed = Vec::new();
    for doc in &req.documents {
        let value: Value = serde_json::from_str(&doc.json).map_err(|e| {
            Status::invalid_argument(format!("{}: not a JSON document: {e}", doc.source))
        })?;
        let (object, warnings) = objects::parse(value, default_poll)
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", doc.source)))?;
        parsed.push((doc.source.clone(), object, warnings));
    }
    let mut results = Vec::new();
    let store = ctx.fleet.store();
    for (source, object, warnings) in parsed {
        let action = match &object {
            HubObject::GitRepo(spec) => {
                let old = store.repo(&spec.name).map_err(internal)?;
                let action = match &old {
                    None => "created",
                    Some(o) if &o.spec == spec => "unchanged",
                    Some(_) => "configured",
                };
                if !req.dry_run && action != "unchanged" {
                    // A changed spec is built afresh at the next fetch, even at the same commit.
                    let repo = GitRepo {
                        spec: spec.clone(),
                        status: GitRepoStatus::default(),
                    };
                    store.put_repo(&repo).map_err(internal)?;
                    ctx.sources.watch(repo).map_err(internal)?;
                    info!(admin = %admin, repo = %spec.name, action, "gitrepo applied");
                }
                action
            }
            HubObject::ClusterGroup(group) => {
                let exists = ctx.fleet.groups().iter().any(|(g, _)| g.name == group.name);
                let changed = if req.dry_run {
                    !ctx.fleet.groups().iter().any(|(g, _)| g == group)
                } else {
                    ctx.fleet.set_group(group.clone()).map_err(internal)?
                };
                let action = match (exists, changed) {
                    (false, _) => "created",
                    (true, true) => "configured",
                    (true, false) => "unchanged",
                };
                if !req.dry_run && changed {
                    info!(admin = %admin, group = %group.name, action, "cluster group applied");
                }
                action
            }
        };
        results.push(api::ApplyResult {
            source,
            kind: object.kind().to_string(),
            name: object.name().to_string(),
            action: action.to_string(),
            warnings,
        });
    }
    Ok(api::ApplyResponse { results })
}

fn kind_of(kind: &str) -> Result<Kind, Status> {
    Kind::parse(kind).ok_or_else(|| {
        Status::invalid_argument(format!(
            "unknown kind {kind:?}; use gitrepo, clustergroup or cluster"
        ))
    })
}

/// Objects of `kind` (all, or the one called `name`) as JSON documents.
pub fn get(ctx: &Context, req: api::GetRequest) -> Result<api::GetResponse, Status> {
    let kind = kind_of(&req.kind)?;
    let wanted = |n: &str| req.name.is_empty() || req.name == n;
    let docs: Vec<Value> = match kind {
        Kind::GitRepo => ctx
            .sources
            .repos()
            .iter()
            .filter(|r| wanted(&r.spec.name))
            .map(objects::gitrepo_document)
            .collect(),
        Kind::ClusterGroup => ctx
            .fleet
            .groups()
            .iter()
            .filter(|(g, _)| wanted(&g.name))
            .map(|(g, n)| objects::group_document(g, *n))
            .collect(),
        Kind::Cluster => ctx
            .fleet
            .clusters()
            .iter()
            .filter(|c| wanted(&c.cluster.name))
            .map(cluster_document)
            .collect(),
    };
    if !req.name.is_empty() && docs.is_empty() {
        return Err(Status::not_found(format!(
            "no {} named {:?}; list them with `flotilla get {}`",
            req.kind.to_ascii_lowercase(),
            req.name,
            req.kind.to_ascii_lowercase()
        )));
    }
    Ok(api::GetResponse {
        documents: docs.iter().map(Value::to_string).collect(),
    })
}

fn cluster_document(v: &crate::fleet::ClusterView) -> Value {
    let c = &v.cluster;
    json!({
        "apiVersion": objects::API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": c.name, "uid": c.id.to_string(), "labels": c.labels},
        "status": {
            "connected": v.presence.connected,
            "lastSeen": v.presence.last_seen,
            "agentVersion": c.agent_version,
            "kubernetesVersion": c.kubernetes_version,
            "registeredAt": c.registered_at,
            "certificateExpires": c.certificate.not_after,
        },
    })
}

/// Delete a GitRepo or a ClusterGroup.
pub fn delete(
    ctx: &Context,
    admin: &str,
    req: api::DeleteRequest,
) -> Result<api::DeleteResponse, Status> {
    let not_found = |what: &str| {
        Status::not_found(format!(
            "no {what} named {:?}; list them with `flotilla get {what}`",
            req.name
        ))
    };
    let message = match kind_of(&req.kind)? {
        Kind::GitRepo => {
            if !ctx.sources.remove(&req.name).map_err(internal)? {
                return Err(not_found("gitrepo"));
            }
            info!(admin = %admin, repo = %req.name, "gitrepo deleted");
            format!(
                "gitrepo {:?} deleted; its bundles are being pruned from every cluster (bundles with keepResources are left in place)",
                req.name
            )
        }
        Kind::ClusterGroup => {
            if !ctx.fleet.delete_group(&req.name).map_err(internal)? {
                return Err(not_found("clustergroup"));
            }
            info!(admin = %admin, group = %req.name, "cluster group deleted");
            format!(
                "clustergroup {:?} deleted; clusters it targeted are re-targeted",
                req.name
            )
        }
        Kind::Cluster => {
            return Err(Status::invalid_argument(
                "delete clusters with `flotilla cluster delete NAME`, which explains what stays on the cluster",
            ));
        }
    };
    Ok(api::DeleteResponse { message })
}

/// Set and remove labels of a cluster.
pub fn label_cluster(
    ctx: &Context,
    admin: &str,
    req: api::LabelClusterRequest,
) -> Result<api::Cluster, Status> {
    let not_found = || {
        Status::not_found(format!(
            "no cluster named {:?}; list them with `flotilla cluster list`",
            req.name
        ))
    };
    let id = ctx.fleet.cluster_by_name(&req.name).ok_or_else(not_found)?;
    let mut labels: BTreeMap<String, String> = ctx.fleet.cluster(id).ok_or_else(not_found)?.labels;
    for key in req.set.keys().chain(req.remove.iter()) {
        check_label_key(key)?;
    }
    for (k, v) in &req.set {
        check_label_value(k, v)?;
        labels.insert(k.clone(), v.clone());
    }
    for k in &req.remove {
        labels.remove(k);
    }
    let cluster = ctx
        .fleet
        .set_cluster_labels(&req.name, labels)
        .map_err(internal)?
        .ok_or_else(not_found)?;
    info!(admin = %admin, cluster = %req.name, labels = ?cluster.labels, "cluster labels set");
    let view = ctx
        .fleet
        .clusters()
        .into_iter()
        .find(|c| c.cluster.id == id)
        .ok_or_else(not_found)?;
    Ok(convert::cluster(&view))
}

/// Label keys follow Kubernetes: an optional DNS prefix and `/`, then a name of up to 63
/// characters. The agent's own prefix is not for admins to set.
fn check_label_key(key: &str) -> Result<(), Status> {
    let bad = |why: &str| Err(Status::invalid_argument(format!("label {key:?}: {why}")));
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if key.starts_with(crate::model::AGENT_LABEL_PREFIX) {
        return bad("that prefix is reserved for what agents report about themselves");
    }
    if prefix.is_some_and(|p| p.is_empty() || p.len() > 253) {
        return bad("the prefix before `/` must have 1 to 253 characters");
    }
    if !is_label_name(name) {
        return bad(
            "a label name must be 1 to 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric",
        );
    }
    Ok(())
}

fn check_label_value(key: &str, value: &str) -> Result<(), Status> {
    if !value.is_empty() && !is_label_name(value) {
        return Err(Status::invalid_argument(format!(
            "label {key:?}: value {value:?} must be empty or up to 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric"
        )));
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}
