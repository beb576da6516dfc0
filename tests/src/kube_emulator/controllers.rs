//! The workload side of a control plane on a healthy cluster with one node, a default
//! StorageClass and a load-balancer provider: a short moment after a Deployment, StatefulSet or
//! DaemonSet changes, its controller reports the rollout done (`observedGeneration` caught up,
//! every replica updated and available); a Job completes; a PersistentVolumeClaim is Bound; a
//! Service of type LoadBalancer gets an address. Each writes only the status subresource, as
//! manager `kube-controller-manager`, exactly as [`super::KubeEmulator::set_status`] does.
//!
//! Tests that drive health by hand pause these controllers
//! ([`super::KubeEmulator::pause_workload_controllers`]); nothing the agent does is special-cased.

use std::time::Duration;

use serde_json::{Value, json};
use tracing::{debug, warn};

use super::catalog::{ResourceType, TypeKey};
use super::store::{Effect, State, meta_str, now_rfc3339};
use super::write;

/// How long the controllers take to react, like a real control plane's few milliseconds.
pub(crate) const REACTION: Duration = Duration::from_millis(15);

/// Whether a controller here cares about objects of `rt`.
fn watched(rt: &ResourceType) -> bool {
    matches!(
        (rt.group.as_str(), rt.kind.as_str()),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet")
            | ("batch", "Job")
            | ("", "Service" | "PersistentVolumeClaim")
    )
}

/// Asks for a controller pass after a write of the main resource of `obj`.
pub(crate) fn on_write(state: &mut State, rt: &ResourceType, obj: &Value) {
    if state.workload_controllers_paused || !watched(rt) {
        return;
    }
    state.effects.push(Effect::Reconcile {
        ty: rt.key(),
        namespace: meta_str(obj, "namespace").to_string(),
        name: meta_str(obj, "name").to_string(),
    });
}

/// One controller pass over one object (run [`REACTION`] after the write asked for it).
pub(crate) fn reconcile(state: &mut State, ty: &TypeKey, namespace: &str, name: &str) {
    if state.workload_controllers_paused {
        return;
    }
    let (Some(rt), Some(obj)) = (
        state.catalog.by_key(ty),
        state.get(ty, namespace, name).cloned(),
    ) else {
        return;
    };
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let Some(status) = desired_status(&rt, &obj, state) else {
        return;
    };
    let ns = rt.namespaced.then_some(namespace);
    let now = now_rfc3339();
    match write::write_status(state, rt, ns, name, status, "kube-controller-manager", &now) {
        Ok(_) => debug!(namespace, name, "workload status written"),
        Err(e) => warn!(namespace, name, error = ?e, "writing workload status failed"),
    }
}

/// The status a healthy cluster's controller would write, or `None` to leave it alone.
fn desired_status(rt: &ResourceType, obj: &Value, state: &mut State) -> Option<Value> {
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let name = meta_str(obj, "name");
    let old = &obj["status"];
    let now = now_rfc3339();
    let condition = |ty: &str, reason: &str, message: &str| {
        json!({"type": ty, "status": "True", "lastUpdateTime": now, "lastTransitionTime": now,
            "reason": reason, "message": message})
    };
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment") => Some(json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [
                condition("Available", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                condition("Progressing", "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{name}-{}\" has successfully progressed.", generation.unwrap_or(1))),
            ],
        })),
        ("apps", "StatefulSet") => {
            let revision = format!("{name}-{}", generation.unwrap_or(1));
            Some(json!({
                "observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                "currentReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas,
                "currentRevision": revision, "updateRevision": revision, "collisionCount": 0,
            }))
        }
        ("apps", "DaemonSet") => Some(json!({
            "observedGeneration": generation, "currentNumberScheduled": 1, "desiredNumberScheduled": 1,
            "numberMisscheduled": 0, "numberReady": 1, "updatedNumberScheduled": 1, "numberAvailable": 1,
        })),
        ("batch", "Job") if old.get("conditions").is_none() => Some(json!({
            "startTime": now, "completionTime": now, "succeeded": 1, "ready": 0, "terminating": 0,
            "conditions": [
                condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
                condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
            ],
        })),
        ("", "Service")
            if obj.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
                && old.pointer("/loadBalancer/ingress").is_none() =>
        {
            state.next_load_balancer += 1;
            let ip = format!("192.0.2.{}", state.next_load_balancer % 250 + 1);
            Some(json!({"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}}))
        }
        ("", "PersistentVolumeClaim")
            if old.get("phase").and_then(Value::as_str) != Some("Bound") =>
        {
            let size = obj
                .pointer("/spec/resources/requests/storage")
                .cloned()
                .unwrap_or(json!("1Gi"));
            Some(
                json!({"phase": "Bound", "accessModes": obj["spec"]["accessModes"],
                "capacity": {"storage": size}}),
            )
        }
        _ => None,
    }
}
