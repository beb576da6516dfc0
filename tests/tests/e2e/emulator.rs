//! The Kubernetes API emulator's own tests, driven through kube-rs 5 exactly as the agent drives
//! a real kube-apiserver: discovery (legacy and aggregated), CRDs that become served once
//! Established, server-side apply with ownership and conflicts, defaulting, Status errors,
//! deletion and finalizers, namespaces, selectors, the status subresource, dry runs and watches.
//! Every test starts its own emulator and waits on observed state with a deadline.

use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Discovery, Scope};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt as _};
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

use flotilla_tests::kube_emulator::KubeEmulator;

const DEADLINE: Duration = Duration::from_secs(10);

async fn start() -> (KubeEmulator, Client) {
    let k = KubeEmulator::start().await.expect("emulator starts");
    // These tests are about the API server: no controller writes a status behind their back.
    k.pause_workload_controllers(true);
    let client = k.client().await.expect("client from kubeconfig");
    (k, client)
}

/// The API Status of a failed call.
fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn deployment(name: &str, image: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}],
                    "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}}]},
            },
        },
    })
}

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wg"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer", "default": 1},
                        "color": {"type": "string"},
                    }},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                }}},
            }],
        },
    })
}

fn managers(obj: &Value) -> Vec<(String, String)> {
    let entries = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    entries
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn discovery_serves_builtins_in_both_forms() {
    let (k, client) = start().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.33.0");

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let gvk = GroupVersionKind::gvk("apps", "v1", "Deployment");
    let (ar, caps) = discovery.resolve_gvk(&gvk).expect("deployments discovered");
    assert_eq!(ar.plural, "deployments");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    for (group, kind) in [
        ("", "Namespace"),
        ("", "Secret"),
        ("batch", "Job"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("networking.k8s.io", "Ingress"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ] {
        let gvk = GroupVersionKind::gvk(group, "v1", kind);
        assert!(discovery.resolve_gvk(&gvk).is_some(), "{kind} discovered");
    }

    let (ar, caps) = discovery::pinned_kind(&client, &GroupVersionKind::gvk("", "v1", "Namespace"))
        .await
        .unwrap();
    assert_eq!(
        (ar.plural.as_str(), caps.scope),
        ("namespaces", Scope::Cluster)
    );

    let aggregated = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    let (ar, caps) = aggregated
        .resolve_gvk(&gvk)
        .expect("aggregated discovery has deployments");
    assert_eq!(ar.plural, "deployments");
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    let core = aggregated
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap"))
        .expect("core group aggregated");
    assert_eq!(core.0.plural, "configmaps");
    k.shutdown().await;
}

#[tokio::test]
async fn crd_is_served_only_once_established() {
    let (k, client) = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let created: CustomResourceDefinition = crds
        .patch(
            "widgets.example.com",
            &PatchParams::apply("flotilla").force(),
            &Patch::Apply(widget_crd()),
        )
        .await
        .unwrap();
    let conditions = created
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    assert!(
        conditions.iter().all(|c| c.type_ != "Established"),
        "not established in the create response"
    );
    assert!(
        created
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"customresourcecleanup.apiextensions.k8s.io".into())
    );

    let established = tokio::time::timeout(
        DEADLINE,
        await_condition(
            crds.clone(),
            "widgets.example.com",
            conditions::is_crd_established(),
        ),
    );
    established
        .await
        .expect("established before the deadline")
        .unwrap();

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .expect("widgets discovered");
    assert_eq!(caps.scope, Scope::Namespaced);
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"},
        "spec": {"color": "red", "unknown": true}, "status": {"ready": true}});
    let applied = widgets
        .patch("w1", &PatchParams::apply("flotilla"), &Patch::Apply(widget))
        .await
        .unwrap();
    assert_eq!(
        applied.data["spec"],
        json!({"color": "red", "size": 1}),
        "pruned and defaulted"
    );
    assert!(
        applied.data.get("status").is_none(),
        "status is a subresource"
    );
    assert_eq!(applied.metadata.generation, Some(1));

    let status = json!({"status": {"ready": true}});
    let patched = widgets
        .patch_status("w1", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["ready"], json!(true));
    assert_eq!(patched.metadata.generation, Some(1));

    let crd_uid = crds
        .get("widgets.example.com")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let gone = await_condition(
        crds.clone(),
        "widgets.example.com",
        conditions::is_deleted(&crd_uid),
    );
    tokio::time::timeout(DEADLINE, gone)
        .await
        .expect("CRD removed before the deadline")
        .unwrap();
    let status = api_error(widgets.get("w1").await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "404 page not found")
    );
    let discovery = Discovery::new(client).run().await.unwrap();
    assert!(!discovery.has_group("example.com"));
    k.shutdown().await;
}

