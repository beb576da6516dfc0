//! Rollups: deployment counts by state per GitRepo, bundle, cluster, environment and for the
//! whole fleet, the deployments that are not Ready, and each deployment's last transitions.
//!
//! Maintained incrementally: the fleet index calls [`Rollups::set`] whenever one deployment's
//! state may have changed, and only that deployment's scopes move. Reading a rollup never
//! scans deployments. Pure: no I/O, no locks.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

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
    pub repo: String,
    pub environment: String,
    pub state: DeploymentState,
    pub message: String,
    pub revision: String,
}

/// The rollups of a fleet.
#[derive(Default)]
pub struct Rollups {
    counts: HashMap<Scope, Counts>,
    entries: HashMap<(ClusterId, BundleId), Entry>,
    /// Deployments not Ready, for "which clusters are not Ready and why".
    unhealthy: BTreeSet<(ClusterId, BundleId)>,
    history: HashMap<(ClusterId, BundleId), VecDeque<Transition>>,
}

impl Rollups {
    fn scopes(cluster: ClusterId, bundle: &BundleId, e: &Entry) -> [Scope; 6] {
        [
            Scope::Fleet,
            Scope::GitRepo(e.repo.clone()),
            Scope::Bundle(bundle.clone()),
            Scope::Cluster(cluster),
            Scope::Environment(e.environment.clone()),
            Scope::Cell(e.environment.clone(), bundle.clone()),
        ]
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

    /// Set one deployment's entry (None: it is gone). Returns the transition recorded, if
    /// the state or the revision changed.
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
        let Some(e) = entry else {
            self.entries.remove(&key);
            self.unhealthy.remove(&key);
            self.history.remove(&key);
            return None;
        };
        self.count(cluster, bundle, &e, 1);
        if e.state == DeploymentState::Ready {
            self.unhealthy.remove(&key);
        } else {
            self.unhealthy.insert(key.clone());
        }
        let last = self.history.get(&key).and_then(|h| h.back());
        let changed = match &old {
            Some(o) => o.state != e.state || o.revision != e.revision,
            // First sight (start-up): a transition only if the restored history ends elsewhere.
            None => last.is_none_or(|t| t.state != e.state || t.revision != e.revision),
        };
        self.entries.insert(key.clone(), e.clone());
        if !changed {
            return None;
        }
        let t = Transition {
            at: now,
            state: e.state,
            revision: e.revision,
            message: e.message,
        };
        let h = self.history.entry(key).or_default();
        h.push_back(t.clone());
        while h.len() > HISTORY {
            h.pop_front();
        }
        Some(t)
    }

    /// Restore a deployment's history (at start-up).
    pub fn restore_history(&mut self, cluster: ClusterId, bundle: &BundleId, h: Vec<Transition>) {
        self.history
            .insert((cluster, bundle.clone()), h.into_iter().collect());
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

    /// A deployment's last transitions, oldest first.
    pub fn history(&self, cluster: ClusterId, bundle: &BundleId) -> Vec<Transition> {
        self.history
            .get(&(cluster, bundle.clone()))
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
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
        Some(Entry {
            repo: repo.into(),
            environment: env.into(),
            state,
            message: format!("{state:?}"),
            revision: rev.into(),
        })
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
        let (bad, total) = r.unhealthy(|_, _, e| e.environment == "dev", 10);
        assert_eq!((bad.len(), total, bad[0].0), (1, 1, b));
        // Gone: every scope forgets it.
        r.set(b, &web, None, 3);
        assert_eq!(r.counts(&Scope::Environment("dev".into())).total(), 0);
        assert!(r.scopes_where(|s| matches!(s, Scope::Environment(_))).len() == 1);
        assert_eq!(r.counts(&Scope::Fleet).total(), 2);
    }

    #[test]
    fn history_keeps_the_last_transitions() {
        use DeploymentState::*;
        let mut r = Rollups::default();
        let c = ClusterId::new();
        let b = BundleId("r/app".into());
        for i in 0..15 {
            let state = if i % 2 == 0 { Ready } else { NotReady };
            assert!(
                r.set(c, &b, entry("r", "", state, &format!("c{i}")), i)
                    .is_some()
            );
        }
        // Same state and revision, new message: no transition.
        let mut same = entry("r", "", Ready, "c14").unwrap();
        same.message = "other".into();
        assert!(r.set(c, &b, Some(same), 20).is_none());
        let h = r.history(c, &b);
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h.last().map(|t| t.revision.as_str()), Some("c14"));
        assert_eq!(h.first().map(|t| t.at), Some(5));
    }
}
