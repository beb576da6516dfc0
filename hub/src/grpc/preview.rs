//! `flotilla preview`: build a GitRepo at a revision and show which clusters would get which
//! bundles, rendered how, and how that differs from what they run now. Nothing is stored in
//! the fleet and nothing is sent to an agent.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use flotilla_proto::admin::v1 as api;
use tonic::Status;

use super::Context;
use crate::model::{BundleContent, BundleId};
use crate::source::PreviewError;

pub async fn preview(
    ctx: &Context,
    req: api::PreviewRequest,
) -> Result<api::PreviewResponse, Status> {
    let revision = (!req.revision.is_empty()).then_some(req.revision.as_str());
    let build = ctx
        .sources
        .preview(&req.gitrepo, revision)
        .await
        .map_err(|e| match e {
            PreviewError::NoRepo(_) => Status::not_found(e.to_string()),
            PreviewError::Build(m) => {
                Status::failed_precondition(format!("cannot build GitRepo {:?}: {m}", req.gitrepo))
            }
        })?;
    let clusters: Vec<_> = ctx
        .fleet
        .clusters()
        .into_iter()
        .filter(|c| req.cluster.is_empty() || c.cluster.name == req.cluster)
        .collect();
    if !req.cluster.is_empty() && clusters.is_empty() {
        return Err(Status::not_found(format!(
            "no cluster named {:?}; list them with `flotilla cluster list`",
            req.cluster
        )));
    }
    // Manifests built for the preview, by hash; the rest come from the store.
    let mut fresh: HashMap<String, Vec<u8>> = HashMap::new();
    let mut warnings = Vec::new();
    for (_, env) in build.environments.values() {
        for m in &env.manifests {
            fresh.insert(m.hash.0.clone(), m.json.clone());
        }
        warnings.extend(env.warnings.iter().cloned());
    }
    let manifest = |hash: &str| -> Option<Vec<u8>> {
        fresh
            .get(hash)
            .cloned()
            .or_else(|| ctx.fleet.store().manifest(hash).ok().flatten())
    };
    let mut out = Vec::new();
    for view in clusters {
        let cluster = &view.cluster;
        let deployed: HashMap<BundleId, Arc<BundleContent>> =
            ctx.fleet.desired(cluster.id).into_iter().collect();
        let mut seen = BTreeSet::new();
        if let Some(env) = ctx.fleet.placement_preview(&build.spec, cluster)
            && let Some((commit, built)) = build.environments.get(&env)
        {
            for bundle in &built.bundles {
                let row = |action: &str| api::PreviewDeployment {
                    cluster: cluster.name.clone(),
                    environment: env.clone(),
                    bundle: bundle.id.0.clone(),
                    commit: commit.clone(),
                    action: action.to_string(),
                    ..Default::default()
                };
                match ctx.fleet.variant_preview(&build.spec, bundle, cluster) {
                    Ok(None) => continue,
                    Err(error) => {
                        seen.insert(bundle.id.clone());
                        out.push(api::PreviewDeployment {
                            error,
                            ..row("error")
                        });
                    }
                    Ok(Some(content)) => {
                        seen.insert(bundle.id.clone());
                        let new_yaml = render_yaml(&content, &manifest);
                        let old = deployed.get(&bundle.id);
                        let action = match old {
                            None => "add",
                            Some(o) if same_objects(o, &content) => "unchanged",
                            Some(_) => "update",
                        };
                        let old_yaml = old.map(|o| render_yaml(o, &manifest)).unwrap_or_default();
                        let diff = if old_yaml == new_yaml {
                            String::new()
                        } else {
                            similar::TextDiff::from_lines(&old_yaml, &new_yaml)
                                .unified_diff()
                                .context_radius(3)
                                .header(
                                    &format!("{} (deployed)", bundle.id),
                                    &format!("{} (at {})", bundle.id, short(commit)),
                                )
                                .to_string()
                        };
                        out.push(api::PreviewDeployment {
                            objects_yaml: new_yaml,
                            diff,
                            ..row(action)
                        });
                    }
                }
            }
        }
        // Deployed now from this GitRepo, not wanted at the previewed revision: pruned.
        for (id, content) in &deployed {
            let ours =
                id.0 == build.spec.name || id.0.starts_with(&format!("{}/", build.spec.name));
            if ours && !seen.contains(id) {
                let old_yaml = render_yaml(content, &manifest);
                out.push(api::PreviewDeployment {
                    cluster: cluster.name.clone(),
                    bundle: id.0.clone(),
                    action: "remove".into(),
                    diff: similar::TextDiff::from_lines(old_yaml.as_str(), "")
                        .unified_diff()
                        .header(&format!("{id} (deployed)"), "/dev/null")
                        .to_string(),
                    ..Default::default()
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.cluster, &a.bundle).cmp(&(&b.cluster, &b.bundle)));
    warnings.sort();
    warnings.dedup();
    Ok(api::PreviewResponse {
        deployments: out,
        warnings,
    })
}

/// Whether two contents hold the same objects in the same order (revisions aside).
fn same_objects(a: &BundleContent, b: &BundleContent) -> bool {
    a.default_namespace == b.default_namespace
        && a.manifests.len() == b.manifests.len()
        && a.manifests
            .iter()
            .zip(&b.manifests)
            .all(|(x, y)| x.hash == y.hash)
}

/// A content's objects as multi-document YAML, each headed by its source.
fn render_yaml(content: &BundleContent, manifest: &impl Fn(&str) -> Option<Vec<u8>>) -> String {
    let mut out = String::new();
    for m in &content.manifests {
        out.push_str(&format!("--- # {}\n", m.source));
        let yaml = manifest(&m.hash.0)
            .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
            .and_then(|v| serde_saphyr::to_string(&v).ok())
            .unwrap_or_else(|| format!("# manifest {} is not in the store\n", m.hash));
        out.push_str(&yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn short(rev: &str) -> &str {
    &rev[..rev.len().min(12)]
}
