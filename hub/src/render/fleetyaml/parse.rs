//! Reading `fleet.yaml`: typed parse (errors with a line), a second pass for the fields serde
//! skipped (warnings naming the field path), then Fleet's semantic checks (errors naming the
//! field). Fleet's `targets:` is moved in front of `targetCustomizations:` here.

use serde_json::Value;

use super::super::paths;
use super::{FleetYaml, HelmOptions, KustomizeOptions, YamlOptions};
use crate::bundle::BundleError;

/// Fields Fleet has that Flotilla accepts and ignores (a warning says so).
const NOT_SUPPORTED: &[&str] = &[
    "serviceAccount",
    "namespaceLabels",
    "namespaceAnnotations",
    "rolloutStrategy",
    "imageScans",
    "ignore",
    "forceSyncGeneration",
    "deleteCRDResources",
    "deleteNamespace",
    "downstreamResources",
    "helm.takeOwnership",
    "helm.force",
    "helm.atomic",
    "helm.timeoutSeconds",
    "helm.valuesFrom",
    "helm.maxHistory",
    "helm.waitForJobs",
    "helm.disablePreProcess",
    "helm.disableDNS",
    "helm.skipSchemaValidation",
    "helm.disableDependencyUpdate",
    "helm.templateValues",
];

/// Parse `fleet.yaml` (at `file`, a repository path). Returns the parsed file and warnings.
pub fn parse(file: &str, data: &[u8]) -> Result<(FleetYaml, Vec<String>), BundleError> {
    let err = |line: Option<usize>, message: String| BundleError {
        file: file.to_string(),
        line,
        message,
    };
    let text = std::str::from_utf8(data).map_err(|e| err(None, format!("not UTF-8 text: {e}")))?;
    if text.trim().is_empty() {
        return Ok((FleetYaml::default(), Vec::new()));
    }
    // Typed first, for errors with a line; then untyped, to find the fields serde skipped.
    let mut fy: FleetYaml = serde_saphyr::from_str(text).map_err(|e| {
        let message = e.to_string();
        err(line_of(&message), message)
    })?;
    let value: Value = serde_saphyr::from_str(text).map_err(|e| err(None, e.to_string()))?;
    let mut warnings = Vec::new();
    let _: FleetYaml = serde_ignored::deserialize(value, |path| {
        warnings.push(unknown_field(file, &field_path(&path)));
    })
    .map_err(|e| err(None, e.to_string()))?;

    let mut targets = std::mem::take(&mut fy.legacy_targets);
    targets.append(&mut fy.target_customizations);
    for (i, t) in targets.iter_mut().enumerate() {
        if t.name.is_empty() {
            t.name = format!("target{i:03}");
        }
    }
    fy.target_customizations = targets;
    validate(&fy, file, &mut warnings).map_err(|m| err(None, m))?;
    Ok((fy, warnings))
}

fn unknown_field(file: &str, path: &str) -> String {
    // Match the field with its list indexes taken out: `targetCustomizations[2].helm.atomic`.
    let generic = strip_indexes(path);
    let generic = generic
        .strip_prefix("targetCustomizations.")
        .or_else(|| generic.strip_prefix("targets."))
        .unwrap_or(&generic);
    if NOT_SUPPORTED.contains(&generic) {
        format!("{file}: `{path}` is not supported by Flotilla, ignored")
    } else {
        format!("{file}: unknown field `{path}` ignored")
    }
}

fn strip_indexes(path: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for c in path.chars() {
        match c {
            '[' => skip = true,
            ']' => skip = false,
            _ if !skip => out.push(c),
            _ => {}
        }
    }
    out
}

