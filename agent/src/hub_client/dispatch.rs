//! What a session does with the deployments the hub sends: batches them, fetches the
//! manifests the cache lacks with one `FetchManifests`, hands complete deployments to the
//! reconciler and `Ack`s them; and what `Hello` reports as held. Held contents to watch again
//! (`super::resume`) go through the same queue, after what the hub sent. Fetches go over the
//! session's connection until the certificate is renewed, then over a new connection with the
//! current one (the hub refuses calls on a connection whose certificate it superseded).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::agent_message::Kind as Out;
use serde_json::Value;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use super::manifests::{self, Fetched};
use super::session::send;
use super::{HubClient, SessionError};
use crate::model::{Deployment, Desired, HeldDeployment, Removal};
use crate::status::failed_whole;

/// Work for the dispatcher, in the order the hub sent it.
pub(super) enum Work {
    Deploy(Deployment),
    Remove(Removal),
    /// A content the cluster holds, to watch again without applying it.
    Resume(Deployment),
}

impl HubClient {
    /// Takes work in batches so that one `FetchManifests` serves many deployments.
    pub(super) async fn dispatch_loop(
        &self,
        channel: Channel,
        mut work: mpsc::UnboundedReceiver<Work>,
        out: mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        let (mut channel, mut generation) = (channel, self.credentials.generation());
        while let Some(first) = work.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = work.try_recv() {
                batch.push(more);
            }
            // The hub authorizes each call by the connection's certificate and accepts only
            // the current and previous ones: after renewals the stream's own connection is
            // too old for new calls, so fetch over one with the current certificate.
            if self.credentials.generation() != generation {
                generation = self.credentials.generation();
                channel = self
                    .credentials
                    .endpoint()
                    .map_err(|e| SessionError::Hub(e.to_string()))?
                    .connect()
                    .await
                    .map_err(|e| SessionError::from_transport(&e))?;
                debug!("fetching over a connection with the renewed certificate");
            }
            self.dispatch(&channel, batch, &out).await?;
        }
        Ok(())
    }

    async fn dispatch(
        &self,
        channel: &Channel,
        batch: Vec<Work>,
        out: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        let (held, batch): (Vec<Work>, Vec<Work>) = latest_per_deployment(batch)
            .into_iter()
            .partition(|w| matches!(w, Work::Resume(_)));
        let wanted = batch.iter().filter_map(|w| match w {
            Work::Deploy(d)
                if !self
                    .reconciler
                    .is_desired(&d.deployment_id, &d.content_hash) =>
            {
                Some(d)
            }
            _ => None,
        });
        // Any refusal here (even PERMISSION_DENIED for a hash the hub replaced meanwhile) is
        // healed by a new session: the hub then sends its current desired state again.
        let fetched = self.manifests_of(channel, wanted).await.map_err(|s| {
            SessionError::Hub(format!("fetching manifests: {}: {}", s.code(), s.message()))
        })?;
        for work in batch {
            match work {
                Work::Remove(removal) => {
                    info!(deployment = %removal.deployment_id, keep_resources = removal.keep_resources, "removal received");
                    self.reconciler.remove(removal);
                }
                Work::Deploy(d) => self.accept(d, &fetched, out).await?,
                Work::Resume(_) => {}
            }
        }
        let held = held.into_iter().filter_map(|w| match w {
            Work::Resume(d) => Some(d),
            _ => None,
        });
        self.resume(channel, held.collect()).await
    }

    /// The manifests of `deployments`: what the cache has, the rest fetched (and cached).
    pub(super) async fn manifests_of<'a>(
        &self,
        channel: &Channel,
        deployments: impl IntoIterator<Item = &'a Deployment>,
    ) -> Result<Fetched, tonic::Status> {
        // Hold what the cache has for the whole batch, so nothing is dropped under our feet.
        let mut have: HashMap<String, Arc<Value>> = HashMap::new();
        let mut missing = BTreeSet::new();
        for m in deployments.into_iter().flat_map(|d| &d.manifests) {
            match self.cache.get(&m.hash) {
                Some(v) => drop(have.insert(m.hash.clone(), v)),
                None => drop(missing.insert(m.hash.clone())),
            }
        }
        let mut fetched = Fetched::default();
        if !missing.is_empty() {
            debug!(manifests = missing.len(), "fetching manifests");
            fetched = manifests::fetch(channel.clone(), missing).await?;
            self.cache.insert_all(&fetched.good);
            debug!(cached = self.cache.live(), "manifests fetched");
        }
        fetched.good.extend(have);
        Ok(fetched)
    }

    async fn accept(
        &self,
        d: Deployment,
        fetched: &Fetched,
        out: &mpsc::Sender<pb::AgentMessage>,
    ) -> Result<(), SessionError> {
        let ack = pb::Ack {
            deployment_id: d.deployment_id.clone(),
            content_hash: d.content_hash.clone(),
        };
        if !self
            .reconciler
            .is_desired(&d.deployment_id, &d.content_hash)
        {
            match collect(&d, fetched) {
                Ok(manifests) => {
                    info!(deployment = %d.deployment_id, revision = %d.revision, objects = manifests.len(), "deployment received");
                    self.reconciler.deploy(Desired {
                        deployment: d,
                        manifests,
                    });
                }
                Err(why) => {
                    warn!(deployment = %d.deployment_id, error = %why, "deployment unusable");
                    self.board.publish(failed_whole(&d, why));
                    return Ok(());
                }
            }
        }
        send(out, Out::Ack(ack)).await
    }
}

