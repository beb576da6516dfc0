//! Plain-YAML bundles: overlays that replace, patch and add; namespaces; excluded files.

use serde_json::json;

use super::*;

/// After rancher/fleet-examples multi-cluster/manifests (overlays noreplication, scale3,
/// servicelb), plus a JSON-patch overlay and a custom resource patched by merge patch.
const MANIFESTS: &str = "
-- mc/fleet.yaml
namespace: fleet-mc-manifest-example
targetCustomizations:
- name: dev
  clusterSelector: {matchLabels: {env: dev}}
  yaml: {overlays: [noreplication]}
- name: test
  clusterSelector: {matchLabels: {env: test}}
  yaml: {overlays: [scale3]}
- name: prod
  clusterSelector: {matchLabels: {env: prod}}
  yaml: {overlays: [servicelb, scale3]}
- name: json
  clusterName: j
  yaml: {overlays: [jsonpatch]}
-- mc/frontend-deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
spec:
  replicas: 1
  template:
    spec:
      containers:
      - name: php-redis
        image: gcr.io/google-samples/gb-frontend:v4
        env: [{name: GET_HOSTS_FROM, value: dns}]
        ports: [{containerPort: 80}]
      - name: sidecar
        image: busybox
-- mc/frontend-service.yaml
apiVersion: v1
kind: Service
metadata:
  name: frontend
spec:
  type: NodePort
  ports: [{port: 80}]
-- mc/redis-follower-service.yaml
apiVersion: v1
kind: Service
metadata:
  name: redis-follower
spec:
  ports: [{port: 6379}]
  selector: {app: redis, role: follower}
-- mc/widget.yaml
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w
spec:
  sizes: [1, 2]
  color: red
-- mc/overlays/noreplication/redis-follower-service_patch.yaml
spec:
  selector:
    role: leader
-- mc/overlays/noreplication/widget_patch.yaml
spec:
  sizes: [3]
  color: null
-- mc/overlays/scale3/frontend-deployment_patch.yaml
spec:
  replicas: 3
  template:
    spec:
      containers:
      - name: php-redis
        env: [{name: SCALE, value: '3'}]
        ports: [{containerPort: 80, name: http}]
      - name: sidecar
        $patch: delete
-- mc/overlays/servicelb/frontend-service.yaml
apiVersion: v1
kind: Service
metadata:
  name: frontend
spec:
  type: LoadBalancer
  ports: [{port: 80}]
-- mc/overlays/servicelb/extra/configmap.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: lb-settings
-- mc/overlays/jsonpatch/frontend-deployment_patch.yaml
- {op: replace, path: /spec/replicas, value: 5}
- {op: add, path: /spec/template/spec/containers/0/args, value: [--verbose]}
- {op: remove, path: /spec/template/spec/containers/1}
- {op: test, path: /metadata/name, value: frontend}
-- mc/.hidden/secret.yaml
apiVersion: v1
kind: Secret
metadata: {name: hidden}
";

fn plain() -> Renderers {
    Renderers::default()
}

#[tokio::test]
async fn base_files_render_into_the_forced_namespace() {
    let r = render_repo(&plain(), MANIFESTS, "mc", None).await.unwrap();
    assert_eq!(
        names(&r),
        [
            "Deployment/frontend",
            "Service/frontend",
            "Service/redis-follower",
            "Widget/w"
        ],
        "hidden directories and overlays/ are not manifests"
    );
    assert_eq!(r.default_namespace, "fleet-mc-manifest-example");
    assert!(
        r.objects
            .iter()
            .all(|o| o.object["metadata"]["namespace"] == "fleet-mc-manifest-example")
    );
    assert_eq!(r.objects[0].source, "mc/frontend-deployment.yaml#1");
}

#[tokio::test]
async fn overlay_patches_merge_by_kind() {
    let dev = render_repo(&plain(), MANIFESTS, "mc", Some("dev"))
        .await
        .unwrap();
    // Strategic merge on a built-in kind: maps merge.
    assert_eq!(
        object(&dev, "Service/redis-follower")["spec"]["selector"],
        json!({"app": "redis", "role": "leader"})
    );
    // JSON merge patch on a custom resource: lists replace, null deletes.
    assert_eq!(object(&dev, "Widget/w")["spec"], json!({"sizes": [3]}));

    let test = render_repo(&plain(), MANIFESTS, "mc", Some("test"))
        .await
        .unwrap();
    let d = object(&test, "Deployment/frontend");
    assert_eq!(d["spec"]["replicas"], 3);
    // Containers, env and ports merge by their keys; `$patch: delete` removes one.
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"],
        json!([{
            "name": "php-redis",
            "image": "gcr.io/google-samples/gb-frontend:v4",
            "env": [{"name": "GET_HOSTS_FROM", "value": "dns"}, {"name": "SCALE", "value": "3"}],
            "ports": [{"containerPort": 80, "name": "http"}],
        }])
    );
}

