//! The `flotilla` command line: `serve` runs the hub, every other command is an admin call
//! over mTLS with the credential the hub wrote (`--config`, default
//! `./flotilla-data/admin.yaml`).
//!
//! Commands return their output as a string, so tests run them in-process.

pub mod client;
mod declarative;
pub mod manifest;
mod output;
mod security;
pub mod status;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flotilla_proto::admin::v1 as api;
use flotilla_proto::agent::v1::DeploymentState as WireState;
use serde_json::{Value, json};

use crate::config::parse_duration;
use crate::model::unix_now;

/// Flotilla: keeps a fleet of Kubernetes clusters in the state Git describes.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version)]
pub struct Cli {
    /// The admin credential the hub wrote at first start.
    #[arg(
        long,
        global = true,
        env = "FLOTILLA_CONFIG",
        default_value = "./flotilla-data/admin.yaml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub.
    Serve(ServeArgs),
    /// Registration tokens for new clusters.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Git repositories the hub follows.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Registered clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Where every change stands: the fleet, a GitRepo, a cluster or a group.
    Status(status::StatusArgs),
    /// Create or update GitRepos and ClusterGroups from YAML (kubectl-like documents).
    Apply(declarative::ApplyArgs),
    /// Show hub objects: gitrepo, clustergroup, cluster.
    Get(declarative::GetArgs),
    /// Delete a GitRepo (its bundles are pruned) or a ClusterGroup.
    Delete(declarative::DeleteArgs),
    /// Which clusters would get which bundles of a GitRepo, rendered how, without deploying.
    Preview(declarative::PreviewArgs),
    /// The hub's certificate authorities: status and rotation.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Installing agents on clusters.
    #[command(subcommand)]
    Agent(manifest::AgentCommand),
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Show the CAs and which clusters still hold certificates from a retiring one.
    Status(OutputArgs),
    /// Start a rotation: a new CA signs from now on; both are trusted; connected agents renew.
    Rotate,
    /// Finish a rotation: stop trusting the old CA and serve with the new one.
    Retire {
        /// Retire even if some clusters still hold old certificates (they must register again).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the store, the CA and Git mirrors live.
    #[arg(long, env = "FLOTILLA_DATA_DIR", default_value = "./flotilla-data")]
    pub data_dir: PathBuf,
    /// gRPC listen address for agents and admins.
    #[arg(long, env = "FLOTILLA_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: std::net::SocketAddr,
    /// Plain-HTTP listen address for /healthz, /readyz and /metrics.
    #[arg(long, env = "FLOTILLA_HTTP_LISTEN", default_value = "0.0.0.0:9090")]
    pub http_listen: std::net::SocketAddr,
    /// Also accept TLS 1.2 clients (TLS 1.3 only by default).
    #[arg(long)]
    pub allow_tls12: bool,
    #[command(flatten)]
    pub ui: crate::ui::UiArgs,
    /// The https URL agents use to reach the hub, when it differs from --listen (behind a
    /// Service or load balancer); `flotilla agent manifest` puts it in the agent's Secret.
    #[arg(long, env = "FLOTILLA_AGENT_URL", value_parser = crate::config::parse_agent_url)]
    pub agent_url: Option<String>,
    /// Extra DNS name or IP for the serving certificate (repeatable).
    #[arg(long = "server-name")]
    pub server_names: Vec<String>,
    /// Default Git poll interval.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub poll_interval: std::time::Duration,
    /// Lifetime of cluster client certificates; agents renew at about two thirds of it.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub client_cert_ttl: std::time::Duration,
    /// File holding the secret GitHub signs (and GitLab sends) push webhooks with; enables
    /// POST /webhooks/github and /webhooks/gitlab on the HTTP port.
    #[arg(long, env = "FLOTILLA_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// The helm binary bundles with charts are rendered with.
    #[arg(long, env = "FLOTILLA_HELM", default_value = "helm")]
    pub helm: PathBuf,
    /// The kubectl binary kustomize bundles are rendered with (`kubectl kustomize`).
    #[arg(long, env = "FLOTILLA_KUBECTL", default_value = "kubectl")]
    pub kubectl: PathBuf,
    /// Longest one render (helm template, kubectl kustomize) may take.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub render_timeout: std::time::Duration,
    /// Directory of Git credentials: `<dir>/<clientSecretName>/username` and `.../password`
    /// (a mounted kubernetes.io/basic-auth Secret), read at every fetch. Default:
    /// `<data-dir>/credentials`.
    #[arg(long, env = "FLOTILLA_CREDENTIALS_DIR")]
    pub credentials_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a registration token and print it (shown once).
    Create {
        /// How long the token stays valid.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        ttl: std::time::Duration,
        /// How many clusters may register with it; 0 for no limit.
        #[arg(long, default_value_t = 0)]
        max_uses: u32,
        /// A label for every cluster registered with the token, k=v (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// A cluster group every cluster registered with the token joins.
        #[arg(long)]
        group: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List registration tokens (never their secrets).
    List(OutputArgs),
    /// Revoke a token: no cluster can register with it from now on.
    Revoke {
        /// The token's id (the part before the dot).
        id: String,
    },
}

/// Parse `k=v`.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not a label: write key=value")),
    }
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Follow a Git repository (or change how it is followed).
    Add {
        name: String,
        url: String,
        #[arg(long, default_value = "main")]
        branch: String,
        /// Bundle directory in the repository (repeatable); none means the root.
        #[arg(long = "path")]
        paths: Vec<String>,
        /// Poll interval, e.g. 30s; the hub's default when absent.
        #[arg(long, value_parser = parse_duration)]
        poll_interval: Option<std::time::Duration>,
    },
    /// List followed repositories.
    List(OutputArgs),
    /// Fetch a repository now.
    Sync { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// List registered clusters.
    List(OutputArgs),
    /// Delete a cluster: its agent is cut off at once and its certificate refused from then on.
    Delete { name: String },
    /// Set (`key=value`) or remove (`key-`) labels of a cluster; it is re-targeted at once.
    Label(declarative::LabelArgs),
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Run an admin command, handing what it prints to `frame`: once, or for `status --watch`
/// once per change until `frame` returns false.
pub async fn execute_frames(cli: Cli, mut frame: impl FnMut(String) -> bool) -> anyhow::Result<()> {
    if let Command::Status(args) = &cli.command
        && args.watch
    {
        let cred = client::read_credential(&cli.config)?;
        let mut admin = client::connect(&cred).await?;
        return status::watch(&mut admin, args, frame).await;
    }
    frame(execute(cli).await?);
    Ok(())
}

/// Run an admin command and return what it prints.
pub async fn execute(cli: Cli) -> anyhow::Result<String> {
    let cred = client::read_credential(&cli.config)?;
    let mut admin = client::connect(&cred).await?;
    let now = unix_now();
    match cli.command {
        Command::Serve(_) => anyhow::bail!("`serve` is not an admin command"),
        Command::Token(TokenCommand::Create {
            ttl,
            max_uses,
            labels,
            group,
            description,
        }) => {
            let t = admin
                .create_token(api::CreateTokenRequest {
                    ttl_seconds: ttl.as_secs(),
                    max_uses,
                    description,
                    labels: labels.into_iter().collect(),
                    group: group.unwrap_or_default(),
                })
                .await
                .context("creating the token")?
                .into_inner();
            Ok(format!("{}\n", t.token))
        }
        Command::Repo(RepoCommand::Add {
            name,
            url,
            branch,
            paths,
            poll_interval,
        }) => {
            let req = api::AddGitRepoRequest {
                name,
                url,
                branch,
                paths,
                poll_interval_seconds: poll_interval.map_or(0, |d| d.as_secs() as u32),
            };
            let r = admin
                .add_git_repo(req)
                .await
                .context("adding the repository")?
                .into_inner();
            Ok(format!(
                "gitrepo {} added: {} ({})\n",
                r.name, r.url, r.branch
            ))
        }
        Command::Repo(RepoCommand::List(o)) => {
            let repos = admin
                .list_git_repos(api::ListGitReposRequest {})
                .await?
                .into_inner()
                .repos;
            Ok(match o.output {
                Output::Json => pretty(&Value::Array(repos.iter().map(repo_json).collect())),
                Output::Table => {
                    let rows: Vec<Vec<String>> = repos
                        .iter()
                        .map(|r| {
                            vec![
                                r.name.clone(),
                                r.url.clone(),
                                r.branch.clone(),
                                output::short(&r.commit),
                                output::ago(r.last_fetch, now),
                                r.error.clone(),
                            ]
                        })
                        .collect();
                    output::table(
                        &["NAME", "URL", "BRANCH", "COMMIT", "FETCHED", "ERROR"],
                        &rows,
                    )
                }
            })
        }
        Command::Repo(RepoCommand::Sync { name }) => {
            let r = admin
                .sync_git_repo(api::SyncGitRepoRequest { name })
                .await?
                .into_inner();
            if r.error.is_empty() {
                Ok(format!("gitrepo {} at {}\n", r.name, r.commit))
            } else {
                anyhow::bail!("gitrepo {} failed to sync: {}", r.name, r.error)
            }
        }
        Command::Cluster(ClusterCommand::List(o)) => {
            let clusters = admin
                .list_clusters(api::ListClustersRequest {})
                .await?
                .into_inner()
                .clusters;
            Ok(match o.output {
                Output::Json => pretty(&Value::Array(clusters.iter().map(cluster_json).collect())),
                Output::Table => output::table(
                    &[
                        "NAME",
                        "CONNECTED",
                        "LAST SEEN",
                        "KUBERNETES",
                        "AGENT",
                        "ID",
                    ],
                    &clusters
                        .iter()
                        .map(|c| cluster_row(c, now))
                        .collect::<Vec<_>>(),
                ),
            })
        }
        Command::Token(TokenCommand::List(o)) => {
            security::token_list(&mut admin, o.output, now).await
        }
        Command::Token(TokenCommand::Revoke { id }) => security::token_revoke(&mut admin, id).await,
        Command::Cluster(ClusterCommand::Delete { name }) => {
            security::cluster_delete(&mut admin, name).await
        }
        Command::Apply(args) => declarative::apply(&mut admin, args).await,
        Command::Get(args) => declarative::get(&mut admin, args).await,
        Command::Delete(args) => declarative::delete(&mut admin, args).await,
        Command::Preview(args) => declarative::preview(&mut admin, args).await,
        Command::Cluster(ClusterCommand::Label(args)) => declarative::label(&mut admin, args).await,
        Command::Ca(CaCommand::Status(o)) => security::ca_status(&mut admin, o.output).await,
        Command::Ca(CaCommand::Rotate) => security::ca_rotate(&mut admin).await,
        Command::Ca(CaCommand::Retire { force }) => security::ca_retire(&mut admin, force).await,
        Command::Agent(manifest::AgentCommand::Manifest(args)) => {
            manifest::agent_manifest(&mut admin, args).await
        }
        Command::Status(args) => status::status(&mut admin, &args).await,
    }
}

pub(crate) fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON values serialize");
    s.push('\n');
    s
}

/// Fleet's name for a deployment state.
pub fn state_name(v: i32) -> &'static str {
    match WireState::try_from(v).unwrap_or(WireState::Unspecified) {
        WireState::Unspecified => "Unknown",
        WireState::Pending => "Pending",
        WireState::WaitApplied => "WaitApplied",
        WireState::ErrApplied => "ErrApplied",
        WireState::NotReady => "NotReady",
        WireState::Ready => "Ready",
        WireState::Modified => "Modified",
        WireState::OutOfSync => "OutOfSync",
        WireState::Missing => "Missing",
    }
}

fn repo_json(r: &api::GitRepo) -> Value {
    json!({"name": r.name, "url": r.url, "branch": r.branch, "paths": r.paths,
           "pollIntervalSeconds": r.poll_interval_seconds, "commit": r.commit,
           "error": r.error, "lastFetch": r.last_fetch})
}

fn cluster_json(c: &api::Cluster) -> Value {
    json!({"id": c.id, "name": c.name, "labels": c.labels, "connected": c.connected,
           "lastSeen": c.last_seen, "agentVersion": c.agent_version,
           "kubernetesVersion": c.kubernetes_version, "registeredAt": c.registered_at,
           "tokenId": c.token_id, "certificateExpires": c.certificate_expires})
}

fn cluster_row(c: &api::Cluster, now: i64) -> Vec<String> {
    vec![
        c.name.clone(),
        if c.connected { "yes" } else { "no" }.into(),
        if c.connected {
            "now".into()
        } else {
            output::ago(c.last_seen, now)
        },
        c.kubernetes_version.clone(),
        c.agent_version.clone(),
        c.id.clone(),
    ]
}
