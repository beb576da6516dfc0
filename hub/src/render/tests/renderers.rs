//! Kustomize and Helm bundles through the real binaries, and the limits renderers run under.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// After rancher/fleet-examples multi-cluster/kustomize: one base, an overlay per environment.
const KUSTOMIZE: &str = "
-- mc/fleet.yaml
namespace: fleet-mc-kustomize-example
targetCustomizations:
- name: dev
  clusterSelector: {matchLabels: {env: dev}}
  kustomize: {dir: overlays/dev}
- name: prod
  clusterSelector: {matchLabels: {env: prod}}
  kustomize: {dir: overlays/prod}
-- mc/base/kustomization.yaml
resources: [frontend-deployment.yaml, redis-follower-service.yaml]
-- mc/base/frontend-deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata: {name: frontend}
spec:
  replicas: 1
  selector: {matchLabels: {app: guestbook}}
  template:
    metadata: {labels: {app: guestbook}}
    spec:
      containers: [{name: php-redis, image: gcr.io/google-samples/gb-frontend:v4}]
-- mc/base/redis-follower-service.yaml
apiVersion: v1
kind: Service
metadata: {name: redis-follower}
spec:
  ports: [{port: 6379}]
  selector: {app: redis, role: follower}
-- mc/overlays/dev/kustomization.yaml
resources: [../../base]
patches: [{path: redis-follower-service.yaml}]
-- mc/overlays/dev/redis-follower-service.yaml
apiVersion: v1
kind: Service
metadata: {name: redis-follower}
spec:
  selector: {role: leader}
-- mc/overlays/prod/kustomization.yaml
resources: [../../base, frontend-service.yaml]
replicas: [{name: frontend, count: 3}]
images: [{name: gcr.io/google-samples/gb-frontend, newTag: v5}]
-- mc/overlays/prod/frontend-service.yaml
apiVersion: v1
kind: Service
metadata: {name: frontend}
spec:
  type: LoadBalancer
  ports: [{port: 80}]
";

/// After rancher/fleet-examples multi-cluster/helm: a chart at the bundle root, values per
/// environment in targetCustomizations.
const HELM: &str = r#"
-- mc/fleet.yaml
namespace: fleet-mc-helm-example
targetCustomizations:
- name: dev
  clusterSelector: {matchLabels: {env: dev}}
  helm: {values: {replication: false}}
- name: test
  clusterSelector: {matchLabels: {env: test}}
  helm: {values: {replicas: 3}}
- name: prod
  clusterSelector: {matchLabels: {env: prod}}
  helm:
    releaseName: guestbook-prod
    values: {serviceType: LoadBalancer, replicas: 3, image: {tag: v5}}
-- mc/Chart.yaml
apiVersion: v2
name: guestbook
version: 0.0.0
-- mc/values.yaml
replication: true
replicas: 1
serviceType: NodePort
image: {repository: gcr.io/google-samples/gb-frontend, tag: v4}
-- mc/templates/frontend-deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  labels: {release: {{ .Release.Name }}, namespace: {{ .Release.Namespace }}}
spec:
  replicas: {{ .Values.replicas }}
  template:
    spec:
      containers:
      - name: php-redis
        image: {{ .Values.image.repository }}:{{ .Values.image.tag }}
-- mc/templates/frontend-service.yaml
apiVersion: v1
kind: Service
metadata: {name: frontend}
spec:
  type: {{ .Values.serviceType }}
  ports: [{port: 80}]
-- mc/templates/redis-slave-deployment.yaml
{{- if .Values.replication }}
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis-slave}
spec:
  replicas: 2
{{- end }}
-- mc/templates/tests/test-connection.yaml
apiVersion: v1
kind: Pod
metadata:
  name: test-connection
  annotations: {helm.sh/hook: test}
"#;

