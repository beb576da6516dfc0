//! The identity over time: renewal on the live stream before expiry (no reconnect, a new key
//! stored), a trust update with `renew`, and registering again with the stored key after the
//! certificate expired while the agent was offline.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::hub_message::Kind as In;
use serde_json::json;

use super::harness::*;
use crate::identity::{Identity, cert_info, new_key_and_csr, public_key_of};

/// An identity of cluster `name` whose certificate (from the harness's CA) expired an hour ago.
pub(crate) fn expired_identity(h: &Harness, name: &str) -> Identity {
    let made = new_key_and_csr(name).unwrap();
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(&made.csr_pem).unwrap();
    let now = SystemTime::now();
    csr.params.not_before = (now - Duration::from_secs(7200)).into();
    csr.params.not_after = (now - Duration::from_secs(3600)).into();
    csr.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    Identity {
        cluster_id: "c-1".into(),
        cluster_name: name.into(),
        key_pem: made.key_pem,
        cert_pem: csr.signed_by(&h.hub.0.issuer).unwrap().pem(),
        ca_pem: h.ca_pem(),
        hub_url: h.url.clone(),
    }
}

/// Whether the stored identity has a certificate for the key `public_key`, stored with it.
async fn stored_with_key(h: &Harness, public_key: &[u8]) -> bool {
    let Ok(Some(stored)) = h.identity_store().load().await else {
        return false;
    };
    public_key_of(&stored.key_pem).unwrap() == public_key
        && cert_info(&stored.cert_pem).unwrap().public_key == public_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_on_the_live_stream_before_expiry_and_stores_the_new_key() {
    let mut h = Harness::start().await;
    h.issue_for(Duration::from_secs(3));
    h.hub.0.refuse_renewals.store(1, Ordering::SeqCst);
    let agent = h.spawn_agent(Some("good")).await;
    let (_, first_key) = h.expect("registration", registration).await;
    h.expect("hello", hello).await;
    let first = h.identity_store().load().await.unwrap().unwrap();
    let first_expiry = cert_info(&first.cert_pem).unwrap().not_after;

    // The first request is refused; the agent asks again on the same stream.
    let key = h.expect("a renewal", renewed).await;
    assert_ne!(key, first_key, "a renewal brings a new key");
    assert_eq!(h.hub.0.refuse_renewals.load(Ordering::SeqCst), 0);
    eventually("the renewed identity is stored", || {
        stored_with_key(&h, &key)
    })
    .await;

    // Renewals go on; past the first certificate's expiry the stream still stands.
    let key = h.expect("a second renewal", renewed).await;
    eventually("the first certificate expired", || async {
        SystemTime::now() > first_expiry + Duration::from_millis(100)
    })
    .await;
    h.send(In::Ping(pb::Ping { nonce: 9 })).await;
    assert_eq!(h.expect("pong", pong_nonce).await, 9);
    eventually("the second renewal is stored", || stored_with_key(&h, &key)).await;

    // The hub now refuses the stream's first certificate for new calls: manifests are
    // fetched over a connection with a current one.
    let cm = h.offer(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
    h.send(In::Deploy(pb::BundleDeployment {
        deployment_id: "apps/app".into(),
        bundle: "apps/app".into(),
        revision: "r1".into(),
        content_hash: "h1".into(),
        default_namespace: "apps".into(),
        manifests: vec![cm],
        ..Default::default()
    }))
    .await;
    h.expect("fetch", fetch_hashes).await;
    assert_eq!(h.expect("ack", acked).await.content_hash, "h1");
    assert_eq!(h.connects(), 1, "the stream was never reconnected");
    assert_eq!(
        h.identity_store().load().await.unwrap().unwrap().cluster_id,
        "c-1"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_update_stores_the_bundle_and_renews_at_once() {
    let mut h = Harness::start().await;
    let agent = h.spawn_agent(Some("good")).await;
    h.expect("hello", hello).await;

    // A CA rotation begins: the hub trusts (and hands out) both CAs.
    let bundle = format!("{}{}", h.ca_pem(), new_ca().pem());
    *h.hub.0.bundle.lock().unwrap() = bundle.clone();
    h.send(In::Trust(pb::TrustUpdate {
        ca_bundle_pem: bundle.clone(),
        renew: true,
    }))
    .await;
    let key = h.expect("a renewal asked for by the hub", renewed).await;
    eventually("the bundle and the new key are stored", || async {
        stored_with_key(&h, &key).await
            && h.identity_store().load().await.unwrap().unwrap().ca_pem == bundle
    })
    .await;
    agent.stop().await;

    // New connections trust the whole bundle and present the renewed certificate.
    let agent = h.spawn_agent(None).await;
    h.expect("hello after a restart", hello).await;
    assert_eq!(h.connects(), 2);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_replaced_by_registering_again_with_the_stored_key() {
    let mut h = Harness::start().await;
    // Stored under another name than the configured one: the stored name is the cluster's.
    let stored = expired_identity(&h, "edge-9");
    h.identity_store().save(&stored).await.unwrap();

    let agent = h.spawn_agent(Some("good")).await;
    let (name, public_key) = h.expect("registration", registration).await;
    assert_eq!(name, "edge-9");
    assert_eq!(public_key, public_key_of(&stored.key_pem).unwrap());
    h.expect("hello", hello).await;
    let now = h.identity_store().load().await.unwrap().unwrap();
    assert_eq!(
        (now.cluster_id.as_str(), now.key_pem.as_str()),
        ("c-1", stored.key_pem.as_str()),
        "same cluster, same key"
    );
    assert!(cert_info(&now.cert_pem).unwrap().not_after > SystemTime::now());
    agent.stop().await;
}
