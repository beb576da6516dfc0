//! Git sources: one task per GitRepo that fetches on its poll interval or when asked to,
//! builds the bundles whose directory changed, and hands the repository's bundles to the
//! fleet index, which passes on only what changed.
//!
//! A fetch or build failure never stops the task and never removes what is deployed: the
//! error is recorded on the GitRepo (fetch) or the bundle (build) and the previous content
//! stays in place.

pub mod git;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::bundle;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::model::{
    Bundle, BundleId, Customization, Dependency, GitRepo, GitRepoSpec, GitRepoStatus, redact_url,
    unix_now,
};
use crate::render;
use crate::store::StoreError;

/// Longest a fetch may take before it is abandoned and reported as failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest wait between attempts for a repository that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

type SyncReply = oneshot::Sender<GitRepo>;

/// A request to fetch now: from `repo sync` (which waits for the outcome) or a webhook.
type Trigger = Option<SyncReply>;

struct Poller {
    trigger: mpsc::Sender<Trigger>,
    cancel: CancellationToken,
    /// The repository as its task last saw it, including the time of the last fetch (which
    /// is not written to the store unless something else changed).
    current: Arc<Mutex<GitRepo>>,
}

/// The set of running Git pollers.
pub struct Sources {
    fleet: Arc<Fleet>,
    renderers: Arc<render::Renderers>,
    git_dir: PathBuf,
    credentials_dir: PathBuf,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    pollers: Mutex<HashMap<String, Poller>>,
    metrics: Arc<Metrics>,
}

