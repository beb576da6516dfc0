//! The hub's Prometheus metrics, served on the HTTP port at `/metrics`.
//!
//! One registry per hub (not a process global), so tests running several hubs in one process
//! read their own figures. Counters are bumped where things happen; nothing here scans state.
//! Refusals are counted by a closed set of reasons, the same words the audit log lines use.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::rollup::{Counts, STATES};

type Labels = Vec<(&'static str, &'static str)>;
/// Labels whose values come from users (GitRepo names): few, but not a closed set.
type OwnedLabels = Vec<(&'static str, String)>;

/// Why the hub refused a caller. Each refusal is also an audit log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A registration token the hub does not know, or a malformed one.
    TokenUnknown,
    TokenExpired,
    TokenUsedUp,
    TokenRevoked,
    /// A TLS handshake failed: a certificate from another CA, an expired one, or no TLS.
    TlsHandshake,
    /// An agent call without a cluster certificate.
    NotACluster,
    /// A certificate of a cluster that was deleted.
    ClusterDeleted,
    /// A certificate of the cluster that was superseded by two renewals.
    CertificateSuperseded,
    /// A stream outlived its certificate.
    CertificateExpired,
    /// Status for a deployment that is not assigned to the reporting cluster.
    StatusNotAssigned,
    /// A manifest outside the cluster's deployments.
    ManifestNotAssigned,
    /// An admin call without the admin certificate.
    AdminRequired,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenUnknown => "token_unknown",
            Self::TokenExpired => "token_expired",
            Self::TokenUsedUp => "token_used_up",
            Self::TokenRevoked => "token_revoked",
            Self::TlsHandshake => "tls_handshake",
            Self::NotACluster => "not_a_cluster",
            Self::ClusterDeleted => "cluster_deleted",
            Self::CertificateSuperseded => "certificate_superseded",
            Self::CertificateExpired => "certificate_expired",
            Self::StatusNotAssigned => "status_not_assigned",
            Self::ManifestNotAssigned => "manifest_not_assigned",
            Self::AdminRequired => "admin_required",
        }
    }
}

/// Every metric the hub exports.
pub struct Metrics {
    registry: Registry,
    /// Agent streams open now.
    pub streams: Gauge,
    /// Agent streams accepted since start.
    pub streams_opened: Counter,
    /// Agent streams ended, by why.
    streams_closed: Family<Labels, Counter>,
    /// Calls and connections refused, by reason.
    refusals: Family<Labels, Counter>,
    /// Client certificates issued, by how (registration, renewal).
    certificates: Family<Labels, Counter>,
    /// Clusters registered on the hub.
    pub clusters: Gauge,
    /// Push webhooks received, by provider and outcome.
    webhooks: Family<Labels, Counter>,
    /// Clusters with a live stream now.
    connected: Gauge,
    /// Bundle deployments by state, from the fleet's rollups.
    deployments: Family<Labels, Gauge>,
    /// Seconds from the fetch that found a commit to a deployment Ready with its content.
    commit_to_ready: Histogram,
    /// Seconds per Git fetch.
    git_fetch: Histogram,
    /// Failed Git fetches, by GitRepo.
    git_fetch_errors: Family<OwnedLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flotilla");
        let streams = Gauge::default();
        let streams_opened = Counter::default();
        let streams_closed = Family::default();
        let refusals = Family::default();
        let certificates = Family::default();
        let clusters = Gauge::default();
        let webhooks = Family::default();
        let connected = Gauge::default();
        let deployments = Family::default();
        // 0.25 s .. ~17 min: a rollout to a large fleet takes minutes, a small one seconds.
        let commit_to_ready = Histogram::new(exponential_buckets(0.25, 2.0, 13));
        // 10 ms .. ~2.7 min (fetches time out at a few minutes).
        let git_fetch = Histogram::new(exponential_buckets(0.01, 2.0, 15));
        let git_fetch_errors = Family::default();
        registry.register(
            "clusters_connected",
            "Clusters with a live agent stream",
            connected.clone(),
        );
        registry.register(
            "deployments",
            "Bundle deployments by state (Fleet's states)",
            deployments.clone(),
        );
        registry.register(
            "commit_to_ready_seconds",
            "From the fetch that found a commit to a bundle deployment Ready with it",
            commit_to_ready.clone(),
        );
        registry.register(
            "git_fetch_duration_seconds",
            "Duration of Git fetches, successful or not",
            git_fetch.clone(),
        );
        registry.register(
            "git_fetch_errors",
            "Failed Git fetches, by GitRepo",
            git_fetch_errors.clone(),
        );
        registry.register("agent_streams", "Agent streams open now", streams.clone());
        registry.register(
            "agent_streams_opened",
            "Agent streams accepted since the hub started",
            streams_opened.clone(),
        );
        registry.register(
            "agent_streams_closed",
            "Agent streams ended, by reason",
            streams_closed.clone(),
        );
        registry.register(
            "refusals",
            "Calls and connections refused, by reason (each is also an audit log line)",
            refusals.clone(),
        );
        registry.register(
            "certificates_issued",
            "Cluster client certificates issued, by kind (registration, renewal)",
            certificates.clone(),
        );
        registry.register("clusters", "Clusters registered", clusters.clone());
        registry.register(
            "webhooks",
            "Push webhooks received, by provider and outcome (refused ones are also audit log lines)",
            webhooks.clone(),
        );
        Self {
            registry,
            streams,
            streams_opened,
            streams_closed,
            refusals,
            certificates,
            clusters,
            webhooks,
            connected,
            deployments,
            commit_to_ready,
            git_fetch,
            git_fetch_errors,
        }
    }
}