/// What `Hello` reports as held: every inventory, and every deployment the reconciler has a
/// target for, even one not recorded yet (received, but queued behind other applies). The
/// current target wins over an inventory of the same id: one being applied is reported with
/// the content the worker is applying (the hub then resends nothing, or a newer content, or a
/// Removal), and one being removed is not reported at all (so the hub sends it again if it
/// wants it after all, instead of letting the removal finish unnoticed).
pub(super) fn held(
    inventories: Vec<crate::model::Inventory>,
    targets: Vec<(String, Option<String>)>,
) -> Vec<HeldDeployment> {
    let mut held: std::collections::BTreeMap<String, String> = inventories
        .into_iter()
        .map(|inv| (inv.deployment_id, inv.content_hash))
        .collect();
    for (id, target) in targets {
        match target {
            Some(hash) => drop(held.insert(id, hash)),
            None => drop(held.remove(&id)),
        }
    }
    held.into_iter()
        .map(|(deployment_id, content_hash)| HeldDeployment {
            deployment_id,
            content_hash,
        })
        .collect()
}

/// Drops work that a later item of the same batch replaces (a deployment sent twice, or sent
/// and then removed), so that no manifests are fetched for states already gone. A held content
/// to watch again is older news than anything the hub sent: any other word on the same
/// deployment in the batch drops it, wherever it stands.
fn latest_per_deployment(batch: Vec<Work>) -> Vec<Work> {
    let id = |w: &Work| match w {
        Work::Deploy(d) | Work::Resume(d) => d.deployment_id.clone(),
        Work::Remove(r) => r.deployment_id.clone(),
    };
    let last: HashMap<String, usize> = batch
        .iter()
        .enumerate()
        .filter(|(_, w)| !matches!(w, Work::Resume(_)))
        .map(|(i, w)| (id(w), i))
        .collect();
    batch
        .into_iter()
        .enumerate()
        .filter(|(i, w)| last.get(&id(w)).is_none_or(|l| l == i))
        .map(|(_, w)| w)
        .collect()
}

