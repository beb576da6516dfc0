//! The page's routes against a real fleet index on a temporary store: pages and fragments,
//! the 404 for an unknown cluster, security headers, JSON views, and the live stream's first
//! event and its end on shutdown.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

use super::*;
use crate::model::{Cluster, ClusterId};
use crate::store::Store;

struct Setup {
    _dir: tempfile::TempDir,
    fleet: Arc<Fleet>,
    shutdown: CancellationToken,
    app: Router,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let fleet = Fleet::load(Store::open(dir.path()).unwrap()).unwrap();
    fleet
        .add_cluster(Cluster {
            id: ClusterId::new(),
            name: "east".into(),
            labels: BTreeMap::from([("env".into(), "<prod>".into())]),
            registered_at: 0,
            agent_version: String::new(),
            kubernetes_version: String::new(),
            token_id: String::new(),
            certificate: Default::default(),
        })
        .unwrap();
    let shutdown = CancellationToken::new();
    let app = router(fleet.clone(), shutdown.clone());
    Setup {
        _dir: dir,
        fleet,
        shutdown,
        app,
    }
}

async fn get(app: &Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let r = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = r.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn pages_and_fragments() {
    let s = setup();
    let (code, headers, body) = get(&s.app, "/").await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.starts_with("<!DOCTYPE html>") && body.contains("1 clusters, 0 connected"));
    assert!(body.contains(r#"data-fragment="/?fragment=1""#));
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(headers.contains_key(VERSION_HEADER));

    let (code, _, fragment) = get(&s.app, "/?fragment=1").await;
    assert_eq!(code, StatusCode::OK);
    assert!(fragment.starts_with("<h1>Fleet</h1>"), "{fragment}");

    let (code, _, cluster) = get(&s.app, "/clusters/east").await;
    assert_eq!(code, StatusCode::OK);
    assert!(cluster.contains("Cluster east") && cluster.contains("<code>env=&lt;prod&gt;</code>"));
    assert!(cluster.contains(r#"data-fragment="/clusters/east?fragment=1""#));

    let (code, _, list) = get(&s.app, "/clusters").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        list.contains(r#"<a href="/clusters/east">east</a>"#),
        "{list}"
    );

    let (code, _, gitrepo) = get(&s.app, "/gitrepos/apps").await;
    assert_eq!(code, StatusCode::OK);
    assert!(gitrepo.contains("Nothing is deployed from a GitRepo named “apps”"));

    let (code, _, css) = get(&s.app, "/ui/flotilla.css").await;
    assert!(code == StatusCode::OK && css.contains(".s-errapplied"));
}

#[tokio::test]
async fn an_unknown_cluster_is_a_404_that_says_what_to_do() {
    let s = setup();
    let (code, _, body) = get(&s.app, "/clusters/%3Cwest%3E").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body.contains("No cluster named “&lt;west&gt;”"), "{body}");
    assert!(body.contains("flotilla cluster list"));
    assert!(body.contains(r#"data-fragment="/clusters/%3Cwest%3E?fragment=1""#));
    let (code, _, json) = get(&s.app, "/api/v1/status/clusters/west").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(json.contains("flotilla cluster list"));
}

#[tokio::test]
async fn json_views() {
    let s = setup();
    let (code, headers, body) = get(&s.app, "/api/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["clusters"]["total"], 1);
    let (_, _, body) = get(&s.app, "/api/v1/status/clusters/east").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], "east");
    let (code, _, body) = get(&s.app, "/api/v1/status/gitrepos/apps").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["name"],
        "apps"
    );
}

#[tokio::test]
async fn live_stream_sends_the_version_and_ends_on_shutdown() {
    let s = setup();
    let r = s
        .app
        .clone()
        .oneshot(Request::get("/ui/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = r.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    let first = String::from_utf8_lossy(&first);
    let version = *s.fleet.subscribe().borrow();
    assert!(
        first.contains("event: status") && first.contains(&format!("data: {version}")),
        "{first}"
    );
    s.shutdown.cancel();
    assert!(body.next().await.is_none(), "the stream ends with the hub");
}

#[test]
fn no_ui_turns_the_page_off() {
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        ui: UiArgs,
    }
    let mut config = crate::HubConfig::new("d".into());
    assert!(config.ui, "on by default");
    <Serve as clap::Parser>::parse_from(["serve"])
        .ui
        .apply(&mut config);
    assert!(config.ui);
    <Serve as clap::Parser>::parse_from(["serve", "--no-ui"])
        .ui
        .apply(&mut config);
    assert!(!config.ui);
}
