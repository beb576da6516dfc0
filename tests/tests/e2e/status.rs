//! Fleet-wide status where people look: `flotilla status` (fleet, GitRepo, cluster, group;
//! table, JSON, YAML; `--watch`; `--history`), the hub's JSON views and its Prometheus
//! metrics all tell the same story, change with each real cause and recover when it goes.

use std::sync::{Arc, Mutex};

use clap::Parser as _;
use flotilla_tests::fixtures::{branch_per_environment_gitrepo, config_map};
use flotilla_tests::fleet::{TestFleet, wait_for};
use serde_json::Value;

/// The cluster group of the staging clusters.
const STAGING_GROUP: &str = r#"
---
apiVersion: flotilla.dev/v1
kind: ClusterGroup
metadata:
  name: staging
spec:
  selector:
    matchLabels: {env: staging}
"#;

async fn json(fleet: &TestFleet, args: &[&str]) -> anyhow::Result<Value> {
    let mut argv = vec!["status"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["-o", "json"]);
    Ok(serde_json::from_str(&fleet.cli(&argv).await?)?)
}

/// Wait until the fleet summary satisfies `check`; returns it.
async fn wait_summary(
    fleet: &TestFleet,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    wait_for(what, || async {
        let v = json(fleet, &[]).await.ok()?;
        check(&v).then_some(v)
    })
    .await
}

fn count(v: &Value, state: &str) -> u64 {
    v["states"][state].as_u64().unwrap_or(0)
}

