//! What each deployment owns, kept in the cluster so that it survives restarts and reads the
//! same whether the agent runs inside the cluster or outside it.
//!
//! One ConfigMap per deployment in the agent's namespace, named `flotilla-inv-<16 hex of
//! sha256(deployment id)>`, labelled `flotilla.dev/inventory: "true"`. Its data keys are
//! `deploymentId`, `contentHash`, `revision`, `spec` (the deployment as JSON, with its options
//! `keepResources` and `correctDrift`) and `objects` (a JSON list of `{apiVersion, kind,
//! namespace, name}`). This is the only code that knows that layout. A removal reads
//! `spec.keepResources` back, so after a restart it still keeps what the last content said to
//! keep; a `spec` written before those options existed reads them as `false`.

use kube::api::{DeleteParams, GetParams, ListParams, Patch, PatchParams};
use kube::core::Request;
use serde_json::{Map, Value, json};
use tracing::warn;

use super::{ApiError, Cluster, Retry};
use crate::model::Inventory;
use crate::plan::{FIELD_MANAGER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, inventory_name};

/// Label that marks inventory ConfigMaps.
const INVENTORY_LABEL: &str = "flotilla.dev/inventory";
const PAGE: u32 = 500;

fn configmaps(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/configmaps")
}

/// The ConfigMap that records `inventory`.
fn to_configmap(namespace: &str, inventory: &Inventory) -> Value {
    let spec = inventory
        .spec
        .as_ref()
        .map(|s| serde_json::to_string(s).expect("plain data serializes"));
    let objects = serde_json::to_string(&inventory.objects).expect("plain data serializes");
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": inventory_name(&inventory.deployment_id),
            "namespace": namespace,
            "labels": {INVENTORY_LABEL: "true", MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        },
        "data": {
            "deploymentId": inventory.deployment_id,
            "contentHash": inventory.content_hash,
            "revision": inventory.revision,
            "spec": spec.unwrap_or_default(),
            "objects": objects,
        }
    })
}

/// Reads an inventory back. A missing or unreadable `spec` only loses the spec; unreadable
/// `objects` is an error, since guessing there could delete or leak objects.
fn from_configmap(cm: &Value) -> Result<Inventory, String> {
    let empty = Map::new();
    let data = cm.get("data").and_then(Value::as_object).unwrap_or(&empty);
    let text = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or_default();
    let deployment_id = text("deploymentId");
    if deployment_id.is_empty() {
        return Err("it has no deploymentId".into());
    }
    let objects = match text("objects") {
        "" => Vec::new(),
        s => serde_json::from_str(s).map_err(|e| format!("its objects are unreadable: {e}"))?,
    };
    Ok(Inventory {
        deployment_id: deployment_id.into(),
        content_hash: text("contentHash").into(),
        revision: text("revision").into(),
        spec: serde_json::from_str(text("spec")).ok(),
        objects,
    })
}

fn name_of(cm: &Value) -> &str {
    cm.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?")
}

