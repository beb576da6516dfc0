//! Registration and identity, end to end: every refusal the hub makes is exercised by a real
//! cause, gives the caller a clear error (without secrets) and counts on the hub's
//! `flotilla_refusals_total`, which moves together with its audit log line.

use flotilla_proto::admin::v1 as api;
use flotilla_proto::admin::v1::admin_client::AdminClient;
use flotilla_proto::agent::v1 as wire;
use flotilla_proto::agent::v1::agent_service_client::AgentServiceClient;
use flotilla_proto::agent::v1::{DeploymentState, agent_message::Kind as Out};
use flotilla_tests::fleet::{DEADLINE, TestFleet, wait_for};
use flotilla_tests::raw_agent::{self, RawIdentity, RawStream};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub(crate) const CONFIG_MAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: default
data:
  greeting: hello
";

/// A fleet following one bundle (`apps/app`), with no cluster yet.
async fn fleet_with_bundle() -> anyhow::Result<(TestFleet, String)> {
    let fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("app/settings.yaml", CONFIG_MAP)?;
    let rev = repo.commit("first")?;
    fleet
        .add_repo("apps", &fleet.git.file_url("apps"), &["app"])
        .await?;
    Ok((fleet, rev))
}

fn ready(s: &api::GetStatusResponse, cluster: &str) -> bool {
    TestFleet::deployment(s, cluster, "apps/app")
        .is_some_and(|d| d.state == DeploymentState::Ready as i32)
}

async fn refusals(fleet: &TestFleet, reason: &str) -> anyhow::Result<f64> {
    fleet
        .metric(&format!("flotilla_refusals_total{{reason=\"{reason}\"}}"))
        .await
}

/// Run a real agent for a new cluster with `token` until it gives up; its error text.
async fn agent_refusal(fleet: &mut TestFleet, name: &str, token: &str) -> anyhow::Result<String> {
    fleet.add_cluster_without_agent(name).await?;
    let config = fleet.agent_config(name, Some(token.to_string()))?;
    let ended = tokio::time::timeout(
        DEADLINE,
        flotilla_agent::run(config, CancellationToken::new()),
    )
    .await?;
    match ended {
        Err(e) => Ok(e.to_string()),
        Ok(()) => anyhow::bail!("the agent with token {name} was not refused"),
    }
}

fn secret_of(token: &str) -> &str {
    token.split_once('.').expect("id.secret").1
}

fn token_state(list: &str, id: &str) -> Option<String> {
    let tokens: Value = serde_json::from_str(list).ok()?;
    tokens
        .as_array()?
        .iter()
        .find(|t| t["id"] == id)
        .map(|t| t["state"].as_str().unwrap_or_default().to_string())
}

