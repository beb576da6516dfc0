//! The hub's certificate authority: it signs the hub's serving certificate, the admin
//! credential and every cluster's client certificate.
//!
//! Created on first start in `<data-dir>/pki/`, reused after. Private keys are written with
//! mode 0600 and never leave the hub; agents send CSRs, so their keys never reach it either.
//! Identities live in URI SANs: `flotilla://cluster/<uuid>` and `flotilla://admin/<name>`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use sha2::Digest;
use tokio::sync::watch;

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
    #[error(
        "a CA certificate in the data directory is unreadable; restore the pki directory from a backup"
    )]
    BadCa,
    #[error("a CA rotation is already in progress; finish it with `flotilla ca retire` first")]
    RotationInProgress,
    #[error("no CA rotation is in progress; start one with `flotilla ca rotate`")]
    NoRotation,
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

/// One certificate authority: its certificate and signing key.
struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    info: CaInfo,
}

/// What is public about a CA, for status listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaInfo {
    /// Hex SHA-256 of the certificate's DER.
    pub fingerprint: String,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// Which CAs exist right now, and the serving identity.
struct State {
    /// Signs every new client certificate.
    active: Ca,
    /// During a rotation: the CA being retired, still trusted, and still the one that signs
    /// the serving certificate (agents that have not yet learnt the new CA must reach us).
    previous: Option<Ca>,
    server_cert_pem: String,
    server_key_pem: String,
}

/// A cluster certificate just signed.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub pem: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Fingerprint of the CA that signed it.
    pub ca_fingerprint: String,
    /// Hex SHA-256 of the certified public key (SubjectPublicKeyInfo DER).
    pub key_sha256: String,
}

/// The hub's CAs and serving identity. Shared; a CA rotation changes it in place and bumps
/// the generation that the TLS listener and agent streams watch.
pub struct Pki {
    dir: PathBuf,
    names: Vec<String>,
    state: RwLock<State>,
    generation: watch::Sender<u64>,
}

const ACTIVE: &str = "ca";
const PREVIOUS: &str = "previous-ca";

