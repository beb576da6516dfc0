//! fleet.yaml parsing, warnings, validation and the merge of a customization.

use serde_json::json;

use super::super::fleetyaml::{ValuesLayer, parse_str};
use crate::target::ClusterTarget;

#[test]
fn unknown_and_unsupported_fields_are_warnings_naming_the_field() {
    let (fy, warnings) = parse_str(
        "
defaultNamespace: web
helm:
  valuez: {a: 1}
  atomic: true
rolloutStrategy: {maxUnavailable: 10%}
targetCustomizations:
- name: prod
  clusterSelector: {matchLabels: {env: prod}}
  helm: {waitForJobs: true, values: {replicas: 3}}
  surprise: 1
",
    )
    .unwrap();
    assert_eq!(fy.default_namespace.as_deref(), Some("web"));
    assert_eq!(
        warnings,
        [
            "app/fleet.yaml: `helm.atomic` is not supported by Flotilla, ignored",
            "app/fleet.yaml: unknown field `helm.valuez` ignored",
            "app/fleet.yaml: `rolloutStrategy` is not supported by Flotilla, ignored",
            "app/fleet.yaml: `targetCustomizations[0].helm.waitForJobs` is not supported by Flotilla, ignored",
            "app/fleet.yaml: unknown field `targetCustomizations[0].surprise` ignored",
        ]
    );
}

#[test]
fn broken_fleet_yaml_names_the_file_and_line_or_field() {
    let e = parse_str("namespace: web\npaused: [yes]\n").unwrap_err();
    assert_eq!(e.file, "app/fleet.yaml");
    assert_eq!(e.line, Some(2), "{e}");

    let e = parse_str("helm:\n  values: [\n").unwrap_err();
    assert_eq!(e.file, "app/fleet.yaml");
    assert!(e.line.is_some(), "{e}");

    let e = parse_str(
        "targetCustomizations:\n- clusterSelector: {matchExpressions: [{key: env, operator: In}]}\n",
    )
    .unwrap_err();
    assert_eq!(
        e.message,
        "targetCustomizations[0].clusterSelector.matchExpressions[0].values: operator In needs at least one value"
    );
    let e = parse_str("dependsOn: [{acceptedStates: [Ready]}]").unwrap_err();
    assert_eq!(
        e.message,
        "dependsOn[0]: must specify either `name` or `selector`"
    );
    let e = parse_str("dependsOn: [{name: db, acceptedStates: [Done]}]").unwrap_err();
    assert!(
        e.message
            .starts_with("dependsOn[0].acceptedStates[0]: invalid state \"Done\"")
    );
    let e = parse_str("helm: {releaseName: My_Release}").unwrap_err();
    assert!(e.message.starts_with("helm.releaseName:"), "{e}");
    let e = parse_str("namespace: Web").unwrap_err();
    assert!(e.message.starts_with("namespace:"), "{e}");
}

#[test]
fn targets_come_before_target_customizations_and_get_default_names() {
    // Fleet appends targetCustomizations to fleet.yaml's `targets` (the examples use both).
    let (fy, warnings) = parse_str(
        "
targetCustomizations:
- clusterName: c1
targets:
- name: dev
  clusterSelector: {matchLabels: {env: dev}}
- clusterGroup: edge
",
    )
    .unwrap();
    let names: Vec<&str> = fy
        .target_customizations
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["dev", "target001", "target002"]);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        fy.target_customizations[1].target(),
        ClusterTarget {
            name: "target001".into(),
            cluster_group: Some("edge".into()),
            ..ClusterTarget::default()
        }
    );
    // An empty clusterName is unset, as in Fleet; a customization with no criterion warns.
    let (fy, warnings) = parse_str("targetCustomizations: [{name: x, clusterName: ''}]").unwrap();
    assert!(fy.target_customizations[0].target().is_empty());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

