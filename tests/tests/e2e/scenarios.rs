//! The foundation's end-to-end scenarios: Git → hub → mTLS gRPC → agent → Kubernetes API →
//! status on the hub, with a real Git server, a real hub and agent, and the Kubernetes API
//! emulator.

use flotilla_proto::agent::v1::{DeploymentState, ObjectState};
use flotilla_tests::fleet::{TestFleet, wait_for};
use flotilla_tests::git_server::GitServer;
use serde_json::Value;

const CONFIG_MAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: hello
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
";

const NAMESPACE: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: shop
";

fn ready(
    s: &flotilla_proto::admin::v1::GetStatusResponse,
    cluster: &str,
    bundle: &str,
    revision: &str,
) -> bool {
    TestFleet::deployment(s, cluster, bundle)
        .is_some_and(|d| d.state == DeploymentState::Ready as i32 && d.desired_revision == revision)
}

/// Mutating requests the cluster's API server has answered so far.
pub(crate) fn writes(kube: &flotilla_tests::kube_emulator::KubeEmulator) -> usize {
    kube.requests()
        .iter()
        .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
        .count()
}

fn config_map_data(
    kube: &flotilla_tests::kube_emulator::KubeEmulator,
    name: &str,
) -> Option<Value> {
    kube.get_object("v1", "ConfigMap", Some("default"), name)
        .map(|o| o["data"].clone())
}

/// A fleet with one cluster `east` running bundle `apps/app` (the given files, committed as
/// the first revision, fetched over `url`) and Ready.
struct OneCluster {
    fleet: TestFleet,
    repo: flotilla_tests::git_server::TestRepo,
    kube: std::sync::Arc<flotilla_tests::kube_emulator::KubeEmulator>,
    rev: String,
    status: flotilla_proto::admin::v1::GetStatusResponse,
}

async fn one_cluster_ready(
    files: &[(&str, &str)],
    url: fn(&flotilla_tests::git_server::GitServer, &str) -> String,
) -> anyhow::Result<OneCluster> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    for (path, body) in files {
        repo.write(path, body)?;
    }
    let rev = repo.commit("first")?;
    fleet
        .add_repo("apps", &url(&fleet.git, "apps"), &["app"])
        .await?;
    let kube = fleet.add_cluster("east").await?;
    let status = fleet
        .wait_status("first revision Ready", |s| {
            ready(s, "east", "apps/app", &rev)
        })
        .await?;
    Ok(OneCluster {
        fleet,
        repo,
        kube,
        rev,
        status,
    })
}

/// Register → first apply: objects land with ownership marks, Namespace before what it holds,
/// and the hub shows the cluster connected and the deployment Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_first_apply() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("app/config.yaml", CONFIG_MAP)?;
    // Listed after the Deployment on purpose: the agent must apply the Namespace first.
    repo.write("app/web.yaml", DEPLOYMENT)?;
    repo.write("app/z-namespace.yaml", NAMESPACE)?;
    let rev = repo.commit("first")?;
    fleet
        .add_repo("apps", &fleet.git.http_url("apps"), &["app"])
        .await?;

    let kube = fleet.add_cluster("east").await?;
    let s = fleet
        .wait_status("east Ready", |s| ready(s, "east", "apps/app", &rev))
        .await?;
    let d = TestFleet::deployment(&s, "east", "apps/app").unwrap();
    assert_eq!(d.objects.len(), 3, "{:?}", d.objects);
    assert!(d.objects.iter().all(|o| o.state == ObjectState::Applied as i32 || o.state == ObjectState::Ready as i32));
    assert_eq!(d.reported_revision, rev);

    let web = kube
        .get_object("apps/v1", "Deployment", Some("shop"), "web")
        .expect("Deployment applied");
    assert_eq!(
        web["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "flotilla"
    );
    assert_eq!(
        web["metadata"]["annotations"]["flotilla.dev/deployment-id"],
        "apps/app"
    );
    let managers: Vec<&str> = web["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"flotilla"),
        "server-side applied with field manager flotilla: {managers:?}"
    );
    assert_eq!(
        config_map_data(&kube, "settings").unwrap()["greeting"],
        "hello"
    );

    let clusters = fleet.cli(&["cluster", "list", "-o", "json"]).await?;
    let clusters: Value = serde_json::from_str(&clusters)?;
    assert_eq!(clusters[0]["name"], "east");
    assert_eq!(clusters[0]["connected"], true);
    assert!(
        clusters[0]["kubernetesVersion"]
            .as_str()
            .unwrap()
            .starts_with('v')
    );
    let table = fleet.cli(&["status", "cluster", "east"]).await?;
    assert!(
        table.contains("east") && table.contains("apps/app") && table.contains("Ready"),
        "{table}"
    );
    let summary = fleet.cli(&["status"]).await?;
    assert!(
        summary.contains("1 clusters (1 connected), 1 deployments: 1 Ready"),
        "{summary}"
    );
    Ok(())
}