#[tokio::test]
async fn kustomize_renders_the_overlay_of_each_environment() {
    let Some(kubectl) = installed("kubectl") else {
        return;
    };
    let r = Renderers {
        kubectl,
        ..Renderers::default()
    };
    let dev = render_repo(&r, KUSTOMIZE, "mc", Some("dev")).await.unwrap();
    assert_eq!(
        names(&dev),
        ["Service/redis-follower", "Deployment/frontend"]
    );
    assert_eq!(
        object(&dev, "Service/redis-follower")["spec"]["selector"],
        json!({"app": "redis", "role": "leader"})
    );
    assert_eq!(dev.objects[0].source, "kustomize build mc/overlays/dev#1");
    assert!(
        dev.objects
            .iter()
            .all(|o| o.object["metadata"]["namespace"] == "fleet-mc-kustomize-example")
    );

    let prod = render_repo(&r, KUSTOMIZE, "mc", Some("prod"))
        .await
        .unwrap();
    assert_eq!(
        names(&prod),
        [
            "Service/frontend",
            "Service/redis-follower",
            "Deployment/frontend"
        ]
    );
    let d = object(&prod, "Deployment/frontend");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "gcr.io/google-samples/gb-frontend:v5"
    );

    // A kustomization that does not build: kubectl's message, the directory, the bundle.
    let broken = KUSTOMIZE.replace("resources: [../../base]", "resources: [../../nowhere]");
    let e = render_repo(&r, &broken, "mc", Some("dev"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.bundle.as_str(), e.file.as_str()),
        ("mc", "mc/overlays/dev")
    );
    assert!(e.message.starts_with("kubectl kustomize failed: "), "{e}");
    assert!(e.message.contains("nowhere"), "{e}");
    assert!(
        !e.message.contains("flotilla-checkout"),
        "checkout paths are not shown: {e}"
    );
}

#[tokio::test]
async fn a_local_chart_renders_offline_with_values_per_environment() {
    let Some(helm) = installed("helm") else {
        return;
    };
    let r = Renderers {
        helm,
        ..Renderers::default()
    };
    let base = render_repo(&r, HELM, "mc", None).await.unwrap();
    assert_eq!(
        names(&base),
        [
            "Service/frontend",
            "Deployment/frontend",
            "Deployment/redis-slave"
        ],
        "in Helm's order, test hooks left out"
    );
    let d = object(&base, "Deployment/frontend");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "gcr.io/google-samples/gb-frontend:v4"
    );
    assert_eq!(
        d["metadata"]["labels"],
        json!({"release": "repo-app", "namespace": "fleet-mc-helm-example"})
    );
    assert_eq!(
        base.objects[1].source,
        "mc/templates/frontend-deployment.yaml#1"
    );
    assert!(
        base.objects
            .iter()
            .all(|o| o.object["metadata"]["namespace"] == "fleet-mc-helm-example")
    );

    let dev = render_repo(&r, HELM, "mc", Some("dev")).await.unwrap();
    assert_eq!(names(&dev), ["Service/frontend", "Deployment/frontend"]);

    let prod = render_repo(&r, HELM, "mc", Some("prod")).await.unwrap();
    let d = object(&prod, "Deployment/frontend");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "gcr.io/google-samples/gb-frontend:v5"
    );
    assert_eq!(d["metadata"]["labels"]["release"], "guestbook-prod");
    assert_eq!(
        object(&prod, "Service/frontend")["spec"]["type"],
        "LoadBalancer"
    );
}

