//! Apply runs, prune and removal against the small stateful fake API server of
//! `cluster::fake` (objects by path, discovery, a CRD group that appears once its CRD exists).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::prune::Disposal;
use super::{apply, prune};
use crate::cluster::Cluster;
use crate::cluster::fake::{FakeApi, Store};
use crate::model::{
    Deployment, DeploymentState, DeploymentStatus, Desired, Inventory, ManifestRef, ObjectRef,
    ObjectState, Removal,
};
use crate::plan::{DEPLOYMENT_ID_ANNOTATION, DEPLOYMENT_LABEL, MANAGED_BY_LABEL, inventory_name};
use crate::status::StatusBoard;

impl apply::Outcome {
    /// The recorded inventory and whether the run settled.
    fn pair(self) -> (Inventory, bool) {
        (self.inventory, self.settled)
    }
}

/// A fake API server, the objects it holds, a cluster handle on it (through a kubeconfig kept
/// in `_dir`) and the status board apply runs report to.
struct Fixture {
    api: FakeApi,
    store: Store,
    cluster: Cluster,
    board: StatusBoard,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Around the stateful fake, whose discovery keeps up with CRDs at once.
    async fn new() -> Self {
        Self::with_lag(0).await
    }

    /// Around the stateful fake, whose discovery of `example.com/v1` lags its CRD by `lag` 404s.
    async fn with_lag(lag: usize) -> Self {
        let (api, store) = FakeApi::stateful(lag).await;
        Self::on(api, store).await
    }

    /// Around any fake server and the store it answers from.
    async fn on(api: FakeApi, store: Store) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cluster = api.cluster(dir.path()).await;
        Self {
            api,
            store,
            cluster,
            board: StatusBoard::default(),
            _dir: dir,
        }
    }

    /// An ordinary apply run of `bundle` at `revision` over `inventory`: announced, never
    /// superseded.
    async fn apply(
        &self,
        revision: &str,
        bundle: &[(&str, Value)],
        inventory: Inventory,
    ) -> (Inventory, bool) {
        self.apply_with(revision, bundle, inventory, true, &|| false)
            .await
    }

    /// An apply run with the given `announce` and `superseded`.
    async fn apply_with(
        &self,
        revision: &str,
        bundle: &[(&str, Value)],
        inventory: Inventory,
        announce: bool,
        superseded: &(dyn Fn() -> bool + Send + Sync),
    ) -> (Inventory, bool) {
        apply::run(
            &self.cluster,
            &self.board,
            &desired(revision, bundle),
            inventory,
            announce,
            superseded,
            &[],
        )
        .await
        .pair()
    }

    /// An ordinary apply run of `desired` over `inventory`.
    async fn apply_desired(&self, desired: &Desired, inventory: Inventory) -> (Inventory, bool) {
        apply::run(
            &self.cluster,
            &self.board,
            desired,
            inventory,
            true,
            &|| false,
            &[],
        )
        .await
        .pair()
    }

    /// The latest status published on the board (there must be one).
    fn last_status(&self) -> DeploymentStatus {
        self.board.take_pending().pop().unwrap()
    }

    /// Whether the fake holds an object at `path`.
    fn holds(&self, path: &str) -> bool {
        self.store.lock().unwrap().contains_key(path)
    }

    /// A snapshot of every object the fake holds, by path.
    fn objects(&self) -> BTreeMap<String, Value> {
        self.store.lock().unwrap().clone()
    }

    /// The content hash recorded in the deployment's inventory ConfigMap.
    fn stored_content_hash(&self) -> Value {
        self.store.lock().unwrap()[&inventory_path()]["data"]["contentHash"].clone()
    }
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
            ..Deployment::default()
        },
        manifests: manifests.iter().map(|(_, m)| Arc::new(m.clone())).collect(),
    }
}

/// [`desired`], with fleet.yaml `keepResources: true`.
fn desired_keeping(revision: &str, manifests: &[(&str, Value)]) -> Desired {
    let mut d = desired(revision, manifests);
    d.deployment.keep_resources = true;
    d
}

