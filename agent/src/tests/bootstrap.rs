//! Agents installed from the manifest of `flotilla agent manifest`: the bootstrap Secret gives
//! the hub URL, CA and token; the token is removed once the agent has an identity, and again
//! after a re-apply; an agent whose certificate expired waits for a token to appear there.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use serde_json::{Value, json};

use super::harness::*;
use super::identity::expired_identity;
use crate::AgentConfig;
use crate::identity::public_key_of;

const BOOTSTRAP: &str = "flotilla-agent-bootstrap";
const SECRET_PATH: &str = "/api/v1/namespaces/flotilla-system/secrets/flotilla-agent-bootstrap";

/// Applies the bootstrap Secret as `kubectl apply` of the install manifest leaves it.
fn apply_bootstrap(h: &Harness, token: Option<&str>) {
    let mut string_data = BTreeMap::from([
        ("hubURL".to_string(), h.url.clone()),
        ("caBundle".to_string(), h.ca_pem()),
    ]);
    if let Some(t) = token {
        string_data.insert("token".into(), t.into());
    }
    let applied = json!({"apiVersion": "v1", "kind": "Secret", "stringData": string_data});
    let data: BTreeMap<&String, ByteString> = string_data
        .iter()
        .map(|(k, v)| (k, ByteString(v.clone().into_bytes())))
        .collect();
    let mut store = h.store.lock().unwrap();
    let version = store
        .get(SECRET_PATH)
        .and_then(|s| {
            s["metadata"]["resourceVersion"]
                .as_str()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": BOOTSTRAP, "namespace": "flotilla-system",
            "resourceVersion": (version + 1).to_string(),
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied.to_string()}},
        "data": data,
    });
    store.insert(SECRET_PATH.into(), secret);
}

/// The token is gone from the Secret, also from kubectl's copy, and nothing else is.
fn token_removed(objects: &BTreeMap<String, Value>) -> bool {
    let Some(secret) = objects.get(SECRET_PATH) else {
        return false;
    };
    let applied =
        secret["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap_or_default();
    secret["data"].get("token").is_none()
        && secret["data"].get("hubURL").is_some()
        && !applied.contains("good")
        && applied.contains("caBundle")
}

/// A configuration with nothing but the bootstrap Secret's name, as the install manifest's.
async fn installed(h: &Harness) -> AgentConfig {
    AgentConfig {
        hub_url: None,
        ca_pem: None,
        token: None,
        cluster_name: None,
        bootstrap_secret: Some(BOOTSTRAP.into()),
        ..h.config(None).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_secret_supplies_hub_ca_and_token_and_loses_the_token() {
    let mut h = Harness::start().await;
    h.store.lock().unwrap().insert(
        "/api/v1/namespaces/kube-system".into(),
        json!({"metadata": {"name": "kube-system", "uid": "6F1C2A9B-04d7-4e1f-9a0b-1234567890ab"}}),
    );
    apply_bootstrap(&h, Some("good"));
    let agent = h.spawn(installed(&h).await);
    assert_eq!(
        h.expect("registration", registered).await,
        "c-6f1c2a9b04d7",
        "a name derived from the kube-system namespace"
    );
    h.expect("hello", hello).await;
    h.wait_cluster("the token removed", token_removed).await;
    agent.stop().await;

    // Re-applying the install brings the token back: a restart keeps the identity and
    // removes the token again.
    apply_bootstrap(&h, Some("good"));
    assert!(!token_removed(&h.store.lock().unwrap()));
    let agent = h.spawn(installed(&h).await);
    h.expect("hello after a restart", |s| match s {
        Seen::Registered { .. } => panic!("a restart must not register again"),
        s => hello(s),
    })
    .await;
    h.wait_cluster("the token removed again", token_removed)
        .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_without_a_token_waits_for_one_in_the_bootstrap_secret() {
    let mut h = Harness::start().await;
    let stored = expired_identity(&h, "edge-1");
    h.identity_store().save(&stored).await.unwrap();
    apply_bootstrap(&h, None);
    let agent = h.spawn(installed(&h).await);

    let reads = || {
        h.api
            .paths("GET")
            .iter()
            .filter(|p| p.as_str() == SECRET_PATH)
            .count()
    };
    eventually("the agent looks for a token again and again", || async {
        reads() >= 3
    })
    .await;
    while let Ok(seen) = h.seen.try_recv() {
        assert!(
            !matches!(seen, Seen::Registered { .. } | Seen::Message(_)),
            "nothing happens without a token: {seen:?}"
        );
    }

    apply_bootstrap(&h, Some("good"));
    let (name, public_key) = h.expect("registration", registration).await;
    assert_eq!(name, "edge-1");
    assert_eq!(public_key, public_key_of(&stored.key_pem).unwrap());
    h.expect("hello", hello).await;
    h.wait_cluster("the token removed", token_removed).await;
    agent.stop().await;
}