impl Metrics {
    pub fn refused(&self, reason: Refusal) {
        self.refusals
            .get_or_create(&vec![("reason", reason.as_str())])
            .inc();
    }

    pub fn stream_closed(&self, reason: &'static str) {
        self.streams_closed
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// A webhook delivery, by `provider` (github, gitlab, unknown) and `outcome` (triggered,
    /// ignored, unauthorized, malformed, disabled): the words `webhook::Outcome` uses.
    pub fn webhook(&self, provider: &'static str, outcome: &'static str) {
        self.webhooks
            .get_or_create(&vec![("provider", provider), ("outcome", outcome)])
            .inc();
    }

    pub fn certificate_issued(&self, kind: &'static str) {
        self.certificates.get_or_create(&vec![("kind", kind)]).inc();
    }

    /// The fleet's figures: clusters connected now, deployments by state (every state, zeros
    /// included, so a state that empties reads 0 rather than vanishing), and the
    /// commit-to-Ready latencies observed since the last call.
    pub fn observe_fleet(&self, connected: usize, states: &Counts, ready_latencies: &[f64]) {
        self.connected.set(connected as i64);
        for s in STATES {
            self.deployments
                .get_or_create(&vec![("state", s.as_str())])
                .set(i64::from(states.get(s)));
        }
        for l in ready_latencies {
            self.commit_to_ready.observe(*l);
        }
    }

    /// One Git fetch of GitRepo `repo`, how long it took and whether it failed.
    pub fn git_fetch(&self, repo: &str, seconds: f64, failed: bool) {
        self.git_fetch.observe(seconds);
        if failed {
            self.git_fetch_errors
                .get_or_create(&vec![("gitrepo", repo.to_string())])
                .inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_labels() {
        let m = Metrics::default();
        m.refused(Refusal::TokenExpired);
        m.refused(Refusal::TokenExpired);
        m.streams.set(3);
        let text = m.render();
        assert!(
            text.contains("flotilla_refusals_total{reason=\"token_expired\"} 2"),
            "{text}"
        );
        assert!(text.contains("flotilla_agent_streams 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn fleet_figures_cover_every_state_and_the_latency_histogram() {
        use crate::model::{BundleId, ClusterId, DeploymentState};
        use crate::rollup::{Rollups, Scope, Update};
        let m = Metrics::default();
        let mut r = Rollups::default();
        let c = ClusterId::new();
        let e = |state| {
            Some(Update {
                repo: "apps",
                environment: "prod",
                state,
                message: String::new(),
                revision: "c1",
            })
        };
        r.set(
            c,
            &BundleId("apps/a".into()),
            e(DeploymentState::Ready),
            0,
            true,
        );
        r.set(
            c,
            &BundleId("apps/b".into()),
            e(DeploymentState::NotReady),
            0,
            true,
        );
        m.observe_fleet(1, &r.counts(&Scope::Fleet), &[0.3, 1.5]);
        m.git_fetch("apps", 0.02, true);
        let text = m.render();
        for line in [
            "flotilla_clusters_connected 1",
            "flotilla_deployments{state=\"Ready\"} 1",
            "flotilla_deployments{state=\"NotReady\"} 1",
            "flotilla_deployments{state=\"Missing\"} 0",
            "flotilla_commit_to_ready_seconds_count 2",
            "flotilla_commit_to_ready_seconds_bucket{le=\"0.5\"} 1",
            "flotilla_git_fetch_duration_seconds_count 1",
            "flotilla_git_fetch_errors_total{gitrepo=\"apps\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