/// Where the inventory of `apps/app` is kept.
fn inventory_path() -> String {
    format!(
        "/api/v1/namespaces/flotilla-system/configmaps/{}",
        inventory_name("apps/app")
    )
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

/// An inventory entry for the ConfigMap `name` in `apps`.
fn config_map_ref(name: &str) -> ObjectRef {
    ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: "apps".into(),
        name: name.into(),
    }
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {}})
}

/// A custom resource whose CRD is `widgets.example.com`.
fn widget(name: &str) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}})
}

fn first_bundle() -> Vec<(&'static str, Value)> {
    vec![
        ("app/widget.yaml#0", widget("w")),
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

/// A Deployment `web`, then a ConfigMap `settings`.
fn web_and_settings() -> Vec<(&'static str, Value)> {
    vec![
        ("d.yaml#0", deployment("web")),
        ("c.yaml#0", config_map("settings")),
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
    let f = Fixture::new().await;
    let (inventory, settled) = f.apply("r1", &first_bundle(), empty_inventory()).await;

    let patches = f.api.paths("PATCH");
    let inv = inventory_path();
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

    let objects = f.objects();
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

    let status = f.last_status();
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
            ("Widget", ObjectState::Ready),
            ("Deployment", ObjectState::Failed),
            ("ConfigMap", ObjectState::Ready),
            ("CustomResourceDefinition", ObjectState::Ready),
            ("Namespace", ObjectState::Ready),
        ]
    );
    assert!(settled, "an invalid object needs a new commit, not a retry");
    assert_eq!(inventory.content_hash, "hash-r1");
    assert_eq!(inventory.objects.len(), 5);
    assert_eq!(objects[&inv]["data"]["contentHash"], "hash-r1");
}

#[tokio::test]
async fn a_custom_resource_without_its_crd_fails_clearly_and_is_retried() {
    let f = Fixture::new().await;
    let bundle = vec![("app/widget.yaml#0", widget("w"))];
    let (inventory, settled) = f.apply("r1", &bundle, empty_inventory()).await;
    let status = f.last_status();
    assert_eq!(
        status.message,
        "app/widget.yaml#0: Widget/w: the cluster does not serve Widget in example.com/v1: its CustomResourceDefinition is not installed"
    );
    assert!(!settled, "another bundle may install the CRD");
    assert!(inventory.objects.is_empty());
}

#[tokio::test]
async fn a_new_revision_prunes_what_left_but_only_what_it_owns() {
    let f = Fixture::new().await;
    let first = vec![
        ("a.yaml#0", config_map("keep")),
        ("b.yaml#0", config_map("drop")),
        ("c.yaml#0", config_map("taken")),
    ];
    let (inventory, _) = f.apply("r1", &first, empty_inventory()).await;
    // Someone else takes over "taken": its ownership annotation now names another deployment.
    f.store
        .lock()
        .unwrap()
        .get_mut("/api/v1/namespaces/apps/configmaps/taken")
        .unwrap()["metadata"]["annotations"][DEPLOYMENT_ID_ANNOTATION] = json!("other/app");

    let second = vec![
        ("a.yaml#0", config_map("keep")),
        ("d.yaml#0", deployment("web")),
    ];
    let (inventory, settled) = f.apply("r2", &second, inventory).await;
    assert!(settled);
    let objects = f.objects();
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
    let deletes = f.api.paths("DELETE");
    assert_eq!(deletes, ["/api/v1/namespaces/apps/configmaps/drop"]);
    // Applied; the Deployment waits for a controller that this fake does not run.
    assert_eq!(f.last_status().state, DeploymentState::NotReady);
}

#[tokio::test]
async fn removal_prunes_everything_in_reverse_order_then_the_inventory() {
    let f = Fixture::new().await;
    let (inventory, _) = f.apply("r1", &web_and_settings(), empty_inventory()).await;
    // An entry whose object is already gone is fine.
    let mut inventory = inventory;
    inventory.objects.push(config_map_ref("gone"));
    prune::remove(&f.cluster, inventory, Disposal::Delete)
        .await
        .unwrap();
    let deletes = f.api.paths("DELETE");
    assert_eq!(
        deletes,
        [
            "/apis/apps/v1/namespaces/apps/deployments/web".to_string(),
            "/api/v1/namespaces/apps/configmaps/settings".into(),
            inventory_path(),
        ]
    );
    let left: Vec<String> = f.objects().into_keys().collect();
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
    let f = Fixture::new().await;
    let bundle = vec![("a.yaml#0", config_map("a")), ("b.yaml#0", config_map("b"))];
    let (_, settled) = f
        .apply_with("r1", &bundle, empty_inventory(), false, &|| true)
        .await;
    assert!(
        settled,
        "the newer state is applied next, not this one retried"
    );
    assert!(
        !f.api
            .requests()
            .iter()
            .any(|r| r.path().contains("/configmaps/a"))
    );
    assert!(
        f.board.take_pending().is_empty(),
        "nothing is reported for a superseded state"
    );
}

#[tokio::test]
async fn custom_resources_wait_for_discovery_to_catch_up_with_their_crd() {
    let f = Fixture::with_lag(2).await;
    let bundle: Vec<_> = first_bundle()
        .into_iter()
        .filter(|(_, m)| m["kind"] != "Deployment")
        .collect();
    let (_, settled) = f.apply("r1", &bundle, empty_inventory()).await;
    let status = f.last_status();
    assert_eq!(
        (status.state, status.message.as_str()),
        (DeploymentState::Ready, "")
    );
    assert!(settled);
    assert!(f.holds("/apis/example.com/v1/namespaces/apps/widgets/w"));
}

#[tokio::test]
async fn an_object_whose_kind_is_not_served_any_more_is_not_pruned() {
    let f = Fixture::new().await;
    let (inventory, settled) = f.apply("r1", &web_and_settings(), empty_inventory()).await;
    assert!(settled);
    // The commit moves the Deployment to a version this server does not serve.
    let mut moved = deployment("web");
    moved["apiVersion"] = json!("apps/v1beta1");
    let second = vec![("d.yaml#0", moved), ("c.yaml#0", config_map("settings"))];
    let (inventory, settled) = f.apply("r2", &second, inventory).await;

    assert!(
        f.holds("/apis/apps/v1/namespaces/apps/deployments/web"),
        "the running Deployment is still listed by the bundle: it must not be pruned"
    );
    assert!(!f.api.requests().iter().any(|r| r.method == "DELETE"));
    let recorded: Vec<_> = inventory
        .objects
        .iter()
        .map(|o| (o.api_version.as_str(), o.name.as_str()))
        .collect();
    assert_eq!(
        recorded,
        [("v1", "settings"), ("apps/v1", "web")],
        "still owned, as last applied, in apply order"
    );
    assert!(!settled, "the server may serve the version again: retry");
    let status = f.last_status();
    assert_eq!(
        (status.state, status.message.as_str()),
        (
            DeploymentState::ErrApplied,
            "d.yaml#0: Deployment/web: the cluster does not serve Deployment in apps/v1beta1"
        )
    );
}

#[tokio::test]
async fn the_content_hash_is_recorded_only_once_a_run_settled() {
    let f = Fixture::new().await;
    let first = vec![("c.yaml#0", config_map("settings"))];
    let (inventory, settled) = f.apply("r1", &first, empty_inventory()).await;
    assert!(settled);
    assert_eq!(inventory.content_hash, "hash-r1");
    assert_eq!(f.stored_content_hash(), "hash-r1");

    // Applying another content starts by saying the cluster no longer holds r1 completely: a
    // crash from here on must not let Hello claim r1 (the hub would not resend r1 if Git went
    // back to it).
    let second = vec![
        ("c.yaml#0", config_map("settings")),
        ("w.yaml#0", widget("w")),
    ];
    let (inventory, _) = f
        .apply_with("r2", &second, inventory, false, &|| true)
        .await;
    assert_eq!(inventory.content_hash, "");
    assert_eq!(f.stored_content_hash(), "");

    // The Widget's CRD is missing: a retryable failure. After a restart the hub must send r2
    // again, so r2 is not recorded as held.
    let (inventory, settled) = f.apply("r2", &second, inventory).await;
    assert!(!settled);
    assert_eq!(inventory.content_hash, "");
    assert_eq!(f.stored_content_hash(), "");
    let listed = f.cluster.list_inventories().await.unwrap();
    assert_eq!(
        (listed.len(), listed[0].content_hash.as_str()),
        (1, ""),
        "Hello reports nothing applied completely"
    );
    assert_eq!(
        inventory.revision, "r2",
        "the inventory still tells what was applied"
    );

    // Another bundle installs the CRD; the retry settles and records r2.
    f.store.lock().unwrap().insert(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com".into(),
        json!({}),
    );
    let (inventory, settled) = f
        .apply_with("r2", &second, inventory, false, &|| false)
        .await;
    assert!(settled);
    assert_eq!(inventory.content_hash, "hash-r2");
    assert_eq!(f.stored_content_hash(), "hash-r2");
    assert_eq!(inventory.objects.len(), 2);
}

#[tokio::test]
async fn a_permanent_failure_still_records_the_content_hash() {
    let f = Fixture::new().await;
    let bundle = vec![
        ("c.yaml#0", config_map("settings")),
        ("d.yaml#0", deployment("Bad_Name")),
    ];
    let (inventory, settled) = f.apply("r1", &bundle, empty_inventory()).await;
    assert!(settled, "only a new commit can fix a 422");
    assert_eq!(inventory.content_hash, "hash-r1");
    assert_eq!(f.stored_content_hash(), "hash-r1");
}

#[tokio::test]
async fn a_removal_of_a_queued_deployment_applies_nothing_and_ends_its_worker() {
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    let f = Fixture::new().await;
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let reconciler = super::Reconciler::new(
        f.cluster.clone(),
        Arc::new(StatusBoard::default()),
        Arc::default(),
        crate::config::BackoffConfig::default(),
        tracker.clone(),
        shutdown.clone(),
    );
    // Every apply slot is taken: the deployment is received but waits its turn.
    let busy = reconciler
        .inner
        .permits
        .acquire_many(super::PARALLEL_APPLIES as u32)
        .await
        .unwrap();
    reconciler.deploy(desired("r1", &[("c.yaml#0", config_map("settings"))]));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        reconciler.targets(),
        [("apps/app".to_string(), Some("hash-r1".to_string()))]
    );
    // The hub removes it before its turn: nothing may be applied, and the worker ends.
    reconciler.remove(Removal {
        deployment_id: "apps/app".into(),
        keep_resources: false,
    });
    drop(busy);
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !reconciler.targets().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the worker ends after the removal");
    let writes = f.api.paths("PATCH");
    assert!(
        writes.is_empty(),
        "a removed deployment is not applied first: {writes:?}"
    );
    assert!(f.objects().is_empty(), "nothing applied, no inventory left");
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

/// A fake API server holding one ConfigMap `moved` owned by `apps/app` (uid `u-1`,
/// resourceVersion `1`). Right after the first read, the object is re-applied (resourceVersion
/// `2`) with its ownership annotation naming `then_owner`, as another bundle's apply racing
/// with prune would. DELETE honours `preconditions`, and a merge PATCH its
/// `metadata.resourceVersion`, as a real API server does (409 Conflict). There is no inventory.
async fn racing_object(then_owner: &'static str) -> Fixture {
    use crate::cluster::fake::Reply;

    let path = "/api/v1/namespaces/apps/configmaps/moved";
    let owned = |owner: &str, rv: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "moved", "namespace": "apps",
        "uid": "u-1", "resourceVersion": rv, "annotations": {DEPLOYMENT_ID_ANNOTATION: owner}}})
    };
    let store: Store = Arc::default();
    store
        .lock()
        .unwrap()
        .insert(path.into(), owned("apps/app", "1"));
    let s = store.clone();
    let api = FakeApi::start(move |r| {
        let mut objects = s.lock().unwrap();
        match (r.method.as_str(), r.path()) {
            ("GET", "/api/v1") => Reply::json(
                200,
                json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "configmaps", "kind": "ConfigMap", "namespaced": true}]}),
            ),
            ("GET", p) if p == path => match objects.get(path).cloned() {
                Some(live) => {
                    if live["metadata"]["resourceVersion"] == "1" {
                        objects.insert(path.into(), owned(then_owner, "2"));
                    }
                    Reply::json(200, live)
                }
                None => Reply::text(404, "not found"),
            },
            ("DELETE", p) if p == path => {
                let live = objects[path].clone();
                let pre = &r.json()["preconditions"];
                let holds = |f: &str| pre.get(f).is_none_or(|want| *want == live["metadata"][f]);
                if holds("uid") && holds("resourceVersion") {
                    objects.remove(path);
                    Reply::json(200, json!({"kind": "Status", "status": "Success"}))
                } else {
                    Reply::json(
                        409,
                        json!({"kind": "Status", "status": "Failure", "code": 409, "reason": "Conflict",
                        "message": "Precondition failed: ResourceVersion in precondition: 1, ResourceVersion in object meta: 2"}),
                    )
                }
            }
            ("PATCH", p) if p == path => {
                let live = objects[path].clone();
                if r.json()["metadata"]["resourceVersion"] != live["metadata"]["resourceVersion"] {
                    return Reply::json(
                        409,
                        json!({"kind": "Status", "status": "Failure", "code": 409, "reason": "Conflict",
                        "message": "the object has been modified; please apply your changes to the latest version and try again"}),
                    );
                }
                let mut released = live;
                released["metadata"]["annotations"] = json!({});
                released["metadata"]["resourceVersion"] = json!("3");
                objects.insert(path.into(), released.clone());
                Reply::json(200, released)
            }
            ("DELETE", p) if p.contains("/configmaps/flotilla-inv-") => Reply::text(404, "not found"),
            _ => Reply::text(500, "unexpected"),
        }
    })
    .await;
    Fixture::on(api, store).await
}

