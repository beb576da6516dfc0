//! One table per kind: a live object (status as its controller writes it) and the health
//! expected, `""` meaning Ready.

use serde_json::{Value, json};

use super::{Health, assess};

fn check(cases: &[(&str, Value, &str)]) {
    for (what, obj, want) in cases {
        let got = match assess(obj) {
            Health::Ready => String::new(),
            Health::NotReady(why) => why,
        };
        assert_eq!(got, *want, "{what}");
    }
}

fn object(api_version: &str, kind: &str, generation: i64, spec: Value, status: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
        "metadata": {"name": "web", "namespace": "shop", "generation": generation},
        "spec": spec, "status": status})
}

fn deployment(spec: Value, status: Value) -> Value {
    object("apps/v1", "Deployment", 2, spec, status)
}

#[test]
fn deployments() {
    let progressing = |reason: &str, message: &str| json!([{"type": "Progressing", "status": "False", "reason": reason, "message": message}]);
    check(&[
        (
            "rolled out",
            deployment(
                json!({"replicas": 3}),
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
            ),
            "",
        ),
        (
            "replicas default to one",
            deployment(
                json!({}),
                json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}),
            ),
            "",
        ),
        (
            "no status yet",
            deployment(json!({"replicas": 3}), json!({})),
            "Deployment web: the controller has not reported a status yet",
        ),
        (
            "an older generation's status is not trusted",
            deployment(
                json!({"replicas": 3}),
                json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
            ),
            "Deployment web: the controller has not observed generation 2 yet (observed 1)",
        ),
        (
            "progress deadline",
            deployment(
                json!({"replicas": 3}),
                json!({"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1,
                    "conditions": progressing("ProgressDeadlineExceeded", "ReplicaSet \"web-abc\" has timed out progressing.")}),
            ),
            "ProgressDeadlineExceeded: ReplicaSet \"web-abc\" has timed out progressing.",
        ),
        (
            "updating",
            deployment(
                json!({"replicas": 3}),
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3}),
            ),
            "Deployment web: 1 of 3 replicas updated",
        ),
        (
            "old replicas still terminating",
            deployment(
                json!({"replicas": 3}),
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
            ),
            "Deployment web: 1 old replicas pending termination",
        ),
        (
            "not available",
            deployment(
                json!({"replicas": 3}),
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1}),
            ),
            "Deployment web: 1 of 3 replicas available",
        ),
        (
            "scaled to zero",
            deployment(json!({"replicas": 0}), json!({"observedGeneration": 2})),
            "",
        ),
        (
            "being deleted",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "deletionTimestamp": "2025-01-01T00:00:00Z"}}),
            "Deployment web: being deleted",
        ),
    ]);
}

