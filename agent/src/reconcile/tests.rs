//! Apply runs, prune and removal against the small stateful fake API server of
//! `cluster::fake` (objects by path, discovery, a CRD group that appears once its CRD exists).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{apply, prune};
use crate::cluster::Cluster;
use crate::cluster::fake::{FakeApi, Store};
use crate::model::{
    Deployment, DeploymentState, Desired, Inventory, ManifestRef, ObjectRef, ObjectState,
};
use crate::plan::{DEPLOYMENT_ID_ANNOTATION, DEPLOYMENT_LABEL, MANAGED_BY_LABEL, inventory_name};
use crate::status::StatusBoard;

async fn fake() -> (FakeApi, Store, Cluster, tempfile::TempDir) {
    fake_with_lag(0).await
}

async fn fake_with_lag(lag: usize) -> (FakeApi, Store, Cluster, tempfile::TempDir) {
    let (api, store) = FakeApi::stateful(lag).await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = api.cluster(dir.path()).await;
    (api, store, cluster, dir)
}

fn desired(revision: &str, manifests: &[(&str, Value)]) -> Desired {
    Desired {
        deployment: Deployment {
            deployment_id: "apps/app".into(),
            bundle: "apps/app".into(),
            revision: revision.into(),
            content_hash: format!("hash-{revision}"),
            default_namespace: "apps".into(),
            manifests: manifests
                .iter()
                .enumerate()
                .map(|(i, (source, _))| ManifestRef {
                    hash: format!("h{i}"),
                    source: source.to_string(),
                })
                .collect(),
        },
        manifests: manifests.iter().map(|(_, m)| Arc::new(m.clone())).collect(),
    }
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {}})
}

fn first_bundle() -> Vec<(&'static str, Value)> {
    vec![
        (
            "app/widget.yaml#0",
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
        ),
        ("app/web.yaml#0", deployment("Bad_Name")),
        ("app/config.yaml#0", config_map("settings")),
        (
            "crds/widget.yaml#0",
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com"}}),
        ),
        (
            "ns.yaml#0",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "extra"}}),
        ),
    ]
}

fn empty_inventory() -> Inventory {
    Inventory {
        deployment_id: "apps/app".into(),
        ..Inventory::default()
    }
}

#[tokio::test]
async fn a_first_apply_orders_marks_defaults_and_reports_the_failure() {
    let (api, store, cluster, _dir) = fake().await;
    let board = StatusBoard::default();
    let d = desired("r1", &first_bundle());
    let (inventory, settled) =
        apply::run(&cluster, &board, &d, empty_inventory(), true, &|| false).await;

    let patches: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.path().to_string())
        .collect();
    let inv = format!(
        "/api/v1/namespaces/flotilla-system/configmaps/{}",
        inventory_name("apps/app")
    );
    assert_eq!(
        patches,
        [
            "/api/v1/namespaces/flotilla-system".to_string(),
            inv.clone(),
            "/api/v1/namespaces/extra".into(),
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com".into(),
            "/api/v1/namespaces/apps".into(),
            "/api/v1/namespaces/apps/configmaps/settings".into(),
            "/apis/apps/v1/namespaces/apps/deployments/Bad_Name".into(),
            inv.clone(),
            "/apis/example.com/v1/namespaces/apps/widgets/w".into(),
            inv.clone(),
        ]
    );

    let objects = store.lock().unwrap().clone();
    let cm = &objects["/api/v1/namespaces/apps/configmaps/settings"];
    assert_eq!(cm["metadata"]["namespace"], "apps");
    assert_eq!(cm["metadata"]["labels"][MANAGED_BY_LABEL], "flotilla");
    assert_eq!(
        cm["metadata"]["labels"][DEPLOYMENT_LABEL]
            .as_str()
            .unwrap()
            .len(),
        63
    );
    assert_eq!(
        cm["metadata"]["annotations"][DEPLOYMENT_ID_ANNOTATION],
        "apps/app"
    );
    let created_ns = &objects["/api/v1/namespaces/apps"];
    assert!(
        created_ns["metadata"].get("labels").is_none(),
        "the default namespace is not owned"
    );

    let status = board.take_pending().pop().unwrap();
    assert_eq!(status.state, DeploymentState::ErrApplied);
    assert_eq!(status.revision, "r1");
    assert_eq!(
        status.message,
        "app/web.yaml#0: Deployment/Bad_Name: Deployment.apps \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
    );
    let states: Vec<_> = status
        .objects
        .iter()
        .map(|o| (o.object.kind.as_str(), o.state))
        .collect();
    assert_eq!(
        states,
        [
            ("Widget", ObjectState::Applied),
            ("Deployment", ObjectState::Failed),
            ("ConfigMap", ObjectState::Applied),
            ("CustomResourceDefinition", ObjectState::Applied),
            ("Namespace", ObjectState::Applied),
        ]
    );
    assert!(settled, "an invalid object needs a new commit, not a retry");
    assert_eq!(inventory.content_hash, "hash-r1");
    assert_eq!(inventory.objects.len(), 5);
    assert_eq!(objects[&inv]["data"]["contentHash"], "hash-r1");
}

