//! Certificates over time: short-lived cluster certificates renewed over the live stream
//! across several expiries, and a CA rotation with agents connected and Git moving, both
//! without a stream dropping or a deployment stalling.

use std::time::Duration;

use flotilla_proto::admin::v1 as api;
use flotilla_proto::agent::v1::DeploymentState;
use flotilla_tests::fleet::{TestFleet, wait_for};
use serde_json::Value;

fn config_map(greeting: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: default\ndata:\n  greeting: {greeting}\n"
    )
}

fn all_ready(s: &api::GetStatusResponse, clusters: &[&str], rev: &str) -> bool {
    clusters.iter().all(|c| {
        TestFleet::deployment(s, c, "apps/app")
            .is_some_and(|d| d.state == DeploymentState::Ready as i32 && d.reported_revision == rev)
    })
}

/// `fleet` following one bundle, with an agent for each of `names`, all Ready.
async fn fleet_ready(
    mut fleet: TestFleet,
    names: &[&str],
) -> anyhow::Result<(TestFleet, flotilla_tests::git_server::TestRepo, String)> {
    let repo = fleet.git.create_repo("apps")?;
    repo.write("app/settings.yaml", &config_map("one"))?;
    let first = repo.commit("first")?;
    fleet
        .add_repo("apps", &fleet.git.file_url("apps"), &["app"])
        .await?;
    for n in names {
        fleet.add_cluster(n).await?;
    }
    fleet
        .wait_status("every cluster Ready", |s| all_ready(s, names, &first))
        .await?;
    Ok((fleet, repo, first))
}

/// Every stream ever closed, whatever the reason.
async fn streams_closed(fleet: &TestFleet) -> anyhow::Result<f64> {
    let (_, text) = fleet.http_get("/metrics").await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("flotilla_agent_streams_closed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn renewals(fleet: &TestFleet) -> anyhow::Result<f64> {
    fleet
        .metric("flotilla_certificates_issued_total{kind=\"renewal\"}")
        .await
}

/// With four-second certificates, agents renew over their streams again and again: after
/// several lifetimes the original streams are still the only ones, nothing expired, and a
/// new commit still reaches every cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_over_the_stream_across_expiry() -> anyhow::Result<()> {
    let names = ["east", "west"];
    let (fleet, repo, _) = fleet_ready(
        TestFleet::start_with(|c| c.client_cert_ttl = Duration::from_secs(4)).await?,
        &names,
    )
    .await?;
    let expiry_before: i64 = fleet
        .status()
        .await?
        .clusters
        .iter()
        .map(|c| c.certificate_expires)
        .max()
        .unwrap_or_default();

    // Three renewals per cluster span more than two certificate lifetimes.
    wait_for("three renewals per cluster", || async {
        (renewals(&fleet).await.ok()? >= 6.0).then_some(())
    })
    .await?;
    repo.write("app/settings.yaml", &config_map("two"))?;
    let second = repo.commit("second")?;
    fleet.sync("apps").await?;
    let s = fleet
        .wait_status("the new commit Ready everywhere", |s| {
            all_ready(s, &names, &second)
        })
        .await?;
    assert!(
        s.clusters
            .iter()
            .all(|c| c.connected && c.certificate_expires > expiry_before),
        "every cluster holds a newer certificate: {:?}",
        s.clusters
    );
    assert_eq!(
        fleet.metric("flotilla_agent_streams_opened_total").await?,
        2.0
    );
    assert_eq!(streams_closed(&fleet).await?, 0.0, "no stream ended");
    assert_eq!(
        fleet
            .metric("flotilla_refusals_total{reason=\"certificate_expired\"}")
            .await?,
        0.0
    );
    Ok(())
}

fn ca_status(text: &str) -> (usize, Vec<String>) {
    let v: Value = serde_json::from_str(text).expect("ca status JSON");
    let cas = v["cas"].as_array().map_or(0, Vec::len);
    let pending = v["clustersOnPrevious"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    (cas, pending)
}

/// A CA rotation with agents connected and commits landing meanwhile: connected agents
/// renew at once, an agent that was away is held back by `ca retire` until it has renewed
/// too, no stream drops, and after retirement an agent configured with the old CA still
/// reconnects (it trusts the bundle the hub gave it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_with_agents_connected_drops_no_stream() -> anyhow::Result<()> {
    let names = ["east", "west", "north"];
    let (mut fleet, repo, _) = fleet_ready(TestFleet::start().await?, &names).await?;
    let old_ca = fleet.ca_pem()?;
    // North is away during the rotation.
    fleet.stop_agent("north").await??;
    let opened_before = fleet.metric("flotilla_agent_streams_opened_total").await?;
    let closed_before = streams_closed(&fleet).await?;

    let said = fleet.cli(&["ca", "rotate"]).await?;
    assert!(said.contains("both CAs are trusted"), "{said}");
    repo.write("app/settings.yaml", &config_map("two"))?;
    let second = repo.commit("during the rotation")?;
    fleet.sync("apps").await?;
    let pending = wait_for("connected clusters to renew from the new CA", || async {
        let (cas, pending) = ca_status(&fleet.cli(&["ca", "status", "-o", "json"]).await.ok()?);
        (cas == 2 && pending == ["north"]).then_some(pending)
    })
    .await?;
    let refused = fleet
        .cli(&["ca", "retire"])
        .await
        .expect_err("north still holds an old certificate");
    assert!(format!("{refused:#}").contains("north"), "{refused:#}");
    assert_eq!(pending, ["north"]);

    fleet.start_agent("north", None)?;
    wait_for("north to renew on reconnect", || async {
        let (_, pending) = ca_status(&fleet.cli(&["ca", "status", "-o", "json"]).await.ok()?);
        pending.is_empty().then_some(())
    })
    .await?;
    let said = fleet.cli(&["ca", "retire"]).await?;
    assert!(said.contains("retired"), "{said}");
    let (cas, _) = ca_status(&fleet.cli(&["ca", "status", "-o", "json"]).await?);
    assert_eq!(cas, 1);
    assert_ne!(
        fleet.ca_pem()?,
        old_ca,
        "the admin credential carries the new CA"
    );

    repo.write("app/settings.yaml", &config_map("three"))?;
    let third = repo.commit("after the rotation")?;
    fleet.sync("apps").await?;
    fleet
        .wait_status("the last commit Ready everywhere", |s| {
            all_ready(s, &names, &third) && s.clusters.iter().all(|c| c.connected)
        })
        .await?;
    let _ = second;
    // Only north's reconnect opened a stream; none closed during the rotation.
    assert_eq!(
        fleet.metric("flotilla_agent_streams_opened_total").await? - opened_before,
        1.0
    );
    assert_eq!(streams_closed(&fleet).await? - closed_before, 0.0);

    // A restart of an agent whose flags still name the old CA: the hub's bundle wins.
    fleet.stop_agent("east").await??;
    let mut config = fleet.agent_config("east", None)?;
    config.ca_pem = Some(old_ca);
    fleet.start_agent_with("east", config)?;
    wait_for("east to reconnect after the CA was retired", || async {
        let s = fleet.status().await.ok()?;
        s.clusters
            .iter()
            .any(|c| c.name == "east" && c.connected)
            .then_some(())
    })
    .await?;
    Ok(())
}
