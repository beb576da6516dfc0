//! The install flow a platform engineer follows: `flotilla token create`, `flotilla agent
//! manifest --token ... | kubectl apply --server-side -f -`, and the agent registers. Here the
//! printed manifest is applied with the real kubectl to the emulated cluster, and the agent
//! runs in-process with exactly the arguments of the printed Deployment.

use std::process::Stdio;

use flotilla_proto::agent::v1::DeploymentState;
use flotilla_tests::fleet::TestFleet;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::security::CONFIG_MAP;

/// `kubectl apply --server-side -f -` of `yaml` against the emulator's kubeconfig.
async fn kubectl_apply(kubeconfig: &std::path::Path, yaml: &str) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        // The emulator serves no OpenAPI documents, which kubectl's client-side validation
        // downloads; the API server still validates (422) as a real one does.
        .args(["apply", "--server-side", "--validate=false", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run kubectl ({e}): install kubectl 1.32 or newer"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(yaml.as_bytes())
        .await?;
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The agent's command line from the printed Deployment (its args; the kubeconfig stands in
/// for the in-cluster service account), and the namespace the downward API gives it as
/// FLOTILLA_NAMESPACE.
fn agent_argv(yaml: &str, kubeconfig: &std::path::Path) -> anyhow::Result<(Vec<String>, String)> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)?;
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .ok_or_else(|| anyhow::anyhow!("no Deployment in the manifest"))?;
    let namespace = deployment["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut argv = vec!["flotilla-agent".to_string()];
    for a in container["args"].as_array().into_iter().flatten() {
        argv.push(a.as_str().unwrap_or_default().to_string());
    }
    argv.push(format!("--kubeconfig={}", kubeconfig.display()));
    Ok((argv, namespace.to_string()))
}

/// Install from the printed manifest: the agent registers with the token from its bootstrap
/// Secret, removes the token from it, and the bundle becomes Ready. Re-applying the manifest
/// (the token comes back) and restarting keeps the identity: the single-use token is not
/// needed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_installed_from_the_printed_manifest_registers() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("apps")?;
    repo.write("app/settings.yaml", CONFIG_MAP)?;
    repo.commit("first")?;
    fleet
        .add_repo("apps", &fleet.git.file_url("apps"), &["app"])
        .await?;
    let token = fleet.cli(&["token", "create", "--max-uses", "1"]).await?;
    let token = token.trim();
    let yaml = fleet
        .cli(&["agent", "manifest", "--token", token, "--name", "east"])
        .await?;
    let kube = fleet.add_cluster_without_agent("east").await?;
    let kubeconfig = fleet.kubeconfig_path("east")?;
    kubectl_apply(&kubeconfig, &yaml).await?;
    let (argv, namespace) = agent_argv(&yaml, &kubeconfig)?;

    let run = |argv: Vec<String>| {
        let namespace = namespace.clone();
        async move {
            let env = |var: &str| (var == "FLOTILLA_NAMESPACE").then(|| namespace.clone());
            let mut config =
                flotilla_agent::cli::Args::try_parse_with_env(argv, env)?.into_config()?;
            // The printed address is the pod's port `metrics`; on the test host the agent
            // serves its metrics on a free loopback port instead of taking a fixed one.
            anyhow::ensure!(
                config.metrics_addr == Some("0.0.0.0:9091".parse()?),
                "the printed Deployment serves metrics on {:?}",
                config.metrics_addr
            );
            config.metrics_addr = Some("127.0.0.1:0".parse()?);
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(flotilla_agent::run(config, shutdown.clone()));
            anyhow::Ok((shutdown, task))
        }
    };
    let (shutdown, task) = run(argv.clone()).await?;
    let ready = |s: &flotilla_proto::admin::v1::GetStatusResponse| {
        TestFleet::deployment(s, "east", "apps/app")
            .is_some_and(|d| d.state == DeploymentState::Ready as i32)
    };
    let first = fleet.wait_status("east Ready", ready).await?;
    let id = first.clusters[0].id.clone();
    let bootstrap = || {
        kube.get_object(
            "v1",
            "Secret",
            Some("flotilla-system"),
            "flotilla-agent-bootstrap",
        )
        .expect("the bootstrap Secret")
    };
    flotilla_tests::fleet::wait_for("the token to leave the bootstrap Secret", || async {
        bootstrap()["data"].get("token").is_none().then_some(())
    })
    .await?;
    assert!(bootstrap()["data"].get("hubURL").is_some());
    assert!(
        kube.get_object(
            "v1",
            "Secret",
            Some("flotilla-system"),
            "flotilla-agent-identity"
        )
        .is_some(),
        "the identity lives in its own Secret"
    );
    shutdown.cancel();
    task.await??;

    // Re-apply the install (the token comes back) and restart: same cluster, no new
    // registration (the single-use token is spent), token removed again.
    kubectl_apply(&kubeconfig, &yaml).await?;
    assert!(bootstrap()["data"].get("token").is_some());
    let (shutdown, task) = run(argv).await?;
    flotilla_tests::fleet::wait_for("the re-installed agent to reconnect", || async {
        let s = fleet.status().await.ok()?;
        (s.clusters.len() == 1 && s.clusters[0].connected && s.clusters[0].id == id).then_some(())
    })
    .await?;
    flotilla_tests::fleet::wait_for("the token to leave the Secret again", || async {
        bootstrap()["data"].get("token").is_none().then_some(())
    })
    .await?;
    shutdown.cancel();
    task.await??;
    Ok(())
}