#[test]
fn stateful_sets() {
    let sts = |status: Value| object("apps/v1", "StatefulSet", 3, json!({"replicas": 2}), status);
    check(&[
        (
            "rolled out",
            sts(
                json!({"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "web-1", "updateRevision": "web-1"}),
            ),
            "",
        ),
        (
            "revisions not reported: counts decide",
            sts(json!({"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 2})),
            "",
        ),
        (
            "stale",
            sts(json!({"observedGeneration": 2, "readyReplicas": 2, "updatedReplicas": 2})),
            "StatefulSet web: the controller has not observed generation 3 yet (observed 2)",
        ),
        (
            "not ready",
            sts(json!({"observedGeneration": 3, "readyReplicas": 1, "updatedReplicas": 2})),
            "StatefulSet web: 1 of 2 replicas ready",
        ),
        (
            "not updated",
            sts(json!({"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 0})),
            "StatefulSet web: 0 of 2 replicas updated",
        ),
        (
            "rolling",
            sts(
                json!({"observedGeneration": 3, "readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "web-1", "updateRevision": "web-2"}),
            ),
            "StatefulSet web: rolling update to revision web-2 in progress",
        ),
    ]);
}

#[test]
fn daemon_sets() {
    let ds = |status: Value| object("apps/v1", "DaemonSet", 1, json!({}), status);
    check(&[
        (
            "everywhere",
            ds(
                json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}),
            ),
            "",
        ),
        (
            "no nodes",
            ds(json!({"observedGeneration": 1, "desiredNumberScheduled": 0})),
            "",
        ),
        (
            "updating",
            ds(
                json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 2, "numberAvailable": 3}),
            ),
            "DaemonSet web: 2 of 3 pods updated",
        ),
        (
            "unavailable",
            ds(
                json!({"observedGeneration": 1, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 1}),
            ),
            "DaemonSet web: 1 of 3 pods available",
        ),
        (
            "no status",
            ds(json!({})),
            "DaemonSet web: the controller has not reported a status yet",
        ),
    ]);
}

#[test]
fn jobs() {
    let job = |conditions: Value| {
        object(
            "batch/v1",
            "Job",
            1,
            json!({}),
            json!({"conditions": conditions}),
        )
    };
    check(&[
        (
            "complete",
            job(json!([{"type": "Complete", "status": "True"}])),
            "",
        ),
        (
            "failed",
            job(
                json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]),
            ),
            "BackoffLimitExceeded: Job has reached the specified backoff limit",
        ),
        ("running", job(json!([])), "Job web: running"),
        (
            "a false Complete is still running",
            job(json!([{"type": "Complete", "status": "False"}])),
            "Job web: running",
        ),
    ]);
}

#[test]
fn services_and_claims() {
    let svc = |ty: &str, status: Value| object("v1", "Service", 1, json!({"type": ty}), status);
    let pvc = |status: Value| object("v1", "PersistentVolumeClaim", 1, json!({}), status);
    check(&[
        ("cluster IP", svc("ClusterIP", json!({})), ""),
        (
            "LB with an address",
            svc(
                "LoadBalancer",
                json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}),
            ),
            "",
        ),
        (
            "LB without",
            svc("LoadBalancer", json!({"loadBalancer": {}})),
            "Service web: waiting for a load balancer address",
        ),
        ("bound", pvc(json!({"phase": "Bound"})), ""),
        (
            "pending",
            pvc(json!({"phase": "Pending"})),
            "PersistentVolumeClaim web: Pending, not Bound",
        ),
        (
            "fresh",
            pvc(json!({})),
            "PersistentVolumeClaim web: not Bound yet",
        ),
    ]);
}

#[test]
fn crds() {
    let crd = |conditions: Value| {
        object(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            1,
            json!({}),
            json!({"conditions": conditions}),
        )
    };
    check(&[
        (
            "established",
            crd(json!([{"type": "Established", "status": "True"}])),
            "",
        ),
        (
            "not yet",
            crd(json!([])),
            "CustomResourceDefinition web: not Established yet",
        ),
        (
            "names refused",
            crd(
                json!([{"type": "NamesAccepted", "status": "False", "reason": "MultipleNamesNotAllowed", "message": "\"w\" is already in use"}]),
            ),
            "MultipleNamesNotAllowed: \"w\" is already in use",
        ),
    ]);
}

#[test]
fn other_kinds() {
    let cr = |generation: i64, status: Value| {
        object("example.com/v1", "Widget", generation, json!({}), status)
    };
    check(&[
        (
            "config map",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
            "",
        ),
        ("no conditions", cr(1, json!({})), ""),
        (
            "ready",
            cr(
                1,
                json!({"conditions": [{"type": "Ready", "status": "True"}]}),
            ),
            "",
        ),
        (
            "other conditions only",
            cr(
                1,
                json!({"conditions": [{"type": "Synced", "status": "False"}]}),
            ),
            "",
        ),
        (
            "not ready with reason",
            cr(
                1,
                json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Provisioning", "message": "waiting for the database"}]}),
            ),
            "Provisioning: waiting for the database",
        ),
        (
            "not ready, no words",
            cr(
                1,
                json!({"conditions": [{"type": "Ready", "status": "Unknown"}]}),
            ),
            "Widget web: Ready is Unknown",
        ),
        (
            "stale status",
            cr(
                2,
                json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}),
            ),
            "Widget web: the controller has not observed generation 2 yet (observed 1)",
        ),
        (
            "stale condition",
            cr(
                2,
                json!({"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]}),
            ),
            "Widget web: the Ready condition is about generation 1, not 2",
        ),
    ]);
}
