//! Turning desired deployments into cluster state, one worker per deployment id.
//!
//! The hub client hands over the latest desired state ([`Reconciler::deploy`]) or a removal
//! ([`Reconciler::remove`]); each deployment's worker applies one at a time. A removal prunes
//! the deployment's objects, or releases them (leaves them on the cluster, unowned) when the
//! `Removal` or the content recorded in the inventory says `keepResources`: either suffices,
//! so the flag of the content last applied holds across restarts. *Invariant:* the
//! latest desired state wins — a newer one arriving mid-apply stops the current run between
//! objects, and intermediate ones are skipped. A run with failed objects is retried with
//! backoff while it is still the desired state (a CRD from another bundle, a namespace that
//! was terminating). A bounded number of deployments apply at once, to stay gentle with the
//! API server after a reconnect delivers many at once.
//!
//! Between runs a worker watches its objects ([`observe`]): the watches of `cluster::watch`
//! (one per resource type, started once a run applied that type) feed one router ([`route`]),
//! which hands each observation to the worker whose deployment id the object's annotation
//! names. Health, drift and Missing objects then change the deployment's status without a run.
//!
//! After a restart the hub does not resend what the cluster holds, so the hub client hands
//! each held content over to be watched only ([`Reconciler::resume`], [`resume`]): its objects
//! are looked at and watched as after a run, and nothing that did not drift is applied. Any
//! desired state from the hub replaces that target, as it replaces any other.

mod apply;
mod observe;
mod prune;
mod resume;
mod route;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use self::observe::Observed;
use self::prune::Disposal;
use crate::backoff::Backoff;
use crate::cluster::{Cluster, Observation, OwnedWatches};
use crate::config::BackoffConfig;
use crate::metrics::Metrics;
use crate::model::{Desired, Inventory, Removal};
use crate::status::{StatusBoard, summarize};

/// Deployments applied at the same time.
const PARALLEL_APPLIES: usize = 4;

/// What a deployment's worker should make true.
#[derive(Clone, Debug)]
enum Target {
    Apply(Arc<Desired>),
    /// Watch a content the cluster already holds (its inventory names it) without applying
    /// it: after a restart, as if a run of it had just ended.
    Observe(Arc<Desired>),
    /// `keep_resources`: the hub's view of the removed deployment's flag.
    Remove {
        keep_resources: bool,
    },
}

/// How the reconciler reaches one worker.
struct WorkerHandle {
    target: watch::Sender<Target>,
    observations: mpsc::UnboundedSender<Observation>,
}

struct Inner {
    cluster: Cluster,
    board: Arc<StatusBoard>,
    metrics: Arc<Metrics>,
    workers: Mutex<HashMap<String, WorkerHandle>>,
    watches: OwnedWatches,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    permits: Semaphore,
    backoff: BackoffConfig,
}

/// Handle on the per-deployment workers. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Reconciler {
    inner: Arc<Inner>,
}

