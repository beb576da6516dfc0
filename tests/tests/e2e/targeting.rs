//! Targeting end to end: GitRepos and ClusterGroups applied as YAML, clusters labelled by
//! their registration token and relabelled by an admin, branch-per-environment with promotion
//! by merge, preview, and push webhooks.

use std::sync::Arc;

use flotilla_tests::fleet::{TestFleet, wait_for};
use flotilla_tests::kube_emulator::KubeEmulator;
use serde_json::Value;

fn config_map(name: &str, tier: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  tier: {tier}\n")
}

/// The `tier` of ConfigMap `name` in namespace default, if it exists.
fn tier(kube: &KubeEmulator, name: &str) -> Option<String> {
    kube.get_object("v1", "ConfigMap", Some("default"), name)
        .and_then(|o| o["data"]["tier"].as_str().map(str::to_string))
}

/// Wait until every `(cluster, tier)` pair holds: ConfigMap `name` has that tier, or is
/// absent for `None`.
async fn wait_tiers(
    what: &str,
    clusters: &[(&Arc<KubeEmulator>, Option<&str>)],
    name: &str,
) -> anyhow::Result<()> {
    wait_for(what, || async {
        clusters
            .iter()
            .all(|(kube, want)| tier(kube, name).as_deref() == *want)
            .then_some(())
    })
    .await
}

/// Write `yaml` to a file in the fleet's temporary directory and `flotilla apply -f` it.
async fn apply(fleet: &TestFleet, file: &str, yaml: &str) -> anyhow::Result<String> {
    let path = fleet.admin_config().with_file_name(file);
    std::fs::write(&path, yaml)?;
    fleet
        .cli(&["apply", "-f", path.to_str().expect("utf-8 path")])
        .await
}

const ENVIRONMENTS: &str = r#"
apiVersion: flotilla.dev/v1
kind: GitRepo
metadata:
  name: apps
spec:
  repo: URL
  paths: [web]
  pollingInterval: 1h
  environments:
  - name: prod
    branch: main
    clusterSelector:
      matchLabels: {env: prod}
  - name: staging
    branch: staging
    clusterSelector:
      matchExpressions:
      - {key: env, operator: In, values: [staging, dev]}
"#;

