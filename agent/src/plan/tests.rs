//! Table tests for the pure apply decisions.

use serde_json::json;

use super::*;

fn obj(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        api_version: api_version.into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[test]
fn apply_order_puts_namespaces_and_crds_first_and_custom_resources_last() {
    let bundle = [
        ("example.com/v1", "Widget"),                            // 0 custom
        ("apps/v1", "Deployment"),                               // 1 workload
        ("networking.k8s.io/v1", "Ingress"),                     // 2 other built-in
        ("v1", "ConfigMap"),                                     // 3 foundation
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"), // 4
        ("v1", "Namespace"),                                     // 5
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),         // 6 foundation
        ("v1", "Service"),                                       // 7 foundation
        ("batch/v1", "Job"),                                     // 8 workload
        ("monitoring.coreos.com/v1", "ServiceMonitor"),          // 9 custom
    ];
    let order = apply_order(bundle.iter().copied());
    assert_eq!(order, [5, 4, 3, 6, 7, 1, 8, 2, 0, 9]);
}

#[test]
fn apply_order_is_stable_within_a_category() {
    let bundle = [
        ("v1", "Secret"),
        ("v1", "ConfigMap"),
        ("v1", "ServiceAccount"),
    ];
    assert_eq!(apply_order(bundle.iter().copied()), [0, 1, 2]);
}

#[test]
fn builtin_groups_are_known_without_the_server() {
    for g in [
        "",
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "rbac.authorization.k8s.io",
        "gateway.networking.k8s.io",
    ] {
        assert!(is_builtin_group(g), "{g}");
    }
    for g in ["example.com", "cert-manager.io", "monitoring.coreos.com"] {
        assert!(!is_builtin_group(g), "{g}");
    }
    // A kind named like a built-in one in a custom group is still custom.
    assert_eq!(category("example.com/v1", "Namespace"), Category::Custom);
    assert_eq!(category("v1", "Namespace"), Category::Namespace);
}

#[test]
fn label_safe_hash_is_63_hex_digits() {
    let v = deployment_label_value("gitrepo/some path/with:odd+chars");
    assert_eq!(v.len(), 63);
    assert!(
        v.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(
        v,
        deployment_label_value("gitrepo/some path/with:odd+chars")
    );
    assert_ne!(v, deployment_label_value("other"));
}

#[test]
fn inventory_name_uses_16_hex_of_sha256() {
    // sha256("abc") = ba7816bf8f01cfea414140de5dae2223...
    assert_eq!(inventory_name("abc"), "flotilla-inv-ba7816bf8f01cfea");
}

#[test]
fn mark_owned_adds_labels_and_annotation_and_keeps_existing_ones() {
    let mut o = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "labels": {"app": "web"}, "annotations": {"note": "x"}}
    });
    mark_owned(&mut o, "repo/app");
    let meta = &o["metadata"];
    assert_eq!(meta["labels"]["app"], "web");
    assert_eq!(meta["labels"][MANAGED_BY_LABEL], "flotilla");
    assert_eq!(
        meta["labels"][DEPLOYMENT_LABEL],
        deployment_label_value("repo/app")
    );
    assert_eq!(meta["annotations"]["note"], "x");
    assert_eq!(meta["annotations"][DEPLOYMENT_ID_ANNOTATION], "repo/app");
    assert_eq!(
        meta["annotations"].as_object().unwrap().len(),
        2,
        "nothing per-revision is added"
    );
    assert!(is_owned_by(&o, "repo/app"));
    assert!(!is_owned_by(&o, "repo/other"));
}

#[test]
fn mark_owned_creates_missing_maps() {
    let mut o =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": null}});
    mark_owned(&mut o, "d");
    assert_eq!(o["metadata"]["labels"][MANAGED_BY_LABEL], "flotilla");
    assert!(!is_owned_by(&json!({"metadata": {}}), "d"));
}

/// Applies a JSON merge patch (RFC 7386), as the API server does.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

#[test]
fn the_release_patch_takes_off_exactly_the_ownership_marks() {
    let mut live = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "uid": "u-1", "resourceVersion": "42",
            "labels": {"app": "web"}, "annotations": {"note": "x"}},
        "data": {"k": "v"}
    });
    mark_owned(&mut live, "repo/app");
    let patch = release_patch(&live);
    assert_eq!(
        patch,
        json!({"metadata": {
            "resourceVersion": "42",
            "labels": {MANAGED_BY_LABEL: null, DEPLOYMENT_LABEL: null},
            "annotations": {DEPLOYMENT_ID_ANNOTATION: null},
        }})
    );
    merge(&mut live, &patch);
    assert_eq!(live["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(live["metadata"]["annotations"], json!({"note": "x"}));
    assert_eq!(live["data"], json!({"k": "v"}), "nothing else changes");
    assert!(!is_owned_by(&live, "repo/app"));
}

#[test]
fn the_release_patch_leaves_a_managed_by_label_that_names_someone_else() {
    // Someone relabelled the object after our last apply; without labels of ours and without
    // a resourceVersion (an odd server), only the annotation goes.
    let live = json!({"metadata": {"name": "c", "labels": {MANAGED_BY_LABEL: "Helm"},
        "annotations": {DEPLOYMENT_ID_ANNOTATION: "repo/app"}}});
    assert_eq!(
        release_patch(&live),
        json!({"metadata": {"annotations": {DEPLOYMENT_ID_ANNOTATION: null}}})
    );
}

#[test]
fn namespace_defaults_follow_scope() {
    let cases = [
        // (namespaced, manifest namespace, default, expected)
        (true, None, "apps", "apps"),
        (true, None, "", "default"),
        (true, Some("explicit"), "apps", "explicit"),
        (true, Some(""), "apps", "apps"),
        (false, Some("stray"), "apps", ""),
        (false, None, "apps", ""),
    ];
    for (namespaced, ns, default, expected) in cases {
        let mut o = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "n"}});
        if let Some(ns) = ns {
            o["metadata"]["namespace"] = json!(ns);
        }
        let got = settle_namespace(&mut o, namespaced, default);
        assert_eq!(got, expected, "{namespaced} {ns:?} {default}");
        let written = o["metadata"]
            .get("namespace")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        assert_eq!(written, expected);
    }
}