#[tokio::test]
async fn unserved_resource_is_a_plain_text_404() {
    let (k, client) = start().await;
    let request = hyper::Request::get("/apis/example.com/v1/namespaces/default/widgets")
        .body(Vec::new())
        .unwrap();
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"));
    let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"404 page not found\n");

    let ar =
        kube::api::ApiResource::from_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let status = api_error(widgets.list(&ListParams::default()).await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "404 page not found")
    );
    k.shutdown().await;
}

#[tokio::test]
async fn apply_creates_updates_and_removes_dropped_fields() {
    let (k, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let apply = PatchParams::apply("flotilla").force();
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"team": "a"}},
        "data": {"a": "1", "b": "2"}});
    let created = cms
        .patch("cfg", &apply, &Patch::Apply(first))
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().unwrap().len(), 2);
    assert_eq!(
        created.metadata.generation, None,
        "ConfigMaps have no generation"
    );
    let raw = k
        .get_object("v1", "ConfigMap", Some("default"), "cfg")
        .unwrap();
    assert_eq!(
        managers(&raw),
        vec![("flotilla".to_string(), "Apply".to_string())]
    );
    let fields = &raw["metadata"]["managedFields"][0]["fieldsV1"];
    assert_eq!(
        fields,
        &json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:team": {}}}})
    );

    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}});
    let updated = cms
        .patch("cfg", &apply, &Patch::Apply(second.clone()))
        .await
        .unwrap();
    assert_eq!(
        updated.data.unwrap().keys().collect::<Vec<_>>(),
        vec!["a"],
        "b removed"
    );
    assert!(
        updated.metadata.labels.unwrap_or_default().is_empty(),
        "label removed"
    );

    let again = cms
        .patch("cfg", &apply, &Patch::Apply(second))
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version, updated.metadata.resource_version,
        "a no-op apply writes nothing"
    );

    let statuses: Vec<u16> = k
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![201, 200, 200]);
    k.shutdown().await;
}

