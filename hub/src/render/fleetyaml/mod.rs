//! `fleet.yaml`: the per-bundle options file, read the way Rancher Fleet reads it.
//!
//! The field names and their meaning are Fleet's (`FleetYAML` and `BundleDeploymentOptions`
//! in Fleet's `pkg/apis/fleet.cattle.io/v1alpha1`). Parsing is lenient where Fleet is
//! lenient: a field Flotilla does not know, or knows but does not implement, is a warning
//! naming the field, never a failure. A document that is not YAML, a field of the wrong type
//! or a malformed selector fails that one bundle, naming `fleet.yaml`'s path and the line or
//! field.
//!
//! Fleet's `targets:` (the older spelling inside fleet.yaml) and `targetCustomizations:` are
//! one list, `targets` first, exactly as Fleet appends them; unnamed entries are named
//! `target000`, `target001`, … by position.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

mod parse;

pub use parse::parse;
#[cfg(test)]
pub(in crate::render) use parse::parse_str;

use crate::target::{ClusterTarget, LabelSelector};

/// The contents of one `fleet.yaml` (Default when a bundle directory has none).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetYaml {
    /// Bundle name override.
    #[serde(default)]
    pub name: String,
    /// Labels of the bundle, for other bundles' `dependsOn[].selector`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Namespace for objects that name none. Fleet's default is `default`.
    #[serde(default)]
    pub default_namespace: Option<String>,
    /// Forces every namespaced object into this namespace; cluster-scoped objects fail.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub kustomize: Option<KustomizeOptions>,
    #[serde(default)]
    pub helm: Option<HelmOptions>,
    #[serde(default)]
    pub yaml: Option<YamlOptions>,
    #[serde(default)]
    pub diff: Option<DiffOptions>,
    /// Do not roll out changes; the caller marks deployments out of sync instead.
    #[serde(default)]
    pub paused: bool,
    /// Leave objects in place when the bundle is removed.
    #[serde(default)]
    pub keep_resources: bool,
    #[serde(default)]
    pub correct_drift: Option<CorrectDrift>,
    #[serde(default)]
    pub depends_on: Vec<BundleRef>,
    /// Replaces the GitRepo's targets for this bundle when present.
    #[serde(default)]
    pub override_targets: Option<Vec<ClusterTarget>>,
    /// Per-target options; the first entry that matches a cluster applies to it.
    #[serde(default)]
    pub target_customizations: Vec<TargetCustomization>,
    /// Fleet's `targets:` inside fleet.yaml; moved to the front of `target_customizations`.
    #[serde(default, rename = "targets")]
    legacy_targets: Vec<TargetCustomization>,
}

/// `kustomize:` options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizeOptions {
    /// Directory holding `kustomization.yaml`, relative to the bundle directory.
    #[serde(default)]
    pub dir: String,
}

/// `helm:` options. Only the fields that change what is rendered are implemented.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmOptions {
    /// A path relative to the bundle, a chart name in `repo`, an `https://…tgz` or `oci://` URL.
    #[serde(default)]
    pub chart: String,
    /// An HTTPS Helm repository to find `chart` in.
    #[serde(default)]
    pub repo: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub release_name: String,
    #[serde(default)]
    pub values: Option<Map<String, Value>>,
    /// Values files relative to the bundle directory, merged over `values` in order.
    #[serde(default)]
    pub values_files: Vec<String>,
}

/// `yaml:` options of plain-YAML bundles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct YamlOptions {
    /// Names of directories under `overlays/`, applied in order.
    #[serde(default)]
    pub overlays: Vec<String>,
}

/// `diff:` options: fields the agent leaves out when it looks for drift.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffOptions {
    #[serde(default)]
    pub compare_patches: Vec<ComparePatch>,
}

/// Which object a compare patch is about, and what to ignore in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComparePatch {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub operations: Vec<PatchOperation>,
    #[serde(default)]
    pub json_pointers: Vec<String>,
}

/// One JSON-patch-like operation of a compare patch (usually `remove`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchOperation {
    #[serde(default)]
    pub op: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub value: String,
}

/// `correctDrift:` options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorrectDrift {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub keep_fail_history: bool,
}

/// One `dependsOn` entry: a bundle by name or bundles by label.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleRef {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// States of the dependency that count as ready (Fleet: `Ready` when empty).
    #[serde(default)]
    pub accepted_states: Vec<String>,
}

/// One `targetCustomizations` entry: which clusters, and the options that apply to them.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetCustomization {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub cluster_selector: Option<LabelSelector>,
    #[serde(default)]
    pub cluster_group: Option<String>,
    #[serde(default)]
    pub cluster_group_selector: Option<LabelSelector>,
    /// Matching clusters get nothing from this bundle.
    #[serde(default)]
    pub do_not_deploy: bool,
    #[serde(default)]
    pub default_namespace: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub kustomize: Option<KustomizeOptions>,
    #[serde(default)]
    pub helm: Option<HelmOptions>,
    #[serde(default)]
    pub yaml: Option<YamlOptions>,
    #[serde(default)]
    pub diff: Option<DiffOptions>,
    #[serde(default)]
    pub keep_resources: bool,
    #[serde(default)]
    pub correct_drift: Option<CorrectDrift>,
}

