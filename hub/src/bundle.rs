//! Turning a bundle directory's files into manifests: pure, no I/O.
//!
//! A bundle is one directory of `*.yaml`, `*.yml` and `*.json` files (multi-document YAML),
//! read in path order. Each document is one Kubernetes object, stored as JSON under the
//! SHA-256 of those bytes, so identical objects are stored and sent once however many
//! bundles, revisions and clusters share them.
//!
//! Invariant: a bundle with any unreadable document builds nothing. Deploying the other
//! documents would prune the objects of the broken one from every cluster.

use std::fmt;

use serde_json::Value;

use crate::model::{BundleContent, ContentHash, ManifestRef};

/// One file of a bundle directory.
#[derive(Clone, Debug)]
pub struct BundleFile {
    /// Path relative to the repository root.
    pub path: String,
    pub data: Vec<u8>,
}

/// One manifest, ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltManifest {
    pub hash: ContentHash,
    pub json: Vec<u8>,
}

/// A bundle's content and the manifests it references.
#[derive(Clone, Debug)]
pub struct BuiltBundle {
    pub content: BundleContent,
    pub manifests: Vec<BuiltManifest>,
}

/// Why a bundle could not be built: names the file and, where known, the line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct BundleError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Whether a file in a bundle directory is a manifest file.
pub fn is_manifest_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    // fleet.yaml describes the bundle; it is never applied to a cluster.
    name != "fleet.yaml"
        && name != "fleet.yml"
        && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
}

/// One Kubernetes object of a bundle and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct SourcedObject {
    /// `path/in/repo.yaml#N` (N counts documents from 1), or the renderer's own source
    /// (a Helm template path, `kustomize build <dir>#N`).
    pub source: String,
    pub object: Value,
}

/// Per-deployment options that travel with the content to the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentOptions {
    pub keep_resources: bool,
    pub correct_drift: bool,
    pub compare_patches: Vec<crate::model::ComparePatch>,
}

/// Build a bundle from its files at `revision`. Files that are not manifests are ignored.
pub fn build(
    revision: &str,
    default_namespace: &str,
    files: &[BundleFile],
) -> Result<BuiltBundle, BundleError> {
    Ok(assemble(
        revision,
        default_namespace,
        ContentOptions::default(),
        parse_files(files)?,
    ))
}

/// Parse every manifest file of `files` (in path order) into objects.
pub fn parse_files(files: &[BundleFile]) -> Result<Vec<SourcedObject>, BundleError> {
    let mut files: Vec<&BundleFile> = files.iter().filter(|f| is_manifest_file(&f.path)).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::new();
    for file in files {
        for (index, object) in parse_file(file)?.into_iter().enumerate() {
            out.push(SourcedObject {
                source: format!("{}#{}", file.path, index + 1),
                object,
            });
        }
    }
    Ok(out)
}

/// Parse the output of a renderer (multi-document YAML) into objects named
/// `<source>#N`; errors name `source`.
pub fn parse_rendered(source: &str, yaml: &[u8]) -> Result<Vec<SourcedObject>, BundleError> {
    let file = BundleFile {
        path: source.to_string(),
        data: yaml.to_vec(),
    };
    Ok(parse_file(&file)?
        .into_iter()
        .enumerate()
        .map(|(i, object)| SourcedObject {
            source: format!("{source}#{}", i + 1),
            object,
        })
        .collect())
}

/// Store-ready content from objects: each object serialized once and named by its hash.
pub fn assemble(
    revision: &str,
    default_namespace: &str,
    options: ContentOptions,
    objects: Vec<SourcedObject>,
) -> BuiltBundle {
    let mut refs = Vec::new();
    let mut manifests = Vec::new();
    for o in objects {
        let json = serde_json::to_vec(&o.object).expect("JSON values serialize");
        let hash = ContentHash::of(&json);
        refs.push(ManifestRef {
            hash: hash.clone(),
            source: o.source,
        });
        manifests.push(BuiltManifest { hash, json });
    }
    let content_hash = content_hash(default_namespace, &options, &refs);
    BuiltBundle {
        content: BundleContent {
            content_hash,
            revision: revision.to_string(),
            default_namespace: default_namespace.to_string(),
            manifests: refs,
            keep_resources: options.keep_resources,
            correct_drift: options.correct_drift,
            compare_patches: options.compare_patches,
        },
        manifests,
    }
}