#[tokio::test]
async fn prune_never_deletes_an_object_taken_over_after_it_was_read() {
    let f = racing_object("apps/other").await;
    let kept = prune::prune_objects(&f.cluster, "apps/app", vec![config_map_ref("moved")]).await;
    assert!(kept.is_empty(), "not ours any more: settled");
    assert!(
        f.holds("/api/v1/namespaces/apps/configmaps/moved"),
        "the other deployment's object survives"
    );
    let requests = f.api.requests();
    let deletes: Vec<_> = requests.iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(
        deletes[0].json()["preconditions"],
        json!({"uid": "u-1", "resourceVersion": "1"})
    );
    let reads = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path().ends_with("/moved"))
        .count();
    assert_eq!(reads, 2, "read again after the 409");
}

#[tokio::test]
async fn prune_reads_again_and_deletes_an_object_still_ours_that_changed() {
    let f = racing_object("apps/app").await;
    let kept = prune::prune_objects(&f.cluster, "apps/app", vec![config_map_ref("moved")]).await;
    assert!(kept.is_empty());
    assert!(f.objects().is_empty(), "still ours: deleted");
    let preconditions: Vec<Value> = f
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.json()["preconditions"]["resourceVersion"].clone())
        .collect();
    assert_eq!(preconditions, [json!("1"), json!("2")]);
}

