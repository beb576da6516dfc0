//! Object lifecycles beyond a single write: DELETE (immediate, or `deletionTimestamp` while
//! finalizers remain), and the background work the real control plane does: the CRD
//! establishing controller (`NamesAccepted`/`Established` a few tens of milliseconds after
//! create, only then served), CRD cleanup on delete, the namespace controller (a deleted
//! namespace is `Terminating` until its contents are gone), and the per-namespace `default`
//! ServiceAccount and `kube-root-ca.crt` ConfigMap.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{debug, warn};

use super::catalog::{ResourceType, TypeKey};
use super::core::Core;
use super::prepare::namespaces_key;
use super::status::ApiError;
use super::store::{Effect, State, meta_str, now_rfc3339};
use super::write::{self, WriteCtx};

const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";
const PROTECTED_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];
/// How long the establishing controller takes, like a real server's few tens of milliseconds.
const ESTABLISH_DELAY: Duration = Duration::from_millis(30);
const CONTROLLER_PERIOD: Duration = Duration::from_millis(20);

/// DELETE options from the query and the `DeleteOptions` body.
#[derive(Debug, Default)]
pub(crate) struct DeleteOpts {
    pub dry_run: bool,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// What a DELETE did.
pub(crate) enum Deleted {
    /// The object is gone (answered with a `Success` Status).
    Gone(Value),
    /// The object waits for finalizers (answered with the object).
    Pending(Value),
}

/// Whether `obj` still has finalizers (a Namespace's `spec.finalizers` count too).
pub(crate) fn has_finalizers(rt: &ResourceType, obj: &Value) -> bool {
    let non_empty = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    non_empty("/metadata/finalizers") || (rt.is("", "Namespace") && non_empty("/spec/finalizers"))
}

pub(crate) fn delete(
    state: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> Result<Deleted, ApiError> {
    let live = state.get(&rt.key(), ns, name).cloned();
    let live = live.ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
    check_preconditions(rt, &live, opts)?;
    if rt.is("", "Namespace") && PROTECTED_NAMESPACES.contains(&name) {
        let why = "this namespace may not be deleted";
        return Err(ApiError::forbidden("", "namespaces", name, why, vec![]));
    }
    if live.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok(Deleted::Pending(live));
    }
    if !has_finalizers(rt, &live) {
        if opts.dry_run {
            return Ok(Deleted::Gone(live));
        }
        let gone = state
            .remove(&rt.key(), ns, name, None)
            .expect("object exists under the lock");
        return Ok(Deleted::Gone(gone));
    }
    let obj = mark_deleted(rt, live);
    if opts.dry_run {
        return Ok(Deleted::Pending(obj));
    }
    if rt.is("", "Namespace") {
        state
            .effects
            .push(Effect::FinalizeNamespace(name.to_string()));
    }
    if rt.is("apiextensions.k8s.io", "CustomResourceDefinition") {
        state.effects.push(Effect::CleanupCrd(name.to_string()));
    }
    Ok(Deleted::Pending(state.put(&rt.key(), obj)))
}

/// `preconditions.uid` / `preconditions.resourceVersion` of the DeleteOptions.
fn check_preconditions(rt: &ResourceType, live: &Value, opts: &DeleteOpts) -> Result<(), ApiError> {
    let checks = [
        ("UID", &opts.uid, "uid"),
        ("ResourceVersion", &opts.resource_version, "resourceVersion"),
    ];
    for (what, want, field) in checks {
        let actual = meta_str(live, field);
        if let Some(w) = want.as_ref().filter(|w| *w != actual) {
            let why = format!(
                "Precondition failed: {what} in precondition: {w}, {what} in object meta: {actual}"
            );
            return Err(ApiError::conflict(
                &rt.group,
                &rt.plural,
                meta_str(live, "name"),
                &why,
            ));
        }
    }
    Ok(())
}

/// An object waiting for its finalizers: `deletionTimestamp` set and generation bumped.
fn mark_deleted(rt: &ResourceType, mut obj: Value) -> Value {
    obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
    obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    if let Some(g) = obj.pointer("/metadata/generation").and_then(Value::as_i64) {
        obj["metadata"]["generation"] = json!(g + 1);
    }
    if rt.is("", "Namespace") {
        obj["status"]["phase"] = json!("Terminating");
    }
    obj
}

/// Creates what the controllers put in every new namespace.
pub(crate) fn seed_namespace(state: &mut State, ns: &str, now: &str) {
    let ca = state.ca_pem.clone();
    let objects = [
        ("ServiceAccount", json!({"metadata": {"name": "default"}})),
        (
            "ConfigMap",
            json!({"metadata": {"name": "kube-root-ca.crt",
            "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": ca}}),
        ),
    ];
    for (kind, body) in objects {
        let Some(rt) = state.catalog.by_kind("", "v1", kind) else {
            continue;
        };
        let ctx = controller_ctx(rt, Some(ns), now);
        if let Err(e) = write::create(state, &ctx, body) {
            warn!(namespace = ns, kind, error = ?e, "seeding namespace failed");
        }
    }
}

fn controller_ctx(rt: Arc<ResourceType>, ns: Option<&str>, now: &str) -> WriteCtx {
    WriteCtx {
        rt,
        namespace: ns.map(String::from),
        status: false,
        manager: "kube-controller-manager".into(),
        dry_run: false,
        now: now.to_string(),
    }
}

/// Runs one follow-up to completion (or until shutdown).
pub(crate) async fn run_effect(core: Arc<Core>, effect: Effect) {
    let cancel = core.cancel.clone();
    let work = async {
        match &effect {
            Effect::EstablishCrd(name) => {
                tokio::time::sleep(ESTABLISH_DELAY).await;
                converge(&core, |state| {
                    establish_crd(state, name);
                    true
                })
                .await;
            }
            Effect::Reconcile {
                ty,
                namespace,
                name,
            } => {
                tokio::time::sleep(super::controllers::REACTION).await;
                converge(&core, |state| {
                    super::controllers::reconcile(state, ty, namespace, name);
                    true
                })
                .await;
            }
            Effect::CleanupCrd(name) => converge(&core, |state| cleanup_crd(state, name)).await,
            Effect::FinalizeNamespace(name) => {
                converge(&core, |state| finalize_namespace(state, name)).await
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = work => debug!(?effect, "controller work done"),
    }
}

/// Repeats `step` under the lock until it reports done, spawning what it asks for.
async fn converge(core: &Arc<Core>, mut step: impl FnMut(&mut State) -> bool) {
    loop {
        let (done, effects) = {
            let mut state = core.lock();
            let done = step(&mut state);
            (done, std::mem::take(&mut state.effects))
        };
        core.spawn_effects(effects);
        if done {
            return;
        }
        tokio::time::sleep(CONTROLLER_PERIOD).await;
    }
}

fn crd_type() -> TypeKey {
    TypeKey {
        group: "apiextensions.k8s.io".into(),
        resource: "customresourcedefinitions".into(),
    }
}

fn establish_crd(state: &mut State, name: &str) {
    let Some(crd) = state.get(&crd_type(), "", name).cloned() else {
        return;
    };
    if super::catalog::crd_established(&crd) || crd.pointer("/metadata/deletionTimestamp").is_some()
    {
        return;
    }
    let now = now_rfc3339();
    let condition = |ty: &str, reason: &str, message: &str| json!({"type": ty, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message});
    let names = &crd["spec"]["names"];
    let storage: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| v["name"].clone())
        .collect();
    let status = json!({
        "acceptedNames": names,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": storage,
    });
    let Some(rt) = state.catalog.by_key(&crd_type()) else {
        return;
    };
    match write::write_status(state, rt, None, name, status, "kube-apiserver", &now) {
        Ok(_) => debug!(crd = name, "CRD established"),
        Err(e) => warn!(crd = name, error = ?e, "establishing CRD failed"),
    }
}

/// Deletes every object in `items` that has no finalizer, and marks the others for deletion.
/// Returns how many remain.
fn delete_all(state: &mut State, items: Vec<(TypeKey, String, String)>) -> usize {
    let mut remaining = 0;
    for (ty, ns, name) in items {
        let Some(obj) = state.get(&ty, &ns, &name).cloned() else {
            continue;
        };
        let finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if !finalizers {
            state.remove(&ty, &ns, &name, None);
            continue;
        }
        remaining += 1;
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            let mut marked = obj;
            marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            state.put(&ty, marked);
        }
    }
    remaining
}

fn finalize_namespace(state: &mut State, name: &str) -> bool {
    let Some(ns_obj) = state.get(&namespaces_key(), "", name).cloned() else {
        return true;
    };
    let contents = state
        .in_namespace(name)
        .into_iter()
        .map(|(ty, n)| (ty, name.to_string(), n))
        .collect();
    if delete_all(state, contents) > 0 {
        return false;
    }
    let mut done = ns_obj;
    done["spec"]["finalizers"] = json!([]);
    let Some(rt) = state.catalog.by_key(&namespaces_key()) else {
        return true;
    };
    write::commit_update(state, &rt, done);
    debug!(namespace = name, "namespace finalized");
    true
}

fn cleanup_crd(state: &mut State, name: &str) -> bool {
    let Some(crd) = state.get(&crd_type(), "", name).cloned() else {
        return true;
    };
    let ty = TypeKey {
        group: crd["spec"]["group"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        resource: crd["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let instances: Vec<(TypeKey, String, String)> = state
        .list(&ty, None)
        .map(|o| {
            (
                ty.clone(),
                meta_str(o, "namespace").to_string(),
                meta_str(o, "name").to_string(),
            )
        })
        .collect();
    if delete_all(state, instances) > 0 {
        return false;
    }
    let mut done = crd;
    if let Some(list) = done
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        list.retain(|f| f != CRD_CLEANUP);
    }
    let Some(rt) = state.catalog.by_key(&crd_type()) else {
        return true;
    };
    write::commit_update(state, &rt, done);
    debug!(crd = name, "CRD instances cleaned up");
    true
}
