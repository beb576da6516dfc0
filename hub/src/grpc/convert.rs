//! The one place that converts between domain types and protobuf messages.

use flotilla_proto::admin::v1 as admin;
use flotilla_proto::agent::v1 as wire;

use crate::fleet::{ClusterView, DeploymentView};
use crate::model::{
    Bundle, BundleContent, BundleId, ContentHash, DeploymentState, GitRepo, ObjectState,
    ObjectStatus, RegistrationToken, ReportedStatus, unix_now,
};
use crate::pki::{CaInfo, CaRole};

pub fn deployment(id: &BundleId, c: &BundleContent) -> wire::BundleDeployment {
    wire::BundleDeployment {
        deployment_id: id.0.clone(),
        bundle: id.0.clone(),
        revision: c.revision.clone(),
        content_hash: c.content_hash.0.clone(),
        default_namespace: c.default_namespace.clone(),
        manifests: c
            .manifests
            .iter()
            .map(|m| wire::ManifestRef {
                hash: m.hash.0.clone(),
                source: m.source.clone(),
            })
            .collect(),
        keep_resources: c.keep_resources,
        correct_drift: c.correct_drift,
        compare_patches: c
            .compare_patches
            .iter()
            .map(|p| wire::ComparePatch {
                api_version: p.api_version.clone(),
                kind: p.kind.clone(),
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                json_pointers: p.json_pointers.clone(),
                operations_json: p.operations_json.clone(),
            })
            .collect(),
    }
}

pub fn state_to_wire(s: DeploymentState) -> wire::DeploymentState {
    use wire::DeploymentState as W;
    match s {
        DeploymentState::Pending => W::Pending,
        DeploymentState::WaitApplied => W::WaitApplied,
        DeploymentState::ErrApplied => W::ErrApplied,
        DeploymentState::NotReady => W::NotReady,
        DeploymentState::Ready => W::Ready,
        DeploymentState::Modified => W::Modified,
        DeploymentState::OutOfSync => W::OutOfSync,
        DeploymentState::Missing => W::Missing,
    }
}

/// The domain state of a wire state; None for UNSPECIFIED or a value this hub does not know.
pub fn state_from_wire(v: i32) -> Option<DeploymentState> {
    use wire::DeploymentState as W;
    Some(match W::try_from(v).ok()? {
        W::Unspecified => return None,
        W::Pending => DeploymentState::Pending,
        W::WaitApplied => DeploymentState::WaitApplied,
        W::ErrApplied => DeploymentState::ErrApplied,
        W::NotReady => DeploymentState::NotReady,
        W::Ready => DeploymentState::Ready,
        W::Modified => DeploymentState::Modified,
        W::OutOfSync => DeploymentState::OutOfSync,
        W::Missing => DeploymentState::Missing,
    })
}

fn object_state_from_wire(v: i32) -> ObjectState {
    use wire::ObjectState as W;
    match W::try_from(v).unwrap_or(W::Unspecified) {
        W::Applied => ObjectState::Applied,
        W::Ready => ObjectState::Ready,
        W::NotReady => ObjectState::NotReady,
        W::Waiting => ObjectState::Waiting,
        W::Modified => ObjectState::Modified,
        W::Missing => ObjectState::Missing,
        W::Failed | W::Unspecified => ObjectState::Failed,
    }
}

fn object_state_to_wire(s: ObjectState) -> wire::ObjectState {
    use wire::ObjectState as W;
    match s {
        ObjectState::Applied => W::Applied,
        ObjectState::Failed => W::Failed,
        ObjectState::Waiting => W::Waiting,
        ObjectState::Modified => W::Modified,
        ObjectState::Missing => W::Missing,
        ObjectState::Ready => W::Ready,
        ObjectState::NotReady => W::NotReady,
    }
}

/// A reported deployment status; None when its state is not one this hub knows.
pub fn reported(s: wire::DeploymentStatus) -> Option<(BundleId, ReportedStatus)> {
    let state = state_from_wire(s.state)?;
    let objects = s.objects.into_iter().map(object_from_wire).collect();
    Some((
        BundleId(s.deployment_id),
        ReportedStatus {
            content_hash: ContentHash(s.content_hash),
            revision: s.revision,
            state,
            message: s.message,
            objects,
            updated_at: unix_now(),
        },
    ))
}

