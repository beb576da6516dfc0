//! The fleet index: the hub's in-memory picture of who exists, who is connected, which
//! bundles each cluster should run and what each agent last reported.
//!
//! It is the one place that joins clusters, targeting (GitRepo targets and environments,
//! cluster groups, fleet.yaml customizations and dependsOn), bundles and status. Every change
//! is applied incrementally:
//! - a new bundle revision touches the clusters placed in that GitRepo environment
//!   (`members`), nothing else;
//! - a cluster's labels changing recomputes that one cluster;
//! - a cluster group's selector changing recomputes the clusters whose membership changed;
//! - a GitRepo's targets changing recomputes that GitRepo's bundles on each cluster;
//! - a status report touches one deployment (and the deployments waiting on it).
//!
//! Nothing rescans clusters x bundles after start-up. Desired content is an
//! `Arc<BundleContent>` shared by every cluster that gets it.
//!
//! Agent streams do not poll: each cluster has a `Notify` that fires when its desired set
//! changes, and its stream task then sends the difference.
//!
//! Durable facts go to the store on change (registration, bundle builds, status changes);
//! connection state and last-seen times are memory only, so heartbeats never write.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::model::{
    Bundle, BundleContent, BundleId, Cluster, ClusterCertificate, ClusterId, DeploymentState,
    GitRepoSpec, ReportedStatus, unix_now,
};
use crate::rollup::{Rollups, Transition, Update};
use crate::store::{Store, StoreError};
use crate::target::{ClusterFacts, ClusterGroup, first_match};

/// A cluster's live connection state.
#[derive(Clone, Debug, Default)]
pub struct Presence {
    pub connected: bool,
    pub last_seen: i64,
}

struct ClusterEntry {
    cluster: Cluster,
    presence: Presence,
    /// Fired when this cluster's desired deployments change.
    changed: Arc<Notify>,
    /// Bundles whose desired content changed since the stream last looked, so a commit
    /// costs each stream the bundles it changed, not all the cluster runs.
    pending: HashSet<BundleId>,
    /// The live stream's session, cancelled when a newer stream replaces it.
    session: Option<(u64, CancellationToken)>,
}

/// The last status reported for each deployment, per cluster (lookups need no owned key).
#[derive(Default)]
struct Statuses(HashMap<ClusterId, HashMap<BundleId, ReportedStatus>>);

impl Statuses {
    fn get(&self, cluster: ClusterId, bundle: &BundleId) -> Option<&ReportedStatus> {
        self.0.get(&cluster)?.get(bundle)
    }

    fn insert(&mut self, cluster: ClusterId, bundle: BundleId, status: ReportedStatus) {
        self.0.entry(cluster).or_default().insert(bundle, status);
    }

    fn remove(&mut self, cluster: ClusterId, bundle: &BundleId) -> Option<ReportedStatus> {
        let of_cluster = self.0.get_mut(&cluster)?;
        let removed = of_cluster.remove(bundle);
        if of_cluster.is_empty() {
            self.0.remove(&cluster);
        }
        removed
    }
}

/// A GitRepo environment: (GitRepo name, environment name; "" when it has none).
type EnvKey = (String, String);

/// What one cluster gets for one bundle.
#[derive(Clone, Debug)]
struct Placed {
    repo: String,
    env: String,
    /// The content to run; None while the variant this cluster gets never built.
    content: Option<Arc<BundleContent>>,
    /// Why the newest revision of this cluster's variant could not be built or rendered.
    error: Option<String>,
    /// Why the deployment is held back (a dependency not Ready yet); not sent while set.
    held: Option<String>,
}

impl Placed {
    /// The content an agent should run, if any may be sent.
    fn sendable(&self) -> Option<&Arc<BundleContent>> {
        self.content.as_ref().filter(|_| self.held.is_none())
    }
}

struct State {
    clusters: HashMap<ClusterId, ClusterEntry>,
    names: HashMap<String, ClusterId>,
    /// The targeting half of each GitRepo.
    repos: BTreeMap<String, GitRepoSpec>,
    groups: BTreeMap<String, ClusterGroup>,
    /// Each GitRepo environment's bundles.
    bundles: BTreeMap<EnvKey, BTreeMap<BundleId, Bundle>>,
    /// The clusters placed in each GitRepo environment: who a new revision reaches.
    members: HashMap<EnvKey, BTreeSet<ClusterId>>,
    /// What each cluster should run.
    desired: HashMap<ClusterId, BTreeMap<BundleId, Placed>>,
    status: Statuses,
    rollups: Rollups,
    /// Deployments sent a new content and not yet Ready with it: the content hash and since
    /// when (the commit's fetch). Holds only what is in flight.
    in_flight: HashMap<ClusterId, HashMap<BundleId, (Arc<BundleContent>, Instant)>>,
    /// Seconds from commit to Ready, not yet taken by [`Fleet::take_ready_latencies`].
    ready_latencies: Vec<f64>,
    /// While a commit is being placed: when it was first seen.
    origin: Option<Instant>,
    /// Bumped on every change a status view may show.
    changed: tokio::sync::watch::Sender<u64>,
    next_session: u64,
}

/// One row of the fleet status view.
#[derive(Clone, Debug)]
pub struct DeploymentView {
    pub cluster: ClusterId,
    pub cluster_name: String,
    pub bundle: BundleId,
    /// The GitRepo environment the cluster is in for this bundle ("" when none).
    pub environment: String,
    pub desired_revision: String,
    pub reported: Option<ReportedStatus>,
    pub state: DeploymentState,
    pub message: String,
}

