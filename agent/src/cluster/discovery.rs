//! Kind → resource (plural) and scope, from the API server's discovery documents.
//!
//! A miss lists its group-version (`/api/v1`, `/apis/GROUP/VERSION`) and caches every kind of
//! it. A group-version the server does not serve answers 404 (often as plain text), which means
//! "not served", not an error. Applying a CRD forgets its group so that the next lookup asks
//! again. *Invariant:* plurals and scopes always come from the server, never from the kind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::core::gvk::GroupVersion;
use kube::discovery::ApiResource;

use serde::Deserialize;

use super::{ApiError, Cluster, Retry};
use crate::plan::group_of;

/// What discovery says about one kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// Kinds per apiVersion, as last listed.
#[derive(Default)]
pub(super) struct Discovery {
    by_api_version: Mutex<HashMap<String, Arc<HashMap<String, Resolved>>>>,
}

impl Discovery {
    fn cached(&self, api_version: &str) -> Option<Arc<HashMap<String, Resolved>>> {
        self.lock().get(api_version).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<HashMap<String, Resolved>>>> {
        self.by_api_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// The fields of an `APIResourceList` the agent needs; read leniently, since servers differ in
/// which of the others they fill.
#[derive(Deserialize)]
struct ApiResourceList {
    #[serde(default)]
    resources: Vec<ApiResourceEntry>,
}

#[derive(Deserialize)]
struct ApiResourceEntry {
    name: String,
    kind: String,
    #[serde(default)]
    namespaced: bool,
}

/// Turns a resource list into kind → resource, skipping subresources (`deployments/scale`).
fn parse_list(gv: &GroupVersion, list: ApiResourceList) -> HashMap<String, Resolved> {
    list.resources
        .into_iter()
        .filter(|r| !r.name.contains('/'))
        .map(|r| {
            let resource = ApiResource {
                group: gv.group.clone(),
                version: gv.version.clone(),
                api_version: gv.api_version(),
                kind: r.kind.clone(),
                plural: r.name,
            };
            (
                r.kind,
                Resolved {
                    resource,
                    namespaced: r.namespaced,
                },
            )
        })
        .collect()
}

impl Cluster {
    /// Resolves a kind. `Ok(None)`: the server does not serve it (for a custom resource, its
    /// CRD is not installed). `Err`: discovery itself failed and the answer is unknown.
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Resolved>, ApiError> {
        if let Some(kinds) = self.discovery.cached(api_version)
            && let Some(found) = kinds.get(kind)
        {
            return Ok(Some(found.clone()));
        }
        // Not cached, or cached without this kind: the group-version may have changed since.
        let kinds = self.list_group_version(api_version).await?;
        Ok(kinds.and_then(|k| k.get(kind).cloned()))
    }

    async fn list_group_version(
        &self,
        api_version: &str,
    ) -> Result<Option<Arc<HashMap<String, Resolved>>>, ApiError> {
        let gv: GroupVersion = api_version
            .parse()
            .map_err(|_| ApiError::local(format!("{api_version:?} is not a valid apiVersion")))?;
        let path = if gv.group.is_empty() {
            format!("/api/{}", gv.version)
        } else {
            format!("/apis/{api_version}")
        };
        let answer = self
            .call(Retry::Transient, || {
                http::Request::get(path.as_str())
                    .header(http::header::ACCEPT, "application/json")
                    .body(Vec::new())
                    .map_err(kube::core::request::Error::BuildRequest)
            })
            .await;
        let body = match answer {
            Ok(body) => body,
            Err(e) if e.is_not_found() => {
                self.discovery.lock().remove(api_version);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let list: ApiResourceList = serde_json::from_slice(&body).map_err(|e| {
            ApiError::local(format!(
                "the discovery document of {api_version} is unreadable: {e}"
            ))
        })?;
        let kinds = Arc::new(parse_list(&gv, list));
        self.discovery
            .lock()
            .insert(api_version.to_string(), kinds.clone());
        Ok(Some(kinds))
    }

    /// Forgets every cached version of a group, after one of its CRDs changed.
    pub fn forget_group(&self, group: &str) {
        self.discovery
            .lock()
            .retain(|api_version, _| group_of(api_version) != group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_map_kinds_to_plurals_and_scope() {
        let list: ApiResourceList = serde_json::from_value(serde_json::json!({
            "kind": "APIResourceList", "groupVersion": "apps/v1",
            "resources": [
                {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["get"]},
                {"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get"]},
                {"name": "ingressclasses", "singularName": "", "namespaced": false, "kind": "IngressClass", "verbs": ["get"]}
            ]
        }))
        .unwrap();
        let kinds = parse_list(&"apps/v1".parse().unwrap(), list);
        assert_eq!(kinds.len(), 2, "subresources are skipped");
        let d = &kinds["Deployment"];
        assert_eq!(
            (
                d.resource.plural.as_str(),
                d.resource.group.as_str(),
                d.namespaced
            ),
            ("deployments", "apps", true)
        );
        assert!(!kinds["IngressClass"].namespaced);
    }
}
