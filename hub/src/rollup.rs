//! Rollups: deployment counts by state per GitRepo, bundle, cluster, environment and for the
//! whole fleet, and the deployments that are not Ready with why.
//!
//! Maintained incrementally: the fleet index calls [`Rollups::set`] whenever one deployment's
//! state may have changed, and only that deployment's scopes move. Reading a rollup never
//! scans deployments, and listing what is not Ready stops at the limit asked for. A change
//! of state or revision is a [`Transition`]; each deployment keeps its last [`HISTORY`].
//! Pure: no I/O, no locks.
//!
//! Cost: each deployment remembers the indices of its six scopes, so a state change is six
//! array updates; scope keys are built only when a deployment is first seen or moves to
//! another GitRepo environment. History lives here, in memory and compact (32 bytes a
//! transition: revisions interned, a message only when there is one), not in the store: a
//! fleet-wide commit makes a transition on every deployment, and writing 500,000 histories
//! to sled measured 12–55 s of a core per commit (docs/performance.md). The price is that a
//! hub restart starts every history afresh.

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
pub const HISTORY: usize = 8;

/// What a rollup counts over.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Fleet,
    GitRepo(Arc<str>),
    Bundle(BundleId),
    Cluster(ClusterId),
    /// An environment name across GitRepos ("" for GitRepos without environments).
    Environment(Arc<str>),
    /// One cell of the environments x bundles grid.
    Cell(Arc<str>, BundleId),
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

/// One deployment's state, as [`Rollups::set`] takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update<'a> {
    pub repo: &'a str,
    pub environment: &'a str,
    pub state: DeploymentState,
    pub message: String,
    pub revision: &'a str,
}

/// One deployment as the views read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub repo: Arc<str>,
    pub environment: Arc<str>,
    pub state: DeploymentState,
    pub message: String,
    pub revision: Arc<str>,
}

/// What is kept per deployment.
struct Stored {
    /// Indices into `Rollups::scopes`: fleet, GitRepo, bundle, cluster, environment, cell.
    scopes: [u32; 6],
    state: DeploymentState,
    message: String,
    revision: Arc<str>,
    /// The last transitions, oldest first, at most [`HISTORY`].
    history: Vec<Step>,
}

/// One transition, compact.
struct Step {
    /// Unix seconds (u32 lasts until 2106).
    at: u32,
    state: DeploymentState,
    revision: Arc<str>,
    message: Option<Box<str>>,
}

const GITREPO: usize = 1;
const ENVIRONMENT: usize = 4;

/// The rollups of a fleet.
#[derive(Default)]
pub struct Rollups {
    ids: HashMap<Scope, u32>,
    /// Every scope ever counted, with its counts (zero when it emptied).
    scopes: Vec<(Scope, Counts)>,
    entries: HashMap<ClusterId, HashMap<BundleId, Stored>>,
    /// Deployments not Ready, per GitRepo scope, for "which clusters are not Ready and why".
    unhealthy: BTreeMap<u32, BTreeMap<ClusterId, BTreeSet<BundleId>>>,
    /// Revision strings, one copy each. Grows by one per commit seen: a few MiB after years.
    revisions: HashSet<Arc<str>>,
}

impl Rollups {
    fn scope_id(&mut self, scope: Scope) -> u32 {
        if let Some(id) = self.ids.get(&scope) {
            return *id;
        }
        let id = u32::try_from(self.scopes.len()).expect("fewer than 2^32 scopes");
        self.ids.insert(scope.clone(), id);
        self.scopes.push((scope, Counts::default()));
        id
    }

    fn scope_ids(&mut self, cluster: ClusterId, bundle: &BundleId, u: &Update) -> [u32; 6] {
        let repo: Arc<str> = u.repo.into();
        let env: Arc<str> = u.environment.into();
        [
            self.scope_id(Scope::Fleet),
            self.scope_id(Scope::GitRepo(repo)),
            self.scope_id(Scope::Bundle(bundle.clone())),
            self.scope_id(Scope::Cluster(cluster)),
            self.scope_id(Scope::Environment(env.clone())),
            self.scope_id(Scope::Cell(env, bundle.clone())),
        ]
    }

    fn name(&self, id: u32) -> &Arc<str> {
        match &self.scopes[id as usize].0 {
            Scope::GitRepo(n) | Scope::Environment(n) => n,
            other => unreachable!("scope {other:?} has no name"),
        }
    }

    fn count(&mut self, scopes: &[u32; 6], state: DeploymentState, n: i64) {
        for id in scopes {
            self.scopes[*id as usize].1.add(state, n);
        }
    }

    fn revision(&mut self, r: &str) -> Arc<str> {
        if let Some(shared) = self.revisions.get(r) {
            return shared.clone();
        }
        let shared: Arc<str> = r.into();
        self.revisions.insert(shared.clone());
        shared
    }