/// The objects' paths in the fake, for the bundles below.
const WEB: &str = "/apis/apps/v1/namespaces/apps/deployments/web";
const SETTINGS: &str = "/api/v1/namespaces/apps/configmaps/settings";

/// Whether a live object still carries any of the ownership marks.
fn marked(live: &Value) -> bool {
    let meta = &live["metadata"];
    !meta["labels"][MANAGED_BY_LABEL].is_null()
        || !meta["labels"][DEPLOYMENT_LABEL].is_null()
        || !meta["annotations"][DEPLOYMENT_ID_ANNOTATION].is_null()
}

#[tokio::test]
async fn a_removal_that_keeps_releases_what_is_ours_and_deletes_only_the_inventory() {
    let f = Fixture::new().await;
    let mut settings = config_map("settings");
    settings["metadata"]["labels"] = json!({"app": "web"});
    let bundle = vec![
        ("d.yaml#0", deployment("web")),
        ("c.yaml#0", settings),
        ("t.yaml#0", config_map("taken")),
    ];
    let (mut inventory, _) = f
        .apply_desired(&desired_keeping("r1", &bundle), empty_inventory())
        .await;
    let taken = "/api/v1/namespaces/apps/configmaps/taken";
    f.store.lock().unwrap().get_mut(taken).unwrap()["metadata"]["annotations"]
        [DEPLOYMENT_ID_ANNOTATION] = json!("other/app");
    inventory.objects.push(config_map_ref("gone"));

    prune::remove(&f.cluster, inventory, Disposal::Release)
        .await
        .unwrap();

    assert_eq!(
        f.api.paths("DELETE"),
        [inventory_path()],
        "nothing but the inventory is deleted"
    );
    let objects = f.objects();
    for path in [WEB, SETTINGS] {
        assert!(!marked(&objects[path]), "{path}: {}", objects[path]);
    }
    assert_eq!(
        objects[SETTINGS]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(objects[SETTINGS]["data"], json!({"k": "v"}));
    assert_eq!(
        objects[taken]["metadata"]["annotations"][DEPLOYMENT_ID_ANNOTATION], "other/app",
        "another deployment's object is not touched"
    );
    assert_eq!(
        objects[taken]["metadata"]["labels"][MANAGED_BY_LABEL],
        "flotilla"
    );
    let releases: Vec<_> = f
        .api
        .requests()
        .into_iter()
        .filter(|r| r.content_type.starts_with("application/merge-patch+json"))
        .collect();
    assert_eq!(releases.len(), 2, "one patch per object of ours");
    assert!(
        releases
            .iter()
            .all(|r| r.json()["metadata"]["resourceVersion"].is_string()),
        "each release is conditional on the object as read"
    );

    // Released objects are nobody's: a later prune under the same deployment id spares them.
    let refs = vec![config_map_ref("settings")];
    assert!(
        prune::prune_objects(&f.cluster, "apps/app", refs)
            .await
            .is_empty()
    );
    assert!(f.holds(SETTINGS));
}

#[tokio::test]
async fn a_release_never_touches_an_object_taken_over_after_it_was_read() {
    let f = racing_object("apps/other").await;
    let inventory = Inventory {
        objects: vec![config_map_ref("moved")],
        ..empty_inventory()
    };
    prune::remove(&f.cluster, inventory, Disposal::Release)
        .await
        .unwrap();
    let live = &f.objects()["/api/v1/namespaces/apps/configmaps/moved"];
    assert_eq!(
        live["metadata"]["annotations"][DEPLOYMENT_ID_ANNOTATION],
        "apps/other"
    );
    let patches: Vec<Value> = f
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.json()["metadata"]["resourceVersion"].clone())
        .collect();
    assert_eq!(patches, [json!("1")], "refused, read again, not ours");
}