/// Branch per environment: each environment's clusters run their branch's head; relabelling
/// a cluster moves it; merging staging into main promotes; preview shows without deploying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_are_environments_relabel_moves_and_merge_promotes() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("web/config.yaml", &config_map("web", "v1"))?;
    let v1 = repo.commit("v1")?;
    repo.checkout_branch("staging", true)?;
    repo.write("web/config.yaml", &config_map("web", "v2"))?;
    repo.commit("v2 on staging")?;

    let dev = fleet.add_cluster_labelled("dev-1", &["env=dev"]).await?;
    let stg = fleet
        .add_cluster_labelled("stg-1", &["env=staging"])
        .await?;
    let prod = fleet.add_cluster_labelled("prod-1", &["env=prod"]).await?;
    let other = fleet.add_cluster_labelled("lab-1", &["env=lab"]).await?;

    let yaml = ENVIRONMENTS.replace("URL", &fleet.git.http_url("apps"));
    let out = apply(&fleet, "apps.yaml", &yaml).await?;
    assert_eq!(out, "gitrepo/apps created\n");
    assert_eq!(
        apply(&fleet, "apps.yaml", &yaml).await?,
        "gitrepo/apps unchanged\n"
    );
    fleet.sync("apps").await?;
    wait_tiers(
        "each environment on its branch",
        &[(&prod, Some("v1")), (&stg, Some("v2")), (&dev, Some("v2"))],
        "web",
    )
    .await?;
    assert_eq!(tier(&other, "web"), None, "no environment selects env=lab");

    let table = fleet.cli(&["status"]).await?;
    assert!(
        table.contains("ENVIRONMENT") && table.contains("staging"),
        "{table}"
    );
    let s = fleet.status().await?;
    let d = TestFleet::deployment(&s, "stg-1", "apps/web").expect("a deployment");
    assert_eq!(d.environment, "staging");
    assert_eq!(d.desired_revision, repo.head("staging")?);

    // Relabel dev-1 into prod: it moves to main's content, under the same deployment.
    let out = fleet
        .cli(&["cluster", "label", "dev-1", "env=prod"])
        .await?;
    assert!(out.contains("env=prod"), "{out}");
    wait_tiers("dev-1 moved to prod", &[(&dev, Some("v1"))], "web").await?;

    // Preview a new staging commit: shown, not deployed.
    repo.write("web/config.yaml", &config_map("web", "v3"))?;
    let v3 = repo.commit("v3 on staging")?;
    let preview = fleet
        .cli(&["preview", "apps", "--cluster", "stg-1"])
        .await?;
    assert!(
        preview.contains("stg-1") && preview.contains("update"),
        "{preview}"
    );
    assert!(
        preview.contains("-  tier: v2") && preview.contains("+  tier: v3"),
        "{preview}"
    );
    let objects = fleet.cli(&["preview", "apps", "--objects"]).await?;
    assert!(
        objects.contains("prod-1") && objects.contains("tier: v1"),
        "{objects}"
    );
    assert_eq!(
        tier(&stg, "web").as_deref(),
        Some("v2"),
        "preview deploys nothing"
    );

    // Promotion is a merge from staging into main.
    fleet.sync("apps").await?;
    wait_tiers("staging got v3", &[(&stg, Some("v3"))], "web").await?;
    repo.checkout_branch("main", false)?;
    let merged = repo.merge("staging", "promote v3")?;
    fleet.sync("apps").await?;
    wait_tiers(
        "promotion reached prod",
        &[(&prod, Some("v3")), (&dev, Some("v3")), (&stg, Some("v3"))],
        "web",
    )
    .await?;
    let s = fleet.status().await?;
    let d = TestFleet::deployment(&s, "prod-1", "apps/web").expect("a deployment");
    assert_eq!(d.desired_revision, merged);
    let d = TestFleet::deployment(&s, "stg-1", "apps/web").expect("a deployment");
    assert_eq!(d.desired_revision, v3);

    // Preview pinned to the first commit: prod-1 would go back to v1 (a rollback is a
    // revert or a pinned revision), shown and not deployed.
    let back = fleet
        .cli(&["preview", "apps", "--cluster", "prod-1", "--revision", &v1])
        .await?;
    assert!(
        back.contains("-  tier: v3") && back.contains("+  tier: v1"),
        "{back}"
    );

    // A hub restart sends nothing the agents already hold.
    fleet
        .wait_status("every apps/web Ready", |s| {
            s.deployments.len() == 3
                && s.deployments
                    .iter()
                    .all(|d| d.state == flotilla_proto::agent::v1::DeploymentState::Ready as i32)
        })
        .await?;
    let kubes = [&dev, &stg, &prod];
    let before: Vec<usize> = kubes.iter().map(|k| crate::scenarios::writes(k)).collect();
    fleet.restart_hub().await?;
    fleet
        .wait_status("reconnected and Ready after the restart", |s| {
            s.clusters.iter().filter(|c| c.connected).count() == 4
                && s.deployments.len() == 3
                && s.deployments
                    .iter()
                    .all(|d| d.state == flotilla_proto::agent::v1::DeploymentState::Ready as i32)
        })
        .await?;
    let s = fleet.status().await?;
    let d = TestFleet::deployment(&s, "stg-1", "apps/web").expect("a deployment");
    assert_eq!(
        (d.environment.as_str(), d.desired_revision.as_str()),
        ("staging", v3.as_str())
    );
    let after: Vec<usize> = kubes.iter().map(|k| crate::scenarios::writes(k)).collect();
    assert_eq!(before, after, "nothing re-applied after the hub restart");
    Ok(())
}