impl Sources {
    /// Pollers keep their mirrors under `git_dir` and read the credentials GitRepos name from
    /// `credentials_dir`; they stop when `shutdown` is cancelled.
    pub fn new(
        fleet: Arc<Fleet>,
        metrics: Arc<Metrics>,
        git_dir: PathBuf,
        credentials_dir: PathBuf,
        renderers: render::Renderers,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            fleet,
            metrics,
            renderers: Arc::new(renderers),
            git_dir,
            credentials_dir,
            tasks,
            shutdown,
            pollers: Mutex::new(HashMap::new()),
        }
    }

    /// Start polling `repo`, replacing a poller of the same name, and (re)target its
    /// bundles by its spec.
    pub fn watch(&self, repo: GitRepo) -> Result<(), StoreError> {
        self.fleet.set_repo(repo.spec.clone())?;
        let (tx, rx) = mpsc::channel(16);
        let cancel = self.shutdown.child_token();
        let name = repo.spec.name.clone();
        let current = Arc::new(Mutex::new(repo.clone()));
        let poller = Poller {
            trigger: tx,
            cancel: cancel.clone(),
            current: current.clone(),
        };
        if let Some(old) = self
            .pollers
            .lock()
            .expect("pollers lock")
            .insert(name.clone(), poller)
        {
            old.cancel.cancel();
        }
        let mirror = self.git_dir.join(format!("{name}.git"));
        let task = PollTask {
            fleet: self.fleet.clone(),
            metrics: self.metrics.clone(),
            renderers: self.renderers.clone(),
            mirror,
            credentials_dir: self.credentials_dir.clone(),
            repo,
            current,
            cancel,
        };
        self.tasks
            .spawn(task.run(rx).instrument(info_span!("gitrepo", repo = %name)));
        Ok(())
    }

    /// Stop polling `name` and take its bundles off every cluster.
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        if let Some(old) = self.pollers.lock().expect("pollers lock").remove(name) {
            old.cancel.cancel();
        }
        self.fleet.store().delete_repo(name)?;
        self.fleet.remove_repo(name)
    }

    /// Every watched repository as its poller last saw it, by name.
    pub fn repos(&self) -> Vec<GitRepo> {
        let pollers = self.pollers.lock().expect("pollers lock");
        let mut out: Vec<GitRepo> = pollers
            .values()
            .map(|p| p.current.lock().expect("repo lock").clone())
            .collect();
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        out
    }

    /// Fetch `name` now and wait for the outcome. None if no such repository is watched.
    pub async fn sync_now(&self, name: &str) -> Option<GitRepo> {
        let trigger = self
            .pollers
            .lock()
            .expect("pollers lock")
            .get(name)?
            .trigger
            .clone();
        let (tx, rx) = oneshot::channel();
        trigger.send(Some(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Wake the GitRepos a push concerns: same repository, and a branch one of its
    /// environments follows, or any tag when it pins a revision. Returns their names.
    /// Never waits: a poller with a fetch already queued needs no second one.
    pub fn push(&self, event: &crate::webhook::PushEvent) -> Vec<String> {
        use crate::webhook::GitRef;
        if event.is_deletion() {
            return Vec::new();
        }
        let pollers = self.pollers.lock().expect("pollers lock");
        let mut woken = Vec::new();
        for (name, poller) in pollers.iter() {
            let spec = poller.current.lock().expect("repo lock").spec.clone();
            if !event.is_for(&spec.url) {
                continue;
            }
            let wanted = match &event.git_ref {
                GitRef::Branch(b) => spec.effective_environments().iter().any(|e| &e.branch == b),
                GitRef::Tag(_) => spec.revision.is_some(),
            };
            if wanted {
                // Full means a fetch is already queued, which will see this push too.
                let _ = poller.trigger.try_send(None);
                woken.push(name.clone());
            }
        }
        woken.sort();
        woken
    }
}

struct PollTask {
    fleet: Arc<Fleet>,
    metrics: Arc<Metrics>,
    renderers: Arc<render::Renderers>,
    mirror: PathBuf,
    credentials_dir: PathBuf,
    repo: GitRepo,
    current: Arc<Mutex<GitRepo>>,
    /// Cancelled at shutdown or when a newer spec replaces this poller; a cancelled poller
    /// writes nothing, so it cannot undo its successor's work.
    cancel: CancellationToken,
}

impl PollTask {
    async fn run(mut self, mut triggers: mpsc::Receiver<Trigger>) {
        let cancel = self.cancel.clone();
        let mut failures = 0u32;
        let mut waiting: Vec<SyncReply> = Vec::new();
        loop {
            match self.sync().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    warn!(error = %e, failures, "git sync failed");
                }
            }
            for reply in waiting.drain(..) {
                let _ = reply.send(self.repo.clone());
            }
            let interval = Duration::from_secs(u64::from(self.repo.spec.poll_interval_secs.max(1)));
            let wait = if self.repo.spec.disable_polling && failures == 0 {
                // Webhooks and `repo sync` only; a failing fetch is still retried.
                Duration::from_secs(365 * 24 * 3600)
            } else if failures == 0 {
                interval
            } else {
                (interval * 2u32.saturating_pow(failures.min(8))).min(MAX_BACKOFF)
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                trigger = triggers.recv() => match trigger {
                    Some(Some(reply)) => waiting.push(reply),
                    Some(None) => {}
                    None => return,
                },
            }
        }
    }

    /// One fetch-and-build pass over every environment. Errors are also recorded on the
    /// GitRepo.
    async fn sync(&mut self) -> Result<(), SyncError> {
        let spec = self.repo.spec.clone();
        let envs = spec.effective_environments();
        let mut branches: Vec<String> = envs.iter().map(|e| e.branch.clone()).collect();
        branches.sort();
        branches.dedup();
        let mirror = self.mirror.clone();
        let interrupt = Arc::new(AtomicBool::new(false));
        let flag = interrupt.clone();
        let tags = spec.revision.is_some();
        let (url, credentials_dir) = (spec.url.clone(), self.credentials_dir.clone());
        let started = std::time::Instant::now();
        let fetch = tokio::task::spawn_blocking(move || {
            // Read at every fetch: a rotated credential is used without a restart.
            let credentials =
                git::Credentials::for_repo(&credentials_dir, spec.credentials.as_deref())?;
            let heads = git::fetch(&mirror, &url, credentials.as_ref(), &branches, tags, &flag)?;
            let pinned = match &spec.revision {
                Some(rev) => Some(git::resolve(&mirror, rev)?),
                None => None,
            };
            Ok::<_, git::GitError>((heads, pinned))
        });
        let fetched = match tokio::time::timeout(FETCH_TIMEOUT, fetch).await {
            Ok(joined) => joined.map_err(|e| SyncError::Task(e.to_string()))?,
            Err(_) => {
                // Stops a transfer in progress; a stalled connect ends with its own timeout.
                interrupt.store(true, Ordering::Relaxed);
                Err(git::GitError::Timeout {
                    url: redact_url(&self.repo.spec.url),
                    after: FETCH_TIMEOUT,
                })
            }
        };
        self.metrics.git_fetch(
            &self.repo.spec.name,
            started.elapsed().as_secs_f64(),
            fetched.is_err(),
        );
        let (heads, pinned) = match fetched {
            Ok(c) => c,
            Err(e) => {
                self.record(None, Some(e.to_string()), None)?;
                return Err(e.into());
            }
        };
        let commits: BTreeMap<String, String> = envs
            .iter()
            .map(|e| {
                let c = pinned.clone().unwrap_or_else(|| heads[&e.branch].clone());
                (e.name.clone(), c)
            })
            .collect();
        let first = commits.values().next().cloned();
        if self.repo.status.environments == commits && self.repo.status.error.is_none() {
            self.record(first, None, Some(commits))?;
            return Ok(());
        }
        if self.repo.spec.paused {
            // Fetched, not delivered: clusters keep what they run until the GitRepo resumes.
            let message = format!(
                "paused: newest commit {} is not deployed; set `paused: false` to deliver it",
                first.as_deref().map(short).unwrap_or("?")
            );
            self.record(None, Some(message), None)?;
            return Ok(());
        }
        let mut warnings = Vec::new();
        for (env, commit) in &commits {
            match self.build(env, commit).await {
                Ok(_) if self.cancel.is_cancelled() => return Ok(()),
                Ok((bundles, w)) => {
                    warnings.extend(w);
                    self.fleet.set_repo_bundles_seen(
                        &self.repo.spec.name,
                        env,
                        bundles,
                        started,
                    )?;
                    info!(env = %env, commit = %commit, "gitrepo synced");
                }
                Err(e) => {
                    self.record(first, Some(e.to_string()), None)?;
                    return Err(e);
                }
            }
        }
        self.repo.status.warnings = warnings;
        self.record(first, None, Some(commits))?;
        Ok(())
    }

    /// Read the bundles of environment `env` at `commit`, build the ones whose inputs
    /// changed and store their manifests. Returns them with the warnings met on the way.
    async fn build(
        &self,
        env: &str,
        commit: &str,
    ) -> Result<(Vec<Bundle>, Vec<String>), SyncError> {
        let fleet = self.fleet.clone();
        let (repo, env_name) = (self.repo.spec.name.clone(), env.to_string());
        let built = build_env(
            &self.mirror,
            &self.repo.spec,
            env,
            commit,
            &self.renderers,
            move |id: &BundleId| fleet.bundle(&repo, &env_name, id),
        )
        .await?;
        for m in &built.manifests {
            self.fleet.store().put_manifest(&m.hash, &m.json)?;
        }
        Ok((built.bundles, built.warnings))
    }

    fn record(
        &mut self,
        commit: Option<String>,
        error: Option<String>,
        environments: Option<BTreeMap<String, String>>,
    ) -> Result<(), StoreError> {
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        let commit = commit.or_else(|| self.repo.status.commit.clone());
        let environments = environments.unwrap_or_else(|| self.repo.status.environments.clone());
        let changed = commit != self.repo.status.commit
            || error != self.repo.status.error
            || environments != self.repo.status.environments;
        self.repo.status = GitRepoStatus {
            commit,
            error,
            last_fetch: unix_now(),
            environments,
            warnings: std::mem::take(&mut self.repo.status.warnings),
        };
        *self.current.lock().expect("repo lock") = self.repo.clone();
        if changed {
            self.fleet.store().put_repo(&self.repo)?;
        }
        Ok(())
    }
}

