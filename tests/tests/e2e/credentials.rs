//! Git credentials end to end: a GitRepo names a credential (`clientSecretName`), the hub reads
//! its `username` and `password` files from the credentials directory at every fetch and
//! answers the private repository's basic-auth challenge with them. Missing, wrong and rotated
//! credentials show on the GitRepo as errors that say what to do, and the password never shows.

use std::path::Path;

use flotilla_tests::fleet::{TestFleet, wait_for};
use flotilla_tests::kube_emulator::KubeEmulator;

const USER: &str = "deployer";

fn config_map(tier: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  tier: {tier}\n")
}

/// A GitRepo `apps` following `url`, naming `secret` as its credential when given.
fn gitrepo(url: &str, secret: Option<&str>) -> String {
    let secret = secret
        .map(|s| format!("  clientSecretName: {s}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: flotilla.dev/v1\nkind: GitRepo\nmetadata:\n  name: apps\nspec:\n  repo: {url}\n  paths: [web]\n  pollingInterval: 1h\n{secret}"
    )
}

/// Write `yaml` next to the admin credential and `flotilla apply -f` it.
async fn apply(fleet: &TestFleet, yaml: &str) -> anyhow::Result<()> {
    let path = fleet.admin_config().with_file_name("gitrepo.yaml");
    std::fs::write(&path, yaml)?;
    fleet
        .cli(&["apply", "-f", path.to_str().expect("utf-8 path")])
        .await?;
    Ok(())
}

/// Lay out credential `name` as a mounted kubernetes.io/basic-auth Secret would.
fn write_credential(dir: &Path, name: &str, password: &str) -> anyhow::Result<()> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("username"), format!("{USER}\n"))?;
    std::fs::write(dir.join("password"), format!("{password}\n"))?;
    Ok(())
}

async fn wait_tier(kube: &KubeEmulator, tier: &str) -> anyhow::Result<()> {
    wait_for(&format!("tier {tier} deployed"), || async {
        let cm = kube.get_object("v1", "ConfigMap", Some("default"), "web")?;
        (cm["data"]["tier"] == tier).then_some(())
    })
    .await
}

/// Everything an admin can see of the GitRepo and the fleet, as text.
async fn everything_shown(fleet: &TestFleet) -> anyhow::Result<String> {
    Ok([
        fleet.cli(&["get", "gitrepo", "apps", "-o", "yaml"]).await?,
        fleet.cli(&["repo", "list", "-o", "json"]).await?,
        format!("{:?}", fleet.status().await?),
    ]
    .join("\n"))
}

/// The credential deploys from the private repository; a password the server no longer takes
/// is an authentication error naming the credential; writing the new one into the files
/// (as a rotated Secret does) is enough, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_repo_deploys_with_its_credential_and_follows_rotation() -> anyhow::Result<()> {
    let credentials = tempfile::tempdir()?;
    let dir = credentials.path().to_path_buf();
    let mut fleet = TestFleet::start_with(move |c| c.credentials_dir = dir.clone()).await?;
    let repo = fleet
        .git
        .create_private_repo("apps", USER, "first-s3cr3t")?;
    repo.write("web/config.yaml", &config_map("v1"))?;
    repo.commit("v1")?;
    write_credential(credentials.path(), "git-creds", "first-s3cr3t")?;
    let kube = fleet.add_cluster("east").await?;

    apply(
        &fleet,
        &gitrepo(&fleet.git.http_url("apps"), Some("git-creds")),
    )
    .await?;
    let synced = fleet.sync("apps").await?;
    assert_eq!(synced.error, "", "fetched with the credential");
    wait_tier(&kube, "v1").await?;

    // The server rotates first: the hub's password is now wrong.
    fleet.git.set_password("apps", USER, "second-s3cr3t");
    repo.write("web/config.yaml", &config_map("v2"))?;
    repo.commit("v2")?;
    let refused = fleet.sync("apps").await?;
    assert!(
        refused
            .error
            .contains("did not accept credential `git-creds`")
            && refused.error.contains("check the credential"),
        "{}",
        refused.error
    );
    let shown = everything_shown(&fleet).await?;
    assert!(shown.contains("git-creds"), "{shown}");
    assert!(!shown.contains("s3cr3t"), "a password is shown: {shown}");

    // The Secret follows: the next fetch reads the new files.
    write_credential(credentials.path(), "git-creds", "second-s3cr3t")?;
    let synced = fleet.sync("apps").await?;
    assert_eq!(synced.error, "", "fetched with the rotated credential");
    wait_tier(&kube, "v2").await?;
    // Preview fetches with the credential too.
    let preview = fleet.cli(&["preview", "apps"]).await?;
    assert!(preview.contains("apps/web"), "{preview}");
    Ok(())
}

/// A private repository without a credential, then naming one the hub does not hold: each
/// error says what to do (the second names the credential and the directory expected), no
/// password shows anywhere, and putting the files in place is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credential_names_the_path_it_is_expected_at() -> anyhow::Result<()> {
    let credentials = tempfile::tempdir()?;
    let dir = credentials.path().to_path_buf();
    let mut fleet = TestFleet::start_with(move |c| c.credentials_dir = dir.clone()).await?;
    let repo = fleet.git.create_private_repo("apps", USER, "only-s3cr3t")?;
    repo.write("web/config.yaml", &config_map("v1"))?;
    repo.commit("v1")?;
    let kube = fleet.add_cluster("east").await?;
    let url = fleet.git.http_url("apps");

    apply(&fleet, &gitrepo(&url, None)).await?;
    let anonymous = fleet.sync("apps").await?;
    assert!(
        anonymous.error.contains("asks for credentials")
            && anonymous.error.contains("clientSecretName"),
        "{}",
        anonymous.error
    );

    apply(&fleet, &gitrepo(&url, Some("git-creds"))).await?;
    let missing = fleet.sync("apps").await?;
    let expected = credentials.path().join("git-creds");
    assert!(
        missing.error.contains("credential `git-creds`")
            && missing.error.contains(&expected.display().to_string())
            && missing.error.contains("`username` and `password`"),
        "{}",
        missing.error
    );
    let shown = everything_shown(&fleet).await?;
    assert!(
        shown.contains(&expected.display().to_string()),
        "the error is on the GitRepo: {shown}"
    );
    assert!(!shown.contains("s3cr3t"), "a password is shown: {shown}");
    assert!(
        kube.get_object("v1", "ConfigMap", Some("default"), "web")
            .is_none()
    );

    write_credential(credentials.path(), "git-creds", "only-s3cr3t")?;
    let synced = fleet.sync("apps").await?;
    assert_eq!(synced.error, "", "fetched once the credential is in place");
    wait_tier(&kube, "v1").await?;
    Ok(())
}
