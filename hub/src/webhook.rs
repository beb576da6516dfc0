//! Push webhooks from GitHub and GitLab: verify a delivery, read which repository, ref and
//! commit it announces, and hand it to a [`PushSink`] that wakes the GitRepos following it.
//!
//! A webhook only makes a fetch happen sooner; polling stays the source of truth, so nothing
//! here reads the payload's commit list or trusts it beyond "look now". The router is meant for
//! the hub's plain-HTTP port, which has no client authentication of its own: every delivery is
//! authenticated here with the shared secret before its body is parsed.
//!
//! *Invariant:* the sink is called only for a delivery whose signature (GitHub) or token
//! (GitLab) verified against a non-empty secret.
//! *Boundary:* no I/O in [`parse`]; the secret and the signature are never logged.

mod repo_url;
mod router;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt;

use axum::http::{HeaderMap, StatusCode, header};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use repo_url::same_repository;
pub use router::{BODY_LIMIT, PushSink, router};

const GITHUB_EVENT: &str = "x-github-event";
const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
const GITLAB_EVENT: &str = "x-gitlab-event";
const GITLAB_TOKEN: &str = "x-gitlab-token";

/// Who sent a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
}

impl Provider {
    /// The `provider` label of `flotilla_webhooks_total` and of log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
        }
    }

    /// The provider whose event header a request carries; `None` for neither or both.
    pub fn detect(headers: &HeaderMap) -> Option<Self> {
        match (
            headers.contains_key(GITHUB_EVENT),
            headers.contains_key(GITLAB_EVENT),
        ) {
            (true, false) => Some(Self::GitHub),
            (false, true) => Some(Self::GitLab),
            _ => None,
        }
    }
}

/// The ref a push moved, without its `refs/heads/` or `refs/tags/` prefix.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GitRef {
    Branch(String),
    Tag(String),
}

impl GitRef {
    /// A full ref name; `None` for refs that are neither branches nor tags.
    pub fn from_full_name(name: &str) -> Option<Self> {
        if let Some(branch) = name.strip_prefix("refs/heads/") {
            Some(Self::Branch(branch.to_owned()))
        } else {
            name.strip_prefix("refs/tags/")
                .map(|tag| Self::Tag(tag.to_owned()))
        }
    }
}

/// The full ref name, `refs/heads/main` or `refs/tags/v1.2.0`.
impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Branch(name) => write!(f, "refs/heads/{name}"),
            Self::Tag(name) => write!(f, "refs/tags/{name}"),
        }
    }
}

/// A verified push: which repository, which ref, and the commit the ref now points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEvent {
    pub provider: Provider,
    /// Every URL form the payload gives for the repository (never empty, no duplicates):
    /// GitHub's `clone_url`, `ssh_url`, `html_url`, `git_url`; GitLab's `git_http_url`,
    /// `git_ssh_url`, `web_url`, `homepage`. Compare with [`same_repository`].
    pub repo_urls: Vec<String>,
    pub git_ref: GitRef,
    /// The new commit, lower-case hex; all zeros when the push deleted the ref.
    pub after: String,
}

impl PushEvent {
    /// Whether this push is to the repository a GitRepo configures as `url`.
    pub fn is_for(&self, url: &str) -> bool {
        self.repo_urls.iter().any(|u| same_repository(u, url))
    }

    /// Whether the push deleted the ref rather than moving it.
    pub fn is_deletion(&self) -> bool {
        self.after.bytes().all(|b| b == b'0')
    }
}

/// Why a delivery did not become a [`PushEvent`]. Each maps to one HTTP status and one
/// metric outcome.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhooks are disabled: the hub has no webhook secret configured")]
    NoSecretConfigured,
    /// Deliberately the same words as `BadSignature`: a caller learns nothing about which part
    /// was wrong. The audit log line tells them apart.
    #[error("signature does not verify")]
    MissingSignature,
    #[error("signature does not verify")]
    BadSignature,
    /// No provider's event header, or not the one the endpoint expects.
    #[error("unknown event: {0}")]
    UnknownEvent(String),
    /// A verified event that is not a push to a branch or tag, such as GitHub's `ping`.
    #[error("not a push event: {0}")]
    NotPush(String),
    #[error("malformed payload: {field}: {message}")]
    Malformed {
        field: &'static str,
        message: String,
    },
    #[error("payload too large: the limit is {limit} bytes")]
    TooLarge { limit: usize },
}

