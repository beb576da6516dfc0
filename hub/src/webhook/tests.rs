//! Deliveries shaped like the providers' documented payloads (trimmed of fields nothing reads),
//! through `parse` and through the router.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request};
use serde_json::json;
use tower::ServiceExt;

use super::*;
use crate::metrics::Metrics;

const SECRET: &[u8] = b"webhook-secret-for-tests";

const GITHUB_BRANCH_PUSH: &str = r#"{
  "ref": "refs/heads/main",
  "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
  "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
  "base_ref": null,
  "created": false,
  "deleted": false,
  "forced": false,
  "compare": "https://github.com/Octo-Org/fleet-config/compare/6113728f27ae...0d1a26e67d8f",
  "commits": [
    {
      "id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
      "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
      "distinct": true,
      "message": "Bump nginx to 1.27",
      "timestamp": "2025-03-04T10:21:13+01:00",
      "url": "https://github.com/Octo-Org/fleet-config/commit/0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
      "author": { "name": "Monalisa Octocat", "email": "mona@github.com", "username": "octocat" },
      "committer": { "name": "GitHub", "email": "noreply@github.com", "username": "web-flow" },
      "added": [], "removed": [], "modified": ["apps/nginx/fleet.yaml"]
    }
  ],
  "head_commit": null,
  "repository": {
    "id": 186853002,
    "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
    "name": "fleet-config",
    "full_name": "Octo-Org/fleet-config",
    "private": true,
    "owner": { "name": "Octo-Org", "login": "Octo-Org", "id": 21031067, "type": "Organization" },
    "html_url": "https://github.com/Octo-Org/fleet-config",
    "url": "https://github.com/Octo-Org/fleet-config",
    "git_url": "git://github.com/Octo-Org/fleet-config.git",
    "ssh_url": "git@github.com:Octo-Org/fleet-config.git",
    "clone_url": "https://github.com/Octo-Org/fleet-config.git",
    "svn_url": "https://github.com/Octo-Org/fleet-config",
    "mirror_url": null,
    "default_branch": "main",
    "master_branch": "main"
  },
  "pusher": { "name": "octocat", "email": "mona@github.com" },
  "sender": { "login": "octocat", "id": 583231, "type": "User" }
}"#;

const GITHUB_TAG_PUSH: &str = r#"{
  "ref": "refs/tags/v1.2.0",
  "before": "0000000000000000000000000000000000000000",
  "after": "A3C9F2D0B1E4F5A6B7C8D9E0F1A2B3C4D5E6F7A8",
  "base_ref": "refs/heads/main",
  "created": true,
  "deleted": false,
  "forced": false,
  "compare": "https://github.com/Octo-Org/fleet-config/compare/v1.2.0",
  "commits": [],
  "head_commit": null,
  "repository": {
    "id": 186853002,
    "name": "fleet-config",
    "full_name": "Octo-Org/fleet-config",
    "html_url": "https://github.com/Octo-Org/fleet-config",
    "git_url": "git://github.com/Octo-Org/fleet-config.git",
    "ssh_url": "git@github.com:Octo-Org/fleet-config.git",
    "clone_url": "https://github.com/Octo-Org/fleet-config.git"
  },
  "pusher": { "name": "octocat", "email": "mona@github.com" },
  "sender": { "login": "octocat", "id": 583231, "type": "User" }
}"#;

const GITHUB_PING: &str = r#"{
  "zen": "Keep it logically awesome.",
  "hook_id": 467280123,
  "hook": { "type": "Repository", "id": 467280123, "events": ["push"], "active": true,
            "config": { "content_type": "json", "insecure_ssl": "0", "url": "https://hub.example.com/webhooks/github" } },
  "repository": { "full_name": "Octo-Org/fleet-config", "clone_url": "https://github.com/Octo-Org/fleet-config.git" }
}"#;