impl Pki {
    /// Load the CAs and serving certificate from `dir`, creating what is missing. The serving
    /// certificate is re-issued when `server_names` changed, it expires within 30 days, or
    /// the CA that should sign it changed.
    pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            path: dir.into(),
            source,
        })?;
        let active = match load_ca(dir, ACTIVE)? {
            Some(ca) => ca,
            None => new_ca(dir, ACTIVE)?,
        };
        let previous =
            load_ca(dir, PREVIOUS)?.filter(|p| p.info.fingerprint != active.info.fingerprint);
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.extend(server_names.iter().cloned());
        names.dedup();
        let mut state = State {
            active,
            previous,
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
        };
        let current = (
            read(&dir.join("server.crt"))?,
            read(&dir.join("server.key"))?,
            read(&dir.join("server.names"))?,
        );
        match current {
            (Some(cert), Some(key), Some(n))
                if n == names.join("\n")
                    && !expires_soon(&cert)
                    && issued_by(&cert, state.serving_ca()) =>
            {
                state.server_cert_pem = cert;
                state.server_key_pem = key;
            }
            _ => issue_server(dir, &names, &mut state)?,
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            names,
            state: RwLock::new(state),
            generation: watch::Sender::new(0),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The CA certificates to trust for the hub and its clients, PEM: the active CA, and
    /// during a rotation the previous one too.
    pub fn ca_pem(&self) -> String {
        let s = self.read();
        let mut pem = s.active.cert_pem.clone();
        if let Some(p) = &s.previous {
            if !pem.ends_with('\n') {
                pem.push('\n');
            }
            pem.push_str(&p.cert_pem);
        }
        pem
    }

    /// The CAs, active first.
    pub fn cas(&self) -> Vec<(CaInfo, CaRole)> {
        let s = self.read();
        let serving = s.serving_ca().info.fingerprint.clone();
        let mut out = vec![(s.active.info.clone(), CaRole::Active)];
        if let Some(p) = &s.previous {
            out.push((p.info.clone(), CaRole::Previous));
        }
        for (info, role) in &mut out {
            if info.fingerprint == serving {
                *role = role.serving();
            }
        }
        out
    }

    /// Fingerprint of the CA that signs new client certificates.
    pub fn active_fingerprint(&self) -> String {
        self.read().active.info.fingerprint.clone()
    }

    /// The hub's serving certificate and key, PEM.
    pub fn server_identity(&self) -> (String, String) {
        let s = self.read();
        (s.server_cert_pem.clone(), s.server_key_pem.clone())
    }

    /// A receiver that changes whenever the CAs or the serving identity change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Begin a rotation: a new CA becomes active (it signs every certificate from now on);
    /// the old one stays trusted and keeps signing the serving certificate until `retire`.
    pub fn rotate(&self) -> Result<()> {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.previous.is_some() {
            return Err(PkiError::RotationInProgress);
        }
        // Keep the old CA on disk first: a crash after this leaves the old CA active and
        // also listed as previous, which loading treats as no rotation.
        write_ca(&self.dir, PREVIOUS, &s.active)?;
        let new = new_ca(&self.dir, ACTIVE)?;
        let old = std::mem::replace(&mut s.active, new);
        s.previous = Some(old);
        drop(s);
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// End a rotation: the previous CA is no longer trusted, and the serving certificate is
    /// re-issued by the active CA.
    pub fn retire(&self) -> Result<()> {
        let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
        if s.previous.is_none() {
            return Err(PkiError::NoRotation);
        }
        let retired = s.previous.take();
        if let Err(e) = issue_server(&self.dir, &self.names, &mut s) {
            s.previous = retired;
            return Err(e);
        }
        for ext in ["crt", "key"] {
            let path = self.dir.join(format!("{PREVIOUS}.{ext}"));
            std::fs::remove_file(&path).map_err(|source| PkiError::Io { path, source })?;
        }
        drop(s);
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Sign a cluster's CSR with the active CA. Only the CSR's public key is used: subject,
    /// SANs and usages are the hub's choice, so a CSR cannot ask for another identity.
    pub fn sign_cluster_csr(
        &self,
        csr_pem: &str,
        id: ClusterId,
        name: &str,
        ttl: Duration,
    ) -> Result<IssuedCert> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|_| PkiError::BadCsr)?;
        let params = client_params(&format!("{CLUSTER_URI}{id}"), name, ttl)?;
        let s = self.read();
        let cert = params.signed_by(&csr.public_key, &s.active.issuer)?;
        // Read back exactly as a peer certificate is read, so the key hashes compare.
        let peer = peer_cert(cert.der()).ok_or(PkiError::BadCsr)?;
        Ok(IssuedCert {
            pem: cert.pem(),
            not_after: peer.not_after,
            ca_fingerprint: s.active.info.fingerprint.clone(),
            key_sha256: peer.key_sha256,
        })
    }

    /// Issue an admin client certificate and its key, PEM, from the active CA.
    pub fn issue_admin(&self, name: &str, ttl: Duration) -> Result<(String, String)> {
        let key = KeyPair::generate()?;
        let params = client_params(&format!("{ADMIN_URI}{name}"), name, ttl)?;
        let s = self.read();
        Ok((
            params.signed_by(&key, &s.active.issuer)?.pem(),
            key.serialize_pem(),
        ))
    }
}

/// What a CA is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaRole {
    Active,
    Previous,
    ActiveServing,
    PreviousServing,
}

impl CaRole {
    fn serving(self) -> Self {
        match self {
            Self::Active | Self::ActiveServing => Self::ActiveServing,
            Self::Previous | Self::PreviousServing => Self::PreviousServing,
        }
    }
}

impl State {
    fn serving_ca(&self) -> &Ca {
        self.previous.as_ref().unwrap_or(&self.active)
    }
}

fn new_ca(dir: &Path, name: &str) -> Result<Ca> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let now = OffsetDateTime::now_utc();
    params.distinguished_name = dn(&format!("Flotilla hub CA {}", now.date()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - Duration::from_secs(300);
    params.not_after = now + Duration::from_secs(10 * 365 * 86400);
    let cert = params.self_signed(&key)?;
    let ca = ca_from(cert.pem(), key)?;
    write_ca(dir, name, &ca)?;
    Ok(ca)
}

fn write_ca(dir: &Path, name: &str, ca: &Ca) -> Result<()> {
    write_private(
        &dir.join(format!("{name}.key")),
        &ca.issuer.key().serialize_pem(),
    )?;
    write_private(&dir.join(format!("{name}.crt")), &ca.cert_pem)
}

fn load_ca(dir: &Path, name: &str) -> Result<Option<Ca>> {
    match (
        read(&dir.join(format!("{name}.crt")))?,
        read(&dir.join(format!("{name}.key")))?,
    ) {
        (Some(cert), Some(key)) => Ok(Some(ca_from(cert, KeyPair::from_pem(&key)?)?)),
        _ => Ok(None),
    }
}

fn ca_from(cert_pem: String, key: KeyPair) -> Result<Ca> {
    let info = cert_info(&cert_pem).ok_or(PkiError::BadCa)?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
    Ok(Ca {
        cert_pem,
        issuer,
        info,
    })
}

fn issue_server(dir: &Path, names: &[String], state: &mut State) -> Result<()> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = dn("flotilla-hub");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = OffsetDateTime::now_utc() - Duration::from_secs(300);
    params.not_after = OffsetDateTime::now_utc() + Duration::from_secs(365 * 86400);
    let cert = params.signed_by(&key, &state.serving_ca().issuer)?;
    write_private(&dir.join("server.key"), &key.serialize_pem())?;
    write_private(&dir.join("server.crt"), &cert.pem())?;
    write_private(&dir.join("server.names"), &names.join("\n"))?;
    state.server_cert_pem = cert.pem();
    state.server_key_pem = key.serialize_pem();
    Ok(())
}