impl WebhookError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoSecretConfigured => StatusCode::NOT_FOUND,
            Self::MissingSignature | Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::UnknownEvent(_) | Self::Malformed { .. } => StatusCode::BAD_REQUEST,
            Self::NotPush(_) => StatusCode::ACCEPTED,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Self::NoSecretConfigured => Outcome::Disabled,
            Self::MissingSignature | Self::BadSignature => Outcome::Unauthorized,
            Self::UnknownEvent(_) | Self::Malformed { .. } | Self::TooLarge { .. } => {
                Outcome::Malformed
            }
            Self::NotPush(_) => Outcome::Ignored,
        }
    }

    /// A closed word for the audit log line, finer than the outcome.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::NoSecretConfigured => "no_secret_configured",
            Self::MissingSignature => "missing_signature",
            Self::BadSignature => "bad_signature",
            Self::UnknownEvent(_) => "unknown_event",
            Self::NotPush(_) => "not_push",
            Self::Malformed { .. } => "malformed",
            Self::TooLarge { .. } => "too_large",
        }
    }
}

/// What became of a delivery: the `outcome` label of `flotilla_webhooks_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A verified push that woke at least one GitRepo.
    Triggered,
    /// A verified delivery that woke nothing: a push no GitRepo follows, or a `ping`.
    Ignored,
    Unauthorized,
    /// Unparseable, an unknown event header, or too large.
    Malformed,
    /// No secret configured, so webhooks are off.
    Disabled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Triggered => "triggered",
            Self::Ignored => "ignored",
            Self::Unauthorized => "unauthorized",
            Self::Malformed => "malformed",
            Self::Disabled => "disabled",
        }
    }
}

/// Verify and parse a delivery, telling the provider by its event header.
///
/// GitHub: `X-GitHub-Event`, and `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body, secret)>`
/// compared in constant time. GitLab: `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, or a
/// `System Hook` whose `event_name` is a push), and `X-Gitlab-Token` compared in constant time
/// with the secret. An empty secret verifies nothing.
pub fn parse(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<PushEvent, WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NoSecretConfigured);
    }
    let provider = Provider::detect(headers).ok_or_else(|| {
        WebhookError::UnknownEvent("expected one of X-GitHub-Event or X-Gitlab-Event".into())
    })?;
    parse_as(provider, headers, body, secret)
}

/// [`parse`] for a delivery known to come from `provider` (its own endpoint).
pub fn parse_as(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<PushEvent, WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NoSecretConfigured);
    }
    match provider {
        Provider::GitHub => {
            verify_signature(headers, body, secret)?;
            github_push(headers, body)
        }
        Provider::GitLab => {
            verify_token(headers, secret)?;
            gitlab_push(headers, body)
        }
    }
}