/// Cluster groups and selectors: a group's selector change and a cluster's labels re-target
/// at once, and what leaves a cluster is pruned there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_and_labels_retarget_and_prune() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("edge")?;
    repo.write("app/config.yaml", &config_map("edge-app", "edge"))?;
    repo.commit("first")?;
    let store = fleet
        .add_cluster_labelled("store-1", &["site=store"])
        .await?;
    let mall = fleet.add_cluster_labelled("mall-1", &["site=mall"]).await?;
    let yaml = format!(
        r#"
apiVersion: flotilla.dev/v1
kind: ClusterGroup
metadata: {{name: edge, labels: {{tier: edge}}}}
spec:
  selector:
    matchLabels: {{site: store}}
---
apiVersion: fleet.cattle.io/v1alpha1
kind: GitRepo
metadata: {{name: edge}}
spec:
  repo: {}
  paths: [app]
  targets:
  - clusterGroupSelector:
      matchLabels: {{tier: edge}}
"#,
        fleet.git.http_url("edge")
    );
    let out = apply(&fleet, "edge.yaml", &yaml).await?;
    assert_eq!(out, "clustergroup/edge created\ngitrepo/edge created\n");
    fleet.sync("edge").await?;
    wait_tiers(
        "only the group's cluster",
        &[(&store, Some("edge")), (&mall, None)],
        "edge-app",
    )
    .await?;
    let groups = fleet.cli(&["get", "clustergroups"]).await?;
    assert!(groups.contains("edge") && groups.contains(" 1"), "{groups}");

    // The group now selects malls instead: the app moves, and is pruned from the store.
    let moved = yaml.replace("matchLabels: {site: store}", "matchLabels: {site: mall}");
    let out = apply(&fleet, "edge.yaml", &moved).await?;
    assert!(out.starts_with("clustergroup/edge configured\n"), "{out}");
    wait_tiers(
        "the app followed the group",
        &[(&store, None), (&mall, Some("edge"))],
        "edge-app",
    )
    .await?;
    // Removing the label that put mall-1 in the group prunes it there too.
    fleet.cli(&["cluster", "label", "mall-1", "site-"]).await?;
    wait_tiers("mall-1 left the group", &[(&mall, None)], "edge-app").await?;
    // Deleting the GitRepo prunes it everywhere.
    fleet
        .cli(&["cluster", "label", "store-1", "site=mall"])
        .await?;
    wait_tiers("store-1 joined", &[(&store, Some("edge"))], "edge-app").await?;
    let out = fleet.cli(&["delete", "gitrepo", "edge"]).await?;
    assert!(out.contains("pruned"), "{out}");
    wait_tiers("deleted GitRepo pruned", &[(&store, None)], "edge-app").await?;
    Ok(())
}

/// Invalid documents are refused with file, line, field path and reason, and nothing of the
/// file is applied; `get -o yaml` gives back a document `apply` accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_invalid_objects_and_get_reads_back() -> anyhow::Result<()> {
    let fleet = TestFleet::start().await?;
    let good = r#"apiVersion: flotilla.dev/v1
kind: ClusterGroup
metadata: {name: fine}
spec: {selector: {matchLabels: {a: b}}}
"#;
    let bad = r#"apiVersion: flotilla.dev/v1
kind: GitRepo
metadata: {name: apps}
spec:
  repo: https://git.example/apps.git
  targets:
  - clusterSelector:
      matchExpressions:
      - {key: env, operator: Equals, values: [prod]}