/// The manifests of a deployment, in its order, or why they are not all usable.
pub(super) fn collect(d: &Deployment, fetched: &Fetched) -> Result<Vec<Arc<Value>>, String> {
    d.manifests
        .iter()
        .map(|m| {
            if let Some(why) = fetched.bad.get(&m.hash) {
                return Err(format!("{}: {why}", m.source));
            }
            fetched
                .good
                .get(&m.hash)
                .cloned()
                .ok_or_else(|| format!("{}: the hub did not return manifest {}", m.source, m.hash))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_only_the_latest_word_per_deployment_and_held_ones_are_the_oldest() {
        let deploy = |id: &str, hash: &str| {
            Work::Deploy(Deployment {
                deployment_id: id.into(),
                content_hash: hash.into(),
                ..Deployment::default()
            })
        };
        let remove = |id: &str| {
            Work::Remove(Removal {
                deployment_id: id.into(),
                keep_resources: false,
            })
        };
        let resume = |id: &str, hash: &str| match deploy(id, hash) {
            Work::Deploy(d) => Work::Resume(d),
            _ => unreachable!(),
        };
        let batch = vec![
            resume("a", "0"),
            deploy("a", "1"),
            deploy("b", "1"),
            deploy("a", "2"),
            remove("b"),
            resume("b", "0"),
            deploy("c", "1"),
            resume("e", "0"),
        ];
        let kept: Vec<String> = latest_per_deployment(batch)
            .into_iter()
            .map(|w| match w {
                Work::Deploy(d) => format!("deploy {} {}", d.deployment_id, d.content_hash),
                Work::Remove(r) => format!("remove {}", r.deployment_id),
                Work::Resume(d) => format!("resume {} {}", d.deployment_id, d.content_hash),
            })
            .collect();
        assert_eq!(kept, ["deploy a 2", "remove b", "deploy c 1", "resume e 0"]);
    }

    #[tokio::test]
    async fn hello_holds_what_is_queued_and_the_current_target_wins() {
        use crate::cluster::fake::{FakeApi, Reply};
        use crate::config::BackoffConfig;
        use crate::reconcile::Reconciler;
        use crate::status::StatusBoard;
        use serde_json::json;
        use tokio_util::sync::CancellationToken;
        use tokio_util::task::TaskTracker;

        let inventory = |id: &str, hash: &str| {
            json!({"metadata": {"name": crate::plan::inventory_name(id)},
            "data": {"deploymentId": id, "contentHash": hash, "objects": "[]"}})
        };
        let listed = json!({"metadata": {}, "items": [
            inventory("applying", "old"), inventory("removing", "r"), inventory("settled", "s")]});
        let api = FakeApi::start(move |r| match r.path() {
            "/version" => Reply::json(200, json!({"gitVersion": "v1.32.3"})),
            "/api/v1/namespaces/flotilla-system/configmaps" => Reply::json(200, listed.clone()),
            // Workers cannot read their inventory yet: they keep their targets, unrecorded.
            _ => Reply::json(
                403,
                json!({"kind": "Status", "code": 403, "reason": "Forbidden", "message": "not yet"}),
            ),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let cluster = api.cluster(dir.path()).await;
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let board = Arc::new(StatusBoard::default());
        let reconciler = Reconciler::new(
            cluster.clone(),
            board.clone(),
            Arc::default(),
            BackoffConfig::default(),
            tracker.clone(),
            shutdown.clone(),
        );
        let target = |id: &str, hash: &str| Desired {
            deployment: Deployment {
                deployment_id: id.into(),
                bundle: id.into(),
                revision: "r".into(),
                content_hash: hash.into(),
                ..Deployment::default()
            },
            manifests: Vec::new(),
        };
        reconciler.deploy(target("applying", "new"));
        reconciler.deploy(target("queued", "q"));
        reconciler.remove(Removal {
            deployment_id: "removing".into(),
            keep_resources: false,
        });
        let identity = crate::identity::Identity {
            cluster_id: "c-1".into(),
            cluster_name: "edge-1".into(),
            key_pem: String::new(),
            cert_pem: String::new(),
            ca_pem: String::new(),
            hub_url: "https://127.0.0.1:9".into(),
        };
        let (credentials, _keeper) = crate::hub_client::Credentials::new(
            crate::config::HubAddress::parse("https://127.0.0.1:9").unwrap(),
            None,
            identity,
            crate::identity::IdentityStore::Dir(dir.path().join("state")),
            BackoffConfig::default(),
        );
        let client = HubClient {
            credentials,
            recovery: crate::hub_client::Recovery {
                labels: Default::default(),
                tokens: Default::default(),
            },
            cluster,
            reconciler,
            board,
            cache: Arc::new(crate::hub_client::ManifestCache::default()),
            backoff: BackoffConfig::default(),
            connected: Default::default(),
        };
        let Some(Out::Hello(hello)) = client.hello().await.unwrap().0.kind else {
            panic!("not a Hello");
        };
        let held: Vec<(&str, &str)> = hello
            .held
            .iter()
            .map(|h| (h.deployment_id.as_str(), h.content_hash.as_str()))
            .collect();
        assert_eq!(
            held,
            [("applying", "new"), ("queued", "q"), ("settled", "s")],
            "queued deployments are held; a removal in progress is not"
        );
        assert_eq!(hello.kubernetes_version, "v1.32.3");
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn collect_keeps_order_and_explains_gaps() {
        let d = Deployment {
            deployment_id: "d".into(),
            bundle: "b".into(),
            revision: "r".into(),
            content_hash: "h".into(),
            manifests: vec![
                crate::model::ManifestRef {
                    hash: "2".into(),
                    source: "b.yaml#0".into(),
                },
                crate::model::ManifestRef {
                    hash: "1".into(),
                    source: "a.yaml#0".into(),
                },
            ],
            ..Deployment::default()
        };
        let mut fetched = Fetched::default();
        fetched
            .good
            .insert("1".into(), Arc::new(serde_json::json!({"n": 1})));
        fetched
            .good
            .insert("2".into(), Arc::new(serde_json::json!({"n": 2})));
        let got = collect(&d, &fetched).unwrap();
        assert_eq!(
            (got[0]["n"].as_i64(), got[1]["n"].as_i64()),
            (Some(2), Some(1))
        );
        fetched.good.remove("1");
        assert_eq!(
            collect(&d, &fetched).unwrap_err(),
            "a.yaml#0: the hub did not return manifest 1"
        );
        fetched.bad.insert("2".into(), "bad hash".into());
        assert_eq!(collect(&d, &fetched).unwrap_err(), "b.yaml#0: bad hash");
    }
}
