//! Tests of rendering: fixtures are whole repositories written as one string, in the
//! `-- path` format below, mirroring rancher/fleet-examples where there is an example.
//!
//! Tests that run helm or kubectl use the real binaries; one that finds its binary missing
//! prints why and passes (the only environment reason to skip).

mod discover;
mod fleetyaml;
mod plain;
mod renderers;

use std::path::PathBuf;

use serde_json::Value;

use super::*;
use crate::bundle::BundleFile;

/// Files from `-- path` headers, each followed by its content.
pub(super) fn repo(spec: &str) -> Vec<BundleFile> {
    let mut files = Vec::new();
    for chunk in spec
        .split("\n-- ")
        .map(|c| c.strip_prefix("-- ").unwrap_or(c))
    {
        if chunk.trim().is_empty() {
            continue;
        }
        let (path, data) = chunk.split_once('\n').unwrap_or((chunk, ""));
        files.push(BundleFile {
            path: path.trim().to_string(),
            data: data.as_bytes().to_vec(),
        });
    }
    files
}

/// The one bundle at `path`, which must have been discovered without error.
pub(super) fn bundle_at(found: &[Discovered], path: &str) -> BundleSource {
    let d = found
        .iter()
        .find(|d| d.path == path)
        .unwrap_or_else(|| panic!("no bundle {path:?} in {:?}", paths_of(found)));
    d.result
        .clone()
        .unwrap_or_else(|e| panic!("bundle {path:?}: {e}"))
}

pub(super) fn paths_of(found: &[Discovered]) -> Vec<&str> {
    found.iter().map(|d| d.path.as_str()).collect()
}

/// Discover, write a checkout, render `path` for the customization named `custom`.
pub(super) async fn render_repo(
    r: &Renderers,
    spec: &str,
    path: &str,
    custom: Option<&str>,
) -> Result<Rendered, RenderError> {
    let files = repo(spec);
    let b = bundle_at(&discover(&files, &[]), path);
    let index = custom.map(|name| {
        b.fleet
            .target_customizations
            .iter()
            .position(|t| t.name == name)
            .unwrap_or_else(|| panic!("no customization {name}"))
    });
    let checkout = Checkout::write(&files, &std::env::temp_dir()).expect("checkout");
    render(r, &checkout, &b, index, "repo/app").await
}

/// `kind/name` of each object, in order.
pub(super) fn names(r: &Rendered) -> Vec<String> {
    r.objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o.object["kind"].as_str().unwrap(),
                o.object["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// The object `kind/name`.
pub(super) fn object<'a>(r: &'a Rendered, kind_name: &str) -> &'a Value {
    let i = names(r)
        .iter()
        .position(|n| n == kind_name)
        .unwrap_or_else(|| panic!("no {kind_name} in {:?}", names(r)));
    &r.objects[i].object
}

/// The path of `tool` when installed, else None after saying the test is skipped.
pub(super) fn installed(tool: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        eprintln!("SKIPPED: {tool} is not installed on this machine (not on PATH)");
    }
    found
}
