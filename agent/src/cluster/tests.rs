//! The kube path against a scripted API server: request shapes, error bodies, retries.

use serde_json::json;

use super::fake::{FakeApi, Reply};
use super::*;

fn core_v1() -> serde_json::Value {
    json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "namespaces", "namespaced": false, "kind": "Namespace", "verbs": ["get"]},
        {"name": "configmaps", "namespaced": true, "kind": "ConfigMap", "verbs": ["get"]},
        {"name": "pods/log", "namespaced": true, "kind": "Pod", "verbs": ["get"]}
    ]})
}

#[tokio::test]
async fn apply_is_a_forced_server_side_apply_by_flotilla() {
    let api = FakeApi::start(|r| match r.path() {
        "/api/v1" => Reply::json(200, core_v1()),
        _ => Reply::json(200, json!({})),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = api.cluster(dir.path()).await;
    let r = cluster.resolve("v1", "ConfigMap").await.unwrap().unwrap();
    assert!(r.namespaced);
    assert_eq!(r.resource.plural, "configmaps");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "web"}});
    cluster
        .apply_object(&r, "web", "c", &body, Retry::Transient)
        .await
        .unwrap();

    let patch = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap();
    assert_eq!(patch.path(), "/api/v1/namespaces/web/configmaps/c");
    assert!(
        patch.target.contains("fieldManager=flotilla"),
        "{}",
        patch.target
    );
    assert!(patch.target.contains("force=true"), "{}", patch.target);
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    assert_eq!(patch.json(), body);
    // A dry run is the same apply with `dryRun=All`.
    cluster.dry_run_apply(&r, "web", "c", &body).await.unwrap();
    let dry = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .nth(1)
        .unwrap();
    assert!(
        dry.target.contains("dryRun=All") && dry.target.contains("force=true"),
        "{}",
        dry.target
    );
    assert_eq!((dry.path(), dry.json()), (patch.path(), body.clone()));
    // Discovery was asked once; the second lookup is cached.
    cluster.resolve("v1", "Namespace").await.unwrap().unwrap();
    assert_eq!(
        api.requests()
            .iter()
            .filter(|r| r.path() == "/api/v1")
            .count(),
        1
    );
}

#[tokio::test]
async fn throttling_is_retried_honouring_retry_after_and_invalid_is_not() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let api = FakeApi::start(move |r| match (r.method.as_str(), r.path()) {
        ("GET", "/api/v1") => Reply::json(200, core_v1()),
        ("PATCH", "/api/v1/namespaces/web/configmaps/busy") => {
            if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                let mut reply = Reply::text(429, "Too many requests, please try again later.\n");
                reply.headers.push(("retry-after", "0".into()));
                reply
            } else {
                Reply::json(200, json!({}))
            }
        }
        _ => Reply::json(422, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,
            "reason": "Invalid", "message": "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"})),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = api.cluster(dir.path()).await;
    let r = cluster.resolve("v1", "ConfigMap").await.unwrap().unwrap();
    cluster
        .apply_object(&r, "web", "busy", &json!({}), Retry::Transient)
        .await
        .unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);

    let e = cluster
        .apply_object(&r, "web", "Bad_Name", &json!({}), Retry::AlsoNotFound)
        .await
        .unwrap_err();
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        e.message,
        "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"
    );
    let bad = api
        .requests()
        .iter()
        .filter(|r| r.target.contains("Bad_Name"))
        .count();
    assert_eq!(bad, 1, "a 422 is final");
}

