//! Validation of workloads and Services: pod specs and containers (names, images, ports,
//! requests within limits, volume mounts), selectors that must match template labels, and the
//! immutable fields (a Deployment's `spec.selector`, a Job's `spec.template`, a StatefulSet's
//! spec outside its updatable fields, a Service's cluster IPs).

use std::collections::HashSet;

use serde_json::Value;

use super::catalog::ResourceType;
use super::quantity;
use super::selector::LabelSelector;
use super::status::{FieldError, FieldErrorKind};
use super::validate::{LABEL_MSG, is_label_1123};

pub(crate) fn validate(
    rt: &ResourceType,
    obj: &Value,
    old: Option<&Value>,
    errs: &mut Vec<FieldError>,
) {
    let spec = &obj["spec"];
    let old_spec = old.map(|o| &o["spec"]);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => pod_spec(spec, "spec", &["Always", "OnFailure", "Never"], errs),
        ("", "Service") => service(spec, old_spec, errs),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            selector_and_template(rt, spec, errs);
            pod_spec(
                &spec["template"]["spec"],
                "spec.template.spec",
                &["Always"],
                errs,
            );
            if rt.kind == "Deployment" {
                deployment(spec, errs);
            }
            if let Some(old_spec) = old_spec {
                if old_spec["selector"] != spec["selector"] {
                    errs.push(FieldError::immutable("spec.selector", &spec["selector"]));
                }
                if rt.kind == "StatefulSet" {
                    stateful_set_update(spec, old_spec, errs);
                }
            }
        }
        ("batch", "Job") => {
            pod_spec(
                &spec["template"]["spec"],
                "spec.template.spec",
                &["OnFailure", "Never"],
                errs,
            );
            if let Some(old_spec) = old_spec {
                for f in ["selector", "template", "completions", "completionMode"] {
                    if old_spec[f] != spec[f] {
                        errs.push(FieldError::immutable(format!("spec.{f}"), &spec[f]));
                    }
                }
            }
        }
        ("batch", "CronJob") => {
            if spec["schedule"].as_str().is_none_or(str::is_empty) {
                errs.push(FieldError::required("spec.schedule", ""));
            }
            let path = "spec.jobTemplate.spec.template.spec";
            pod_spec(
                &spec["jobTemplate"]["spec"]["template"]["spec"],
                path,
                &["OnFailure", "Never"],
                errs,
            );
        }
        _ => {}
    }
}

fn selector_and_template(rt: &ResourceType, spec: &Value, errs: &mut Vec<FieldError>) {
    let selector = &spec["selector"];
    if !selector.is_object() {
        errs.push(FieldError::required("spec.selector", ""));
        return;
    }
    let empty = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.is_empty())
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(|a| a.is_empty());
    if empty {
        let detail = format!("empty selector is invalid for {}", rt.kind.to_lowercase());
        errs.push(FieldError::invalid("spec.selector", selector, detail));
        return;
    }
    let labels = &spec["template"]["metadata"]["labels"];
    let matches = LabelSelector::from_object(selector).is_ok_and(|s| s.matches(labels));
    if !matches {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        ));
    }
}

fn deployment(spec: &Value, errs: &mut Vec<FieldError>) {
    if spec["replicas"].as_i64().is_some_and(|r| r < 0) {
        errs.push(FieldError::invalid(
            "spec.replicas",
            &spec["replicas"],
            "must be greater than or equal to 0",
        ));
    }
    let strategy = &spec["strategy"];
    match strategy["type"].as_str() {
        Some("Recreate") if strategy.get("rollingUpdate").is_some_and(|r| !r.is_null()) => {
            errs.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
        Some("Recreate" | "RollingUpdate") | None => {}
        Some(_) => errs.push(FieldError::not_supported(
            "spec.strategy.type",
            &strategy["type"],
            &["Recreate", "RollingUpdate"],
        )),
    }
}

fn stateful_set_update(spec: &Value, old_spec: &Value, errs: &mut Vec<FieldError>) {
    let updatable = [
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ];
    let strip = |s: &Value| {
        let mut s = s.clone();
        if let Some(m) = s.as_object_mut() {
            for f in updatable {
                m.remove(f);
            }
        }
        s
    };
    if strip(spec) != strip(old_spec) {
        errs.push(FieldError::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
}

fn pod_spec(spec: &Value, path: &str, restart: &[&str], errs: &mut Vec<FieldError>) {
    let policy = &spec["restartPolicy"];
    if policy.as_str().is_some_and(|p| !restart.contains(&p)) {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            policy,
            restart,
        ));
    }
    let mut volumes = HashSet::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let name = v["name"].as_str().unwrap_or_default();
        if !is_label_1123(name) {
            errs.push(FieldError::invalid(
                format!("{path}.volumes[{i}].name"),
                &v["name"],
                LABEL_MSG,
            ));
        } else if !volumes.insert(name.to_string()) {
            errs.push(FieldError::new(
                FieldErrorKind::Duplicate,
                format!("{path}.volumes[{i}].name"),
                Some(v["name"].clone()),
                "",
            ));
        }
    }
    match spec["containers"].as_array() {
        Some(cs) if !cs.is_empty() => {}
        _ => errs.push(FieldError::required(format!("{path}.containers"), "")),
    }
    let mut names = HashSet::new();
    for list in ["containers", "initContainers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            let name = c["name"].as_str().unwrap_or_default();
            if name.is_empty() {
                errs.push(FieldError::required(format!("{at}.name"), ""));
            } else if !is_label_1123(name) {
                errs.push(FieldError::invalid(
                    format!("{at}.name"),
                    &c["name"],
                    LABEL_MSG,
                ));
            } else if !names.insert(name.to_string()) {
                errs.push(FieldError::new(
                    FieldErrorKind::Duplicate,
                    format!("{at}.name"),
                    Some(c["name"].clone()),
                    "",
                ));
            }
            container(c, &at, &volumes, errs);
        }
    }
}