fn short(rev: &str) -> &str {
    &rev[..rev.len().min(12)]
}

/// One environment's bundles built at one commit.
pub struct EnvBuild {
    pub bundles: Vec<Bundle>,
    pub warnings: Vec<String>,
    /// Manifests of the bundles built now (not of those reused), not yet stored.
    pub manifests: Vec<bundle::BuiltManifest>,
}

/// Read the bundles of `spec` at `commit` from `mirror`, and render each whose inputs changed
/// since `previous` built it (as environment `env`): once per target customization, shared
/// by every cluster that matches it.
async fn build_env(
    mirror: &std::path::Path,
    spec: &GitRepoSpec,
    env: &str,
    commit: &str,
    renderers: &render::Renderers,
    previous: impl Fn(&BundleId) -> Option<Bundle>,
) -> Result<EnvBuild, SyncError> {
    let (m, c) = (mirror.to_path_buf(), commit.to_string());
    let (_, files) = tokio::task::spawn_blocking(move || git::read_all(&m, &c))
        .await
        .map_err(|e| SyncError::Task(e.to_string()))??;
    let files = Arc::new(files);
    let mut out = EnvBuild {
        bundles: Vec::new(),
        warnings: Vec::new(),
        manifests: Vec::new(),
    };
    let repo = &spec.name;
    // Written once per commit, and only when something needs rendering.
    let mut checkout: Option<render::Checkout> = None;
    for found in render::discover(&files, &spec.paths) {
        let id = BundleId::new(repo, &found.path);
        let prev = previous(&id);
        let mut bundle = Bundle {
            id: id.clone(),
            repo: repo.clone(),
            env: env.to_string(),
            path: found.path.clone(),
            tree_id: String::new(),
            commit: commit.to_string(),
            content: prev.as_ref().and_then(|p| p.content.clone()),
            error: None,
            customizations: prev
                .as_ref()
                .map(|p| p.customizations.clone())
                .unwrap_or_default(),
            override_targets: prev
                .as_ref()
                .map(|p| p.override_targets.clone())
                .unwrap_or_default(),
            depends_on: prev
                .as_ref()
                .map(|p| p.depends_on.clone())
                .unwrap_or_default(),
            labels: prev.as_ref().map(|p| p.labels.clone()).unwrap_or_default(),
            warnings: Vec::new(),
        };
        let source = match found.result {
            Ok(s) => s,
            Err(e) => {
                warn!(bundle = %id, error = %e, "bundle cannot be read; keeping its previous revision");
                bundle.error = Some(e.to_string());
                out.bundles.push(bundle);
                continue;
            }
        };
        out.warnings
            .extend(source.warnings.iter().map(|w| format!("{id}: {w}")));
        let pinned = match &source.renderer {
            render::Renderer::Helm { chart } => chart.is_pinned(),
            _ => true,
        };
        // The GitRepo's own options go into every variant's content, so they are part of
        // what decides whether the bundle must be built again.
        let inputs = format!(
            "{}+correct-drift={}+keep-resources={}",
            source.fingerprint.0, spec.correct_drift, spec.keep_resources
        );
        if let Some(p) = prev
            .as_ref()
            .filter(|p| p.tree_id == inputs && pinned && p.error.is_none())
        {
            out.bundles.push(p.clone());
            continue;
        }
        if source.fleet.paused
            && let Some(p) = prev.as_ref()
        {
            // fleet.yaml `paused`: clusters keep what they run; the newest commit waits.
            let mut p = p.clone();
            p.warnings = vec![format!(
                "paused in fleet.yaml: commit {} is not deployed",
                short(commit)
            )];
            out.bundles.push(p);
            continue;
        }
        bundle.tree_id = inputs;
        bundle.warnings = source.warnings.clone();
        bundle.labels = source.fleet.labels.clone();
        bundle.override_targets = source.fleet.override_targets.clone().unwrap_or_default();
        bundle.depends_on = source
            .fleet
            .depends_on
            .iter()
            .map(|d| Dependency {
                name: (!d.name.is_empty()).then(|| d.name.clone()),
                selector: d.selector.clone(),
            })
            .collect();
        if checkout.is_none() {
            let (f, scratch) = (files.clone(), renderers.scratch.clone());
            let written =
                tokio::task::spawn_blocking(move || render::Checkout::write(&f, &scratch))
                    .await
                    .map_err(|e| SyncError::Task(e.to_string()))?;
            match written {
                Ok(c) => checkout = Some(c),
                Err(e) => return Err(SyncError::Render(e.to_string())),
            }
        }
        let checkout = checkout.as_ref().expect("written above");
        let release = bundle.fleet_name();
        let variant = async |customization: Option<usize>| {
            let options = source.fleet.options(customization);
            let rendered =
                render::render(renderers, checkout, &source, customization, &release).await?;
            let built = bundle::assemble(
                commit,
                &rendered.default_namespace,
                bundle::ContentOptions {
                    keep_resources: options.keep_resources || spec.keep_resources,
                    correct_drift: options.correct_drift.enabled || spec.correct_drift,
                    compare_patches: options
                        .compare_patches
                        .iter()
                        .map(|p| crate::model::ComparePatch {
                            api_version: p.api_version.clone(),
                            kind: p.kind.clone(),
                            namespace: p.namespace.clone(),
                            name: p.name.clone(),
                            json_pointers: p.json_pointers.clone(),
                            operations_json: if p.operations.is_empty() {
                                String::new()
                            } else {
                                serde_json::to_string(
                                    &p.operations
                                        .iter()
                                        .map(|o| serde_json::json!({"op": o.op, "path": o.path, "value": o.value}))
                                        .collect::<Vec<_>>(),
                                )
                                .expect("JSON values serialize")
                            },
                        })
                        .collect(),
                },
                rendered.objects,
            );
            Ok::<_, render::RenderError>(built)
        };
        match variant(None).await {
            Ok(built) => {
                out.manifests.extend(built.manifests);
                bundle.content = Some(Arc::new(built.content));
            }
            Err(e) => {
                warn!(bundle = %id, error = %e, "bundle cannot be rendered; keeping its previous revision");
                bundle.error = Some(if source.fleet.target_customizations.is_empty() {
                    e.to_string()
                } else {
                    format!("for clusters that match no targetCustomization: {e}")
                });
            }
        }
        let mut customizations = Vec::new();
        for (i, c) in source.fleet.target_customizations.iter().enumerate() {
            let old = prev
                .as_ref()
                .and_then(|p| p.customizations.iter().find(|o| o.name == c.name));
            let mut entry = Customization {
                name: c.name.clone(),
                target: c.target(),
                do_not_deploy: source.fleet.options(Some(i)).do_not_deploy,
                content: old.and_then(|o| o.content.clone()),
                error: None,
            };
            if !entry.do_not_deploy {
                match variant(Some(i)).await {
                    Ok(built) => {
                        // Equal to the default variant: share it.
                        let same = bundle
                            .content
                            .as_ref()
                            .filter(|d| d.content_hash == built.content.content_hash)
                            .cloned();
                        entry.content = Some(same.unwrap_or_else(|| {
                            out.manifests.extend(built.manifests);
                            Arc::new(built.content)
                        }));
                    }
                    Err(e) => {
                        warn!(bundle = %id, customization = %c.name, error = %e, "customization cannot be rendered; keeping its previous revision");
                        entry.error = Some(e.to_string());
                    }
                }
            }
            customizations.push(entry);
        }
        bundle.customizations = customizations;
        out.bundles.push(bundle);
    }
    Ok(out)
}