fn verify_signature(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<(), WebhookError> {
    let value = headers
        .get(GITHUB_SIGNATURE)
        .ok_or(WebhookError::MissingSignature)?;
    let signature = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|hex_digest| hex::decode(hex_digest).ok())
        .ok_or(WebhookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    // `verify_slice` compares in constant time (through `subtle`).
    mac.verify_slice(&signature)
        .map_err(|_| WebhookError::BadSignature)
}

fn verify_token(headers: &HeaderMap, secret: &[u8]) -> Result<(), WebhookError> {
    let token = headers
        .get(GITLAB_TOKEN)
        .ok_or(WebhookError::MissingSignature)?;
    // Digests first, so that the time taken does not depend on where or whether lengths differ.
    let same = Sha256::digest(token.as_bytes())
        .as_slice()
        .ct_eq(Sha256::digest(secret).as_slice());
    if bool::from(same) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

fn github_push(headers: &HeaderMap, body: &[u8]) -> Result<PushEvent, WebhookError> {
    let event = header_str(headers, GITHUB_EVENT)
        .ok_or_else(|| WebhookError::UnknownEvent("X-GitHub-Event is not set".into()))?;
    if event != "push" {
        return Err(WebhookError::NotPush(event.to_owned()));
    }
    let payload = json_body(&github_payload(headers, body)?)?;
    const URLS: &[&str] = &[
        "repository.clone_url",
        "repository.ssh_url",
        "repository.html_url",
        "repository.git_url",
    ];
    push_event(Provider::GitHub, &payload, "repository", URLS)
}

/// GitHub sends either the JSON itself or, for a webhook whose content type is
/// `application/x-www-form-urlencoded` (the default in its settings page), a `payload` field.
fn github_payload<'b>(headers: &HeaderMap, body: &'b [u8]) -> Result<Cow<'b, [u8]>, WebhookError> {
    let form = header_str(headers, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    if !form {
        return Ok(Cow::Borrowed(body));
    }
    form_urlencoded::parse(body)
        .find(|(key, _)| key == "payload")
        .map(|(_, value)| Cow::Owned(value.into_owned().into_bytes()))
        .ok_or_else(|| malformed("payload", "a form-encoded delivery without a payload field"))
}

fn gitlab_push(headers: &HeaderMap, body: &[u8]) -> Result<PushEvent, WebhookError> {
    let event = header_str(headers, GITLAB_EVENT)
        .ok_or_else(|| WebhookError::UnknownEvent("X-Gitlab-Event is not set".into()))?;
    if !matches!(event, "Push Hook" | "Tag Push Hook" | "System Hook") {
        return Err(WebhookError::NotPush(event.to_owned()));
    }
    let payload = json_body(body)?;
    if event == "System Hook" {
        let name = payload.get("event_name").and_then(Value::as_str);
        if !matches!(name, Some("push" | "tag_push")) {
            return Err(WebhookError::NotPush(format!(
                "System Hook {}",
                name.unwrap_or("without event_name")
            )));
        }
    }
    const URLS: &[&str] = &[
        "project.git_http_url",
        "project.git_ssh_url",
        "project.web_url",
        "project.homepage",
        "repository.git_http_url",
        "repository.git_ssh_url",
        "repository.homepage",
    ];
    push_event(Provider::GitLab, &payload, "project", URLS)
}

/// The fields both providers name alike: `ref`, `after`, and the repository URLs at `urls`.
fn push_event(
    provider: Provider,
    payload: &Value,
    repository: &'static str,
    urls: &[&'static str],
) -> Result<PushEvent, WebhookError> {
    let full_ref = string_field(payload, "ref")?.ok_or_else(|| malformed("ref", "missing"))?;
    let git_ref = GitRef::from_full_name(full_ref)
        .ok_or_else(|| WebhookError::NotPush(format!("push to {full_ref}")))?;
    let after = string_field(payload, "after")?.ok_or_else(|| malformed("after", "missing"))?;
    if !(after.len() == 40 || after.len() == 64) || !after.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("after", "not a commit id"));
    }
    let mut repo_urls: Vec<String> = Vec::new();
    for &field in urls {
        if let Some(url) = string_field(payload, field)?
            && !url.is_empty()
            && !repo_urls.iter().any(|seen| seen == url)
        {
            repo_urls.push(url.to_owned());
        }
    }
    if repo_urls.is_empty() {
        return Err(malformed(repository, "no repository URL"));
    }
    Ok(PushEvent {
        provider,
        repo_urls,
        git_ref,
        after: after.to_ascii_lowercase(),
    })
}

fn json_body(body: &[u8]) -> Result<Value, WebhookError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| malformed("body", format!("not JSON: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(malformed("body", "not a JSON object"))
    }
}

/// The string at a dotted `path`: `None` when absent or null, an error when another type.
fn string_field<'v>(
    payload: &'v Value,
    path: &'static str,
) -> Result<Option<&'v str>, WebhookError> {
    let pointer = format!("/{}", path.replace('.', "/"));
    match payload.pointer(&pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(path, "not a string")),
    }
}

pub(crate) fn malformed(field: &'static str, message: impl Into<String>) -> WebhookError {
    WebhookError::Malformed {
        field,
        message: message.into(),
    }
}

pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
