//! fleet.yaml `keepResources` through the whole agent: a removed deployment's objects stay on
//! the cluster without ownership marks and its inventory goes; the flag recorded with the
//! content still holds after a restart, when the hub's `Removal` does not carry it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::harness::*;
use crate::plan::{DEPLOYMENT_ID_ANNOTATION, DEPLOYMENT_LABEL, MANAGED_BY_LABEL};
use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::agent_message::Kind as Out;
use flotilla_proto::agent::v1::hub_message::Kind as In;

const SETTINGS: &str = "/api/v1/namespaces/apps/configmaps/settings";
const WEB: &str = "/apis/apps/v1/namespaces/apps/deployments/web";

fn has_inventory(objects: &BTreeMap<String, Value>) -> bool {
    objects
        .keys()
        .any(|k| k.contains("/configmaps/flotilla-inv-"))
}

/// Whether a live object still carries any of the agent's ownership marks.
fn marked(live: &Value) -> bool {
    let meta = &live["metadata"];
    !meta["labels"][MANAGED_BY_LABEL].is_null()
        || !meta["labels"][DEPLOYMENT_LABEL].is_null()
        || !meta["annotations"][DEPLOYMENT_ID_ANNOTATION].is_null()
}

/// Registers an agent, deploys `settings` and `web` with `keep_resources`, and waits until
/// they are Ready.
async fn deployed(h: &mut Harness, keep_resources: bool) -> RunningAgent {
    let agent = h.spawn_agent(Some("good")).await;
    h.expect("hello", hello).await;
    let cm = h.offer(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "labels": {"app": "web"}}, "data": {"a": "1"}}));
    let web = h.offer(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}}));
    h.send(In::Deploy(pb::BundleDeployment {
        deployment_id: "apps/app".into(),
        bundle: "apps/app".into(),
        revision: "r1".into(),
        content_hash: "h1".into(),
        default_namespace: "apps".into(),
        manifests: vec![cm, web],
        keep_resources,
        correct_drift: false,
        compare_patches: vec![],
    }))
    .await;
    // Applied: the Deployment is NotReady without a controller.
    h.expect("applied", |s| match s {
        Seen::Message(Out::Status(r)) => r
            .deployments
            .into_iter()
            .find(|d| d.state() == pb::DeploymentState::NotReady),
        _ => None,
    })
    .await;
    agent
}

async fn remove(h: &Harness, keep_resources: bool) {
    h.send(In::Remove(pb::Removal {
        deployment_id: "apps/app".into(),
        keep_resources,
    }))
    .await;
}

/// Asserts that both objects are still there, released: no ownership marks, nothing else lost.
fn assert_released(h: &Harness) {
    let objects = h.store.lock().unwrap();
    for path in [SETTINGS, WEB] {
        let live = objects
            .get(path)
            .unwrap_or_else(|| panic!("{path} was deleted"));
        assert!(!marked(live), "{path} still marked: {live}");
    }
    assert_eq!(
        objects[SETTINGS]["metadata"]["labels"],
        json!({"app": "web"})
    );
    assert_eq!(objects[SETTINGS]["data"], json!({"a": "1"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_of_a_deployment_that_keeps_resources_releases_its_objects() {
    let mut h = Harness::start().await;
    let agent = deployed(&mut h, true).await;
    assert!(marked(&h.store.lock().unwrap()[SETTINGS]));

    remove(&h, true).await;
    h.wait_cluster("the inventory deleted", |o| !has_inventory(o))
        .await;
    // The inventory goes only once every object was released.
    assert_released(&h);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_keep_flag_holds_after_a_restart_whatever_the_removal_says() {
    let mut h = Harness::start().await;
    let agent = deployed(&mut h, true).await;
    agent.stop().await;

    // A new process knows only what the inventory recorded.
    let agent = h.spawn_agent(None).await;
    let held = h.expect("hello after restart", hello).await.held;
    assert_eq!(held.len(), 1);
    remove(&h, false).await;
    h.wait_cluster("the inventory deleted", |o| !has_inventory(o))
        .await;
    assert_released(&h);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keep_resources_a_removal_still_prunes() {
    let mut h = Harness::start().await;
    let agent = deployed(&mut h, false).await;
    remove(&h, false).await;
    h.wait_cluster("the objects and the inventory deleted", |o| {
        !has_inventory(o) && !o.contains_key(SETTINGS) && !o.contains_key(WEB)
    })
    .await;
    agent.stop().await;
}