#[tokio::test]
async fn apply_conflicts_unless_forced() {
    let (k, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    deployments
        .patch(
            "web",
            &PatchParams::apply("flotilla"),
            &Patch::Apply(deployment("web", "nginx:1.27", 2)),
        )
        .await
        .unwrap();

    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    deployments
        .patch(
            "web",
            &edit,
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    let live = k
        .get_object("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert!(managers(&live).contains(&("kubectl-edit".to_string(), "Update".to_string())));

    let desired = deployment("web", "nginx:1.28", 2);
    let status = api_error(
        deployments
            .patch(
                "web",
                &PatchParams::apply("flotilla"),
                &Patch::Apply(desired.clone()),
            )
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let causes = status.details.unwrap().causes;
    assert_eq!(
        causes.len(),
        1,
        "only the field whose value differs and is owned elsewhere: {causes:?}"
    );
    assert_eq!(
        (causes[0].reason.as_str(), causes[0].field.as_str()),
        ("FieldManagerConflict", ".spec.replicas")
    );
    assert!(
        causes[0].message.contains("\"kubectl-edit\""),
        "{}",
        causes[0].message
    );
    assert!(
        status.message.starts_with("Apply failed with 1 conflict"),
        "{}",
        status.message
    );

    let forced = deployments
        .patch(
            "web",
            &PatchParams::apply("flotilla").force(),
            &Patch::Apply(desired),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(forced.metadata.generation, Some(3));
    let live = k
        .get_object("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    let edit_entry = live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl-edit");
    assert!(
        edit_entry.is_none_or(|e| e.pointer("/fieldsV1/f:spec/f:replicas").is_none()),
        "ownership moved"
    );
    k.shutdown().await;
}

#[tokio::test]
async fn defaults_match_a_real_server() {
    let (k, client) = start().await;
    let apply = PatchParams::apply("flotilla");
    let mut spec = deployment("web", "registry.local:5000/web:1.2", 1);
    spec["spec"].as_object_mut().unwrap().remove("replicas");
    let d = Api::<Deployment>::namespaced(client.clone(), "default")
        .patch("web", &apply, &Patch::Apply(&spec))
        .await
        .unwrap();
    let d = serde_json::to_value(d).unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
    );
    assert_eq!(
        (
            d["spec"]["revisionHistoryLimit"].clone(),
            d["spec"]["progressDeadlineSeconds"].clone()
        ),
        (json!(10), json!(600))
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        (
            c["terminationMessagePath"].as_str(),
            c["terminationMessagePolicy"].as_str()
        ),
        (Some("/dev/termination-log"), Some("File"))
    );
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "500m", "memory": "1Gi"})
    );
    let live = k
        .get_object("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    let owned = &live["metadata"]["managedFields"][0]["fieldsV1"];
    assert!(
        owned.pointer("/f:spec/f:strategy").is_none(),
        "defaults are not owned by the applier"
    );

    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let s = Api::<Service>::namespaced(client.clone(), "default")
        .patch("web", &apply, &Patch::Apply(&svc))
        .await
        .unwrap();
    let s = serde_json::to_value(s).unwrap()["spec"].clone();
    let ip: std::net::Ipv4Addr = s["clusterIP"].as_str().unwrap().parse().unwrap();
    assert!(
        u32::from(ip) >> 20 == u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) >> 20,
        "{ip} in 10.96.0.0/12"
    );
    assert_eq!(s["clusterIPs"], json!([ip.to_string()]));
    assert_eq!(
        (s["ipFamilies"].clone(), s["sessionAffinity"].clone()),
        (json!(["IPv4"]), json!("None"))
    );
    assert_eq!(
        (
            s["ports"][0]["protocol"].clone(),
            s["ports"][0]["targetPort"].clone()
        ),
        (json!("TCP"), json!(80))
    );
    assert!((30000..=32767).contains(&s["ports"][0]["nodePort"].as_u64().unwrap()));

    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"user": "admin"}});
    let sec = Api::<Secret>::namespaced(client.clone(), "default")
        .patch("creds", &apply, &Patch::Apply(&secret))
        .await
        .unwrap();
    assert_eq!(sec.data.unwrap()["user"].0, b"admin");
    assert!(sec.string_data.is_none());
    assert_eq!(sec.type_.as_deref(), Some("Opaque"));
    let raw = k
        .get_object("v1", "Secret", Some("default"), "creds")
        .unwrap();
    assert!(
        raw.pointer("/metadata/managedFields/0/fieldsV1/f:stringData/f:user")
            .is_some()
    );

    let rv = k.resource_version();
    let again = Api::<Deployment>::namespaced(client.clone(), "default");
    again
        .patch("web", &apply, &Patch::Apply(&spec))
        .await
        .unwrap();
    let again = Api::<Service>::namespaced(client.clone(), "default");
    again
        .patch("web", &apply, &Patch::Apply(&svc))
        .await
        .unwrap();
    let again = Api::<Secret>::namespaced(client, "default");
    again
        .patch("creds", &apply, &Patch::Apply(&secret))
        .await
        .unwrap();
    assert_eq!(
        k.resource_version(),
        rv,
        "re-applying writes nothing despite defaults"
    );
    k.shutdown().await;
}