#[tokio::test]
async fn unserved_kinds_answer_plain_text_404_and_resolve_to_none() {
    let api = FakeApi::start(|r| match r.path() {
        "/apis/example.com/v1" => Reply::text(404, "404 page not found\n"),
        "/apis/example.com/v1/namespaces/web/widgets/w" => Reply::text(404, "404 page not found\n"),
        _ => Reply::text(500, ""),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = api.cluster(dir.path()).await;
    assert_eq!(
        cluster.resolve("example.com/v1", "Widget").await.unwrap(),
        None
    );
    let widget = Resolved {
        resource: kube::discovery::ApiResource {
            group: "example.com".into(),
            version: "v1".into(),
            api_version: "example.com/v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
        },
        namespaced: true,
    };
    assert_eq!(cluster.get_object(&widget, "web", "w").await.unwrap(), None);
    cluster
        .delete_object(&widget, "web", "w", &json!({}))
        .await
        .unwrap();
    let e = cluster
        .apply_object(&widget, "web", "w", &json!({}), Retry::Transient)
        .await
        .unwrap_err();
    assert_eq!((e.code, e.message.as_str()), (404, "404 page not found"));
}

#[tokio::test]
async fn deletes_propagate_in_the_background_and_only_hit_the_object_as_read() {
    let api = FakeApi::start(|r| match r.path() {
        "/api/v1" => Reply::json(200, core_v1()),
        _ => Reply::json(200, json!({"kind": "Status", "status": "Success"})),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = api.cluster(dir.path()).await;
    let r = cluster.resolve("v1", "ConfigMap").await.unwrap().unwrap();
    let read = json!({"metadata": {"name": "c", "uid": "u-1", "resourceVersion": "42"}});
    cluster.delete_object(&r, "web", "c", &read).await.unwrap();
    let delete = api
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .unwrap();
    assert_eq!(delete.path(), "/api/v1/namespaces/web/configmaps/c");
    assert_eq!(delete.json()["propagationPolicy"], "Background");
    assert_eq!(
        delete.json()["preconditions"],
        json!({"uid": "u-1", "resourceVersion": "42"})
    );
}

#[tokio::test]
async fn merge_patches_are_sent_as_given_and_a_conflict_is_reported() {
    let api = FakeApi::start(|r| match r.path() {
        "/api/v1" => Reply::json(200, core_v1()),
        _ => Reply::json(
            409,
            json!({"kind": "Status", "status": "Failure", "code": 409, "reason": "Conflict",
            "message": "the object has been modified"}),
        ),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = api.cluster(dir.path()).await;
    let r = cluster.resolve("v1", "ConfigMap").await.unwrap().unwrap();
    let patch = json!({"metadata": {"resourceVersion": "42", "annotations": {"a": null}}});
    let e = cluster
        .merge_patch_object(&r, "web", "c", &patch)
        .await
        .unwrap_err();
    assert!(e.is_conflict(), "{e:?}");
    let sent: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(sent.len(), 1, "a conflict is not retried here");
    assert_eq!(sent[0].path(), "/api/v1/namespaces/web/configmaps/c");
    assert_eq!(sent[0].content_type, "application/merge-patch+json");
    assert_eq!(sent[0].json(), patch);
}

#[tokio::test]
async fn inventories_are_listed_by_label_across_pages() {
    let cm = |id: &str| {
        json!({"metadata": {"name": crate::plan::inventory_name(id)},
        "data": {"deploymentId": id, "contentHash": format!("h-{id}"), "objects": "[]"}})
    };
    let api = FakeApi::start(move |r| {
        assert!(r.target.contains("labelSelector=flotilla.dev%2Finventory%3Dtrue"), "{}", r.target);
        if r.target.contains("continue=next") {
            Reply::json(200, json!({"metadata": {}, "items": [cm("b"), {"metadata": {"name": "broken"}, "data": {}}]}))
        } else {
            Reply::json(200, json!({"metadata": {"continue": "next"}, "items": [cm("a")]}))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = api.cluster(dir.path()).await;
    let found = cluster.list_inventories().await.unwrap();
    let ids: Vec<_> = found
        .iter()
        .map(|i| (i.deployment_id.as_str(), i.content_hash.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("a", "h-a"), ("b", "h-b")],
        "the broken one is skipped"
    );
    assert!(
        api.requests()
            .iter()
            .all(|r| r.path() == "/api/v1/namespaces/flotilla-system/configmaps")
    );
}

#[tokio::test]
async fn the_server_version_is_its_git_version() {
    let api = FakeApi::start(|_| {
        Reply::json(
            200,
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.3"}),
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        api.cluster(dir.path())
            .await
            .server_version()
            .await
            .unwrap(),
        "v1.32.3"
    );
}