/// The hash naming a deployment's desired state. The revision is left out on purpose: a
/// commit that does not change a bundle does not redeploy it.
fn content_hash(
    default_namespace: &str,
    options: &ContentOptions,
    refs: &[ManifestRef],
) -> ContentHash {
    let mut text = format!("ns={default_namespace}\n");
    // Options are hashed only when set, so content built before they existed keeps its hash.
    if options.keep_resources {
        text.push_str("keep-resources\n");
    }
    if options.correct_drift {
        text.push_str("correct-drift\n");
    }
    if !options.compare_patches.is_empty() {
        let patches = serde_json::to_string(&options.compare_patches).expect("serializable");
        text.push_str(&format!("compare-patches={patches}\n"));
    }
    for r in refs {
        text.push_str(&r.hash.0);
        text.push(' ');
        text.push_str(&r.source);
        text.push('\n');
    }
    ContentHash::of(text.as_bytes())
}

/// Parse one file into Kubernetes objects, checking each looks like one.
fn parse_file(file: &BundleFile) -> Result<Vec<Value>, BundleError> {
    let err = |line: Option<usize>, message: String| BundleError {
        file: file.path.clone(),
        line,
        message,
    };
    let text =
        std::str::from_utf8(&file.data).map_err(|e| err(None, format!("not UTF-8 text: {e}")))?;
    let mut objects = Vec::new();
    if file.path.ends_with(".json") {
        let value: Value =
            serde_json::from_str(text).map_err(|e| err(Some(e.line()), e.to_string()))?;
        push_object(value, &mut objects).map_err(|m| err(Some(1), m))?;
        return Ok(objects);
    }
    for doc in split_documents(text) {
        if doc.text.trim().is_empty() {
            continue;
        }
        let value: Value = serde_saphyr::from_str(doc.text).map_err(|e| {
            let msg = e.to_string();
            err(
                Some(doc.first_line),
                format!("invalid YAML in the document starting here: {msg}"),
            )
        })?;
        push_object(value, &mut objects).map_err(|m| err(Some(doc.first_line), m))?;
    }
    Ok(objects)
}

/// Check `value` is an object (or a `List` of them) and append it.
fn push_object(value: Value, out: &mut Vec<Value>) -> Result<(), String> {
    match value {
        Value::Null => Ok(()),
        Value::Object(ref map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && map.get("items").is_some() =>
        {
            let Some(Value::Array(items)) = map.get("items") else {
                return Err("`items` of a List must be a sequence".into());
            };
            for item in items.clone() {
                push_object(item, out)?;
            }
            Ok(())
        }
        Value::Object(ref map) => {
            for field in ["apiVersion", "kind"] {
                if map
                    .get(field)
                    .and_then(Value::as_str)
                    .is_none_or(|s| s.is_empty())
                {
                    return Err(format!(
                        "a Kubernetes object needs a non-empty string `{field}`"
                    ));
                }
            }
            let name = map
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str);
            if name.is_none_or(|n| n.is_empty()) {
                return Err("a Kubernetes object needs `metadata.name` (generateName is not supported: objects must be addressable to be updated and pruned)".into());
            }
            out.push(value);
            Ok(())
        }
        other => Err(format!(
            "a document must be a mapping (a Kubernetes object), found {}",
            kind_of(&other)
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

struct Document<'a> {
    text: &'a str,
    /// 1-based line of the document's first content line in the file.
    first_line: usize,
}

/// Split multi-document YAML on `---` / `...` markers at column 0, keeping line numbers.
fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = |m: &str| {
            bare == m || bare.starts_with(&format!("{m} ")) || bare.starts_with(&format!("{m}\t"))
        };
        if is_marker("---") || is_marker("...") {
            docs.push(Document {
                text: &text[start..offset],
                first_line: start_line,
            });
            // Content after `--- ` on the same line belongs to the next document.
            start = offset + if is_marker("---") { 3 } else { line.len() };
            start_line = i + 1 + usize::from(!is_marker("---"));
        }
        offset += line.len();
    }
    docs.push(Document {
        text: &text[start..],
        first_line: start_line,
    });
    docs
}

#[cfg(test)]
mod tests;
