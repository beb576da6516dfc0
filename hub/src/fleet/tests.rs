//! The fleet index against a real temporary store.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::model::{ContentHash, ManifestRef};

fn cluster(name: &str) -> Cluster {
    Cluster {
        id: ClusterId::new(),
        name: name.into(),
        labels: BTreeMap::new(),
        registered_at: 0,
        agent_version: String::new(),
        kubernetes_version: String::new(),
        token_id: String::new(),
        certificate: Default::default(),
    }
}

fn bundle(repo: &str, path: &str, rev: &str, body: &str) -> Bundle {
    let hash = ContentHash::of(body.as_bytes());
    Bundle {
        id: BundleId::new(repo, path),
        repo: repo.into(),
        path: path.into(),
        tree_id: hash.0.clone(),
        content: Some(Arc::new(BundleContent {
            content_hash: hash.clone(),
            revision: rev.into(),
            default_namespace: "default".into(),
            manifests: vec![ManifestRef {
                hash,
                source: format!("{path}/a.yaml#1"),
            }],
            keep_resources: false,
            correct_drift: false,
        })),
        error: None,
    }
}

fn report(content: &BundleContent, state: DeploymentState) -> ReportedStatus {
    ReportedStatus {
        content_hash: content.content_hash.clone(),
        revision: content.revision.clone(),
        state,
        message: String::new(),
        objects: vec![],
        updated_at: 0,
    }
}

fn fleet() -> (tempfile::TempDir, Arc<Fleet>) {
    let dir = tempfile::tempdir().unwrap();
    let f = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
    (dir, f)
}

#[tokio::test]
async fn a_new_revision_reaches_connected_clusters_and_only_changes_notify() {
    let (_dir, f) = fleet();
    let east = cluster("east");
    f.add_cluster(east.clone()).unwrap();
    let session = f.connect(east.id).unwrap();
    session.changed.notified().await; // the initial sync

    f.set_repo_bundles("r", vec![bundle("r", "app", "c1", "v1")])
        .unwrap();
    session.changed.notified().await;
    assert_eq!(f.desired(east.id)[0].1.revision, "c1");

    // The same content at a new commit is not a change for the clusters.
    f.set_repo_bundles("r", vec![bundle("r", "app", "c2", "v1")])
        .unwrap();
    assert_eq!(f.desired(east.id)[0].1.revision, "c1");

    f.set_repo_bundles("r", vec![]).unwrap();
    session.changed.notified().await;
    assert!(f.desired(east.id).is_empty());
}

#[test]
fn states_come_from_reports_for_the_desired_content() {
    let (_dir, f) = fleet();
    let east = cluster("east");
    f.add_cluster(east.clone()).unwrap();
    let b1 = bundle("r", "app", "c1", "v1");
    let c1 = b1.content.clone().unwrap();
    f.set_repo_bundles("r", vec![b1]).unwrap();
    assert_eq!(f.deployments()[0].state, DeploymentState::Pending);

    assert!(
        f.record_status(
            east.id,
            &BundleId::new("r", "app"),
            report(&c1, DeploymentState::Ready)
        )
        .unwrap()
    );
    assert_eq!(f.deployments()[0].state, DeploymentState::Ready);

    f.set_repo_bundles("r", vec![bundle("r", "app", "c2", "v2")])
        .unwrap();
    let row = &f.deployments()[0];
    assert_eq!(row.state, DeploymentState::OutOfSync);
    assert!(row.message.contains("c1"), "{}", row.message);

    // A report about a bundle this cluster does not run is refused.
    assert!(
        !f.record_status(
            east.id,
            &BundleId::new("r", "other"),
            report(&c1, DeploymentState::Ready)
        )
        .unwrap()
    );
}

#[test]
fn everything_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let east = cluster("east");
    {
        let f = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
        f.add_cluster(east.clone()).unwrap();
        let b = bundle("r", "app", "c1", "v1");
        let c = b.content.clone().unwrap();
        f.set_repo_bundles("r", vec![b]).unwrap();
        f.record_status(
            east.id,
            &BundleId::new("r", "app"),
            report(&c, DeploymentState::Ready),
        )
        .unwrap();
    }
    let f = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
    assert_eq!(f.cluster_by_name("east"), Some(east.id));
    assert_eq!(f.deployments()[0].state, DeploymentState::Ready);
}

#[test]
fn a_newer_stream_cancels_the_older_and_presence_follows_the_newest() {
    let (_dir, f) = fleet();
    let east = cluster("east");
    f.add_cluster(east.clone()).unwrap();
    let first = f.connect(east.id).unwrap();
    let second = f.connect(east.id).unwrap();
    assert!(first.cancelled.is_cancelled());
    drop(first);
    assert!(
        f.clusters()[0].presence.connected,
        "the newer stream still holds the cluster"
    );
    drop(second);
    assert!(!f.clusters()[0].presence.connected);
}

#[test]
fn a_taken_name_is_refused_atomically() {
    let (_dir, f) = fleet();
    assert!(f.add_cluster(cluster("east")).unwrap());
    assert!(!f.add_cluster(cluster("east")).unwrap());
    assert_eq!(f.clusters().len(), 1);
}

#[tokio::test]
async fn a_stream_is_told_only_the_bundles_that_changed() {
    let (_dir, f) = fleet();
    let east = cluster("east");
    f.add_cluster(east.clone()).unwrap();
    f.set_repo_bundles(
        "r",
        vec![bundle("r", "a", "c1", "a1"), bundle("r", "b", "c1", "b1")],
    )
    .unwrap();
    let session = f.connect(east.id).unwrap();
    assert_eq!(f.full_sync(east.id).len(), 2);
    assert!(
        f.take_changes(&session).is_empty(),
        "a full sync covers what was pending"
    );

    f.set_repo_bundles(
        "r",
        vec![bundle("r", "a", "c2", "a2"), bundle("r", "b", "c2", "b1")],
    )
    .unwrap();
    let changes = f.take_changes(&session);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].0, BundleId::new("r", "a"));
    assert_eq!(changes[0].1.as_ref().unwrap().revision, "c2");

    f.set_repo_bundles("r", vec![bundle("r", "a", "c2", "a2")])
        .unwrap();
    let newer = f.connect(east.id).unwrap();
    assert!(
        f.take_changes(&session).is_empty(),
        "a replaced stream takes nothing"
    );
    let changes = f.take_changes(&newer);
    assert_eq!(changes, vec![(BundleId::new("r", "b"), None)]);
}