#[tokio::test]
async fn writes_into_a_missing_namespace_are_not_found() {
    let (k, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "nope");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    let status = api_error(cms.create(&PostParams::default(), &cm).await);
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (404, "NotFound", "namespaces \"nope\" not found")
    );
    let details = status.details.unwrap();
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("nope", "namespaces")
    );
    let applied = cms
        .patch(
            "x",
            &PatchParams::apply("flotilla"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
            ),
        )
        .await;
    assert_eq!(api_error(applied).message, "namespaces \"nope\" not found");
    let status = api_error(cms.get("x").await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "configmaps \"x\" not found")
    );
    k.shutdown().await;
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_causes() {
    let (k, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let bad: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "Bad_Name"}})).unwrap();
    let status = api_error(cms.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(status.details.unwrap().causes[0].field, "metadata.name");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let apply = PatchParams::apply("flotilla").force();
    deployments
        .patch("web", &apply, &Patch::Apply(deployment("web", "nginx", 1)))
        .await
        .unwrap();
    let mut moved = deployment("web", "nginx", 1);
    moved["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
    moved["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let status = api_error(deployments.patch("web", &apply, &Patch::Apply(moved)).await);
    assert_eq!(status.code, 422);
    assert_eq!(status.details.unwrap().causes[0].field, "spec.selector");

    let mut no_image = deployment("api", "x", 1);
    no_image["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("image");
    let status = api_error(
        deployments
            .patch("api", &apply, &Patch::Apply(no_image))
            .await,
    );
    assert_eq!(
        status.details.unwrap().causes[0].field,
        "spec.template.spec.containers[0].image"
    );

    let services: Api<Service> = Api::namespaced(client, "default");
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}});
    services
        .patch("db", &apply, &Patch::Apply(svc.clone()))
        .await
        .unwrap();
    let mut moved = svc;
    moved["spec"]["clusterIP"] = json!("10.96.99.99");
    let status = api_error(services.patch("db", &apply, &Patch::Apply(moved)).await);
    let fields: Vec<String> = status
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert!(
        fields.contains(&"spec.clusterIPs[0]".to_string()),
        "{fields:?}"
    );
    k.shutdown().await;
}

#[tokio::test]
async fn deletion_honours_finalizers_and_namespace_termination() {
    let (k, client) = start().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let plain: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "plain"}})).unwrap();
    cms.create(&PostParams::default(), &plain).await.unwrap();
    assert!(
        cms.delete("plain", &DeleteParams::default())
            .await
            .unwrap()
            .is_right(),
        "Status when gone at once"
    );
    assert!(cms.get_opt("plain").await.unwrap().is_none());

    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &held).await.unwrap();
    let pending = cms
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("object while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());

    let deleting = namespaces
        .delete("team", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("namespace terminates");
    assert_eq!(
        deleting.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let status = api_error(cms.create(&PostParams::default(), &plain).await);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.details.unwrap().causes[0].reason,
        "NamespaceTerminating"
    );

    let uid = deleting.metadata.uid.unwrap();
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let gone = tokio::time::timeout(
        DEADLINE,
        await_condition(namespaces.clone(), "team", conditions::is_deleted(&uid)),
    );
    gone.await
        .expect("namespace removed before the deadline")
        .unwrap();
    assert!(k.list_objects("v1", "ConfigMap", Some("team")).is_empty());
    k.shutdown().await;
}

#[tokio::test]
async fn lists_filter_by_label_and_field_selectors() {
    let (k, client) = start().await;
    for (ns, name, labels) in [
        ("default", "a", json!({"app": "web", "tier": "front"})),
        ("default", "b", json!({"app": "api"})),
        ("kube-public", "c", json!({"app": "web"})),
    ] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        Api::<ConfigMap>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }
    let all: Api<ConfigMap> = Api::all(client.clone());
    let names = |sel: &str| {
        let all = all.clone();
        let sel = sel.to_string();
        async move {
            let list = all.list(&ListParams::default().labels(&sel)).await.unwrap();
            list.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
        }
    };
    assert_eq!(names("app=web").await, vec!["a", "c"]);
    assert_eq!(names("app in (api,web),tier!=front").await, vec!["b", "c"]);
    assert_eq!(names("tier").await, vec!["a"]);
    assert_eq!(names("app,!tier,app notin (api)").await, vec!["c"]);
    let in_default = Api::<ConfigMap>::namespaced(client, "default");
    let by_name = in_default
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    assert!(
        by_name.metadata.resource_version.is_some(),
        "lists carry a resourceVersion"
    );
    let page = all
        .list(&ListParams::default().labels("app").limit(1))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.metadata.continue_.is_some());
    k.shutdown().await;
}