"#;
    let err = apply(&fleet, "mixed.yaml", &format!("{good}---\n{bad}"))
        .await
        .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("mixed.yaml:6: spec.targets[0].clusterSelector.matchExpressions[0].operator: unknown variant `Equals`"),
        "{msg}"
    );
    assert!(msg.contains("nothing was applied"), "{msg}");
    let groups = fleet.cli(&["get", "clustergroup", "-o", "json"]).await?;
    assert!(
        !groups.contains("fine"),
        "the valid document was not applied either: {groups}"
    );

    let typo = bad
        .replace("operator: Equals", "operator: In")
        .replace("clusterSelector:", "clusterSelectr:");
    let err = apply(&fleet, "typo.yaml", &typo)
        .await
        .expect_err("refused");
    assert!(
        format!("{err:#}").contains("spec.targets[0].clusterSelectr: unknown field"),
        "{err:#}"
    );

    let fixed = bad.replace("operator: Equals", "operator: In");
    apply(&fleet, "apps.yaml", &fixed).await?;
    let yaml = fleet.cli(&["get", "gitrepo", "apps", "-o", "yaml"]).await?;
    let doc: Value = serde_saphyr::from_str(&yaml)?;
    assert_eq!(
        doc["spec"]["targets"][0]["clusterSelector"]["matchExpressions"][0]["operator"],
        "In"
    );
    let again = apply(&fleet, "back.yaml", &yaml).await?;
    assert_eq!(again, "gitrepo/apps unchanged\n");
    let wide = fleet.cli(&["get", "gitrepos", "-o", "wide"]).await?;
    assert!(wide.contains("TARGETS") && wide.contains("apps"), "{wide}");
    Ok(())
}

const SECRET: &str = "webhook-test-secret";

fn github_push(url: &str, branch: &str, after: &str) -> String {
    serde_json::json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000001",
        "after": after,
        "repository": {"clone_url": url, "html_url": url, "name": "apps"},
    })
    .to_string()
}