impl Reconciler {
    /// Workers, watches and the router are spawned on `tracker` and stop when `shutdown` is
    /// cancelled.
    pub fn new(
        cluster: Cluster,
        board: Arc<StatusBoard>,
        metrics: Arc<Metrics>,
        backoff: BackoffConfig,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (observations, routed) = mpsc::unbounded_channel();
        let inner = Inner {
            watches: OwnedWatches::new(
                cluster.clone(),
                observations,
                tracker.clone(),
                shutdown.clone(),
            ),
            cluster,
            board,
            metrics,
            workers: Mutex::default(),
            tracker,
            shutdown,
            permits: Semaphore::new(PARALLEL_APPLIES),
            backoff,
        };
        let reconciler = Self {
            inner: Arc::new(inner),
        };
        let router = route::run(reconciler.clone(), routed);
        reconciler
            .inner
            .tracker
            .spawn(router.instrument(info_span!("observation_router")));
        reconciler
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, WorkerHandle>> {
        self.inner.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `content_hash` is already the desired state of the deployment (a resend), or
    /// the held content being watched.
    pub fn is_desired(&self, deployment_id: &str, content_hash: &str) -> bool {
        self.workers().get(deployment_id).is_some_and(|w| {
            matches!(&*w.target.borrow(), Target::Apply(d) | Target::Observe(d) if d.deployment.content_hash == content_hash)
        })
    }

    /// Whether the deployment has a worker (with any target).
    pub fn has_worker(&self, deployment_id: &str) -> bool {
        self.workers().contains_key(deployment_id)
    }

    /// The current target of every deployment with a worker: `Some(content hash)` for one being
    /// (or to be) applied, `None` for one being removed. This covers deployments received but
    /// not yet recorded in an inventory (queued for a permit, say), which `Hello` must report.
    pub fn targets(&self) -> Vec<(String, Option<String>)> {
        self.workers()
            .iter()
            .map(|(id, w)| {
                let hash = match &*w.target.borrow() {
                    Target::Apply(d) | Target::Observe(d) => {
                        Some(d.deployment.content_hash.clone())
                    }
                    Target::Remove { .. } => None,
                };
                (id.clone(), hash)
            })
            .collect()
    }

    /// Makes `desired` the state to apply for its deployment.
    pub fn deploy(&self, desired: Desired) {
        let id = desired.deployment.deployment_id.clone();
        self.set(id, Target::Apply(Arc::new(desired)));
    }

    /// Watches again a content the cluster holds, unless its deployment has a worker already
    /// (whatever that worker does was decided later, so it wins). Applies nothing that did not
    /// drift; a desired state from the hub replaces this target as any other.
    pub fn resume(&self, held: Desired) {
        let id = held.deployment.deployment_id.clone();
        let mut workers = self.workers();
        if !workers.contains_key(&id) {
            self.spawn_worker(&mut workers, id, Target::Observe(Arc::new(held)));
        }
    }

    /// Prunes (or, to keep resources, releases) everything the deployment owns, then forgets it.
    pub fn remove(&self, removal: Removal) {
        let target = Target::Remove {
            keep_resources: removal.keep_resources,
        };
        self.set(removal.deployment_id, target);
    }

    fn set(&self, id: String, target: Target) {
        // Sending under the lock pairs with the worker's exit check, also under the lock.
        let mut workers = self.workers();
        if let Some(w) = workers.get(&id) {
            w.target.send_replace(target);
            return;
        }
        self.spawn_worker(&mut workers, id, target);
    }

    fn spawn_worker(
        &self,
        workers: &mut HashMap<String, WorkerHandle>,
        id: String,
        target: Target,
    ) {
        let (tx, mut rx) = watch::channel(target);
        rx.mark_changed();
        let (observations, observed_rx) = mpsc::unbounded_channel();
        let handle = WorkerHandle {
            target: tx,
            observations,
        };
        workers.insert(id.clone(), handle);
        let span = info_span!("deployment", id = %id);
        let worker = Worker {
            reconciler: self.clone(),
            id,
            rx,
            inventory: None,
            observations: observed_rx,
            observed: None,
        };
        self.inner.tracker.spawn(worker.run().instrument(span));
    }
}

/// The loop of one deployment id.
struct Worker {
    reconciler: Reconciler,
    id: String,
    rx: watch::Receiver<Target>,
    /// The inventory as last read or written, once known.
    inventory: Option<Inventory>,
    /// What the watches saw of this deployment's objects.
    observations: mpsc::UnboundedReceiver<Observation>,
    /// The objects of the last complete run, watched until the next one.
    observed: Option<Observed>,
}

/// What woke a worker up.
enum Wake {
    /// A new desired state.
    Target,
    /// Time to retry the current one.
    Retry,
    /// Something happened to its objects.
    Observed(Observation),
}

enum Step {
    /// Wait for the next desired state.
    Done,
    /// Try the same desired state again after a pause.
    RetryLater,
    /// The deployment was removed (or its held content is no longer held) and the worker may
    /// end.
    Removed,
}

impl Worker {
    async fn run(mut self) {
        let inner = self.reconciler.inner.clone();
        let mut backoff = Backoff::new(inner.backoff);
        let mut retry_at: Option<Instant> = None;
        loop {
            let wake = tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                changed = self.rx.changed() => match changed {
                    Ok(()) => Wake::Target,
                    Err(_) => return,
                },
                _ = sleep_until(retry_at), if retry_at.is_some() => Wake::Retry,
                Some(first) = self.observations.recv() => Wake::Observed(first),
            };
            let fresh = match wake {
                Wake::Target => {
                    backoff.reset();
                    true
                }
                Wake::Retry => false,
                Wake::Observed(first) => {
                    tokio::select! {
                        _ = inner.shutdown.cancelled() => return,
                        _ = self.observe(first) => {}
                    }
                    continue;
                }
            };
            retry_at = None;
            let target = self.rx.borrow_and_update().clone();
            let step = tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                step = self.step(target, fresh) => step,
            };
            match step {
                Step::Done => {}
                Step::RetryLater => retry_at = Some(Instant::now() + backoff.next_delay()),
                Step::Removed if self.finish_removal() => return,
                Step::Removed => {}
            }
        }
    }

