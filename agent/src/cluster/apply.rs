//! Writing objects: server-side apply, the deletes of prune, the merge patches that release
//! objects, namespaces, and waiting until a CustomResourceDefinition is established.
//!
//! Apply is a `PATCH` with `application/apply-patch+yaml`, field manager `flotilla` and
//! `force=true`: it creates what is missing, takes over fields other managers hold, and lets
//! the server drop fields that only we owned and the bundle no longer sets.

use std::time::Duration;

use kube::Resource;
use kube::api::{DeleteParams, DynamicObject, GetParams, Patch, PatchParams, Preconditions};
use kube::core::Request;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{ApiError, Cluster, Resolved, Retry};
use crate::plan::FIELD_MANAGER;

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const NAMESPACES: &str = "/api/v1/namespaces";

fn collection(r: &Resolved, namespace: &str) -> String {
    let ns = (r.namespaced && !namespace.is_empty()).then_some(namespace);
    DynamicObject::url_path(&r.resource, ns)
}

impl Cluster {
    /// Server-side applies one object (its namespace already settled); returns the object as
    /// the server now holds it.
    pub async fn apply_object(
        &self,
        r: &Resolved,
        namespace: &str,
        name: &str,
        body: &Value,
        retry: Retry,
    ) -> Result<Value, ApiError> {
        let request = Request::new(collection(r, namespace));
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.call_json(retry, || request.patch(name, &params, &Patch::Apply(body)))
            .await
    }

    /// What [`Cluster::apply_object`] would make of the object (`dryRun=All`: defaulting,
    /// admission and ownership run, nothing is stored).
    pub async fn dry_run_apply(
        &self,
        r: &Resolved,
        namespace: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let request = Request::new(collection(r, namespace));
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        self.call_json(Retry::Transient, || {
            request.patch(name, &params, &Patch::Apply(body))
        })
        .await
    }

    /// Reads one object; `None` when it does not exist.
    pub async fn get_object(
        &self,
        r: &Resolved,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        self.get_at(&collection(r, namespace), name).await
    }

    async fn get_at(&self, collection: &str, name: &str) -> Result<Option<Value>, ApiError> {
        let request = Request::new(collection);
        match self
            .call_json(Retry::Transient, || {
                request.get(name, &GetParams::default())
            })
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes one object, as it was when `read`, with background propagation. The
    /// DeleteOptions carry `preconditions` with the `uid` and `resourceVersion` of `read`, so
    /// the server refuses with 409 Conflict ([`ApiError::is_conflict`]) if the object changed
    /// since (another deployment took it over, say): read it again and decide again. Already
    /// gone is success; an object with finalizers may stay a while with a
    /// `deletionTimestamp`, which is the server's business.
    pub async fn delete_object(
        &self,
        r: &Resolved,
        namespace: &str,
        name: &str,
        read: &Value,
    ) -> Result<(), ApiError> {
        let request = Request::new(collection(r, namespace));
        let params = DeleteParams {
            preconditions: Some(preconditions(read)),
            ..DeleteParams::background()
        };
        match self
            .call(Retry::Transient, || request.delete(name, &params))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends a JSON merge patch (`application/merge-patch+json`) to one object. A patch that
    /// carries `metadata.resourceVersion` is refused with 409 Conflict
    /// ([`ApiError::is_conflict`]) if the object changed since it was read; a missing object
    /// is 404 ([`ApiError::is_not_found`]). Both are the caller's to decide on.
    pub async fn merge_patch_object(
        &self,
        r: &Resolved,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<(), ApiError> {
        let request = Request::new(collection(r, namespace));
        let params = PatchParams::default();
        self.call(Retry::Transient, || {
            request.patch(name, &params, &Patch::Merge(patch))
        })
        .await
        .map(drop)
    }

    /// Makes sure a namespace exists, creating it by server-side apply without ownership marks:
    /// a namespace made this way belongs to nobody and is never pruned.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), ApiError> {
        if self.get_at(NAMESPACES, name).await?.is_some() {
            return Ok(());
        }
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let request = Request::new(NAMESPACES);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.call(Retry::Transient, || {
            request.patch(name, &params, &Patch::Apply(&body))
        })
        .await
        .map(drop)
    }

    /// Polls a CRD until its `Established` condition is `True`, then forgets its group in
    /// discovery so the new kinds are seen. Returns the CRD's group; the error says what the
    /// CRD reported last.
    pub async fn wait_established(
        &self,
        crd_name: &str,
        within: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + within;
        let mut pause = Duration::from_millis(50);
        let mut last = String::from("no status yet");
        loop {
            match self.get_at(CRDS, crd_name).await {
                Ok(Some(crd)) => {
                    if let Some(group) = crd.pointer("/spec/group").and_then(Value::as_str)
                        && established(&crd, &mut last)
                    {
                        self.forget_group(group);
                        return Ok(group.to_string());
                    }
                }
                Ok(None) => last = "the CustomResourceDefinition is gone".into(),
                Err(e) => last = e.message,
            }
            if Instant::now() + pause > deadline {
                return Err(format!(
                    "not Established after {}s: {last}",
                    within.as_secs()
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

/// Delete preconditions that hold only for the object exactly as `read`.
fn preconditions(read: &Value) -> Preconditions {
    let field = |f: &str| {
        read.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Preconditions {
        uid: field("uid"),
        resource_version: field("resourceVersion"),
    }
}

/// Whether the CRD's `Established` condition is `True`; otherwise notes the most telling
/// condition message (a `NamesAccepted=False` explains why it never will be).
fn established(crd: &Value, last: &mut String) -> bool {
    let conditions = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let field = |c: &Value, k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if conditions
        .iter()
        .any(|c| field(c, "type") == "Established" && field(c, "status") == "True")
    {
        return true;
    }
    if let Some(c) = conditions
        .iter()
        .find(|c| field(c, "status") == "False" && !field(c, "message").is_empty())
    {
        *last = format!("{}: {}", field(c, "type"), field(c, "message"));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn established_reads_conditions() {
        let mut last = String::new();
        let ok = json!({"status": {"conditions": [
            {"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]}});
        assert!(established(&ok, &mut last));
        let refused = json!({"status": {"conditions": [
            {"type": "NamesAccepted", "status": "False", "message": "\"widgets\" is already in use"},
            {"type": "Established", "status": "False", "message": "not all names are accepted"}]}});
        assert!(!established(&refused, &mut last));
        assert_eq!(last, "NamesAccepted: \"widgets\" is already in use");
        assert!(!established(&json!({}), &mut last));
    }

    #[test]
    fn collections_follow_scope() {
        let r = |namespaced| Resolved {
            resource: kube::discovery::ApiResource {
                group: "apps".into(),
                version: "v1".into(),
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                plural: "deployments".into(),
            },
            namespaced,
        };
        assert_eq!(
            collection(&r(true), "web"),
            "/apis/apps/v1/namespaces/web/deployments"
        );
        assert_eq!(collection(&r(false), "web"), "/apis/apps/v1/deployments");
    }
}
