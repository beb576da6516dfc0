//! The fleet index: the hub's in-memory picture of who exists, who is connected, which
//! bundles each cluster should run and what each agent last reported.
//!
//! It is the one place that joins clusters, bundles and status. Every change is applied
//! incrementally: a new bundle revision touches the clusters that get that bundle, a new
//! cluster touches the bundles it gets, a status report touches one deployment. Nothing
//! rescans clusters x bundles after start-up. Desired content is an `Arc<BundleContent>`
//! shared by every cluster that gets it.
//!
//! Agent streams do not poll: each cluster has a `Notify` that fires when its desired set
//! changes, and its stream task then sends the difference.
//!
//! Durable facts go to the store on change (registration, bundle builds, status changes);
//! connection state and last-seen times are memory only, so heartbeats never write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::model::{
    Bundle, BundleContent, BundleId, Cluster, ClusterCertificate, ClusterId, DeploymentState,
    ReportedStatus, unix_now,
};
use crate::store::{Store, StoreError};

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

#[derive(Default)]
struct State {
    clusters: HashMap<ClusterId, ClusterEntry>,
    names: HashMap<String, ClusterId>,
    bundles: BTreeMap<BundleId, Bundle>,
    /// What each cluster should run: bundle → shared content.
    desired: HashMap<ClusterId, BTreeMap<BundleId, Arc<BundleContent>>>,
    status: HashMap<(ClusterId, BundleId), ReportedStatus>,
    next_session: u64,
}

/// One row of the fleet status view.
#[derive(Clone, Debug)]
pub struct DeploymentView {
    pub cluster: ClusterId,
    pub cluster_name: String,
    pub bundle: BundleId,
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
        }
    }
}