#[tokio::test]
async fn a_custom_resource_without_its_crd_fails_clearly_and_is_retried() {
    let (_api, _store, cluster, _dir) = fake().await;
    let board = StatusBoard::default();
    let bundle = vec![(
        "app/widget.yaml#0",
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}),
    )];
    let (inventory, settled) = apply::run(
        &cluster,
        &board,
        &desired("r1", &bundle),
        empty_inventory(),
        true,
        &|| false,
    )
    .await;
    let status = board.take_pending().pop().unwrap();
    assert_eq!(
        status.message,
        "app/widget.yaml#0: Widget/w: the cluster does not serve Widget in example.com/v1: its CustomResourceDefinition is not installed"
    );
    assert!(!settled, "another bundle may install the CRD");
    assert!(inventory.objects.is_empty());
}

#[tokio::test]
async fn a_new_revision_prunes_what_left_but_only_what_it_owns() {
    let (api, store, cluster, _dir) = fake().await;
    let board = StatusBoard::default();
    let first = vec![
        ("a.yaml#0", config_map("keep")),
        ("b.yaml#0", config_map("drop")),
        ("c.yaml#0", config_map("taken")),
    ];
    let (inventory, _) = apply::run(
        &cluster,
        &board,
        &desired("r1", &first),
        empty_inventory(),
        true,
        &|| false,
    )
    .await;
    // Someone else takes over "taken": its ownership annotation now names another deployment.
    store
        .lock()
        .unwrap()
        .get_mut("/api/v1/namespaces/apps/configmaps/taken")
        .unwrap()["metadata"]["annotations"][DEPLOYMENT_ID_ANNOTATION] = json!("other/app");

    let second = vec![
        ("a.yaml#0", config_map("keep")),
        ("d.yaml#0", deployment("web")),
    ];
    let (inventory, settled) = apply::run(
        &cluster,
        &board,
        &desired("r2", &second),
        inventory,
        true,
        &|| false,
    )
    .await;
    assert!(settled);
    let objects = store.lock().unwrap().clone();
    assert!(
        !objects.contains_key("/api/v1/namespaces/apps/configmaps/drop"),
        "pruned"
    );
    assert!(
        objects.contains_key("/api/v1/namespaces/apps/configmaps/taken"),
        "not ours any more"
    );
    assert!(objects.contains_key("/apis/apps/v1/namespaces/apps/deployments/web"));
    let names: Vec<_> = inventory.objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["keep", "web"]);
    let deletes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path().to_string())
        .collect();
    assert_eq!(deletes, ["/api/v1/namespaces/apps/configmaps/drop"]);
    assert_eq!(
        board.take_pending().pop().unwrap().state,
        DeploymentState::Ready
    );
}

#[tokio::test]
async fn removal_prunes_everything_in_reverse_order_then_the_inventory() {
    let (api, store, cluster, _dir) = fake().await;
    let board = StatusBoard::default();
    let bundle = vec![
        ("d.yaml#0", deployment("web")),
        ("c.yaml#0", config_map("settings")),
    ];
    let (inventory, _) = apply::run(
        &cluster,
        &board,
        &desired("r1", &bundle),
        empty_inventory(),
        true,
        &|| false,
    )
    .await;
    // An entry whose object is already gone is fine.
    let mut inventory = inventory;
    inventory.objects.push(ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: "apps".into(),
        name: "gone".into(),
    });
    prune::remove(&cluster, inventory).await.unwrap();
    let deletes: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path().to_string())
        .collect();
    assert_eq!(
        deletes,
        [
            "/apis/apps/v1/namespaces/apps/deployments/web".to_string(),
            "/api/v1/namespaces/apps/configmaps/settings".into(),
            format!(
                "/api/v1/namespaces/flotilla-system/configmaps/{}",
                inventory_name("apps/app")
            ),
        ]
    );
    let left: Vec<String> = store.lock().unwrap().keys().cloned().collect();
    assert_eq!(
        left,
        [
            "/api/v1/namespaces/apps",
            "/api/v1/namespaces/flotilla-system"
        ]
    );
}

#[tokio::test]
async fn a_superseded_run_stops_between_objects() {
    let (api, _store, cluster, _dir) = fake().await;
    let board = StatusBoard::default();
    let bundle = vec![("a.yaml#0", config_map("a")), ("b.yaml#0", config_map("b"))];
    let (_, settled) = apply::run(
        &cluster,
        &board,
        &desired("r1", &bundle),
        empty_inventory(),
        false,
        &|| true,
    )
    .await;
    assert!(
        settled,
        "the newer state is applied next, not this one retried"
    );
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.path().contains("/configmaps/a"))
    );
    assert!(
        board.take_pending().is_empty(),
        "nothing is reported for a superseded state"
    );
}

#[tokio::test]
async fn custom_resources_wait_for_discovery_to_catch_up_with_their_crd() {
    let (_api, store, cluster, _dir) = fake_with_lag(2).await;
    let board = StatusBoard::default();
    let bundle: Vec<_> = first_bundle()
        .into_iter()
        .filter(|(_, m)| m["kind"] != "Deployment")
        .collect();
    let (_, settled) = apply::run(
        &cluster,
        &board,
        &desired("r1", &bundle),
        empty_inventory(),
        true,
        &|| false,
    )
    .await;
    let status = board.take_pending().pop().unwrap();
    assert_eq!(
        (status.state, status.message.as_str()),
        (DeploymentState::Ready, "")
    );
    assert!(settled);
    assert!(
        store
            .lock()
            .unwrap()
            .contains_key("/apis/example.com/v1/namespaces/apps/widgets/w")
    );
}
