//! Domain types of the hub: clusters, tokens, Git repositories, bundles and deployments.
//!
//! These are the nouns every other module speaks. They carry no protobuf, sled or gix types:
//! `grpc` converts them to and from the wire, `store` to and from bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::target::ClusterTarget;

/// Identity of a registered cluster; also the URI SAN of its client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterId(pub Uuid);

impl ClusterId {
    /// A fresh random identity.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for ClusterId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A registered cluster, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: ClusterId,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub registered_at: i64,
    pub agent_version: String,
    pub kubernetes_version: String,
    /// The registration token the cluster registered with.
    #[serde(default)]
    pub token_id: String,
    /// The cluster's current client certificate.
    #[serde(default)]
    pub certificate: ClusterCertificate,
}

/// What the hub remembers of the certificates it issued to a cluster: enough to accept the
/// current one and the one before it (a renewal in flight), to recognise the cluster's key
/// when it registers again, and to tell which CA each cluster is on during a rotation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCertificate {
    /// Hex SHA-256 of the current certificate's public key.
    pub key_sha256: String,
    /// The key of the certificate before, still accepted until it expires.
    pub previous_key_sha256: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Fingerprint of the CA that signed the current certificate.
    pub ca_fingerprint: String,
}

impl ClusterCertificate {
    /// Whether a certificate for `key_sha256` is one the hub still accepts for this cluster.
    pub fn accepts(&self, key_sha256: &str) -> bool {
        // Clusters stored before keys were recorded have no key on file: accept them.
        self.key_sha256.is_empty()
            || self.key_sha256 == key_sha256
            || self.previous_key_sha256 == key_sha256
    }

    /// The record after a new certificate for `key_sha256` was issued.
    pub fn renewed(&self, key_sha256: String, not_after: i64, ca_fingerprint: String) -> Self {
        let previous = if self.key_sha256 == key_sha256 {
            self.previous_key_sha256.clone()
        } else {
            self.key_sha256.clone()
        };
        Self {
            key_sha256,
            previous_key_sha256: previous,
            not_after,
            ca_fingerprint,
        }
    }
}

/// The label a registration token's `--group` puts on clusters: group membership.
pub const GROUP_LABEL: &str = "flotilla.dev/group";
/// Prefix of the labels an agent reports about its own cluster. Kept apart from the labels an
/// admin or a token gives, so that an agent cannot claim a label that targets it.
pub const AGENT_LABEL_PREFIX: &str = "agent.flotilla.dev/";

/// A registration token. Only the SHA-256 of its secret is ever stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistrationToken {
    /// Public identifier, the part of the token before the dot.
    pub id: String,
    /// Hex SHA-256 of the whole token string.
    pub secret_sha256: String,
    pub description: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// 0 means unlimited.
    pub max_uses: u32,
    pub uses: u32,
    /// Put on every cluster that registers with this token.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The cluster group registered clusters join (as the label [`GROUP_LABEL`]).
    #[serde(default)]
    pub group: Option<String>,
    /// Unix seconds when it was revoked.
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

impl RegistrationToken {
    /// Why this token cannot register a cluster at `now`, if it cannot.
    pub fn refusal(&self, now: i64) -> Option<TokenRefusal> {
        if self.revoked_at.is_some() {
            Some(TokenRefusal::Revoked)
        } else if self.expires_at <= now {
            Some(TokenRefusal::Expired)
        } else if self.max_uses != 0 && self.uses >= self.max_uses {
            Some(TokenRefusal::UsedUp)
        } else {
            None
        }
    }

    /// `active`, `expired`, `used up` or `revoked`, for listings.
    pub fn state(&self, now: i64) -> &'static str {
        self.refusal(now).map_or("active", TokenRefusal::state)
    }
}

/// Why a registration token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Expired,
    UsedUp,
    Revoked,
}

impl TokenRefusal {
    /// The reason, as the caller reads it.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Unknown => "it is not known to this hub",
            Self::Expired => "it has expired",
            Self::UsedUp => "it has been used as many times as it allows",
            Self::Revoked => "it was revoked",
        }
    }

    fn state(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::UsedUp => "used up",
            Self::Revoked => "revoked",
        }
    }
}

