//! Defaulting and normalization, as the real API server does it on every write: the fields a
//! Deployment, pod template, container, Service, Secret, Namespace and CRD get when they are left
//! out, and canonical quantities. Drift detection is tested against these, so the values follow
//! the Kubernetes defaulting functions (`SetDefaults_*`) for v1.33.

use base64::Engine as _;
use serde_json::{Value, json};

use super::catalog::ResourceType;
use super::quantity::{QUANTITY_ERROR, canonicalize_map};
use super::status::ApiError;
use super::store::{Allocators, meta_str};

/// Sets `obj[key] = value` when the key is absent or null.
fn default(obj: &mut Value, key: &str, value: Value) {
    if let Value::Object(m) = obj
        && m.get(key).is_none_or(Value::is_null)
    {
        m.insert(key.to_string(), value);
    }
}

fn object_at<'a>(obj: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    obj.pointer_mut(pointer).filter(|v| v.is_object())
}

/// Defaults and normalizes `obj` (of type `rt`) in place; `old` is the live object on updates.
pub(crate) fn apply(
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
    alloc: &mut Allocators,
) -> Result<(), ApiError> {
    let name = meta_str(obj, "name").to_string();
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Secret") => secret(obj)?,
        ("", "Service") => service(obj, old, alloc),
        ("", "Namespace") => {
            if let Some(spec) = ensure_object(obj, "spec") {
                default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(labels) =
                ensure_object(obj, "metadata").and_then(|m| ensure_object(m, "labels"))
            {
                labels["kubernetes.io/metadata.name"] = json!(name);
            }
        }
        ("", "Pod") => pod_spec(obj.get_mut("spec"))?,
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = object_at(obj, "/spec") {
                default(spec, "volumeMode", json!("Filesystem"));
            }
            quantities(obj.pointer_mut("/spec/resources/requests"))?;
            quantities(obj.pointer_mut("/spec/resources/limits"))?;
        }
        ("apps", "Deployment") => deployment(obj)?,
        ("apps", "StatefulSet") => stateful_set(obj)?,
        ("apps", "DaemonSet") => {
            if let Some(spec) = object_at(obj, "/spec") {
                default(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
                if spec["updateStrategy"]["type"] == "RollingUpdate" {
                    default(
                        &mut spec["updateStrategy"],
                        "rollingUpdate",
                        json!({"maxUnavailable": 1, "maxSurge": 0}),
                    );
                }
                default(spec, "revisionHistoryLimit", json!(10));
            }
            pod_spec(obj.pointer_mut("/spec/template/spec"))?;
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = object_at(obj, "/spec") {
                default(spec, "replicas", json!(1));
            }
            pod_spec(obj.pointer_mut("/spec/template/spec"))?;
        }
        ("batch", "Job") => job(obj, old.is_none())?,
        ("batch", "CronJob") => {
            if let Some(spec) = object_at(obj, "/spec") {
                default(spec, "concurrencyPolicy", json!("Allow"));
                default(spec, "suspend", json!(false));
                default(spec, "successfulJobsHistoryLimit", json!(3));
                default(spec, "failedJobsHistoryLimit", json!(1));
            }
            job_spec(obj.pointer_mut("/spec/jobTemplate/spec"));
            pod_spec(obj.pointer_mut("/spec/jobTemplate/spec/template/spec"))?;
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        _ => {}
    }
    Ok(())
}

fn ensure_object<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    default(obj, key, json!({}));
    obj.get_mut(key).filter(|v| v.is_object())
}

fn quantities(map: Option<&mut Value>) -> Result<(), ApiError> {
    canonicalize_map(map).map_err(|_| ApiError::bad_request(QUANTITY_ERROR))
}

fn secret(obj: &mut Value) -> Result<(), ApiError> {
    default(obj, "type", json!("Opaque"));
    let Some(Value::Object(string_data)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return Ok(());
    };
    let data = ensure_object(obj, "data")
        .ok_or_else(|| ApiError::bad_request("data must be an object"))?;
    for (k, v) in string_data {
        let text = v.as_str().unwrap_or_default();
        data[k] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
    Ok(())
}

fn service(obj: &mut Value, old: Option<&Value>, alloc: &mut Allocators) {
    let Some(spec) = object_at(obj, "/spec") else {
        return;
    };
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter(|p| p.is_object()) {
            default(p, "protocol", json!("TCP"));
            let port = p["port"].clone();
            default(p, "targetPort", port);
        }
    }
    if ty == "ExternalName" {
        return;
    }
    let old_spec = old.map(|o| &o["spec"]);
    if spec
        .get("clusterIP")
        .is_none_or(|ip| ip.is_null() || ip == "")
    {
        match old_spec
            .and_then(|o| o.get("clusterIP"))
            .filter(|v| v.is_string())
        {
            Some(ip) => {
                spec["clusterIP"] = ip.clone();
                default(
                    spec,
                    "clusterIPs",
                    old_spec
                        .map(|o| o["clusterIPs"].clone())
                        .unwrap_or(Value::Null),
                );
            }
            None => spec["clusterIP"] = json!(alloc.cluster_ip(false).unwrap_or_default()),
        }
    }
    let ip = spec["clusterIP"].clone();
    default(spec, "clusterIPs", json!([ip]));
    default(spec, "ipFamilies", json!(["IPv4"]));
    default(spec, "ipFamilyPolicy", json!("SingleStack"));
    default(spec, "internalTrafficPolicy", json!("Cluster"));
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
        let old_ports = old_spec
            .and_then(|o| o["ports"].as_array())
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Array(ports)) = spec.get_mut("ports") {
            for p in ports.iter_mut().filter(|p| p.is_object()) {
                let kept = old_ports
                    .iter()
                    .find(|o| o["port"] == p["port"])
                    .map(|o| o["nodePort"].clone());
                let port = kept
                    .filter(|v| v.is_u64())
                    .unwrap_or_else(|| json!(alloc.node_port(false)));
                default(p, "nodePort", port);
            }
        }
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

