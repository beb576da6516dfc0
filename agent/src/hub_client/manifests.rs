//! Manifests by content hash: an in-memory cache shared by all deployments, filled from the
//! hub's `FetchManifests` for what is missing.
//!
//! *Invariant:* a manifest enters the cache only if sha256 of its bytes is the hash it was
//! asked for. The cache holds weak references: a manifest lives exactly as long as some
//! desired deployment holds it, and is dropped with the last one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::agent_service_client::AgentServiceClient;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// Hashes per `FetchManifests` call, as the contract allows.
const BATCH: usize = 1000;

/// Manifests by hash, alive while a desired deployment holds them.
#[derive(Default)]
pub(crate) struct ManifestCache {
    by_hash: Mutex<HashMap<String, Weak<Value>>>,
}

impl ManifestCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Value>>> {
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, hash: &str) -> Option<Arc<Value>> {
        self.lock().get(hash).and_then(Weak::upgrade)
    }

    /// Adds manifests and forgets the ones nobody holds any more.
    pub fn insert_all(&self, manifests: &HashMap<String, Arc<Value>>) {
        let mut map = self.lock();
        map.retain(|_, m| m.strong_count() > 0);
        for (hash, m) in manifests {
            map.insert(hash.clone(), Arc::downgrade(m));
        }
    }

    /// How many manifests are alive (for tests and logs).
    pub fn live(&self) -> usize {
        self.lock()
            .values()
            .filter(|m| m.strong_count() > 0)
            .count()
    }
}

/// What one fetch produced: good manifests, and why others are unusable.
#[derive(Default)]
pub(super) struct Fetched {
    pub good: HashMap<String, Arc<Value>>,
    pub bad: HashMap<String, String>,
}

/// Checks one manifest from the hub against the hash it was asked for.
pub(super) fn verify(hash: &str, json: &[u8]) -> Result<Value, String> {
    let actual = hex::encode(Sha256::digest(json));
    if actual != hash {
        return Err(format!(
            "the hub sent manifest {hash} with content hashing to {actual}"
        ));
    }
    let value: Value =
        serde_json::from_slice(json).map_err(|e| format!("manifest {hash} is not JSON: {e}"))?;
    if !value.is_object() {
        return Err(format!("manifest {hash} is not a JSON object"));
    }
    Ok(value)
}

/// Fetches `hashes` in batches. A transport error ends the fetch (the stream reconnects and
/// the hub sends the deployments again); bad manifests are reported per hash.
pub(super) async fn fetch(
    channel: Channel,
    hashes: BTreeSet<String>,
) -> Result<Fetched, tonic::Status> {
    let mut client = AgentServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let mut out = Fetched::default();
    let wanted: Vec<String> = hashes.into_iter().collect();
    for chunk in wanted.chunks(BATCH) {
        let request = pb::FetchManifestsRequest {
            hashes: chunk.to_vec(),
        };
        let mut stream = client.fetch_manifests(request).await?.into_inner();
        while let Some(m) = stream.message().await? {
            if !chunk.contains(&m.hash) {
                continue; // not asked for: ignore rather than trust
            }
            match verify(&m.hash, &m.json) {
                Ok(v) => {
                    out.good.insert(m.hash, Arc::new(v));
                }
                Err(why) => {
                    out.bad.insert(m.hash, why);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn verify_accepts_only_matching_json_objects() {
        let json = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#;
        assert_eq!(verify(&hash(json), json).unwrap()["kind"], "ConfigMap");
        assert!(
            verify(&hash(b"other"), json)
                .unwrap_err()
                .contains("hashing to")
        );
        assert!(
            verify(&hash(b"[1]"), b"[1]")
                .unwrap_err()
                .contains("not a JSON object")
        );
        assert!(verify(&hash(b"{"), b"{").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn cache_drops_manifests_nobody_holds() {
        let cache = ManifestCache::default();
        let a = Arc::new(serde_json::json!({"a": 1}));
        let b = Arc::new(serde_json::json!({"b": 1}));
        cache.insert_all(&HashMap::from([
            ("a".to_string(), a.clone()),
            ("b".to_string(), b.clone()),
        ]));
        assert_eq!(cache.live(), 2);
        drop(b);
        assert!(cache.get("b").is_none());
        assert_eq!(cache.get("a").as_deref(), Some(&*a));
        cache.insert_all(&HashMap::new());
        assert_eq!(cache.lock().len(), 1, "dead entries are swept");
    }
}
