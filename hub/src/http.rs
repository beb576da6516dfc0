//! The hub's plain-HTTP port: `/healthz`, `/readyz`, `/metrics`, the push webhooks
//! (`/webhooks/github`, `/webhooks/gitlab`, each delivery verified against the webhook secret)
//! and, unless `--no-ui`, the read-only status page and its JSON views (`crate::ui`), apart
//! from the gRPC port so that probes, Prometheus, Git hosts and browsers need no client
//! certificate.
//!
//! Nothing here changes the fleet or reveals a secret, but the status page shows cluster
//! names, labels, bundle names and agents' messages to anyone who reaches the port: bind it
//! where only the kubelet, the monitoring system and the operators can reach it, or turn the
//! page off with `--no-ui`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct Probe {
    pub metrics: Arc<Metrics>,
    /// True while the gRPC listener serves and shutdown has not begun.
    pub ready: Arc<AtomicBool>,
}

/// Serve the probe and metrics endpoints on `listener` until `shutdown`.
/// `extra` is merged in: the webhook endpoints and the status page.
pub async fn serve(
    listener: TcpListener,
    probe: Probe,
    extra: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probe)
        .merge(extra);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn readyz(State(probe): State<Probe>) -> impl IntoResponse {
    if probe.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting or shutting down\n",
        )
    }
}

async fn metrics(State(probe): State<Probe>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probe.metrics.render(),
    )
}
