//! Discovery: which directories are bundles, their renderers, errors and fingerprints.

use super::*;

const NESTED: &str = "
-- README.md
hello
-- base.yaml
kind: ConfigMap
-- apps/fleet.yaml
defaultNamespace: apps
-- apps/cm.yaml
kind: ConfigMap
-- apps/web/fleet.yaml
helm: {chart: ./chart}
-- apps/web/chart/Chart.yaml
name: web
-- apps/web/chart/templates/d.yaml
kind: Deployment
-- apps/api/kustomization.yaml
resources: [d.yaml]
-- apps/api/fleet.yml
namespace: api
-- apps/api/d.yaml
kind: Deployment
-- apps/db/Chart.yaml
name: db
-- apps/db/fleet.yaml
-- apps/kust/fleet.yaml
kustomize: {dir: overlays/dev}
-- apps/kust/overlays/dev/kustomization.yaml
resources: []
-- docs/fleet.yaml
{}
";

#[test]
fn nested_bundles_are_found_and_own_their_files() {
    let files = repo(NESTED);
    let found = discover(&files, &[]);
    assert_eq!(
        paths_of(&found),
        [
            "",
            "apps",
            "apps/api",
            "apps/db",
            "apps/kust",
            "apps/web",
            "docs"
        ]
    );
    let root = bundle_at(&found, "");
    assert_eq!(
        root.files,
        ["README.md", "base.yaml"],
        "nested bundles' files are not the root's"
    );
    assert_eq!(root.fleet, FleetYaml::default());
    assert_eq!(root.renderer, Renderer::Plain);
    let apps = bundle_at(&found, "apps");
    assert_eq!(apps.files, ["apps/cm.yaml", "apps/fleet.yaml"]);
    assert_eq!(
        bundle_at(&found, "apps/web").renderer,
        Renderer::Helm {
            chart: ChartRef::Local {
                path: "apps/web/chart".into()
            }
        }
    );
    let api = bundle_at(&found, "apps/api");
    assert_eq!(
        api.renderer,
        Renderer::Kustomize {
            dir: "apps/api".into()
        }
    );
    assert_eq!(
        api.fleet.namespace.as_deref(),
        Some("api"),
        "fleet.yml is read too"
    );
    assert_eq!(
        bundle_at(&found, "apps/db").renderer,
        Renderer::Helm {
            chart: ChartRef::Local {
                path: "apps/db".into()
            }
        }
    );
    assert_eq!(
        bundle_at(&found, "apps/kust").renderer,
        Renderer::Kustomize {
            dir: "apps/kust/overlays/dev".into()
        }
    );

    // Configured paths: a directory, a glob, and one that names nothing.
    let found = discover(&files, &["apps/".into(), "/apps/*b".into(), "nope".into()]);
    assert_eq!(
        paths_of(&found),
        [
            "apps",
            "apps/api",
            "apps/db",
            "apps/kust",
            "apps/web",
            "nope"
        ]
    );
    let nope = found.iter().find(|d| d.path == "nope").unwrap();
    assert!(
        nope.result
            .as_ref()
            .unwrap_err()
            .message
            .contains("matches no directory")
    );
}

#[test]
fn a_path_without_fleet_yaml_is_a_bundle_only_with_manifests_of_its_own() {
    let files = repo(
        "
-- a/fleet.yaml
-- a/x.yaml
kind: ConfigMap
-- README.md
no manifests at the root
",
    );
    assert_eq!(paths_of(&discover(&files, &[])), ["a"]);
    let files = repo(
        "
-- a/b/x.yaml
kind: ConfigMap
",
    );
    let found = discover(&files, &["a".into()]);
    assert_eq!(paths_of(&found), ["a"]);
    assert_eq!(bundle_at(&found, "a").files, ["a/b/x.yaml"]);
}

