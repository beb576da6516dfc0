//! The fleet index against a real temporary store.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::model::{ContentHash, ManifestRef};
use crate::target::ClusterGroup;

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
        env: String::new(),
        path: path.into(),
        commit: rev.into(),
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
            compare_patches: vec![],
        })),
        error: None,
        customizations: vec![],
        override_targets: vec![],
        depends_on: vec![],
        labels: BTreeMap::new(),
        warnings: vec![],
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

fn spec(name: &str) -> GitRepoSpec {
    GitRepoSpec {
        name: name.into(),
        url: "https://git.example/r.git".into(),
        branch: "main".into(),
        revision: None,
        paths: vec![],
        poll_interval_secs: 15,
        disable_polling: false,
        labels: BTreeMap::new(),
        targets: vec![],
        environments: vec![],
        correct_drift: false,
        keep_resources: false,
        paused: false,
        credentials: None,
    }
}

/// A fleet whose GitRepo `r` targets every cluster (no targets).
fn fleet() -> (tempfile::TempDir, Arc<Fleet>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .put_repo(&crate::model::GitRepo {
            spec: spec("r"),
            status: Default::default(),
        })
        .unwrap();
    let f = Fleet::load(store).unwrap();
    (dir, f)
}

/// The fleet in `dir`, with GitRepo `r` stored (so that it is there after a reload) and
/// targeted.
fn load_with_repo(dir: &std::path::Path) -> Arc<Fleet> {
    let f = Fleet::load(Store::open(dir).unwrap()).unwrap();
    f.store()
        .put_repo(&crate::model::GitRepo {
            spec: spec("r"),
            status: Default::default(),
        })
        .unwrap();
    f.set_repo(spec("r")).unwrap();
    f
}

#[tokio::test]
async fn a_new_revision_reaches_connected_clusters_and_only_changes_notify() {
    let (_dir, f) = fleet();
    let east = cluster("east");
    f.add_cluster(east.clone()).unwrap();
    let session = f.connect(east.id).unwrap();
    session.changed.notified().await; // the initial sync

    f.set_repo_bundles("r", "", vec![bundle("r", "app", "c1", "v1")])
        .unwrap();
    session.changed.notified().await;
    assert_eq!(f.desired(east.id)[0].1.revision, "c1");

    // The same content at a new commit is not a change for the clusters.
    f.set_repo_bundles("r", "", vec![bundle("r", "app", "c2", "v1")])
        .unwrap();
    assert_eq!(f.desired(east.id)[0].1.revision, "c1");

    f.set_repo_bundles("r", "", vec![]).unwrap();
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
    f.set_repo_bundles("r", "", vec![b1]).unwrap();
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

    f.set_repo_bundles("r", "", vec![bundle("r", "app", "c2", "v2")])
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
        let f = load_with_repo(dir.path());
        f.add_cluster(east.clone()).unwrap();
        let b = bundle("r", "app", "c1", "v1");
        let c = b.content.clone().unwrap();
        f.set_repo_bundles("r", "", vec![b]).unwrap();
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
        "",
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
        "",
        vec![bundle("r", "a", "c2", "a2"), bundle("r", "b", "c2", "b1")],
    )
    .unwrap();
    let changes = f.take_changes(&session);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].0, BundleId::new("r", "a"));
    assert_eq!(changes[0].1.as_ref().unwrap().revision, "c2");

    f.set_repo_bundles("r", "", vec![bundle("r", "a", "c2", "a2")])
        .unwrap();
    let newer = f.connect(east.id).unwrap();
    assert!(
        f.take_changes(&session).is_empty(),
        "a replaced stream takes nothing"
    );
    let changes = f.take_changes(&newer);
    assert_eq!(changes, vec![(BundleId::new("r", "b"), None)]);
}

fn labelled(name: &str, pairs: &[(&str, &str)]) -> Cluster {
    let mut c = cluster(name);
    c.labels = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    c
}

fn selector(yaml: &str) -> crate::target::LabelSelector {
    serde_saphyr::from_str(yaml).unwrap()
}

fn target(yaml: &str) -> crate::target::ClusterTarget {
    serde_saphyr::from_str(yaml).unwrap()
}