#[tokio::test]
async fn a_release_reads_again_and_releases_an_object_still_ours_that_changed() {
    let f = racing_object("apps/app").await;
    let inventory = Inventory {
        objects: vec![config_map_ref("moved")],
        ..empty_inventory()
    };
    prune::remove(&f.cluster, inventory, Disposal::Release)
        .await
        .unwrap();
    let live = &f.objects()["/api/v1/namespaces/apps/configmaps/moved"];
    assert!(!marked(live), "{live}");
    let patches: Vec<Value> = f
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.json()["metadata"]["resourceVersion"].clone())
        .collect();
    assert_eq!(patches, [json!("1"), json!("2")]);
    assert!(
        f.api
            .paths("DELETE")
            .iter()
            .all(|p| p.contains("flotilla-inv-"))
    );
}

#[tokio::test]
async fn a_new_content_prunes_what_left_it_even_when_keeping_resources() {
    let f = Fixture::new().await;
    let first = vec![
        ("a.yaml#0", config_map("stay")),
        ("b.yaml#0", config_map("left")),
    ];
    let (inventory, _) = f
        .apply_desired(&desired_keeping("r1", &first), empty_inventory())
        .await;
    let second = vec![("a.yaml#0", config_map("stay"))];
    let (inventory, settled) = f
        .apply_desired(&desired_keeping("r2", &second), inventory)
        .await;
    assert!(settled);
    assert!(
        !f.holds("/api/v1/namespaces/apps/configmaps/left"),
        "keepResources is about removing the deployment, not about what leaves its content"
    );
    assert!(f.holds("/api/v1/namespaces/apps/configmaps/stay"));
    assert!(inventory.keeps_resources());
}

