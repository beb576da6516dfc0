//! Bundle discovery: which directories of a repository are bundles, with which renderer.
//!
//! Fleet's rules (`internal/cmd/cli/apply`): within each configured path (a directory or a
//! glob of directories; none = the repository root) every directory holding `fleet.yaml`
//! (or `fleet.yml`) is a bundle, at any depth. A configured path with no fleet.yaml of its own
//! is a plain bundle too when it holds manifest files outside the nested bundles. A nested
//! bundle's files never belong to its parent.
//!
//! The renderer follows Fleet: Helm when `helm.chart` is set or `Chart.yaml` is at the bundle
//! root; Kustomize when `kustomize.dir` is set or a kustomization file is at the root; plain
//! YAML otherwise. Discovery is pure: it reads the file list it is given, nothing else.

use std::collections::{BTreeMap, BTreeSet};

use super::fleetyaml::{self, FleetYaml, Options, ValuesLayer};
use super::paths::{self, display_dir, is_within, join, resolve};
use super::{BundleSource, ChartRef, Discovered, Renderer};
use crate::bundle::{BundleError, BundleFile, is_manifest_file};
use crate::model::ContentHash;

/// Kustomize's own file names, in the order it looks for them.
pub(super) const KUSTOMIZATION_FILES: &[&str] =
    &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Find the bundles of `files` (every regular file of a commit) under the configured `paths`.
pub fn discover(files: &[BundleFile], paths: &[String]) -> Vec<Discovered> {
    let repo = Repo::new(files);
    let configured: Vec<String> = if paths.is_empty() {
        vec![String::new()]
    } else {
        paths.iter().map(|p| normalize(p)).collect()
    };
    let mut found: BTreeMap<String, Option<BundleError>> = BTreeMap::new();
    for p in &configured {
        let bases = repo.matching_dirs(p);
        if bases.is_empty() {
            found.entry(p.clone()).or_insert_with(|| {
                Some(BundleError {
                    file: display_dir(p).to_string(),
                    line: None,
                    message: "configured path matches no directory of the repository".into(),
                })
            });
        }
        for base in bases {
            if !repo.bundle_dirs.contains(&base) && repo.has_loose_manifests(&base) {
                found.entry(base.clone()).or_insert(None);
            }
            for d in repo.bundle_dirs.iter().filter(|d| is_within(d, &base)) {
                found.entry(d.clone()).or_insert(None);
            }
        }
    }
    found
        .into_iter()
        .map(|(path, missing)| Discovered {
            result: match missing {
                Some(e) => Err(e),
                None => repo.bundle(&path),
            },
            path,
        })
        .collect()
}

/// A configured path as a repository directory: no leading `/` or `./`, no trailing `/`.
fn normalize(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    parts.join("/")
}

struct Repo<'a> {
    files: BTreeMap<&'a str, &'a [u8]>,
    dirs: BTreeSet<String>,
    bundle_dirs: BTreeSet<String>,
}

impl<'a> Repo<'a> {
    fn new(files: &'a [BundleFile]) -> Self {
        let files: BTreeMap<&str, &[u8]> = files
            .iter()
            .map(|f| (f.path.as_str(), f.data.as_slice()))
            .collect();
        let mut dirs = BTreeSet::from([String::new()]);
        let mut bundle_dirs = BTreeSet::new();
        for path in files.keys() {
            let (dir, name) = split(path);
            let mut d = dir;
            while !d.is_empty() && dirs.insert(d.to_string()) {
                d = split(d).0;
            }
            if name == "fleet.yaml" || name == "fleet.yml" {
                bundle_dirs.insert(dir.to_string());
            }
        }
        Self {
            files,
            dirs,
            bundle_dirs,
        }
    }

    /// Directories a configured path names: itself, or those its glob matches.
    fn matching_dirs(&self, pattern: &str) -> Vec<String> {
        if !pattern.contains(['*', '?']) {
            return self.dirs.get(pattern).cloned().into_iter().collect();
        }
        let want: Vec<&str> = pattern.split('/').collect();
        self.dirs
            .iter()
            .filter(|d| {
                let have: Vec<&str> = d.split('/').collect();
                have.len() == want.len()
                    && want.iter().zip(&have).all(|(w, h)| paths::glob_match(w, h))
            })
            .cloned()
            .collect()
    }

