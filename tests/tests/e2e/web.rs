//! The status page in headless Chromium, asserted on its content: everything Ready on load;
//! a failure in one environment appears on the same page without a reload (in its grid cell
//! and in the not-Ready list, with the reason); the cluster page shows the object's error;
//! the recovery appears live too.

use flotilla_proto::agent::v1::DeploymentState;
use flotilla_tests::browser::Browser;
use flotilla_tests::fleet::TestFleet;

fn config_map(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  greeting: hello\n"
    )
}

/// GitRepo `apps` with two environments: prod follows main, staging its own branch.
const GITREPO: &str = r#"
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
      matchLabels: {env: staging}
"#;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_follows_a_failure_and_its_recovery_live() -> anyhow::Result<()> {
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
    std::fs::write(&path, GITREPO.replace("URL", &fleet.git.http_url("apps")))?;
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

    // A commit on staging with an object the API server refuses.
    repo.write("web/bad.yaml", &config_map("Bad_Name"))?;
    repo.commit("a bad object")?;
    fleet.sync("apps").await?;
    browser
        .wait_until(
            "the staging cell shows the failure",
            &format!("var c = (function () {{ {} }})(); return c && c.indexOf('ErrApplied|') === 0 ? c : null;", cell("staging")),
        )
        .await?;
    assert_eq!(
        browser.script(&cell("staging")).await?,
        "ErrApplied|ErrApplied 0/1 Ready"
    );
    assert_eq!(
        browser.script(&cell("prod")).await?,
        "Ready|Ready 1/1 Ready",
        "prod untouched"
    );
    let row = browser
        .wait_until(
            "the not-Ready list names cluster, state and reason",
            r#"var r = document.querySelector('#not-ready tr[data-cluster="stg-1"][data-bundle="apps/web"]');
               return r ? r.innerText : null;"#,
        )
        .await?;
    let row = row.as_str().unwrap_or_default();
    assert!(
        row.contains("staging") && row.contains("ErrApplied"),
        "{row}"
    );
    assert!(
        row.contains("Bad_Name") && row.contains("Invalid"),
        "the reason: {row}"
    );
    assert_eq!(
        browser.script(MARKED).await?,
        true,
        "updated in place, never reloaded"
    );

    // Drill down to the cluster: the object and the API server's words.
    browser
        .click(r#"#not-ready a[href="/clusters/stg-1"]"#)
        .await?;
    let object = browser
        .wait_until(
            "the cluster page shows the failed object",
            r#"var d = document.querySelector('section.deployment[data-bundle="apps/web"][data-state="ErrApplied"]');
               var o = d && d.querySelector('tr[data-state="Failed"]');
               return o ? o.innerText : null;"#,
        )
        .await?;
    let object = object.as_str().unwrap_or_default();
    assert!(
        object.contains("ConfigMap") && object.contains("Bad_Name"),
        "{object}"
    );
    assert!(
        object.contains("Invalid") && object.contains("web/bad.yaml"),
        "{object}"
    );
    assert!(browser.url().await?.ends_with("/clusters/stg-1"));
    browser.script(MARK).await?;

    // Remove the cause: the same cluster page recovers live, with the failure in its history.
    repo.remove("web/bad.yaml")?;
    repo.commit("without the bad object")?;
    fleet.sync("apps").await?;
    browser
        .wait_until(
            "the cluster page shows the recovery",
            r#"return !!document.querySelector('section.deployment[data-bundle="apps/web"][data-state="Ready"]')
                && !document.querySelector('tr[data-state="Failed"]');"#,
        )
        .await?;
    assert_eq!(
        browser.script(MARKED).await?,
        true,
        "updated in place, never reloaded"
    );
    let history = browser
        .script("var h = document.querySelector('details.history'); return h ? h.textContent : '';")
        .await?;
    assert!(
        history.as_str().unwrap_or_default().contains("ErrApplied"),
        "{history}"
    );

    // Back to the fleet: all Ready again.
    browser.click("header nav a.brand").await?;
    browser
        .wait_until(
            "the fleet page shows everything Ready",
            "return document.querySelectorAll('#grid td.s-ready').length === 2 \
             && document.body.innerText.indexOf('Every deployment is Ready') >= 0;",
        )
        .await?;

    // The list of clusters links every cluster, healthy ones too.
    browser.click(r#"header nav a[href="/clusters"]"#).await?;
    let list = browser
        .wait_until(
            "the cluster list",
            "var t = document.getElementById('clusters'); return t ? t.innerText : null;",
        )
        .await?;
    let list = list.as_str().unwrap_or_default();
    assert!(list.contains("prod-1") && list.contains("stg-1"), "{list}");
    assert!(!list.contains("disconnected"), "{list}");

    // A cluster the hub does not know: a page that says what to do.
    browser
        .open(&format!("{}/clusters/west", fleet.http_url()))
        .await?;
    let text = browser.script("return document.body.innerText").await?;
    let text = text.as_str().unwrap_or_default();
    assert!(
        text.contains("No cluster named “west”") && text.contains("flotilla cluster list"),
        "{text}"
    );

    browser.close().await
}
