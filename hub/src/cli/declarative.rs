//! `apply`, `get`, `delete`, `cluster label` and `preview`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use flotilla_proto::admin::v1 as api;
use serde_json::Value;

use super::{output, pretty};
use flotilla_proto::admin::v1::admin_client::AdminClient as Client;
use tonic::transport::Channel;

type AdminClient = Client<Channel>;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A YAML file, or a directory of them (read recursively), with GitRepo and ClusterGroup
    /// documents (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Validate only; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GetOutput {
    Table,
    Wide,
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// gitrepo, clustergroup or cluster.
    pub kind: String,
    /// One object; all of the kind when absent.
    pub name: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: GetOutput,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// gitrepo or clustergroup.
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    pub name: String,
    /// `key=value` to set, `key-` to remove (repeatable).
    #[arg(required = true)]
    pub labels: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The GitRepo to preview.
    pub gitrepo: String,
    /// Only this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// A commit or tag instead of each environment's branch head.
    #[arg(long)]
    pub revision: Option<String>,
    /// Show the rendered objects (default: a diff against what is deployed now).
    #[arg(long)]
    pub objects: bool,
}

/// Every YAML document under `paths`, as JSON with `file:line` sources.
pub fn read_documents(paths: &[PathBuf]) -> anyhow::Result<Vec<api::ApplyDocument>> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        anyhow::bail!("no .yaml, .yml or .json files under {paths:?}");
    }
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for (line, doc) in split(&text) {
            let source = format!("{}:{line}", file.display());
            let value: Value = serde_saphyr::from_str(doc)
                .map_err(|e| anyhow::anyhow!("{source}: invalid YAML: {e}"))?;
            if value.is_null() {
                continue;
            }
            docs.push(api::ApplyDocument {
                source,
                json: value.to_string(),
            });
        }
    }
    Ok(docs)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            let is_doc = e
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"));
            if e.is_dir() || is_doc {
                collect(&e, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Split multi-document YAML at `---` lines; each document with its first line number.
fn split(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut start, mut start_line, mut offset) = (0, 1, 0);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") {
            if !text[start..offset].trim().is_empty() {
                out.push((start_line, &text[start..offset]));
            }
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    if !text[start..].trim().is_empty() {
        out.push((start_line, &text[start..]));
    }
    out
}

pub async fn apply(admin: &mut AdminClient, args: ApplyArgs) -> anyhow::Result<String> {
    let documents = read_documents(&args.files)?;
    let resp = admin
        .apply(api::ApplyRequest {
            documents,
            dry_run: args.dry_run,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .context("nothing was applied")?
        .into_inner();
    let mut out = String::new();
    for r in resp.results {
        let suffix = if args.dry_run { " (dry run)" } else { "" };
        out.push_str(&format!(
            "{}/{} {}{suffix}\n",
            r.kind.to_ascii_lowercase(),
            r.name,
            r.action
        ));
        for w in r.warnings {
            out.push_str(&format!("  warning: {}: {w}\n", r.source));
        }
    }
    Ok(out)
}

pub async fn get(admin: &mut AdminClient, args: GetArgs) -> anyhow::Result<String> {
    let docs: Vec<Value> = admin
        .get(api::GetRequest {
            kind: args.kind.clone(),
            name: args.name.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner()
        .documents
        .iter()
        .map(|d| serde_json::from_str(d))
        .collect::<Result<_, _>>()
        .context("the hub sent a document that is not JSON")?;
    let single = args.name.is_some() && docs.len() == 1;
    Ok(match args.output {
        GetOutput::Json if single => pretty(&docs[0]),
        GetOutput::Json => {
            pretty(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs}))
        }
        GetOutput::Yaml => {
            let mut out = String::new();
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&serde_saphyr::to_string(d).context("writing YAML")?);
            }
            out
        }
        GetOutput::Table | GetOutput::Wide => table(&docs, args.output == GetOutput::Wide),
    })
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn labels(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn table(docs: &[Value], wide: bool) -> String {
    let Some(kind) = docs.first().map(|d| s(&d["kind"])) else {
        return "no objects\n".into();
    };
    match kind.as_str() {
        "GitRepo" => {
            let mut head = vec!["NAME", "REPO", "BRANCH", "COMMIT", "ERROR"];
            if wide {
                head.extend(["PATHS", "TARGETS", "ENVIRONMENTS"]);
            }
            let rows: Vec<Vec<String>> = docs
                .iter()
                .map(|d| {
                    let mut row = vec![
                        s(&d["metadata"]["name"]),
                        s(&d["spec"]["repo"]),
                        s(&d["spec"]["branch"]),
                        output::short(&s(&d["status"]["commit"])),
                        s(&d["status"]["error"]),
                    ];
                    if wide {
                        row.push(
                            d["spec"]["paths"]
                                .as_array()
                                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                                .unwrap_or_default(),
                        );
                        row.push(
                            d["spec"]["targets"]
                                .as_array()
                                .map_or(0, Vec::len)
                                .to_string(),
                        );
                        row.push(
                            d["spec"]["environments"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .map(|e| format!("{}={}", s(&e["name"]), s(&e["branch"])))
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default(),
                        );
                    }
                    row
                })
                .collect();
            output::table(&head, &rows)
        }
        "ClusterGroup" => {
            let mut head = vec!["NAME", "CLUSTERS"];
            if wide {
                head.extend(["SELECTOR", "LABELS"]);
            }
            let rows: Vec<Vec<String>> = docs
                .iter()
                .map(|d| {
                    let mut row = vec![s(&d["metadata"]["name"]), s(&d["status"]["clusterCount"])];
                    if wide {
                        row.push(s(&d["spec"]["selector"]));
                        row.push(labels(&d["metadata"]["labels"]));
                    }
                    row
                })
                .collect();
            output::table(&head, &rows)
        }
        _ => {
            let mut head = vec!["NAME", "CONNECTED", "LABELS"];
            if wide {
                head.extend(["KUBERNETES", "AGENT", "ID"]);
            }
            let rows: Vec<Vec<String>> = docs
                .iter()
                .map(|d| {
                    let mut row = vec![
                        s(&d["metadata"]["name"]),
                        if d["status"]["connected"] == true {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        labels(&d["metadata"]["labels"]),
                    ];
                    if wide {
                        row.push(s(&d["status"]["kubernetesVersion"]));
                        row.push(s(&d["status"]["agentVersion"]));
                        row.push(s(&d["metadata"]["uid"]));
                    }
                    row
                })
                .collect();
            output::table(&head, &rows)
        }
    }
}

pub async fn delete(admin: &mut AdminClient, args: DeleteArgs) -> anyhow::Result<String> {
    let r = admin
        .delete(api::DeleteRequest {
            kind: args.kind,
            name: args.name,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    Ok(format!("{}\n", r.message))
}

pub async fn label(admin: &mut AdminClient, args: LabelArgs) -> anyhow::Result<String> {
    let mut req = api::LabelClusterRequest {
        name: args.name,
        ..Default::default()
    };
    for l in &args.labels {
        if let Some((k, v)) = l.split_once('=') {
            req.set.insert(k.to_string(), v.to_string());
        } else if let Some(k) = l.strip_suffix('-') {
            req.remove.push(k.to_string());
        } else {
            anyhow::bail!("{l:?} is not a label change: write key=value to set or key- to remove");
        }
    }
    let c = admin
        .label_cluster(req)
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let mut labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    Ok(format!(
        "cluster {} labelled: {}\n",
        c.name,
        labels.join(",")
    ))
}

pub async fn preview(admin: &mut AdminClient, args: PreviewArgs) -> anyhow::Result<String> {
    let r = admin
        .preview(api::PreviewRequest {
            gitrepo: args.gitrepo,
            cluster: args.cluster.unwrap_or_default(),
            revision: args.revision.unwrap_or_default(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let rows: Vec<Vec<String>> = r
        .deployments
        .iter()
        .map(|d| {
            vec![
                d.cluster.clone(),
                if d.environment.is_empty() {
                    "-".into()
                } else {
                    d.environment.clone()
                },
                d.bundle.clone(),
                output::short(&d.commit),
                d.action.clone(),
            ]
        })
        .collect();
    let mut out = if rows.is_empty() {
        "no cluster would get a bundle of this GitRepo\n".to_string()
    } else {
        output::table(
            &["CLUSTER", "ENVIRONMENT", "BUNDLE", "COMMIT", "ACTION"],
            &rows,
        )
    };
    for d in &r.deployments {
        if !d.error.is_empty() {
            out.push_str(&format!("\n# {} on {}: {}\n", d.bundle, d.cluster, d.error));
        } else if args.objects && !d.objects_yaml.is_empty() {
            out.push_str(&format!(
                "\n# {} on {} at {}\n",
                d.bundle,
                d.cluster,
                output::short(&d.commit)
            ));
            out.push_str(&d.objects_yaml);
        } else if !args.objects && !d.diff.is_empty() {
            out.push_str(&format!("\n# {} on {}\n", d.bundle, d.cluster));
            out.push_str(&d.diff);
        }
    }
    for w in &r.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    Ok(out)
}
