//! The hub's certificate authority: it signs the hub's serving certificate, the admin
//! credential and every cluster's client certificate.
//!
//! Created on first start in `<data-dir>/pki/`, reused after. Private keys are written with
//! mode 0600 and never leave the hub; agents send CSRs, so their keys never reach it either.
//! Identities live in URI SANs: `flotilla://cluster/<uuid>` and `flotilla://admin/<name>`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::model::ClusterId;

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write {path}: {source}; check the data directory's permissions")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate operation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("the certificate signing request is not valid PEM PKCS#10 with a valid signature")]
    BadCsr,
}

type Result<T> = std::result::Result<T, PkiError>;

/// Who a verified client certificate belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerIdentity {
    Cluster(ClusterId),
    Admin(String),
}

const CLUSTER_URI: &str = "flotilla://cluster/";
const ADMIN_URI: &str = "flotilla://admin/";

/// The CA and the hub's own serving identity.
pub struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    server_cert_pem: String,
    server_key_pem: String,
}

impl Pki {
    /// Load the CA and serving certificate from `dir`, creating what is missing. The serving
    /// certificate is re-issued when `server_names` changed or it expires within 30 days.
    pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.into(),
            source,
        })?;
        let (ca_pem, ca_key) = match (read(&dir.join("ca.crt"))?, read(&dir.join("ca.key"))?) {
            (Some(cert), Some(key)) => (cert, KeyPair::from_pem(&key)?),
            _ => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::default();
                params.distinguished_name = dn("Flotilla hub CA");
                params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
                params.not_before = OffsetDateTime::now_utc() - Duration::from_secs(300);
                params.not_after =
                    OffsetDateTime::now_utc() + Duration::from_secs(10 * 365 * 86400);
                let cert = params.self_signed(&key)?;
                write_private(&dir.join("ca.key"), &key.serialize_pem())?;
                write_private(&dir.join("ca.crt"), &cert.pem())?;
                (cert.pem(), key)
            }
        };
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.extend(server_names.iter().cloned());
        names.dedup();
        let names_file = names.join("\n");
        let current = (
            read(&dir.join("server.crt"))?,
            read(&dir.join("server.key"))?,
            read(&dir.join("server.names"))?,
        );
        let (server_cert_pem, server_key_pem) = match current {
            (Some(cert), Some(key), Some(n)) if n == names_file && !expires_soon(&cert) => {
                (cert, key)
            }
            _ => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(names.clone())?;
                params.distinguished_name = dn("flotilla-hub");
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                params.not_before = OffsetDateTime::now_utc() - Duration::from_secs(300);
                params.not_after = OffsetDateTime::now_utc() + Duration::from_secs(365 * 86400);
                let cert = params.signed_by(&key, &issuer)?;
                write_private(&dir.join("server.key"), &key.serialize_pem())?;
                write_private(&dir.join("server.crt"), &cert.pem())?;
                write_private(&dir.join("server.names"), &names_file)?;
                (cert.pem(), key.serialize_pem())
            }
        };
        Ok(Self {
            ca_pem,
            issuer,
            server_cert_pem,
            server_key_pem,
        })
    }

    /// The CA certificate agents and the CLI must trust, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The hub's serving certificate and key, PEM.
    pub fn server_identity(&self) -> (&str, &str) {
        (&self.server_cert_pem, &self.server_key_pem)
    }

    /// Sign a cluster's CSR. Only the CSR's public key is used: subject, SANs and usages are
    /// the hub's choice, so a CSR cannot ask for another identity.
    pub fn sign_cluster_csr(
        &self,
        csr_pem: &str,
        id: ClusterId,
        name: &str,
        ttl: Duration,
    ) -> Result<String> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|_| PkiError::BadCsr)?;
        let params = client_params(&format!("{CLUSTER_URI}{id}"), name, ttl)?;
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    /// Issue an admin client certificate and its key, PEM.
    pub fn issue_admin(&self, name: &str, ttl: Duration) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let params = client_params(&format!("{ADMIN_URI}{name}"), name, ttl)?;
        Ok((
            params.signed_by(&key, &self.issuer)?.pem(),
            key.serialize_pem(),
        ))
    }
}

fn client_params(uri: &str, cn: &str, ttl: Duration) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = OffsetDateTime::now_utc() - Duration::from_secs(300);
    params.not_after = OffsetDateTime::now_utc() + ttl;
    Ok(params)
}

/// The identity in a client certificate the TLS layer has already verified against our CA.
pub fn peer_identity(cert_der: &[u8]) -> Option<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => {
            if let Some(id) = uri.strip_prefix(CLUSTER_URI) {
                id.parse().ok().map(|u| PeerIdentity::Cluster(ClusterId(u)))
            } else {
                uri.strip_prefix(ADMIN_URI)
                    .map(|n| PeerIdentity::Admin(n.to_string()))
            }
        }
        _ => None,
    })
}

fn dn(cn: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn expires_soon(cert_pem: &str) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return true;
    };
    let Ok(cert) = pem.parse_x509() else {
        return true;
    };
    let left = cert.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
    left < 30 * 86400
}

fn read(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// Write `contents` to `path` atomically with mode 0600.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |source| PkiError::Io {
        path: path.into(),
        source,
    };
    // A leftover temporary file would keep its old mode: start from nothing.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ca_is_reused_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(dir.path(), &[]).unwrap();
        let b = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(a.ca_pem(), b.ca_pem());
        assert_eq!(a.server_identity(), b.server_identity());
        for f in ["ca.key", "server.key"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let c = Pki::load_or_create(dir.path(), &["hub.example".into()]).unwrap();
        assert_eq!(a.ca_pem(), c.ca_pem());
        assert_ne!(
            a.server_identity().0,
            c.server_identity().0,
            "new names re-issue the serving cert"
        );
    }

    #[test]
    fn csr_is_signed_with_the_hubs_identity_not_the_requested_one() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        req.subject_alt_names
            .push(SanType::URI("flotilla://admin/root".try_into().unwrap()));
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let id = ClusterId::new();
        let pem = pki
            .sign_cluster_csr(&csr, id, "east", Duration::from_secs(60))
            .unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        assert_eq!(
            peer_identity(&parsed.contents),
            Some(PeerIdentity::Cluster(id))
        );
        assert!(matches!(
            pki.sign_cluster_csr("junk", id, "x", Duration::from_secs(1)),
            Err(PkiError::BadCsr)
        ));
    }
}
