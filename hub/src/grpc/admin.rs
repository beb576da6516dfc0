//! `flotilla.admin.v1.Admin`: what the CLI calls, authorized by the admin certificate.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::admin::v1 as api;
use rand::RngCore;
use sha2::Digest;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{Context, authorize_admin, convert, declarative, internal};
use crate::model::{
    GitRepo, GitRepoSpec, GitRepoStatus, RegistrationToken, is_dns_label, unix_now,
};

/// Default lifetime of a registration token.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct AdminService(pub Arc<Context>);

#[tonic::async_trait]
impl api::admin_server::Admin for AdminService {
    async fn create_token(
        &self,
        req: Request<api::CreateTokenRequest>,
    ) -> Result<Response<api::CreateTokenResponse>, Status> {
        let admin = authorize_admin(&self.0, &req)?;
        let req = req.into_inner();
        let ttl = if req.ttl_seconds == 0 {
            DEFAULT_TOKEN_TTL
        } else {
            Duration::from_secs(req.ttl_seconds)
        };
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let id = hex::encode(&bytes[..6]);
        let token = format!("{id}.{}", hex::encode(&bytes[6..]));
        let labels = validate_token_labels(req.labels)?;
        let group = match req.group.as_str() {
            "" => None,
            g if is_dns_label(g) => Some(g.to_string()),
            g => {
                return Err(Status::invalid_argument(format!(
                    "group: {g:?} must be a lower-case RFC 1123 label"
                )));
            }
        };
        let now = unix_now();
        let record = RegistrationToken {
            id: id.clone(),
            secret_sha256: hex::encode(sha2::Sha256::digest(token.as_bytes())),
            description: req.description,
            created_at: now,
            expires_at: now.saturating_add(ttl.as_secs() as i64),
            max_uses: req.max_uses,
            uses: 0,
            labels,
            group,
            revoked_at: None,
        };
        self.0.fleet.store().put_token(&record).map_err(internal)?;
        info!(admin = %admin, token = %id, expires_at = record.expires_at, "registration token created");
        Ok(Response::new(api::CreateTokenResponse {
            id,
            token,
            expires_at: record.expires_at,
        }))
    }

    async fn add_git_repo(
        &self,
        req: Request<api::AddGitRepoRequest>,
    ) -> Result<Response<api::GitRepo>, Status> {
        let admin = authorize_admin(&self.0, &req)?;
        let spec = validate_repo(req.into_inner(), self.0.default_poll_interval)?;
        let store = self.0.fleet.store();
        // The same spec keeps its status; a changed one is built afresh at the next fetch,
        // even if the commit did not move (new paths, another branch).
        let status = match store.repo(&spec.name).map_err(internal)? {
            Some(old) if old.spec == spec => GitRepoStatus {
                error: None,
                ..old.status
            },
            _ => GitRepoStatus::default(),
        };
        let repo = GitRepo { spec, status };
        store.put_repo(&repo).map_err(internal)?;
        info!(admin = %admin, repo = %repo.spec.name, url = %crate::model::redact_url(&repo.spec.url), "gitrepo added");
        self.0.sources.watch(repo.clone()).map_err(internal)?;
        Ok(Response::new(convert::gitrepo(&repo)))
    }

    async fn list_git_repos(
        &self,
        req: Request<api::ListGitReposRequest>,
    ) -> Result<Response<api::ListGitReposResponse>, Status> {
        authorize_admin(&self.0, &req)?;
        let repos = self
            .0
            .sources
            .repos()
            .iter()
            .map(convert::gitrepo)
            .collect();
        Ok(Response::new(api::ListGitReposResponse { repos }))
    }

    async fn sync_git_repo(
        &self,
        req: Request<api::SyncGitRepoRequest>,
    ) -> Result<Response<api::GitRepo>, Status> {
        authorize_admin(&self.0, &req)?;
        let name = req.into_inner().name;
        let repo = self.0.sources.sync_now(&name).await.ok_or_else(|| {
            Status::not_found(format!(
                "no GitRepo named {name:?}; list them with `flotilla repo list`"
            ))
        })?;
        Ok(Response::new(convert::gitrepo(&repo)))
    }

