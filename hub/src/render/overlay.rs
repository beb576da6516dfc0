//! Plain-YAML bundles and Fleet's file-name overlays (`yaml.overlays`).
//!
//! As Fleet's `internal/helmdeployer/.../patch`: the bundle's files form a map from path
//! (relative to the bundle) to content. For each overlay in order, every file under
//! `overlays/<name>/` is taken with that prefix removed: a name containing `_patch.` patches
//! the file named with `_patch.` replaced by `.` (`web_patch.yaml` patches `web.yaml`, same
//! sub-directory); any other file replaces or adds the file of that name. Then everything
//! under `overlays/` is dropped and the manifest files are parsed.
//!
//! Left out of the map, as in Fleet: hidden files and directories, files matched by a
//! `.fleetignore`, fleet.yaml, and Helm values files named in fleet.yaml.

use std::collections::BTreeMap;

use super::fleetyaml::{Options, ValuesLayer};
use super::paths::{glob_match, join, relative_to, resolve};
use super::{BundleSource, Checkout, RenderError, patch};
use crate::bundle::{self, SourcedObject, is_manifest_file};

const OVERLAYS: &str = "overlays/";

/// One file of the overlay map: where its content came from, and the content.
struct Entry {
    source: String,
    data: Vec<u8>,
}

/// Render a plain-YAML bundle with `options.overlays` applied.
pub fn render_plain(
    checkout: &Checkout,
    bundle: &BundleSource,
    options: &Options,
) -> Result<Vec<SourcedObject>, RenderError> {
    let err = |file: &str, m: String| RenderError::new(&bundle.path, file, m);
    let mut content = BTreeMap::new();
    let ignore = Ignore::load(checkout, bundle);
    let skip = excluded(bundle);
    for path in &bundle.files {
        let rel = relative_to(path, &bundle.path).unwrap_or(path);
        if skip.contains(&rel.to_string()) || is_hidden(rel) || ignore.is_ignored(rel) {
            continue;
        }
        let data = std::fs::read(checkout.root().join(path))
            .map_err(|e| err(path, format!("cannot read: {e}")))?;
        content.insert(
            rel.to_string(),
            Entry {
                source: path.clone(),
                data,
            },
        );
    }
    for name in &options.overlays {
        apply_overlay(&mut content, name)
            .map_err(|(file, m)| err(&join(&bundle.path, &file), m))?;
    }
    // In bundle-relative name order (Fleet sorts resources by name), each named by the
    // repository file its content came from.
    let mut objects = Vec::new();
    for (rel, e) in content {
        if rel.starts_with(OVERLAYS) || !is_manifest_file(&rel) {
            continue;
        }
        let parsed = bundle::parse_rendered(&e.source, &e.data)
            .map_err(|e| RenderError::from_bundle_error(&bundle.path, e))?;
        objects.extend(parsed);
    }
    Ok(objects)
}

/// Files of the bundle root that are configuration, not manifests (relative paths).
fn excluded(bundle: &BundleSource) -> Vec<String> {
    let mut out = vec!["fleet.yaml".to_string(), "fleet.yml".to_string()];
    let count = bundle.fleet.target_customizations.len();
    for c in std::iter::once(None).chain((0..count).map(Some)) {
        for layer in bundle.fleet.options(c).values {
            if let ValuesLayer::File(_, f) = layer {
                out.extend(resolve("", &f).ok());
            }
        }
    }
    out
}

fn is_hidden(rel: &str) -> bool {
    rel.split('/').any(|c| c.starts_with('.'))
}

/// Apply one overlay to `content`. Errors name the overlay file (bundle-relative).
fn apply_overlay(
    content: &mut BTreeMap<String, Entry>,
    name: &str,
) -> Result<(), (String, String)> {
    let prefix = format!("{OVERLAYS}{name}/");
    let overlay: Vec<(String, String)> = content
        .keys()
        .filter_map(|k| Some((k.clone(), k.strip_prefix(&prefix)?.to_string())))
        .collect();
    for (full, name) in overlay {
        let entry = &content[&full];
        let (source, data) = (entry.source.clone(), entry.data.clone());
        let Some(target) = patch_target(&name) else {
            content.insert(name, Entry { source, data });
            continue;
        };
        let Some(base) = content.get_mut(&target) else {
            return Err((
                full,
                format!("patches {target}, which is not a file of the bundle"),
            ));
        };
        base.data = patch::apply_file(&base.data, &data).map_err(|m| (full.clone(), m))?;
    }
    Ok(())
}

/// The file a `…_patch.…` file patches: `_patch.` replaced by `.` in the file name.
fn patch_target(rel: &str) -> Option<String> {
    let (dir, file) = rel.rsplit_once('/').unwrap_or(("", rel));
    file.contains("_patch.")
        .then(|| join(dir, &file.replacen("_patch.", ".", 1)))
}

/// `.fleetignore` files of the bundle: each lists patterns (shell globs on one name, or
/// `dir/*` for a whole directory) that apply to its directory and everything below it.
struct Ignore {
    /// Bundle-relative directory → its patterns.
    patterns: BTreeMap<String, Vec<String>>,
}

impl Ignore {
    fn load(checkout: &Checkout, bundle: &BundleSource) -> Self {
        let mut patterns = BTreeMap::new();
        for path in &bundle.files {
            let rel = relative_to(path, &bundle.path).unwrap_or(path);
            let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            if name != ".fleetignore" {
                continue;
            }
            let text = std::fs::read_to_string(checkout.root().join(path)).unwrap_or_default();
            let list = text
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect();
            patterns.insert(dir.to_string(), list);
        }
        Self { patterns }
    }

    fn is_ignored(&self, rel: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        (0..parts.len()).any(|k| {
            let is_dir = k + 1 < parts.len();
            (0..=k).any(|depth| {
                let dir = parts[..depth].join("/");
                self.patterns
                    .get(&dir)
                    .into_iter()
                    .flatten()
                    .any(|p| match p.strip_suffix("/*") {
                        Some(d) if !d.is_empty() => is_dir && d == parts[k],
                        _ => glob_match(p, parts[k]),
                    })
            })
        })
    }
}