#[tokio::test]
async fn overlays_replace_add_and_stack_in_order() {
    let prod = render_repo(&plain(), MANIFESTS, "mc", Some("prod"))
        .await
        .unwrap();
    assert_eq!(
        names(&prod),
        [
            "ConfigMap/lb-settings",
            "Deployment/frontend",
            "Service/frontend",
            "Service/redis-follower",
            "Widget/w"
        ],
        "in order of the names the files have in the bundle"
    );
    let svc = &prod.objects[2];
    assert_eq!(svc.object["spec"]["type"], "LoadBalancer");
    assert_eq!(svc.source, "mc/overlays/servicelb/frontend-service.yaml#1");
    assert_eq!(
        prod.objects[0].source,
        "mc/overlays/servicelb/extra/configmap.yaml#1"
    );
    assert_eq!(object(&prod, "Deployment/frontend")["spec"]["replicas"], 3);

    let json = render_repo(&plain(), MANIFESTS, "mc", Some("json"))
        .await
        .unwrap();
    let d = object(&json, "Deployment/frontend");
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["--verbose"])
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A later overlay replaces what an earlier one wrote.
    let stacked = "
-- fleet.yaml
yaml: {overlays: [a, b]}
-- cm.yaml
{apiVersion: v1, kind: ConfigMap, metadata: {name: cm}, data: {v: base}}
-- overlays/a/cm.yaml
{apiVersion: v1, kind: ConfigMap, metadata: {name: cm}, data: {v: a}}
-- overlays/b/cm_patch.yaml
data: {w: b}
";
    let r = render_repo(&plain(), stacked, "", None).await.unwrap();
    assert_eq!(r.objects[0].object["data"], json!({"v": "a", "w": "b"}));
    assert_eq!(r.default_namespace, "default");
}

#[tokio::test]
async fn a_patch_without_its_base_file_names_the_overlay_file() {
    let spec = "
-- app/fleet.yaml
yaml: {overlays: [x]}
-- app/cm.yaml
{apiVersion: v1, kind: ConfigMap, metadata: {name: cm}}
-- app/overlays/x/missing_patch.yaml
data: {a: b}
";
    let e = render_repo(&plain(), spec, "app", None).await.unwrap_err();
    assert_eq!(e.bundle, "app");
    assert_eq!(e.file, "app/overlays/x/missing_patch.yaml");
    assert_eq!(
        e.to_string(),
        "bundle app: app/overlays/x/missing_patch.yaml: patches missing.yaml, which is not a file of the bundle"
    );
}

#[tokio::test]
async fn namespace_refuses_cluster_scoped_objects_and_default_namespace_does_not() {
    let spec = "
-- app/fleet.yaml
namespace: web
targetCustomizations: [{name: lax, clusterName: c, namespace: '', defaultNamespace: apps}]
-- app/role.yaml
{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRole, metadata: {name: reader}}
";
    let e = render_repo(&plain(), spec, "app", None).await.unwrap_err();
    assert_eq!(e.file, "app/role.yaml#1");
    assert!(
        e.message
            .starts_with("invalid cluster scoped object [name=reader kind=ClusterRole"),
        "{e}"
    );
    // An empty namespace in a customization does not unset fleet.yaml's (as in Fleet).
    assert!(
        render_repo(&plain(), spec, "app", Some("lax"))
            .await
            .is_err()
    );
    let spec = spec.replace("namespace: web\n", "");
    let r = render_repo(&plain(), &spec, "app", Some("lax"))
        .await
        .unwrap();
    assert_eq!(r.default_namespace, "apps");
    assert!(r.objects[0].object["metadata"].get("namespace").is_none());
}

#[tokio::test]
async fn fleetignore_values_files_and_hidden_files_are_not_manifests() {
    let spec = "
-- fleet.yaml
helm: {valuesFiles: [values/prod.yaml]}
-- .fleetignore
*.tmp.yaml
scratch/*
-- a.yaml
{apiVersion: v1, kind: ConfigMap, metadata: {name: a}}
-- b.tmp.yaml
{apiVersion: v1, kind: ConfigMap, metadata: {name: b}}
-- scratch/c.yaml
{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}
-- values/prod.yaml
replicas: 3
-- sub/.fleetignore
d.yaml
-- sub/d.yaml
{apiVersion: v1, kind: ConfigMap, metadata: {name: d}}
-- sub/e.yaml
{apiVersion: v1, kind: ConfigMap, metadata: {name: e}}
-- .github/workflow.yaml
on: push
";
    let r = render_repo(&plain(), spec, "", None).await.unwrap();
    assert_eq!(names(&r), ["ConfigMap/a", "ConfigMap/e"]);
}
