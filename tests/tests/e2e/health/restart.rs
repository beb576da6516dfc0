//! An agent restart and the deployments it holds: its `Hello` lists them, so the hub resends
//! nothing; the agent fetches their manifests and watches them again. What happened while it
//! was away (a Deployment no longer ready, a hand edit, a delete) shows on the hub, or with
//! correctDrift is put right, and only what drifted is applied: the inventory is not written.

use flotilla_tests::kube_emulator::KubeEmulator;
use serde_json::{Value, json};

use super::{CONFIG_MAP, DEPLOYMENT, Health, Options, object, object_is};

/// Requests since `since` that change something (dry runs left out): `METHOD path`.
fn writes_since(kube: &KubeEmulator, since: usize) -> Vec<String> {
    kube.requests()[since..]
        .iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
        .filter(|r| !r.query.contains("dryRun=All"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// The resourceVersion of the agent's inventory ConfigMap(s).
fn inventories(kube: &KubeEmulator) -> Vec<Value> {
    kube.list_objects("v1", "ConfigMap", Some("flotilla-system"))
        .into_iter()
        .filter(|cm| {
            cm["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("flotilla-inv-"))
        })
        .map(|cm| cm["metadata"]["resourceVersion"].clone())
        .collect()
}

const EXTRA: &str = "extra";

/// `settings`, `extra` and `web`, Ready; then the agent is stopped.
async fn ready_then_stopped(options: Options) -> anyhow::Result<(Health, Value)> {
    let files = [
        ("app/config.yaml", CONFIG_MAP),
        ("app/extra.yaml", &CONFIG_MAP.replace("settings", EXTRA)),
        ("app/web.yaml", DEPLOYMENT),
    ];
    let manual = options.manual_status;
    let mut h = Health::start(&files, options).await?;
    if manual {
        // The workload controllers are paused: roll `web` out by hand once it is applied.
        h.wait_state("NotReady").await?;
        h.set_status("Deployment", "web", rolled_out(3))?;
    }
    let ready = h.wait_state("Ready").await?;
    h.fleet.stop_agent("east").await??;
    h.fleet
        .wait_status("agent gone", |s| !s.clusters[0].connected)
        .await?;
    Ok((h, ready))
}

fn rolled_out(available: i64) -> Value {
    json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
        "availableReplicas": available,
        "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]})
}

/// Without correctDrift: NotReady, Modified and Missing made while the agent was away show
/// once it is back, with nothing applied and nothing re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_the_agent_was_away_show_after_its_restart() -> anyhow::Result<()> {
    let options = Options {
        manual_status: true,
        ..Options::default()
    };
    let (mut h, ready) = ready_then_stopped(options).await?;
    h.set_status("Deployment", "web", rolled_out(1))?;
    h.edit("ConfigMap", "settings", "kubectl-edit", |cm| {
        cm["data"]["greeting"] = json!("bonjour");
    })?;
    h.kube
        .delete_object("v1", "ConfigMap", Some("default"), EXTRA)?;
    let (inventory, since) = (inventories(&h.kube), h.kube.requests().len());

    h.fleet.start_agent("east", None)?;
    let d = h
        .wait("the held deployment looked at again", |d| {
            d["state"] == "Missing"
                && object_is(d, "ConfigMap", "settings", "Modified")
                && object_is(d, "Deployment", "web", "NotReady")
        })
        .await?;
    assert_eq!(d["revision"], ready["revision"], "the same content");
    assert_eq!(
        object(&d, "ConfigMap", "settings")["modifiedFields"],
        json!(["/data/greeting"])
    );
    assert_eq!(
        object(&d, "Deployment", "web")["message"],
        "Deployment web: 1 of 3 replicas available"
    );
    assert_eq!(object(&d, "ConfigMap", EXTRA)["state"], "Missing");
    assert_eq!(writes_since(&h.kube, since), Vec::<String>::new());
    assert_eq!(
        inventories(&h.kube),
        inventory,
        "the inventory is not written"
    );
    assert!(h.live("ConfigMap", EXTRA).is_none(), "not re-created");
    let refused = r#"flotilla_refusals_total{reason="manifest_not_assigned"}"#;
    assert_eq!(h.fleet.metric(refused).await?, 0.0);

    // Watched again: a change now shows as it would have before the restart.
    h.set_status("Deployment", "web", rolled_out(3))?;
    h.wait("web ready again", |d| {
        object_is(d, "Deployment", "web", "Ready")
    })
    .await?;
    Ok(())
}

/// With correctDrift: what drifted while the agent was away is put right once it is back,
/// and only that is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_drift_after_a_restart_applies_only_what_drifted() -> anyhow::Result<()> {
    let options = Options {
        correct_drift: true,
        ..Options::default()
    };
    let (mut h, _) = ready_then_stopped(options).await?;
    h.edit("Deployment", "web", "kubectl-edit", |d| {
        d["spec"]["replicas"] = json!(5);
    })?;
    h.kube
        .delete_object("v1", "ConfigMap", Some("default"), "settings")?;
    let (inventory, since) = (inventories(&h.kube), h.kube.requests().len());

    h.fleet.start_agent("east", None)?;
    let d = h
        .wait("drift corrected", |d| {
            d["state"] == "Ready"
                && object(d, "Deployment", "web")["driftCorrections"] == 1
                && object(d, "ConfigMap", "settings")["driftCorrections"] == 1
        })
        .await?;
    assert_eq!(
        object(&d, "ConfigMap", "settings")["message"],
        "re-created after it was deleted from the cluster"
    );
    assert_eq!(object(&d, "ConfigMap", EXTRA)["driftCorrections"], 0);
    let mut writes = writes_since(&h.kube, since);
    writes.sort();
    assert_eq!(
        writes,
        [
            "PATCH /api/v1/namespaces/default/configmaps/settings",
            "PATCH /apis/apps/v1/namespaces/default/deployments/web",
        ]
    );
    assert_eq!(
        inventories(&h.kube),
        inventory,
        "the inventory is not written"
    );
    let web = h.live("Deployment", "web").expect("web");
    assert_eq!(web["spec"]["replicas"], 3);
    assert_eq!(
        h.live("ConfigMap", "settings").expect("re-created")["data"]["greeting"],
        "hello"
    );
    Ok(())
}