    fn mark(&mut self, repo: u32, cluster: ClusterId, bundle: &BundleId, unhealthy: bool) {
        if unhealthy {
            self.unhealthy
                .entry(repo)
                .or_default()
                .entry(cluster)
                .or_default()
                .insert(bundle.clone());
        } else if let Some(by_cluster) = self.unhealthy.get_mut(&repo)
            && let Some(bundles) = by_cluster.get_mut(&cluster)
        {
            bundles.remove(bundle);
            if bundles.is_empty() {
                by_cluster.remove(&cluster);
            }
        }
    }

    /// Set one deployment's state (None: it is gone, with its history). Returns whether that
    /// is a transition: the state or the revision changed (a deployment seen for the first
    /// time is one too); with `record`, it joins the deployment's history.
    pub fn set(
        &mut self,
        cluster: ClusterId,
        bundle: &BundleId,
        update: Option<Update<'_>>,
        now: i64,
        record: bool,
    ) -> bool {
        let old = self
            .entries
            .get(&cluster)
            .and_then(|m| m.get(bundle))
            .map(|o| (o.scopes, o.state, o.revision.clone()));
        let Some(u) = update else {
            let Some((scopes, state, _)) = old else {
                return false;
            };
            self.count(&scopes, state, -1);
            self.mark(scopes[GITREPO], cluster, bundle, false);
            if let Some(m) = self.entries.get_mut(&cluster) {
                m.remove(bundle);
                if m.is_empty() {
                    self.entries.remove(&cluster);
                }
            }
            return false;
        };
        let same_place = old.as_ref().is_some_and(|(s, _, _)| {
            **self.name(s[GITREPO]) == *u.repo && **self.name(s[ENVIRONMENT]) == *u.environment
        });
        let scopes = match &old {
            Some((s, _, _)) if same_place => *s,
            _ => self.scope_ids(cluster, bundle, &u),
        };
        let changed = match &old {
            Some((s, state, revision)) => {
                let moved = *s != scopes || *state != u.state;
                if moved {
                    self.count(s, *state, -1);
                    self.mark(s[GITREPO], cluster, bundle, false);
                }
                moved || **revision != *u.revision
            }
            None => true,
        };
        let entered = old
            .as_ref()
            .is_none_or(|(s, state, _)| *s != scopes || *state != u.state);
        if entered {
            self.count(&scopes, u.state, 1);
            self.mark(
                scopes[GITREPO],
                cluster,
                bundle,
                u.state != DeploymentState::Ready,
            );
        }
        let revision = self.revision(u.revision);
        let step = (changed && record).then(|| Step {
            at: u32::try_from(now.max(0)).unwrap_or(u32::MAX),
            state: u.state,
            revision: revision.clone(),
            message: (!u.message.is_empty()).then(|| u.message.clone().into_boxed_str()),
        });
        let per_cluster = self.entries.entry(cluster).or_default();
        let slot = match per_cluster.get_mut(bundle) {
            Some(slot) => slot,
            None => per_cluster.entry(bundle.clone()).or_insert(Stored {
                scopes,
                state: u.state,
                message: String::new(),
                revision: revision.clone(),
                history: Vec::new(),
            }),
        };
        slot.scopes = scopes;
        slot.state = u.state;
        slot.message = u.message;
        slot.revision = revision;
        if let Some(step) = step {
            if slot.history.len() == HISTORY {
                slot.history.remove(0);
            }
            slot.history.push(step);
        }
        changed
    }

