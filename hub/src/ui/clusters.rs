//! The list of registered clusters (`/clusters`), from `Fleet::clusters()`: each with its
//! link, connection, last contact, versions and labels, so that a cluster's page is one click
//! away even when everything is Ready. Only rendered when asked for: it is the one page whose
//! cost grows with the number of clusters, so it stops after [`LIMIT`] rows.

use std::fmt::Write as _;

use super::html::{cluster_link, esc, time};
use crate::fleet::ClusterView;

/// The most clusters the page lists; `flotilla cluster list` has them all.
pub const LIMIT: usize = 500;

/// The body of the cluster list.
pub fn render(clusters: &[ClusterView]) -> String {
    let connected = clusters.iter().filter(|c| c.presence.connected).count();
    let mut out = format!(
        r#"<h1>Clusters</h1><p id="cluster-count">{} clusters, {connected} connected</p>"#,
        clusters.len()
    );
    if clusters.is_empty() {
        out.push_str(
            r#"<p class="muted">No cluster has registered yet: create a token with <code>flotilla token create</code> and install the agent with <code>flotilla agent manifest</code>.</p>"#,
        );
        return out;
    }
    out.push_str(
        "<table id=\"clusters\"><thead><tr><th>Cluster</th><th>Connection</th><th>Last seen</th>\
         <th>Agent</th><th>Kubernetes</th><th>Labels</th></tr></thead><tbody>",
    );
    for c in clusters.iter().take(LIMIT) {
        let labels: Vec<String> = c
            .cluster
            .labels
            .iter()
            .map(|(k, v)| format!("<code>{}={}</code>", esc(k), esc(v)))
            .collect();
        let _ = write!(
            out,
            r#"<tr data-cluster="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&c.cluster.name),
            cluster_link(&c.cluster.name),
            if c.presence.connected {
                r#"<span class="badge s-ready">connected</span>"#
            } else {
                r#"<span class="badge s-pending">disconnected</span>"#
            },
            time(c.presence.last_seen),
            esc(&c.cluster.agent_version),
            esc(&c.cluster.kubernetes_version),
            labels.join(" "),
        );
    }
    out.push_str("</tbody></table>");
    if clusters.len() > LIMIT {
        let _ = write!(
            out,
            r#"<p class="muted">… and {} more: <code>flotilla cluster list</code> lists them all.</p>"#,
            clusters.len() - LIMIT
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Presence;
    use crate::model::{Cluster, ClusterId};

    fn view(name: &str, connected: bool) -> ClusterView {
        ClusterView {
            cluster: Cluster {
                id: ClusterId::new(),
                name: name.into(),
                labels: [("env".to_string(), "<prod>".to_string())].into(),
                registered_at: 0,
                agent_version: "0.1.0".into(),
                kubernetes_version: "v1.33".into(),
                token_id: String::new(),
                certificate: Default::default(),
            },
            presence: Presence {
                connected,
                last_seen: 0,
            },
        }
    }

    #[test]
    fn lists_clusters_with_links_and_escaped_labels() {
        let html = render(&[view("east", true), view("we<st", false)]);
        assert!(html.contains("2 clusters, 1 connected"));
        assert!(html.contains(r#"<a href="/clusters/east">east</a>"#));
        assert!(html.contains(r#"<a href="/clusters/we%3Cst">we&lt;st</a>"#));
        assert!(html.contains("<code>env=&lt;prod&gt;</code>"));
        assert!(html.contains("disconnected"));
        assert!(render(&[]).contains("flotilla token create"));
        let many: Vec<ClusterView> = (0..LIMIT + 2)
            .map(|i| view(&format!("c{i}"), true))
            .collect();
        assert!(render(&many).contains("… and 2 more"));
    }
}
