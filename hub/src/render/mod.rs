//! Rendering: from a repository's files to the Kubernetes objects of one bundle, for one
//! target customization, the way Rancher Fleet does it.
//!
//! The flow, and the public API:
//! 1. [`discover`]`(files, paths) -> Vec<`[`Discovered`]`>`: pure. Finds the bundle
//!    directories, parses each `fleet.yaml` ([`fleetyaml`]), decides the [`Renderer`] and
//!    computes a [`BundleSource::fingerprint`] over every input a render may read: equal
//!    fingerprints (with the same customization and release hint) give identical renders, so
//!    an unchanged bundle need not be rendered again at a new commit. A broken bundle is one
//!    `Err` entry; the others are unaffected.
//! 2. [`Checkout::write`]`(files, parent)`: a private temporary copy of the repository,
//!    deleted on drop. Blocking I/O: call it from `spawn_blocking`.
//! 3. [`render`]`(renderers, checkout, bundle, customization, release_hint)`: plain YAML with
//!    Fleet's overlays in-process; Kustomize (`kubectl kustomize`) and Helm (`helm template`)
//!    as child processes on the checkout, with a cleared environment, a timeout, an output
//!    limit and (for everything but remote charts) proxies pointed at a closed port.
//!    Then `namespace:` is enforced. Errors are [`RenderError`]s naming bundle, file and a fix.
//!
//! *Boundary:* nothing here knows clusters, the store or the wire. Choosing the customization
//! for a cluster is the caller's job (`TargetCustomization::target()` and `target.rs`).
//! *Invariant:* renderers only see the checkout, and every path taken from fleet.yaml is
//! resolved by `paths` to stay inside it.

mod checkout;
mod discover;
pub mod fleetyaml;
mod helm;
mod namespace;
mod overlay;
mod patch;
mod paths;
mod process;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use checkout::Checkout;
pub use discover::discover;
pub use fleetyaml::{FleetYaml, Options, TargetCustomization};

use crate::bundle::{self, BundleError, SourcedObject};
use crate::model::ContentHash;

/// One bundle directory found by [`discover`]: its source, or why it cannot be built.
#[derive(Clone, Debug)]
pub struct Discovered {
    /// The bundle directory, relative to the repository root ("" = the root).
    pub path: String,
    pub result: Result<BundleSource, BundleError>,
}

/// A bundle as found in the repository: everything needed to render it.
#[derive(Clone, Debug)]
pub struct BundleSource {
    /// The bundle directory ("" = the repository root).
    pub path: String,
    /// Its fleet.yaml (Default when it has none).
    pub fleet: FleetYaml,
    /// Things worth telling the user that do not stop the bundle (unknown fields, …).
    pub warnings: Vec<String>,
    /// The renderer with no customization; a customization may change it (`kustomize.dir`,
    /// `helm.chart`), see [`BundleSource::renderer_for`].
    pub renderer: Renderer,
    /// Hash over every input a render of this bundle can read.
    pub fingerprint: ContentHash,
    /// The bundle's own files (repository paths), nested bundles' files excluded.
    pub files: Vec<String>,
}

/// How a bundle is turned into objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renderer {
    /// `*.yaml`, `*.yml`, `*.json` files, with `overlays/` applied per customization.
    Plain,
    /// `kubectl kustomize <dir>`; `dir` is a repository path.
    Kustomize { dir: String },
    /// `helm template`.
    Helm { chart: ChartRef },
}

/// Where a Helm chart comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChartRef {
    /// A chart directory or `.tgz` in the repository (repository path). Rendered offline.
    Local { path: String },
    /// `helm.repo` + `helm.chart` (+ `helm.version`).
    Repo {
        repo: String,
        name: String,
        version: Option<String>,
    },
    /// An `https://…tgz` chart archive.
    Url { url: String },
    /// An `oci://` chart reference.
    Oci {
        url: String,
        version: Option<String>,
    },
}

impl ChartRef {
    /// Whether rendering this chart may use the network.
    pub fn is_remote(&self) -> bool {
        !matches!(self, ChartRef::Local { .. })
    }

    /// Whether the same fingerprint always means the same chart. A remote chart without an
    /// exact version (or a repository whose index changes) is outside the fingerprint.
    pub fn is_pinned(&self) -> bool {
        match self {
            ChartRef::Local { .. } => true,
            ChartRef::Repo { version, .. } | ChartRef::Oci { version, .. } => {
                version.as_deref().is_some_and(is_exact_version)
            }
            ChartRef::Url { .. } => true,
        }
    }
}

fn is_exact_version(v: &str) -> bool {
    let v = v.strip_prefix('v').unwrap_or(v);
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
        && v.starts_with(|c: char| c.is_ascii_digit())
}

impl fmt::Display for ChartRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChartRef::Local { path } => f.write_str(paths::display_dir(path)),
            ChartRef::Repo {
                repo,
                name,
                version,
            } => {
                write!(f, "{name} from {repo}")?;
                version.iter().try_for_each(|v| write!(f, " version {v}"))
            }
            ChartRef::Url { url } => f.write_str(url),
            ChartRef::Oci { url, version } => {
                f.write_str(url)?;
                version.iter().try_for_each(|v| write!(f, " version {v}"))
            }
        }
    }
}