/// A GitRepo built at a revision for `preview`, nothing stored or deployed.
pub struct PreviewBuild {
    pub spec: GitRepoSpec,
    /// Environment → (commit, its build).
    pub environments: BTreeMap<String, (String, EnvBuild)>,
}

impl Sources {
    /// Build GitRepo `name` at `revision` (or each environment's branch head, fetched now)
    /// without deploying anything. The mirror is updated: it is only a cache of the remote.
    pub async fn preview(
        &self,
        name: &str,
        revision: Option<&str>,
    ) -> Result<PreviewBuild, PreviewError> {
        let spec = self
            .pollers
            .lock()
            .expect("pollers lock")
            .get(name)
            .map(|p| p.current.lock().expect("repo lock").spec.clone())
            .ok_or_else(|| PreviewError::NoRepo(name.to_string()))?;
        let envs = spec.effective_environments();
        let mut branches: Vec<String> = envs.iter().map(|e| e.branch.clone()).collect();
        branches.sort();
        branches.dedup();
        let mirror = self.git_dir.join(format!("{name}.git"));
        let pin = revision
            .map(str::to_string)
            .or_else(|| spec.revision.clone());
        let (url, m) = (spec.url.clone(), mirror.clone());
        let (credentials_dir, credential) =
            (self.credentials_dir.clone(), spec.credentials.clone());
        let fetched = tokio::time::timeout(
            FETCH_TIMEOUT,
            tokio::task::spawn_blocking(move || {
                let never = AtomicBool::new(false);
                let credentials =
                    git::Credentials::for_repo(&credentials_dir, credential.as_deref())?;
                let heads = git::fetch(&m, &url, credentials.as_ref(), &branches, true, &never)?;
                let pinned = match &pin {
                    Some(rev) => Some(git::resolve(&m, rev)?),
                    None => None,
                };
                Ok::<_, git::GitError>((heads, pinned))
            }),
        )
        .await
        .map_err(|_| PreviewError::Build(format!("fetching took longer than {FETCH_TIMEOUT:?}")))?
        .map_err(|e| PreviewError::Build(e.to_string()))?
        .map_err(|e| PreviewError::Build(e.to_string()))?;
        let (heads, pinned) = fetched;
        let mut environments = BTreeMap::new();
        for e in envs {
            let commit = pinned.clone().unwrap_or_else(|| heads[&e.branch].clone());
            let built = build_env(&mirror, &spec, &e.name, &commit, &self.renderers, |_| None)
                .await
                .map_err(|e| PreviewError::Build(e.to_string()))?;
            environments.insert(e.name, (commit, built));
        }
        Ok(PreviewBuild { spec, environments })
    }
}

/// Why a preview could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no GitRepo named {0:?}; list them with `flotilla get gitrepo`")]
    NoRepo(String),
    #[error("{0}")]
    Build(String),
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("git worker failed: {0}")]
    Task(String),
    #[error("{0}")]
    Render(String),
}