const GITLAB_BRANCH_PUSH: &str = r#"{
  "object_kind": "push",
  "event_name": "push",
  "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
  "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
  "ref": "refs/heads/release/2025.03",
  "ref_protected": true,
  "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
  "message": null,
  "user_id": 4,
  "user_name": "John Smith",
  "user_username": "jsmith",
  "user_email": "john@example.com",
  "user_avatar": "https://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=8://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=80",
  "project_id": 15,
  "project": {
    "id": 15,
    "name": "Deployments",
    "description": "Fleet bundles for the platform team",
    "web_url": "https://gitlab.example.com/platform/infra/deployments",
    "avatar_url": null,
    "git_ssh_url": "git@gitlab.example.com:platform/infra/deployments.git",
    "git_http_url": "https://gitlab.example.com/platform/infra/deployments.git",
    "namespace": "infra",
    "visibility_level": 0,
    "path_with_namespace": "platform/infra/deployments",
    "default_branch": "main",
    "homepage": "https://gitlab.example.com/platform/infra/deployments",
    "url": "git@gitlab.example.com:platform/infra/deployments.git",
    "ssh_url": "git@gitlab.example.com:platform/infra/deployments.git",
    "http_url": "https://gitlab.example.com/platform/infra/deployments.git"
  },
  "commits": [
    {
      "id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "message": "Roll out ingress to the edge clusters\n",
      "title": "Roll out ingress to the edge clusters",
      "timestamp": "2025-03-04T09:12:44+00:00",
      "url": "https://gitlab.example.com/platform/infra/deployments/-/commit/da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "author": { "name": "John Smith", "email": "john@example.com" },
      "added": ["edge/ingress/fleet.yaml"], "modified": [], "removed": []
    }
  ],
  "total_commits_count": 1,
  "push_options": {},
  "repository": {
    "name": "Deployments",
    "url": "git@gitlab.example.com:platform/infra/deployments.git",
    "description": "Fleet bundles for the platform team",
    "homepage": "https://gitlab.example.com/platform/infra/deployments",
    "git_http_url": "https://gitlab.example.com/platform/infra/deployments.git",
    "git_ssh_url": "git@gitlab.example.com:platform/infra/deployments.git",
    "visibility_level": 0
  }
}"#;

