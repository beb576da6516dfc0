//! `TestFleet`: a real hub and real agents in-process, each agent against its own
//! Kubernetes API emulator, with a real Git server. Only Kubernetes is emulated.
//!
//! Everything binds 127.0.0.1:0 and lives in temporary directories, so tests run in
//! parallel. Tests wait on observed state with one deadline (`wait_status`, `wait_for`);
//! periodic work is triggered (`sync`) rather than waited for.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use flotilla_agent::{AgentConfig, BackoffConfig, IdentityStoreConfig, KubeSource};
use flotilla_hub::cli::Cli;
use flotilla_proto::admin::v1 as api;
use flotilla_proto::admin::v1::admin_client::AdminClient;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::git_server::GitServer;
use crate::kube_emulator::KubeEmulator;

/// How long any one wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

struct RunningHub {
    addr: std::net::SocketAddr,
    http: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), flotilla_hub::HubError>>,
}

/// One agent and the cluster it manages.
pub struct TestCluster {
    pub name: String,
    pub kube: Arc<KubeEmulator>,
    kubeconfig: PathBuf,
    identity: IdentityStoreConfig,
    agent: Option<(
        CancellationToken,
        JoinHandle<Result<(), flotilla_agent::AgentError>>,
    )>,
}

/// A hub, its Git server and its clusters.
pub struct TestFleet {
    pub git: GitServer,
    dir: TempDir,
    hub: Option<RunningHub>,
    clusters: HashMap<String, TestCluster>,
    configure: Configure,
}

type Configure = Box<dyn Fn(&mut flotilla_hub::HubConfig) + Send + Sync>;

impl TestFleet {
    /// Start a Git server and a hub on an ephemeral port with an empty data directory.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestFleet::start`], with `configure` applied to the hub's configuration (at
    /// every start of the hub).
    pub async fn start_with(
        configure: impl Fn(&mut flotilla_hub::HubConfig) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        init_tracing();
        let git = GitServer::start().await?;
        let dir = tempfile::tempdir()?;
        let mut fleet = Self {
            git,
            dir,
            hub: None,
            clusters: HashMap::new(),
            configure: Box::new(configure),
        };
        fleet.start_hub(None).await?;
        Ok(fleet)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("hub")
    }

    async fn start_hub(
        &mut self,
        addrs: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    ) -> anyhow::Result<()> {
        let mut config = flotilla_hub::HubConfig::new(self.data_dir());
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("literal address");
        (config.listen, config.http_listen) = addrs.unwrap_or((any, any));
        // Tests trigger fetches explicitly; polling would only add noise.
        config.default_poll_interval = Duration::from_secs(3600);
        config.shutdown_grace = Duration::from_secs(5);
        (self.configure)(&mut config);
        let hub = flotilla_hub::Hub::bind(config).await?;
        let (addr, http) = (hub.local_addr(), hub.http_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(hub.run(shutdown.clone()));
        self.hub = Some(RunningHub {
            addr,
            http,
            shutdown,
            task,
        });
        Ok(())
    }

    /// The base URL of the hub's plain-HTTP port (probes, metrics, webhooks, status page).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.hub.as_ref().expect("hub running").http)
    }