    async fn step(&mut self, target: Target, fresh: bool) -> Step {
        let inner = self.reconciler.inner.clone();
        let Ok(_permit) = inner.permits.acquire().await else {
            return Step::Done;
        };
        // Replaced while queued (a newer content, or a removal): do the latest instead, without
        // touching the cluster for this one.
        if self.rx.has_changed().unwrap_or(false) {
            return Step::Done;
        }
        let inventory = match self.inventory.take() {
            Some(inv) => inv,
            None => match inner.cluster.read_inventory(&self.id).await {
                Ok(inv) => inv.unwrap_or_else(|| Inventory {
                    deployment_id: self.id.clone(),
                    ..Inventory::default()
                }),
                Err(e) => {
                    warn!(error = %e, "could not read the inventory; retrying");
                    return Step::RetryLater;
                }
            },
        };
        let rx = self.rx.clone();
        let superseded = move || rx.has_changed().unwrap_or(true);
        let corrections = self
            .observed
            .take()
            .map(|o| o.corrections())
            .unwrap_or_default();
        match target {
            Target::Apply(desired) => {
                let started = Instant::now();
                let outcome = apply::run(
                    &inner.cluster,
                    &inner.board,
                    &desired,
                    inventory,
                    fresh,
                    &superseded,
                    &corrections,
                )
                .await;
                inner.metrics.applied_in(started.elapsed());
                self.inventory = Some(outcome.inventory);
                if let Some(objects) = outcome.objects {
                    for applied in objects.iter().filter_map(|t| t.applied.as_ref()) {
                        inner.watches.ensure(&applied.resolved);
                    }
                    self.observed = Some(Observed {
                        deployment: desired.deployment.clone(),
                        objects,
                    });
                }
                if outcome.settled {
                    Step::Done
                } else {
                    Step::RetryLater
                }
            }
            Target::Observe(held) => self.resume(held, inventory, &corrections).await,
            Target::Remove { keep_resources } => {
                let disposal = if keep_resources || inventory.keeps_resources() {
                    Disposal::Release
                } else {
                    Disposal::Delete
                };
                match prune::remove(&inner.cluster, inventory, disposal).await {
                    Ok(()) => {
                        info!("deployment removed");
                        Step::Removed
                    }
                    Err(left) => {
                        self.inventory = Some(left);
                        Step::RetryLater
                    }
                }
            }
        }
    }

    /// Takes in `first` and every other observation already queued, then reports once.
    /// Nothing is looked at while a newer desired state waits: its run re-reads everything.
    async fn observe(&mut self, first: Observation) {
        let mut batch = vec![first];
        while let Ok(more) = self.observations.try_recv() {
            batch.push(more);
        }
        if self.rx.has_changed().unwrap_or(true) {
            return;
        }
        let inner = self.reconciler.inner.clone();
        let Some(observed) = &mut self.observed else {
            return;
        };
        for o in batch {
            observed.observe(&inner.cluster, &inner.metrics, o).await;
        }
        inner
            .board
            .publish(summarize(&observed.deployment, observed.statuses()));
    }

    /// Ends the worker unless a new desired state arrived meanwhile. Returns whether it ended.
    fn finish_removal(&mut self) -> bool {
        let inner = &self.reconciler.inner;
        let mut workers = self.reconciler.workers();
        if self.rx.has_changed().unwrap_or(false) {
            return false;
        }
        workers.remove(&self.id);
        inner.board.forget(&self.id);
        true
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
