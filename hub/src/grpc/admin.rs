//! `flotilla.admin.v1.Admin`: what the CLI calls, authorized by the admin certificate.

use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::admin::v1 as api;
use rand::RngCore;
use sha2::Digest;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{Context, authorize_admin, convert, internal};
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
        let admin = authorize_admin(&req)?;
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
        let now = unix_now();
        let record = RegistrationToken {
            id: id.clone(),
            secret_sha256: hex::encode(sha2::Sha256::digest(token.as_bytes())),
            description: req.description,
            created_at: now,
            expires_at: now.saturating_add(ttl.as_secs() as i64),
            max_uses: req.max_uses,
            uses: 0,
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
        let admin = authorize_admin(&req)?;
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
        self.0.sources.watch(repo.clone());
        Ok(Response::new(convert::gitrepo(&repo)))
    }

    async fn list_git_repos(
        &self,
        req: Request<api::ListGitReposRequest>,
    ) -> Result<Response<api::ListGitReposResponse>, Status> {
        authorize_admin(&req)?;
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
        authorize_admin(&req)?;
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
        authorize_admin(&req)?;
        let clusters = self
            .0
            .fleet
            .clusters()
            .iter()
            .map(convert::cluster)
            .collect();
        Ok(Response::new(api::ListClustersResponse { clusters }))
    }

    async fn get_status(
        &self,
        req: Request<api::GetStatusRequest>,
    ) -> Result<Response<api::GetStatusResponse>, Status> {
        authorize_admin(&req)?;
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
        authorize_admin(&req)?;
        Ok(Response::new(api::HubInfo {
            agent_url: self.0.agent_url.clone(),
            ca_bundle_pem: self.0.pki.ca_pem().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    // ---- implemented on main: stubs so this branch compiles; drop this block when merging ----
    async fn list_tokens(
        &self,
        _req: Request<api::ListTokensRequest>,
    ) -> Result<Response<api::ListTokensResponse>, Status> {
        Err(Status::unimplemented("implemented on main"))
    }

    async fn revoke_token(
        &self,
        _req: Request<api::RevokeTokenRequest>,
    ) -> Result<Response<api::Token>, Status> {
        Err(Status::unimplemented("implemented on main"))
    }

    async fn delete_cluster(
        &self,
        _req: Request<api::DeleteClusterRequest>,
    ) -> Result<Response<api::DeleteClusterResponse>, Status> {
        Err(Status::unimplemented("implemented on main"))
    }

    async fn get_ca(
        &self,
        _req: Request<api::GetCaRequest>,
    ) -> Result<Response<api::CaStatus>, Status> {
        Err(Status::unimplemented("implemented on main"))
    }

    async fn rotate_ca(
        &self,
        _req: Request<api::RotateCaRequest>,
    ) -> Result<Response<api::CaStatus>, Status> {
        Err(Status::unimplemented("implemented on main"))
    }

    async fn retire_ca(
        &self,
        _req: Request<api::RetireCaRequest>,
    ) -> Result<Response<api::CaStatus>, Status> {
        Err(Status::unimplemented("implemented on main"))
    }
    // ---- end of: implemented on main ----
}

/// Check a GitRepo request and fill defaults; errors name the field.
fn validate_repo(r: api::AddGitRepoRequest, default_poll: Duration) -> Result<GitRepoSpec, Status> {
    let bad = |field: &str, why: String| Status::invalid_argument(format!("{field}: {why}"));
    if !is_dns_label(&r.name) {
        return Err(bad(
            "name",
            format!("{:?} must be a lower-case RFC 1123 label", r.name),
        ));
    }
    let scheme_ok = ["file://", "git://", "http://", "https://"]
        .iter()
        .any(|s| r.url.starts_with(s));
    if !scheme_ok {
        return Err(bad(
            "url",
            format!(
                "{:?} must start with file://, git://, http:// or https://",
                r.url
            ),
        ));
    }
    let mut paths = Vec::new();
    for p in r.paths {
        let p = p.trim_matches('/').to_string();
        if p.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(bad(
                "paths",
                format!("{p:?} must not contain `.` or `..` segments"),
            ));
        }
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    if paths.iter().any(String::is_empty) && paths.len() > 1 {
        return Err(bad(
            "paths",
            "the repository root cannot be combined with other paths".into(),
        ));
    }
    paths.retain(|p| !p.is_empty());
    let branch = if r.branch.is_empty() {
        "main".to_string()
    } else {
        r.branch
    };
    let poll = if r.poll_interval_seconds == 0 {
        default_poll.as_secs() as u32
    } else {
        r.poll_interval_seconds
    };
    Ok(GitRepoSpec {
        name: r.name,
        url: r.url,
        branch,
        paths,
        poll_interval_secs: poll.max(1),
    })
}
