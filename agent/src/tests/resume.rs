//! A restarted agent and the deployments it holds: the hub resends nothing (`Hello` lists
//! them), so after the hub's `SyncComplete` the agent fetches their manifests and watches them
//! again: drift and deletes made while it was away are reported (or, with `correctDrift`,
//! put right, and only those objects applied), the inventory is left as it was, and a new
//! content from the hub still wins.

use serde_json::{Value, json};

use super::harness::*;
use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::agent_message::Kind as Out;
use flotilla_proto::agent::v1::hub_message::Kind as In;

const SETTINGS: &str = "/api/v1/namespaces/apps/configmaps/settings";
const EXTRA: &str = "/api/v1/namespaces/apps/configmaps/extra";

/// `settings`, `extra` and `web` as one deployment `apps/app`.
fn content(h: &Harness, hash: &str, correct_drift: bool) -> pb::BundleDeployment {
    let config = |name: &str| {
        h.offer(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}}))
    };
    let web = h.offer(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}}),
    );
    pb::BundleDeployment {
        deployment_id: "apps/app".into(),
        bundle: "apps/app".into(),
        revision: format!("rev-{hash}"),
        content_hash: hash.into(),
        default_namespace: "apps".into(),
        manifests: vec![config("settings"), config("extra"), web],
        correct_drift,
        ..Default::default()
    }
}

/// The next status of `apps/app` for content `hash` that `check` accepts.
async fn status(
    h: &mut Harness,
    what: &str,
    hash: &str,
    check: impl Fn(&pb::DeploymentStatus) -> bool,
) -> pb::DeploymentStatus {
    h.expect(what, |s| match s {
        Seen::Message(Out::Status(r)) => r
            .deployments
            .into_iter()
            .find(|d| d.content_hash == hash && check(d)),
        _ => None,
    })
    .await
}

fn object<'a>(d: &'a pb::DeploymentStatus, name: &str) -> &'a pb::ObjectStatus {
    d.objects.iter().find(|o| o.name == name).expect(name)
}

/// Deploys, stops the agent, edits `settings` and deletes `extra` behind its back, starts it
/// again and lets the hub say it is in sync (sending nothing). Returns the agent, the number
/// of API requests before the restart, and the inventory ConfigMap before it.
async fn restarted_after_drift(
    h: &mut Harness,
    correct_drift: bool,
) -> (RunningAgent, usize, Value) {
    let agent = h.spawn_agent(Some("good")).await;
    h.expect("hello", hello).await;
    let deploy = content(h, "h1", correct_drift);
    let mut hashes: Vec<String> = deploy.manifests.iter().map(|m| m.hash.clone()).collect();
    hashes.sort();
    h.send(In::Deploy(deploy)).await;
    // Without a controller the Deployment stays NotReady: applied.
    status(h, "applied", "h1", |d| {
        d.state() == pb::DeploymentState::NotReady
    })
    .await;
    agent.stop().await;

    let inventory = {
        let mut store = h.store.lock().unwrap();
        store.get_mut(SETTINGS).unwrap()["data"]["a"] = json!("edited");
        store.remove(EXTRA);
        let key = store
            .keys()
            .find(|k| k.contains("/configmaps/flotilla-inv-"))
            .cloned();
        store[&key.expect("an inventory")].clone()
    };
    let before = h.api.requests().len();
    let agent = h.spawn_agent(None).await;
    let held = h.expect("hello after restart", hello).await;
    assert_eq!(held.held.len(), 1);
    assert_eq!(held.held[0].content_hash, "h1");
    h.send(In::SyncComplete(pb::SyncComplete {})).await;
    let mut fetched = h.expect("the held manifests fetched", fetch_hashes).await;
    fetched.sort();
    assert_eq!(fetched, hashes, "every manifest of the held content, once");
    (agent, before, inventory)
}

/// Writes to the API server since request `since`, dry runs left out: `METHOD path`.
fn writes_since(h: &Harness, since: usize) -> Vec<String> {
    h.api.requests()[since..]
        .iter()
        .filter(|r| r.method != "GET" && !r.target.contains("dryRun=All"))
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect()
}

fn inventory_now(h: &Harness) -> Value {
    let store = h.store.lock().unwrap();
    store
        .iter()
        .find(|(k, _)| k.contains("/configmaps/flotilla-inv-"))
        .map(|(_, v)| v.clone())
        .expect("an inventory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_while_away_is_reported_after_a_restart_and_nothing_is_applied() {
    let mut h = Harness::start().await;
    let (agent, before, inventory) = restarted_after_drift(&mut h, false).await;

    let d = status(&mut h, "held content looked at", "h1", |d| {
        d.state() == pb::DeploymentState::Missing
    })
    .await;
    assert_eq!(d.revision, "rev-h1");
    let settings = object(&d, "settings");
    assert_eq!(settings.state(), pb::ObjectState::Modified);
    assert_eq!(settings.modified_fields, ["/data/a"]);
    assert_eq!(object(&d, "extra").state(), pb::ObjectState::Missing);
    assert_eq!(object(&d, "web").state(), pb::ObjectState::NotReady);
    assert_eq!(
        writes_since(&h, before),
        Vec::<String>::new(),
        "nothing applied"
    );
    assert_eq!(
        inventory_now(&h),
        inventory,
        "the inventory is left as it was"
    );
    assert_eq!(h.store.lock().unwrap()[SETTINGS]["data"]["a"], "edited");

    // The hub's next content wins over the held one: applied, drift and delete undone.
    let next = content(&h, "h2", false);
    h.send(In::Deploy(next)).await;
    let d = status(&mut h, "new content applied", "h2", |d| {
        d.state() == pb::DeploymentState::NotReady
    })
    .await;
    assert_eq!(object(&d, "extra").state(), pb::ObjectState::Ready);
    let store = h.store.lock().unwrap().clone();
    assert_eq!(store[SETTINGS]["data"]["a"], "1");
    assert!(store.contains_key(EXTRA));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_correct_drift_only_what_drifted_is_applied_after_a_restart() {
    let mut h = Harness::start().await;
    let (agent, before, inventory) = restarted_after_drift(&mut h, true).await;

    let d = status(&mut h, "drift corrected", "h1", |d| {
        d.state() == pb::DeploymentState::NotReady
            && d.objects
                .iter()
                .filter(|o| o.drift_corrections == 1)
                .count()
                == 2
    })
    .await;
    assert_eq!(
        object(&d, "extra").message,
        "re-created after it was deleted from the cluster"
    );
    assert_eq!(object(&d, "settings").message, "drift corrected: /data/a");
    let mut writes = writes_since(&h, before);
    writes.sort();
    assert_eq!(
        writes,
        [format!("PATCH {EXTRA}"), format!("PATCH {SETTINGS}")]
    );
    assert_eq!(
        inventory_now(&h),
        inventory,
        "the inventory is left as it was"
    );
    assert_eq!(h.store.lock().unwrap()[SETTINGS]["data"]["a"], "1");
    agent.stop().await;
}