#[tokio::test]
async fn status_subresource_only_changes_status() {
    let (k, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let mut desired = deployment("web", "nginx:1.27", 2);
    desired["status"] = json!({"readyReplicas": 9});
    let created = deployments
        .patch(
            "web",
            &PatchParams::apply("flotilla"),
            &Patch::Apply(desired),
        )
        .await
        .unwrap();
    assert_eq!(
        created.status.and_then(|s| s.ready_replicas),
        None,
        "main resource ignores status"
    );

    let status = json!({"status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2}});
    let patched = deployments
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    assert_eq!(patched.status.unwrap().ready_replicas, Some(2));
    assert_eq!(patched.metadata.generation, Some(1));

    let conditions = json!({"conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}]});
    k.set_status("apps/v1", "Deployment", Some("default"), "web", conditions)
        .unwrap();
    let live = deployments.get_status("web").await.unwrap();
    assert_eq!(live.status.unwrap().conditions.unwrap()[0].status, "False");
    assert_eq!(live.metadata.generation, Some(1));
    k.shutdown().await;
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let (k, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let rv = k.resource_version();
    let preview = deployments
        .patch(
            "web",
            &PatchParams::apply("flotilla").dry_run(),
            &Patch::Apply(deployment("web", "nginx", 1)),
        )
        .await
        .unwrap();
    assert_eq!(
        preview.spec.unwrap().revision_history_limit,
        Some(10),
        "dry run is defaulted"
    );
    assert!(deployments.get_opt("web").await.unwrap().is_none());
    let d: Deployment = serde_json::from_value(deployment("web", "nginx", 1)).unwrap();
    deployments
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &d,
        )
        .await
        .unwrap();
    assert!(deployments.get_opt("web").await.unwrap().is_none());
    assert_eq!(k.resource_version(), rv);
    k.shutdown().await;
}

#[tokio::test]
async fn requests_without_the_token_are_unauthorized() {
    let k = KubeEmulator::start().await.unwrap();
    let kubeconfig = k.kubeconfig().replace(k.token(), "wrong-token");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let status = api_error(
        Api::<ConfigMap>::namespaced(client, "default")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
    k.shutdown().await;
}

#[tokio::test]
async fn watches_stream_changes_and_expire_after_compaction() {
    let (k, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = cms
        .watch(&WatchParams::default().labels("app=w"), &rv)
        .await
        .unwrap()
        .boxed();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "w", "labels": {"app": "w"}}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(DEADLINE, events.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        seen.push(match event {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(seen, vec!["ADDED", "MODIFIED", "DELETED"]);

    k.compact_watch_history();
    let mut expired = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(DEADLINE, expired.next())
        .await
        .expect("answer in time")
    {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    k.shutdown().await;
}

#[tokio::test]
async fn serves_http2_when_negotiated() {
    let k = KubeEmulator::start().await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls_pki_types::CertificateDer::from_pem_slice(k.ca_pem().as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let addr = k.url().trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    let request = hyper::Request::get(format!("{}/version", k.url()))
        .header("authorization", format!("Bearer {}", k.token()))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(
        (response.status().as_u16(), response.version()),
        (200, hyper::Version::HTTP_2)
    );
    drop(sender);
    driver.abort();
    k.shutdown().await;
}

#[tokio::test]
async fn apply_removes_list_items_it_no_longer_applies() {
    let (k, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let apply = PatchParams::apply("flotilla");
    let mut two = deployment("web", "nginx:1.27", 1);
    let sidecar =
        json!({"name": "sidecar", "image": "envoy:1.30", "env": [{"name": "A", "value": "1"}]});
    two["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(sidecar);
    deployments
        .patch("web", &apply, &Patch::Apply(two))
        .await
        .unwrap();
    let live = k
        .get_object("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    let owned = &live["metadata"]["managedFields"][0]["fieldsV1"];
    let containers = &owned["f:spec"]["f:template"]["f:spec"]["f:containers"];
    assert!(
        containers["k:{\"name\":\"sidecar\"}"]["."].is_object(),
        "{containers}"
    );
    assert!(containers["k:{\"name\":\"app\"}"]["f:ports"]["k:{\"containerPort\":8080,\"protocol\":\"TCP\"}"].is_object());

    let one = deployments
        .patch(
            "web",
            &apply,
            &Patch::Apply(deployment("web", "nginx:1.27", 1)),
        )
        .await
        .unwrap();
    let names: Vec<String> = one
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["app"]);
    k.shutdown().await;
}

#[tokio::test]
async fn stale_updates_and_duplicate_creates_conflict() {
    let (k, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap();
    let first = cms.create(&PostParams::default(), &cm).await.unwrap();
    let status = api_error(cms.create(&PostParams::default(), &cm).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );

    let mut newer = first.clone();
    newer.data = Some([("a".to_string(), "2".to_string())].into());
    cms.replace("c", &PostParams::default(), &newer)
        .await
        .unwrap();
    let status = api_error(cms.replace("c", &PostParams::default(), &newer).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );

    let status = api_error(cms.create(&PostParams::default(), &first).await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            500,
            "resourceVersion should not be set on objects to be created"
        )
    );
    k.shutdown().await;
}

#[tokio::test]
async fn generation_moves_on_spec_and_deployment_annotations() {
    let (k, client) = start().await;
    let deployments: Api<Deployment> = Api::namespaced(client, "default");
    let apply = PatchParams::apply("flotilla");
    let generation = |d: Deployment| d.metadata.generation.unwrap();
    let d = deployments
        .patch(
            "web",
            &apply,
            &Patch::Apply(deployment("web", "nginx:1", 1)),
        )
        .await
        .unwrap();
    assert_eq!(generation(d), 1);
    let d = deployments
        .patch(
            "web",
            &apply,
            &Patch::Apply(deployment("web", "nginx:2", 1)),
        )
        .await
        .unwrap();
    assert_eq!(generation(d), 2);
    let mut annotated = deployment("web", "nginx:2", 1);
    annotated["metadata"]["annotations"] = json!({"example.com/note": "x"});
    let d = deployments
        .patch("web", &apply, &Patch::Apply(annotated.clone()))
        .await
        .unwrap();
    assert_eq!(generation(d), 3);
    let labels = json!({"metadata": {"labels": {"extra": "y"}}});
    let d = deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(labels))
        .await
        .unwrap();
    assert_eq!(generation(d), 3, "labels are metadata");
    k.shutdown().await;
}

#[tokio::test]
async fn protocol_errors_are_statuses() {
    let (k, client) = start().await;
    let send = |method: &str, path: &str, content_type: &str, body: Value| {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        let client = client.clone();
        async move { client.request::<Value>(request).await }
    };
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    let wrong_kind = send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        secret,
    )
    .await;
    assert_eq!(api_error(wrong_kind).reason, "BadRequest");

    let cm = json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let wrong_group = send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        cm,
    )
    .await;
    assert_eq!(api_error(wrong_group).code, 400);

    let collection_put = send(
        "PUT",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        json!({}),
    )
    .await;
    assert_eq!(api_error(collection_put).reason, "MethodNotAllowed");

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    let path = "/api/v1/namespaces/default/configmaps/c";
    let no_manager = api_error(send("PATCH", path, "application/apply-patch+yaml", cm).await);
    assert_eq!(
        (no_manager.code, no_manager.reason.as_str()),
        (422, "Invalid")
    );
    assert_eq!(no_manager.details.unwrap().causes[0].field, "fieldManager");

    let unknown = send("PATCH", path, "text/plain", json!({})).await;
    assert_eq!(api_error(unknown).reason, "UnsupportedMediaType");
    k.shutdown().await;
}

#[tokio::test]
async fn direct_access_and_shutdown() {
    let (k, client) = start().await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "d", "namespace": "default"}, "data": {"a": "1"}});
    k.create_object("kubectl-create", cm).unwrap();
    let edited = k
        .edit_object(
            "v1",
            "ConfigMap",
            Some("default"),
            "d",
            "kubectl-edit",
            |o| {
                o["data"]["a"] = json!("2");
            },
        )
        .unwrap();
    assert_eq!(edited["data"]["a"], "2");
    let managers = managers(&edited);
    assert!(managers.contains(&("kubectl-create".to_string(), "Update".to_string())));
    assert!(managers.contains(&("kubectl-edit".to_string(), "Update".to_string())));
    let seen = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .get("d")
        .await
        .unwrap();
    assert_eq!(seen.data.unwrap()["a"], "2");
    k.delete_object("v1", "ConfigMap", Some("default"), "d")
        .unwrap();
    assert!(
        k.get_object("v1", "ConfigMap", Some("default"), "d")
            .is_none()
    );
    assert!(k.request_count() >= 1);

    let clone = k.clone();
    drop(clone);
    let still = Api::<ConfigMap>::namespaced(client, "default");
    still
        .list(&ListParams::default())
        .await
        .expect("a dropped clone does not stop the server");
    let addr = k.url().trim_start_matches("https://").to_string();
    k.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "listener closed"
    );
}
