//! `flotilla.agent.v1.Registration`: a registration token (checked, counted, audit-logged)
//! and a certificate signing request become a cluster identity.
//!
//! The agent's key never reaches the hub; the hub decides everything in the certificate
//! except its public key. Registering again with the key of a cluster's current certificate
//! re-issues for the same cluster (a lost answer, or a certificate that expired offline).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use flotilla_proto::agent::v1 as wire;
use sha2::Digest;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{Context, internal};
use crate::metrics::Refusal;
use crate::model::{
    AGENT_LABEL_PREFIX, Cluster, ClusterCertificate, ClusterId, GROUP_LABEL, RegistrationToken,
    TokenRefusal, is_dns_label, unix_now,
};

/// `flotilla.agent.v1.Registration`.
pub struct RegistrationService(pub Arc<Context>);

#[tonic::async_trait]
impl wire::registration_server::Registration for RegistrationService {
    async fn register(
        &self,
        req: Request<wire::RegisterRequest>,
    ) -> Result<Response<wire::RegisterResponse>, Status> {
        let req = req.into_inner();
        let ctx = &self.0;
        if !is_dns_label(&req.cluster_name) {
            return Err(Status::invalid_argument(format!(
                "cluster name {:?} is not a lower-case RFC 1123 label (a-z, 0-9, '-', at most 63); pass a valid --cluster-name",
                req.cluster_name
            )));
        }
        let taken = || {
            Status::already_exists(format!(
                "a cluster named {:?} is already registered; choose another --cluster-name, or delete the old cluster with `flotilla cluster delete`",
                req.cluster_name
            ))
        };
        let existing = ctx
            .fleet
            .cluster_by_name(&req.cluster_name)
            .and_then(|id| ctx.fleet.cluster(id));
        // Check the CSR before the token, so a malformed request does not spend a use.
        let id = existing.as_ref().map_or_else(ClusterId::new, |c| c.id);
        let issued = ctx
            .pki
            .sign_cluster_csr(&req.csr_pem, id, &req.cluster_name, ctx.client_cert_ttl)
            .map_err(|e| {
                Status::invalid_argument(format!("{e}; the agent must send a PEM PKCS#10 CSR"))
            })?;
        // A name that exists is only ours again with the key of its current certificate: a
        // lost answer, or an agent whose certificate expired while it was offline.
        if let Some(c) = &existing
            && !c.certificate.accepts(&issued.key_sha256)
        {
            return Err(taken());
        }
        let token = check_token(ctx, &req.token)?;
        let certificate = ClusterCertificate::default().renewed(
            issued.key_sha256.clone(),
            issued.not_after,
            issued.ca_fingerprint.clone(),
        );
        if let Some(c) = existing {
            let certificate = c.certificate.renewed(
                issued.key_sha256.clone(),
                issued.not_after,
                issued.ca_fingerprint.clone(),
            );
            if !ctx
                .fleet
                .set_certificate(id, certificate)
                .map_err(internal)?
            {
                return Err(Status::unavailable(
                    "the cluster was deleted meanwhile; register again",
                ));
            }
            ctx.metrics.certificate_issued("reregistration");
            info!(cluster = %id, name = %req.cluster_name, token = %token.id, "cluster registered again with its key");
        } else {
            let cluster = Cluster {
                id,
                name: req.cluster_name.clone(),
                labels: cluster_labels(&token, req.labels),
                registered_at: unix_now(),
                agent_version: req.agent_version,
                kubernetes_version: String::new(),
                token_id: token.id.clone(),
                certificate,
            };
            // Checked again atomically: two agents may race for one name.
            if !ctx.fleet.add_cluster(cluster).map_err(internal)? {
                return Err(taken());
            }
            ctx.metrics.clusters.set(ctx.fleet.cluster_count() as i64);
            ctx.metrics.certificate_issued("registration");
            info!(cluster = %id, name = %req.cluster_name, token = %token.id, "cluster registered");
        }
        Ok(Response::new(wire::RegisterResponse {
            cluster_id: id.to_string(),
            certificate_pem: issued.pem,
            ca_bundle_pem: ctx.pki.ca_pem(),
            cluster_name: req.cluster_name,
        }))
    }
}

/// A new cluster's labels: the token's (and its group), then what the agent says about
/// itself under its own prefix, so it cannot claim a label that targets it.
fn cluster_labels(
    token: &RegistrationToken,
    reported: HashMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = reported
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (format!("{AGENT_LABEL_PREFIX}{k}"), v))
        .collect();
    labels.extend(token.labels.clone());
    if let Some(group) = &token.group {
        labels.insert(GROUP_LABEL.to_string(), group.clone());
    }
    labels
}

/// Check a registration token and count its use. Refusals are audit-logged by token id; the
/// secret never reaches a log.
fn check_token(ctx: &Context, token: &str) -> Result<RegistrationToken, Status> {
    let refuse = |id: &str, why: TokenRefusal| {
        let reason = match why {
            TokenRefusal::Unknown => Refusal::TokenUnknown,
            TokenRefusal::Expired => Refusal::TokenExpired,
            TokenRefusal::UsedUp => Refusal::TokenUsedUp,
            TokenRefusal::Revoked => Refusal::TokenRevoked,
        };
        ctx.metrics.refused(reason);
        warn!(token = %id, reason = reason.as_str(), "registration refused");
        Status::unauthenticated(format!(
            "registration token refused: {}; create a new one with `flotilla token create` on the hub",
            why.explain()
        ))
    };
    let id = match token.split_once('.') {
        // Only a plausible id reaches the log: never a secret pasted into the wrong place.
        Some((id, _))
            if !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            id
        }
        _ => {
            ctx.metrics.refused(Refusal::TokenUnknown);
            warn!(
                token = "-",
                reason = Refusal::TokenUnknown.as_str(),
                "registration refused"
            );
            return Err(Status::unauthenticated(
                "registration token refused: it is not a Flotilla token (expected <id>.<secret>); create one with `flotilla token create` on the hub",
            ));
        }
    };
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let now = unix_now();
    let outcome = ctx.fleet.store().use_token(id, |t| {
        if !constant_time_eq(t.secret_sha256.as_bytes(), digest.as_bytes()) {
            Err(TokenRefusal::Unknown)
        } else {
            t.refusal(now).map_or(Ok(()), Err)
        }
    });
    match outcome.map_err(internal)? {
        None => Err(refuse(id, TokenRefusal::Unknown)),
        Some(Err(why)) => Err(refuse(id, why)),
        Some(Ok(t)) => Ok(t),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