/// Bundle ids `cluster` should run, with the revision of each.
fn runs(f: &Fleet, c: &Cluster) -> Vec<(String, String)> {
    f.desired(c.id)
        .into_iter()
        .map(|(b, content)| (b.0, content.revision.clone()))
        .collect()
}

fn env_bundle(repo: &str, env: &str, path: &str, rev: &str) -> Bundle {
    let mut b = bundle(repo, path, rev, &format!("{env}:{rev}"));
    b.env = env.into();
    b
}

#[test]
fn targets_labels_and_groups_decide_who_gets_a_repository() {
    let (_dir, f) = fleet();
    let mut web = spec("web");
    web.targets = vec![
        target("clusterSelector: {matchLabels: {env: prod}}"),
        target("clusterGroup: edge"),
    ];
    f.set_repo(web).unwrap();
    f.set_repo_bundles("web", "", vec![bundle("web", "app", "c1", "w1")])
        .unwrap();
    let prod = labelled("prod-1", &[("env", "prod")]);
    let dev = labelled("dev-1", &[("env", "dev")]);
    let store = labelled("store-1", &[("site", "store")]);
    for c in [&prod, &dev, &store] {
        f.add_cluster(c.clone()).unwrap();
    }
    let has_web = |c: &Cluster| runs(&f, c).iter().any(|(b, _)| b == "web/app");
    assert!(has_web(&prod) && !has_web(&dev) && !has_web(&store));

    // A group's selector now takes in the store cluster: only it is re-targeted.
    f.set_group(ClusterGroup {
        name: "edge".into(),
        labels: BTreeMap::new(),
        selector: Some(selector("matchLabels: {site: store}")),
    })
    .unwrap();
    assert!(has_web(&store));
    // Relabelling dev to prod brings it in; relabelling prod away prunes it.
    f.set_cluster_labels("dev-1", [("env".to_string(), "prod".to_string())].into())
        .unwrap();
    f.set_cluster_labels("prod-1", BTreeMap::new()).unwrap();
    assert!(has_web(&dev) && !has_web(&prod));
    // Deleting the group takes the store cluster out again.
    assert!(f.delete_group("edge").unwrap());
    assert!(!has_web(&store));
    // The untargeted GitRepo `r` still reaches every cluster.
    f.set_repo_bundles("r", "", vec![bundle("r", "base", "c1", "b1")])
        .unwrap();
    for c in [&prod, &dev, &store] {
        assert!(runs(&f, c).iter().any(|(b, _)| b == "r/base"), "{}", c.name);
    }
}

#[tokio::test]
async fn a_relabelled_cluster_moves_between_environments_keeping_its_deployment() {
    let (_dir, f) = fleet();
    let mut apps = spec("apps");
    apps.environments = vec![
        crate::model::Environment {
            name: "prod".into(),
            branch: "main".into(),
            target: target("clusterSelector: {matchLabels: {env: prod}}"),
        },
        crate::model::Environment {
            name: "staging".into(),
            branch: "staging".into(),
            target: target("clusterSelector: {matchLabels: {env: staging}}"),
        },
    ];
    f.set_repo(apps).unwrap();
    f.set_repo_bundles(
        "apps",
        "prod",
        vec![env_bundle("apps", "prod", "web", "main-1")],
    )
    .unwrap();
    f.set_repo_bundles(
        "apps",
        "staging",
        vec![env_bundle("apps", "staging", "web", "stg-1")],
    )
    .unwrap();
    let a = labelled("a", &[("env", "staging")]);
    let b = labelled("b", &[("env", "prod")]);
    let other = labelled("c", &[("env", "dev")]);
    for c in [&a, &b, &other] {
        f.add_cluster(c.clone()).unwrap();
    }
    assert_eq!(
        runs(&f, &a),
        [("apps/web".to_string(), "stg-1".to_string())]
    );
    assert_eq!(
        runs(&f, &b),
        [("apps/web".to_string(), "main-1".to_string())]
    );
    assert!(runs(&f, &other).is_empty());

    // A commit on staging reaches only the staging cluster.
    let session_b = f.connect(b.id).unwrap();
    f.full_sync(b.id);
    f.set_repo_bundles(
        "apps",
        "staging",
        vec![env_bundle("apps", "staging", "web", "stg-2")],
    )
    .unwrap();
    assert!(f.take_changes(&session_b).is_empty());
    assert_eq!(runs(&f, &a)[0].1, "stg-2");

    // Relabel a to prod: same deployment id, prod's content, no removal in between.
    let session_a = f.connect(a.id).unwrap();
    f.full_sync(a.id);
    f.set_cluster_labels("a", [("env".to_string(), "prod".to_string())].into())
        .unwrap();
    let changes = f.take_changes(&session_a);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].0.0, "apps/web");
    assert_eq!(changes[0].1.as_ref().unwrap().revision, "main-1");
    let views = f.deployments();
    let va = views.iter().find(|v| v.cluster_name == "a").unwrap();
    assert_eq!(va.environment, "prod");
}