/// What the hub watches in Git, as the admin gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRepoSpec {
    pub name: String,
    pub url: String,
    /// The branch to follow when the repository has no environments.
    pub branch: String,
    /// A commit or tag to deploy instead of the branch head.
    #[serde(default)]
    pub revision: Option<String>,
    /// Bundle directories, relative to the repository root, without leading or trailing `/`.
    /// Empty means the root.
    pub paths: Vec<String>,
    pub poll_interval_secs: u32,
    /// Fetch only when a webhook or `repo sync` asks.
    #[serde(default)]
    pub disable_polling: bool,
    /// The GitRepo's own labels (metadata.labels).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Which clusters get this repository's bundles. Empty: every cluster.
    #[serde(default)]
    pub targets: Vec<ClusterTarget>,
    /// Branch per environment: each environment's clusters get the bundles of its branch.
    /// Empty: one environment following `branch`.
    #[serde(default)]
    pub environments: Vec<Environment>,
    #[serde(default)]
    pub correct_drift: bool,
    #[serde(default)]
    pub keep_resources: bool,
    /// Stop delivering new commits; clusters keep what they run.
    #[serde(default)]
    pub paused: bool,
    /// Name of the credential the hub fetches with (`clientSecretName`).
    #[serde(default)]
    pub credentials: Option<String>,
}

/// One environment of a branch-per-environment GitRepo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub name: String,
    pub branch: String,
    /// The clusters of this environment. The first environment that matches a cluster wins.
    pub target: ClusterTarget,
}

impl GitRepoSpec {
    /// The environments to build: the configured ones, or one unnamed environment on `branch`.
    pub fn effective_environments(&self) -> Vec<Environment> {
        if self.environments.is_empty() {
            vec![Environment {
                name: String::new(),
                branch: self.branch.clone(),
                target: ClusterTarget::default(),
            }]
        } else {
            self.environments.clone()
        }
    }
}

/// The outcome of the last fetch of a Git repository.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRepoStatus {
    /// The commit deployed (the first environment's, when there are several).
    pub commit: Option<String>,
    pub error: Option<String>,
    pub last_fetch: i64,
    /// Environment name → commit deployed to it.
    #[serde(default)]
    pub environments: BTreeMap<String, String>,
    /// Warnings from the last build (unknown fleet.yaml fields, ignored options).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// A Git repository: its spec and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRepo {
    pub spec: GitRepoSpec,
    pub status: GitRepoStatus,
}

/// Identity of a bundle: `<gitrepo>/<path>`, or `<gitrepo>` for the repository root.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BundleId(pub String);

impl BundleId {
    /// The id of the bundle at `path` in Git repository `repo`.
    pub fn new(repo: &str, path: &str) -> Self {
        if path.is_empty() {
            Self(repo.to_string())
        } else {
            Self(format!("{repo}/{path}"))
        }
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hex SHA-256 of some content: manifests and whole deployments are named by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentHash(pub String);

impl ContentHash {
    /// Hash `bytes` with SHA-256.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        Self(hex::encode(sha2::Sha256::digest(bytes)))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One manifest of a bundle, by reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRef {
    pub hash: ContentHash,
    /// `path/in/repo.yaml#N`, N counting documents from 1.
    pub source: String,
}

/// The desired content of a bundle: the same for every cluster that gets it, so it is shared
/// (`Arc`) between all of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleContent {
    pub content_hash: ContentHash,
    /// The commit this content was built from.
    pub revision: String,
    pub default_namespace: String,
    pub manifests: Vec<ManifestRef>,
    /// fleet.yaml `keepResources`: removing the deployment leaves its objects in place.
    #[serde(default)]
    pub keep_resources: bool,
    /// GitRepo or fleet.yaml `correctDrift.enabled`: the agent reverts hand edits.
    #[serde(default)]
    pub correct_drift: bool,
    /// fleet.yaml `diff.comparePatches`: fields that are not drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compare_patches: Vec<ComparePatch>,
}

/// fleet.yaml `diff.comparePatches` entry: for matching objects (empty fields match any),
/// the JSON pointers and `remove` operations whose fields are not compared for drift.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ComparePatch {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub json_pointers: Vec<String>,
    /// RFC 6902 operations as JSON, or empty.
    pub operations_json: String,
}