fn deployment(obj: &mut Value) -> Result<(), ApiError> {
    if let Some(spec) = object_at(obj, "/spec") {
        default(spec, "replicas", json!(1));
        default(spec, "strategy", json!({"type": "RollingUpdate"}));
        if spec["strategy"]["type"] == "RollingUpdate" {
            default(
                &mut spec["strategy"],
                "rollingUpdate",
                json!({"maxUnavailable": "25%", "maxSurge": "25%"}),
            );
        }
        default(spec, "revisionHistoryLimit", json!(10));
        default(spec, "progressDeadlineSeconds", json!(600));
    }
    pod_spec(obj.pointer_mut("/spec/template/spec"))
}

fn stateful_set(obj: &mut Value) -> Result<(), ApiError> {
    if let Some(spec) = object_at(obj, "/spec") {
        default(spec, "replicas", json!(1));
        default(spec, "podManagementPolicy", json!("OrderedReady"));
        default(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
        if spec["updateStrategy"]["type"] == "RollingUpdate" {
            default(
                &mut spec["updateStrategy"],
                "rollingUpdate",
                json!({"partition": 0}),
            );
        }
        default(spec, "revisionHistoryLimit", json!(10));
        default(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
        if let Some(Value::Array(claims)) = spec.get_mut("volumeClaimTemplates") {
            for c in claims.iter_mut() {
                if let Some(cs) = object_at(c, "/spec") {
                    default(cs, "volumeMode", json!("Filesystem"));
                }
                quantities(c.pointer_mut("/spec/resources/requests"))?;
            }
        }
    }
    pod_spec(obj.pointer_mut("/spec/template/spec"))
}

fn job_spec(spec: Option<&mut Value>) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        return;
    };
    default(spec, "parallelism", json!(1));
    default(spec, "completions", json!(1));
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
}

/// Job defaults, and on create the generated selector and template labels tied to the Job's uid.
fn job(obj: &mut Value, creating: bool) -> Result<(), ApiError> {
    job_spec(obj.get_mut("spec"));
    let (uid, name) = (
        meta_str(obj, "uid").to_string(),
        meta_str(obj, "name").to_string(),
    );
    let manual = obj.pointer("/spec/manualSelector") == Some(&json!(true));
    if creating
        && !manual
        && let Some(spec) = object_at(obj, "/spec")
    {
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let template = ensure_object(spec, "template")
            .ok_or_else(|| ApiError::bad_request("spec.template must be an object"))?;
        let meta = ensure_object(template, "metadata")
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        if let Some(labels) = ensure_object(meta, "labels") {
            labels["batch.kubernetes.io/controller-uid"] = json!(uid);
            labels["batch.kubernetes.io/job-name"] = json!(name);
            labels["controller-uid"] = json!(uid);
            labels["job-name"] = json!(name);
        }
    }
    pod_spec(obj.pointer_mut("/spec/template/spec"))
}

/// PodSpec defaults, shared by pods and every pod template.
fn pod_spec(spec: Option<&mut Value>) -> Result<(), ApiError> {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        return Ok(());
    };
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers.iter_mut().filter(|c| c.is_object()) {
                container(c)?;
            }
        }
    }
    if let Some(Value::Array(volumes)) = spec.get_mut("volumes") {
        for v in volumes.iter_mut() {
            for source in ["configMap", "secret", "projected", "downwardAPI"] {
                if let Some(s) = object_at(v, &format!("/{source}")) {
                    default(s, "defaultMode", json!(420));
                }
            }
        }
    }
    Ok(())
}

fn container(c: &mut Value) -> Result<(), ApiError> {
    let policy = image_pull_policy(c["image"].as_str().unwrap_or_default());
    default(c, "imagePullPolicy", json!(policy));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut() {
            default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = object_at(c, &format!("/{probe}")) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
            if let Some(h) = object_at(p, "/httpGet") {
                default(h, "scheme", json!("HTTP"));
            }
        }
    }
    quantities(c.pointer_mut("/resources/limits"))?;
    quantities(c.pointer_mut("/resources/requests"))
}

/// `Always` for `:latest` or an untagged image, else `IfNotPresent`.
pub(crate) fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn crd(obj: &mut Value) {
    let Some(spec) = object_at(obj, "/spec") else {
        return;
    };
    default(spec, "conversion", json!({"strategy": "None"}));
    let Some(names) = object_at(spec, "/names") else {
        return;
    };
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    default(names, "singular", json!(kind.to_lowercase()));
    default(names, "listKind", json!(format!("{kind}List")));
}