    /// The bundle directory nearest above `path` among those at or inside `dir`, other than
    /// `dir` itself: the nested bundle that owns it.
    fn nested_owner(&self, path: &str, dir: &str) -> bool {
        let mut d = split(path).0;
        loop {
            if d == dir || !is_within(d, dir) {
                return false;
            }
            if self.bundle_dirs.contains(d) {
                return true;
            }
            if d.is_empty() {
                return false;
            }
            d = split(d).0;
        }
    }

    /// Files of the bundle at `dir`: everything under it that no nested bundle owns.
    fn own_files(&self, dir: &str) -> Vec<&'a str> {
        self.files
            .keys()
            .copied()
            .filter(|p| is_within(p, dir) && !self.nested_owner(p, dir))
            .collect()
    }

    fn has_loose_manifests(&self, dir: &str) -> bool {
        self.own_files(dir).iter().any(|p| is_manifest_file(p))
    }

    fn bundle(&self, dir: &str) -> Result<BundleSource, BundleError> {
        let files = self.own_files(dir);
        let mut warnings = Vec::new();
        let yaml = join(dir, "fleet.yaml");
        let yml = join(dir, "fleet.yml");
        let (fleet, fleet_file) =
            match (self.files.get(yaml.as_str()), self.files.get(yml.as_str())) {
                (Some(data), other) => {
                    if other.is_some() {
                        warnings.push(format!("{yml}: ignored, {yaml} is read instead"));
                    }
                    (Some(*data), yaml)
                }
                (None, Some(data)) => (Some(*data), yml),
                (None, None) => (None, yaml),
            };
        let fleet = match fleet {
            Some(data) => {
                let (fy, w) = fleetyaml::parse(&fleet_file, data)?;
                warnings.extend(w);
                fy
            }
            None => FleetYaml::default(),
        };
        let err = |message: String| BundleError {
            file: fleet_file.clone(),
            line: None,
            message,
        };
        let mut source = BundleSource {
            path: dir.to_string(),
            fleet,
            warnings,
            renderer: Renderer::Plain,
            fingerprint: ContentHash(String::new()),
            files: files.iter().map(|f| f.to_string()).collect(),
        };
        source.renderer = self.renderer(&source, None).map_err(err)?;
        let mut read = BTreeSet::new();
        self.check_customizations(&mut source, &mut read)
            .map_err(err)?;
        source.fingerprint = self.fingerprint(&source, &read);
        Ok(source)
    }

    /// The renderer for one customization, from the options in force and the files present.
    fn renderer(&self, b: &BundleSource, customization: Option<usize>) -> Result<Renderer, String> {
        renderer_for(
            b,
            &b.fleet.options(customization),
            |p| self.files.contains_key(p),
            |d| self.dirs.contains(d),
        )
    }

    /// Resolve every customization's paths now, so a bad one fails discovery with the field
    /// named; collect the directories and files renders may read beyond the bundle's own.
    fn check_customizations(
        &self,
        b: &mut BundleSource,
        read: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        let count = b.fleet.target_customizations.len();
        for c in std::iter::once(None).chain((0..count).map(Some)) {
            let o = b.fleet.options(c);
            let at = c.map_or(String::new(), |i| format!("targetCustomizations[{i}]: "));
            match self.renderer(b, c).map_err(|m| format!("{at}{m}"))? {
                Renderer::Kustomize { .. } => {
                    read.insert(String::new());
                }
                Renderer::Helm {
                    chart: ChartRef::Local { path },
                } => {
                    read.insert(path);
                }
                _ => {}
            }
            for layer in &o.values {
                if let ValuesLayer::File(field, f) = layer {
                    read.insert(resolve(&b.path, f).map_err(|m| format!("{field}: {m}"))?);
                }
            }
            for name in &o.overlays {
                let dir = join(&join(&b.path, "overlays"), name);
                if !self.dirs.contains(&dir) {
                    b.warnings.push(format!(
                        "{}: {}overlay {name:?} has no directory {dir}, it changes nothing",
                        b.fleet_file(),
                        c.map_or(String::new(), |i| format!("targetCustomizations[{i}]: "))
                    ));
                }
            }
        }
        Ok(())
    }

    /// Hash of every file a render of `b` may read: its own files, plus the directories and
    /// files in `read` (the whole repository once a kustomization is involved, since bases
    /// may live anywhere).
    fn fingerprint(&self, b: &BundleSource, read: &BTreeSet<String>) -> ContentHash {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(format!("flotilla-render/1\n{}\n", b.path));
        let own: BTreeSet<&str> = b.files.iter().map(String::as_str).collect();
        for (path, data) in &self.files {
            let input = own.contains(path) || read.iter().any(|r| is_within(path, r));
            if input {
                h.update(path.as_bytes());
                h.update([0]);
                h.update(sha2::Sha256::digest(data));
            }
        }
        ContentHash(hex::encode(h.finalize()))
    }
}