#[test]
fn a_broken_fleet_yaml_fails_only_its_bundle() {
    let files = repo(
        "
-- a/fleet.yaml
helm: [
-- a/x.yaml
kind: ConfigMap
-- b/fleet.yaml
namespace: b
-- b/x.yaml
kind: ConfigMap
",
    );
    let found = discover(&files, &[]);
    let a = found.iter().find(|d| d.path == "a").unwrap();
    let e = a.result.as_ref().unwrap_err();
    assert_eq!(e.file, "a/fleet.yaml");
    assert!(e.line.is_some(), "{e}");
    assert_eq!(bundle_at(&found, "b").fleet.namespace.as_deref(), Some("b"));
}

#[test]
fn paths_from_fleet_yaml_may_not_leave_the_repository() {
    let cases = [
        (
            "kustomize: {dir: ../../..}",
            "kustomize.dir: \"../../..\" leads outside the repository",
        ),
        (
            "kustomize: {dir: /etc}",
            "kustomize.dir: \"/etc\" is an absolute path",
        ),
        (
            "helm: {chart: ../../../chart}",
            "helm.chart: \"../../../chart\" leads outside the repository",
        ),
        (
            "helm: {chart: ./c, valuesFiles: [/etc/passwd]}",
            "helm.valuesFiles[0]: \"/etc/passwd\" is an absolute path",
        ),
        (
            "targetCustomizations: [{clusterName: x, helm: {valuesFiles: [../../../v.yaml]}}]",
            "targetCustomizations[0].helm.valuesFiles[0]: \"../../../v.yaml\" leads outside the repository",
        ),
        (
            "yaml: {overlays: [../x]}",
            "yaml.overlays[0]: an overlay is a directory name under overlays/",
        ),
        (
            "targetCustomizations: [{clusterName: x, kustomize: {dir: ../../../k}}]",
            "targetCustomizations[0]: kustomize.dir: \"../../../k\" leads outside the repository",
        ),
    ];
    for (fleet_yaml, want) in cases {
        let files = repo(&format!(
            "-- a/b/fleet.yaml\n{fleet_yaml}\n-- a/b/c/Chart.yaml\nname: c\n"
        ));
        let found = discover(&files, &[]);
        let e = found[0].result.as_ref().expect_err(fleet_yaml);
        assert_eq!(e.file, "a/b/fleet.yaml");
        assert!(e.message.starts_with(want), "{fleet_yaml}: {}", e.message);
    }
}

#[test]
fn fingerprints_cover_what_a_render_reads_and_nothing_else() {
    let fp = |spec: &str, path: &str| bundle_at(&discover(&repo(spec), &[]), path).fingerprint;
    let base = fp(NESTED, "apps");
    assert_eq!(base, fp(NESTED, "apps"), "stable");
    let unrelated = NESTED.replace("hello", "bye");
    assert_eq!(
        fp(&unrelated, "apps"),
        base,
        "a file of another bundle does not count"
    );
    let nested = NESTED.replace("resources: [d.yaml]", "resources: []");
    assert_eq!(
        fp(&nested, "apps"),
        base,
        "a nested bundle's file does not count"
    );
    let own = NESTED.replace("defaultNamespace: apps", "defaultNamespace: other");
    assert_ne!(fp(&own, "apps"), base, "its fleet.yaml counts");
    // A kustomization may read anything in the repository (bases in ../): all files count.
    assert_ne!(fp(&unrelated, "apps/api"), fp(NESTED, "apps/api"));
    // A chart outside the bundle directory counts.
    let files = "
-- charts/web/Chart.yaml
name: web
-- env/fleet.yaml
helm: {chart: ../charts/web}
";
    let changed = files.replace("name: web", "name: web2");
    assert_ne!(fp(files, "env"), fp(&changed, "env"));
}

#[test]
fn overlays_without_a_directory_warn() {
    let files = repo(
        "
-- a/fleet.yaml
targetCustomizations: [{clusterName: x, yaml: {overlays: [missing]}}]
-- a/cm.yaml
kind: ConfigMap
",
    );
    let a = bundle_at(&discover(&files, &[]), "a");
    assert_eq!(
        a.warnings,
        [
            "a/fleet.yaml: targetCustomizations[0]: overlay \"missing\" has no directory a/overlays/missing, it changes nothing"
        ]
    );
}