    /// GET `path` from the hub's plain-HTTP port; returns the status code and the body.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.hub.as_ref().context("the hub is not running")?.http;
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await?;
        let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP header end")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status")?;
        Ok((code, body.to_string()))
    }

    /// POST `body` to `path` on the hub's plain-HTTP port with extra `headers`; returns the
    /// status code and the body.
    pub async fn http_post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.hub.as_ref().context("the hub is not running")?.http;
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body).await?;
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await?;
        let (head, body) = raw.split_once("\r\n\r\n").context("no HTTP header end")?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no HTTP status")?;
        Ok((code, body.to_string()))
    }

    /// The value of one sample on the hub's `/metrics`, e.g.
    /// `flotilla_refusals_total{reason="token_expired"}`; 0 when it is absent.
    pub async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let (_, text) = self.http_get("/metrics").await?;
        Ok(text
            .lines()
            .find_map(|l| {
                l.strip_prefix(sample)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0))
    }

    /// Stop the hub gracefully.
    pub async fn stop_hub(
        &mut self,
    ) -> anyhow::Result<(std::net::SocketAddr, std::net::SocketAddr)> {
        let hub = self.hub.take().context("the hub is not running")?;
        hub.shutdown.cancel();
        hub.task.await??;
        Ok((hub.addr, hub.http))
    }

    /// Stop the hub and start it again on the same port and data directory.
    pub async fn restart_hub(&mut self) -> anyhow::Result<()> {
        let addrs = self.stop_hub().await?;
        self.start_hub(Some(addrs)).await
    }

    /// The hub's URL.
    pub fn hub_url(&self) -> String {
        format!("https://{}", self.hub.as_ref().expect("hub running").addr)
    }

    /// The admin credential file the hub wrote.
    pub fn admin_config(&self) -> PathBuf {
        self.data_dir().join("admin.yaml")
    }

    /// The CA the hub's agents must trust.
    pub fn ca_pem(&self) -> anyhow::Result<String> {
        Ok(flotilla_hub::cli::client::read_credential(&self.admin_config())?.ca)
    }

    /// An admin API client.
    pub async fn admin(&self) -> anyhow::Result<AdminClient<Channel>> {
        let cred = flotilla_hub::cli::client::read_credential(&self.admin_config())?;
        Ok(flotilla_hub::cli::client::connect(&cred).await?)
    }

    /// Run a `flotilla` CLI command in-process against this hub; returns what it prints.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let config = self.admin_config();
        let mut argv = vec![
            "flotilla",
            "--config",
            config.to_str().expect("utf-8 temp path"),
        ];
        argv.extend_from_slice(args);
        flotilla_hub::cli::execute(Cli::try_parse_from(argv)?).await
    }

    /// A fresh registration token.
    pub async fn token(&self) -> anyhow::Result<String> {
        Ok(self
            .cli(&["token", "create", "--ttl", "1h"])
            .await?
            .trim()
            .to_string())
    }

    /// Follow `repo` at `url` with the given bundle paths, and fetch it once.
    pub async fn add_repo(&self, name: &str, url: &str, paths: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["repo", "add", name, url];
        for p in paths {
            args.extend(["--path", p]);
        }
        self.cli(&args).await?;
        self.sync(name).await?;
        Ok(())
    }

    /// Fetch a GitRepo now and return it.
    pub async fn sync(&self, name: &str) -> anyhow::Result<api::GitRepo> {
        let repo = self
            .admin()
            .await?
            .sync_git_repo(api::SyncGitRepoRequest { name: name.into() })
            .await?
            .into_inner();
        Ok(repo)
    }

    /// Start a Kubernetes emulator and register an agent for it with a new token.
    pub async fn add_cluster(&mut self, name: &str) -> anyhow::Result<Arc<KubeEmulator>> {
        let kube = self.add_cluster_without_agent(name).await?;
        let token = self.token().await?;
        self.start_agent(name, Some(token))?;
        Ok(kube)
    }

    /// Start a Kubernetes emulator and register an agent for it with a token carrying
    /// `labels` (`k=v`), as a platform team registers a cluster into an environment.
    pub async fn add_cluster_labelled(
        &mut self,
        name: &str,
        labels: &[&str],
    ) -> anyhow::Result<Arc<KubeEmulator>> {
        let kube = self.add_cluster_without_agent(name).await?;
        let mut args = vec!["token", "create", "--ttl", "1h"];
        for l in labels {
            args.extend(["--label", l]);
        }
        let token = self.cli(&args).await?.trim().to_string();
        self.start_agent(name, Some(token))?;
        Ok(kube)
    }

    /// Start a Kubernetes emulator for cluster `name`, with no agent yet.
    pub async fn add_cluster_without_agent(
        &mut self,
        name: &str,
    ) -> anyhow::Result<Arc<KubeEmulator>> {
        let kube = Arc::new(KubeEmulator::start().await?);
        let cluster_dir = self.dir.path().join("clusters").join(name);
        std::fs::create_dir_all(&cluster_dir)?;
        let kubeconfig = cluster_dir.join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig)?;
        let cluster = TestCluster {
            name: name.to_string(),
            kube: kube.clone(),
            kubeconfig,
            identity: IdentityStoreConfig::Dir(cluster_dir.join("agent-state")),
            agent: None,
        };
        self.clusters.insert(name.to_string(), cluster);
        Ok(kube)
    }

    /// Keep the identity of cluster `name`'s agent in a Secret, as in-cluster agents do.
    pub fn use_identity_secret(&mut self, name: &str, secret: &str) -> anyhow::Result<()> {
        let c = self
            .clusters
            .get_mut(name)
            .context("no such test cluster")?;
        c.identity = IdentityStoreConfig::Secret {
            name: secret.to_string(),
        };
        Ok(())
    }

    /// The agent configuration for cluster `name`.
    pub fn agent_config(&self, name: &str, token: Option<String>) -> anyhow::Result<AgentConfig> {
        let c = self.clusters.get(name).context("no such test cluster")?;
        Ok(AgentConfig {
            hub_url: Some(self.hub_url()),
            token,
            ca_pem: Some(self.ca_pem()?),
            cluster_name: Some(name.to_string()),
            labels: BTreeMap::new(),
            namespace: "flotilla-system".into(),
            identity: c.identity.clone(),
            kube: KubeSource::Kubeconfig(c.kubeconfig.clone()),
            bootstrap_secret: None,
            backoff: BackoffConfig {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
            metrics_addr: None,
        })
    }

    /// Start (or restart) the agent of cluster `name`.
    pub fn start_agent(&mut self, name: &str, token: Option<String>) -> anyhow::Result<()> {
        let config = self.agent_config(name, token)?;
        self.start_agent_with(name, config)
    }

    /// Start (or restart) the agent of cluster `name` with this configuration.
    pub fn start_agent_with(&mut self, name: &str, config: AgentConfig) -> anyhow::Result<()> {
        let c = self
            .clusters
            .get_mut(name)
            .context("no such test cluster")?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(flotilla_agent::run(config, shutdown.clone()));
        c.agent = Some((shutdown, task));
        Ok(())
    }

    /// Stop the agent of cluster `name` and return how it ended.
    pub async fn stop_agent(
        &mut self,
        name: &str,
    ) -> anyhow::Result<Result<(), flotilla_agent::AgentError>> {
        let c = self
            .clusters
            .get_mut(name)
            .context("no such test cluster")?;
        let (shutdown, task) = c.agent.take().context("agent not running")?;
        shutdown.cancel();
        Ok(tokio::time::timeout(DEADLINE, task)
            .await
            .context("agent did not stop in time")??)
    }

    /// The kubeconfig file of cluster `name`'s emulated API server.
    pub fn kubeconfig_path(&self, name: &str) -> anyhow::Result<PathBuf> {
        Ok(self
            .clusters
            .get(name)
            .context("no such test cluster")?
            .kubeconfig
            .clone())
    }

    /// The directory cluster `name`'s agent keeps its identity in.
    pub fn agent_state_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        match &self
            .clusters
            .get(name)
            .context("no such test cluster")?
            .identity
        {
            IdentityStoreConfig::Dir(dir) => Ok(dir.clone()),
            other => bail!("cluster {name} keeps its identity in {other:?}"),
        }
    }

    /// The emulated Kubernetes of cluster `name`.
    pub fn kube(&self, name: &str) -> Arc<KubeEmulator> {
        self.clusters[name].kube.clone()
    }

    /// The fleet status as the admin API reports it.
    pub async fn status(&self) -> anyhow::Result<api::GetStatusResponse> {
        Ok(self
            .admin()
            .await?
            .get_status(api::GetStatusRequest {})
            .await?
            .into_inner())
    }

    /// Wait until the fleet status satisfies `check`, and return that status.
    pub async fn wait_status(
        &self,
        what: &str,
        check: impl Fn(&api::GetStatusResponse) -> bool,
    ) -> anyhow::Result<api::GetStatusResponse> {
        let admin = self.admin().await?;
        let last = std::sync::Mutex::new(None);
        let outcome = wait_for(what, || {
            let mut admin = admin.clone();
            let (last, check) = (&last, &check);
            async move {
                let s = admin
                    .get_status(api::GetStatusRequest {})
                    .await
                    .ok()?
                    .into_inner();
                let ok = check(&s);
                *last.lock().expect("status lock") = Some(s.clone());
                ok.then_some(s)
            }
        })
        .await;
        let last = last.lock().expect("status lock").take();
        outcome.with_context(|| format!("last status: {}", describe(last.as_ref())))
    }

    /// The deployment of `bundle` on `cluster` in a status, if any.
    pub fn deployment<'a>(
        s: &'a api::GetStatusResponse,
        cluster: &str,
        bundle: &str,
    ) -> Option<&'a api::DeploymentStatus> {
        s.deployments
            .iter()
            .find(|d| d.cluster_name == cluster && d.bundle == bundle)
    }
}

impl Drop for TestFleet {
    fn drop(&mut self) {
        if let Some(h) = &self.hub {
            h.shutdown.cancel();
        }
        for c in self.clusters.values() {
            if let Some((s, _)) = &c.agent {
                s.cancel();
            }
        }
    }
}

/// Poll `probe` until it yields a value, failing after [`DEADLINE`]. Backs off from 10 ms to
/// 200 ms between probes: this is a condition wait, not a sleep.
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {DEADLINE:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn describe(s: Option<&api::GetStatusResponse>) -> String {
    let Some(s) = s else { return "none".into() };
    let rows: Vec<String> = s
        .deployments
        .iter()
        .map(|d| {
            format!(
                "{}:{}={} ({})",
                d.cluster_name,
                d.bundle,
                flotilla_hub::cli::state_name(d.state),
                d.message
            )
        })
        .collect();
    format!(
        "clusters={} bundles={:?} deployments=[{}]",
        s.clusters.len(),
        s.bundles
            .iter()
            .map(|b| (&b.id, &b.error))
            .collect::<Vec<_>>(),
        rows.join(", ")
    )
}

/// Log to the test's captured output; `RUST_LOG` picks the level.
pub fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