/// A commit that changes a manifest is applied; a file removed from Git is pruned; an
/// object the agent does not own is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_is_applied_and_removed_file_is_pruned() -> anyhow::Result<()> {
    let OneCluster {
        fleet,
        repo,
        kube,
        rev: _rev1,
        ..
    } = one_cluster_ready(
        &[
            ("app/config.yaml", CONFIG_MAP),
            ("app/extra.yaml", &CONFIG_MAP.replace("settings", "extra")),
        ],
        GitServer::git_url,
    )
    .await?;
    assert!(
        kube.get_object("v1", "ConfigMap", Some("default"), "extra")
            .is_some()
    );

    repo.write("app/config.yaml", &CONFIG_MAP.replace("hello", "bonjour"))?;
    repo.remove("app/extra.yaml")?;
    let rev2 = repo.commit("second")?;
    assert_eq!(fleet.sync("apps").await?.commit, rev2);
    fleet
        .wait_status("second revision Ready", |s| {
            ready(s, "east", "apps/app", &rev2)
        })
        .await?;
    assert_eq!(
        config_map_data(&kube, "settings").unwrap()["greeting"],
        "bonjour"
    );
    wait_for("extra pruned", || async {
        kube.get_object("v1", "ConfigMap", Some("default"), "extra")
            .is_none()
            .then_some(())
    })
    .await?;
    Ok(())
}

/// An object the API server refuses fails alone: the deployment is ErrApplied with a message
/// naming the file and the API server's words, and the other objects are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_object_reports_file_and_api_error() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("app/config.yaml", CONFIG_MAP)?;
    repo.write(
        "app/bad.yaml",
        &CONFIG_MAP.replace("name: settings", "name: Bad_Name"),
    )?;
    let rev = repo.commit("with a bad object")?;
    fleet
        .add_repo("apps", &fleet.git.file_url("apps"), &["app"])
        .await?;
    let kube = fleet.add_cluster("east").await?;
    let s = fleet
        .wait_status("ErrApplied", |s| {
            TestFleet::deployment(s, "east", "apps/app").is_some_and(|d| {
                d.state == DeploymentState::ErrApplied as i32 && d.desired_revision == rev
            })
        })
        .await?;
    let d = TestFleet::deployment(&s, "east", "apps/app").unwrap();
    assert!(
        d.message.contains("app/bad.yaml"),
        "names the file: {}",
        d.message
    );
    assert!(
        d.message.contains("Bad_Name") && d.message.contains("Invalid"),
        "carries the API error: {}",
        d.message
    );
    let failed = d
        .objects
        .iter()
        .find(|o| o.state == ObjectState::Failed as i32)
        .expect("a failed object");
    assert_eq!(failed.source, "app/bad.yaml#1");
    assert!(
        config_map_data(&kube, "settings").is_some(),
        "the valid object is still applied"
    );
    Ok(())
}

/// A manifest the hub cannot read is refused at the hub with file and line, and what was
/// deployed before stays deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_manifest_keeps_the_previous_revision() -> anyhow::Result<()> {
    let OneCluster {
        fleet,
        repo,
        kube,
        rev: rev1,
        ..
    } = one_cluster_ready(&[("app/config.yaml", CONFIG_MAP)], GitServer::http_url).await?;

    repo.write(
        "app/config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [oops\n",
    )?;
    repo.commit("broken")?;
    fleet.sync("apps").await?;
    let s = fleet.status().await?;
    let bundle = s.bundles.iter().find(|b| b.id == "apps/app").unwrap();
    assert!(
        bundle.error.starts_with("bundle app: app/config.yaml:1:"),
        "{}",
        bundle.error
    );
    assert_eq!(
        bundle.revision, rev1,
        "the previous revision stays the desired one"
    );
    assert!(ready(&s, "east", "apps/app", &rev1));
    assert!(config_map_data(&kube, "settings").is_some());
    let table = fleet.cli(&["status"]).await?;
    assert!(
        table.contains("cannot be built") && table.contains("app/config.yaml"),
        "{table}"
    );
    Ok(())
}

