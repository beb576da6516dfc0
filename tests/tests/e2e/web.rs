//! The status page in headless Chromium, asserted on its content: everything Ready on load;
//! a failure in one environment appears on the same page without a reload (in its grid cell
//! and in the not-Ready list, with the reason); the cluster page shows the object's error;
//! the recovery appears live too. Two failures: an object the API server refuses
//! (ErrApplied) and a Deployment that never becomes available (NotReady).

use flotilla_proto::agent::v1::DeploymentState;
use flotilla_tests::browser::Browser;
use flotilla_tests::fixtures::{WEB_DEPLOYMENT, branch_per_environment_gitrepo, config_map};
use flotilla_tests::fleet::{TestFleet, wait_for};
use flotilla_tests::git_server::TestRepo;
use serde_json::{Value, json};

/// The grid cell of `env` x `apps/web` as "state|text", or null.
fn cell(env: &str) -> String {
    format!(
        r#"var c = document.querySelector('#grid td[data-env="{env}"][data-bundle="apps/web"]');
           return c ? c.getAttribute('data-state') + '|' + c.textContent : null;"#
    )
}

/// Marks the page in memory: a reload would lose the mark.
const MARK: &str = "window.flotillaMark = 'first load'; return true;";
const MARKED: &str = "return window.flotillaMark === 'first load' \
    && Number(document.body.getAttribute('data-updates') || 0) > 0;";

/// Prod (`prod-1`, branch main) and staging (`stg-1`, branch staging, checked out) running
/// `apps/web` Ready, and the browser on the fleet page, marked.
struct Watching {
    browser: Browser,
    fleet: TestFleet,
    repo: TestRepo,
}

impl Watching {
    async fn start() -> anyhow::Result<Self> {
        let browser = Browser::start().await?;
        let mut fleet = TestFleet::start().await?;
        let repo = fleet.git.create_repo("apps")?;
        repo.write("web/config.yaml", &config_map("web"))?;
        repo.commit("web")?;
        repo.checkout_branch("staging", true)?;
        fleet.add_cluster_labelled("prod-1", &["env=prod"]).await?;
        fleet
            .add_cluster_labelled("stg-1", &["env=staging"])
            .await?;
        let path = fleet.admin_config().with_file_name("apps.yaml");
        std::fs::write(
            &path,
            branch_per_environment_gitrepo(&fleet.git.http_url("apps"), &["web"]),
        )?;
        fleet
            .cli(&["apply", "-f", path.to_str().expect("utf-8 path")])
            .await?;
        fleet.sync("apps").await?;
        fleet
            .wait_status("both environments Ready", |s| {
                ["prod-1", "stg-1"].iter().all(|c| {
                    TestFleet::deployment(s, c, "apps/web")
                        .is_some_and(|d| d.state == DeploymentState::Ready as i32)
                })
            })
            .await?;

        // Everything Ready, in the DOM as served.
        browser.open(&format!("{}/", fleet.http_url())).await?;
        for env in ["prod", "staging"] {
            let c = browser.script(&cell(env)).await?;
            assert_eq!(c, "Ready|Ready 1/1 Ready", "{env}");
        }
        let text = browser
            .script("return document.getElementById('live').innerText")
            .await?;
        let text = text.as_str().unwrap_or_default();
        assert!(text.contains("2 clusters, 2 connected"), "{text}");
        assert!(text.contains("Every deployment is Ready"), "{text}");
        browser.script(MARK).await?;
        Ok(Self {
            browser,
            fleet,
            repo,
        })
    }

    async fn commit(&self, message: &str) -> anyhow::Result<()> {
        self.repo.commit(message)?;
        self.fleet.sync("apps").await?;
        Ok(())
    }

    /// The same page shows staging's `state` in its cell and in the not-Ready list, with a
    /// reason containing every one of `reason`; prod stays Ready.
    async fn sees_failure(&self, state: &str, reason: &[&str]) -> anyhow::Result<()> {
        let b = &self.browser;
        let want = format!("{state}|{state} 0/1 Ready");
        b.wait_until(
            "the staging cell shows the failure",
            &format!(
                "var c = (function () {{ {} }})(); return c === '{want}';",
                cell("staging")
            ),
        )
        .await?;
        assert_eq!(b.script(&cell("prod")).await?, "Ready|Ready 1/1 Ready");
        let row = b
            .wait_until(
                "the not-Ready list names cluster, state and reason",
                &format!(
                    r#"var r = document.querySelector('#not-ready tr[data-cluster="stg-1"][data-bundle="apps/web"]');
                       var t = r ? r.innerText : '';
                       return {}.every(function (w) {{ return t.indexOf(w) >= 0; }}) ? t : null;"#,
                    serde_json::to_string(reason)?
                ),
            )
            .await?;
        let row = row.as_str().unwrap_or_default();
        assert!(row.contains("staging") && row.contains(state), "{row}");
        assert_eq!(b.script(MARKED).await?, true, "updated in place");
        Ok(())
    }