fn container(c: &Value, at: &str, volumes: &HashSet<String>, errs: &mut Vec<FieldError>) {
    if c["image"].as_str().is_none_or(|i| i.trim().is_empty()) {
        errs.push(FieldError::required(format!("{at}.image"), ""));
    }
    let policies = ["Always", "IfNotPresent", "Never"];
    let pull = &c["imagePullPolicy"];
    if pull.as_str().is_some_and(|p| !policies.contains(&p)) {
        errs.push(FieldError::not_supported(
            format!("{at}.imagePullPolicy"),
            pull,
            &policies,
        ));
    }
    for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
        if e["name"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{at}.env[{j}].name"), ""));
        }
    }
    container_ports(c, at, errs);
    volume_mounts(c, at, volumes, errs);
    requests_within_limits(c, at, errs);
}

fn container_ports(c: &Value, at: &str, errs: &mut Vec<FieldError>) {
    for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
        let port = &p["containerPort"];
        if !port.as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
            let field = format!("{at}.ports[{j}].containerPort");
            errs.push(FieldError::invalid(
                field,
                port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        let proto = &p["protocol"];
        if proto
            .as_str()
            .is_some_and(|s| !["TCP", "UDP", "SCTP"].contains(&s))
        {
            let field = format!("{at}.ports[{j}].protocol");
            errs.push(FieldError::not_supported(
                field,
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
}

fn volume_mounts(c: &Value, at: &str, volumes: &HashSet<String>, errs: &mut Vec<FieldError>) {
    for (j, m) in c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = m["name"].as_str().unwrap_or_default();
        if !volumes.contains(name) {
            let field = format!("{at}.volumeMounts[{j}].name");
            errs.push(FieldError::new(
                FieldErrorKind::NotFound,
                field,
                Some(m["name"].clone()),
                "",
            ));
        }
        if m["mountPath"].as_str().is_none_or(str::is_empty) {
            errs.push(FieldError::required(
                format!("{at}.volumeMounts[{j}].mountPath"),
                "",
            ));
        }
    }
}

fn requests_within_limits(c: &Value, at: &str, errs: &mut Vec<FieldError>) {
    let (requests, limits) = (&c["resources"]["requests"], &c["resources"]["limits"]);
    let (Some(req), Some(lim)) = (requests.as_object(), limits.as_object()) else {
        return;
    };
    for (res, r) in req {
        let (Some(rn), Some(ln)) = (quantity::nanos(r), lim.get(res).and_then(quantity::nanos))
        else {
            continue;
        };
        if rn > ln {
            let limit = lim[res].as_str().unwrap_or_default();
            let detail = format!("must be less than or equal to {res} limit of {limit}");
            errs.push(FieldError::invalid(
                format!("{at}.resources.requests"),
                r,
                detail,
            ));
        }
    }
}

fn service(spec: &Value, old_spec: Option<&Value>, errs: &mut Vec<FieldError>) {
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty) {
        errs.push(FieldError::not_supported(
            "spec.type",
            &spec["type"],
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    let headless = spec["clusterIP"] == "None";
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if ty == "ExternalName" && spec["externalName"].as_str().is_none_or(str::is_empty) {
        errs.push(FieldError::required("spec.externalName", ""));
    }
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let name = p["name"].as_str().unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("spec.ports[{i}].name"), ""));
        } else if !name.is_empty() && !names.insert(name.to_string()) {
            errs.push(FieldError::new(
                FieldErrorKind::Duplicate,
                format!("spec.ports[{i}].name"),
                Some(p["name"].clone()),
                "",
            ));
        }
        if !p["port"].as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
            errs.push(FieldError::invalid(
                format!("spec.ports[{i}].port"),
                &p["port"],
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    let first_ip = spec["clusterIPs"].get(0);
    if ty != "ExternalName" && spec["clusterIP"].is_string() && first_ip != Some(&spec["clusterIP"])
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &spec["clusterIPs"],
            "must match `clusterIP` if specified",
        ));
    }
    let Some(old_spec) = old_spec else { return };
    let was_external = old_spec["type"] == "ExternalName";
    if !was_external && ty != "ExternalName" && old_spec["clusterIPs"] != spec["clusterIPs"] {
        errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &spec["clusterIPs"],
            "may not change once set",
        ));
    }
}
