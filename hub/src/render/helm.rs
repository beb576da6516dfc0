//! Helm bundles: `helm template` with Fleet's values and release name.
//!
//! Values, lowest precedence first (Fleet: `bundlereader.generateValues` merges each values
//! file over `helm.values`, then `options.Merge` merges the customization's over fleet.yaml's):
//! the chart's own `values.yaml` (Helm), fleet.yaml `helm.values`, fleet.yaml
//! `helm.valuesFiles` in order, the customization's `helm.values`, its `helm.valuesFiles`.
//! Maps merge deeply; anything else (lists included) replaces. The result is one values file.
//!
//! `helm template --include-crds --skip-tests`: CRDs from `crds/` are part of the bundle as
//! `helm install` would create them; test hooks are not deployed.

use serde_json::{Map, Value};

use super::fleetyaml::{Options, ValuesLayer};
use super::paths::{join, resolve};
use super::process::{self, Cmd, Tool};
use super::{BundleSource, ChartRef, Checkout, RenderError, Renderers};
use crate::bundle::{self, SourcedObject};
use crate::model::ContentHash;

/// One Helm render.
pub struct Run<'a> {
    pub bundle: &'a BundleSource,
    pub options: &'a Options,
    pub chart: &'a ChartRef,
    pub release: &'a str,
    pub namespace: &'a str,
}

impl Run<'_> {
    pub async fn render(
        &self,
        r: &Renderers,
        checkout: &Checkout,
    ) -> Result<Vec<SourcedObject>, RenderError> {
        let path = &self.bundle.path;
        let values = merged_values(checkout, self.bundle, self.options)?;
        let scratch = process::scratch(r, path)?;
        let values_file = scratch.path().join("values.json");
        let json = serde_json::to_vec(&Value::Object(values)).expect("JSON values serialize");
        std::fs::write(&values_file, json).map_err(|e| {
            RenderError::new(
                path,
                values_file.display().to_string(),
                format!("cannot write: {e}"),
            )
        })?;
        let mut args: Vec<std::ffi::OsString> = vec!["template".into(), self.release.into()];
        match self.chart {
            ChartRef::Local { path } => args.push(checkout.root().join(path).into()),
            ChartRef::Repo {
                repo,
                name,
                version,
            } => {
                args.extend([name.into(), "--repo".into(), repo.into()]);
                args.extend(version.iter().flat_map(|v| ["--version".into(), v.into()]));
            }
            ChartRef::Url { url } => args.push(url.into()),
            ChartRef::Oci { url, version } => {
                args.push(url.into());
                args.extend(version.iter().flat_map(|v| ["--version".into(), v.into()]));
            }
        }
        args.extend(["--namespace".into(), self.namespace.into()]);
        args.extend(["--include-crds".into(), "--skip-tests".into()]);
        args.extend(["--values".into(), values_file.into()]);
        let cmd = Cmd {
            program: &r.helm,
            tool: Tool::Helm,
            args,
            cwd: checkout.root(),
            home: scratch.path(),
            network: self.chart.is_remote(),
        };
        let chart = self.chart.to_string();
        let out = cmd
            .run(r)
            .await
            .map_err(|e| e.into_render_error(path, &chart, checkout))?;
        let prefix = match self.chart {
            ChartRef::Local { path } if !path.ends_with(".tgz") => Some(path.as_str()),
            _ => None,
        };
        parse_output(&out, prefix).map_err(|e| RenderError::from_bundle_error(path, e))
    }
}

/// The values of every layer merged, in Fleet's order. Errors name the values file.
fn merged_values(
    checkout: &Checkout,
    bundle: &BundleSource,
    options: &Options,
) -> Result<Map<String, Value>, RenderError> {
    let mut merged = Map::new();
    for layer in &options.values {
        let values = match layer {
            ValuesLayer::Inline(_, v) => v.clone(),
            ValuesLayer::File(field, f) => {
                let err = |m: String| RenderError::new(&bundle.path, join(&bundle.path, f), m);
                let repo_path =
                    resolve(&bundle.path, f).map_err(|m| err(format!("{field}: {m}")))?;
                let data = std::fs::read(checkout.root().join(&repo_path)).map_err(|e| {
                    err(format!("{field}: cannot read the values file: {e}"))
                        .hint("paths in helm.valuesFiles are relative to the bundle directory")
                })?;
                let text = String::from_utf8_lossy(&data);
                match serde_saphyr::from_str::<Value>(&text) {
                    Ok(Value::Object(m)) => m,
                    Ok(Value::Null) => Map::new(),
                    Ok(_) => return Err(err(format!("{field}: a values file must be a mapping"))),
                    Err(e) => return Err(err(format!("{field}: invalid YAML: {e}"))),
                }
            }
        };
        merge_maps(&mut merged, values);
    }
    Ok(merged)
}

/// Deep merge as wrangler's `data.MergeMaps`: maps merge, anything else in `overlay` wins.
pub fn merge_maps(base: &mut Map<String, Value>, overlay: Map<String, Value>) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => merge_maps(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Objects of `helm template` output, each named by its template (`# Source:` line). With
/// a local chart directory, `chartname/templates/x.yaml` becomes `<chart dir>/templates/x.yaml`.
fn parse_output(
    out: &[u8],
    local_chart: Option<&str>,
) -> Result<Vec<SourcedObject>, crate::bundle::BundleError> {
    let text = String::from_utf8_lossy(out);
    // Group consecutive documents by their source template.
    let mut groups: Vec<(String, String)> = Vec::new();
    for doc in text.split("\n---") {
        let source = doc
            .lines()
            .find_map(|l| l.strip_prefix("# Source: "))
            .map(|s| match (local_chart, s.split_once('/')) {
                (Some(dir), Some((_, rest))) => join(dir, rest),
                _ => s.to_string(),
            })
            .unwrap_or_else(|| "helm template".to_string());
        match groups.last_mut() {
            Some((s, body)) if *s == source => {
                body.push_str("\n---");
                body.push_str(doc);
            }
            _ => groups.push((source, doc.to_string())),
        }
    }
    let mut objects = Vec::new();
    for (source, body) in groups {
        objects.extend(bundle::parse_rendered(&source, body.as_bytes())?);
    }
    Ok(objects)
}

/// A release name from `hint` as Fleet's `names.HelmReleaseName` makes one: `/` to `-`,
/// lowercase, other characters to `-` (with a hash suffix when anything was changed, so two
/// hints differing only there stay apart), at most 53 characters (a hash suffix when cut).
/// Fleet hashes with MD5; Flotilla with SHA-256, so hashed names differ from Fleet's.
pub fn release_name(hint: &str) -> String {
    let hex = |s: &str, n: usize| ContentHash::of(s.as_bytes()).0[..n].to_string();
    let mut s = hint.replace('/', "-");
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-';
    if s != s.to_lowercase() || !s.chars().all(allowed) {
        s = format!("{s}-{}", hex(&s, 8));
    }
    let cleaned: String = s
        .to_lowercase()
        .chars()
        .map(|c| if allowed(c) { c } else { '-' })
        .collect();
    let mut out = String::new();
    for c in cleaned.chars() {
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        return hex(hint, 24);
    }
    if out.len() <= 53 {
        return out;
    }
    let keep = &out[..53 - 6];
    let sep = if keep.ends_with('-') { "" } else { "-" };
    format!("{keep}{sep}{}", hex(&out, 5))
}