/// An expired token, a single-use token used twice and a revoked token are each refused
/// with the reason and what to do; the listing shows why, and no secret appears anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_used_up_and_revoked_tokens_are_refused() -> anyhow::Result<()> {
    let (mut fleet, _) = fleet_with_bundle().await?;
    let (url, ca) = (fleet.hub_url(), fleet.ca_pem()?);

    let short = fleet.cli(&["token", "create", "--ttl", "1s"]).await?;
    let short = short.trim().to_string();
    let short_id = short.split('.').next().unwrap().to_string();
    wait_for("the one-second token to expire", || async {
        let list = fleet.cli(&["token", "list", "-o", "json"]).await.ok()?;
        (token_state(&list, &short_id)? == "expired").then_some(())
    })
    .await?;
    let err = agent_refusal(&mut fleet, "late", &short).await?;
    assert!(err.contains("it has expired"), "{err}");
    assert!(err.contains("flotilla token create"), "{err}");
    assert!(
        !err.contains(secret_of(&short)),
        "no secret in errors: {err}"
    );

    let once = fleet.cli(&["token", "create", "--max-uses", "1"]).await?;
    let once = once.trim();
    raw_agent::register(&url, &ca, once, "first", &raw_agent::new_key()).await?;
    let second = raw_agent::register(&url, &ca, once, "second", &raw_agent::new_key())
        .await
        .err()
        .expect("a single-use token registers once");
    assert_eq!(second.code(), tonic::Code::Unauthenticated);
    assert!(
        second.message().contains("used as many times as it allows"),
        "{second:?}"
    );

    let revoked = fleet.token().await?;
    let revoked_id = revoked.split('.').next().unwrap();
    let said = fleet.cli(&["token", "revoke", revoked_id]).await?;
    assert!(said.contains("no cluster can register with it"), "{said}");
    let err = agent_refusal(&mut fleet, "turned-away", &revoked).await?;
    assert!(err.contains("it was revoked"), "{err}");

    let table = fleet.cli(&["token", "list"]).await?;
    for (id, state) in [(short_id.as_str(), "expired"), (revoked_id, "revoked")] {
        let line = table.lines().find(|l| l.starts_with(id)).expect("listed");
        assert!(line.contains(state), "{table}");
    }
    assert!(table.contains("used up"), "{table}");
    for t in [&short, once, &revoked] {
        assert!(!table.contains(secret_of(t)), "token list shows no secret");
    }
    for (reason, n) in [
        ("token_expired", 1.0),
        ("token_used_up", 1.0),
        ("token_revoked", 1.0),
    ] {
        assert_eq!(refusals(&fleet, reason).await?, n, "{reason}");
    }
    let clusters = fleet.cli(&["cluster", "list"]).await?;
    assert!(
        clusters.contains("first") && !clusters.contains("second"),
        "{clusters}"
    );
    Ok(())
}

/// A token's labels and group land on the cluster; what the agent says about itself is
/// kept under its own prefix, so it cannot give itself a label that targets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_labels_win_and_agent_labels_are_kept_apart() -> anyhow::Result<()> {
    let (mut fleet, _) = fleet_with_bundle().await?;
    let token = fleet
        .cli(&["token", "create", "--label", "env=prod", "--group", "edge"])
        .await?;
    fleet.add_cluster_without_agent("east").await?;
    let mut config = fleet.agent_config("east", Some(token.trim().into()))?;
    config.labels = [("env".to_string(), "dev".to_string())].into();
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(flotilla_agent::run(config, shutdown.clone()));
    fleet
        .wait_status("east Ready", |s| ready(s, "east"))
        .await?;
    let list: Value = serde_json::from_str(&fleet.cli(&["cluster", "list", "-o", "json"]).await?)?;
    let labels = &list[0]["labels"];
    assert_eq!(labels["env"], "prod", "{labels}");
    assert_eq!(labels["flotilla.dev/group"], "edge", "{labels}");
    assert_eq!(labels["agent.flotilla.dev/env"], "dev", "{labels}");
    let reserved = fleet
        .cli(&["token", "create", "--label", "agent.flotilla.dev/env=prod"])
        .await
        .expect_err("the agent prefix is reserved");
    assert!(format!("{reserved:#}").contains("reserved"), "{reserved:#}");
    shutdown.cancel();
    agent.await??;
    Ok(())
}

/// A certificate from another CA is refused in the TLS handshake even when it names a real
/// cluster, and so is a TLS 1.2 client; both count as handshake refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_ca_and_old_tls_are_refused() -> anyhow::Result<()> {
    let (mut fleet, _) = fleet_with_bundle().await?;
    fleet.add_cluster("east").await?;
    fleet
        .wait_status("east Ready", |s| ready(s, "east"))
        .await?;
    let east = fleet.status().await?.clusters[0].id.clone();
    let forged = raw_agent::foreign_identity(&east);
    // TLS 1.3 refuses a client certificate after the client's half of the handshake, so
    // the caller sees its first call fail with the connection closed; the hub's side says why.
    let refused = match raw_agent::channel(&fleet.hub_url(), &fleet.ca_pem()?, Some(&forged)).await
    {
        Err(_) => true,
        Ok(ch) => RawStream::open(ch).await.is_err(),
    };
    assert!(refused, "a certificate from another CA was accepted");
    wait_for("the handshake refusal to be counted", || async {
        (refusals(&fleet, "tls_handshake").await.ok()? >= 1.0).then_some(())
    })
    .await?;

    // TLS 1.2 only: the hub speaks TLS 1.3 unless told otherwise.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::pem::PemObject::pem_slice_iter(fleet.ca_pem()?.as_bytes()) {
        roots.add(c?)?;
    }
    let config = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp =
        tokio::net::TcpStream::connect(fleet.hub_url().trim_start_matches("https://")).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
    let old = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await;
    assert!(old.is_err(), "a TLS 1.2 handshake succeeded");
    Ok(())
}

