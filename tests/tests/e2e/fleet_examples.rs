//! A repository laid out as Rancher Fleet's multi-cluster examples (rancher/fleet-examples
//! `multi-cluster/manifests`, `multi-cluster/kustomize`, `multi-cluster/helm`), unchanged,
//! on clusters labelled env=dev/test/prod: exactly which objects land where, with which
//! replicas, images and service types. Rendering uses the real `kubectl kustomize` and
//! `helm template`.

use std::sync::Arc;

use flotilla_proto::agent::v1::DeploymentState;
use flotilla_tests::fleet::{TestFleet, wait_for};
use flotilla_tests::kube_emulator::KubeEmulator;
use serde_json::Value;

const FRONTEND: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
spec:
  selector:
    matchLabels: {app: guestbook, tier: frontend}
  replicas: 1
  template:
    metadata:
      labels: {app: guestbook, tier: frontend}
    spec:
      containers:
      - name: php-redis
        image: gcr.io/google-samples/gb-frontend:v4
";

const FRONTEND_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: frontend
  labels: {app: guestbook, tier: frontend}
spec:
  type: ClusterIP
  ports:
  - port: 80
  selector: {app: guestbook, tier: frontend}
";

const REDIS_SLAVE: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis-slave
spec:
  selector:
    matchLabels: {app: redis, role: slave}
  replicas: 2
  template:
    metadata:
      labels: {app: redis, role: slave}
    spec:
      containers:
      - name: slave
        image: gcr.io/google_samples/gb-redisslave:v1
";

/// The files of the repository: three bundles under `multi-cluster/`.
fn files() -> Vec<(&'static str, String)> {
    let mut f: Vec<(&'static str, String)> = vec![
        // multi-cluster/manifests: raw YAML with overlays per environment.
        (
            "multi-cluster/manifests/fleet.yaml",
            "namespace: fleet-mc-manifest-example
targetCustomizations:
- name: dev
  clusterSelector:
    matchLabels:
      env: dev
  yaml:
    overlays:
    # Refers to overlays/noreplication folder
    - noreplication
- name: test
  clusterSelector:
    matchLabels:
      env: test
  yaml:
    overlays:
    - scale3
- name: prod
  clusterSelector:
    matchLabels:
      env: prod
  yaml:
    overlays:
    - servicelb
    - scale3
"
            .into(),
        ),
        ("multi-cluster/manifests/frontend-deployment.yaml", FRONTEND.into()),
        ("multi-cluster/manifests/frontend-service.yaml", FRONTEND_SERVICE.into()),
        ("multi-cluster/manifests/redis-slave-deployment.yaml", REDIS_SLAVE.into()),
        (
            "multi-cluster/manifests/overlays/noreplication/redis-slave-deployment_patch.yaml",
            "spec:\n  replicas: 0\n".into(),
        ),
        (
            "multi-cluster/manifests/overlays/scale3/frontend-deployment_patch.yaml",
            "spec:\n  replicas: 3\n".into(),
        ),
        (
            "multi-cluster/manifests/overlays/servicelb/frontend-service_patch.yaml",
            "spec:\n  type: LoadBalancer\n".into(),
        ),
        // multi-cluster/kustomize: a base and an overlay directory per environment.
        (
            "multi-cluster/kustomize/fleet.yaml",
            "namespace: fleet-mc-kustomize-example
targetCustomizations:
- name: dev
  clusterSelector:
    matchLabels:
      env: dev
  kustomize:
    dir: overlays/dev
- name: test
  clusterSelector:
    matchLabels:
      env: test
  kustomize:
    dir: overlays/test
- name: prod
  clusterSelector:
    matchLabels:
      env: prod
  kustomize:
    dir: overlays/prod
"
            .into(),
        ),
        (
            "multi-cluster/kustomize/base/kustomization.yaml",
            "resources:\n- frontend-deployment.yaml\n- frontend-service.yaml\n".into(),
        ),
        ("multi-cluster/kustomize/base/frontend-deployment.yaml", FRONTEND.into()),
        ("multi-cluster/kustomize/base/frontend-service.yaml", FRONTEND_SERVICE.into()),
        (
            "multi-cluster/kustomize/overlays/dev/kustomization.yaml",
            "resources:\n- ../../base\n".into(),
        ),
        (
            "multi-cluster/kustomize/overlays/test/kustomization.yaml",
            "resources:\n- ../../base\nreplicas:\n- name: frontend\n  count: 2\n".into(),
        ),
        (
            "multi-cluster/kustomize/overlays/prod/kustomization.yaml",
            "resources:
- ../../base
replicas:
- name: frontend
  count: 3
images:
- name: gcr.io/google-samples/gb-frontend
  newTag: v5
patches:
- path: frontend-service.yaml
"
            .into(),
        ),
        (
            "multi-cluster/kustomize/overlays/prod/frontend-service.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: frontend\nspec:\n  type: LoadBalancer\n"
                .into(),
        ),
        // multi-cluster/helm: a chart in the repository, values per environment.
        (
            "multi-cluster/helm/fleet.yaml",
            "namespace: fleet-mc-helm-example
targetCustomizations:
- name: dev
  clusterSelector:
    matchLabels:
      env: dev
  helm:
    values:
      replication: false
- name: test
  clusterSelector:
    matchLabels:
      env: test
  helm:
    values:
      replicas: 3
- name: prod
  clusterSelector:
    matchLabels:
      env: prod
  helm:
    releaseName: guestbook-prod
    values:
      serviceType: LoadBalancer
      replicas: 3
      image:
        tag: v5
"
            .into(),
        ),
        (
            "multi-cluster/helm/Chart.yaml",
            "apiVersion: v2\nname: guestbook\nversion: 0.1.0\n".into(),
        ),
        (
            "multi-cluster/helm/values.yaml",
            "replicas: 1\nreplication: true\nserviceType: ClusterIP\nimage:\n  tag: v4\n".into(),
        ),
        (
            "multi-cluster/helm/templates/frontend.yaml",
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  labels:
    release: {{ .Release.Name }}
spec:
  selector:
    matchLabels: {app: guestbook, tier: frontend}
  replicas: {{ .Values.replicas }}
  template:
    metadata:
      labels: {app: guestbook, tier: frontend}
    spec:
      containers:
      - name: php-redis
        image: gcr.io/google-samples/gb-frontend:{{ .Values.image.tag }}
---
apiVersion: v1
kind: Service
metadata:
  name: frontend
spec:
  type: {{ .Values.serviceType }}
  ports:
  - port: 80
  selector: {app: guestbook, tier: frontend}
"#
            .into(),
        ),
        (
            "multi-cluster/helm/templates/redis-slave.yaml",
            r#"{{- if .Values.replication }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis-slave
spec:
  selector:
    matchLabels: {app: redis, role: slave}
  replicas: 2
  template:
    metadata:
      labels: {app: redis, role: slave}
    spec:
      containers:
      - name: slave
        image: gcr.io/google_samples/gb-redisslave:v1
{{- end }}
"#
            .into(),
        ),
    ];
    f.sort_by(|a, b| a.0.cmp(b.0));
    f
}

