//! Manifests and hub documents the end-to-end scenarios share, so that each scenario says
//! only what is particular to it.

/// A Deployment `web` of 3 nginx replicas.
pub const WEB_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
";

/// A ConfigMap `name` with `data.greeting: hello`.
pub fn config_map(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  greeting: hello\n"
    )
}

/// GitRepo `apps` at `url` with bundles `paths`, branch per environment: `prod` follows
/// `main` on clusters labelled `env=prod`, `staging` its own branch on `env=staging`.
pub fn branch_per_environment_gitrepo(url: &str, paths: &[&str]) -> String {
    format!(
        r#"apiVersion: flotilla.dev/v1
kind: GitRepo
metadata:
  name: apps
spec:
  repo: {url}
  paths: [{}]
  pollingInterval: 1h
  environments:
  - name: prod
    branch: main
    clusterSelector:
      matchLabels: {{env: prod}}
  - name: staging
    branch: staging
    clusterSelector:
      matchLabels: {{env: staging}}
"#,
        paths.join(", ")
    )
}