impl Cluster {
    /// Every inventory in the agent's namespace. Unreadable ones are logged and skipped.
    pub async fn list_inventories(&self) -> Result<Vec<Inventory>, ApiError> {
        let request = Request::new(configmaps(&self.namespace));
        let selector = format!("{INVENTORY_LABEL}=true");
        let (mut found, mut token) = (Vec::new(), String::new());
        loop {
            let mut params = ListParams::default().labels(&selector).limit(PAGE);
            if !token.is_empty() {
                params = params.continue_token(&token);
            }
            let page = self
                .call_json(Retry::Transient, || request.list(&params))
                .await?;
            for cm in page
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match from_configmap(cm) {
                    Ok(inventory) => found.push(inventory),
                    Err(why) => {
                        warn!(configmap = name_of(cm), %why, "skipping unreadable inventory")
                    }
                }
            }
            token = page
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into();
            if token.is_empty() {
                return Ok(found);
            }
        }
    }

    /// The inventory of one deployment, if it has one.
    pub async fn read_inventory(&self, deployment_id: &str) -> Result<Option<Inventory>, ApiError> {
        let request = Request::new(configmaps(&self.namespace));
        let name = inventory_name(deployment_id);
        let cm = match self
            .call_json(Retry::Transient, || {
                request.get(&name, &GetParams::default())
            })
            .await
        {
            Ok(cm) => cm,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let inventory = from_configmap(&cm).map_err(|why| {
            ApiError::local(format!(
                "the inventory ConfigMap {name} is unreadable: {why}"
            ))
        })?;
        Ok((inventory.deployment_id == deployment_id).then_some(inventory))
    }

    /// Writes (creates or replaces) a deployment's inventory.
    pub async fn write_inventory(&self, inventory: &Inventory) -> Result<(), ApiError> {
        self.ensure_own_namespace().await?;
        let body = to_configmap(&self.namespace, inventory);
        let request = Request::new(configmaps(&self.namespace));
        let name = inventory_name(&inventory.deployment_id);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.call(Retry::Transient, || {
            request.patch(&name, &params, &Patch::Apply(&body))
        })
        .await
        .map(drop)
    }

    /// Deletes a deployment's inventory; already gone is fine.
    pub async fn delete_inventory(&self, deployment_id: &str) -> Result<(), ApiError> {
        let request = Request::new(configmaps(&self.namespace));
        let name = inventory_name(deployment_id);
        match self
            .call(Retry::Transient, || {
                request.delete(&name, &DeleteParams::default())
            })
            .await
        {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ComparePatch, Deployment, ManifestRef, ObjectRef};

    fn inventory() -> Inventory {
        Inventory {
            deployment_id: "repo/app".into(),
            content_hash: "c0ffee".into(),
            revision: "abc123".into(),
            spec: Some(Deployment {
                deployment_id: "repo/app".into(),
                bundle: "repo/app".into(),
                revision: "abc123".into(),
                content_hash: "c0ffee".into(),
                default_namespace: "apps".into(),
                manifests: vec![ManifestRef {
                    hash: "h1".into(),
                    source: "app/cm.yaml#0".into(),
                }],
                keep_resources: true,
                correct_drift: true,
                compare_patches: vec![ComparePatch {
                    kind: "Deployment".into(),
                    json_pointers: vec!["/spec/replicas".into()],
                    ..ComparePatch::default()
                }],
            }),
            objects: vec![ObjectRef {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: "apps".into(),
                name: "cm".into(),
            }],
        }
    }

    #[test]
    fn configmap_layout_is_the_documented_one() {
        let cm = to_configmap("flotilla-system", &inventory());
        assert_eq!(cm["metadata"]["name"], inventory_name("repo/app"));
        assert_eq!(cm["metadata"]["namespace"], "flotilla-system");
        assert_eq!(cm["metadata"]["labels"][INVENTORY_LABEL], "true");
        let data = &cm["data"];
        assert_eq!(data["deploymentId"], "repo/app");
        assert_eq!(data["contentHash"], "c0ffee");
        assert_eq!(data["revision"], "abc123");
        assert_eq!(
            data["objects"],
            r#"[{"apiVersion":"v1","kind":"ConfigMap","namespace":"apps","name":"cm"}]"#
        );
        let spec: Value = serde_json::from_str(data["spec"].as_str().unwrap()).unwrap();
        assert_eq!(spec["defaultNamespace"], "apps");
        assert_eq!(spec["manifests"][0]["source"], "app/cm.yaml#0");
        assert_eq!(spec["keepResources"], true);
        assert_eq!(spec["correctDrift"], true);
    }

    #[test]
    fn a_spec_from_before_the_options_reads_them_as_false() {
        let spec = r#"{"deploymentId":"d","bundle":"b","revision":"r","contentHash":"h","defaultNamespace":"","manifests":[]}"#;
        let cm = json!({"data": {"deploymentId": "d", "objects": "[]", "spec": spec}});
        let inventory = from_configmap(&cm).unwrap();
        let read = inventory.spec.as_ref().expect("an older spec still reads");
        assert!(!read.keep_resources && !read.correct_drift);
        assert!(!inventory.keeps_resources());
        let mut kept = inventory.clone();
        kept.spec.as_mut().unwrap().keep_resources = true;
        let back = from_configmap(&to_configmap("ns", &kept)).unwrap();
        assert!(back.keeps_resources(), "the flag survives a round trip");
    }

    #[test]
    fn configmap_round_trips() {
        let inv = inventory();
        assert_eq!(from_configmap(&to_configmap("ns", &inv)).unwrap(), inv);
        let bare = Inventory {
            deployment_id: "d".into(),
            ..Inventory::default()
        };
        assert_eq!(from_configmap(&to_configmap("ns", &bare)).unwrap(), bare);
    }

    #[test]
    fn unreadable_objects_are_an_error_not_an_empty_list() {
        let cm = json!({"data": {"deploymentId": "d", "objects": "not json"}});
        assert!(from_configmap(&cm).unwrap_err().contains("objects"));
        assert!(from_configmap(&json!({"data": {}})).is_err());
    }
}
