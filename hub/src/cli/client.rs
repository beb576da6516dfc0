//! Connecting to the hub's admin API with the admin credential file.

use std::path::Path;

use flotilla_proto::admin::v1::admin_client::AdminClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::hub::AdminCredential;

/// Why the CLI could not reach the hub.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot read the admin credential {path}: {message}; pass the file the hub wrote (<data-dir>/admin.yaml) with --config or FLOTILLA_CONFIG"
    )]
    Credential { path: String, message: String },
    #[error("cannot connect to the hub at {url}: {message}; is `flotilla serve` running there?")]
    Connect { url: String, message: String },
}

/// Read an admin credential file.
pub fn read_credential(path: &Path) -> Result<AdminCredential, ClientError> {
    let err = |message: String| ClientError::Credential {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_saphyr::from_str(&text).map_err(|e| err(e.to_string()))
}

/// A connected admin client.
pub async fn connect(cred: &AdminCredential) -> Result<AdminClient<Channel>, ClientError> {
    let err = |message: String| ClientError::Connect {
        url: cred.server.clone(),
        message,
    };
    let host = host_of(&cred.server).ok_or_else(|| err("the URL has no host".into()))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cred.ca))
        .identity(Identity::from_pem(&cred.cert, &cred.key))
        .domain_name(host);
    let channel = Endpoint::from_shared(cred.server.clone())
        .map_err(|e| err(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| err(e.to_string()))?
        .connect()
        .await
        .map_err(|e| err(format!("{e}: {}", source_chain(&e))))?;
    Ok(AdminClient::new(channel))
}

/// The host of an `https://host:port` URL, without IPv6 brackets.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().map(str::to_string);
    }
    Some(
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string(),
    )
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts() {
        assert_eq!(
            super::host_of("https://127.0.0.1:8443").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(super::host_of("https://[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(
            super::host_of("https://hub.example/x").as_deref(),
            Some("hub.example")
        );
    }
}