#[tokio::test]
async fn the_keep_flag_is_recorded_before_any_object_is_applied() {
    let f = Fixture::new().await;
    let bundle = vec![("c.yaml#0", config_map("settings"))];
    let desired = desired_keeping("r1", &bundle);
    // Superseded right after the inventory was widened, as a crash there would leave it.
    apply::run(
        &f.cluster,
        &f.board,
        &desired,
        empty_inventory(),
        false,
        &|| true,
        &[],
    )
    .await;
    assert!(!f.holds(SETTINGS));
    let stored = f.cluster.read_inventory("apps/app").await.unwrap().unwrap();
    assert!(stored.keeps_resources());
    assert_eq!(stored.revision, "r1");
    assert_eq!(stored.objects, [config_map_ref("settings")]);
}

/// Polls `check` until it holds; panics after a deadline.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !check() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Has a worker apply `settings` (with `content_keeps` as its keepResources), waits until it
/// settled, removes it with `removal_keeps`, and waits until the worker ended.
async fn removed_by_a_worker(content_keeps: bool, removal_keeps: bool) -> Fixture {
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    let f = Fixture::new().await;
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let reconciler = super::Reconciler::new(
        f.cluster.clone(),
        Arc::new(StatusBoard::default()),
        Arc::default(),
        crate::config::BackoffConfig::default(),
        tracker.clone(),
        shutdown.clone(),
    );
    let mut d = desired("r1", &[("c.yaml#0", config_map("settings"))]);
    d.deployment.keep_resources = content_keeps;
    reconciler.deploy(d);
    wait_until("the content settled", || {
        f.store
            .lock()
            .unwrap()
            .get(&inventory_path())
            .map(|cm| cm["data"]["contentHash"].clone())
            == Some(json!("hash-r1"))
    })
    .await;
    reconciler.remove(Removal {
        deployment_id: "apps/app".into(),
        keep_resources: removal_keeps,
    });
    wait_until("the worker ended", || reconciler.targets().is_empty()).await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    f
}

#[tokio::test]
async fn a_removal_keeps_when_either_the_removal_or_the_recorded_content_says_so() {
    for (content_keeps, removal_keeps, kept) in [
        (true, false, true),
        (false, true, true),
        (false, false, false),
    ] {
        let case = format!("content {content_keeps}, removal {removal_keeps}");
        let f = removed_by_a_worker(content_keeps, removal_keeps).await;
        assert!(!f.holds(&inventory_path()), "{case}: the inventory is gone");
        assert_eq!(f.holds(SETTINGS), kept, "{case}");
        if kept {
            assert!(!marked(&f.objects()[SETTINGS]), "{case}");
            assert!(
                f.api
                    .paths("DELETE")
                    .iter()
                    .all(|p| p.contains("flotilla-inv-")),
                "{case}"
            );
        }
    }
}
