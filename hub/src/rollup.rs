//! Rollups: deployment counts by state per GitRepo, bundle, cluster, environment and for the
//! whole fleet, and the deployments that are not Ready with why.
//!
//! Maintained incrementally: the fleet index calls [`Rollups::set`] whenever one deployment's
//! state may have changed, and only that deployment's scopes move. Reading a rollup never
//! scans deployments. A change of state or revision is a [`Transition`], which the caller
//! keeps in the store (history is not held in memory: at 500,000 deployments it would cost
//! hundreds of MiB for something read one cluster at a time). Pure: no I/O, no locks.
//!
//! Memory: one [`Entry`] per deployment; GitRepo, environment and revision strings are
//! shared (interned), so an entry costs its key, a few pointers and its message.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{BundleId, ClusterId, DeploymentState};

/// Every state, best first (the order of [`DeploymentState`]).
pub const STATES: [DeploymentState; 8] = [
    DeploymentState::Ready,
    DeploymentState::NotReady,
    DeploymentState::WaitApplied,
    DeploymentState::Pending,
    DeploymentState::OutOfSync,
    DeploymentState::Modified,
    DeploymentState::Missing,
    DeploymentState::ErrApplied,
];

/// How many transitions are kept per deployment.
pub const HISTORY: usize = 10;

/// What a rollup counts over.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Fleet,
    GitRepo(String),
    Bundle(BundleId),
    Cluster(ClusterId),
    /// An environment name across GitRepos ("" for GitRepos without environments).
    Environment(String),
    /// One cell of the environments x bundles grid.
    Cell(String, BundleId),
}

/// Deployment counts by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts([u32; 8]);

impl Counts {
    fn index(s: DeploymentState) -> usize {
        STATES
            .iter()
            .position(|x| *x == s)
            .expect("every state is listed")
    }
    pub fn get(&self, s: DeploymentState) -> u32 {
        self.0[Self::index(s)]
    }
    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }
    /// The worst state with at least one deployment.
    pub fn worst(&self) -> Option<DeploymentState> {
        STATES.iter().rev().copied().find(|s| self.get(*s) > 0)
    }
    /// Non-zero counts by state name, best first.
    pub fn by_name(&self) -> BTreeMap<&'static str, u32> {
        STATES
            .iter()
            .filter(|s| self.get(**s) > 0)
            .map(|s| (s.as_str(), self.get(*s)))
            .collect()
    }
    fn add(&mut self, s: DeploymentState, n: i64) {
        let c = &mut self.0[Self::index(s)];
        *c = (i64::from(*c) + n).max(0) as u32;
    }
    /// Sum of two counts (a cluster group's rollup is the sum of its clusters').
    pub fn plus(mut self, other: &Counts) -> Counts {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
        self
    }
}

/// One state change of a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Unix seconds.
    pub at: i64,
    pub state: DeploymentState,
    /// The commit the hub wanted on the cluster then.
    pub revision: String,
    pub message: String,
}

/// Where one deployment is counted, and its current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub repo: Arc<str>,
    pub environment: Arc<str>,
    pub state: DeploymentState,
    pub message: String,
    pub revision: Arc<str>,
}

impl Entry {
    /// An entry whose strings are not shared yet ([`Rollups::set`] interns them).
    pub fn new(
        repo: &str,
        environment: &str,
        state: DeploymentState,
        message: String,
        revision: &str,
    ) -> Self {
        Entry {
            repo: repo.into(),
            environment: environment.into(),
            state,
            message,
            revision: revision.into(),
        }
    }
}

/// The rollups of a fleet.
#[derive(Default)]
pub struct Rollups {
    counts: HashMap<Scope, Counts>,
    entries: HashMap<(ClusterId, BundleId), Entry>,
    /// Deployments not Ready, for "which clusters are not Ready and why".
    unhealthy: BTreeSet<(ClusterId, BundleId)>,
    /// GitRepo, environment and revision strings, one copy each. Grows by one revision per
    /// commit seen; a few MiB after years of commits.
    strings: HashSet<Arc<str>>,
}

impl Rollups {
    fn scopes(cluster: ClusterId, bundle: &BundleId, e: &Entry) -> [Scope; 6] {
        [
            Scope::Fleet,
            Scope::GitRepo(e.repo.to_string()),
            Scope::Bundle(bundle.clone()),
            Scope::Cluster(cluster),
            Scope::Environment(e.environment.to_string()),
            Scope::Cell(e.environment.to_string(), bundle.clone()),
        ]
    }