/// `helm.values` style path of an ignored field, with `[i]` for list positions.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let p = field_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// The line number in a serde-saphyr message (`… at line 3 column 5`), if it has one.
fn line_of(message: &str) -> Option<usize> {
    let rest = &message[message.find("line ")? + 5..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Semantic checks: selectors, dependsOn, paths and names. Errors name the field.
fn validate(fy: &FleetYaml, file: &str, warnings: &mut Vec<String>) -> Result<(), String> {
    for (i, d) in fy.depends_on.iter().enumerate() {
        let at = format!("dependsOn[{i}]");
        if d.name.is_empty() && d.selector.is_none() {
            return Err(format!("{at}: must specify either `name` or `selector`"));
        }
        if let Some(s) = &d.selector {
            s.validate(&format!("{at}.selector"))?;
        }
        for (j, s) in d.accepted_states.iter().enumerate() {
            if !BUNDLE_STATES.contains(&s.as_str()) {
                return Err(format!(
                    "{at}.acceptedStates[{j}]: invalid state {s:?}, valid values are: {}",
                    BUNDLE_STATES.join(", ")
                ));
            }
        }
    }
    for (i, t) in fy.override_targets.iter().flatten().enumerate() {
        t.validate(&format!("overrideTargets[{i}]"))?;
    }
    validate_options(
        "",
        fy.kustomize.as_ref(),
        fy.helm.as_ref(),
        fy.yaml.as_ref(),
        fy.namespace.as_deref(),
    )?;
    for (i, t) in fy.target_customizations.iter().enumerate() {
        let at = format!("targetCustomizations[{i}]");
        let target = t.target();
        if target.is_empty() {
            warnings.push(format!(
                "{file}: {at} ({}) sets none of clusterName, clusterSelector, clusterGroup, clusterGroupSelector and matches no cluster",
                t.name
            ));
        }
        if let Some(s) = &target.cluster_selector {
            s.validate(&format!("{at}.clusterSelector"))?;
        }
        if let Some(s) = &target.cluster_group_selector {
            s.validate(&format!("{at}.clusterGroupSelector"))?;
        }
        validate_options(
            &format!("{at}."),
            t.kustomize.as_ref(),
            t.helm.as_ref(),
            t.yaml.as_ref(),
            t.namespace.as_deref(),
        )?;
    }
    Ok(())
}

/// Bundle states a `dependsOn` entry may accept (Fleet's `StateRank`).
const BUNDLE_STATES: &[&str] = &[
    "Ready",
    "NotReady",
    "WaitApplied",
    "ErrApplied",
    "OutOfSync",
    "Pending",
    "Modified",
];

fn validate_options(
    at: &str,
    kustomize: Option<&KustomizeOptions>,
    helm: Option<&HelmOptions>,
    yaml: Option<&YamlOptions>,
    namespace: Option<&str>,
) -> Result<(), String> {
    if let Some(ns) = namespace.filter(|n| !n.is_empty() && !is_dns_label(n)) {
        return Err(format!(
            "{at}namespace: {ns:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63)"
        ));
    }
    if let Some(k) = kustomize.filter(|k| !k.dir.is_empty()) {
        paths::check_relative(&k.dir).map_err(|m| format!("{at}kustomize.dir: {m}"))?;
    }
    if let Some(h) = helm {
        for (i, f) in h.values_files.iter().enumerate() {
            paths::check_relative(f).map_err(|m| format!("{at}helm.valuesFiles[{i}]: {m}"))?;
        }
        if !h.release_name.is_empty() && !is_release_name(&h.release_name) {
            return Err(format!(
                "{at}helm.releaseName: {:?} is not a valid Helm release name (lowercase DNS name, at most 53 characters)",
                h.release_name
            ));
        }
    }
    for (i, name) in yaml.iter().flat_map(|y| y.overlays.iter()).enumerate() {
        paths::check_relative(name)
            .and_then(|_| {
                if name.is_empty() || name.split('/').any(|c| c == "..") {
                    Err("an overlay is a directory name under overlays/".to_string())
                } else {
                    Ok(())
                }
            })
            .map_err(|m| format!("{at}yaml.overlays[{i}]: {m}"))?;
    }
    Ok(())
}

/// RFC 1123 label: what a namespace name must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Helm's release name rule: dot-separated DNS labels, at most 53 characters.
fn is_release_name(s: &str) -> bool {
    s.len() <= 53 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
pub(in crate::render) fn parse_str(text: &str) -> Result<(FleetYaml, Vec<String>), BundleError> {
    parse("app/fleet.yaml", text.as_bytes())
}
