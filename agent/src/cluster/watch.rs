//! Watching what the agent owns: one watch per resource type, cluster-wide, on the
//! managed-by label, started the first time a deployment resolves that type and kept until
//! shutdown.
//!
//! kube's `watcher` does the protocol work: the initial list, resuming from the last
//! `resourceVersion`, relisting after `410 Expired`; [`kube::runtime::WatchStreamExt::default_backoff`]
//! paces retries after errors (a type whose CRD went away fails until it is back). What goes
//! up are plain JSON [`Observation`]s; a relist is reported whole ([`Observation::Listed`]) so
//! that objects deleted while the watch was down are noticed.

use std::collections::HashSet;
use std::sync::Mutex;

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info_span, warn};

use super::{Cluster, Resolved};
use crate::plan::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Inventory ConfigMaps carry the managed-by label too, but belong to no deployment.
const SELECTOR_EXCLUDES: &str = "!flotilla.dev/inventory";
/// Server-side timeout of one watch request: under the client's read timeout, so a quiet
/// watch ends cleanly and is resumed instead of failing.
const WATCH_TIMEOUT_SECS: u32 = 50;

/// What a watch saw, with `apiVersion` and `kind` always set.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Observation {
    /// An owned object was created or changed.
    Applied(Value),
    /// An owned object is gone (or lost its managed-by label).
    Deleted(Value),
    /// A (re)list finished: these are all the owned objects of `kind` in `group` now.
    Listed {
        group: String,
        kind: String,
        objects: Vec<Value>,
    },
}

/// The watches of the agent, one per resource type, all sending to one channel.
pub(crate) struct OwnedWatches {
    cluster: Cluster,
    started: Mutex<HashSet<(String, String)>>,
    events: mpsc::UnboundedSender<Observation>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl OwnedWatches {
    /// Watches started later run on `tracker` until `shutdown`.
    pub fn new(
        cluster: Cluster,
        events: mpsc::UnboundedSender<Observation>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            cluster,
            started: Mutex::default(),
            events,
            tracker,
            shutdown,
        }
    }

    /// Starts watching `r`'s type unless it is watched already (in any version).
    pub fn ensure(&self, r: &Resolved) {
        let key = (r.resource.group.clone(), r.resource.kind.clone());
        let new = self
            .started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key);
        if !new {
            return;
        }
        let span =
            info_span!("watch", api_version = %r.resource.api_version, kind = %r.resource.kind);
        let run = watch_type(
            self.cluster.clone(),
            r.clone(),
            self.events.clone(),
            self.shutdown.clone(),
        );
        self.tracker.spawn(run.instrument(span));
    }
}

/// One type's watch, until shutdown or until nobody listens.
async fn watch_type(
    cluster: Cluster,
    r: Resolved,
    events: mpsc::UnboundedSender<Observation>,
    shutdown: CancellationToken,
) {
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &r.resource);
    let config = watcher::Config::default()
        .labels(&format!(
            "{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{SELECTOR_EXCLUDES}"
        ))
        .timeout(WATCH_TIMEOUT_SECS);
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut listing: Option<Vec<Value>> = None;
    debug!("watch started");
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => event,
        };
        let observation = match event {
            None => return,
            Some(Err(e)) => {
                warn!(error = %e, "watch failed; resuming with backoff");
                continue;
            }
            Some(Ok(event)) => match event {
                watcher::Event::Init => {
                    listing = Some(Vec::new());
                    continue;
                }
                watcher::Event::InitApply(obj) => {
                    listing.get_or_insert_default().push(to_json(&r, obj));
                    continue;
                }
                watcher::Event::InitDone => Observation::Listed {
                    group: r.resource.group.clone(),
                    kind: r.resource.kind.clone(),
                    objects: listing.take().unwrap_or_default(),
                },
                watcher::Event::Apply(obj) => Observation::Applied(to_json(&r, obj)),
                watcher::Event::Delete(obj) => Observation::Deleted(to_json(&r, obj)),
            },
        };
        if events.send(observation).is_err() {
            return;
        }
    }
}

/// The object as JSON, with the type list items lack filled in.
fn to_json(r: &Resolved, obj: DynamicObject) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".into(), r.resource.api_version.clone().into());
        map.insert("kind".into(), r.resource.kind.clone().into());
    }
    v
}
