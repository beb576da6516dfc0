//! Fingerprints see spec changes but not status or bookkeeping; the diff names the leaves that
//! differ and honours compare patches (pointers, `remove` operations, matching).

use serde_json::{Value, json};

use super::*;

fn live() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7", "generation": 2,
            "uid": "u", "creationTimestamp": "t", "managedFields": [{"manager": "flotilla"}],
            "labels": {"app": "web"}, "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent"}]}}},
        "status": {"replicas": 3},
    })
}

fn patch(kind: &str, name: &str, pointers: &[&str], removed: &[&str]) -> ComparePatch {
    ComparePatch {
        api_version: String::new(),
        kind: kind.into(),
        namespace: String::new(),
        name: name.into(),
        json_pointers: pointers.iter().map(|s| s.to_string()).collect(),
        removed: removed.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn fingerprints_ignore_status_and_server_metadata() {
    let base = fingerprint(&live());
    let mut status_only = live();
    status_only["status"]["availableReplicas"] = json!(3);
    status_only["metadata"]["resourceVersion"] = json!("8");
    status_only["metadata"]["managedFields"] = json!([]);
    assert_eq!(fingerprint(&status_only), base);
    let mut edited = live();
    edited["spec"]["replicas"] = json!(5);
    assert_ne!(fingerprint(&edited), base);
    let mut labelled = live();
    labelled["metadata"]["labels"]["x"] = json!("y");
    assert_ne!(fingerprint(&labelled), base);
}

#[test]
fn fingerprints_do_not_depend_on_key_order() {
    let a: Value = serde_json::from_str(r#"{"a": 1, "b": {"c": 2, "d": 3}}"#).unwrap();
    let b: Value = serde_json::from_str(r#"{"b": {"d": 3, "c": 2}, "a": 1}"#).unwrap();
    assert_eq!(fingerprint(&a), fingerprint(&b));
}

#[test]
fn diff_names_changed_added_and_removed_leaves() {
    let would = live();
    let mut changed = live();
    changed["spec"]["replicas"] = json!(5);
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    changed["metadata"]["labels"]["a/b~c"] = json!("x");
    changed["metadata"]["resourceVersion"] = json!("99");
    changed["status"] = json!({"replicas": 1});
    assert_eq!(
        modified_fields(&would, &changed, &[]),
        [
            "/metadata/labels/a~1b~0c",
            "/spec/replicas",
            "/spec/template/spec/containers/0/image"
        ]
    );
    assert!(modified_fields(&would, &live(), &[]).is_empty());
    let mut more = live();
    more["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar"}));
    assert_eq!(
        modified_fields(&would, &more, &[]),
        ["/spec/template/spec/containers"]
    );
}

#[test]
fn compare_patches_hide_pointers_and_removed_fields() {
    let would = live();
    let mut hpa = live();
    hpa["spec"]["replicas"] = json!(7);
    hpa["metadata"]["labels"]["scaled"] = json!("yes");
    let by_pointer = patch("Deployment", "web", &["/spec/replicas"], &[]);
    assert_eq!(
        modified_fields(&would, &hpa, &[&by_pointer]),
        ["/metadata/labels/scaled"]
    );
    let by_remove = patch("", "", &[], &["/spec/replicas", "/metadata/labels/scaled"]);
    assert!(modified_fields(&would, &hpa, &[&by_remove]).is_empty());
    // A pointer hides what lies under it, not its neighbours that share a prefix.
    let whole_labels = patch("", "", &["/metadata/labels"], &[]);
    assert_eq!(
        modified_fields(&would, &hpa, &[&whole_labels]),
        ["/spec/replicas"]
    );
    let prefix_only = patch("", "", &["/spec/replica"], &[]);
    assert_eq!(
        modified_fields(&would, &hpa, &[&prefix_only]),
        ["/metadata/labels/scaled", "/spec/replicas"]
    );
}

#[test]
fn patches_match_on_each_non_empty_field() {
    let object = ObjectRef {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        namespace: "shop".into(),
        name: "web".into(),
    };
    let patches = [
        patch("", "", &["/a"], &[]),
        patch("Deployment", "", &["/b"], &[]),
        patch("Deployment", "other", &["/c"], &[]),
        patch("Service", "web", &["/d"], &[]),
        ComparePatch {
            api_version: "apps/v1".into(),
            namespace: "shop".into(),
            ..patch("", "web", &["/e"], &[])
        },
        ComparePatch {
            namespace: "elsewhere".into(),
            ..patch("", "", &["/f"], &[])
        },
    ];
    let matched: Vec<&str> = patches_for(&patches, &object)
        .iter()
        .map(|p| p.json_pointers[0].as_str())
        .collect();
    assert_eq!(matched, ["/a", "/b", "/e"]);
}