#[tokio::test]
async fn values_merge_in_fleets_order() {
    let Some(helm) = installed("helm") else {
        return;
    };
    let r = Renderers {
        helm,
        ..Renderers::default()
    };
    let spec = r#"
-- app/fleet.yaml
helm:
  chart: ./chart
  values: {a: fleet, b: fleet, c: fleet, d: fleet, nested: {x: fleet, y: fleet}, list: [1, 2]}
  valuesFiles: [values/common.yaml]
targetCustomizations:
- name: prod
  clusterName: p
  helm:
    values: {c: custom, d: custom, nested: {y: custom}, list: [3]}
    valuesFiles: [values/prod.yaml]
-- app/values/common.yaml
b: file
c: file
d: file
-- app/values/prod.yaml
d: custom-file
-- app/chart/Chart.yaml
apiVersion: v2
name: values
version: 0.1.0
-- app/chart/values.yaml
a: chart
z: chart
nested: {w: chart}
-- app/chart/crds/widget.yaml
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
-- app/chart/templates/cm.yaml
apiVersion: v1
kind: ConfigMap
metadata: {name: values}
data:
  values: {{ toJson .Values | quote }}
"#;
    let values = |r: &Rendered| -> serde_json::Value {
        serde_json::from_str(
            object(r, "ConfigMap/values")["data"]["values"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    };
    let base = render_repo(&r, spec, "app", None).await.unwrap();
    assert_eq!(
        names(&base),
        [
            "CustomResourceDefinition/widgets.example.com",
            "ConfigMap/values"
        ]
    );
    assert_eq!(
        values(&base),
        json!({"a": "fleet", "b": "file", "c": "file", "d": "file", "z": "chart",
               "nested": {"w": "chart", "x": "fleet", "y": "fleet"}, "list": [1, 2]})
    );
    let prod = render_repo(&r, spec, "app", Some("prod")).await.unwrap();
    assert_eq!(
        values(&prod),
        json!({"a": "fleet", "b": "file", "c": "custom", "d": "custom-file", "z": "chart",
               "nested": {"w": "chart", "x": "fleet", "y": "custom"}, "list": [3]})
    );

    let missing = spec.replace("values/prod.yaml]", "values/staging.yaml]");
    let e = render_repo(&r, &missing, "app", Some("prod"))
        .await
        .unwrap_err();
    assert_eq!(e.file, "app/values/staging.yaml");
    assert!(
        e.message.starts_with(
            "targetCustomizations[0].helm.valuesFiles[0]: cannot read the values file"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_chart_that_fails_names_the_bundle_the_chart_and_helms_message() {
    let Some(helm) = installed("helm") else {
        return;
    };
    let r = Renderers {
        helm,
        ..Renderers::default()
    };
    let spec = r#"
-- apps/web/fleet.yaml
helm: {chart: chart}
-- apps/web/chart/Chart.yaml
apiVersion: v2
name: web
version: 0.1.0
-- apps/web/chart/templates/d.yaml
image: {{ required "tag is required: set it in helm.values" .Values.tag }}
"#;
    let e = render_repo(&r, spec, "apps/web", None).await.unwrap_err();
    assert_eq!(
        (e.bundle.as_str(), e.file.as_str()),
        ("apps/web", "apps/web/chart")
    );
    assert!(e.message.starts_with("helm template failed: "), "{e}");
    assert!(
        e.message.contains("tag is required: set it in helm.values"),
        "{e}"
    );
    assert!(!e.message.contains("flotilla-checkout"), "{e}");
    assert!(
        e.to_string()
            .starts_with("bundle apps/web: apps/web/chart: helm template failed:"),
        "{e}"
    );
    assert!(
        e.to_string()
            .ends_with("; run `helm template` on it locally to reproduce"),
        "{e}"
    );
}

#[tokio::test]
async fn a_missing_renderer_says_how_to_install_it() {
    let r = Renderers {
        helm: "/nonexistent/helm".into(),
        kubectl: "/nonexistent/kubectl".into(),
        ..Renderers::default()
    };
    let e = render_repo(&r, HELM, "mc", None).await.unwrap_err();
    assert!(e.message.starts_with("helm not found"), "{e}");
    assert!(
        e.hint.contains("https://helm.sh/docs/intro/install/"),
        "{e}"
    );
    let e = render_repo(&r, KUSTOMIZE, "mc", Some("dev"))
        .await
        .unwrap_err();
    assert!(e.message.starts_with("kubectl not found"), "{e}");
    assert!(e.hint.contains("install kubectl"), "{e}");
}

/// A stand-in renderer: a shell script at `dir/helm`.
fn fake_helm(dir: &Path, script: &str) -> PathBuf {
    let path = dir.join("helm");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn a_renderer_that_hangs_is_killed_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let script = format!("sleep 300 &\necho $! > {}\nwait", pid_file.display());
    let r = Renderers {
        helm: fake_helm(dir.path(), &script),
        timeout: Duration::from_millis(500),
        ..Renderers::default()
    };
    let started = Instant::now();
    let e = render_repo(&r, HELM, "mc", None).await.unwrap_err();
    assert!(
        e.message
            .starts_with("helm did not finish within 0.5 s and was killed"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The script's own child went with it: wait (one deadline) until it is gone.
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        if stat.is_empty() || state == Some('Z') {
            break;
        }
        assert!(Instant::now() < deadline, "sleep {pid} survived: {stat}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_renderer_that_writes_too_much_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let r = Renderers {
        helm: fake_helm(dir.path(), "while :; do echo 'apiVersion: v1'; done"),
        max_output_bytes: 100_000,
        ..Renderers::default()
    };
    let e = render_repo(&r, HELM, "mc", None).await.unwrap_err();
    assert_eq!(
        e.message, "helm wrote more than 100000 bytes and was killed",
        "{e}"
    );
    assert_eq!(e.hint, "split the bundle, or raise the render output limit");
}

#[tokio::test]
async fn renderers_run_with_a_cleared_environment_and_proxies_closed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let script = format!("env > {}\necho 'kind: x'\nexit 3", out.display());
    let r = Renderers {
        helm: fake_helm(dir.path(), &script),
        ..Renderers::default()
    };
    let e = render_repo(&r, HELM, "mc", None).await.unwrap_err();
    assert!(e.message.starts_with("helm template failed"), "{e}");
    let env = std::fs::read_to_string(&out).unwrap();
    let vars: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    for var in [
        "PATH",
        "HOME",
        "HELM_CACHE_HOME",
        "HELM_CONFIG_HOME",
        "HELM_DATA_HOME",
        "HTTPS_PROXY",
    ] {
        assert!(vars.contains(&var), "{var} in {vars:?}");
    }
    assert!(env.contains("HTTPS_PROXY=http://127.0.0.1:1\n"), "{env}");
    assert!(
        !vars.contains(&"CARGO_MANIFEST_DIR"),
        "the hub's environment is not passed on: {vars:?}"
    );
}

#[tokio::test]
async fn a_remote_chart_renders_from_its_repository() {
    let Some(helm) = installed("helm") else {
        return;
    };
    let served = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let chart = repo(
        "
-- remote/Chart.yaml
apiVersion: v2
name: remote
version: 0.1.0
-- remote/values.yaml
replicas: 1
-- remote/templates/d.yaml
apiVersion: apps/v1
kind: Deployment
metadata: {name: remote}
spec: {replicas: {{ .Values.replicas }}}
",
    );
    let src = Checkout::write(&chart, home.path()).unwrap();
    let helm_cmd = |args: &[&str]| {
        let status = std::process::Command::new(&helm)
            .args(args)
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_DATA_HOME", home.path().join("data"))
            .status()
            .unwrap();
        assert!(status.success(), "helm {args:?}");
    };
    let served_dir = served.path().to_str().unwrap();
    helm_cmd(&[
        "package",
        src.root().join("remote").to_str().unwrap(),
        "-d",
        served_dir,
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    helm_cmd(&["repo", "index", served_dir, "--url", &url]);
    let server = tokio::spawn(serve_dir(listener, served.path().to_path_buf()));

    let r = Renderers {
        helm,
        ..Renderers::default()
    };
    let spec = format!(
        "
-- ext/fleet.yaml
helm: {{repo: '{url}', chart: remote, version: 0.1.0}}
targetCustomizations:
- name: prod
  clusterName: p
  helm: {{values: {{replicas: 4}}}}
"
    );
    let base = render_repo(&r, &spec, "ext", None).await.unwrap();
    assert_eq!(object(&base, "Deployment/remote")["spec"]["replicas"], 1);
    assert_eq!(base.objects[0].source, "remote/templates/d.yaml#1");
    let prod = render_repo(&r, &spec, "ext", Some("prod")).await.unwrap();
    assert_eq!(object(&prod, "Deployment/remote")["spec"]["replicas"], 4);
    // The same chart as an archive URL.
    let archive = format!(
        "-- ext/fleet.yaml\nhelm: {{chart: '{url}/remote-0.1.0.tgz', values: {{replicas: 2}}}}\n"
    );
    let r2 = render_repo(&r, &archive, "ext", None).await.unwrap();
    assert_eq!(object(&r2, "Deployment/remote")["spec"]["replicas"], 2);

    let files = repo(&spec);
    let b = bundle_at(&discover(&files, &[]), "ext");
    assert_eq!(
        b.renderer,
        Renderer::Helm {
            chart: ChartRef::Repo {
                repo: url.clone(),
                name: "remote".into(),
                version: Some("0.1.0".into())
            }
        }
    );
    server.abort();
}

/// A static file server for one directory (a Helm repository), until aborted.
async fn serve_dir(listener: tokio::net::TcpListener, dir: PathBuf) {
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    async fn file(
        State(dir): State<PathBuf>,
        UrlPath(name): UrlPath<String>,
    ) -> Result<Vec<u8>, StatusCode> {
        if name.contains("..") {
            return Err(StatusCode::BAD_REQUEST);
        }
        std::fs::read(dir.join(name)).map_err(|_| StatusCode::NOT_FOUND)
    }
    let app = axum::Router::new()
        .route("/{name}", axum::routing::get(file))
        .with_state(dir);
    axum::serve(listener, app).await.unwrap();
}

#[test]
fn release_names_are_derived_as_fleet_derives_them() {
    use super::super::helm::release_name;
    assert_eq!(release_name("repo/apps/web"), "repo-apps-web");
    assert_eq!(release_name("--a//b--"), "a-b");
    // Anything changed besides `/` gets a hash suffix, so distinct hints stay distinct.
    let upper = release_name("Repo/Web");
    assert!(
        upper.starts_with("repo-web-") && upper.len() == "repo-web-".len() + 8,
        "{upper}"
    );
    assert_ne!(release_name("repo/web_1"), release_name("repo/web.1"));
    let long = release_name(&format!("repo/{}", "x".repeat(80)));
    assert_eq!(long.len(), 53);
    assert!(long.starts_with("repo-xxxx"));
    assert_eq!(release_name("///").len(), 24, "nothing usable: a hash");
}