/// What `delete_cluster` removed.
#[derive(Clone, Debug)]
pub struct DeletedCluster {
    pub cluster: Cluster,
    pub was_connected: bool,
    pub deployments: usize,
}

/// A cluster with its presence.
#[derive(Clone, Debug)]
pub struct ClusterView {
    pub cluster: Cluster,
    pub presence: Presence,
}

/// The shared fleet index. Cheap to share behind an `Arc`.
pub struct Fleet {
    state: RwLock<State>,
    store: Store,
}

/// A connected agent stream's registration with the index; dropping it marks the cluster
/// disconnected unless a newer stream has taken over.
pub struct Session {
    fleet: Arc<Fleet>,
    cluster: ClusterId,
    id: u64,
    /// Cancelled when a newer stream for the same cluster arrives, or the cluster is deleted.
    pub cancelled: CancellationToken,
    /// Fires when the cluster's desired deployments change.
    pub changed: Arc<Notify>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut st = self.fleet.state.write().expect("fleet lock");
        if let Some(entry) = st.clusters.get_mut(&self.cluster)
            && entry.session.as_ref().is_some_and(|(id, _)| *id == self.id)
        {
            entry.session = None;
            entry.presence.connected = false;
            entry.presence.last_seen = unix_now();
            st.changed.send_modify(|v| *v += 1);
        }
    }
}

impl Fleet {
    /// Load the index from the store: the one full pass, at start-up.
    pub fn load(store: Store) -> Result<Arc<Self>, StoreError> {
        let mut st = State {
            clusters: HashMap::new(),
            names: HashMap::new(),
            repos: BTreeMap::new(),
            groups: BTreeMap::new(),
            bundles: BTreeMap::new(),
            members: HashMap::new(),
            desired: HashMap::new(),
            status: Statuses::default(),
            rollups: Rollups::default(),
            in_flight: HashMap::new(),
            ready_latencies: Vec::new(),
            origin: None,
            changed: tokio::sync::watch::Sender::new(0),
            next_session: 0,
        };
        for r in store.repos()? {
            st.repos.insert(r.spec.name.clone(), r.spec);
        }
        for g in store.groups()? {
            st.groups.insert(g.name.clone(), g);
        }
        for b in store.bundles()? {
            st.bundles
                .entry((b.repo.clone(), b.env.clone()))
                .or_default()
                .insert(b.id.clone(), b);
        }
        // Statuses first: dependsOn decides from them what may be sent.
        for (cluster, bundle, s) in store.statuses()? {
            st.status.insert(cluster, bundle, s);
        }
        for c in store.clusters()? {
            insert_cluster(&mut st, c);
        }
        Ok(Arc::new(Self {
            state: RwLock::new(st),
            store,
        }))
    }

    /// The store behind the index.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A cluster by id.
    pub fn cluster(&self, id: ClusterId) -> Option<Cluster> {
        self.read().clusters.get(&id).map(|e| e.cluster.clone())
    }

    /// How many clusters are registered.
    pub fn cluster_count(&self) -> usize {
        self.read().clusters.len()
    }

    /// The id of the cluster called `name`.
    pub fn cluster_by_name(&self, name: &str) -> Option<ClusterId> {
        self.read().names.get(name).copied()
    }

    /// Record a newly registered cluster and compute what it should run.
    /// Returns false, changing nothing, when another cluster already has its name.
    pub fn add_cluster(&self, cluster: Cluster) -> Result<bool, StoreError> {
        let mut st = self.write();
        if st.names.contains_key(&cluster.name) {
            return Ok(false);
        }
        self.store.put_cluster(&cluster)?;
        insert_cluster(&mut st, cluster);
        st.changed.send_modify(|v| *v += 1);
        Ok(true)
    }

    /// Update what an agent says about its cluster (versions); stored only when it changed.
    pub fn update_cluster_info(
        &self,
        id: ClusterId,
        agent_version: &str,
        kubernetes_version: &str,
    ) -> Result<(), StoreError> {
        let updated = {
            let mut st = self.write();
            let Some(entry) = st.clusters.get_mut(&id) else {
                return Ok(());
            };
            let c = &mut entry.cluster;
            if c.agent_version == agent_version && c.kubernetes_version == kubernetes_version {
                return Ok(());
            }
            c.agent_version = agent_version.to_string();
            c.kubernetes_version = kubernetes_version.to_string();
            c.clone()
        };
        self.store.put_cluster(&updated)
    }

    /// Record a certificate issued to `id` (registration again, or renewal).
    pub fn set_certificate(
        &self,
        id: ClusterId,
        certificate: ClusterCertificate,
    ) -> Result<bool, StoreError> {
        let updated = {
            let mut st = self.write();
            let Some(entry) = st.clusters.get_mut(&id) else {
                return Ok(false);
            };
            entry.cluster.certificate = certificate;
            entry.cluster.clone()
        };
        self.store.put_cluster(&updated)?;
        Ok(true)
    }