/// One cluster's certificate cannot report status for a deployment it was not given, nor
/// fetch manifests outside its deployments, nor call the admin API; what it reports about
/// its own deployment lands on itself only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_reports_only_about_its_own_deployments() -> anyhow::Result<()> {
    let (mut fleet, rev) = fleet_with_bundle().await?;
    fleet.add_cluster("east").await?;
    fleet
        .wait_status("east Ready", |s| ready(s, "east"))
        .await?;
    let (url, ca) = (fleet.hub_url(), fleet.ca_pem()?);
    let token = fleet.token().await?;
    let rogue = raw_agent::register(&url, &ca, &token, "rogue", &raw_agent::new_key()).await?;
    let channel = raw_agent::channel(&url, &ca, Some(&rogue)).await?;
    let mut stream = RawStream::open(channel.clone()).await?;
    let deployment = stream
        .next_matching(|k| match k {
            wire::hub_message::Kind::Deploy(d) => Some(d),
            _ => None,
        })
        .await?;
    let forged = |id: &str, hash: &str| {
        Out::Status(wire::StatusReport {
            deployments: vec![wire::DeploymentStatus {
                deployment_id: id.into(),
                content_hash: hash.into(),
                state: DeploymentState::ErrApplied as i32,
                message: "forged".into(),
                objects: Vec::new(),
                revision: rev.clone(),
            }],
        })
    };
    // About its own copy of the bundle: recorded for the rogue cluster only.
    stream
        .send(forged(&deployment.deployment_id, &deployment.content_hash))
        .await;
    let s = fleet
        .wait_status("the rogue's own report", |s| {
            TestFleet::deployment(s, "rogue", "apps/app").is_some_and(|d| d.message == "forged")
        })
        .await?;
    assert!(ready(&s, "east"), "east's status is untouched");

    // About a deployment it was never sent: refused, and the stream is closed.
    stream.send(forged("someone/elses", "0000")).await;
    let (_, ended) = stream.until_closed().await;
    let ended = ended.expect("the hub closes the stream with an error");
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended:?}");
    assert!(
        ended.message().contains("not assigned to this cluster"),
        "{ended:?}"
    );
    assert_eq!(refusals(&fleet, "status_not_assigned").await?, 1.0);

    let fetch = AgentServiceClient::new(channel.clone())
        .fetch_manifests(wire::FetchManifestsRequest {
            hashes: vec!["ab".repeat(32)],
        })
        .await
        .expect_err("a manifest outside its deployments");
    assert_eq!(fetch.code(), tonic::Code::PermissionDenied, "{fetch:?}");

    let admin = AdminClient::new(channel)
        .list_clusters(api::ListClustersRequest {})
        .await
        .expect_err("a cluster certificate is not an admin credential");
    assert_eq!(admin.code(), tonic::Code::Unauthenticated, "{admin:?}");
    assert!(admin.message().contains("admin credential"), "{admin:?}");
    assert_eq!(refusals(&fleet, "manifest_not_assigned").await?, 1.0);
    assert_eq!(refusals(&fleet, "admin_required").await?, 1.0);
    Ok(())
}