    async fn list_clusters(
        &self,
        req: Request<api::ListClustersRequest>,
    ) -> Result<Response<api::ListClustersResponse>, Status> {
        authorize_admin(&self.0, &req)?;
        let clusters = self
            .0
            .fleet
            .clusters()
            .iter()
            .map(convert::cluster)
            .collect();
        Ok(Response::new(api::ListClustersResponse { clusters }))
    }

    async fn list_tokens(
        &self,
        req: Request<api::ListTokensRequest>,
    ) -> Result<Response<api::ListTokensResponse>, Status> {
        authorize_admin(&self.0, &req)?;
        let mut tokens = self.0.fleet.store().tokens().map_err(internal)?;
        tokens.sort_by_key(|t| std::cmp::Reverse(t.created_at));
        Ok(Response::new(api::ListTokensResponse {
            tokens: tokens.iter().map(convert::token).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<api::RevokeTokenRequest>,
    ) -> Result<Response<api::Token>, Status> {
        let admin = authorize_admin(&self.0, &req)?;
        let id = req.into_inner().id;
        // Accept the whole token too, but only ever log and store its id.
        let id = id.split('.').next().unwrap_or_default().to_string();
        let token = self
            .0
            .fleet
            .store()
            .revoke_token(&id, unix_now())
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no registration token with id {id:?}; list them with `flotilla token list`"
                ))
            })?;
        info!(admin = %admin, token = %id, "registration token revoked");
        Ok(Response::new(convert::token(&token)))
    }

    async fn delete_cluster(
        &self,
        req: Request<api::DeleteClusterRequest>,
    ) -> Result<Response<api::DeleteClusterResponse>, Status> {
        let admin = authorize_admin(&self.0, &req)?;
        let name = req.into_inner().name;
        let fleet = &self.0.fleet;
        let not_found = || {
            Status::not_found(format!(
                "no cluster named {name:?}; list them with `flotilla cluster list`"
            ))
        };
        let id = fleet.cluster_by_name(&name).ok_or_else(not_found)?;
        let deleted = fleet
            .delete_cluster(id)
            .map_err(internal)?
            .ok_or_else(not_found)?;
        self.0.metrics.clusters.set(fleet.cluster_count() as i64);
        warn!(admin = %admin, cluster = %id, name = %name, was_connected = deleted.was_connected, "cluster deleted; its certificate is refused from now on");
        Ok(Response::new(api::DeleteClusterResponse {
            cluster: Some(convert::cluster(&crate::fleet::ClusterView {
                cluster: deleted.cluster,
                presence: Default::default(),
            })),
            was_connected: deleted.was_connected,
            deployments: deleted.deployments as u32,
        }))
    }

    async fn apply(
        &self,
        req: Request<api::ApplyRequest>,
    ) -> Result<Response<api::ApplyResponse>, Status> {
        let admin = authorize_admin(&self.0, &req)?;
        declarative::apply(&self.0, &admin, req.into_inner()).map(Response::new)
    }

    async fn get(
        &self,
        req: Request<api::GetRequest>,
    ) -> Result<Response<api::GetResponse>, Status> {
        authorize_admin(&self.0, &req)?;
        declarative::get(&self.0, req.into_inner()).map(Response::new)
    }

    async fn delete(
        &self,
        req: Request<api::DeleteRequest>,
    ) -> Result<Response<api::DeleteResponse>, Status> {
        let admin = authorize_admin(&self.0, &req)?;
        declarative::delete(&self.0, &admin, req.into_inner()).map(Response::new)
    }

    async fn label_cluster(
        &self,
        req: Request<api::LabelClusterRequest>,
    ) -> Result<Response<api::Cluster>, Status> {
        let admin = authorize_admin(&self.0, &req)?;
        declarative::label_cluster(&self.0, &admin, req.into_inner()).map(Response::new)
    }

    async fn preview(
        &self,
        req: Request<api::PreviewRequest>,
    ) -> Result<Response<api::PreviewResponse>, Status> {
        authorize_admin(&self.0, &req)?;
        super::preview::preview(&self.0, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn status_view(
        &self,
        req: Request<api::StatusViewRequest>,
    ) -> Result<Response<api::StatusViewResponse>, Status> {
        authorize_admin(&self.0, &req)?;
        let r = req.into_inner();
        let fleet = &self.0.fleet;
        let view = if !r.cluster.is_empty() {
            fleet.cluster_view(&r.cluster, r.history).ok_or_else(|| {
                Status::not_found(format!(
                    "no cluster named {:?}; list them with `flotilla cluster list`",
                    r.cluster
                ))
            })?
        } else if !r.group.is_empty() {
            fleet.group_counts(&r.group).ok_or_else(|| {
                Status::not_found(format!(
                    "no cluster group named {:?}; list them with `flotilla get clustergroups`",
                    r.group
                ))
            })?
        } else if !r.gitrepo.is_empty() {
            if !self
                .0
                .sources
                .repos()
                .iter()
                .any(|x| x.spec.name == r.gitrepo)
            {
                return Err(Status::not_found(format!(
                    "no GitRepo named {:?}; list them with `flotilla get gitrepos`",
                    r.gitrepo
                )));
            }
            fleet.gitrepo_view(&r.gitrepo)
        } else {
            fleet.summary_view()
        };
        Ok(Response::new(api::StatusViewResponse {
            json: view.to_string(),
        }))
    }

    type WatchStatusStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<api::StatusChanged, Status>> + Send + 'static>,
    >;

    async fn watch_status(
        &self,
        req: Request<api::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        authorize_admin(&self.0, &req)?;
        // The web page's coalescing stream: the current version, then at most 4 a second.
        let versions = crate::ui::versions_stream(
            self.0.fleet.subscribe(),
            self.0.shutdown.clone(),
            Duration::from_millis(250),
            None,
        );
        Ok(Response::new(Box::pin(futures::StreamExt::map(
            versions,
            |version| Ok(api::StatusChanged { version }),
        ))))
    }

    async fn get_ca(
        &self,
        req: Request<api::GetCaRequest>,
    ) -> Result<Response<api::CaStatus>, Status> {
        authorize_admin(&self.0, &req)?;
        Ok(Response::new(self.ca_status()))
    }

    async fn rotate_ca(
        &self,
        req: Request<api::RotateCaRequest>,
    ) -> Result<Response<api::CaStatus>, Status> {
        let admin = authorize_admin(&self.0, &req)?;
        self.0.pki.rotate().map_err(ca_error)?;
        self.rewrite_admin_credential()?;
        warn!(admin = %admin, active = %self.0.pki.active_fingerprint(), "CA rotation started: a new CA signs, both are trusted, agents renew");
        Ok(Response::new(self.ca_status()))
    }

    async fn retire_ca(
        &self,
        req: Request<api::RetireCaRequest>,
    ) -> Result<Response<api::CaStatus>, Status> {
        let admin = authorize_admin(&self.0, &req)?;
        let status = self.ca_status();
        if status.cas.len() < 2 {
            return Err(ca_error(crate::pki::PkiError::NoRotation));
        }
        if !req.get_ref().force && !status.clusters_on_previous.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{} cluster(s) still hold certificates from the old CA: {}; wait until their agents have renewed (connected agents do so within seconds; see `flotilla ca status`), or pass --force and register those clusters again afterwards",
                status.clusters_on_previous.len(),
                status.clusters_on_previous.join(", ")
            )));
        }
        self.0.pki.retire().map_err(ca_error)?;
        self.rewrite_admin_credential()?;
        warn!(admin = %admin, "CA rotation finished: the old CA is no longer trusted");
        Ok(Response::new(self.ca_status()))
    }

    async fn get_status(
        &self,
        req: Request<api::GetStatusRequest>,
    ) -> Result<Response<api::GetStatusResponse>, Status> {
        authorize_admin(&self.0, &req)?;
        let fleet = &self.0.fleet;
        Ok(Response::new(api::GetStatusResponse {
            clusters: fleet.clusters().iter().map(convert::cluster).collect(),
            bundles: fleet.bundles().iter().map(convert::bundle).collect(),
            deployments: fleet
                .deployments()
                .iter()
                .map(convert::deployment_status)
                .collect(),
        }))
    }

    async fn get_hub_info(
        &self,
        req: Request<api::GetHubInfoRequest>,
    ) -> Result<Response<api::HubInfo>, Status> {
        authorize_admin(&self.0, &req)?;
        Ok(Response::new(api::HubInfo {
            agent_url: self.0.agent_url.clone(),
            ca_bundle_pem: self.0.pki.ca_pem().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}

impl AdminService {
    fn ca_status(&self) -> api::CaStatus {
        let active = self.0.pki.active_fingerprint();
        let mut clusters_on_previous: Vec<String> = self
            .0
            .fleet
            .clusters()
            .into_iter()
            .filter(|c| c.cluster.certificate.ca_fingerprint != active)
            .map(|c| c.cluster.name)
            .collect();
        clusters_on_previous.sort();
        api::CaStatus {
            cas: self.0.pki.cas().iter().map(convert::ca).collect(),
            clusters_on_previous,
        }
    }

    /// The CA bundle changed: the admin credential gets it, and a certificate from the
    /// active CA.
    fn rewrite_admin_credential(&self) -> Result<(), Status> {
        crate::hub::write_admin_credential(
            &self.0.admin_credential,
            &self.0.pki,
            &self.0.admin_server_url,
        )
        .map_err(internal)
    }
}

fn ca_error(e: crate::pki::PkiError) -> Status {
    match e {
        crate::pki::PkiError::RotationInProgress | crate::pki::PkiError::NoRotation => {
            Status::failed_precondition(e.to_string())
        }
        e => internal(e),
    }
}

/// A token's labels: keys that do not claim the agent's prefix or the group label.
fn validate_token_labels(
    labels: std::collections::HashMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, Status> {
    for key in labels.keys() {
        let why = if key.is_empty() || key.len() > 253 {
            Some("a label key must have 1 to 253 characters")
        } else if key.starts_with(crate::model::AGENT_LABEL_PREFIX) {
            Some("that prefix is reserved for what agents report about themselves")
        } else if key == crate::model::GROUP_LABEL {
            Some("use --group to put clusters in a group")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Status::invalid_argument(format!("labels: {key:?}: {why}")));
        }
    }
    Ok(labels.into_iter().collect())
}

/// Check a GitRepo request and fill defaults; errors name the field as `repo add` calls it.
fn validate_repo(r: api::AddGitRepoRequest, default_poll: Duration) -> Result<GitRepoSpec, Status> {
    let poll = if r.poll_interval_seconds == 0 {
        default_poll.as_secs() as u32
    } else {
        r.poll_interval_seconds
    };
    let spec = GitRepoSpec {
        name: r.name,
        url: r.url,
        branch: if r.branch.is_empty() {
            "main".to_string()
        } else {
            r.branch
        },
        revision: None,
        paths: r.paths,
        poll_interval_secs: poll,
        disable_polling: false,
        labels: Default::default(),
        targets: Vec::new(),
        environments: Vec::new(),
        correct_drift: false,
        keep_resources: false,
        paused: false,
        credentials: None,
    };
    crate::objects::validate_repo(spec).map_err(|e| {
        let field = match e.path.as_str() {
            "metadata.name" => "name".to_string(),
            "spec.repo" => "url".to_string(),
            p if p.starts_with("spec.paths") => "paths".to_string(),
            p => p.trim_start_matches("spec.").to_string(),
        };
        Status::invalid_argument(format!("{field}: {}", e.message))
    })
}