impl Fleet {
    /// Load the index from the store: the one full pass, at start-up.
    pub fn load(store: Store) -> Result<Arc<Self>, StoreError> {
        let mut st = State::default();
        for b in store.bundles()? {
            st.bundles.insert(b.id.clone(), b);
        }
        for c in store.clusters()? {
            insert_cluster(&mut st, c);
        }
        for (cluster, bundle, s) in store.statuses()? {
            st.status.insert((cluster, bundle), s);
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
        for bundle in &desired {
            st.status.remove(&(id, bundle.clone()));
        }
        if let Some((_, session)) = &entry.session {
            session.cancel();
        }
        Ok(Some(DeletedCluster {
            cluster: entry.cluster,
            was_connected,
            deployments: desired.len(),
        }))
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
        Some(Session {
            fleet: self.clone(),
            cluster,
            id,
            cancelled: token,
            changed: entry.changed.clone(),
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
    /// its desired content, or None when the cluster should no longer run it.
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
            .map(|b| {
                let c = desired.and_then(|d| d.get(&b).cloned());
                (b, c)
            })
            .collect()
    }

    /// Replace the bundles of Git repository `repo` with `bundles` (the repo's complete set at
    /// its newest commit). Only bundles whose content changed reach the clusters.
    pub fn set_repo_bundles(&self, repo: &str, bundles: Vec<Bundle>) -> Result<(), StoreError> {
        let mut st = self.write();
        let old: Vec<BundleId> = st
            .bundles
            .values()
            .filter(|b| b.repo == repo)
            .map(|b| b.id.clone())
            .collect();
        for id in old
            .iter()
            .filter(|id| !bundles.iter().any(|b| &b.id == *id))
        {
            self.store.delete_bundle(id)?;
            st.bundles.remove(id);
            retarget(&mut st, &self.store, id, None)?;
        }
        for mut bundle in bundles {
            let prev = st.bundles.get(&bundle.id);
            let hash = |b: &Bundle| b.content.as_ref().map(|c| c.content_hash.clone());
            let content_changed = prev.map(hash) != Some(hash(&bundle));
            if !content_changed {
                // Same content at a newer commit: keep the revision it was first built at,
                // so clusters are not told to redeploy what they already run.
                bundle.content = prev.and_then(|p| p.content.clone());
            }
            if prev == Some(&bundle) {
                continue;
            }
            self.store.put_bundle(&bundle)?;
            let (id, content) = (bundle.id.clone(), bundle.content.clone());
            st.bundles.insert(id.clone(), bundle);
            if content_changed {
                retarget(&mut st, &self.store, &id, content)?;
            }
        }
        Ok(())
    }

    /// One bundle at its current revision.
    pub fn bundle(&self, id: &BundleId) -> Option<Bundle> {
        self.read().bundles.get(id).cloned()
    }

    /// The bundles of every Git repository.
    pub fn bundles(&self) -> Vec<Bundle> {
        self.read().bundles.values().cloned().collect()
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
        let key = (cluster, bundle.clone());
        if st.status.get(&key).is_some_and(|s| same_report(s, &status)) {
            return Ok(true);
        }
        self.store.put_status(cluster, bundle, &status)?;
        st.status.insert(key, status);
        Ok(true)
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
            for (bundle, content) in desired {
                let reported = st.status.get(&(*cluster, bundle.clone())).cloned();
                out.push(view(entry, bundle, content, reported));
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

/// Whether a cluster gets a bundle. Targeting rules (labels, groups, environments) plug in
/// here; until a GitRepo can name targets, every registered cluster gets every bundle.
fn targets(_bundle: &Bundle, _cluster: &Cluster) -> bool {
    true
}

fn desired_of(st: &State, cluster: ClusterId) -> Vec<(BundleId, Arc<BundleContent>)> {
    st.desired
        .get(&cluster)
        .map(|d| d.iter().map(|(b, c)| (b.clone(), c.clone())).collect())
        .unwrap_or_default()
}

fn insert_cluster(st: &mut State, cluster: Cluster) {
    let desired: BTreeMap<_, _> = st
        .bundles
        .values()
        .filter(|b| targets(b, &cluster))
        .filter_map(|b| b.content.clone().map(|c| (b.id.clone(), c)))
        .collect();
    st.names.insert(cluster.name.clone(), cluster.id);
    st.desired.insert(cluster.id, desired);
    let changed = Arc::new(Notify::new());
    changed.notify_one();
    st.clusters.insert(
        cluster.id,
        ClusterEntry {
            cluster,
            presence: Presence::default(),
            changed,
            pending: HashSet::new(),
            session: None,
        },
    );
}

/// Point every targeted cluster at `content` for bundle `id` (None: the bundle is gone).
fn retarget(
    st: &mut State,
    store: &Store,
    id: &BundleId,
    content: Option<Arc<BundleContent>>,
) -> Result<(), StoreError> {
    let bundle = st.bundles.get(id).cloned();
    for (cluster_id, entry) in &mut st.clusters {
        let desired = st.desired.entry(*cluster_id).or_default();
        let wanted = match (&bundle, &content) {
            (Some(b), Some(c)) if targets(b, &entry.cluster) => Some(c.clone()),
            _ => None,
        };
        let before = match &wanted {
            Some(c) => desired.insert(id.clone(), c.clone()),
            None => desired.remove(id),
        };
        if before.as_ref().map(|b| &b.content_hash) != wanted.as_ref().map(|c| &c.content_hash) {
            if wanted.is_none() {
                st.status.remove(&(*cluster_id, id.clone()));
                store.delete_status(*cluster_id, id)?;
            }
            entry.pending.insert(id.clone());
            entry.changed.notify_one();
        }
    }
    Ok(())
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
    content: &BundleContent,
    reported: Option<ReportedStatus>,
) -> DeploymentView {
    let (state, message) = match &reported {
        None => (
            DeploymentState::Pending,
            "waiting for the agent to receive it".to_string(),
        ),
        Some(r) if r.content_hash == content.content_hash => (r.state, r.message.clone()),
        Some(r) => (
            DeploymentState::OutOfSync,
            format!(
                "the agent runs revision {}; revision {} is on its way",
                short(&r.revision),
                short(&content.revision)
            ),
        ),
    };
    DeploymentView {
        cluster: entry.cluster.id,
        cluster_name: entry.cluster.name.clone(),
        bundle: bundle.clone(),
        desired_revision: content.revision.clone(),
        reported,
        state,
        message,
    }
}

fn short(rev: &str) -> &str {
    &rev[..rev.len().min(12)]
}

#[cfg(test)]
mod tests;