/// `cluster delete` cuts a connected agent off at once: its stream closes, its certificate is
/// refused from then on, the CLI says what stays on the cluster, and the name is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_cluster_is_cut_off_mid_stream() -> anyhow::Result<()> {
    let (mut fleet, _) = fleet_with_bundle().await?;
    let kube = fleet.add_cluster("east").await?;
    fleet
        .wait_status("east Ready", |s| ready(s, "east"))
        .await?;
    let (url, ca) = (fleet.hub_url(), fleet.ca_pem()?);
    // A second holder of east's identity, to prove the certificate itself is refused.
    let dir = fleet.agent_state_dir("east")?;
    let east = RawIdentity {
        cluster_id: String::new(),
        cert_pem: std::fs::read_to_string(dir.join("tls.crt"))?,
        key_pem: std::fs::read_to_string(dir.join("tls.key"))?,
    };

    let said = fleet.cli(&["cluster", "delete", "east"]).await?;
    assert!(said.contains("has been disconnected"), "{said}");
    assert!(said.contains("stay in the cluster"), "{said}");
    assert!(said.contains("certificate is refused"), "{said}");
    wait_for("east's stream to be closed", || async {
        let closed = fleet
            .metric("flotilla_agent_streams_closed_total{reason=\"deleted\"}")
            .await
            .ok()?;
        (closed >= 1.0).then_some(())
    })
    .await?;
    assert!(!fleet.cli(&["cluster", "list"]).await?.contains("east"));
    assert!(
        kube.get_object("v1", "ConfigMap", Some("default"), "settings")
            .is_some(),
        "what was deployed stays"
    );

    let refused = match RawStream::open(raw_agent::channel(&url, &ca, Some(&east)).await?).await {
        Err(s) => s,
        Ok(mut s) => s.until_closed().await.1.expect("refused"),
    };
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("was deleted"), "{refused:?}");
    assert!(refusals(&fleet, "cluster_deleted").await? >= 1.0);

    let token = fleet.token().await?;
    raw_agent::register(&url, &ca, &token, "east", &raw_agent::new_key()).await?;
    Ok(())
}

/// Registering again under a taken name works only with the key of that cluster's
/// certificate (a lost answer), and gives back the same cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_needs_the_clusters_own_key() -> anyhow::Result<()> {
    let (fleet, _) = fleet_with_bundle().await?;
    let (url, ca) = (fleet.hub_url(), fleet.ca_pem()?);
    let key = raw_agent::new_key();
    let first = raw_agent::register(&url, &ca, &fleet.token().await?, "east", &key).await?;
    let again = raw_agent::register(&url, &ca, &fleet.token().await?, "east", &key).await?;
    assert_eq!(first.cluster_id, again.cluster_id);
    assert_ne!(first.cert_pem, again.cert_pem, "a new certificate");
    let other = raw_agent::register(
        &url,
        &ca,
        &fleet.token().await?,
        "east",
        &raw_agent::new_key(),
    )
    .await
    .err()
    .expect("another key cannot take the name");
    assert_eq!(other.code(), tonic::Code::AlreadyExists, "{other:?}");
    assert_eq!(fleet.status().await?.clusters.len(), 1);
    Ok(())
}

/// The HTTP port answers probes and serves Prometheus metrics without a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_are_served_over_plain_http() -> anyhow::Result<()> {
    let (mut fleet, _) = fleet_with_bundle().await?;
    fleet.add_cluster("east").await?;
    fleet
        .wait_status("east Ready", |s| ready(s, "east"))
        .await?;
    assert_eq!(fleet.http_get("/healthz").await?.0, 200);
    assert_eq!(fleet.http_get("/readyz").await?.0, 200);
    assert_eq!(fleet.metric("flotilla_agent_streams").await?, 1.0);
    assert_eq!(fleet.metric("flotilla_clusters").await?, 1.0);
    assert_eq!(
        fleet
            .metric("flotilla_certificates_issued_total{kind=\"registration\"}")
            .await?,
        1.0
    );
    Ok(())
}