fn sign(body: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A signed GitHub push makes the hub fetch at once (the GitRepo polls hourly); a forged one
/// is refused and fetches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_push_fetches_at_once_and_a_forged_one_is_refused() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start_with(|c| {
        c.webhook_secret = flotilla_hub::config::WebhookSecret::new(SECRET);
    })
    .await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("web/config.yaml", &config_map("web", "v1"))?;
    repo.commit("v1")?;
    let kube = fleet.add_cluster("east").await?;
    let url = fleet.git.http_url("apps");
    fleet.add_repo("apps", &url, &["web"]).await?;
    wait_tiers("first deploy", &[(&kube, Some("v1"))], "web").await?;

    repo.write("web/config.yaml", &config_map("web", "v2"))?;
    let v2 = repo.commit("v2")?;
    // A forged delivery: refused, counted, nothing fetched.
    let requests = fleet.git.request_count();
    let body = github_push(&url, "main", &v2);
    let (code, answer) = fleet
        .http_post(
            "/webhooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sign("something else")),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await?;
    assert_eq!(code, 401, "{answer}");
    assert_eq!(
        fleet
            .metric(r#"flotilla_webhooks_total{provider="github",outcome="unauthorized"}"#)
            .await?,
        1.0
    );
    assert_eq!(
        fleet.git.request_count(),
        requests,
        "a forged push fetches nothing"
    );

    // The real delivery: the fetch starts within a second.
    let asked = tokio::time::Instant::now();
    let (code, answer) = fleet
        .http_post(
            "/webhooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sign(&body)),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .await?;
    assert_eq!((code, answer.as_str()), (200, r#"{"triggered":["apps"]}"#));
    let fetched = wait_for("the git server to see the fetch", || async {
        (fleet.git.request_count() > requests).then(tokio::time::Instant::now)
    })
    .await?;
    assert!(
        fetched - asked < std::time::Duration::from_secs(1),
        "the fetch began {:?} after the webhook",
        fetched - asked
    );
    wait_tiers("the pushed commit deployed", &[(&kube, Some("v2"))], "web").await?;
    // A push to a branch the GitRepo does not follow triggers nothing.
    let other = github_push(&url, "feature", &v2);
    let (code, answer) = fleet
        .http_post(
            "/webhooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sign(&other)),
                ("Content-Type", "application/json"),
            ],
            other.as_bytes(),
        )
        .await?;
    assert_eq!((code, answer.as_str()), (200, r#"{"triggered":[]}"#));
    Ok(())
}

/// fleet.yaml `keepResources`: deleting the GitRepo prunes the other bundle's objects and
/// leaves this one's in place, no longer owned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_resources_leaves_objects_when_the_bundle_goes() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write(
        "kept/fleet.yaml",
        "keepResources: true\nkeepResourcez: false\n",
    )?;
    repo.write("kept/config.yaml", &config_map("kept", "k"))?;
    repo.write("pruned/fleet.yaml", "defaultNamespace: default\n")?;
    repo.write("pruned/config.yaml", &config_map("pruned", "p"))?;
    repo.commit("two bundles")?;
    let kube = fleet.add_cluster("east").await?;
    let url = fleet.git.http_url("apps");
    fleet.add_repo("apps", &url, &[]).await?;
    wait_tiers("both deployed", &[(&kube, Some("k"))], "kept").await?;
    wait_tiers("both deployed", &[(&kube, Some("p"))], "pruned").await?;
    // An unknown fleet.yaml field is a warning naming it, not a failure.
    let yaml = fleet.cli(&["get", "gitrepo", "apps", "-o", "yaml"]).await?;
    assert!(
        yaml.contains("apps/kept") && yaml.contains("keepResourcez"),
        "{yaml}"
    );
    let owned = kube.get_object("v1", "ConfigMap", Some("default"), "kept");
    assert_eq!(
        owned.map(|o| o["metadata"]["annotations"]["flotilla.dev/deployment-id"].clone()),
        Some(Value::from("apps/kept")),
        "owned while deployed"
    );
    fleet.cli(&["delete", "gitrepo", "apps"]).await?;
    wait_tiers("the other bundle pruned", &[(&kube, None)], "pruned").await?;
    let kept = wait_for("the kept object released", || async {
        kube.get_object("v1", "ConfigMap", Some("default"), "kept")
            .filter(|o| o["metadata"]["annotations"]["flotilla.dev/deployment-id"].is_null())
    })
    .await?;
    assert_eq!(kept["data"]["tier"], "k");
    Ok(())
}

/// fleet.yaml `dependsOn`: a bundle waits on each cluster until what it depends on is Ready
/// there, and follows as soon as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depends_on_waits_for_the_dependency_to_be_ready() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    // The database bundle cannot apply yet: a Service without ports is refused (422).
    repo.write(
        "db/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  ports: []\n",
    )?;
    repo.write("db/fleet.yaml", "defaultNamespace: default\n")?;
    repo.write("app/fleet.yaml", "dependsOn:\n- name: apps-db\n")?;
    repo.write("app/config.yaml", &config_map("app", "a"))?;
    repo.commit("app depends on db")?;
    let kube = fleet.add_cluster("east").await?;
    let url = fleet.git.http_url("apps");
    fleet.add_repo("apps", &url, &[]).await?;
    let s = fleet
        .wait_status("app held back while db fails", |s| {
            let state = |b: &str| TestFleet::deployment(s, "east", b).map(|d| d.state);
            state("apps/db") == Some(flotilla_proto::agent::v1::DeploymentState::ErrApplied as i32)
                && state("apps/app")
                    == Some(flotilla_proto::agent::v1::DeploymentState::Pending as i32)
        })
        .await?;
    let app = TestFleet::deployment(&s, "east", "apps/app").expect("listed");
    assert!(
        app.message
            .contains("waiting for dependency apps/db to be Ready"),
        "{}",
        app.message
    );
    assert_eq!(tier(&kube, "app"), None, "nothing of app was applied");

    repo.write(
        "db/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  ports:\n  - port: 5432\n",
    )?;
    repo.commit("fix db")?;
    fleet.sync("apps").await?;
    wait_tiers("app followed its dependency", &[(&kube, Some("a"))], "app").await?;
    Ok(())
}
