//! Hands what the watches see to the worker of the deployment that owns it: the deployment id
//! comes from the object's `flotilla.dev/deployment-id` annotation. Objects of no running
//! worker (a deployment being removed, another agent's leftovers) are dropped. A relist goes to
//! every worker, each with only its own objects, so each can tell which of its objects of that
//! type are gone.

use std::collections::HashMap;

use serde_json::Value;
use tokio::sync::mpsc;

use super::Reconciler;
use crate::cluster::Observation;
use crate::plan::owner;

/// Routes until every watch has ended or shutdown.
pub(super) async fn run(
    reconciler: Reconciler,
    mut observations: mpsc::UnboundedReceiver<Observation>,
) {
    let shutdown = reconciler.inner.shutdown.clone();
    loop {
        let observation = tokio::select! {
            _ = shutdown.cancelled() => return,
            o = observations.recv() => match o {
                Some(o) => o,
                None => return,
            },
        };
        reconciler.route(observation);
    }
}

impl Reconciler {
    fn route(&self, observation: Observation) {
        let workers = self.workers();
        match observation {
            Observation::Applied(ref obj) | Observation::Deleted(ref obj) => {
                if let Some(w) = owner(obj).and_then(|id| workers.get(id)) {
                    // A worker that just ended no longer cares.
                    let _ = w.observations.send(observation);
                }
            }
            Observation::Listed {
                group,
                kind,
                objects,
            } => {
                let mut by_owner: HashMap<String, Vec<Value>> = HashMap::new();
                for obj in objects {
                    if let Some(id) = owner(&obj) {
                        by_owner.entry(id.to_string()).or_default().push(obj);
                    }
                }
                for (id, w) in workers.iter() {
                    let _ = w.observations.send(Observation::Listed {
                        group: group.clone(),
                        kind: kind.clone(),
                        objects: by_owner.remove(id).unwrap_or_default(),
                    });
                }
            }
        }
    }
}