/// Hub restart: agents reconnect with the identity they have, nothing registers again,
/// status is kept, and nothing the agents already hold is applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_restart_keeps_clusters_status_and_sends_nothing_twice() -> anyhow::Result<()> {
    let OneCluster {
        mut fleet,
        repo,
        kube,
        rev,
        status: before,
    } = one_cluster_ready(&[("app/config.yaml", CONFIG_MAP)], GitServer::http_url).await?;
    let writes_before = writes(&kube);

    fleet.restart_hub().await?;
    let after = fleet.status().await?;
    assert_eq!(after.clusters.len(), 1);
    assert_eq!(
        after.clusters[0].id, before.clusters[0].id,
        "no new registration"
    );
    assert!(
        ready(&after, "east", "apps/app", &rev),
        "status survives the restart"
    );
    fleet
        .wait_status("agent reconnected", |s| s.clusters[0].connected)
        .await?;
    assert_eq!(
        writes(&kube),
        writes_before,
        "the reconnect re-applied what the agent already held"
    );
    // A new commit still flows, proving the reconnected stream works.
    repo.write("app/config.yaml", &CONFIG_MAP.replace("hello", "again"))?;
    let rev2 = repo.commit("after restart")?;
    fleet.sync("apps").await?;
    fleet
        .wait_status("new revision Ready", |s| {
            ready(s, "east", "apps/app", &rev2)
        })
        .await?;
    assert_eq!(
        config_map_data(&kube, "settings").unwrap()["greeting"],
        "again"
    );
    Ok(())
}

/// Agent restart: no token needed, same cluster identity, deployments continue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_needs_no_token() -> anyhow::Result<()> {
    let OneCluster {
        mut fleet,
        repo,
        kube,
        status: before,
        ..
    } = one_cluster_ready(&[("app/config.yaml", CONFIG_MAP)], GitServer::http_url).await?;
    fleet.stop_agent("east").await??;
    fleet
        .wait_status("agent gone", |s| !s.clusters[0].connected)
        .await?;

    fleet.start_agent("east", None)?;
    repo.write("app/config.yaml", &CONFIG_MAP.replace("hello", "restarted"))?;
    let rev2 = repo.commit("second")?;
    fleet.sync("apps").await?;
    let after = fleet
        .wait_status("Ready again", |s| {
            s.clusters[0].connected && ready(s, "east", "apps/app", &rev2)
        })
        .await?;
    assert_eq!(after.clusters.len(), 1);
    assert_eq!(after.clusters[0].id, before.clusters[0].id);
    assert_eq!(
        config_map_data(&kube, "settings").unwrap()["greeting"],
        "restarted"
    );
    Ok(())
}

/// A wrong token is refused clearly, and nothing is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    fleet.add_cluster_without_agent("east").await?;
    let real = fleet.token().await?;
    let (id, _) = real.split_once('.').unwrap();
    for bogus in [
        format!("{id}.{}", "0".repeat(52)),
        "not-a-token".to_string(),
    ] {
        let config = fleet.agent_config("east", Some(bogus.clone()))?;
        let err = tokio::time::timeout(
            flotilla_tests::fleet::DEADLINE,
            flotilla_agent::run(config, tokio_util::sync::CancellationToken::new()),
        )
        .await?
        .expect_err("a wrong token must not register");
        let msg = err.to_string();
        assert!(msg.contains("token"), "{msg}");
        assert!(
            msg.contains("flotilla token create"),
            "says what to do next: {msg}"
        );
        assert!(!msg.contains(&bogus), "no secret in the error: {msg}");
    }
    assert!(fleet.status().await?.clusters.is_empty());
    Ok(())
}

/// In a cluster the agent keeps its identity in a Secret: after a restart it reconnects as
/// the same cluster without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_in_a_secret_survives_agent_restart() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("app/config.yaml", CONFIG_MAP)?;
    let rev = repo.commit("first")?;
    fleet
        .add_repo("apps", &fleet.git.http_url("apps"), &["app"])
        .await?;
    let kube = fleet.add_cluster_without_agent("east").await?;
    fleet.use_identity_secret("east", "flotilla-agent-identity")?;
    let token = fleet.token().await?;
    fleet.start_agent("east", Some(token.clone()))?;
    let before = fleet
        .wait_status("Ready", |s| ready(s, "east", "apps/app", &rev))
        .await?;

    let secret = kube
        .get_object(
            "v1",
            "Secret",
            Some("flotilla-system"),
            "flotilla-agent-identity",
        )
        .expect("identity Secret written");
    let text = secret.to_string();
    assert!(
        !text.contains(&token),
        "the registration token is not kept in the identity"
    );
    assert!(secret["data"].as_object().is_some_and(|d| !d.is_empty()));

    fleet.stop_agent("east").await??;
    fleet
        .wait_status("agent gone", |s| !s.clusters[0].connected)
        .await?;
    fleet.start_agent("east", None)?;
    let after = fleet
        .wait_status("reconnected", |s| s.clusters[0].connected)
        .await?;
    assert_eq!(after.clusters.len(), 1);
    assert_eq!(after.clusters[0].id, before.clusters[0].id);
    Ok(())
}

