//! Secrets of the agent's namespace: the agent identity, for agents running inside the cluster
//! (no writable disk that survives a pod), and the bootstrap Secret of the install manifest,
//! whose registration token the agent deletes once it has an identity. `identity` and
//! `bootstrap` decide the keys; this only reads and writes the bytes.
//!
//! *Invariant:* a key is removed with a JSON merge patch that carries the `resourceVersion`
//! it was read at, so a Secret re-applied meanwhile is read again instead of overwritten.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{GetParams, Patch, PatchParams};
use kube::core::Request;
use serde_json::json;

use super::{ApiError, Cluster, Retry};
use crate::plan::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

fn secrets(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/secrets")
}

/// The annotation `kubectl apply` (client-side) keeps the whole applied object in, values of
/// `stringData` included.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Secret's data as read, with what a conditional update of it needs.
#[derive(Clone)]
pub(crate) struct VersionedSecret {
    pub data: BTreeMap<String, Vec<u8>>,
    resource_version: String,
    last_applied: Option<String>,
}

impl std::fmt::Debug for VersionedSecret {
    // Hand-written: the values are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedSecret")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("resource_version", &self.resource_version)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The data of Secret `name` in the agent's namespace, or `None` if there is no such Secret.
    pub async fn read_secret(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ApiError> {
        Ok(self.read_versioned_secret(name).await?.map(|s| s.data))
    }

    /// Secret `name` in the agent's namespace with its `resourceVersion`, or `None`.
    pub async fn read_versioned_secret(
        &self,
        name: &str,
    ) -> Result<Option<VersionedSecret>, ApiError> {
        let request = Request::new(secrets(&self.namespace));
        let value = match self
            .call_json(Retry::Transient, || {
                request.get(name, &GetParams::default())
            })
            .await
        {
            Ok(v) => v,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let secret: Secret = serde_json::from_value(value)
            .map_err(|e| ApiError::local(format!("the Secret {name} is unreadable: {e}")))?;
        Ok(Some(VersionedSecret {
            data: secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
            resource_version: secret.metadata.resource_version.unwrap_or_default(),
            last_applied: secret
                .metadata
                .annotations
                .and_then(|mut a| a.remove(LAST_APPLIED)),
        }))
    }

    /// Removes `key` from Secret `name` as it was `read`, and from the copy `kubectl apply`
    /// keeps in an annotation. `Ok(false)`: the Secret changed since it was read (409); read
    /// it again and retry.
    pub async fn remove_secret_key(
        &self,
        name: &str,
        key: &str,
        read: &VersionedSecret,
    ) -> Result<bool, ApiError> {
        let mut metadata = json!({});
        if !read.resource_version.is_empty() {
            metadata["resourceVersion"] = json!(read.resource_version);
        }
        if let Some(applied) = &read.last_applied {
            metadata["annotations"] = json!({LAST_APPLIED: without_key(applied, key)});
        }
        let body = json!({"metadata": metadata, "data": {key: null}});
        let request = Request::new(secrets(&self.namespace));
        let params = PatchParams::default();
        match self
            .call(Retry::Transient, || {
                request.patch(name, &params, &Patch::Merge(&body))
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes Secret `name` in the agent's namespace with exactly `data`, creating the
    /// namespace if needed.
    pub async fn write_secret(
        &self,
        name: &str,
        data: BTreeMap<String, Vec<u8>>,
    ) -> Result<(), ApiError> {
        self.ensure_own_namespace().await?;
        let data: BTreeMap<String, ByteString> =
            data.into_iter().map(|(k, v)| (k, ByteString(v))).collect();
        let body = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            },
            "data": data,
        });
        let request = Request::new(secrets(&self.namespace));
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.call(Retry::Transient, || {
            request.patch(name, &params, &Patch::Apply(&body))
        })
        .await
        .map(drop)
    }
}

/// A `last-applied-configuration` without `key` in `data` and `stringData`; `None` (remove the
/// annotation) when it is not the JSON object kubectl writes.
fn without_key(applied: &str, key: &str) -> Option<String> {
    let mut object: serde_json::Value = serde_json::from_str(applied).ok()?;
    for field in ["data", "stringData"] {
        if let Some(map) = object.get_mut(field).and_then(|m| m.as_object_mut()) {
            map.remove(key);
        }
    }
    object.is_object().then(|| object.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectls_copy_loses_the_key_and_keeps_the_rest() {
        let applied = r#"{"apiVersion":"v1","kind":"Secret","stringData":{"hubURL":"https://h:1","token":"t0k"}}"#;
        let cleaned = without_key(applied, "token").unwrap();
        assert!(
            !cleaned.contains("t0k") && cleaned.contains("hubURL"),
            "{cleaned}"
        );
        assert_eq!(without_key("not json", "token"), None);
    }
}