    /// Delete a cluster: forget it, its deployments and their status, and end its stream.
    /// Returns the cluster, whether it was connected, and how many deployments it had.
    pub fn delete_cluster(&self, id: ClusterId) -> Result<Option<DeletedCluster>, StoreError> {
        let mut st = self.write();
        let Some(entry) = st.clusters.get(&id) else {
            return Ok(None);
        };
        // The store first: if it fails, nothing changed.
        let desired: Vec<BundleId> = st
            .desired
            .get(&id)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        for bundle in &desired {
            self.store.delete_status(id, bundle)?;
        }
        self.store.delete_cluster(id)?;
        let was_connected = entry.presence.connected;
        let entry = st.clusters.remove(&id).expect("checked above");
        st.names.remove(&entry.cluster.name);
        st.desired.remove(&id);
        st.in_flight.remove(&id);
        for members in st.members.values_mut() {
            members.remove(&id);
        }
        for bundle in &desired {
            st.status.remove(id, bundle);
            st.rollups.set(id, bundle, None, unix_now(), false);
        }
        st.changed.send_modify(|v| *v += 1);
        if let Some((_, session)) = &entry.session {
            session.cancel();
        }
        Ok(Some(DeletedCluster {
            cluster: entry.cluster,
            was_connected,
            deployments: desired.len(),
        }))
    }

