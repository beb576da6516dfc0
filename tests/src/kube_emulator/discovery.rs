//! Discovery documents: `/version`, `/api` (APIVersions), `/apis` (APIGroupList), `/apis/{group}`
//! (APIGroup), `/api/v1` and `/apis/{group}/{version}` (APIResourceList, with `{plural}/status`
//! entries), and the aggregated form (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList) served at
//! `/api` and `/apis` when the `Accept` header asks for it, as a v1.33 server does. kube-rs 5's
//! `Discovery::run` and `pinned_kind` use the legacy form; `Discovery::run_aggregated` the other.

use serde_json::{Value, json};

use super::catalog::{Catalog, ResourceType};

/// The server version the emulator reports.
pub(crate) const GIT_VERSION: &str = "v1.33.0";

/// The `Content-Type` of an aggregated discovery answer.
pub(crate) const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header prefers aggregated discovery (v2) over the legacy documents.
pub(crate) fn wants_aggregated(accept: &str) -> bool {
    let first = accept.split(',').next().unwrap_or_default();
    first.contains("g=apidiscovery.k8s.io")
        && first.contains("as=APIGroupDiscoveryList")
        && first.contains("v=v2")
        && !first.contains("v=v2beta1")
}

pub(crate) fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
        "gitVersion": GIT_VERSION, "gitCommit": "60a317eadfcb839692a68eab88b2096f4d708f4f",
        "gitTreeState": "clean", "buildDate": "2025-04-23T13:07:00Z", "goVersion": "go1.24.2",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

pub(crate) fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({ "name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null) })
}

pub(crate) fn group_list(catalog: &Catalog) -> Value {
    let groups: Vec<Value> = catalog
        .groups()
        .iter()
        .map(|(n, vs)| group_entry(n, vs))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

pub(crate) fn group(catalog: &Catalog, name: &str) -> Option<Value> {
    let (n, vs) = catalog.groups().into_iter().find(|(n, _)| n == name)?;
    let mut g = group_entry(&n, &vs);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn resource_entry(rt: &ResourceType) -> Value {
    let mut r = json!({
        "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
        "kind": rt.kind, "verbs": rt.verbs(),
    });
    if !rt.short_names.is_empty() {
        r["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        r["categories"] = json!(rt.categories);
    }
    r
}

pub(crate) fn resource_list(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    let types = catalog.resources(group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for rt in &types {
        resources.push(resource_entry(rt));
        if rt.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced,
                "kind": rt.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }),
    )
}

fn aggregated_group(catalog: &Catalog, group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = catalog
                .resources(group, v)
                .iter()
                .map(|rt| {
                    let kind = json!({"group": "", "version": "", "kind": rt.kind});
                    let mut r = json!({
                        "resource": rt.plural, "responseKind": kind, "singularResource": rt.singular,
                        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" }, "verbs": rt.verbs(),
                    });
                    if !rt.short_names.is_empty() {
                        r["shortNames"] = json!(rt.short_names);
                    }
                    if !rt.categories.is_empty() {
                        r["categories"] = json!(rt.categories);
                    }
                    if rt.status_subresource {
                        r["subresources"] = json!([{"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}]);
                    }
                    r
                })
                .collect();
            json!({ "version": v, "resources": resources, "freshness": "Current" })
        })
        .collect();
    let mut metadata = json!({ "creationTimestamp": null });
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({ "metadata": metadata, "versions": versions })
}

fn aggregated_list(items: Vec<Value>) -> Value {
    json!({ "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items })
}

/// Aggregated discovery of the core group (`/api`).
pub(crate) fn aggregated_core(catalog: &Catalog) -> Value {
    aggregated_list(vec![aggregated_group(catalog, "", &["v1".to_string()])])
}

/// Aggregated discovery of every other group (`/apis`).
pub(crate) fn aggregated_apis(catalog: &Catalog) -> Value {
    let items = catalog
        .groups()
        .iter()
        .map(|(g, vs)| aggregated_group(catalog, g, vs))
        .collect();
    aggregated_list(items)
}