fn object_from_wire(o: wire::ObjectStatus) -> ObjectStatus {
    ObjectStatus {
        api_version: o.api_version,
        kind: o.kind,
        namespace: o.namespace,
        name: o.name,
        state: object_state_from_wire(o.state),
        message: o.message,
        source: o.source,
        modified_fields: o.modified_fields,
        drift_corrections: o.drift_corrections,
    }
}

fn object_to_wire(o: &ObjectStatus) -> wire::ObjectStatus {
    wire::ObjectStatus {
        api_version: o.api_version.clone(),
        kind: o.kind.clone(),
        namespace: o.namespace.clone(),
        name: o.name.clone(),
        state: object_state_to_wire(o.state) as i32,
        message: o.message.clone(),
        source: o.source.clone(),
        modified_fields: o.modified_fields.clone(),
        drift_corrections: o.drift_corrections,
    }
}

pub fn cluster(v: &ClusterView) -> admin::Cluster {
    admin::Cluster {
        id: v.cluster.id.to_string(),
        name: v.cluster.name.clone(),
        labels: v.cluster.labels.clone().into_iter().collect(),
        connected: v.presence.connected,
        last_seen: v.presence.last_seen,
        agent_version: v.cluster.agent_version.clone(),
        kubernetes_version: v.cluster.kubernetes_version.clone(),
        registered_at: v.cluster.registered_at,
        certificate_expires: v.cluster.certificate.not_after,
        token_id: v.cluster.token_id.clone(),
    }
}

pub fn token(t: &RegistrationToken) -> admin::Token {
    admin::Token {
        id: t.id.clone(),
        description: t.description.clone(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        max_uses: t.max_uses,
        uses: t.uses,
        labels: t.labels.clone().into_iter().collect(),
        group: t.group.clone().unwrap_or_default(),
        revoked_at: t.revoked_at.unwrap_or_default(),
    }
}

pub fn ca((info, role): &(CaInfo, CaRole)) -> admin::CaCertificate {
    let (role, serving) = match role {
        CaRole::Active => ("active", false),
        CaRole::ActiveServing => ("active", true),
        CaRole::Previous => ("previous", false),
        CaRole::PreviousServing => ("previous", true),
    };
    admin::CaCertificate {
        fingerprint: info.fingerprint.clone(),
        subject: info.subject.clone(),
        not_before: info.not_before,
        not_after: info.not_after,
        role: role.to_string(),
        serving,
    }
}

pub fn gitrepo(r: &GitRepo) -> admin::GitRepo {
    admin::GitRepo {
        name: r.spec.name.clone(),
        url: crate::model::redact_url(&r.spec.url),
        branch: r.spec.branch.clone(),
        paths: r.spec.paths.clone(),
        poll_interval_seconds: r.spec.poll_interval_secs,
        commit: r.status.commit.clone().unwrap_or_default(),
        error: r.status.error.clone().unwrap_or_default(),
        last_fetch: r.status.last_fetch,
    }
}

pub fn bundle(b: &Bundle) -> admin::Bundle {
    admin::Bundle {
        id: b.id.0.clone(),
        gitrepo: b.repo.clone(),
        path: b.path.clone(),
        revision: b
            .content
            .as_ref()
            .map(|c| c.revision.clone())
            .unwrap_or_default(),
        content_hash: b
            .content
            .as_ref()
            .map(|c| c.content_hash.0.clone())
            .unwrap_or_default(),
        manifests: b
            .content
            .as_ref()
            .map(|c| c.manifests.len() as u32)
            .unwrap_or_default(),
        error: b.error.clone().unwrap_or_default(),
    }
}

pub fn deployment_status(d: &DeploymentView) -> admin::DeploymentStatus {
    admin::DeploymentStatus {
        cluster_id: d.cluster.to_string(),
        cluster_name: d.cluster_name.clone(),
        bundle: d.bundle.0.clone(),
        desired_revision: d.desired_revision.clone(),
        reported_revision: d
            .reported
            .as_ref()
            .map(|r| r.revision.clone())
            .unwrap_or_default(),
        state: state_to_wire(d.state) as i32,
        message: d.message.clone(),
        environment: d.environment.clone(),
        objects: d
            .reported
            .iter()
            .flat_map(|r| r.objects.iter().map(object_to_wire))
            .collect(),
        updated_at: d
            .reported
            .as_ref()
            .map(|r| r.updated_at)
            .unwrap_or_default(),
    }
}
