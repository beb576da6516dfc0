//! Declarative hub objects, as `flotilla apply -f` reads them and `flotilla get` prints them:
//! kubectl-like documents (apiVersion, kind, metadata, spec) for `GitRepo` and `ClusterGroup`.
//!
//! Pure: documents in, validated model types out, and back. A Rancher Fleet `GitRepo`
//! (`fleet.cattle.io/v1alpha1`) is read as it is: Fleet's fields keep their names, and the
//! ones Flotilla does not act on are accepted with a warning naming them. Any other unknown
//! field is refused with its path, because a typo in a targeting rule must not silently
//! deploy to the wrong clusters.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::{Environment, GitRepo, GitRepoSpec, is_dns_label};
use crate::target::{ClusterGroup, ClusterTarget, LabelSelector};

/// The apiVersion Flotilla writes.
pub const API_VERSION: &str = "flotilla.dev/v1";
/// Rancher Fleet's apiVersion, accepted for GitRepo and ClusterGroup.
pub const FLEET_API_VERSION: &str = "fleet.cattle.io/v1alpha1";

/// Why a document was refused: the field path and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ObjectError {
    /// `spec.targets[0].clusterSelector.matchExpressions[0].operator`, or empty for the
    /// document as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ObjectError {
    ObjectError {
        path: path.into(),
        message: message.into(),
    }
}

/// A validated hub object.
#[derive(Clone, Debug, PartialEq)]
pub enum HubObject {
    GitRepo(GitRepoSpec),
    ClusterGroup(ClusterGroup),
}

impl HubObject {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::GitRepo(_) => "GitRepo",
            Self::ClusterGroup(_) => "ClusterGroup",
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Self::GitRepo(s) => &s.name,
            Self::ClusterGroup(g) => &g.name,
        }
    }
}

/// The kinds `get` knows, by any name kubectl users would type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    GitRepo,
    ClusterGroup,
    Cluster,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gitrepo" | "gitrepos" | "gitrepo.flotilla.dev" | "repo" | "repos" => {
                Some(Self::GitRepo)
            }
            "clustergroup" | "clustergroups" | "cg" => Some(Self::ClusterGroup),
            "cluster" | "clusters" => Some(Self::Cluster),
            _ => None,
        }
    }
}

/// Fleet GitRepo fields Flotilla reads but does not act on.
const FLEET_IGNORED: &[&str] = &[
    "helmSecretName",
    "helmSecretNameForPaths",
    "helmRepoURLRegex",
    "targetNamespace",
    "serviceAccount",
    "forceSyncGeneration",
    "imageScanInterval",
    "imageScanCommit",
    "deleteNamespace",
    "insecureSkipTLSVerify",
    "caBundle",
    "ociRegistry",
];

/// Parse and validate one document. Returns the object and warnings (fields accepted but
/// not acted on).
pub fn parse(doc: Value, default_poll_secs: u32) -> Result<(HubObject, Vec<String>), ObjectError> {
    let Value::Object(map) = &doc else {
        return Err(err(
            "",
            "a document must be a mapping with apiVersion, kind, metadata and spec",
        ));
    };
    let api = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api != API_VERSION && api != FLEET_API_VERSION {
        return Err(err(
            "apiVersion",
            format!("{api:?} is not served; use {API_VERSION} (or Fleet's {FLEET_API_VERSION})"),
        ));
    }
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    match kind {
        "GitRepo" => {
            let (d, warnings) = decode::<GitRepoDoc>(doc)?;
            Ok((
                HubObject::GitRepo(d.into_spec(default_poll_secs)?),
                warnings,
            ))
        }
        "ClusterGroup" => {
            let (d, warnings) = decode::<ClusterGroupDoc>(doc)?;
            Ok((HubObject::ClusterGroup(d.into_group()?), warnings))
        }
        other => Err(err(
            "kind",
            format!(
                "{other:?} is not a hub object; apply GitRepo or ClusterGroup (cluster labels: `flotilla cluster label`)"
            ),
        )),
    }
}