/// Without any trigger, the poller picks up a new commit on its interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_picks_up_new_commits() -> anyhow::Result<()> {
    let fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("app/config.yaml", CONFIG_MAP)?;
    let rev1 = repo.commit("first")?;
    let url = fleet.git.git_url("apps");
    fleet
        .cli(&[
            "repo",
            "add",
            "apps",
            &url,
            "--path",
            "app",
            "--poll-interval",
            "1s",
        ])
        .await?;
    // The first fetch happens at once; only a later poll can see the second commit.
    fleet
        .wait_status("first commit fetched", |s| {
            s.bundles
                .iter()
                .any(|b| b.id == "apps/app" && b.revision == rev1)
        })
        .await?;
    repo.write("app/config.yaml", &CONFIG_MAP.replace("hello", "polled"))?;
    let rev2 = repo.commit("second")?;
    fleet
        .wait_status("second commit polled", |s| {
            s.bundles
                .iter()
                .any(|b| b.id == "apps/app" && b.revision == rev2)
        })
        .await?;
    let listed: Value = serde_json::from_str(&fleet.cli(&["repo", "list", "-o", "json"]).await?)?;
    assert_eq!(listed[0]["commit"], rev2.as_str());
    assert_eq!(listed[0]["error"], "");
    Ok(())
}

/// Changing a GitRepo's paths rebuilds at the current commit, without a new commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_paths_rebuild_at_the_same_commit() -> anyhow::Result<()> {
    let fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("app/config.yaml", CONFIG_MAP)?;
    repo.write(
        "other/config.yaml",
        &CONFIG_MAP.replace("settings", "other"),
    )?;
    repo.commit("two bundles")?;
    let url = fleet.git.http_url("apps");
    fleet.add_repo("apps", &url, &["app"]).await?;
    let ids = |s: &flotilla_proto::admin::v1::GetStatusResponse| {
        let mut v: Vec<String> = s.bundles.iter().map(|b| b.id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&fleet.status().await?), ["apps/app"]);

    fleet
        .cli(&[
            "repo", "add", "apps", &url, "--path", "app", "--path", "other",
        ])
        .await?;
    fleet.sync("apps").await?;
    assert_eq!(ids(&fleet.status().await?), ["apps/app", "apps/other"]);
    fleet
        .cli(&["repo", "add", "apps", &url, "--path", "other"])
        .await?;
    fleet.sync("apps").await?;
    assert_eq!(ids(&fleet.status().await?), ["apps/other"]);
    Ok(())
}

/// Credentials in a GitRepo URL never show in listings, errors or logs' status fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_a_url_stay_hidden() -> anyhow::Result<()> {
    let fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("app/config.yaml", CONFIG_MAP)?;
    repo.commit("first")?;
    // Port 9 (discard) on loopback: nothing listens, so the fetch fails and its error is shown.
    let url = "http://deployer:s3cr3t@127.0.0.1:9/apps.git";
    fleet
        .cli(&["repo", "add", "apps", url, "--path", "app"])
        .await?;
    let err = fleet
        .cli(&["repo", "sync", "apps"])
        .await
        .expect_err("nothing listens there");
    let listed = fleet.cli(&["repo", "list", "-o", "json"]).await?;
    for text in [listed.as_str(), &format!("{err:#}")] {
        assert!(!text.contains("s3cr3t"), "{text}");
    }
    assert!(listed.contains("***@127.0.0.1"), "{listed}");
    Ok(())
}

/// A custom resource listed before its CRD is applied once the CRD is Established.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_wait_for_their_crd() -> anyhow::Result<()> {
    const CR: &str = "apiVersion: example.com/v1
kind: Widget
metadata:
  name: gear
spec:
  size: 3
";
    const CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
";
    let bundle = format!("{CR}---\n{CRD}");
    let OneCluster { kube, status, .. } =
        one_cluster_ready(&[("app/widgets.yaml", &bundle)], GitServer::http_url).await?;
    let d = TestFleet::deployment(&status, "east", "apps/app").unwrap();
    assert_eq!(d.objects.len(), 2);
    let gear = kube
        .get_object("example.com/v1", "Widget", Some("default"), "gear")
        .expect("custom resource applied");
    assert_eq!(gear["spec"]["size"], 3);
    Ok(())
}
