//! `flotilla status [gitrepo NAME | cluster NAME | group NAME] [-o table|json|yaml]
//! [--watch] [--history]`: views of the hub's rollups.

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use flotilla_proto::admin::v1 as api;
use flotilla_proto::admin::v1::admin_client::AdminClient;
use serde_json::Value;
use tonic::transport::Channel;

use super::{output, pretty};
use crate::model::unix_now;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(subcommand)]
    pub target: Option<StatusTarget>,
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        global = true
    )]
    pub output: StatusOutput,
    /// Keep the view on screen and refresh it whenever status changes.
    #[arg(long, global = true)]
    pub watch: bool,
    /// With each deployment's last transitions (commit, state, time, message).
    #[arg(long, global = true)]
    pub history: bool,
}

#[derive(Debug, Subcommand)]
pub enum StatusTarget {
    /// One GitRepo: its bundles and environments, and what is not Ready.
    Gitrepo { name: String },
    /// One cluster: each deployment and its objects.
    Cluster { name: String },
    /// One cluster group: counts over its clusters.
    Group { name: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusOutput {
    Table,
    Json,
    Yaml,
}

type Admin = AdminClient<Channel>;

fn request(args: &StatusArgs) -> api::StatusViewRequest {
    let mut r = api::StatusViewRequest {
        history: args.history,
        ..Default::default()
    };
    match &args.target {
        None => {}
        Some(StatusTarget::Gitrepo { name }) => r.gitrepo = name.clone(),
        Some(StatusTarget::Cluster { name }) => r.cluster = name.clone(),
        Some(StatusTarget::Group { name }) => r.group = name.clone(),
    }
    r
}

/// The view once, rendered.
pub async fn status(admin: &mut Admin, args: &StatusArgs) -> anyhow::Result<String> {
    let json = admin
        .status_view(request(args))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner()
        .json;
    let v: Value = serde_json::from_str(&json).context("the hub sent a view that is not JSON")?;
    Ok(match args.output {
        StatusOutput::Json => pretty(&v),
        StatusOutput::Yaml => serde_saphyr::to_string(&v).context("writing YAML")?,
        StatusOutput::Table => match &args.target {
            None => fleet_table(&v),
            Some(StatusTarget::Gitrepo { .. }) => gitrepo_table(&v),
            Some(StatusTarget::Cluster { .. }) => cluster_table(&v, args.history),
            Some(StatusTarget::Group { .. }) => group_table(&v),
        },
    })
}

/// Render the view, then again after each change, handing each frame to `frame` until it
/// returns false or the hub goes away.
pub async fn watch(
    admin: &mut Admin,
    args: &StatusArgs,
    mut frame: impl FnMut(String) -> bool,
) -> anyhow::Result<()> {
    let mut changes = admin
        .watch_status(api::WatchStatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    while let Some(change) = changes.message().await? {
        let _ = change.version;
        if !frame(status(admin, args).await?) {
            return Ok(());
        }
    }
    anyhow::bail!("the hub closed the watch; run the command again")
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn env_name(v: &Value) -> String {
    match s(v) {
        e if e.is_empty() => "-".into(),
        e => e,
    }
}

/// "2 ErrApplied, 4 Ready": counts by state, worst first.
fn counts(v: &Value) -> String {
    crate::rollup::STATES
        .iter()
        .rev()
        .filter_map(|st| {
            let n = v[st.as_str()].as_u64().filter(|n| *n > 0)?;
            Some(format!("{n} {}", st.as_str()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ready(v: &Value) -> String {
    format!(
        "{}/{}",
        v["counts"]["Ready"]
            .as_u64()
            .or(v["states"]["Ready"].as_u64())
            .unwrap_or(0),
        v["total"].as_u64().unwrap_or(0)
    )
}

fn not_ready(v: &Value, out: &mut String) {
    let list = v["notReady"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return;
    }
    let total = v["notReadyTotal"].as_u64().unwrap_or(list.len() as u64);
    out.push_str(&format!("\nNot Ready ({total}):\n"));
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            vec![
                s(&d["cluster"]),
                env_name(&d["environment"]),
                s(&d["bundle"]),
                s(&d["state"]),
                s(&d["message"]),
            ]
        })
        .collect();
    out.push_str(&output::table(
        &["CLUSTER", "ENVIRONMENT", "BUNDLE", "STATE", "MESSAGE"],
        &rows,
    ));
    if total > list.len() as u64 {
        out.push_str(&format!(
            "... and {} more (filter with `status gitrepo NAME` or `status cluster NAME`)\n",
            total - list.len() as u64
        ));
    }
}

fn fleet_table(v: &Value) -> String {
    let mut out = format!(
        "{} clusters ({} connected), {} deployments: {}\n",
        s(&v["clusters"]["total"]),
        s(&v["clusters"]["connected"]),
        s(&v["total"]),
        match counts(&v["states"]) {
            c if c.is_empty() => "none".into(),
            c => c,
        }
    );
    for (title, key) in [
        ("GITREPO", "gitrepos"),
        ("ENVIRONMENT", "environmentRollups"),
    ] {
        let rows: Vec<Vec<String>> = v[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let name = if key == "environmentRollups" {
                    env_name(&r["name"])
                } else {
                    s(&r["name"])
                };
                vec![name, ready(r), s(&r["worst"]), counts(&r["counts"])]
            })
            .collect();
        if !rows.is_empty() {
            out.push('\n');
            out.push_str(&output::table(&[title, "READY", "WORST", "STATES"], &rows));
        }
    }
    not_ready(v, &mut out);
    let errors = v["bundleErrors"].as_array().cloned().unwrap_or_default();
    if !errors.is_empty() {
        out.push_str(
            "\nBundles that cannot be built from Git (their previous revision stays deployed):\n",
        );
        for e in errors {
            out.push_str(&format!("  {}: {}\n", s(&e["bundle"]), s(&e["error"])));
        }
    }
    out
}

fn gitrepo_table(v: &Value) -> String {
    let mut out = format!(
        "gitrepo {}: {} deployments: {}\n\n",
        s(&v["name"]),
        s(&v["total"]),
        counts(&v["states"])
    );
    let rows: Vec<Vec<String>> = v["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                s(&c["bundle"]),
                env_name(&c["environment"]),
                ready(c),
                s(&c["worst"]),
                counts(&c["counts"]),
            ]
        })
        .collect();
    out.push_str(&output::table(
        &["BUNDLE", "ENVIRONMENT", "READY", "WORST", "STATES"],
        &rows,
    ));
    for b in v["bundles"].as_array().into_iter().flatten() {
        if !b["error"].is_null() {
            out.push_str(&format!(
                "\n{}: cannot be built: {}\n",
                s(&b["name"]),
                s(&b["error"])
            ));
        }
    }
    not_ready(v, &mut out);
    out
}

fn group_table(v: &Value) -> String {
    format!(
        "group {}: {} clusters, {} deployments: {}\n",
        s(&v["name"]),
        s(&v["clusters"]),
        s(&v["total"]),
        counts(&v["states"])
    )
}

fn cluster_table(v: &Value, history: bool) -> String {
    let now = unix_now();
    let mut out = format!(
        "cluster {} ({}), {} deployments: {}\n\n",
        s(&v["name"]),
        if v["connected"] == true {
            "connected".to_string()
        } else {
            format!(
                "last seen {}",
                output::ago(v["lastSeen"].as_i64().unwrap_or(0), now)
            )
        },
        s(&v["total"]),
        counts(&v["states"])
    );
    let deployments = v["deployments"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .map(|d| {
            vec![
                s(&d["bundle"]),
                env_name(&d["environment"]),
                s(&d["state"]),
                output::short(&s(&d["desiredRevision"])),
                s(&d["message"]),
            ]
        })
        .collect();
    out.push_str(&output::table(
        &["BUNDLE", "ENVIRONMENT", "STATE", "REVISION", "MESSAGE"],
        &rows,
    ));
    for d in &deployments {
        let objects: Vec<Vec<String>> = d["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["state"] != "Ready" && o["state"] != "Applied")
            .map(|o| {
                let mut message = s(&o["message"]);
                if let Some(fields) = o["modifiedFields"].as_array().filter(|f| !f.is_empty()) {
                    let fields: Vec<String> = fields.iter().map(s).collect();
                    message = format!("{message} (modified: {})", fields.join(", "));
                }
                vec![
                    format!("{}/{}", s(&o["kind"]), s(&o["name"])),
                    s(&o["namespace"]),
                    s(&o["state"]),
                    message,
                ]
            })
            .collect();
        if !objects.is_empty() {
            out.push_str(&format!("\n{}:\n", s(&d["bundle"])));
            out.push_str(&output::table(
                &["OBJECT", "NAMESPACE", "STATE", "MESSAGE"],
                &objects,
            ));
        }
        if history {
            let rows: Vec<Vec<String>> = d["history"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    vec![
                        output::ago(t["at"].as_i64().unwrap_or(0), now),
                        s(&t["state"]),
                        output::short(&s(&t["revision"])),
                        s(&t["message"]),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                out.push_str(&format!("\n{} history:\n", s(&d["bundle"])));
                out.push_str(&output::table(
                    &["WHEN", "STATE", "REVISION", "MESSAGE"],
                    &rows,
                ));
            }
        }
    }
    out
}
