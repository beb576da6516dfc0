//! The one place where wire types become domain types and back (`from_proto` / `to_proto`).

use flotilla_proto::agent::v1 as pb;

use super::renewal::Issued;
use crate::model::{
    ComparePatch, Deployment, DeploymentState, DeploymentStatus, HeldDeployment, ManifestRef,
    ObjectState, ObjectStatus, Removal,
};

pub(super) fn deployment_from_proto(d: pb::BundleDeployment) -> Deployment {
    Deployment {
        deployment_id: d.deployment_id,
        bundle: d.bundle,
        revision: d.revision,
        content_hash: d.content_hash,
        default_namespace: d.default_namespace,
        manifests: d
            .manifests
            .into_iter()
            .map(|m| ManifestRef {
                hash: m.hash,
                source: m.source,
            })
            .collect(),
        keep_resources: d.keep_resources,
        correct_drift: d.correct_drift,
        compare_patches: d
            .compare_patches
            .into_iter()
            .map(compare_patch_from_proto)
            .collect(),
    }
}

/// Keeps the paths of the `remove` operations: other operations say nothing about what is
/// drift. Operations that do not parse are dropped with a warning (the hub checked them).
fn compare_patch_from_proto(p: pb::ComparePatch) -> ComparePatch {
    let operations: Vec<serde_json::Value> = if p.operations_json.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&p.operations_json).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring unreadable comparePatches operations");
            Vec::new()
        })
    };
    let removed = operations
        .iter()
        .filter(|o| o.get("op").and_then(serde_json::Value::as_str) == Some("remove"))
        .filter_map(|o| o.get("path").and_then(serde_json::Value::as_str))
        .map(str::to_owned)
        .collect();
    ComparePatch {
        api_version: p.api_version,
        kind: p.kind,
        namespace: p.namespace,
        name: p.name,
        json_pointers: p.json_pointers,
        removed,
    }
}

pub(super) fn removal_from_proto(r: pb::Removal) -> Removal {
    Removal {
        deployment_id: r.deployment_id,
        keep_resources: r.keep_resources,
    }
}

pub(super) fn issued_from_proto(c: pb::CertificateIssued) -> Issued {
    // `not_after` is not taken on trust: the agent reads it from the certificate itself.
    Issued {
        cert_pem: c.certificate_pem,
        ca_pem: c.ca_bundle_pem,
        error: c.error,
    }
}

pub(super) fn held_to_proto(h: HeldDeployment) -> pb::HeldDeployment {
    pb::HeldDeployment {
        deployment_id: h.deployment_id,
        content_hash: h.content_hash,
    }
}

fn deployment_state_to_proto(s: DeploymentState) -> pb::DeploymentState {
    match s {
        DeploymentState::WaitApplied => pb::DeploymentState::WaitApplied,
        DeploymentState::ErrApplied => pb::DeploymentState::ErrApplied,
        DeploymentState::NotReady => pb::DeploymentState::NotReady,
        DeploymentState::Modified => pb::DeploymentState::Modified,
        DeploymentState::Missing => pb::DeploymentState::Missing,
        DeploymentState::Ready => pb::DeploymentState::Ready,
    }
}

fn object_state_to_proto(s: ObjectState) -> pb::ObjectState {
    match s {
        ObjectState::Failed => pb::ObjectState::Failed,
        ObjectState::Waiting => pb::ObjectState::Waiting,
        ObjectState::Ready => pb::ObjectState::Ready,
        ObjectState::NotReady => pb::ObjectState::NotReady,
        ObjectState::Modified => pb::ObjectState::Modified,
        ObjectState::Missing => pb::ObjectState::Missing,
    }
}

fn object_to_proto(o: ObjectStatus) -> pb::ObjectStatus {
    pb::ObjectStatus {
        api_version: o.object.api_version,
        kind: o.object.kind,
        namespace: o.object.namespace,
        name: o.object.name,
        state: object_state_to_proto(o.state).into(),
        message: o.message,
        source: o.source,
        modified_fields: o.modified_fields,
        drift_corrections: o.drift_corrections,
    }
}

pub(super) fn status_to_proto(s: DeploymentStatus) -> pb::DeploymentStatus {
    pb::DeploymentStatus {
        deployment_id: s.deployment_id,
        content_hash: s.content_hash,
        revision: s.revision,
        state: deployment_state_to_proto(s.state).into(),
        message: s.message,
        objects: s.objects.into_iter().map(object_to_proto).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectRef;

    #[test]
    fn statuses_map_to_the_wire_enums() {
        let s = DeploymentStatus {
            deployment_id: "d".into(),
            content_hash: "h".into(),
            revision: "r".into(),
            state: DeploymentState::ErrApplied,
            message: "m".into(),
            objects: vec![ObjectStatus {
                object: ObjectRef {
                    api_version: "v1".into(),
                    kind: "Secret".into(),
                    namespace: "n".into(),
                    name: "s".into(),
                },
                source: "a.yaml#0".into(),
                state: ObjectState::Modified,
                message: "no".into(),
                modified_fields: vec!["/data/x".into()],
                drift_corrections: 2,
            }],
        };
        let p = status_to_proto(s);
        assert_eq!(p.state(), pb::DeploymentState::ErrApplied);
        assert_eq!(p.objects[0].state(), pb::ObjectState::Modified);
        assert_eq!(
            (
                p.objects[0].modified_fields.as_slice(),
                p.objects[0].drift_corrections
            ),
            (["/data/x".to_string()].as_slice(), 2)
        );
        assert_eq!(
            (p.objects[0].kind.as_str(), p.objects[0].source.as_str()),
            ("Secret", "a.yaml#0")
        );
    }

    #[test]
    fn deployments_keep_manifest_order() {
        let d = deployment_from_proto(pb::BundleDeployment {
            deployment_id: "d".into(),
            bundle: "repo/app".into(),
            revision: "r".into(),
            content_hash: "h".into(),
            default_namespace: "ns".into(),
            manifests: vec![
                pb::ManifestRef {
                    hash: "2".into(),
                    source: "b#0".into(),
                },
                pb::ManifestRef {
                    hash: "1".into(),
                    source: "a#0".into(),
                },
            ],
            keep_resources: true,
            correct_drift: true,
            compare_patches: vec![pb::ComparePatch {
                kind: "Deployment".into(),
                json_pointers: vec!["/spec/replicas".into()],
                operations_json:
                    r#"[{"op":"remove","path":"/spec/paused"},{"op":"add","path":"/x","value":1}]"#
                        .into(),
                ..Default::default()
            }],
        });
        assert_eq!(
            d.compare_patches,
            [ComparePatch {
                kind: "Deployment".into(),
                json_pointers: vec!["/spec/replicas".into()],
                removed: vec!["/spec/paused".into()],
                ..ComparePatch::default()
            }]
        );
        assert_eq!(
            d.manifests
                .iter()
                .map(|m| m.hash.as_str())
                .collect::<Vec<_>>(),
            ["2", "1"]
        );
        assert_eq!(d.default_namespace, "ns");
        assert!(d.keep_resources && d.correct_drift);
        let d = deployment_from_proto(pb::BundleDeployment::default());
        assert!(!d.keep_resources && !d.correct_drift);
    }

    #[test]
    fn removals_carry_the_hubs_keep_flag() {
        for keep in [false, true] {
            let r = removal_from_proto(pb::Removal {
                deployment_id: "d".into(),
                keep_resources: keep,
            });
            assert_eq!(
                r,
                Removal {
                    deployment_id: "d".into(),
                    keep_resources: keep
                }
            );
        }
    }
}