/// The metrics move once a second (the hub's upkeep task): wait for a sample's value.
async fn wait_metric(fleet: &TestFleet, sample: &str, want: f64) -> anyhow::Result<()> {
    wait_for(&format!("{sample} = {want}"), || async {
        (fleet.metric(sample).await.ok()? == want).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_views_and_metrics_agree_through_a_failure_and_its_recovery() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("web/web.yaml", &config_map("web"))?;
    repo.write("api/api.yaml", &config_map("api"))?;
    let good = repo.commit("web and api")?;
    repo.checkout_branch("staging", true)?;
    fleet.add_cluster_labelled("prod-1", &["env=prod"]).await?;
    fleet
        .add_cluster_labelled("stg-1", &["env=staging"])
        .await?;
    fleet
        .add_cluster_labelled("stg-2", &["env=staging"])
        .await?;
    let path = fleet.admin_config().with_file_name("apps.yaml");
    let gitrepo = branch_per_environment_gitrepo(&fleet.git.http_url("apps"), &["web", "api"]);
    std::fs::write(&path, gitrepo + STAGING_GROUP)?;
    fleet
        .cli(&["apply", "-f", path.to_str().expect("utf-8 path")])
        .await?;
    fleet.sync("apps").await?;

    let v = wait_summary(&fleet, "all 6 deployments Ready", |v| {
        count(v, "Ready") == 6
    })
    .await?;
    assert_eq!(v["clusters"]["connected"], 3, "{v}");
    assert_eq!(v["worst"], "Ready");
    assert_eq!(v["notReadyTotal"], 0);
    wait_metric(&fleet, "flotilla_deployments{state=\"Ready\"}", 6.0).await?;
    wait_metric(&fleet, "flotilla_clusters_connected", 3.0).await?;
    // Every deployment went Ready with the commit that was fetched for it.
    assert_eq!(
        fleet
            .metric("flotilla_commit_to_ready_seconds_count")
            .await?,
        6.0
    );
    assert!(
        fleet
            .metric("flotilla_git_fetch_duration_seconds_count")
            .await?
            >= 1.0
    );

    // `status --watch`, live: it renders again on each change, until it sees the failure.
    let frames = Arc::new(Mutex::new(Vec::<String>::new()));
    let watch = {
        let frames = frames.clone();
        let config = fleet.admin_config();
        tokio::spawn(async move {
            let cli = flotilla_hub::cli::Cli::try_parse_from([
                "flotilla",
                "--config",
                config.to_str().expect("utf-8 path"),
                "status",
                "--watch",
            ])?;
            flotilla_hub::cli::execute_frames(cli, |f| {
                let done = f.contains("ErrApplied");
                frames.lock().expect("frames").push(f);
                !done
            })
            .await
        })
    };
    wait_for("the first watch frame", || async {
        (!frames.lock().expect("frames").is_empty()).then_some(())
    })
    .await?;

    // A broken object on the staging branch: both staging clusters refuse it (422).
    repo.write("api/api.yaml", &config_map("Bad_Name"))?;
    let bad = repo.commit("break api in staging")?;
    fleet.sync("apps").await?;
    let v = wait_summary(&fleet, "staging's api ErrApplied", |v| {
        count(v, "ErrApplied") == 2
    })
    .await?;
    assert_eq!(count(&v, "Ready"), 4, "{v}");
    assert_eq!(v["worst"], "ErrApplied");
    let envs = v["environmentRollups"].as_array().expect("environments");
    let env = |name: &str| envs.iter().find(|e| e["name"] == name).expect("env");
    assert_eq!(env("staging")["worst"], "ErrApplied");
    assert_eq!(env("prod")["worst"], "Ready");
    let not_ready = v["notReady"].as_array().expect("notReady");
    assert_eq!(not_ready.len(), 2, "{v}");
    for d in not_ready {
        assert_eq!(
            (d["bundle"].as_str(), d["environment"].as_str()),
            (Some("apps/api"), Some("staging"))
        );
        let message = d["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("api/api.yaml") && message.contains("Bad_Name"),
            "{message}"
        );
    }
    tokio::time::timeout(flotilla_tests::fleet::DEADLINE, watch).await???;
    let seen = frames.lock().expect("frames").clone();
    assert!(
        seen.len() >= 2,
        "the watch rendered once per change: {seen:?}"
    );
    assert!(seen[0].contains("6 Ready"), "{}", seen[0]);

    // The same failure in the table, the GitRepo view, the group, the web JSON and metrics.
    let table = fleet.cli(&["status"]).await?;
    assert!(
        table.contains("3 clusters (3 connected), 6 deployments: 2 ErrApplied, 4 Ready")
            && table.contains("Not Ready (2)")
            && table.contains("stg-1")
            && table.contains("stg-2"),
        "{table}"
    );
    let g = json(&fleet, &["gitrepo", "apps"]).await?;
    let cell = g["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .find(|c| c["environment"] == "staging" && c["bundle"] == "apps/api")
        .cloned()
        .expect("staging x api");
    assert_eq!(
        (cell["worst"].as_str(), cell["total"].as_u64()),
        (Some("ErrApplied"), Some(2))
    );
    let group = json(&fleet, &["group", "staging"]).await?;
    assert_eq!(
        (group["clusters"].as_u64(), count(&group, "ErrApplied")),
        (Some(2), 2)
    );
    let yaml = fleet
        .cli(&["status", "group", "staging", "-o", "yaml"])
        .await?;
    assert!(yaml.contains("ErrApplied: 2"), "{yaml}");
    let (code, body) = fleet.http_get("/api/v1/status").await?;
    let web: Value = serde_json::from_str(&body)?;
    assert_eq!((code, &web["states"]), (200, &v["states"]));
    wait_metric(&fleet, "flotilla_deployments{state=\"ErrApplied\"}", 2.0).await?;
    wait_metric(&fleet, "flotilla_deployments{state=\"Ready\"}", 4.0).await?;

    // An agent away while a commit lands: its cluster is OutOfSync, named as such.
    fleet.stop_agent("prod-1").await??;
    repo.checkout_branch("main", false)?;
    repo.write("web/web.yaml", &config_map("web2"))?;
    repo.commit("web2 in prod")?;
    fleet.sync("apps").await?;
    let c = wait_for("prod-1's web OutOfSync", || async {
        let c = json(&fleet, &["cluster", "prod-1"]).await.ok()?;
        (c["states"]["OutOfSync"] == 1).then_some(c)
    })
    .await?;
    assert_eq!(c["connected"], false);
    wait_metric(&fleet, "flotilla_clusters_connected", 2.0).await?;
    wait_metric(&fleet, "flotilla_deployments{state=\"OutOfSync\"}", 1.0).await?;

    // Recovery: staging fixed by a revert, the agent back.
    repo.checkout_branch("staging", false)?;
    repo.write("api/api.yaml", &config_map("api"))?;
    let fixed = repo.commit("revert the broken api")?;
    fleet.sync("apps").await?;
    fleet.start_agent("prod-1", None)?;
    wait_summary(&fleet, "everything Ready again", |v| count(v, "Ready") == 6).await?;
    wait_metric(&fleet, "flotilla_deployments{state=\"ErrApplied\"}", 0.0).await?;
    wait_metric(&fleet, "flotilla_deployments{state=\"OutOfSync\"}", 0.0).await?;

    // History: what changed, and when, per deployment, oldest first.
    let c = json(&fleet, &["cluster", "stg-1", "--history"]).await?;
    let api = c["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .find(|d| d["bundle"] == "apps/api")
        .cloned()
        .expect("apps/api");
    let steps: Vec<(String, String)> = api["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|t| {
            (
                t["state"].as_str().unwrap_or_default().to_string(),
                t["revision"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let at = |state: &str, rev: &str| steps.iter().position(|s| s.0 == state && s.1 == rev);
    let ready_good = at("Ready", &good).expect("Ready at the first commit");
    let failed = at("ErrApplied", &bad).expect("ErrApplied at the broken commit");
    let ready_fixed = at("Ready", &fixed).expect("Ready at the revert");
    assert!(ready_good < failed && failed < ready_fixed, "{steps:?}");
    let table = fleet
        .cli(&["status", "cluster", "stg-1", "--history"])
        .await?;
    assert!(
        table.contains("apps/api history:") && table.contains("ErrApplied"),
        "{table}"
    );

    // A hand edit on prod-1 (no correctDrift): Modified, with the field, everywhere; undone
    // by hand, Ready again.
    let edit = |value: &'static str| {
        fleet.kube("prod-1").edit_object(
            "v1",
            "ConfigMap",
            Some("default"),
            "web2",
            "kubectl-edit",
            move |o| o["data"]["greeting"] = value.into(),
        )
    };
    edit("by hand")?;
    let v = wait_summary(&fleet, "prod-1's web Modified", |v| {
        count(v, "Modified") == 1
    })
    .await?;
    let d = &v["notReady"][0];
    assert_eq!(
        (d["cluster"].as_str(), d["state"].as_str()),
        (Some("prod-1"), Some("Modified"))
    );
    let c = json(&fleet, &["cluster", "prod-1"]).await?;
    let web = c["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .find(|d| d["bundle"] == "apps/web")
        .cloned()
        .expect("apps/web");
    assert_eq!(
        web["objects"][0]["modifiedFields"],
        serde_json::json!(["/data/greeting"]),
        "{web}"
    );
    let (_, body) = fleet.http_get("/api/v1/status/clusters/prod-1").await?;
    let page: Value = serde_json::from_str(&body)?;
    assert_eq!(page["states"], c["states"]);
    wait_metric(&fleet, "flotilla_deployments{state=\"Modified\"}", 1.0).await?;
    edit("hello")?;
    wait_summary(&fleet, "the edit undone", |v| count(v, "Ready") == 6).await?;
    wait_metric(&fleet, "flotilla_deployments{state=\"Modified\"}", 0.0).await?;

    // Unknown names say what to do.
    let err = fleet
        .cli(&["status", "cluster", "nope"])
        .await
        .expect_err("no such cluster");
    assert!(err.to_string().contains("flotilla cluster list"), "{err}");
    Ok(())
}