/// Fingerprint, subject and validity of a PEM certificate.
pub fn cert_info(pem: &str) -> Option<CaInfo> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(CaInfo {
        fingerprint: hex::encode(sha2::Sha256::digest(&pem.contents)),
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Whether `cert_pem` names `ca` as its issuer (by subject; our CAs have distinct subjects).
fn issued_by(cert_pem: &str, ca: &Ca) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return false;
    };
    pem.parse_x509()
        .map(|c| c.issuer().to_string() == ca.info.subject)
        .unwrap_or(false)
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

/// What the hub reads from a client certificate the TLS layer has already verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    pub identity: PeerIdentity,
    /// Hex SHA-256 of the certified public key (SubjectPublicKeyInfo DER).
    pub key_sha256: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// Read a verified client certificate: who it names, its key, its expiry.
pub fn peer_cert(cert_der: &[u8]) -> Option<PeerCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let identity = san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => {
            if let Some(id) = uri.strip_prefix(CLUSTER_URI) {
                id.parse().ok().map(|u| PeerIdentity::Cluster(ClusterId(u)))
            } else {
                uri.strip_prefix(ADMIN_URI)
                    .map(|n| PeerIdentity::Admin(n.to_string()))
            }
        }
        _ => None,
    })?;
    Some(PeerCert {
        identity,
        key_sha256: hex::encode(sha2::Sha256::digest(cert.public_key().raw)),
        not_after: cert.validity().not_after.timestamp(),
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
        let issued = pki
            .sign_cluster_csr(&csr, id, "east", Duration::from_secs(60))
            .unwrap();
        let (_, parsed) = x509_parser::pem::parse_x509_pem(issued.pem.as_bytes()).unwrap();
        let peer = peer_cert(&parsed.contents).unwrap();
        assert_eq!(peer.identity, PeerIdentity::Cluster(id));
        assert_eq!(
            peer.key_sha256, issued.key_sha256,
            "the CSR's key is certified"
        );
        assert_eq!(peer.not_after, issued.not_after);
        assert_eq!(issued.ca_fingerprint, pki.active_fingerprint());
        assert!(matches!(
            pki.sign_cluster_csr("junk", id, "x", Duration::from_secs(1)),
            Err(PkiError::BadCsr)
        ));
    }

    #[test]
    fn rotation_keeps_both_cas_until_retired_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        let old = pki.active_fingerprint();
        let serving_before = pki.server_identity();
        let mut changes = pki.subscribe();
        assert!(matches!(pki.retire(), Err(PkiError::NoRotation)));

        pki.rotate().unwrap();
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert!(matches!(pki.rotate(), Err(PkiError::RotationInProgress)));
        let new = pki.active_fingerprint();
        assert_ne!(old, new);
        assert_eq!(pki.ca_pem().matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(
            pki.server_identity(),
            serving_before,
            "agents that know only the old CA can still reach the hub"
        );
        let roles: Vec<CaRole> = pki.cas().into_iter().map(|(_, r)| r).collect();
        assert_eq!(roles, [CaRole::Active, CaRole::PreviousServing]);

        let reloaded = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(reloaded.active_fingerprint(), new);
        assert_eq!(reloaded.ca_pem(), pki.ca_pem());
        assert_eq!(reloaded.server_identity(), serving_before);

        pki.retire().unwrap();
        assert!(changes.has_changed().unwrap());
        assert_eq!(pki.ca_pem().matches("BEGIN CERTIFICATE").count(), 1);
        assert_ne!(pki.server_identity(), serving_before);
        assert_eq!(
            pki.cas().into_iter().map(|(_, r)| r).collect::<Vec<_>>(),
            [CaRole::ActiveServing]
        );
        let reloaded = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(reloaded.ca_pem(), pki.ca_pem());
        assert_eq!(reloaded.server_identity(), pki.server_identity());
    }
}