    /// A deployment's last transitions, oldest first.
    pub fn history(&self, cluster: ClusterId, bundle: &BundleId) -> Vec<Transition> {
        let Some(s) = self.entries.get(&cluster).and_then(|m| m.get(bundle)) else {
            return Vec::new();
        };
        s.history
            .iter()
            .map(|t| Transition {
                at: i64::from(t.at),
                state: t.state,
                revision: t.revision.to_string(),
                message: t.message.as_deref().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// The counts of one scope.
    pub fn counts(&self, scope: &Scope) -> Counts {
        self.ids
            .get(scope)
            .map(|id| self.scopes[*id as usize].1)
            .unwrap_or_default()
    }

    /// Every scope `f` accepts that counts at least one deployment, with its counts, sorted.
    pub fn scopes_where(&self, f: impl Fn(&Scope) -> bool) -> Vec<(Scope, Counts)> {
        let mut out: Vec<_> = self
            .scopes
            .iter()
            .filter(|(s, c)| c.total() > 0 && f(s))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Up to `limit` deployments not Ready, of GitRepo `repo` or of every GitRepo, and how
    /// many there are in all. Costs the `limit`, not the number of deployments.
    pub fn unhealthy(
        &self,
        repo: Option<&str>,
        limit: usize,
    ) -> (Vec<(ClusterId, BundleId, Entry)>, usize) {
        let counts = match repo {
            Some(r) => self.counts(&Scope::GitRepo(r.into())),
            None => self.counts(&Scope::Fleet),
        };
        let total = (counts.total() - counts.get(DeploymentState::Ready)) as usize;
        let repo_id = repo.map(|r| self.ids.get(&Scope::GitRepo(r.into())).copied());
        let mut out = Vec::new();
        'repos: for (id, by_cluster) in &self.unhealthy {
            if repo_id.is_some_and(|want| want != Some(*id)) {
                continue;
            }
            for (cluster, bundles) in by_cluster {
                for bundle in bundles {
                    if out.len() >= limit {
                        break 'repos;
                    }
                    if let Some(e) = self.entry(*cluster, bundle) {
                        out.push((*cluster, bundle.clone(), e));
                    }
                }
            }
        }
        (out, total)
    }

    /// A deployment's entry.
    pub fn entry(&self, cluster: ClusterId, bundle: &BundleId) -> Option<Entry> {
        let s = self.entries.get(&cluster)?.get(bundle)?;
        Some(Entry {
            repo: self.name(s.scopes[GITREPO]).clone(),
            environment: self.name(s.scopes[ENVIRONMENT]).clone(),
            state: s.state,
            message: s.message.clone(),
            revision: s.revision.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(
        repo: &'a str,
        env: &'a str,
        state: DeploymentState,
        rev: &'a str,
    ) -> Option<Update<'a>> {
        Some(Update {
            repo,
            environment: env,
            state,
            message: format!("{state:?}"),
            revision: rev,
        })
    }

    #[test]
    fn counts_follow_each_change_and_only_its_scopes() {
        use DeploymentState::*;
        let mut r = Rollups::default();
        let (a, b) = (ClusterId::new(), ClusterId::new());
        let web = BundleId("apps/web".into());
        let db = BundleId("apps/db".into());
        r.set(a, &web, entry("apps", "prod", Pending, "c1"), 1, true);
        r.set(b, &web, entry("apps", "dev", Pending, "c1"), 1, true);
        r.set(a, &db, entry("apps", "prod", Pending, "c1"), 1, true);
        assert_eq!(r.counts(&Scope::Fleet).get(Pending), 3);
        r.set(a, &web, entry("apps", "prod", Ready, "c1"), 2, true);
        r.set(b, &web, entry("apps", "dev", NotReady, "c1"), 2, true);
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
        let (bad, total) = r.unhealthy(Some("apps"), 10);
        assert_eq!((bad.len(), total), (2, 2));
        let (bad, total) = r.unhealthy(None, 1);
        assert_eq!((bad.len(), total), (1, 2), "the list stops at the limit");
        assert_eq!(r.unhealthy(Some("other"), 10).1, 0);
        // Moving to another environment moves every scope that depends on it.
        r.set(b, &web, entry("apps", "prod", NotReady, "c1"), 3, true);
        assert_eq!(r.counts(&Scope::Environment("dev".into())).total(), 0);
        assert_eq!(r.counts(&Scope::Environment("prod".into())).total(), 3);
        assert_eq!(r.entry(b, &web).map(|e| e.environment), Some("prod".into()));
        // Gone: every scope forgets it.
        r.set(b, &web, None, 4, true);
        assert_eq!(r.counts(&Scope::Environment("prod".into())).total(), 2);
        assert_eq!(
            r.scopes_where(|s| matches!(s, Scope::Environment(_))).len(),
            1,
            "an emptied scope is not listed"
        );
        assert_eq!(r.counts(&Scope::Fleet).total(), 2);
        r.set(a, &db, entry("apps", "prod", Ready, "c1"), 5, true);
        assert_eq!(r.unhealthy(None, 10), (vec![], 0));
    }

    #[test]
    fn a_transition_is_a_change_of_state_or_revision_and_the_last_ones_are_kept() {
        use DeploymentState::*;
        let mut r = Rollups::default();
        let c = ClusterId::new();
        let b = BundleId("r/app".into());
        // Seen at start-up: counted, not recorded.
        assert!(r.set(c, &b, entry("r", "", Pending, "c0"), 0, false));
        assert!(r.history(c, &b).is_empty());
        assert!(r.set(c, &b, entry("r", "", Ready, "c1"), 2, true));
        // Same state and revision, new message: no transition, but the message is kept.
        let mut same = entry("r", "", Ready, "c1").unwrap();
        same.message = "other".into();
        assert!(!r.set(c, &b, Some(same), 3, true));
        assert_eq!(r.entry(c, &b).unwrap().message, "other");
        for i in 0..(HISTORY as i64 + 2) {
            let state = if i % 2 == 0 { NotReady } else { Ready };
            let rev = format!("c{}", 2 + i);
            assert!(r.set(c, &b, entry("r", "", state, &rev), 10 + i, true));
        }
        let h = r.history(c, &b);
        assert_eq!(h.len(), HISTORY);
        assert_eq!(
            h.last().map(|t| (t.at, t.revision.as_str())),
            Some((19, "c11"))
        );
        assert_eq!(h.first().map(|t| t.at), Some(12));
        assert_eq!(h.last().unwrap().message, "Ready");
        assert_eq!(r.counts(&Scope::Fleet).total(), 1);
        // Strings are shared between deployments.
        let other = BundleId("r/db".into());
        r.set(c, &other, entry("r", "", Ready, "c11"), 30, true);
        assert!(Arc::ptr_eq(
            &r.entry(c, &b).unwrap().revision,
            &r.entry(c, &other).unwrap().revision
        ));
        // Gone: its history too.
        r.set(c, &b, None, 31, true);
        assert!(r.history(c, &b).is_empty());
    }
}
