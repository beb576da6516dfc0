//! The agent identity kept in a Secret of the agent's namespace, for agents running inside the
//! cluster (no writable disk that survives a pod). `identity` decides the keys; this only
//! reads and writes the bytes.

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

impl Cluster {
    /// The data of Secret `name` in the agent's namespace, or `None` if there is no such Secret.
    pub async fn read_secret(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ApiError> {
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
        Ok(Some(
            secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
        ))
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
