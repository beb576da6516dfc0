//! The agent's identity on the hub: cluster id, client key and certificate, and the CAs to
//! trust for the hub. Obtained by trading a registration token for a certificate, renewed over
//! the stream before it expires, and kept in a directory or a Secret (`store`) so that
//! restarts need no token.
//!
//! *Invariant:* every private key is generated here and only ever written to the identity
//! store; the hub sees certificate signing requests.

mod store;

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData,
};

pub(crate) use store::{IdentityStore, StoreError, patiently};

use crate::error::AgentError;

/// Who this agent is to the hub.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub cluster_id: String,
    pub cluster_name: String,
    /// PKCS#8 PEM private key (ECDSA P-256).
    pub key_pem: String,
    /// The client certificate the hub signed.
    pub cert_pem: String,
    /// The CA bundle the hub said to trust for it.
    pub ca_pem: String,
    /// The hub URL the identity was obtained from.
    pub hub_url: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cluster_id", &self.cluster_id)
            .field("cluster_name", &self.cluster_name)
            .field("hub_url", &self.hub_url)
            .finish_non_exhaustive()
    }
}

/// A fresh key pair and the certificate signing request to send for it.
pub(crate) struct KeyAndCsr {
    pub key_pem: String,
    pub csr_pem: String,
}

/// Generates an ECDSA P-256 key and a CSR with `CN = cluster_name`.
pub(crate) fn new_key_and_csr(cluster_name: &str) -> Result<KeyAndCsr, AgentError> {
    let fail = |e: rcgen::Error| AgentError::Credentials(e.to_string());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem: csr_for(&key, cluster_name)?,
    })
}

/// A CSR with `CN = cluster_name` for a stored key: how an agent whose certificate expired
/// proves to the hub that it is the cluster it was.
pub(crate) fn csr_for_key(key_pem: &str, cluster_name: &str) -> Result<String, AgentError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| {
        AgentError::Credentials(format!("the stored private key is unreadable: {e}"))
    })?;
    csr_for(&key, cluster_name)
}

fn csr_for(key: &KeyPair, cluster_name: &str) -> Result<String, AgentError> {
    let fail = |e: rcgen::Error| AgentError::Credentials(e.to_string());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, cluster_name);
    params
        .serialize_request(key)
        .map_err(fail)?
        .pem()
        .map_err(fail)
}

/// What the agent reads from a certificate: when it expires, and for which public key.
pub(crate) struct CertInfo {
    pub not_after: SystemTime,
    /// The subject public key (the bit string of its SubjectPublicKeyInfo).
    pub public_key: Vec<u8>,
}

/// Parses the first certificate of a PEM text.
pub(crate) fn cert_info(cert_pem: &str) -> Result<CertInfo, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("the certificate is not X.509: {e}"))?;
    let seconds = cert.validity().not_after.timestamp();
    let not_after = match u64::try_from(seconds) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH,
    };
    Ok(CertInfo {
        not_after,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// The public key of a PEM private key, comparable with [`CertInfo::public_key`].
pub(crate) fn public_key_of(key_pem: &str) -> Result<Vec<u8>, String> {
    KeyPair::from_pem(key_pem)
        .map(|k| k.der_bytes().to_vec())
        .map_err(|e| format!("the private key is unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_names_the_cluster_and_keeps_the_key_local() {
        let made = new_key_and_csr("edge-1").unwrap();
        assert!(
            made.csr_pem
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
        );
        assert!(made.key_pem.contains("PRIVATE KEY"));
        assert!(!made.csr_pem.contains("PRIVATE KEY"));
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&made.csr_pem).unwrap();
        let cn = parsed
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .unwrap();
        assert_eq!(cn, &rcgen::DnValue::Utf8String("edge-1".into()));
    }

    #[test]
    fn a_stored_key_signs_a_csr_for_the_same_public_key() {
        let made = new_key_and_csr("edge-1").unwrap();
        let again = csr_for_key(&made.key_pem, "edge-1").unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&again).unwrap();
        assert_eq!(
            parsed.public_key.der_bytes(),
            public_key_of(&made.key_pem).unwrap()
        );
        let err = csr_for_key("not a key", "edge-1").unwrap_err().to_string();
        assert!(err.contains("stored private key"), "{err}");
    }

    #[test]
    fn cert_info_reads_expiry_and_key() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["x".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let cert = params.self_signed(&key).unwrap();
        let info = cert_info(&cert.pem()).unwrap();
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_925_078_400);
        assert_eq!(info.not_after, expected);
        assert_eq!(
            info.public_key,
            public_key_of(&key.serialize_pem()).unwrap()
        );
        assert!(cert_info("garbage").is_err());
    }
}
