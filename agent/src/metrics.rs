//! The agent's Prometheus metrics and the small HTTP server that serves them (`--metrics-addr`,
//! off by default): how long apply runs take, objects by state, drift corrections.
//!
//! One registry per agent (not a process global), so tests running several agents in one
//! process read their own figures. Objects by state are counted from the [`StatusBoard`] when
//! scraped, so they are exactly what the hub is told.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info_span, warn};

use crate::model::ObjectState;
use crate::status::StatusBoard;

type Labels = Vec<(&'static str, &'static str)>;

/// Why the agent applied an object again on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Correction {
    /// Fields were changed on the cluster.
    Modified,
    /// The object was deleted from the cluster.
    Missing,
}

/// Every metric the agent exports.
pub(crate) struct Metrics {
    registry: Registry,
    apply_seconds: Histogram,
    objects: Family<Labels, Gauge>,
    corrections: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flotilla_agent");
        // 10 ms to about 80 s.
        let apply_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        let objects = Family::default();
        let corrections = Family::default();
        registry.register(
            "apply_duration_seconds",
            "How long one apply run of a deployment took (apply, CRD waits, prune)",
            apply_seconds.clone(),
        );
        registry.register(
            "objects",
            "Objects of the deployments on this cluster, by state as last reported",
            objects.clone(),
        );
        registry.register(
            "drift_corrections",
            "Objects applied again because they were changed (modified) or deleted (missing) on the cluster",
            corrections.clone(),
        );
        Self {
            registry,
            apply_seconds,
            objects,
            corrections,
        }
    }
}

fn state_label(s: ObjectState) -> &'static str {
    match s {
        ObjectState::Failed => "failed",
        ObjectState::Waiting => "waiting",
        ObjectState::Ready => "ready",
        ObjectState::NotReady => "not_ready",
        ObjectState::Modified => "modified",
        ObjectState::Missing => "missing",
    }
}

const STATES: [ObjectState; 6] = [
    ObjectState::Failed,
    ObjectState::Waiting,
    ObjectState::Ready,
    ObjectState::NotReady,
    ObjectState::Modified,
    ObjectState::Missing,
];

impl Metrics {
    pub fn applied_in(&self, took: Duration) {
        self.apply_seconds.observe(took.as_secs_f64());
    }

    pub fn drift_corrected(&self, why: Correction) {
        let reason = match why {
            Correction::Modified => "modified",
            Correction::Missing => "missing",
        };
        self.corrections
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// The text exposition, with object counts taken from `board` now.
    pub fn render(&self, board: &StatusBoard) -> String {
        let counts = board.object_counts();
        for state in STATES {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.objects
                .get_or_create(&vec![("state", state_label(state))])
                .set(n as i64);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String does not fail");
        out
    }
}

/// Serves `GET /metrics` (any other path is 404) until `shutdown`; connections run on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "could not accept a metrics connection");
                    continue;
                }
            },
        };
        let (metrics, board, shutdown) = (metrics.clone(), board.clone(), shutdown.clone());
        let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let (code, body) = match request.uri().path() {
                "/metrics" => (200, metrics.render(&board)),
                _ => (404, "not found\n".to_string()),
            };
            let response = hyper::Response::builder()
                .status(code)
                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                .body(Full::new(Bytes::from(body)));
            async move { Ok::<_, Infallible>(response.expect("static response parts")) }
        });
        let connection = async move {
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = conn => if let Err(e) = result { debug!(error = %e, "metrics connection ended") },
            }
        };
        tracker.spawn(connection.instrument(info_span!("metrics_connection")));
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::model::{Deployment, ObjectStatus};
    use crate::status::summarize;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.unwrap();
        raw
    }

    #[tokio::test]
    async fn serves_objects_by_state_corrections_and_apply_durations() {
        let (metrics, board) = (
            Arc::new(Metrics::default()),
            Arc::new(StatusBoard::default()),
        );
        let object = |state| ObjectStatus {
            state,
            ..ObjectStatus::default()
        };
        let objects = vec![
            object(ObjectState::Ready),
            object(ObjectState::Ready),
            object(ObjectState::Modified),
        ];
        board.publish(summarize(&Deployment::default(), objects));
        metrics.drift_corrected(Correction::Missing);
        metrics.applied_in(Duration::from_millis(30));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let server = serve(listener, metrics, board, tracker.clone(), shutdown.clone());
        tracker.spawn(server);

        let text = get(addr, "/metrics").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        for line in [
            "flotilla_agent_objects{state=\"ready\"} 2",
            "flotilla_agent_objects{state=\"modified\"} 1",
            "flotilla_agent_objects{state=\"missing\"} 0",
            "flotilla_agent_drift_corrections_total{reason=\"missing\"} 1",
            "flotilla_agent_apply_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