/// Deserialize with the failing field's path in errors; unknown fields are refused unless
/// they are Fleet fields we knowingly ignore, which become warnings.
fn decode<T: serde::de::DeserializeOwned>(doc: Value) -> Result<(T, Vec<String>), ObjectError> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let de = serde_ignored::Deserializer::new(doc, &mut record);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        err(path, e.into_inner().to_string())
    })?;
    let mut warnings = Vec::new();
    for path in unknown {
        // serde_ignored writes sequence indices as segments: `targets.0.x` → `targets[0].x`.
        let path = path.split('.').fold(String::new(), |mut acc, seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                acc.push_str(&format!("[{seg}]"));
            } else {
                if !acc.is_empty() {
                    acc.push('.');
                }
                acc.push_str(seg);
            }
            acc
        });
        let field = path.rsplit('.').next().unwrap_or(&path);
        let top = path.split('.').next().unwrap_or("");
        if top == "status"
            || top == "apiVersion"
            || top == "kind"
            || (top == "metadata" && path.matches('.').count() == 1)
        {
            // kubectl-style documents carry status and server-set metadata: not ours to read.
            continue;
        }
        if path.starts_with("spec.")
            && path.matches('.').count() == 1
            && FLEET_IGNORED.contains(&field)
        {
            warnings.push(format!(
                "{path}: Fleet field accepted but not supported by flotilla; it has no effect"
            ));
            continue;
        }
        return Err(err(
            path,
            "unknown field; check its spelling against docs/targeting.md",
        ));
    }
    Ok((value, warnings))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitRepoDoc {
    metadata: Metadata,
    spec: GitRepoSpecDoc,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CorrectDrift {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    keep_fail_history: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GitRepoSpecDoc {
    repo: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    revision: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    polling_interval: Option<Value>,
    #[serde(default)]
    disable_polling: bool,
    #[serde(default)]
    client_secret_name: Option<String>,
    #[serde(default)]
    targets: Vec<ClusterTarget>,
    #[serde(default)]
    environments: Vec<EnvironmentDoc>,
    #[serde(default)]
    correct_drift: Option<CorrectDrift>,
    #[serde(default)]
    keep_resources: bool,
    #[serde(default)]
    paused: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvironmentDoc {
    name: String,
    branch: String,
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    cluster_selector: Option<LabelSelector>,
    #[serde(default)]
    cluster_group: Option<String>,
    #[serde(default)]
    cluster_group_selector: Option<LabelSelector>,
}

impl GitRepoDoc {
    fn into_spec(self, default_poll_secs: u32) -> Result<GitRepoSpec, ObjectError> {
        let s = self.spec;
        let poll_interval_secs = match &s.polling_interval {
            None => default_poll_secs,
            Some(v) => parse_duration(v).map_err(|m| err("spec.pollingInterval", m))?,
        };
        if let Some(cd) = &s.correct_drift
            && (cd.force || cd.keep_fail_history)
        {
            // Accepted: force and keepFailHistory refine how drift is corrected.
        }
        let environments = s
            .environments
            .into_iter()
            .map(|e| Environment {
                name: e.name,
                branch: e.branch,
                target: ClusterTarget {
                    name: String::new(),
                    cluster_name: e.cluster_name,
                    cluster_selector: e.cluster_selector,
                    cluster_group: e.cluster_group,
                    cluster_group_selector: e.cluster_group_selector,
                },
            })
            .collect();
        let spec = GitRepoSpec {
            name: self.metadata.name,
            url: s.repo,
            branch: s
                .branch
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| "main".into()),
            revision: s.revision.filter(|r| !r.is_empty()),
            paths: s.paths,
            poll_interval_secs,
            disable_polling: s.disable_polling,
            labels: self.metadata.labels,
            targets: s.targets,
            environments,
            correct_drift: s.correct_drift.is_some_and(|c| c.enabled),
            keep_resources: s.keep_resources,
            paused: s.paused,
            credentials: s.client_secret_name.filter(|c| !c.is_empty()),
        };
        validate_repo(spec)
    }
}

/// `15s`, `1m30s`, `2h`, or a number of seconds.
fn parse_duration(v: &Value) -> Result<u32, String> {
    if let Some(n) = v.as_u64() {
        return u32::try_from(n).map_err(|_| "too large".to_string());
    }
    let Some(text) = v.as_str() else {
        return Err("expected a duration such as 15s, 1m or 1h".into());
    };
    let mut total: u64 = 0;
    let mut number = String::new();
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            number.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(format!("{text:?} is not a duration such as 15s, 1m or 1h")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration such as 15s, 1m or 1h"))?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() {
        return Err(format!("{text:?} needs a unit: 15s, 1m or 1h"));
    }
    if total == 0 {
        return Err("must be at least 1s".into());
    }
    u32::try_from(total).map_err(|_| "too large".to_string())
}

/// Check a GitRepo spec and normalise it (paths trimmed and deduplicated); errors name
/// the field as written in a GitRepo document.
pub fn validate_repo(mut spec: GitRepoSpec) -> Result<GitRepoSpec, ObjectError> {
    if !is_dns_label(&spec.name) {
        return Err(err(
            "metadata.name",
            format!("{:?} must be a lower-case RFC 1123 label", spec.name),
        ));
    }
    let scheme_ok = ["file://", "git://", "http://", "https://"]
        .iter()
        .any(|s| spec.url.starts_with(s));
    if !scheme_ok {
        return Err(err(
            "spec.repo",
            format!(
                "{:?} must start with file://, git://, http:// or https://",
                crate::model::redact_url(&spec.url)
            ),
        ));
    }
    let mut paths = Vec::new();
    for (i, p) in spec.paths.iter().enumerate() {
        let p = p.trim_matches('/').to_string();
        if p.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(err(
                format!("spec.paths[{i}]"),
                format!("{p:?} must not contain `.` or `..` segments"),
            ));
        }
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    if paths.iter().any(String::is_empty) && paths.len() > 1 {
        return Err(err(
            "spec.paths",
            "the repository root cannot be combined with other paths",
        ));
    }
    paths.retain(|p| !p.is_empty());
    spec.paths = paths;
    spec.poll_interval_secs = spec.poll_interval_secs.max(1);
    check_ref(&spec.branch).map_err(|m| err("spec.branch", m))?;
    for (i, t) in spec.targets.iter().enumerate() {
        t.validate(&format!("spec.targets[{i}]"))
            .map_err(|m| split_path(&m))?;
    }
    let mut names = Vec::new();
    for (i, e) in spec.environments.iter().enumerate() {
        let at = format!("spec.environments[{i}]");
        if !is_dns_label(&e.name) {
            return Err(err(
                format!("{at}.name"),
                format!("{:?} must be a lower-case RFC 1123 label", e.name),
            ));
        }
        if names.contains(&&e.name) {
            return Err(err(
                format!("{at}.name"),
                format!("{:?} is used twice", e.name),
            ));
        }
        names.push(&e.name);
        check_ref(&e.branch).map_err(|m| err(format!("{at}.branch"), m))?;
        e.target.validate(&at).map_err(|m| split_path(&m))?;
    }
    if spec.revision.is_some() && !spec.environments.is_empty() {
        return Err(err(
            "spec.revision",
            "a pinned revision cannot be combined with environments (each environment follows its branch)",
        ));
    }
    if let Some(c) = &spec.credentials
        && !is_dns_label(c)
    {
        return Err(err(
            "spec.clientSecretName",
            format!("{c:?} must be a lower-case RFC 1123 label"),
        ));
    }
    Ok(spec)
}

/// `path: message` from the target validators, split back into an error.
fn split_path(m: &str) -> ObjectError {
    match m.split_once(": ") {
        Some((p, msg)) => err(p, msg),
        None => err("", m),
    }
}

fn check_ref(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with('-')
        || name.starts_with('/')
        || name.ends_with('/')
        || name.contains("..")
        || name
            .chars()
            .any(|c| c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        Err(format!("{name:?} is not a valid branch name"))
    } else {
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterGroupDoc {
    metadata: Metadata,
    #[serde(default)]
    spec: ClusterGroupSpecDoc,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterGroupSpecDoc {
    #[serde(default)]
    selector: Option<LabelSelector>,
}

impl ClusterGroupDoc {
    fn into_group(self) -> Result<ClusterGroup, ObjectError> {
        if !is_dns_label(&self.metadata.name) {
            return Err(err(
                "metadata.name",
                format!(
                    "{:?} must be a lower-case RFC 1123 label",
                    self.metadata.name
                ),
            ));
        }
        if let Some(s) = &self.spec.selector {
            s.validate("spec.selector").map_err(|m| split_path(&m))?;
        }
        Ok(ClusterGroup {
            name: self.metadata.name,
            labels: self.metadata.labels,
            selector: self.spec.selector,
        })
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("model types serialize")
}

/// A GitRepo as a document (`get -o yaml`); credentials in the URL are redacted.
pub fn gitrepo_document(r: &GitRepo) -> Value {
    let s = &r.spec;
    let mut spec = json!({
        "repo": crate::model::redact_url(&s.url),
        "branch": s.branch,
        "pollingInterval": format!("{}s", s.poll_interval_secs),
    });
    let m = spec.as_object_mut().expect("object");
    if let Some(rev) = &s.revision {
        m.insert("revision".into(), json!(rev));
    }
    if !s.paths.is_empty() {
        m.insert("paths".into(), json!(s.paths));
    }
    if s.disable_polling {
        m.insert("disablePolling".into(), json!(true));
    }
    if let Some(c) = &s.credentials {
        m.insert("clientSecretName".into(), json!(c));
    }
    if !s.targets.is_empty() {
        m.insert("targets".into(), to_value(&s.targets));
    }
    if !s.environments.is_empty() {
        let envs: Vec<Value> = s
            .environments
            .iter()
            .map(|e| {
                let mut v = to_value(&e.target);
                let o = v.as_object_mut().expect("object");
                o.remove("name");
                o.insert("name".into(), json!(e.name));
                o.insert("branch".into(), json!(e.branch));
                v
            })
            .collect();
        m.insert("environments".into(), json!(envs));
    }
    if s.correct_drift {
        m.insert("correctDrift".into(), json!({"enabled": true}));
    }
    if s.keep_resources {
        m.insert("keepResources".into(), json!(true));
    }
    if s.paused {
        m.insert("paused".into(), json!(true));
    }
    let mut metadata = json!({"name": s.name});
    if !s.labels.is_empty() {
        metadata["labels"] = to_value(&s.labels);
    }
    let st = &r.status;
    let mut status = json!({ "lastFetch": st.last_fetch });
    let so = status.as_object_mut().expect("object");
    if let Some(c) = &st.commit {
        so.insert("commit".into(), json!(c));
    }
    if st.environments.keys().any(|e| !e.is_empty()) {
        so.insert("environments".into(), to_value(&st.environments));
    }
    if let Some(e) = &st.error {
        so.insert("error".into(), json!(e));
    }
    if !st.warnings.is_empty() {
        so.insert("warnings".into(), to_value(&st.warnings));
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "GitRepo",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    })
}

/// A ClusterGroup as a document, with its member count.
pub fn group_document(g: &ClusterGroup, members: usize) -> Value {
    let mut metadata = json!({"name": g.name});
    if !g.labels.is_empty() {
        metadata["labels"] = to_value(&g.labels);
    }
    let mut spec = json!({});
    if let Some(s) = &g.selector {
        spec["selector"] = to_value(s);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "ClusterGroup",
        "metadata": metadata,
        "spec": spec,
        "status": {"clusterCount": members},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        serde_saphyr::from_str(yaml).expect("test YAML parses")
    }

    fn refused(yaml: &str) -> String {
        parse(doc(yaml), 15).expect_err("refused").to_string()
    }

    #[test]
    fn a_fleet_gitrepo_is_read_as_fleet_writes_it() {
        let (obj, warnings) = parse(
            doc(r#"
apiVersion: fleet.cattle.io/v1alpha1
kind: GitRepo
metadata: {name: multi, namespace: fleet-default, labels: {team: web}}
spec:
  repo: https://github.com/rancher/fleet-examples
  branch: master
  paths: [multi-cluster/helm, /multi-cluster/kustomize/]
  pollingInterval: 1m30s
  targetNamespace: ignored
  correctDrift: {enabled: true}
  targets:
  - name: dev
    clusterSelector:
      matchLabels: {env: dev}
  - name: prod
    clusterGroup: prod
"#),
            15,
        )
        .unwrap();
        let HubObject::GitRepo(spec) = obj else {
            panic!("a GitRepo")
        };
        assert_eq!(spec.name, "multi");
        assert_eq!(spec.branch, "master");
        assert_eq!(
            spec.paths,
            ["multi-cluster/helm", "multi-cluster/kustomize"]
        );
        assert_eq!(spec.poll_interval_secs, 90);
        assert!(spec.correct_drift);
        assert_eq!(spec.labels["team"], "web");
        assert_eq!(spec.targets.len(), 2);
        assert_eq!(spec.targets[1].cluster_group.as_deref(), Some("prod"));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("spec.targetNamespace"),
            "{warnings:?}"
        );
    }

    #[test]
    fn environments_map_branches_to_clusters() {
        let (obj, _) = parse(
            doc(r#"
apiVersion: flotilla.dev/v1
kind: GitRepo
metadata: {name: apps}
spec:
  repo: https://git.example/apps.git
  environments:
  - {name: prod, branch: main, clusterSelector: {matchLabels: {env: prod}}}
  - {name: staging, branch: staging, clusterSelector: {matchLabels: {env: staging}}}
"#),
            15,
        )
        .unwrap();
        let HubObject::GitRepo(spec) = obj else {
            panic!("a GitRepo")
        };
        let envs = spec.effective_environments();
        assert_eq!(envs.len(), 2);
        assert_eq!(
            (envs[1].name.as_str(), envs[1].branch.as_str()),
            ("staging", "staging")
        );
        assert_eq!(spec.poll_interval_secs, 15);
    }

    #[test]
    fn invalid_objects_name_the_field_and_the_reason() {
        let base = "apiVersion: flotilla.dev/v1\nkind: GitRepo\nmetadata: {name: apps}\n";
        let cases = [
            (
                "spec: {repo: https://g/a, targets: [{clusterSelector: {matchExpressions: [{key: env, operator: Maybe}]}}]}",
                "spec.targets[0].clusterSelector.matchExpressions[0].operator: unknown variant `Maybe`",
            ),
            (
                "spec: {repo: https://g/a, targets: [{clusterSelector: {matchLabels: {env: prod}}, clusterSelecter: {}}]}",
                "spec.targets[0].clusterSelecter: unknown field",
            ),
            (
                "spec: {repo: https://g/a, targets: [{name: empty}]}",
                "spec.targets[0]: a target needs at least one of",
            ),
            (
                "spec: {repo: https://g/a, targets: [{clusterSelector: {matchExpressions: [{key: env, operator: In}]}}]}",
                "spec.targets[0].clusterSelector.matchExpressions[0].values: operator In needs at least one value",
            ),
            (
                "spec: {repo: ssh://g/a}",
                "spec.repo: \"ssh://g/a\" must start with",
            ),
            (
                "spec: {repo: https://g/a, paths: [ok, ../up]}",
                "spec.paths[1]:",
            ),
            (
                "spec: {repo: https://g/a, pollingInterval: 5 minutes}",
                "spec.pollingInterval:",
            ),
            ("spec: {paths: [a]}", "spec: missing field `repo`"),
            (
                "spec: {repo: https://g/a, environments: [{name: prod, branch: main}, {name: prod, branch: x, clusterName: a}]}",
                "spec.environments[0]: a target needs",
            ),
            (
                "spec: {repo: https://g/a, revision: v1, environments: [{name: prod, branch: main, clusterName: a}]}",
                "spec.revision:",
            ),
        ];
        for (spec, wanted) in cases {
            let got = refused(&format!("{base}{spec}"));
            assert!(
                got.starts_with(wanted),
                "{spec}\n got: {got}\nwant: {wanted}"
            );
        }
        assert!(
            refused("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}")
                .starts_with("apiVersion:")
        );
        assert!(
            refused("apiVersion: flotilla.dev/v1\nkind: Bundle\nmetadata: {name: a}")
                .starts_with("kind:")
        );
        assert!(refused("apiVersion: flotilla.dev/v1\nkind: GitRepo\nmetadata: {name: Bad_Name}\nspec: {repo: https://g/a}").starts_with("metadata.name:"));
    }

    #[test]
    fn cluster_groups_round_trip() {
        let (obj, _) = parse(
            doc("apiVersion: flotilla.dev/v1\nkind: ClusterGroup\nmetadata: {name: edge, labels: {tier: edge}}\nspec: {selector: {matchLabels: {site: store}}}"),
            15,
        )
        .unwrap();
        let HubObject::ClusterGroup(g) = obj else {
            panic!("a group")
        };
        let back = group_document(&g, 3);
        assert_eq!(back["spec"]["selector"]["matchLabels"]["site"], "store");
        assert_eq!(back["metadata"]["labels"]["tier"], "edge");
        assert_eq!(back["status"]["clusterCount"], 3);
        let (again, _) = parse(back, 15).unwrap();
        assert_eq!(again, HubObject::ClusterGroup(g));
    }

    #[test]
    fn a_gitrepo_document_reads_back_as_the_same_spec() {
        let yaml = r#"
apiVersion: flotilla.dev/v1
kind: GitRepo
metadata: {name: apps, labels: {team: a}}
spec:
  repo: https://git.example/apps.git
  paths: [web]
  pollingInterval: 30s
  keepResources: true
  paused: true
  clientSecretName: git-creds
  targets: [{clusterGroup: edge}]
  environments:
  - {name: prod, branch: main, clusterSelector: {matchExpressions: [{key: env, operator: In, values: [prod]}]}}
"#;
        let (HubObject::GitRepo(spec), _) = parse(doc(yaml), 15).unwrap() else {
            panic!("a GitRepo")
        };
        let repo = GitRepo {
            spec: spec.clone(),
            status: Default::default(),
        };
        let (HubObject::GitRepo(again), _) = parse(gitrepo_document(&repo), 15).unwrap() else {
            panic!("a GitRepo")
        };
        assert_eq!(again, spec);
    }
}