#[test]
fn the_first_matching_customization_decides_and_do_not_deploy_excludes() {
    let (_dir, f) = fleet();
    let mut b = bundle("r", "app", "c1", "default");
    let variant = |name: &str, t: &str, body: &str| crate::model::Customization {
        name: name.into(),
        target: target(t),
        do_not_deploy: false,
        content: bundle("r", "app", "c1", body).content,
        error: None,
    };
    let mut skip = variant("skip", "clusterSelector: {matchLabels: {env: lab}}", "-");
    skip.do_not_deploy = true;
    let mut broken = variant("broken", "clusterName: broken-1", "old");
    broken.error = Some("app/chart/values.yaml: helm template failed".into());
    b.customizations = vec![
        variant(
            "prod",
            "clusterSelector: {matchLabels: {env: prod}}",
            "prod",
        ),
        variant(
            "prod-eu",
            "clusterSelector: {matchLabels: {env: prod, region: eu}}",
            "eu",
        ),
        skip,
        broken,
    ];
    let prod_eu = labelled("eu-1", &[("env", "prod"), ("region", "eu")]);
    let lab = labelled("lab-1", &[("env", "lab")]);
    let plain = labelled("plain-1", &[]);
    let broken_c = labelled("broken-1", &[]);
    for c in [&prod_eu, &lab, &plain, &broken_c] {
        f.add_cluster(c.clone()).unwrap();
    }
    f.set_repo_bundles("r", "", vec![b.clone()]).unwrap();
    let hash_of = |c: &Cluster| f.desired(c.id).first().map(|(_, c)| c.content_hash.clone());
    // First match wins, as in Fleet: the prod variant, not the more specific prod-eu.
    assert_eq!(
        hash_of(&prod_eu),
        b.customizations[0]
            .content
            .as_ref()
            .map(|c| c.content_hash.clone())
    );
    assert_eq!(
        hash_of(&plain),
        b.content.as_ref().map(|c| c.content_hash.clone())
    );
    assert_eq!(hash_of(&lab), None);
    // A variant that failed to render keeps its previous content and says why.
    assert!(hash_of(&broken_c).is_some());
    let views = f.deployments();
    let v = views.iter().find(|v| v.cluster_name == "broken-1").unwrap();
    assert_eq!(v.state, DeploymentState::Pending, "nothing reported yet");
    assert!(v.message.contains("app/chart/values.yaml"), "{}", v.message);
}

#[tokio::test]
async fn depends_on_holds_a_bundle_until_its_dependency_is_ready_there() {
    let (_dir, f) = fleet();
    let east = cluster("east");
    f.add_cluster(east.clone()).unwrap();
    let session = f.connect(east.id).unwrap();
    f.full_sync(east.id);
    let db = bundle("r", "db", "c1", "db");
    let mut app = bundle("r", "app", "c1", "app");
    app.depends_on = vec![crate::model::Dependency {
        name: Some("r-db".into()),
        selector: None,
    }];
    f.set_repo_bundles("r", "", vec![db.clone(), app]).unwrap();
    let sent: Vec<String> = f
        .take_changes(&session)
        .into_iter()
        .map(|(b, _)| b.0)
        .collect();
    assert_eq!(sent, ["r/db"], "the app waits for the db");
    let views = f.deployments();
    let held = views.iter().find(|v| v.bundle.0 == "r/app").unwrap();
    assert_eq!(held.state, DeploymentState::Pending);
    assert!(
        held.message.contains("waiting for dependency r/db"),
        "{}",
        held.message
    );

    let dbc = db.content.unwrap();
    f.record_status(
        east.id,
        &BundleId::new("r", "db"),
        report(&dbc, DeploymentState::NotReady),
    )
    .unwrap();
    assert!(f.take_changes(&session).is_empty());
    f.record_status(
        east.id,
        &BundleId::new("r", "db"),
        report(&dbc, DeploymentState::Ready),
    )
    .unwrap();
    let sent: Vec<String> = f
        .take_changes(&session)
        .into_iter()
        .map(|(b, _)| b.0)
        .collect();
    assert_eq!(sent, ["r/app"]);
}