    /// Follow the not-Ready list's link to stg-1; the text of the first object in
    /// `object_state` of the deployment in `state`. Marks the cluster page.
    async fn drill_down(&self, state: &str, object_state: &str) -> anyhow::Result<String> {
        let b = &self.browser;
        b.click(r#"#not-ready a[href="/clusters/stg-1"]"#).await?;
        let object = b
            .wait_until(
                "the cluster page shows the failing object",
                &format!(
                    r#"var d = document.querySelector('section.deployment[data-bundle="apps/web"][data-state="{state}"]');
                       var o = d && d.querySelector('tr[data-state="{object_state}"]');
                       return o ? o.innerText : null;"#
                ),
            )
            .await?;
        assert!(b.url().await?.ends_with("/clusters/stg-1"));
        b.script(MARK).await?;
        Ok(object.as_str().unwrap_or_default().to_string())
    }

    /// The same cluster page shows the deployment Ready again, `failed` in its history; then
    /// the fleet page shows everything Ready.
    async fn sees_recovery(&self, failed: &str) -> anyhow::Result<()> {
        let b = &self.browser;
        b.wait_until(
            "the cluster page shows the recovery",
            r#"var d = document.querySelector('section.deployment[data-bundle="apps/web"]');
               return !!d && d.getAttribute('data-state') === 'Ready'
                   && !d.querySelector('tbody tr:not([data-state="Ready"])');"#,
        )
        .await?;
        assert_eq!(b.script(MARKED).await?, true, "updated in place");
        let history = b
            .script(
                "var h = document.querySelector('details.history'); return h ? h.textContent : '';",
            )
            .await?;
        assert!(
            history.as_str().unwrap_or_default().contains(failed),
            "{history}"
        );
        b.click("header nav a.brand").await?;
        b.wait_until(
            "the fleet page shows everything Ready",
            "return document.querySelectorAll('#grid td.s-ready').length === 2 \
             && document.body.innerText.indexOf('Every deployment is Ready') >= 0;",
        )
        .await?;
        Ok(())
    }
}

/// An object the API server refuses: ErrApplied with the API server's words, live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_follows_an_apply_error_and_its_recovery_live() -> anyhow::Result<()> {
    let w = Watching::start().await?;
    w.repo.write("web/bad.yaml", &config_map("Bad_Name"))?;
    w.commit("a bad object").await?;
    w.sees_failure("ErrApplied", &["Bad_Name", "Invalid"])
        .await?;
    let object = w.drill_down("ErrApplied", "Failed").await?;
    assert!(
        object.contains("ConfigMap") && object.contains("Bad_Name"),
        "{object}"
    );
    assert!(
        object.contains("Invalid") && object.contains("web/bad.yaml"),
        "{object}"
    );

    w.repo.remove("web/bad.yaml")?;
    w.commit("without the bad object").await?;
    w.sees_recovery("ErrApplied").await?;

    // The list of clusters links every cluster, healthy ones too.
    let b = &w.browser;
    b.click(r#"header nav a[href="/clusters"]"#).await?;
    let list = b
        .wait_until(
            "the cluster list",
            "var t = document.getElementById('clusters'); return t ? t.innerText : null;",
        )
        .await?;
    let list = list.as_str().unwrap_or_default();
    assert!(list.contains("prod-1") && list.contains("stg-1"), "{list}");
    assert!(!list.contains("disconnected"), "{list}");

    // A cluster the hub does not know: a page that says what to do.
    b.open(&format!("{}/clusters/west", w.fleet.http_url()))
        .await?;
    let text = b.script("return document.body.innerText").await?;
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.contains("No cluster named “west”") && text.contains("flotilla cluster list"),
        "{text}"
    );
    w.browser.close().await
}

/// A Deployment whose rollout exceeds its progress deadline: NotReady with the controller's
/// reason, live; recovered when its replicas become available.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_follows_a_deployment_that_never_becomes_available() -> anyhow::Result<()> {
    let w = Watching::start().await?;
    let kube = w.fleet.kube("stg-1");
    kube.pause_workload_controllers(true);
    w.repo.write("web/deployment.yaml", WEB_DEPLOYMENT)?;
    w.commit("a Deployment").await?;
    wait_for("the Deployment applied", || async {
        kube.get_object("apps/v1", "Deployment", Some("default"), "web")
            .map(drop)
    })
    .await?;
    let status = |available: u32, progressing: Value| {
        json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
            "availableReplicas": available, "conditions": [progressing]})
    };
    let deadline = json!({"type": "Progressing", "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet \"web-5d9\" has timed out progressing."});
    kube.set_status(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        status(0, deadline),
    )?;
    w.sees_failure(
        "NotReady",
        &["ProgressDeadlineExceeded", "timed out progressing"],
    )
    .await?;
    let object = w.drill_down("NotReady", "NotReady").await?;
    assert!(
        object.contains("Deployment") && object.contains("default/web"),
        "{object}"
    );
    assert!(object.contains("ProgressDeadlineExceeded"), "{object}");
    assert!(object.contains("web/deployment.yaml"), "{object}");

    let done = json!({"type": "Progressing", "status": "True",
        "reason": "NewReplicaSetAvailable"});
    kube.set_status(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        status(3, done),
    )?;
    w.sees_recovery("NotReady").await?;
    w.browser.close().await
}

/// With the page turned off (`--no-ui`), the HTTP port serves probes and metrics only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_page_the_http_port_serves_probes_and_metrics_only() -> anyhow::Result<()> {
    let fleet = TestFleet::start_with(|c| c.ui = false).await?;
    for path in ["/", "/clusters", "/ui/events", "/api/v1/status"] {
        assert_eq!(fleet.http_get(path).await?.0, 404, "{path}");
    }
    assert_eq!(fleet.http_get("/healthz").await?.0, 200);
    assert_eq!(fleet.http_get("/metrics").await?.0, 200);
    Ok(())
}
