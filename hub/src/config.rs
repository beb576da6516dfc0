//! The hub's configuration: plain data, validated before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `flotilla serve` needs to know.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Where the store, the CA and the Git mirrors live.
    pub data_dir: PathBuf,
    /// The gRPC (agents and admin) listen address.
    pub listen: SocketAddr,
    /// The plain-HTTP listen address for `/healthz`, `/readyz` and `/metrics`.
    pub http_listen: SocketAddr,
    /// Accept TLS 1.2 clients too (TLS 1.3 only by default).
    pub allow_tls12: bool,
    /// Extra DNS names or IPs for the serving certificate (localhost and loopback are always in).
    pub server_names: Vec<String>,
    /// Poll interval for GitRepos that do not set one.
    pub default_poll_interval: Duration,
    /// Lifetime of the client certificates issued to clusters.
    pub client_cert_ttl: Duration,
    /// How long shutdown waits for tasks to finish.
    pub shutdown_grace: Duration,
    /// The https URL agents dial, when it differs from the listen address (a Service or a
    /// load balancer in front of the hub); `None` derives it from the bound listener.
    pub agent_url: Option<String>,
    /// The shared secret GitHub signs and GitLab sends push webhooks with; None disables
    /// the webhook endpoints.
    pub webhook_secret: Option<WebhookSecret>,
    /// Where the Git credentials GitRepos name (`clientSecretName`) live: one directory per
    /// credential holding the files `username` and `password`, read at every fetch. Defaults
    /// to `<data-dir>/credentials`.
    pub credentials_dir: PathBuf,
    /// `kubectl` and `helm`, and the limits bundles render under. Its scratch directory
    /// defaults to `<data-dir>/render`.
    pub renderers: crate::render::Renderers,
    /// Serve the read-only status page and its JSON views on the HTTP port (`crate::ui`);
    /// `flotilla serve --no-ui` turns them off.
    pub ui: bool,
}

/// A webhook secret; never printed.
#[derive(Clone)]
pub struct WebhookSecret(pub std::sync::Arc<[u8]>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// The secret in `text`, without the trailing newline a file usually ends with.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim_end_matches(['\n', '\r']);
        (!t.is_empty()).then(|| Self(std::sync::Arc::from(t.as_bytes())))
    }
}

impl HubConfig {
    /// Defaults for `data_dir`, listening on all interfaces at port 8443.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir: data_dir.clone(),
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            allow_tls12: false,
            server_names: Vec::new(),
            default_poll_interval: Duration::from_secs(15),
            client_cert_ttl: Duration::from_secs(86400),
            shutdown_grace: Duration::from_secs(10),
            agent_url: None,
            webhook_secret: None,
            credentials_dir: data_dir.join("credentials"),
            renderers: crate::render::Renderers {
                scratch: data_dir.join("render"),
                ..Default::default()
            },
            ui: true,
        }
    }

    /// The URL agents dial: `agent_url` if set, else `https://<host>:<port>` of the bound
    /// listener (127.0.0.1 when it listens on every interface).
    pub fn agent_url_for(&self, bound: SocketAddr) -> String {
        if let Some(url) = &self.agent_url {
            return url.clone();
        }
        let ip = bound.ip();
        let host = match ip {
            _ if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        format!("https://{host}:{}", bound.port())
    }
}

/// Check an `--agent-url`: `https://host[:port]`, nothing else (agents only speak TLS).
pub fn parse_agent_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("https://").ok_or_else(|| {
        format!("{s:?} must start with https:// (agents only dial the hub over TLS), e.g. https://hub.example.com:8443")
    })?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "{s:?} must be https://host[:port] with no path, user or query, e.g. https://hub.example.com:8443"
        ));
    }
    Ok(format!("https://{authority}"))
}

/// Parse a duration like `90s`, `15m`, `1h`, `7d` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 15m, 1h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert!(parse_duration("1w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn agent_urls() {
        let mut c = HubConfig::new("d".into());
        let any: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        assert_eq!(c.agent_url_for(any), "https://127.0.0.1:8443");
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(c.agent_url_for(v6), "https://[::1]:9000");
        let local: SocketAddr = "10.0.0.5:443".parse().unwrap();
        assert_eq!(c.agent_url_for(local), "https://10.0.0.5:443");
        c.agent_url = Some("https://hub.example.com".into());
        assert_eq!(c.agent_url_for(any), "https://hub.example.com");

        assert_eq!(
            parse_agent_url("https://hub.example.com:8443/").unwrap(),
            "https://hub.example.com:8443"
        );
        assert!(
            parse_agent_url("http://hub:8443")
                .unwrap_err()
                .contains("https://")
        );
        assert!(parse_agent_url("https://").is_err());
        assert!(
            parse_agent_url("https://hub/grpc")
                .unwrap_err()
                .contains("no path")
        );
    }
}