#[test]
fn every_field_parses_as_fleet_writes_it() {
    let (fy, warnings) = parse_str(
        "
name: web
labels: {team: a}
defaultNamespace: apps
namespace: web
kustomize: {dir: overlays/base}
helm:
  chart: ./chart
  repo: https://charts.example.com
  version: 1.2.3
  releaseName: web
  values: {replicas: 1}
  valuesFiles: [values-common.yaml]
yaml: {overlays: [a]}
paused: true
keepResources: true
correctDrift: {enabled: true, force: true, keepFailHistory: true}
diff:
  comparePatches:
  - apiVersion: apps/v1
    kind: Deployment
    name: web
    namespace: web
    operations: [{op: remove, path: /spec/replicas}]
    jsonPointers: [/spec/template/metadata/annotations]
dependsOn:
- name: db
- selector: {matchLabels: {tier: base}}
overrideTargets:
- clusterSelector: {matchLabels: {env: prod}}
targetCustomizations:
- name: prod
  clusterSelector: {matchLabels: {env: prod}}
  clusterGroup: edge
  clusterGroupSelector: {matchLabels: {region: eu}}
  clusterName: c1
  namespace: web-prod
  defaultNamespace: apps-prod
  doNotDeploy: true
  yaml: {overlays: [b]}
  kustomize: {dir: overlays/prod}
  helm: {version: 2.0.0, values: {replicas: 3}, valuesFiles: [values-prod.yaml]}
",
    )
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(fy.name, "web");
    assert_eq!(fy.labels["team"], "a");
    assert!(fy.paused && fy.keep_resources);
    assert_eq!(fy.depends_on.len(), 2);
    assert_eq!(fy.override_targets.as_ref().map(Vec::len), Some(1));
    let cp = &fy.diff.as_ref().unwrap().compare_patches[0];
    assert_eq!(
        (cp.kind.as_str(), cp.operations[0].path.as_str()),
        ("Deployment", "/spec/replicas")
    );
    assert_eq!(cp.json_pointers, ["/spec/template/metadata/annotations"]);
    let t = fy.target_customizations[0].target();
    assert_eq!(t.cluster_name.as_deref(), Some("c1"));
    assert_eq!(t.cluster_group.as_deref(), Some("edge"));
    assert!(t.cluster_group_selector.is_some() && t.cluster_selector.is_some());

    let base = fy.options(None);
    assert_eq!(base.default_namespace, "apps");
    assert_eq!(base.namespace.as_deref(), Some("web"));
    assert_eq!(base.version, "1.2.3");
    assert!(!base.do_not_deploy);

    let prod = fy.options(Some(0));
    assert_eq!(prod.default_namespace, "apps-prod");
    assert_eq!(prod.namespace.as_deref(), Some("web-prod"));
    assert_eq!(prod.kustomize_dir.as_deref(), Some("overlays/prod"));
    assert_eq!(
        (prod.chart.as_str(), prod.version.as_str()),
        ("./chart", "2.0.0")
    );
    assert_eq!(prod.overlays, ["a", "b"], "overlays append, as in Fleet");
    assert!(prod.do_not_deploy && prod.keep_resources && prod.correct_drift.force);
    // Values layers in Fleet's order: each level's values, then its values files.
    let layers: Vec<String> = prod
        .values
        .iter()
        .map(|l| match l {
            ValuesLayer::Inline(at, v) => format!("{at}={}", json!(v)),
            ValuesLayer::File(at, f) => format!("{at}={f}"),
        })
        .collect();
    assert_eq!(
        layers,
        [
            r#"helm.values={"replicas":1}"#,
            "helm.valuesFiles[0]=values-common.yaml",
            r#"targetCustomizations[0].helm.values={"replicas":3}"#,
            "targetCustomizations[0].helm.valuesFiles[0]=values-prod.yaml",
        ]
    );
}

#[test]
fn customizations_merge_as_fleet_options_merge() {
    let (fy, _) = parse_str(
        "
correctDrift: {enabled: true}
diff:
  comparePatches:
  - {apiVersion: v1, kind: Service, name: a, jsonPointers: [/x]}
  - {apiVersion: v1, kind: Service, name: b, jsonPointers: [/y]}
targetCustomizations:
- name: c
  clusterName: c
  keepResources: true
  correctDrift: {enabled: false}
  diff:
    comparePatches:
    - {apiVersion: v1, kind: Service, name: b, jsonPointers: [/z]}
    - {apiVersion: v1, kind: Service, name: c, jsonPointers: [/w]}
",
    )
    .unwrap();
    let base = fy.options(None);
    assert_eq!(base.default_namespace, "default");
    assert!(base.correct_drift.enabled && !base.keep_resources);
    let c = fy.options(Some(0));
    assert!(!c.correct_drift.enabled && c.keep_resources);
    let pointers: Vec<(&str, &str)> = c
        .compare_patches
        .iter()
        .map(|p| (p.name.as_str(), p.json_pointers[0].as_str()))
        .collect();
    assert_eq!(pointers, [("a", "/x"), ("b", "/z"), ("c", "/w")]);
    assert_eq!(
        fy.options(Some(7)),
        base,
        "an unknown index is no customization"
    );
}
