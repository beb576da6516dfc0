//! The agent's main flow against the fake hub: registration, `Hello`, `Ping`/`Pong`, deploy →
//! fetch → `Ack` → status, resends, removal, restart without a token, and a refused token.

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::harness::*;
use crate::AgentError;
use flotilla_proto::agent::v1 as pb;
use flotilla_proto::agent::v1::agent_message::Kind as Out;
use flotilla_proto::agent::v1::hub_message::Kind as In;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_deploys_reports_removes_and_restarts_without_a_token() {
    let mut h = Harness::start().await;
    let agent = h.spawn_agent(Some("good")).await;

    assert_eq!(h.expect("registration", registered).await, "edge-1");
    let first = h.expect("hello", hello).await;
    assert!(first.held.is_empty());
    assert_eq!(first.agent_version, env!("CARGO_PKG_VERSION"));

    h.send(In::Ping(pb::Ping { nonce: 7 })).await;
    let pong = h.expect("pong", pong_nonce).await;
    assert_eq!(pong, 7);

    let cm = h.offer(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}}));
    let web = h.offer(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}}));
    let deploy = pb::BundleDeployment {
        deployment_id: "apps/app".into(),
        bundle: "apps/app".into(),
        revision: "r1".into(),
        content_hash: "h1".into(),
        default_namespace: "apps".into(),
        manifests: vec![cm.clone(), web.clone()],
        ..Default::default()
    };
    h.send(In::Deploy(deploy.clone())).await;
    let mut fetched = h.expect("fetch", fetch_hashes).await;
    fetched.sort();
    let mut wanted = vec![cm.hash.clone(), web.hash.clone()];
    wanted.sort();
    assert_eq!(fetched, wanted);
    let ack = h.expect("ack", acked).await;
    assert_eq!(
        (ack.deployment_id.as_str(), ack.content_hash.as_str()),
        ("apps/app", "h1")
    );
    // No controller runs here, so the Deployment stays NotReady: applied, not rolled out.
    let ready = h
        .expect("applied", |s| match s {
            Seen::Message(Out::Status(r)) => r
                .deployments
                .into_iter()
                .find(|d| d.state() == pb::DeploymentState::NotReady),
            _ => None,
        })
        .await;
    assert_eq!((ready.revision.as_str(), ready.objects.len()), ("r1", 2));
    let states: Vec<(&str, pb::ObjectState, &str)> = ready
        .objects
        .iter()
        .map(|o| (o.kind.as_str(), o.state(), o.namespace.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("ConfigMap", pb::ObjectState::Ready, "apps"),
            ("Deployment", pb::ObjectState::NotReady, "apps")
        ]
    );
    assert!(
        ready
            .message
            .starts_with("app/web.yaml#0: Deployment/web: Deployment web: 0 of 1 replicas"),
        "{}",
        ready.message
    );
    assert!(
        h.store
            .lock()
            .unwrap()
            .contains_key("/apis/apps/v1/namespaces/apps/deployments/web")
    );

    // The same content again is acknowledged without fetching anything.
    h.send(In::Deploy(deploy)).await;
    let again = h
        .expect("second ack", |s| match s {
            Seen::Fetch(_) => panic!("nothing should be fetched for a resend"),
            s => acked(s),
        })
        .await;
    assert_eq!(again.content_hash, "h1");

    agent.stop().await;

    // A restart needs no token: the identity is stored, and Hello tells what is held.
    let agent = h.spawn_agent(None).await;
    let second = h
        .expect("hello after restart", |s| match s {
            Seen::Registered { .. } => panic!("a restart must not register again"),
            s => hello(s),
        })
        .await;
    assert_eq!(second.held.len(), 1);
    assert_eq!(
        (
            second.held[0].deployment_id.as_str(),
            second.held[0].content_hash.as_str()
        ),
        ("apps/app", "h1")
    );

    h.send(In::Remove(pb::Removal {
        deployment_id: "apps/app".into(),
        keep_resources: false,
    }))
    .await;
    h.wait_cluster("removal", |objects| {
        !objects.keys().any(|k| {
            k.contains("/deployments/web")
                || k.contains("/configmaps/settings")
                || k.contains("flotilla-inv-")
        })
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_stops_the_agent_with_advice_and_no_token_is_asked_for() {
    let h = Harness::start().await;
    let err = tokio::time::timeout(
        DEADLINE,
        crate::run(h.config(Some("bad")).await, CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, AgentError::TokenRefused(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("flotilla token create") && !text.contains("bad"),
        "{text}"
    );

    let err = crate::run(h.config(None).await, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::NoToken), "{err}");
}