impl TargetCustomization {
    /// The clusters this customization is for, as a target (empty strings count as unset,
    /// as in Fleet).
    pub fn target(&self) -> ClusterTarget {
        let set = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        ClusterTarget {
            name: self.name.clone(),
            cluster_name: set(&self.cluster_name),
            cluster_selector: self.cluster_selector.clone(),
            cluster_group: set(&self.cluster_group),
            cluster_group_selector: self.cluster_group_selector.clone(),
        }
    }
}

/// Where the values of one layer come from, lowest precedence first in [`Options::values`].
#[derive(Clone, Debug, PartialEq)]
pub enum ValuesLayer {
    /// `helm.values` of fleet.yaml or of a customization (the field path, the values).
    Inline(String, Map<String, Value>),
    /// A `helm.valuesFiles` entry: the field path and the file relative to the bundle.
    File(String, String),
}

/// The options in force for one customization: fleet.yaml merged with it as Fleet's
/// `options.Merge` does (strings replace when set, values deep-merge, overlays append,
/// compare patches replace by object, `keepResources` ORs, `correctDrift` replaces).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    /// The namespace objects without one go to (`default` unless set).
    pub default_namespace: String,
    pub namespace: Option<String>,
    /// `kustomize.dir`, relative to the bundle directory.
    pub kustomize_dir: Option<String>,
    pub chart: String,
    pub repo: String,
    pub version: String,
    pub release_name: String,
    /// Values in merge order: fleet.yaml values, its valuesFiles, then the customization's.
    pub values: Vec<ValuesLayer>,
    pub overlays: Vec<String>,
    pub compare_patches: Vec<ComparePatch>,
    pub keep_resources: bool,
    pub correct_drift: CorrectDrift,
    pub do_not_deploy: bool,
}

impl FleetYaml {
    /// The options for `customization` (an index into `target_customizations`; None: none
    /// matched). An index out of range is treated as None.
    pub fn options(&self, customization: Option<usize>) -> Options {
        let mut o = Options {
            default_namespace: non_empty(&self.default_namespace).unwrap_or_default(),
            namespace: non_empty(&self.namespace),
            kustomize_dir: self
                .kustomize
                .as_ref()
                .and_then(|k| non_empty(&Some(k.dir.clone()))),
            overlays: self.yaml.iter().flat_map(|y| y.overlays.clone()).collect(),
            compare_patches: self
                .diff
                .iter()
                .flat_map(|d| d.compare_patches.clone())
                .collect(),
            keep_resources: self.keep_resources,
            correct_drift: self.correct_drift.unwrap_or_default(),
            ..Options::default()
        };
        if let Some(h) = &self.helm {
            merge_helm(&mut o, h, "helm");
        }
        let custom = customization.and_then(|i| Some((i, self.target_customizations.get(i)?)));
        if let Some((i, c)) = custom {
            let at = format!("targetCustomizations[{i}]");
            if let Some(ns) = non_empty(&c.default_namespace) {
                o.default_namespace = ns;
            }
            if let Some(ns) = non_empty(&c.namespace) {
                o.namespace = Some(ns);
            }
            if let Some(dir) = c.kustomize.as_ref().filter(|k| !k.dir.is_empty()) {
                o.kustomize_dir = Some(dir.dir.clone());
            }
            if let Some(h) = &c.helm {
                merge_helm(&mut o, h, &format!("{at}.helm"));
            }
            o.overlays
                .extend(c.yaml.iter().flat_map(|y| y.overlays.clone()));
            for p in c.diff.iter().flat_map(|d| &d.compare_patches) {
                let same = |q: &ComparePatch| {
                    (&q.api_version, &q.kind, &q.namespace, &q.name)
                        == (&p.api_version, &p.kind, &p.namespace, &p.name)
                };
                match o.compare_patches.iter_mut().find(|q| same(q)) {
                    Some(q) => *q = p.clone(),
                    None => o.compare_patches.push(p.clone()),
                }
            }
            o.keep_resources |= c.keep_resources;
            if let Some(cd) = c.correct_drift {
                o.correct_drift = cd;
            }
            o.do_not_deploy = c.do_not_deploy;
        }
        if o.default_namespace.is_empty() {
            o.default_namespace = "default".into();
        }
        o
    }
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.clone().filter(|s| !s.is_empty())
}

fn merge_helm(o: &mut Options, h: &HelmOptions, at: &str) {
    for (field, value) in [
        (&mut o.chart, &h.chart),
        (&mut o.repo, &h.repo),
        (&mut o.version, &h.version),
        (&mut o.release_name, &h.release_name),
    ] {
        if !value.is_empty() {
            field.clone_from(value);
        }
    }
    if let Some(v) = &h.values {
        o.values
            .push(ValuesLayer::Inline(format!("{at}.values"), v.clone()));
    }
    for (i, f) in h.values_files.iter().enumerate() {
        o.values.push(ValuesLayer::File(
            format!("{at}.valuesFiles[{i}]"),
            f.clone(),
        ));
    }
}