/// A bundle at its current revision, in one environment of its GitRepo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub id: BundleId,
    pub repo: String,
    /// The GitRepo environment this build is for ("" when the GitRepo has none).
    #[serde(default)]
    pub env: String,
    pub path: String,
    /// Fingerprint of every input the bundle's renders read: unchanged inputs need no rebuild.
    pub tree_id: String,
    /// The commit the newest build looked at (the content may be older when it failed).
    #[serde(default)]
    pub commit: String,
    /// The content for clusters no target customization matches: the last built without
    /// error, deployed while `error` is set.
    pub content: Option<Arc<BundleContent>>,
    /// Why the newest revision could not be built or rendered, naming the file and line.
    pub error: Option<String>,
    /// fleet.yaml `targetCustomizations`, in order: the first that matches a cluster decides
    /// what it gets.
    #[serde(default)]
    pub customizations: Vec<Customization>,
    /// fleet.yaml `overrideTargets`: replaces the GitRepo's targets for this bundle.
    #[serde(default)]
    pub override_targets: Vec<ClusterTarget>,
    /// fleet.yaml `dependsOn`: bundles that must be Ready on a cluster before this one is
    /// deployed there.
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    /// fleet.yaml `labels`, which `dependsOn` selectors match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Warnings from reading the bundle (unknown fleet.yaml fields).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One fleet.yaml target customization and what it renders to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customization {
    pub name: String,
    pub target: ClusterTarget,
    /// `doNotDeploy`: matching clusters do not get the bundle.
    #[serde(default)]
    pub do_not_deploy: bool,
    pub content: Option<Arc<BundleContent>>,
    pub error: Option<String>,
}

/// One fleet.yaml `dependsOn` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// A bundle name: `<gitrepo>/<path>`, Fleet's `<gitrepo>-<path-with-dashes>`, or a path
    /// in the same GitRepo.
    #[serde(default)]
    pub name: Option<String>,
    /// Bundles whose fleet.yaml labels match.
    #[serde(default)]
    pub selector: Option<crate::target::LabelSelector>,
}

impl Bundle {
    /// The name Fleet gives this bundle: `<gitrepo>-<path with dashes>`.
    pub fn fleet_name(&self) -> String {
        let mut name = self.repo.clone();
        if !self.path.is_empty() {
            name.push('-');
            name.push_str(&self.path.replace(['/', '_', '.'], "-"));
        }
        name.to_ascii_lowercase()
    }

    /// Whether dependency `d` names this bundle (seen from a bundle of GitRepo `repo`).
    pub fn is_named_by(&self, d: &Dependency, repo: &str) -> bool {
        let by_name = d.name.as_deref().is_some_and(|n| {
            n == self.id.0 || n == self.fleet_name() || (self.repo == repo && n == self.path)
        });
        let by_selector = d.selector.as_ref().is_some_and(|s| s.matches(&self.labels));
        by_name || by_selector
    }
}

/// Fleet's bundle deployment states, in the order of how bad they are (worst last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeploymentState {
    Ready,
    NotReady,
    WaitApplied,
    Pending,
    OutOfSync,
    Modified,
    Missing,
    ErrApplied,
}

impl DeploymentState {
    /// The name Fleet users know.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::NotReady => "NotReady",
            Self::WaitApplied => "WaitApplied",
            Self::Pending => "Pending",
            Self::OutOfSync => "OutOfSync",
            Self::Modified => "Modified",
            Self::Missing => "Missing",
            Self::ErrApplied => "ErrApplied",
        }
    }
}

/// What became of one object on the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ObjectState {
    Applied,
    Failed,
    Waiting,
    Ready,
    NotReady,
    Modified,
    Missing,
}

/// The status of one object of a deployment, as the agent reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStatus {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub state: ObjectState,
    pub message: String,
    pub source: String,
    /// Where the live object differs from what was applied (state Modified).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modified_fields: Vec<String>,
    /// Drift the agent reverted since it started.
    #[serde(default)]
    pub drift_corrections: u32,
}

/// The last status an agent reported for one bundle on its cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedStatus {
    pub content_hash: ContentHash,
    /// The commit of the content the agent reports about.
    pub revision: String,
    pub state: DeploymentState,
    pub message: String,
    pub objects: Vec<ObjectStatus>,
    /// Unix seconds of the report.
    pub updated_at: i64,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether `name` is a lower-case RFC 1123 label (what Kubernetes accepts as a namespace name).
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// `url` without the credentials of its user-info part (`https://user:token@host` →
/// `https://***@host`), for logs, errors and status.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_redacted() {
        use super::redact_url;
        assert_eq!(
            redact_url("https://bob:s3cret@git.example/a.git"),
            "https://***@git.example/a.git"
        );
        assert_eq!(
            redact_url("https://git.example/a@b.git"),
            "https://git.example/a@b.git"
        );
        assert_eq!(redact_url("file:///srv/a.git"), "file:///srv/a.git");
        assert_eq!(
            redact_url("https://ghp_token@git.example?x=@y"),
            "https://***@git.example?x=@y"
        );
    }
}