#[test]
fn manifest_head_requires_identity_fields() {
    let ok = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": "n"}});
    assert_eq!(
        manifest_head(&ok).unwrap(),
        ManifestHead {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "w".into(),
            namespace: "n".into()
        }
    );
    assert_eq!(
        manifest_head(&json!({"apiVersion": "v1", "kind": "ConfigMap"})).unwrap_err(),
        "the manifest has no metadata.name"
    );
    assert_eq!(
        manifest_head(&json!({"kind": "ConfigMap", "metadata": {"name": "x"}})).unwrap_err(),
        "the manifest has no apiVersion"
    );
    assert!(manifest_head(&json!([1])).is_err());
}

#[test]
fn prune_takes_what_left_in_reverse_order_and_ignores_version_moves() {
    let previous = [
        obj("v1", "Namespace", "", "app"),
        obj("v1", "ConfigMap", "app", "config"),
        obj(
            "autoscaling/v2beta2",
            "HorizontalPodAutoscaler",
            "app",
            "web",
        ),
        obj("apps/v1", "Deployment", "app", "web"),
        obj("example.com/v1", "Widget", "app", "w"),
    ];
    let desired = [
        obj("v1", "ConfigMap", "app", "config"),
        obj("autoscaling/v2", "HorizontalPodAutoscaler", "app", "web"),
    ];
    let pruned = to_prune(&previous, &desired);
    assert_eq!(
        pruned,
        [
            obj("example.com/v1", "Widget", "app", "w"),
            obj("apps/v1", "Deployment", "app", "web"),
            obj("v1", "Namespace", "", "app"),
        ]
    );
}

#[test]
fn prune_distinguishes_namespaces_and_groups() {
    let previous = [
        obj("v1", "ConfigMap", "a", "c"),
        obj("example.com/v1", "Thing", "a", "c"),
    ];
    let desired = [
        obj("v1", "ConfigMap", "b", "c"),
        obj("other.io/v1", "Thing", "a", "c"),
    ];
    assert_eq!(to_prune(&previous, &desired).len(), 2);
    assert!(to_prune(&previous, &previous).is_empty());
}

#[test]
fn union_keeps_order_and_prefers_newer_versions() {
    let a = [
        obj("v1", "ConfigMap", "a", "c"),
        obj("autoscaling/v1", "HorizontalPodAutoscaler", "a", "h"),
    ];
    let b = [
        obj("autoscaling/v2", "HorizontalPodAutoscaler", "a", "h"),
        obj("v1", "Secret", "a", "s"),
    ];
    assert_eq!(
        union(&a, &b),
        [
            obj("v1", "ConfigMap", "a", "c"),
            obj("autoscaling/v2", "HorizontalPodAutoscaler", "a", "h"),
            obj("v1", "Secret", "a", "s"),
        ]
    );
}

#[test]
fn an_unresolved_manifest_denotes_its_object_in_any_version_and_possible_scope() {
    let head = |api_version: &str, namespace: &str| ManifestHead {
        api_version: api_version.into(),
        kind: "Deployment".into(),
        name: "web".into(),
        namespace: namespace.into(),
    };
    let live = obj("apps/v1", "Deployment", "apps", "web");
    // A version the server no longer serves still names the same object.
    assert!(may_denote(&head("apps/v1beta1", ""), "apps", &live));
    assert!(may_denote(&head("apps/v1beta1", "apps"), "", &live));
    // Naming no namespace, it lands in the default one ("default" when the bundle sets none).
    assert!(!may_denote(&head("apps/v1beta1", ""), "", &live));
    assert!(may_denote(
        &head("apps/v1beta1", ""),
        "",
        &obj("apps/v1", "Deployment", "default", "web")
    ));
    // Its scope is unknown: it may be cluster-scoped, whatever namespace it names.
    assert!(may_denote(
        &head("apps/v1beta1", "other"),
        "apps",
        &obj("apps/v1", "Deployment", "", "web")
    ));
    // Another group, kind, name or namespace is another object.
    assert!(!may_denote(&head("extensions/v1beta1", ""), "apps", &live));
    assert!(!may_denote(&head("apps/v1beta1", "other"), "apps", &live));
    let mut other = head("apps/v1beta1", "");
    other.kind = "StatefulSet".into();
    assert!(!may_denote(&other, "apps", &live));
    other = head("apps/v1beta1", "");
    other.name = "api".into();
    assert!(!may_denote(&other, "apps", &live));
}
