//! The HTTP side of webhooks: three POST endpoints on the hub's plain-HTTP port, each
//! delivery verified by [`parse`](super::parse), counted, logged, and handed to a [`PushSink`].

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use tracing::{info, warn};

use super::{Outcome, Provider, PushEvent, WebhookError, header_str, malformed, parse, parse_as};
use crate::metrics::Metrics;

/// The largest delivery accepted: GitHub caps payloads at 25 MiB.
pub const BODY_LIMIT: usize = 25 * 1024 * 1024;

const GITHUB_DELIVERY: &str = "x-github-delivery";
const GITLAB_DELIVERY: &str = "x-gitlab-event-uuid";

/// What the router calls for each verified push.
pub trait PushSink: Send + Sync + 'static {
    /// Wake the GitRepos this push concerns (their URL is [`PushEvent::is_for`] and they follow
    /// `event.git_ref`) and return their names. Called on the async runtime: schedule a fetch,
    /// don't run one here.
    fn push(&self, event: &PushEvent) -> Vec<String>;
}

impl<F> PushSink for F
where
    F: Fn(&PushEvent) -> Vec<String> + Send + Sync + 'static,
{
    fn push(&self, event: &PushEvent) -> Vec<String> {
        self(event)
    }
}

/// `POST /webhooks/github`, `/webhooks/gitlab` and `/webhooks` (provider told by headers).
///
/// 200 `{"triggered":[names]}` for a verified push (the list may be empty); 202 for a verified
/// non-push event such as `ping`; 401 for a missing or wrong signature or token; 400 for an
/// unknown event header or a malformed payload (naming the field); 404 when `secret` is `None`
/// or empty (webhooks disabled); 413 above [`BODY_LIMIT`]. Errors are `{"error": message}`.
pub fn router(secret: Option<Arc<[u8]>>, sink: Arc<dyn PushSink>, metrics: Arc<Metrics>) -> Router {
    let webhooks = Webhooks {
        secret,
        sink,
        metrics,
    };
    Router::new()
        .route("/webhooks", post(any_provider))
        .route("/webhooks/github", post(github))
        .route("/webhooks/gitlab", post(gitlab))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(webhooks)
}

#[derive(Clone)]
struct Webhooks {
    secret: Option<Arc<[u8]>>,
    sink: Arc<dyn PushSink>,
    metrics: Arc<Metrics>,
}

type Body = Result<Bytes, BytesRejection>;

async fn any_provider(State(hooks): State<Webhooks>, headers: HeaderMap, body: Body) -> Response {
    hooks.receive(None, &headers, body)
}

async fn github(State(hooks): State<Webhooks>, headers: HeaderMap, body: Body) -> Response {
    hooks.receive(Some(Provider::GitHub), &headers, body)
}

async fn gitlab(State(hooks): State<Webhooks>, headers: HeaderMap, body: Body) -> Response {
    hooks.receive(Some(Provider::GitLab), &headers, body)
}

impl Webhooks {
    fn receive(&self, route: Option<Provider>, headers: &HeaderMap, body: Body) -> Response {
        match self.verify(route, headers, body) {
            Ok(event) => self.deliver(&event),
            Err(error) => self.refuse(route.or_else(|| Provider::detect(headers)), headers, &error),
        }
    }

    fn verify(
        &self,
        route: Option<Provider>,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<PushEvent, WebhookError> {
        let secret = self
            .secret
            .as_deref()
            .filter(|secret| !secret.is_empty())
            .ok_or(WebhookError::NoSecretConfigured)?;
        let body = body.map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => WebhookError::TooLarge { limit: BODY_LIMIT },
            _ => malformed("body", rejection.body_text()),
        })?;
        match route {
            Some(provider) => parse_as(provider, headers, &body, secret),
            None => parse(headers, &body, secret),
        }
    }

    fn deliver(&self, event: &PushEvent) -> Response {
        let triggered = self.sink.push(event);
        let outcome = if triggered.is_empty() {
            Outcome::Ignored
        } else {
            Outcome::Triggered
        };
        self.metrics
            .webhook(event.provider.as_str(), outcome.as_str());
        info!(
            provider = event.provider.as_str(),
            repository = event.repo_urls.first().map(String::as_str).unwrap_or_default(),
            git_ref = %event.git_ref,
            after = %event.after,
            triggered = ?triggered,
            "push webhook"
        );
        (StatusCode::OK, Json(json!({ "triggered": triggered }))).into_response()
    }

    fn refuse(
        &self,
        provider: Option<Provider>,
        headers: &HeaderMap,
        error: &WebhookError,
    ) -> Response {
        let provider = provider.map_or("unknown", Provider::as_str);
        let outcome = error.outcome();
        self.metrics.webhook(provider, outcome.as_str());
        let delivery = delivery_id(headers);
        if let WebhookError::NotPush(event) = error {
            info!(provider, delivery, event = %event, "webhook event ignored: not a push");
            let body = json!({ "ignored": error.to_string() });
            return (error.status(), Json(body)).into_response();
        }
        warn!(
            provider,
            delivery,
            outcome = outcome.as_str(),
            reason = error.reason(),
            error = %error,
            "webhook refused"
        );
        (error.status(), Json(json!({ "error": error.to_string() }))).into_response()
    }
}

/// The provider's delivery id, for matching a log line with its delivery page; at most 64
/// characters, since it is read before the delivery is authenticated.
fn delivery_id(headers: &HeaderMap) -> &str {
    let id = header_str(headers, GITHUB_DELIVERY)
        .or_else(|| header_str(headers, GITLAB_DELIVERY))
        .unwrap_or_default();
    id.get(..64).unwrap_or(id)
}