/// The external renderers and the limits they run under (configuration: data only).
#[derive(Clone, Debug)]
pub struct Renderers {
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    /// Longest one render may take; the renderer's process group is killed after it.
    pub timeout: Duration,
    /// Largest output a renderer may write; past it the renderer is killed.
    pub max_output_bytes: usize,
    /// Where per-render scratch directories (Helm's home, the values file) are made.
    pub scratch: PathBuf,
}

impl Default for Renderers {
    fn default() -> Self {
        Self {
            kubectl: "kubectl".into(),
            helm: "helm".into(),
            timeout: Duration::from_secs(60),
            max_output_bytes: 64 << 20,
            scratch: std::env::temp_dir(),
        }
    }
}

/// The objects of one bundle for one customization.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub objects: Vec<SourcedObject>,
    /// `namespace` when set, else `defaultNamespace`, else `default`.
    pub default_namespace: String,
}

/// Why one bundle could not be rendered for one customization.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RenderError {
    /// The bundle directory ("" = the repository root).
    pub bundle: String,
    /// The file (or directory, or chart) at fault, as the user knows it.
    pub file: String,
    pub message: String,
    /// What to do about it; may be empty.
    pub hint: String,
}

impl RenderError {
    fn new(bundle: &str, file: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            bundle: bundle.to_string(),
            file: file.into(),
            message: message.into(),
            hint: String::new(),
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    fn from_bundle_error(bundle: &str, e: BundleError) -> Self {
        let file = match e.line {
            Some(line) => format!("{}:{line}", e.file),
            None => e.file,
        };
        Self::new(bundle, file, e.message)
    }
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bundle {}: {}: {}",
            paths::display_dir(&self.bundle),
            self.file,
            self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, "; {}", self.hint)?;
        }
        Ok(())
    }
}

impl BundleSource {
    /// The renderer for `customization` (None: no customization matched), as files in
    /// `checkout` decide it.
    pub fn renderer_for(
        &self,
        checkout: &Checkout,
        customization: Option<usize>,
    ) -> Result<Renderer, RenderError> {
        let root = checkout.root();
        discover::renderer_for(
            self,
            &self.fleet.options(customization),
            |p| root.join(p).is_file(),
            |d| root.join(d).is_dir(),
        )
        .map_err(|m| RenderError::new(&self.path, self.fleet_file(), m))
    }

    /// The path of the bundle's fleet.yaml, for messages.
    fn fleet_file(&self) -> String {
        let yml = paths::join(&self.path, "fleet.yml");
        if self.files.contains(&yml) {
            yml
        } else {
            paths::join(&self.path, "fleet.yaml")
        }
    }
}

/// Render `bundle` for one customization (None = no targetCustomization matched).
/// `customization` is an index into `bundle.fleet.target_customizations`; `release_hint`
/// names the Helm release when fleet.yaml does not (made a valid release name as Fleet does).
pub async fn render(
    r: &Renderers,
    checkout: &Checkout,
    bundle: &BundleSource,
    customization: Option<usize>,
    release_hint: &str,
) -> Result<Rendered, RenderError> {
    let options = bundle.fleet.options(customization);
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| options.default_namespace.clone());
    let mut objects = match bundle.renderer_for(checkout, customization)? {
        Renderer::Plain => overlay::render_plain(checkout, bundle, &options)?,
        Renderer::Kustomize { dir } => kustomize(r, checkout, bundle, &dir).await?,
        Renderer::Helm { chart } => {
            let release = match options.release_name.as_str() {
                "" => helm::release_name(release_hint),
                name => name.to_string(),
            };
            let run = helm::Run {
                bundle,
                options: &options,
                chart: &chart,
                release: &release,
                namespace: &namespace,
            };
            run.render(r, checkout).await?
        }
    };
    if let Some(ns) = &options.namespace {
        namespace::force(&mut objects, ns)
            .map_err(|(source, m)| RenderError::new(&bundle.path, source, m))?;
    }
    Ok(Rendered {
        objects,
        default_namespace: namespace,
    })
}

/// `kubectl kustomize <dir>` inside the checkout, offline.
async fn kustomize(
    r: &Renderers,
    checkout: &Checkout,
    bundle: &BundleSource,
    dir: &str,
) -> Result<Vec<SourcedObject>, RenderError> {
    let scratch = process::scratch(r, &bundle.path)?;
    let shown = paths::display_dir(dir).to_string();
    let cmd = process::Cmd {
        program: &r.kubectl,
        tool: process::Tool::Kubectl,
        args: vec!["kustomize".into(), shown.clone().into()],
        cwd: checkout.root(),
        home: scratch.path(),
        network: false,
    };
    let out = cmd
        .run(r)
        .await
        .map_err(|e| e.into_render_error(&bundle.path, &shown, checkout))?;
    let source = format!("kustomize build {shown}");
    bundle::parse_rendered(&source, &out)
        .map_err(|e| RenderError::from_bundle_error(&bundle.path, e))
}