const GITLAB_TAG_PUSH: &str = r#"{
  "object_kind": "tag_push",
  "event_name": "tag_push",
  "before": "0000000000000000000000000000000000000000",
  "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
  "ref": "refs/tags/v1.0.0",
  "ref_protected": true,
  "checkout_sha": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
  "message": "Tag message",
  "user_id": 1,
  "user_name": "John Smith",
  "user_username": "jsmith",
  "user_avatar": null,
  "project_id": 1,
  "project": {
    "id": 1,
    "name": "Example",
    "web_url": "http://example.com/jsmith/example",
    "git_ssh_url": "git@example.com:jsmith/example.git",
    "git_http_url": "http://example.com/jsmith/example.git",
    "namespace": "Jsmith",
    "path_with_namespace": "jsmith/example",
    "default_branch": "main",
    "homepage": "http://example.com/jsmith/example"
  },
  "commits": [],
  "total_commits_count": 0,
  "repository": {
    "name": "Example",
    "url": "ssh://git@example.com/jsmith/example.git",
    "homepage": "http://example.com/jsmith/example",
    "git_http_url": "http://example.com/jsmith/example.git",
    "git_ssh_url": "git@example.com:jsmith/example.git",
    "visibility_level": 0
  }
}"#;

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for &(name, value) in pairs {
        map.insert(name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn github_headers(event: &str, body: &[u8]) -> HeaderMap {
    headers(&[
        ("x-github-event", event),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("x-hub-signature-256", &sign(SECRET, body)),
        ("content-type", "application/json"),
    ])
}

fn gitlab_headers(event: &str, token: &str) -> HeaderMap {
    headers(&[
        ("x-gitlab-event", event),
        ("x-gitlab-token", token),
        (
            "x-gitlab-event-uuid",
            "13792a34-cac6-4fda-95a8-c58e00a3954e",
        ),
        ("content-type", "application/json"),
    ])
}

fn token() -> &'static str {
    std::str::from_utf8(SECRET).unwrap()
}

#[test]
fn github_documented_hmac_vector_verifies() {
    // From GitHub's "Validating webhook deliveries".
    let map = headers(&[(
        "x-hub-signature-256",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    )]);
    verify_signature(&map, b"Hello, World!", b"It's a Secret to Everybody").unwrap();
    assert!(matches!(
        verify_signature(&map, b"Hello, World?", b"It's a Secret to Everybody"),
        Err(WebhookError::BadSignature)
    ));
}

#[test]
fn github_branch_push() {
    let body = GITHUB_BRANCH_PUSH.as_bytes();
    let event = parse(&github_headers("push", body), body, SECRET).unwrap();
    assert_eq!(
        event,
        PushEvent {
            provider: Provider::GitHub,
            repo_urls: vec![
                "https://github.com/Octo-Org/fleet-config.git".into(),
                "git@github.com:Octo-Org/fleet-config.git".into(),
                "https://github.com/Octo-Org/fleet-config".into(),
                "git://github.com/Octo-Org/fleet-config.git".into(),
            ],
            git_ref: GitRef::Branch("main".into()),
            after: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c".into(),
        }
    );
    assert!(event.is_for("ssh://git@github.com/octo-org/fleet-config"));
    assert!(!event.is_deletion());
}

#[test]
fn github_tag_push() {
    let body = GITHUB_TAG_PUSH.as_bytes();
    let event = parse(&github_headers("push", body), body, SECRET).unwrap();
    assert_eq!(event.git_ref, GitRef::Tag("v1.2.0".into()));
    assert_eq!(event.git_ref.to_string(), "refs/tags/v1.2.0");
    assert_eq!(event.after, "a3c9f2d0b1e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8");
}

#[test]
fn github_form_encoded_delivery_verifies_over_the_raw_body() {
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", GITHUB_BRANCH_PUSH)
        .finish();
    let mut map = github_headers("push", form.as_bytes());
    map.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let event = parse(&map, form.as_bytes(), SECRET).unwrap();
    assert_eq!(event.git_ref, GitRef::Branch("main".into()));
}

#[test]
fn github_refusals() {
    let body = GITHUB_BRANCH_PUSH.as_bytes();
    let forged = headers(&[
        ("x-github-event", "push"),
        ("x-hub-signature-256", &sign(b"another secret", body)),
    ]);
    let sha1_only = headers(&[
        ("x-github-event", "push"),
        (
            "x-hub-signature",
            "sha1=7d38cdd689735b008b3c702edd92eea23791c5f6",
        ),
    ]);
    let no_prefix = headers(&[
        ("x-github-event", "push"),
        (
            "x-hub-signature-256",
            sign(SECRET, body).trim_start_matches("sha256="),
        ),
    ]);
    let tampered = format!("{GITHUB_BRANCH_PUSH} ");
    let cases = [
        (forged, body, "forged"),
        (sha1_only, body, "no sha256 signature"),
        (no_prefix, body, "no prefix"),
        (
            github_headers("push", body),
            tampered.as_bytes(),
            "tampered body",
        ),
    ];
    for (map, body, what) in cases {
        let error = parse(&map, body, SECRET).unwrap_err();
        assert_eq!(error.status(), StatusCode::UNAUTHORIZED, "{what}: {error}");
        assert_eq!(error.to_string(), "signature does not verify", "{what}");
    }
    assert!(matches!(
        parse(&github_headers("push", body), body, b""),
        Err(WebhookError::NoSecretConfigured)
    ));
}

#[test]
fn github_ping_is_not_a_push() {
    let body = GITHUB_PING.as_bytes();
    let error = parse(&github_headers("ping", body), body, SECRET).unwrap_err();
    assert!(
        matches!(&error, WebhookError::NotPush(e) if e == "ping"),
        "{error}"
    );
    assert_eq!(error.status(), StatusCode::ACCEPTED);
}

#[test]
fn gitlab_branch_push() {
    let body = GITLAB_BRANCH_PUSH.as_bytes();
    let event = parse(&gitlab_headers("Push Hook", token()), body, SECRET).unwrap();
    assert_eq!(
        event,
        PushEvent {
            provider: Provider::GitLab,
            repo_urls: vec![
                "https://gitlab.example.com/platform/infra/deployments.git".into(),
                "git@gitlab.example.com:platform/infra/deployments.git".into(),
                "https://gitlab.example.com/platform/infra/deployments".into(),
            ],
            git_ref: GitRef::Branch("release/2025.03".into()),
            after: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into(),
        }
    );
}

#[test]
fn gitlab_tag_push() {
    let body = GITLAB_TAG_PUSH.as_bytes();
    let event = parse(&gitlab_headers("Tag Push Hook", token()), body, SECRET).unwrap();
    assert_eq!(event.git_ref, GitRef::Tag("v1.0.0".into()));
    assert!(event.is_for("https://example.com/jsmith/example"));
}

#[test]
fn gitlab_system_hook_push_and_other_events() {
    let body = GITLAB_BRANCH_PUSH.as_bytes();
    let event = parse(&gitlab_headers("System Hook", token()), body, SECRET).unwrap();
    assert_eq!(event.git_ref, GitRef::Branch("release/2025.03".into()));
    let body = br#"{"object_kind":"merge_request"}"#;
    let error = parse(&gitlab_headers("Merge Request Hook", token()), body, SECRET).unwrap_err();
    assert_eq!(error.status(), StatusCode::ACCEPTED, "{error}");
}

#[test]
fn gitlab_refusals() {
    let body = GITLAB_BRANCH_PUSH.as_bytes();
    let wrong = parse(
        &gitlab_headers("Push Hook", "webhook-secret-for-test"),
        body,
        SECRET,
    );
    assert!(matches!(wrong, Err(WebhookError::BadSignature)));
    let missing = parse(&headers(&[("x-gitlab-event", "Push Hook")]), body, SECRET);
    assert!(matches!(missing, Err(WebhookError::MissingSignature)));
    let empty_secret = parse(&gitlab_headers("Push Hook", ""), body, b"");
    assert!(matches!(
        empty_secret,
        Err(WebhookError::NoSecretConfigured)
    ));
}

#[test]
fn malformed_payloads_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("not json", "body"),
        ("[]", "body"),
        (
            r#"{"after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#,
            "ref",
        ),
        (r#"{"ref":"refs/heads/main"}"#, "after"),
        (r#"{"ref":"refs/heads/main","after":"HEAD"}"#, "after"),
        (
            r#"{"ref":7,"after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#,
            "ref",
        ),
        (
            r#"{"ref":"refs/heads/main","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}"#,
            "project",
        ),
        (
            r#"{"ref":"refs/heads/main","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
                "project":{"web_url":["x"]}}"#,
            "project.web_url",
        ),
    ];
    for &(body, field) in cases {
        let error = parse(
            &gitlab_headers("Push Hook", token()),
            body.as_bytes(),
            SECRET,
        );
        match error {
            Err(WebhookError::Malformed { field: f, .. }) => assert_eq!(f, field, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn unknown_events_and_refs() {
    let error = parse(
        &headers(&[("x-hub-signature-256", "sha256=00")]),
        b"{}",
        SECRET,
    );
    assert!(matches!(error, Err(WebhookError::UnknownEvent(_))));
    let body = br#"{"ref":"refs/merge-requests/4/head","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","project":{"web_url":"https://h/g/p"}}"#;
    let error = parse(&gitlab_headers("Push Hook", token()), body, SECRET).unwrap_err();
    assert_eq!(error.status(), StatusCode::ACCEPTED, "{error}");
}

/// A sink over a fixed list of GitRepos (name, url, branch), recording what it was called with.
struct FakeSink {
    repos: Vec<(&'static str, &'static str, GitRef)>,
    calls: Mutex<Vec<PushEvent>>,
}

impl PushSink for FakeSink {
    fn push(&self, event: &PushEvent) -> Vec<String> {
        self.calls.lock().unwrap().push(event.clone());
        self.repos
            .iter()
            .filter(|(_, url, git_ref)| event.is_for(url) && *git_ref == event.git_ref)
            .map(|(name, _, _)| (*name).to_owned())
            .collect()
    }
}

struct Fixture {
    sink: Arc<FakeSink>,
    metrics: Arc<Metrics>,
    router: Router,
}

fn fixture(secret: Option<&[u8]>) -> Fixture {
    let sink = Arc::new(FakeSink {
        repos: vec![
            (
                "fleet-main",
                "git@github.com:octo-org/fleet-config",
                GitRef::Branch("main".into()),
            ),
            (
                "fleet-main-https",
                "https://github.com/octo-org/fleet-config.git",
                GitRef::Branch("main".into()),
            ),
            (
                "fleet-staging",
                "https://github.com/octo-org/fleet-config",
                GitRef::Branch("staging".into()),
            ),
            (
                "deployments",
                "https://gitlab.example.com/platform/infra/deployments",
                GitRef::Branch("release/2025.03".into()),
            ),
        ],
        calls: Mutex::default(),
    });
    let metrics = Arc::new(Metrics::default());
    let router = super::router(secret.map(Arc::from), sink.clone(), metrics.clone());
    Fixture {
        sink,
        metrics,
        router,
    }
}

impl Fixture {
    async fn post(
        &self,
        path: &str,
        headers: HeaderMap,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let mut request = Request::post(path).body(body.into()).unwrap();
        *request.headers_mut() = headers;
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    fn calls(&self) -> usize {
        self.sink.calls.lock().unwrap().len()
    }

    fn counted(&self, provider: &str, outcome: &str) -> bool {
        let line =
            format!("flotilla_webhooks_total{{provider=\"{provider}\",outcome=\"{outcome}\"}} 1");
        self.metrics.render().lines().any(|l| l == line)
    }
}

#[tokio::test]
async fn router_triggers_the_repositories_a_verified_push_names() {
    let f = fixture(Some(SECRET));
    let body = GITHUB_BRANCH_PUSH.as_bytes();
    for path in ["/webhooks/github", "/webhooks"] {
        let (status, json) = f.post(path, github_headers("push", body), body).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(
            json,
            json!({ "triggered": ["fleet-main", "fleet-main-https"] }),
            "{path}"
        );
    }
    let body = GITLAB_BRANCH_PUSH.as_bytes();
    let (status, json) = f
        .post(
            "/webhooks/gitlab",
            gitlab_headers("Push Hook", token()),
            body,
        )
        .await;
    assert_eq!(
        (status, json),
        (StatusCode::OK, json!({ "triggered": ["deployments"] }))
    );
    let body = GITHUB_TAG_PUSH.as_bytes();
    let (status, json) = f
        .post("/webhooks", github_headers("push", body), body)
        .await;
    assert_eq!((status, json), (StatusCode::OK, json!({ "triggered": [] })));
    assert_eq!(f.calls(), 4);
    let text = f.metrics.render();
    assert!(
        text.contains("flotilla_webhooks_total{provider=\"github\",outcome=\"triggered\"} 2"),
        "{text}"
    );
    assert!(f.counted("gitlab", "triggered"), "{text}");
    assert!(f.counted("github", "ignored"), "{text}");
}

#[tokio::test]
async fn router_refuses_unverified_deliveries_without_calling_the_sink() {
    let f = fixture(Some(SECRET));
    let body = GITHUB_BRANCH_PUSH.as_bytes();
    let mut forged = github_headers("push", body);
    forged.insert(
        "x-hub-signature-256",
        HeaderValue::from_str(&sign(b"guess", body)).unwrap(),
    );
    let mut unsigned = github_headers("push", body);
    unsigned.remove("x-hub-signature-256");
    let gitlab_wrong = gitlab_headers("Push Hook", "guess");
    for (path, headers) in [
        ("/webhooks/github", forged),
        ("/webhooks", unsigned),
        ("/webhooks/gitlab", gitlab_wrong),
    ] {
        let (status, json) = f.post(path, headers, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            json,
            json!({ "error": "signature does not verify" }),
            "{path}"
        );
    }
    // A GitHub delivery at the GitLab endpoint carries no GitLab token.
    let (status, _) = f
        .post("/webhooks/gitlab", github_headers("push", body), body)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.calls(), 0);
    let text = f.metrics.render();
    assert!(
        text.contains("flotilla_webhooks_total{provider=\"github\",outcome=\"unauthorized\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("flotilla_webhooks_total{provider=\"gitlab\",outcome=\"unauthorized\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn router_answers_ping_with_202() {
    let f = fixture(Some(SECRET));
    let body = GITHUB_PING.as_bytes();
    let (status, json) = f
        .post("/webhooks/github", github_headers("ping", body), body)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(json, json!({ "ignored": "not a push event: ping" }));
    assert_eq!(f.calls(), 0);
    assert!(f.counted("github", "ignored"));
}

#[tokio::test]
async fn router_names_the_malformed_field() {
    let f = fixture(Some(SECRET));
    let body = br#"{"ref":"refs/heads/main","after":"nope","repository":{}}"#;
    let (status, json) = f
        .post("/webhooks/github", github_headers("push", body), &body[..])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json,
        json!({ "error": "malformed payload: after: not a commit id" })
    );
    let (status, _) = f.post("/webhooks", HeaderMap::new(), "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(f.calls(), 0);
    assert!(f.counted("github", "malformed"));
    assert!(f.counted("unknown", "malformed"));
}

#[tokio::test]
async fn router_without_a_secret_is_disabled() {
    for secret in [None, Some(&b""[..])] {
        let f = fixture(secret);
        let body = GITHUB_BRANCH_PUSH.as_bytes();
        let (status, json) = f
            .post("/webhooks/github", github_headers("push", body), body)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let message = json["error"].as_str().unwrap();
        assert!(message.contains("webhooks are disabled"), "{message}");
        assert_eq!(f.calls(), 0);
        assert!(f.counted("github", "disabled"));
    }
}

#[tokio::test]
async fn router_refuses_bodies_over_the_limit() {
    let f = fixture(Some(SECRET));
    let body = vec![b' '; BODY_LIMIT + 1];
    let (status, json) = f
        .post("/webhooks/github", github_headers("push", &body), body)
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .starts_with("payload too large")
    );
    assert_eq!(f.calls(), 0);
    assert!(f.counted("github", "malformed"));
}