    /// Replace the labels of cluster `name` (the admin's, `cluster label`). Only this cluster
    /// is re-targeted. Returns the updated cluster, or None if there is no such cluster.
    pub fn set_cluster_labels(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Option<Cluster>, StoreError> {
        let mut st = self.write();
        let Some(id) = st.names.get(name).copied() else {
            return Ok(None);
        };
        let entry = st.clusters.get_mut(&id).expect("names and clusters agree");
        if entry.cluster.labels == labels {
            return Ok(Some(entry.cluster.clone()));
        }
        let mut updated = entry.cluster.clone();
        updated.labels = labels;
        self.store.put_cluster(&updated)?;
        entry.cluster = updated.clone();
        replace_cluster(&mut st, &self.store, id)?;
        Ok(Some(updated))
    }

    /// Create or replace a cluster group. Only clusters whose membership changed are
    /// re-targeted (all clusters are checked against the two selectors, nothing more).
    pub fn set_group(&self, group: ClusterGroup) -> Result<bool, StoreError> {
        let mut st = self.write();
        let old = st.groups.get(&group.name).cloned();
        if old.as_ref() == Some(&group) {
            return Ok(false);
        }
        self.store.put_group(&group)?;
        st.groups.insert(group.name.clone(), group.clone());
        regroup(&mut st, &self.store, old.as_ref(), Some(&group))?;
        Ok(true)
    }

    /// Delete a cluster group; returns false when there was none.
    pub fn delete_group(&self, name: &str) -> Result<bool, StoreError> {
        let mut st = self.write();
        let Some(old) = st.groups.get(name).cloned() else {
            return Ok(false);
        };
        self.store.delete_group(name)?;
        st.groups.remove(name);
        regroup(&mut st, &self.store, Some(&old), None)?;
        Ok(true)
    }

    /// Every cluster group, by name, with its member count.
    pub fn groups(&self) -> Vec<(ClusterGroup, usize)> {
        let st = self.read();
        st.groups
            .values()
            .map(|g| {
                let n = st
                    .clusters
                    .values()
                    .filter(|e| g.contains(&e.cluster.labels))
                    .count();
                (g.clone(), n)
            })
            .collect()
    }

    /// Create or replace the targeting of GitRepo `spec.name` (targets, environments).
    /// Re-targets this GitRepo's bundles on every cluster; other GitRepos are not touched.
    /// Bundles of environments the spec no longer has are dropped.
    pub fn set_repo(&self, spec: GitRepoSpec) -> Result<(), StoreError> {
        let mut st = self.write();
        let name = spec.name.clone();
        let envs: BTreeSet<String> = spec
            .effective_environments()
            .into_iter()
            .map(|e| e.name)
            .collect();
        let unchanged = st.repos.get(&name).is_some_and(|old| {
            old.targets == spec.targets && old.environments == spec.environments
        });
        st.repos.insert(name.clone(), spec);
        let stale: Vec<EnvKey> = st
            .bundles
            .keys()
            .filter(|(r, e)| *r == name && !envs.contains(e))
            .cloned()
            .collect();
        for key in &stale {
            for b in st.bundles.remove(key).unwrap_or_default().values() {
                self.store.delete_bundle(b)?;
            }
        }
        if unchanged && stale.is_empty() {
            return Ok(());
        }
        let ids: Vec<ClusterId> = st.clusters.keys().copied().collect();
        for id in ids {
            replace_repo_on(&mut st, &self.store, id, &name)?;
        }
        Ok(())
    }

    /// Forget GitRepo `name`: its bundles leave every cluster (pruned by the agents).
    pub fn remove_repo(&self, name: &str) -> Result<bool, StoreError> {
        let mut st = self.write();
        if st.repos.remove(name).is_none() {
            return Ok(false);
        }
        let keys: Vec<EnvKey> = st
            .bundles
            .keys()
            .filter(|(r, _)| r == name)
            .cloned()
            .collect();
        for key in keys {
            for b in st.bundles.remove(&key).unwrap_or_default().values() {
                self.store.delete_bundle(b)?;
            }
            st.members.remove(&key);
        }
        let ids: Vec<ClusterId> = st.clusters.keys().copied().collect();
        for id in ids {
            replace_repo_on(&mut st, &self.store, id, name)?;
        }
        Ok(true)
    }

    /// Register a live stream for `cluster`, replacing (cancelling) an older one.
    pub fn connect(self: &Arc<Self>, cluster: ClusterId) -> Option<Session> {
        let mut st = self.write();
        st.next_session += 1;
        let id = st.next_session;
        let entry = st.clusters.get_mut(&cluster)?;
        let token = CancellationToken::new();
        if let Some((_, old)) = entry.session.replace((id, token.clone())) {
            old.cancel();
        }
        entry.presence = Presence {
            connected: true,
            last_seen: unix_now(),
        };
        let changed = entry.changed.clone();
        // Presence is on the status views.
        st.changed.send_modify(|v| *v += 1);
        Some(Session {
            fleet: self.clone(),
            cluster,
            id,
            cancelled: token,
            changed,
        })
    }

    /// Note that the agent of `cluster` was heard from. Memory only.
    pub fn seen(&self, cluster: ClusterId) {
        if let Some(e) = self.write().clusters.get_mut(&cluster) {
            e.presence.last_seen = unix_now();
        }
    }

    /// What `cluster` should run now.
    pub fn desired(&self, cluster: ClusterId) -> Vec<(BundleId, Arc<BundleContent>)> {
        desired_of(&self.read(), cluster)
    }

    /// Everything `cluster` should run, forgetting pending changes: a stream's full sync.
    pub fn full_sync(&self, cluster: ClusterId) -> Vec<(BundleId, Arc<BundleContent>)> {
        let mut st = self.write();
        if let Some(e) = st.clusters.get_mut(&cluster) {
            e.pending.clear();
        }
        desired_of(&st, cluster)
    }

    /// The bundles of `cluster` that changed since the last call (or full sync), each with
    /// its desired content, or None when the cluster should no longer run it. A bundle that
    /// is held back or has never built is left out: the agent keeps what it has.
    /// Only the cluster's current stream may take them: a replaced one gets nothing.
    pub fn take_changes(&self, session: &Session) -> Vec<(BundleId, Option<Arc<BundleContent>>)> {
        let cluster = session.cluster;
        let mut st = self.write();
        let Some(e) = st.clusters.get_mut(&cluster) else {
            return Vec::new();
        };
        if e.session.as_ref().map(|(id, _)| *id) != Some(session.id) {
            return Vec::new();
        }
        let pending = std::mem::take(&mut e.pending);
        let desired = st.desired.get(&cluster);
        pending
            .into_iter()
            .filter_map(|b| match desired.and_then(|d| d.get(&b)) {
                None => Some((b, None)),
                Some(p) => p.sendable().map(|c| (b, Some(c.clone()))),
            })
            .collect()
    }

    /// Replace the bundles of one environment of GitRepo `repo` with `bundles` (its complete
    /// set at the environment's newest commit). Only bundles whose content changed reach
    /// the clusters, and only the clusters placed in that environment.
    pub fn set_repo_bundles(
        &self,
        repo: &str,
        env: &str,
        bundles: Vec<Bundle>,
    ) -> Result<(), StoreError> {
        self.set_repo_bundles_seen(repo, env, bundles, Instant::now())
    }

    /// [`Fleet::set_repo_bundles`] for a commit first seen at `seen` (when the fetch that
    /// found it began): commit-to-Ready latency counts from there.
    pub fn set_repo_bundles_seen(
        &self,
        repo: &str,
        env: &str,
        bundles: Vec<Bundle>,
        seen: Instant,
    ) -> Result<(), StoreError> {
        let mut st = self.write();
        st.origin = Some(seen);
        let result = self.place_repo_bundles(&mut st, repo, env, bundles);
        st.origin = None;
        result
    }

    fn place_repo_bundles(
        &self,
        st: &mut State,
        repo: &str,
        env: &str,
        bundles: Vec<Bundle>,
    ) -> Result<(), StoreError> {
        let key: EnvKey = (repo.to_string(), env.to_string());
        let old = st.bundles.get(&key).cloned().unwrap_or_default();
        let mut changed: Vec<BundleId> = Vec::new();
        for (id, b) in &old {
            if !bundles.iter().any(|n| &n.id == id) {
                self.store.delete_bundle(b)?;
                st.bundles.get_mut(&key).map(|m| m.remove(id));
                changed.push(id.clone());
            }
        }
        for mut bundle in bundles {
            let prev = old.get(&bundle.id);
            keep_revisions(prev, &mut bundle);
            if prev == Some(&bundle) {
                continue;
            }
            self.store.put_bundle(&bundle)?;
            let targeting_changed = prev.is_none_or(|p| {
                p.content.as_ref().map(|c| &c.content_hash)
                    != bundle.content.as_ref().map(|c| &c.content_hash)
                    || p.error != bundle.error
                    || p.customizations != bundle.customizations
                    || p.override_targets != bundle.override_targets
                    || p.depends_on != bundle.depends_on
                    || p.labels != bundle.labels
            });
            if targeting_changed {
                changed.push(bundle.id.clone());
            }
            st.bundles
                .entry(key.clone())
                .or_default()
                .insert(bundle.id.clone(), bundle);
        }
        if changed.is_empty() {
            return Ok(());
        }
        let members: Vec<ClusterId> = st
            .members
            .get(&key)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default();
        for cluster in members {
            for id in &changed {
                let placed = place_bundle(st, cluster, &key, id);
                set_placed(st, &self.store, cluster, id, placed)?;
            }
            release_waiting(st, &self.store, cluster)?;
        }
        Ok(())
    }

    /// One bundle of one environment at its current revision.
    pub fn bundle(&self, repo: &str, env: &str, id: &BundleId) -> Option<Bundle> {
        self.read()
            .bundles
            .get(&(repo.to_string(), env.to_string()))
            .and_then(|m| m.get(id))
            .cloned()
    }

    /// The bundles of every Git repository and environment.
    pub fn bundles(&self) -> Vec<Bundle> {
        self.read()
            .bundles
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Which environment of GitRepo `spec` a cluster with `name` and `labels` falls in, and
    /// which bundles of `bundles` (that environment's) it would get, with their content:
    /// the same rules as live targeting, for `preview`. None: the GitRepo does not target it.
    pub fn placement_preview(&self, spec: &GitRepoSpec, cluster: &Cluster) -> Option<String> {
        let st = self.read();
        let groups = groups_of(&st, &cluster.labels);
        let facts = ClusterFacts {
            name: &cluster.name,
            labels: &cluster.labels,
            groups: &groups,
        };
        environment_of(spec, &facts)
    }

    /// What a cluster would get of `bundle` (an environment's build, possibly not live yet).
    pub fn variant_preview(
        &self,
        spec: &GitRepoSpec,
        bundle: &Bundle,
        cluster: &Cluster,
    ) -> Result<Option<Arc<BundleContent>>, String> {
        let st = self.read();
        let groups = groups_of(&st, &cluster.labels);
        let facts = ClusterFacts {
            name: &cluster.name,
            labels: &cluster.labels,
            groups: &groups,
        };
        variant_for(spec, bundle, &facts)
            .map(|v| {
                v.and_then(|(content, error)| match (content, error) {
                    (_, Some(e)) => Some(Err(e)),
                    (Some(c), None) => Some(Ok(c)),
                    (None, None) => None,
                })
            })
            .unwrap_or(None)
            .transpose()
    }

    /// Record a status an agent reported for one of its own deployments. Reports about
    /// bundles the cluster is not meant to run are refused (returns false).
    pub fn record_status(
        &self,
        cluster: ClusterId,
        bundle: &BundleId,
        status: ReportedStatus,
    ) -> Result<bool, StoreError> {
        let mut st = self.write();
        let owned = st
            .desired
            .get(&cluster)
            .is_some_and(|d| d.contains_key(bundle));
        if !owned {
            return Ok(false);
        }
        if st
            .status
            .get(cluster, bundle)
            .is_some_and(|s| same_report(s, &status))
        {
            return Ok(true);
        }
        let became_ready = status.state == DeploymentState::Ready
            && st
                .status
                .get(cluster, bundle)
                .is_none_or(|s| s.state != DeploymentState::Ready);
        self.store.put_status(cluster, bundle, &status)?;
        if status.state == DeploymentState::Ready
            && let Some(of_cluster) = st.in_flight.get_mut(&cluster)
            && of_cluster
                .get(bundle)
                .is_some_and(|(content, _)| content.content_hash == status.content_hash)
            && let Some((_, since)) = of_cluster.remove(bundle)
        {
            st.ready_latencies.push(since.elapsed().as_secs_f64());
        }
        st.status.insert(cluster, bundle.clone(), status);
        refresh(&mut st, true, cluster, bundle);
        if became_ready {
            release_waiting(&mut st, &self.store, cluster)?;
        }
        Ok(true)
    }

    /// Commit-to-Ready latencies (seconds) observed since the last call, for the metrics.
    pub fn take_ready_latencies(&self) -> Vec<f64> {
        std::mem::take(&mut self.write().ready_latencies)
    }

    /// Clusters connected now, and deployments by state, for the metrics.
    pub fn gauges(&self) -> (usize, crate::rollup::Counts) {
        let st = self.read();
        let connected = st
            .clusters
            .values()
            .filter(|e| e.presence.connected)
            .count();
        (connected, st.rollups.counts(&crate::rollup::Scope::Fleet))
    }

    /// A deployment's last transitions, oldest first (since the hub started).
    pub fn history(&self, cluster: ClusterId, bundle: &BundleId) -> Vec<Transition> {
        self.read().rollups.history(cluster, bundle)
    }

    /// Every cluster with its presence, by name.
    pub fn clusters(&self) -> Vec<ClusterView> {
        let st = self.read();
        let mut out: Vec<_> = st
            .clusters
            .values()
            .map(|e| ClusterView {
                cluster: e.cluster.clone(),
                presence: e.presence.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.cluster.name.cmp(&b.cluster.name));
        out
    }

    /// The state of every deployment, by cluster name then bundle.
    pub fn deployments(&self) -> Vec<DeploymentView> {
        let st = self.read();
        let mut out = Vec::new();
        for (cluster, desired) in &st.desired {
            let Some(entry) = st.clusters.get(cluster) else {
                continue;
            };
            for (bundle, placed) in desired {
                let reported = st.status.get(*cluster, bundle).cloned();
                out.push(view(entry, bundle, placed, reported));
            }
        }
        out.sort_by(|a, b| (&a.cluster_name, &a.bundle).cmp(&(&b.cluster_name, &b.bundle)));
        out
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().expect("fleet lock")
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().expect("fleet lock")
    }
}

/// The groups containing a cluster with `labels`.
fn groups_of<'a>(st: &'a State, labels: &BTreeMap<String, String>) -> Vec<&'a ClusterGroup> {
    st.groups.values().filter(|g| g.contains(labels)).collect()
}

/// The environment of GitRepo `spec` a cluster falls in, or None if it is not targeted.
fn environment_of(spec: &GitRepoSpec, facts: &ClusterFacts<'_>) -> Option<String> {
    if !spec.targets.is_empty() && first_match(&spec.targets, facts).is_none() {
        return None;
    }
    if spec.environments.is_empty() {
        return Some(String::new());
    }
    spec.environments
        .iter()
        .find(|e| e.target.matches(facts))
        .map(|e| e.name.clone())
}

/// What a cluster gets of `bundle`: None when the bundle does not target it, else its
/// variant's (content, error).
#[allow(clippy::type_complexity)]
fn variant_for(
    spec: &GitRepoSpec,
    bundle: &Bundle,
    facts: &ClusterFacts<'_>,
) -> Option<Option<(Option<Arc<BundleContent>>, Option<String>)>> {
    if !bundle.override_targets.is_empty() && first_match(&bundle.override_targets, facts).is_none()
    {
        return None;
    }
    let _ = spec;
    let targets: Vec<_> = bundle
        .customizations
        .iter()
        .map(|c| c.target.clone())
        .collect();
    match first_match(&targets, facts) {
        Some(i) => {
            let c = &bundle.customizations[i];
            if c.do_not_deploy {
                return None;
            }
            Some(Some((c.content.clone(), c.error.clone())))
        }
        None => Some(Some((bundle.content.clone(), bundle.error.clone()))),
    }
}

/// Compute what `cluster` gets of bundle `id` of environment `key`, dependsOn included.
fn place_bundle(st: &State, cluster: ClusterId, key: &EnvKey, id: &BundleId) -> Option<Placed> {
    let entry = st.clusters.get(&cluster)?;
    let spec = st.repos.get(&key.0)?;
    let bundle = st.bundles.get(key)?.get(id)?;
    let groups = groups_of(st, &entry.cluster.labels);
    let facts = ClusterFacts {
        name: &entry.cluster.name,
        labels: &entry.cluster.labels,
        groups: &groups,
    };
    let (content, error) = variant_for(spec, bundle, &facts)??;
    let mut placed = Placed {
        repo: key.0.clone(),
        env: key.1.clone(),
        content,
        error,
        held: None,
    };
    // A deployment already released stays released: a dependency turning NotReady later
    // does not take running workloads away.
    let released = st
        .desired
        .get(&cluster)
        .and_then(|d| d.get(id))
        .is_some_and(|p| p.held.is_none() && p.content.is_some());
    if !released {
        placed.held = waiting_for(st, cluster, key, bundle);
    }
    Some(placed)
}

/// Why `bundle` must wait on `cluster`: the first dependency not Ready there.
fn waiting_for(st: &State, cluster: ClusterId, key: &EnvKey, bundle: &Bundle) -> Option<String> {
    let desired = st.desired.get(&cluster);
    for dep in &bundle.depends_on {
        let label = dep
            .name
            .clone()
            .unwrap_or_else(|| "bundles matching the selector".to_string());
        // Candidates: every bundle this cluster gets (dependencies may live in another GitRepo).
        let matches: Vec<&BundleId> = desired
            .map(|d| {
                d.iter()
                    .filter(|(id, p)| {
                        *id != &bundle.id
                            && st
                                .bundles
                                .get(&(p.repo.clone(), p.env.clone()))
                                .and_then(|m| m.get(*id))
                                .is_some_and(|b| b.is_named_by(dep, &key.0))
                    })
                    .map(|(id, _)| id)
                    .collect()
            })
            .unwrap_or_default();
        if matches.is_empty() {
            return Some(format!(
                "waiting for dependency {label}, which is not deployed to this cluster"
            ));
        }
        for id in matches {
            let ready = desired
                .and_then(|d| d.get(id))
                .and_then(|p| p.sendable())
                .is_some_and(|c| {
                    st.status.get(cluster, id).is_some_and(|s| {
                        s.state == DeploymentState::Ready && s.content_hash == c.content_hash
                    })
                });
            if !ready {
                return Some(format!("waiting for dependency {id} to be Ready"));
            }
        }
    }
    None
}

/// Set what `cluster` gets of bundle `id`, telling its stream when that changes.
fn set_placed(
    st: &mut State,
    store: &Store,
    cluster: ClusterId,
    id: &BundleId,
    placed: Option<Placed>,
) -> Result<(), StoreError> {
    let desired = st.desired.entry(cluster).or_default();
    let gone = placed.is_none();
    // Replaced in place: no new key, no hash strings copied (this runs per deployment of
    // every commit).
    let old = match placed {
        Some(p) => match desired.get_mut(id) {
            Some(slot) => Some(std::mem::replace(slot, p)),
            None => {
                desired.insert(id.clone(), p);
                None
            }
        },
        None => desired.remove(id),
    };
    let before: Option<Arc<BundleContent>> = old.as_ref().and_then(|p| p.sendable().cloned());
    let after: Option<Arc<BundleContent>> = desired.get(id).and_then(|p| p.sendable().cloned());
    let before_sent = before.as_ref().map(|c| &c.content_hash);
    let after_sent = after.as_ref().map(|c| &c.content_hash);
    if gone && st.status.remove(cluster, id).is_some() {
        store.delete_status(cluster, id)?;
    }
    match &after {
        Some(content) if before_sent != after_sent => {
            let since = st.origin.unwrap_or_else(Instant::now);
            let of_cluster = st.in_flight.entry(cluster).or_default();
            match of_cluster.get_mut(id) {
                Some(slot) => *slot = (content.clone(), since),
                None => {
                    of_cluster.insert(id.clone(), (content.clone(), since));
                }
            }
        }
        Some(_) => {}
        None => {
            if let Some(of_cluster) = st.in_flight.get_mut(&cluster) {
                of_cluster.remove(id);
            }
        }
    }
    if before_sent != after_sent
        && let Some(entry) = st.clusters.get_mut(&cluster)
    {
        // A held deployment the agent never got needs no removal; one it had does.
        if after_sent.is_some() || before_sent.is_some() || gone {
            entry.pending.insert(id.clone());
            entry.changed.notify_one();
        }
    }
    refresh(st, true, cluster, id);
    Ok(())
}

/// Release the deployments of `cluster` whose dependencies have become Ready.
fn release_waiting(st: &mut State, store: &Store, cluster: ClusterId) -> Result<(), StoreError> {
    // Each pass may release a bundle that others wait on; dependency chains are short.
    for _ in 0..8 {
        let waiting: Vec<(BundleId, EnvKey)> = st
            .desired
            .get(&cluster)
            .map(|d| {
                d.iter()
                    .filter(|(_, p)| p.held.is_some())
                    .map(|(id, p)| (id.clone(), (p.repo.clone(), p.env.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let mut released = false;
        for (id, key) in waiting {
            let placed = place_bundle(st, cluster, &key, &id);
            released |= placed.as_ref().is_some_and(|p| p.held.is_none());
            set_placed(st, store, cluster, &id, placed)?;
        }
        if !released {
            break;
        }
    }
    Ok(())
}

/// Recompute GitRepo `repo`'s bundles on `cluster`: its environment, membership and each
/// bundle's variant.
fn replace_repo_on(
    st: &mut State,
    store: &Store,
    cluster: ClusterId,
    repo: &str,
) -> Result<(), StoreError> {
    let Some(entry) = st.clusters.get(&cluster) else {
        return Ok(());
    };
    let env = st.repos.get(repo).and_then(|spec| {
        let groups = groups_of(st, &entry.cluster.labels);
        let facts = ClusterFacts {
            name: &entry.cluster.name,
            labels: &entry.cluster.labels,
            groups: &groups,
        };
        environment_of(spec, &facts)
    });
    for (key, members) in st.members.iter_mut() {
        if key.0 == repo && Some(&key.1) != env.as_ref() {
            members.remove(&cluster);
        }
    }
    let key = env.map(|e| (repo.to_string(), e));
    if let Some(key) = &key {
        st.members.entry(key.clone()).or_default().insert(cluster);
    }
    let mut ids: BTreeSet<BundleId> = st
        .desired
        .get(&cluster)
        .map(|d| {
            d.iter()
                .filter(|(_, p)| p.repo == repo)
                .map(|(id, _)| id.clone())
                .collect()
        })
        .unwrap_or_default();
    if let Some(key) = &key
        && let Some(bundles) = st.bundles.get(key)
    {
        ids.extend(bundles.keys().cloned());
    }
    for id in ids {
        let placed = key.as_ref().and_then(|k| place_bundle(st, cluster, k, &id));
        // A cluster moving between environments keeps a bundle's deployment id: the agent
        // updates it in place instead of pruning and re-creating it.
        set_placed(st, store, cluster, &id, placed)?;
    }
    release_waiting(st, store, cluster)
}

/// Recompute everything `cluster` gets (its labels or groups changed).
fn replace_cluster(st: &mut State, store: &Store, cluster: ClusterId) -> Result<(), StoreError> {
    let repos: Vec<String> = st.repos.keys().cloned().collect();
    for repo in repos {
        replace_repo_on(st, store, cluster, &repo)?;
    }
    Ok(())
}

/// Re-target the clusters whose membership of a group changed from `old` to `new`.
fn regroup(
    st: &mut State,
    store: &Store,
    old: Option<&ClusterGroup>,
    new: Option<&ClusterGroup>,
) -> Result<(), StoreError> {
    let affected: Vec<ClusterId> = st
        .clusters
        .iter()
        .filter(|(_, e)| {
            let labels = &e.cluster.labels;
            old.is_some_and(|g| g.contains(labels)) != new.is_some_and(|g| g.contains(labels))
                // A group's own labels changed: members matter to clusterGroupSelector.
                || (old.map(|g| &g.labels) != new.map(|g| &g.labels)
                    && (old.is_some_and(|g| g.contains(labels))
                        || new.is_some_and(|g| g.contains(labels))))
        })
        .map(|(id, _)| *id)
        .collect();
    for id in affected {
        replace_cluster(st, store, id)?;
    }
    Ok(())
}

fn desired_of(st: &State, cluster: ClusterId) -> Vec<(BundleId, Arc<BundleContent>)> {
    st.desired
        .get(&cluster)
        .map(|d| {
            d.iter()
                .filter_map(|(b, p)| p.sendable().map(|c| (b.clone(), c.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn insert_cluster(st: &mut State, cluster: Cluster) {
    let id = cluster.id;
    st.names.insert(cluster.name.clone(), id);
    st.desired.insert(id, BTreeMap::new());
    let changed = Arc::new(Notify::new());
    changed.notify_one();
    st.clusters.insert(
        id,
        ClusterEntry {
            cluster,
            presence: Presence::default(),
            changed,
            pending: HashSet::new(),
            session: None,
        },
    );
    // Nothing is connected yet and nothing is written: placing cannot fail on the store
    // except when deleting statuses, which a new cluster has none of... unless loaded.
    let repos: Vec<String> = st.repos.keys().cloned().collect();
    for repo in repos {
        place_new(st, id, &repo);
    }
}

/// Place a cluster that has no deployments yet (start-up or registration): no store access.
fn place_new(st: &mut State, cluster: ClusterId, repo: &str) {
    let Some(entry) = st.clusters.get(&cluster) else {
        return;
    };
    let Some(spec) = st.repos.get(repo) else {
        return;
    };
    let groups = groups_of(st, &entry.cluster.labels);
    let facts = ClusterFacts {
        name: &entry.cluster.name,
        labels: &entry.cluster.labels,
        groups: &groups,
    };
    let Some(env) = environment_of(spec, &facts) else {
        return;
    };
    let key = (repo.to_string(), env);
    st.members.entry(key.clone()).or_default().insert(cluster);
    let ids: Vec<BundleId> = st
        .bundles
        .get(&key)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    // Two passes so that dependencies placed in the first count in the second.
    for _ in 0..2 {
        for id in &ids {
            if let Some(mut placed) = place_bundle(st, cluster, &key, id) {
                // At start-up a deployment whose agent reported on it was released before.
                if placed.held.is_some() && st.status.get(cluster, id).is_some() {
                    placed.held = None;
                }
                st.desired
                    .entry(cluster)
                    .or_default()
                    .insert(id.clone(), placed);
            }
        }
    }
    // Placement at start-up or registration writes nothing: no transition is persisted.
    for id in &ids {
        refresh(st, false, cluster, id);
    }
}

/// A bundle rebuilt with the same content keeps the revision it was first built at, so
/// clusters are not told to redeploy what they already run.
fn keep_revisions(prev: Option<&Bundle>, bundle: &mut Bundle) {
    let Some(prev) = prev else { return };
    let same = |a: &Option<Arc<BundleContent>>, b: &Option<Arc<BundleContent>>| {
        a.as_ref().map(|c| &c.content_hash) == b.as_ref().map(|c| &c.content_hash)
    };
    if same(&prev.content, &bundle.content) {
        bundle.content = prev.content.clone();
    }
    for c in &mut bundle.customizations {
        if let Some(p) = prev.customizations.iter().find(|p| p.name == c.name)
            && same(&p.content, &c.content)
        {
            c.content = p.content.clone();
        }
    }
}

fn same_report(a: &ReportedStatus, b: &ReportedStatus) -> bool {
    a.content_hash == b.content_hash
        && a.revision == b.revision
        && a.state == b.state
        && a.message == b.message
        && a.objects == b.objects
}

fn view(
    entry: &ClusterEntry,
    bundle: &BundleId,
    placed: &Placed,
    reported: Option<ReportedStatus>,
) -> DeploymentView {
    let (state, message) = view_state(placed, reported.as_ref());
    DeploymentView {
        cluster: entry.cluster.id,
        cluster_name: entry.cluster.name.clone(),
        bundle: bundle.clone(),
        environment: placed.env.clone(),
        desired_revision: desired_revision(placed),
        reported,
        state,
        message,
    }
}

fn desired_revision(placed: &Placed) -> String {
    placed
        .content
        .as_ref()
        .map(|c| c.revision.clone())
        .unwrap_or_default()
}

/// A deployment's state and message, from what the hub wants and what the agent reported.
fn view_state(placed: &Placed, reported: Option<&ReportedStatus>) -> (DeploymentState, String) {
    let (state, mut message) = match (&placed.content, &placed.held, reported) {
        (None, _, _) => (
            DeploymentState::Pending,
            "no revision of this bundle has been built yet".to_string(),
        ),
        (Some(_), Some(why), _) => (DeploymentState::Pending, why.clone()),
        (Some(_), None, None) => (
            DeploymentState::Pending,
            "waiting for the agent to receive it".to_string(),
        ),
        (Some(c), None, Some(r)) if r.content_hash == c.content_hash => {
            (r.state, r.message.clone())
        }
        (Some(c), None, Some(r)) => (
            DeploymentState::OutOfSync,
            format!(
                "the agent runs revision {}; revision {} is on its way",
                short(&r.revision),
                short(&c.revision)
            ),
        ),
    };
    // The newest commit could not be built for this cluster: it keeps running what it has
    // (its state says how that is), and the message says why nothing newer arrives.
    if let Some(error) = &placed.error {
        let keeps = match &placed.content {
            Some(c) => format!("; the cluster keeps revision {}", short(&c.revision)),
            None => String::new(),
        };
        message = if message.is_empty() {
            format!("cannot build the newest commit: {error}{keeps}")
        } else {
            format!("{message}; cannot build the newest commit: {error}{keeps}")
        };
    }
    (state, message)
}

/// Bring the rollups up to date for one deployment. A change of state or revision is a
/// transition, kept in its history when `record` (placement at start-up and at
/// registration replays what is already there and records nothing).
fn refresh(st: &mut State, record: bool, cluster: ClusterId, bundle: &BundleId) {
    let State {
        desired,
        status,
        rollups,
        ..
    } = st;
    let update = desired.get(&cluster).and_then(|d| d.get(bundle)).map(|p| {
        let reported = status.get(cluster, bundle);
        let (state, message) = view_state(p, reported);
        Update {
            repo: &p.repo,
            environment: &p.env,
            state,
            message,
            revision: p.content.as_ref().map_or("", |c| c.revision.as_str()),
        }
    });
    rollups.set(cluster, bundle, update, unix_now(), record);
    st.changed.send_modify(|v| *v += 1);
}

fn short(rev: &str) -> &str {
    &rev[..rev.len().min(12)]
}

mod views;

#[cfg(test)]
mod tests;