/// Fleet's choice of renderer for a bundle under the options `o`. `exists` says whether a
/// repository file exists, `is_dir` whether a repository directory does.
pub(super) fn renderer_for(
    b: &BundleSource,
    o: &Options,
    exists: impl Fn(&str) -> bool,
    is_dir: impl Fn(&str) -> bool,
) -> Result<Renderer, String> {
    let chart_yaml = exists(&join(&b.path, "Chart.yaml"));
    if !o.chart.is_empty() || chart_yaml || !o.repo.is_empty() {
        if let Some(dir) = &o.kustomize_dir {
            return Err(format!(
                "kustomize.dir {dir:?} with a Helm chart: Fleet post-renders the chart with kustomize, Flotilla does not; render the chart or the kustomization, not both"
            ));
        }
        return chart_ref(b, o, &exists, &is_dir).map(|chart| Renderer::Helm { chart });
    }
    if let Some(dir) = &o.kustomize_dir {
        let dir = resolve(&b.path, dir).map_err(|m| format!("kustomize.dir: {m}"))?;
        if !KUSTOMIZATION_FILES.iter().any(|k| exists(&join(&dir, k))) {
            return Err(format!(
                "kustomize.dir: {} has no kustomization.yaml (or kustomization.yml, Kustomization)",
                display_dir(&dir)
            ));
        }
        return Ok(Renderer::Kustomize { dir });
    }
    if KUSTOMIZATION_FILES
        .iter()
        .any(|k| exists(&join(&b.path, k)))
    {
        return Ok(Renderer::Kustomize {
            dir: b.path.clone(),
        });
    }
    Ok(Renderer::Plain)
}

fn chart_ref(
    b: &BundleSource,
    o: &Options,
    exists: &impl Fn(&str) -> bool,
    is_dir: &impl Fn(&str) -> bool,
) -> Result<ChartRef, String> {
    let version = Some(o.version.clone()).filter(|v| !v.is_empty());
    if !o.repo.is_empty() {
        if !(o.repo.starts_with("https://") || o.repo.starts_with("http://")) {
            return Err(format!(
                "helm.repo: {:?} is not an http(s):// Helm repository URL",
                o.repo
            ));
        }
        if o.chart.is_empty() {
            return Err("helm.repo is set but helm.chart is not: name the chart to take from the repository".into());
        }
        return Ok(ChartRef::Repo {
            repo: o.repo.clone(),
            name: o.chart.clone(),
            version,
        });
    }
    if o.chart.starts_with("oci://") {
        return Ok(ChartRef::Oci {
            url: o.chart.clone(),
            version,
        });
    }
    if o.chart.starts_with("https://") || o.chart.starts_with("http://") {
        return Ok(ChartRef::Url {
            url: o.chart.clone(),
        });
    }
    if o.chart.contains("://") || o.chart.contains("::") {
        return Err(format!(
            "helm.chart: {:?}: only local paths, https:// chart archives, oci:// references and helm.repo are supported (not go-getter URLs)",
            o.chart
        ));
    }
    let path = resolve(&b.path, if o.chart.is_empty() { "." } else { &o.chart })
        .map_err(|m| format!("helm.chart: {m}"))?;
    let archive = path.ends_with(".tgz") || path.ends_with(".tar.gz");
    if (archive && exists(&path)) || (is_dir(&path) && exists(&join(&path, "Chart.yaml"))) {
        Ok(ChartRef::Local { path })
    } else {
        Err(format!(
            "helm.chart: {} is not in the repository (a local chart is a directory with Chart.yaml, or a .tgz archive)",
            display_dir(&path)
        ))
    }
}

/// `("a/b", "c.yaml")` from `a/b/c.yaml`; `("", "c.yaml")` at the root.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}