/// What one cluster should hold: (kind, namespace, name) → (replicas | service type, image).
#[derive(Debug, PartialEq)]
struct Seen {
    objects: Vec<String>,
}

/// Every Deployment and Service in the three example namespaces, described as
/// `Kind ns/name replicas=N image=I` or `Service ns/name type=T`.
fn describe(kube: &KubeEmulator) -> Seen {
    let mut objects = Vec::new();
    for ns in [
        "fleet-mc-manifest-example",
        "fleet-mc-kustomize-example",
        "fleet-mc-helm-example",
    ] {
        for d in kube.list_objects("apps/v1", "Deployment", Some(ns)) {
            objects.push(format!(
                "Deployment {ns}/{} replicas={} image={}",
                d["metadata"]["name"].as_str().unwrap_or("?"),
                d["spec"]["replicas"],
                d["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or("?")
            ));
        }
        for s in kube.list_objects("v1", "Service", Some(ns)) {
            objects.push(format!(
                "Service {ns}/{} type={}",
                s["metadata"]["name"].as_str().unwrap_or("?"),
                s["spec"]["type"].as_str().unwrap_or("?")
            ));
        }
    }
    objects.sort();
    Seen { objects }
}

fn expected(lines: &[&str]) -> Seen {
    let mut objects: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    objects.sort();
    Seen { objects }
}

async fn wait_objects(
    fleet: &TestFleet,
    name: &str,
    kube: &Arc<KubeEmulator>,
    want: &Seen,
) -> anyhow::Result<()> {
    let got = wait_for(&format!("{name}'s objects"), || async {
        let got = describe(kube);
        (got == *want).then_some(got)
    })
    .await;
    if got.is_err() {
        let status = fleet.cli(&["status", "-o", "json"]).await?;
        anyhow::bail!(
            "{name} holds:\n  {}\nwanted:\n  {}\nstatus:\n{}",
            describe(kube).objects.join("\n  "),
            want.objects.join("\n  "),
            status
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_examples_deploy_the_right_objects_to_each_environment() -> anyhow::Result<()> {
    let mut fleet = TestFleet::start().await?;
    let repo = fleet.git.create_repo("fleet-examples")?;
    for (path, body) in files() {
        repo.write(path, &body)?;
    }
    repo.commit("multi-cluster examples")?;
    let dev = fleet.add_cluster_labelled("dev-1", &["env=dev"]).await?;
    let test = fleet.add_cluster_labelled("test-1", &["env=test"]).await?;
    let prod = fleet.add_cluster_labelled("prod-1", &["env=prod"]).await?;

    // As Fleet users write it: a Fleet GitRepo, applied unchanged.
    let gitrepo = format!(
        "apiVersion: fleet.cattle.io/v1alpha1
kind: GitRepo
metadata:
  name: multi
  namespace: fleet-default
spec:
  repo: {}
  branch: main
  paths:
  - multi-cluster
  targets:
  - clusterSelector:
      matchExpressions:
      - {{key: env, operator: In, values: [dev, test, prod]}}
",
        fleet.git.http_url("fleet-examples")
    );
    let file = fleet.admin_config().with_file_name("multi.yaml");
    std::fs::write(&file, gitrepo)?;
    let out = fleet
        .cli(&["apply", "-f", file.to_str().expect("utf-8 path")])
        .await?;
    assert_eq!(out, "gitrepo/multi created\n");
    let synced = fleet.sync("multi").await?;
    assert!(synced.error.is_empty(), "{}", synced.error);

    let m = "fleet-mc-manifest-example";
    let k = "fleet-mc-kustomize-example";
    let h = "fleet-mc-helm-example";
    let v4 = "gcr.io/google-samples/gb-frontend:v4";
    let v5 = "gcr.io/google-samples/gb-frontend:v5";
    let slave = "gcr.io/google_samples/gb-redisslave:v1";
    wait_objects(
        &fleet,
        "dev-1",
        &dev,
        &expected(&[
            &format!("Deployment {m}/frontend replicas=1 image={v4}"),
            &format!("Deployment {m}/redis-slave replicas=0 image={slave}"),
            &format!("Service {m}/frontend type=ClusterIP"),
            &format!("Deployment {k}/frontend replicas=1 image={v4}"),
            &format!("Service {k}/frontend type=ClusterIP"),
            &format!("Deployment {h}/frontend replicas=1 image={v4}"),
            &format!("Service {h}/frontend type=ClusterIP"),
        ]),
    )
    .await?;
    wait_objects(
        &fleet,
        "test-1",
        &test,
        &expected(&[
            &format!("Deployment {m}/frontend replicas=3 image={v4}"),
            &format!("Deployment {m}/redis-slave replicas=2 image={slave}"),
            &format!("Service {m}/frontend type=ClusterIP"),
            &format!("Deployment {k}/frontend replicas=2 image={v4}"),
            &format!("Service {k}/frontend type=ClusterIP"),
            &format!("Deployment {h}/frontend replicas=3 image={v4}"),
            &format!("Deployment {h}/redis-slave replicas=2 image={slave}"),
            &format!("Service {h}/frontend type=ClusterIP"),
        ]),
    )
    .await?;
    wait_objects(
        &fleet,
        "prod-1",
        &prod,
        &expected(&[
            &format!("Deployment {m}/frontend replicas=3 image={v4}"),
            &format!("Deployment {m}/redis-slave replicas=2 image={slave}"),
            &format!("Service {m}/frontend type=LoadBalancer"),
            &format!("Deployment {k}/frontend replicas=3 image={v5}"),
            &format!("Service {k}/frontend type=LoadBalancer"),
            &format!("Deployment {h}/frontend replicas=3 image={v5}"),
            &format!("Deployment {h}/redis-slave replicas=2 image={slave}"),
            &format!("Service {h}/frontend type=LoadBalancer"),
        ]),
    )
    .await?;
    let release = prod
        .get_object("apps/v1", "Deployment", Some(h), "frontend")
        .map(|d| d["metadata"]["labels"]["release"].clone());
    assert_eq!(release, Some(Value::from("guestbook-prod")));

    // A cluster joining prod later gets the same objects, from the same render.
    let prod2 = fleet.add_cluster_labelled("prod-2", &["env=prod"]).await?;
    wait_objects(&fleet, "prod-2", &prod2, &describe(&prod)).await?;
    fleet
        .wait_status("every deployment Ready", |s| {
            s.deployments.len() == 12
                && s.deployments
                    .iter()
                    .all(|d| d.state == DeploymentState::Ready as i32)
        })
        .await?;

    // A chart that cannot be rendered: an error naming the bundle, the file and helm's
    // message; the clusters keep what they run.
    repo.write(
        "multi-cluster/helm/templates/frontend.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Values.nope.missing }}\n",
    )?;
    repo.commit("break the chart")?;
    fleet.sync("multi").await?;
    let s = fleet.status().await?;
    let bundle = s
        .bundles
        .iter()
        .find(|b| b.id == "multi/multi-cluster/helm")
        .expect("the helm bundle");
    assert!(
        bundle.error.contains("multi-cluster/helm")
            && bundle.error.contains("templates/frontend.yaml")
            && bundle.error.contains("nil pointer"),
        "{}",
        bundle.error
    );
    let d = TestFleet::deployment(&s, "prod-1", "multi/multi-cluster/helm").expect("deployed");
    assert_eq!(d.state, DeploymentState::Ready as i32, "{}", d.message);
    assert!(
        d.message.contains("cannot build the newest commit"),
        "{}",
        d.message
    );
    assert_eq!(
        prod.get_object("apps/v1", "Deployment", Some(h), "frontend")
            .map(|d| d["spec"]["replicas"].clone()),
        Some(Value::from(3)),
        "prod keeps the last good render"
    );
    Ok(())
}
