//! What a render costs: discovery, writing the checkout, and rendering a plain, a kustomize
//! and a Helm bundle, each N times (`RENDER_BENCH_N`, default 20), reported per operation.
//!
//! `cargo bench -p flotilla-hub --bench render`. Needs helm and kubectl on PATH (the
//! renderers it measures); a missing one is reported and its rows skipped.
#![allow(clippy::print_stdout)] // a bench reports on stdout

use std::time::{Duration, Instant};

use flotilla_hub::bundle::BundleFile;
use flotilla_hub::render::{self, BundleSource, Checkout, Renderers};

const KUSTOMIZE: &[(&str, &str)] = &[
    (
        "kust/fleet.yaml",
        "targetCustomizations: [{name: prod, clusterName: p, kustomize: {dir: overlays/prod}}]\n",
    ),
    (
        "kust/base/kustomization.yaml",
        "resources: [deployment.yaml, service.yaml]\n",
    ),
    (
        "kust/base/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers: [{name: web, image: nginx:1.27}]\n",
    ),
    (
        "kust/base/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
    ),
    (
        "kust/overlays/prod/kustomization.yaml",
        "resources: [../../base]\nreplicas: [{name: web, count: 3}]\nimages: [{name: nginx, newTag: '1.28'}]\n",
    ),
];

const HELM: &[(&str, &str)] = &[
    (
        "chart/fleet.yaml",
        "targetCustomizations: [{name: prod, clusterName: p, helm: {values: {replicas: 3}}}]\n",
    ),
    (
        "chart/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    ),
    ("chart/values.yaml", "replicas: 1\nimage: nginx:1.27\n"),
    (
        "chart/templates/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: {{ .Release.Name }}}\nspec:\n  replicas: {{ .Values.replicas }}\n  template:\n    spec:\n      containers: [{name: web, image: {{ .Values.image }}}]\n",
    ),
    (
        "chart/templates/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: {{ .Release.Name }}}\nspec: {ports: [{port: 80}]}\n",
    ),
];

/// A repository: the kustomize and Helm bundles, plus `plain` plain bundles of 10
/// manifests and one overlay each.
fn repository(plain: usize) -> Vec<BundleFile> {
    let mut files: Vec<BundleFile> = KUSTOMIZE
        .iter()
        .chain(HELM)
        .map(|(p, d)| BundleFile {
            path: p.to_string(),
            data: d.as_bytes().to_vec(),
        })
        .collect();
    for b in 0..plain {
        let dir = format!("plain/app{b:03}");
        let file = |path: String, data: String| BundleFile {
            path,
            data: data.into_bytes(),
        };
        files.push(file(
            format!("{dir}/fleet.yaml"),
            "namespace: apps\ntargetCustomizations: [{name: prod, clusterName: p, yaml: {overlays: [prod]}}]\n".into(),
        ));
        for m in 0..10 {
            files.push(file(
                format!("{dir}/cm{m}.yaml"),
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{m}}}\ndata: {{key: value{m}}}\n"),
            ));
        }
        files.push(file(
            format!("{dir}/overlays/prod/cm0_patch.yaml"),
            "data: {key: prod}\n".into(),
        ));
    }
    files
}

fn per_op(total: Duration, n: usize) -> String {
    format!("{:8.3} ms", total.as_secs_f64() * 1000.0 / n as f64)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

async fn time_render(
    r: &Renderers,
    checkout: &Checkout,
    b: &BundleSource,
    customization: Option<usize>,
    n: usize,
) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let rendered = render::render(r, checkout, b, customization, "bench/app").await;
        assert!(
            rendered.is_ok_and(|x| !x.objects.is_empty()),
            "{}: render failed",
            b.path
        );
    }
    started.elapsed()
}

fn main() {
    let n: usize = std::env::var("RENDER_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let files = repository(200);
    println!(
        "render bench: N = {n}, repository of {} files, {} bundles",
        files.len(),
        202
    );

    let started = Instant::now();
    let mut found = Vec::new();
    for _ in 0..n {
        found = render::discover(&files, &[]);
    }
    println!(
        "discover (202 bundles, whole repository)   {}",
        per_op(started.elapsed(), n)
    );
    let bundle = |path: &str| -> BundleSource {
        found
            .iter()
            .find(|d| d.path == path)
            .unwrap()
            .result
            .clone()
            .unwrap()
    };

    let parent = std::env::temp_dir();
    let started = Instant::now();
    for _ in 0..n {
        drop(Checkout::write(&files, &parent).unwrap());
    }
    println!(
        "checkout write + delete ({} files)        {}",
        files.len(),
        per_op(started.elapsed(), n)
    );
    let checkout = Checkout::write(&files, &parent).unwrap();
    let r = Renderers::default();

    rt.block_on(async {
        let plain = bundle("plain/app000");
        println!(
            "plain, 10 manifests                         {}",
            per_op(time_render(&r, &checkout, &plain, None, n).await, n)
        );
        println!(
            "plain, 10 manifests + overlay patch         {}",
            per_op(time_render(&r, &checkout, &plain, Some(0), n).await, n)
        );
        if on_path("kubectl") {
            let k = bundle("kust");
            println!(
                "kustomize (kubectl kustomize), prod overlay {}",
                per_op(time_render(&r, &checkout, &k, Some(0), n).await, n)
            );
        } else {
            println!("kustomize: skipped, kubectl is not on PATH");
        }
        if on_path("helm") {
            let h = bundle("chart");
            println!(
                "helm template, local chart                  {}",
                per_op(time_render(&r, &checkout, &h, None, n).await, n)
            );
            println!(
                "helm template, local chart + values         {}",
                per_op(time_render(&r, &checkout, &h, Some(0), n).await, n)
            );
        } else {
            println!("helm: skipped, helm is not on PATH");
        }
    });
}