#[test]
fn a_commit_touches_only_the_clusters_of_its_environment() {
    let (_dir, f) = fleet();
    let mut only_prod = spec("p");
    only_prod.targets = vec![target("clusterSelector: {matchLabels: {env: prod}}")];
    f.set_repo(only_prod).unwrap();
    let prod = labelled("prod", &[("env", "prod")]);
    let dev = labelled("dev", &[("env", "dev")]);
    f.add_cluster(prod.clone()).unwrap();
    f.add_cluster(dev.clone()).unwrap();
    f.set_repo_bundles("p", "", vec![bundle("p", "x", "c1", "x1")])
        .unwrap();
    {
        let st = f.read();
        let members = &st.members[&("p".to_string(), String::new())];
        assert!(members.contains(&prod.id) && !members.contains(&dev.id));
    }
    f.remove_repo("p").unwrap();
    assert!(runs(&f, &prod).is_empty());
}

#[test]
fn transitions_are_kept_and_commit_to_ready_is_measured_once() {
    let dir = tempfile::tempdir().unwrap();
    let east = cluster("east");
    let app = BundleId::new("r", "app");
    {
        let f = load_with_repo(dir.path());
        f.add_cluster(east.clone()).unwrap();
        let b1 = bundle("r", "app", "c1", "v1");
        let c1 = b1.content.clone().unwrap();
        let seen = Instant::now() - std::time::Duration::from_secs(2);
        f.set_repo_bundles_seen("r", "", vec![b1], seen).unwrap();
        f.record_status(east.id, &app, report(&c1, DeploymentState::NotReady))
            .unwrap();
        assert!(f.take_ready_latencies().is_empty(), "not Ready yet");
        f.record_status(east.id, &app, report(&c1, DeploymentState::Ready))
            .unwrap();
        let l = f.take_ready_latencies();
        assert!(l.len() == 1 && l[0] >= 2.0, "{l:?}");
        // Ready again (after a NotReady) is not a new commit.
        f.record_status(east.id, &app, report(&c1, DeploymentState::NotReady))
            .unwrap();
        f.record_status(east.id, &app, report(&c1, DeploymentState::Ready))
            .unwrap();
        assert!(f.take_ready_latencies().is_empty());
        let (connected, states) = f.gauges();
        assert_eq!((connected, states.get(DeploymentState::Ready)), (0, 1));

        f.set_repo_bundles("r", "", vec![bundle("r", "app", "c2", "v2")])
            .unwrap();
        let h: Vec<_> = f
            .history(east.id, &app)
            .into_iter()
            .map(|t| (t.state, t.revision))
            .collect();
        use DeploymentState::*;
        let c = |s: &str| s.to_string();
        assert_eq!(
            h,
            [
                (Pending, c("c1")),
                (NotReady, c("c1")),
                (Ready, c("c1")),
                (NotReady, c("c1")),
                (Ready, c("c1")),
                (OutOfSync, c("c2")),
            ]
        );
        let v = f.cluster_view("east", true).unwrap();
        assert_eq!(v["deployments"][0]["history"][5]["state"], "OutOfSync");
    }
    // History lives in memory: a restarted hub starts it afresh, recording nothing for the
    // states it loads.
    let f = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
    assert!(f.history(east.id, &app).is_empty());
    f.delete_cluster(east.id).unwrap();
    assert!(f.history(east.id, &app).is_empty());
}
