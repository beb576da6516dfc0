//! The read-only status web page on the hub's HTTP port, and the same views as JSON.
//!
//! Pages are rendered on the server (`html.rs`, `overview.rs`, `detail.rs`) so that their
//! content is in the DOM on load; no JavaScript build step. A small script (`live.js`) follows
//! `/ui/events` (server-sent events, `live.rs`) and, on each change, fetches the page's own
//! fragment (`?fragment=1`) and swaps it in without a reload. Routes:
//!
//! - `/` the fleet at a glance, `/clusters` (the list), `/clusters/{name}`, `/gitrepos/{name}`;
//! - `/ui/events`, `/ui/flotilla.css`, `/ui/live.js`;
//! - `/api/v1/status`, `/api/v1/status/clusters/{name}`, `/api/v1/status/gitrepos/{name}`.
//!
//! The page shows what `flotilla status` shows and nothing secret (agents scrub messages),
//! but it needs no credential: `flotilla serve --no-ui` turns all of this off. Responses carry
//! a strict Content-Security-Policy (same-origin script and style only, no framing).

mod clusters;
mod detail;
mod html;
mod live;
mod overview;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::fleet::Fleet;
use live::Live;
pub(crate) use live::versions_stream;

const CSS: &str = include_str!("flotilla.css");
const SCRIPT: &str = include_str!("live.js");

/// The header that tells the script which status version a page or fragment shows.
pub const VERSION_HEADER: &str = "x-flotilla-version";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The `flotilla serve` flags of the status page (flattened into `ServeArgs`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct UiArgs {
    /// Do not serve the status page and its JSON views (`/`, `/clusters/NAME`,
    /// `/gitrepos/NAME`, `/api/v1/status...`) on the HTTP port.
    #[arg(long, env = "FLOTILLA_NO_UI")]
    pub no_ui: bool,
}

impl UiArgs {
    /// Set what these flags decide in the hub's configuration.
    pub fn apply(&self, config: &mut crate::HubConfig) {
        config.ui = !self.no_ui;
    }
}

#[derive(Clone)]
struct Ui {
    fleet: Arc<Fleet>,
    live: Live,
}

/// The page's routes, to merge into the HTTP port's router. Live streams end on `shutdown`.
pub fn router(fleet: Arc<Fleet>, shutdown: CancellationToken) -> Router {
    let ui = Ui {
        fleet,
        live: Live::new(shutdown),
    };
    Router::new()
        .route("/", get(fleet_page))
        .route("/clusters", get(clusters_page))
        .route("/clusters/{name}", get(cluster_page))
        .route("/gitrepos/{name}", get(gitrepo_page))
        .route("/ui/events", get(events))
        .route("/ui/flotilla.css", get(|| async { asset("text/css", CSS) }))
        .route(
            "/ui/live.js",
            get(|| async { asset("text/javascript", SCRIPT) }),
        )
        .route("/api/v1/status", get(fleet_json))
        .route("/api/v1/status/clusters/{name}", get(cluster_json))
        .route("/api/v1/status/gitrepos/{name}", get(gitrepo_json))
        .with_state(ui)
}

/// `?fragment=1`: only the part of the page the live script swaps in.
#[derive(Deserialize)]
struct Part {
    fragment: Option<String>,
}

impl Ui {
    /// The version to tag a response with: read before the view, so a view is never older.
    fn version(&self) -> u64 {
        *self.fleet.subscribe().borrow()
    }
}

/// A page or, for the live script, its fragment.
fn respond(
    code: StatusCode,
    part: &Part,
    title: &str,
    path: &str,
    version: u64,
    body: String,
) -> Response {
    let html = if part.fragment.is_some() {
        body
    } else {
        html::page(title, &format!("{path}?fragment=1"), version, &body)
    };
    let mut r = (
        code,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(VERSION_HEADER, HeaderValue::from(version));
    secure(h);
    r
}

fn secure(h: &mut axum::http::HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    secure(r.headers_mut());
    r
}

async fn fleet_page(State(ui): State<Ui>, Query(part): Query<Part>) -> Response {
    let version = ui.version();
    let body = overview::render(&ui.fleet.summary_view());
    respond(StatusCode::OK, &part, "Fleet", "/", version, body)
}

async fn clusters_page(State(ui): State<Ui>, Query(part): Query<Part>) -> Response {
    let version = ui.version();
    let body = clusters::render(&ui.fleet.clusters());
    respond(
        StatusCode::OK,
        &part,
        "Clusters",
        "/clusters",
        version,
        body,
    )
}

async fn cluster_page(
    State(ui): State<Ui>,
    Path(name): Path<String>,
    Query(part): Query<Part>,
) -> Response {
    let version = ui.version();
    let path = format!("/clusters/{}", html::seg(&name));
    match ui.fleet.cluster_view(&name, true) {
        Some(v) => respond(
            StatusCode::OK,
            &part,
            &format!("Cluster {name}"),
            &path,
            version,
            detail::cluster(&v),
        ),
        None => respond(
            StatusCode::NOT_FOUND,
            &part,
            "Unknown cluster",
            &path,
            version,
            html::unknown_cluster(&name),
        ),
    }
}

async fn gitrepo_page(
    State(ui): State<Ui>,
    Path(name): Path<String>,
    Query(part): Query<Part>,
) -> Response {
    let version = ui.version();
    let path = format!("/gitrepos/{}", html::seg(&name));
    let body = detail::gitrepo(&ui.fleet.gitrepo_view(&name));
    respond(
        StatusCode::OK,
        &part,
        &format!("GitRepo {name}"),
        &path,
        version,
        body,
    )
}

async fn events(State(ui): State<Ui>) -> Response {
    let Some(versions) = ui.live.follow(ui.fleet.subscribe()) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many pages follow live updates; close some, or reload later\n",
        )
            .into_response();
    };
    debug!("status page following live updates");
    let events = versions.map(|v| {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .event("status")
                .data(v.to_string())
                .retry(std::time::Duration::from_secs(3)),
        )
    });
    let mut r = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    secure(r.headers_mut());
    r
}

fn json(code: StatusCode, v: Value) -> Response {
    let mut r = (code, axum::Json(v)).into_response();
    secure(r.headers_mut());
    r
}

async fn fleet_json(State(ui): State<Ui>) -> Response {
    json(StatusCode::OK, ui.fleet.summary_view())
}

async fn cluster_json(State(ui): State<Ui>, Path(name): Path<String>) -> Response {
    match ui.fleet.cluster_view(&name, true) {
        Some(v) => json(StatusCode::OK, v),
        None => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!(
                "no cluster named {name:?} is registered; `flotilla cluster list` shows the registered clusters"
            )}),
        ),
    }
}

async fn gitrepo_json(State(ui): State<Ui>, Path(name): Path<String>) -> Response {
    json(StatusCode::OK, ui.fleet.gitrepo_view(&name))
}

#[cfg(test)]
mod tests;