    fn intern(&mut self, s: &Arc<str>) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        self.strings.insert(s.clone());
        s.clone()
    }

    fn count(&mut self, cluster: ClusterId, bundle: &BundleId, e: &Entry, n: i64) {
        for scope in Self::scopes(cluster, bundle, e) {
            let c = self.counts.entry(scope.clone()).or_default();
            c.add(e.state, n);
            if c.total() == 0 {
                self.counts.remove(&scope);
            }
        }
    }

    /// Set one deployment's entry (None: it is gone). Returns the transition, if the state
    /// or the revision changed (a deployment seen for the first time is one too).
    pub fn set(
        &mut self,
        cluster: ClusterId,
        bundle: &BundleId,
        entry: Option<Entry>,
        now: i64,
    ) -> Option<Transition> {
        let key = (cluster, bundle.clone());
        let old = self.entries.get(&key).cloned();
        if old == entry {
            return None;
        }
        if let Some(o) = &old {
            self.count(cluster, bundle, o, -1);
        }
        let Some(mut e) = entry else {
            self.entries.remove(&key);
            self.unhealthy.remove(&key);
            return None;
        };
        e.repo = self.intern(&e.repo);
        e.environment = self.intern(&e.environment);
        e.revision = self.intern(&e.revision);
        self.count(cluster, bundle, &e, 1);
        if e.state == DeploymentState::Ready {
            self.unhealthy.remove(&key);
        } else {
            self.unhealthy.insert(key.clone());
        }
        let changed = old
            .as_ref()
            .is_none_or(|o| o.state != e.state || o.revision != e.revision);
        let t = changed.then(|| Transition {
            at: now,
            state: e.state,
            revision: e.revision.to_string(),
            message: e.message.clone(),
        });
        self.entries.insert(key, e);
        t
    }

    /// The counts of one scope.
    pub fn counts(&self, scope: &Scope) -> Counts {
        self.counts.get(scope).copied().unwrap_or_default()
    }

    /// Every scope of one kind with its counts, e.g. all environments.
    pub fn scopes_where(&self, f: impl Fn(&Scope) -> bool) -> Vec<(Scope, Counts)> {
        let mut out: Vec<_> = self
            .counts
            .iter()
            .filter(|(s, _)| f(s))
            .map(|(s, c)| (s.clone(), *c))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The deployments not Ready, with their entry, optionally only those `keep` accepts.
    pub fn unhealthy(
        &self,
        keep: impl Fn(ClusterId, &BundleId, &Entry) -> bool,
        limit: usize,
    ) -> (Vec<(ClusterId, BundleId, Entry)>, usize) {
        let mut out = Vec::new();
        let mut total = 0;
        for (c, b) in &self.unhealthy {
            let Some(e) = self.entries.get(&(*c, b.clone())) else {
                continue;
            };
            if keep(*c, b, e) {
                total += 1;
                if out.len() < limit {
                    out.push((*c, b.clone(), e.clone()));
                }
            }
        }
        (out, total)
    }

    /// A deployment's entry.
    pub fn entry(&self, cluster: ClusterId, bundle: &BundleId) -> Option<&Entry> {
        self.entries.get(&(cluster, bundle.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(repo: &str, env: &str, state: DeploymentState, rev: &str) -> Option<Entry> {
        Some(Entry::new(repo, env, state, format!("{state:?}"), rev))
    }

    #[test]
    fn counts_follow_each_change_and_only_its_scopes() {
        use DeploymentState::*;
        let mut r = Rollups::default();
        let (a, b) = (ClusterId::new(), ClusterId::new());
        let web = BundleId("apps/web".into());
        let db = BundleId("apps/db".into());
        r.set(a, &web, entry("apps", "prod", Pending, "c1"), 1);
        r.set(b, &web, entry("apps", "dev", Pending, "c1"), 1);
        r.set(a, &db, entry("apps", "prod", Pending, "c1"), 1);
        assert_eq!(r.counts(&Scope::Fleet).get(Pending), 3);
        r.set(a, &web, entry("apps", "prod", Ready, "c1"), 2);
        r.set(b, &web, entry("apps", "dev", NotReady, "c1"), 2);
        let prod = r.counts(&Scope::Environment("prod".into()));
        assert_eq!(
            (prod.get(Ready), prod.get(Pending), prod.total()),
            (1, 1, 2)
        );
        assert_eq!(
            r.counts(&Scope::Bundle(web.clone())).worst(),
            Some(NotReady)
        );
        assert_eq!(r.counts(&Scope::Cluster(a)).worst(), Some(Pending));
        assert_eq!(
            r.counts(&Scope::Cell("dev".into(), web.clone())).by_name(),
            BTreeMap::from([("NotReady", 1)])
        );
        let (bad, total) = r.unhealthy(|_, _, e| &*e.environment == "dev", 10);
        assert_eq!((bad.len(), total, bad[0].0), (1, 1, b));
        // Gone: every scope forgets it.
        r.set(b, &web, None, 3);
        assert_eq!(r.counts(&Scope::Environment("dev".into())).total(), 0);
        assert!(r.scopes_where(|s| matches!(s, Scope::Environment(_))).len() == 1);
        assert_eq!(r.counts(&Scope::Fleet).total(), 2);
    }

    #[test]
    fn a_transition_is_a_change_of_state_or_revision() {
        use DeploymentState::*;
        let mut r = Rollups::default();
        let c = ClusterId::new();
        let b = BundleId("r/app".into());
        let first = r.set(c, &b, entry("r", "", Pending, "c1"), 1);
        assert_eq!(first.map(|t| (t.state, t.at)), Some((Pending, 1)));
        assert!(r.set(c, &b, entry("r", "", Ready, "c1"), 2).is_some());
        // Same state and revision, new message: no transition.
        let mut same = entry("r", "", Ready, "c1").unwrap();
        same.message = "other".into();
        assert!(r.set(c, &b, Some(same), 3).is_none());
        let moved = r.set(c, &b, entry("r", "", Ready, "c2"), 4);
        assert_eq!(moved.map(|t| t.revision), Some("c2".to_string()));
        // Strings are shared between deployments.
        let other = BundleId("r/db".into());
        r.set(c, &other, entry("r", "", Ready, "c2"), 5);
        assert!(Arc::ptr_eq(
            &r.entry(c, &b).unwrap().revision,
            &r.entry(c, &other).unwrap().revision
        ));
    }
}
