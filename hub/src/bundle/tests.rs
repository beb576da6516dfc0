//! Bundle building from fixture files.

use super::*;

fn file(path: &str, data: &str) -> BundleFile {
    BundleFile {
        path: path.into(),
        data: data.as_bytes().to_vec(),
    }
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n";

#[test]
fn multi_document_files_in_path_order() {
    let files = [
        file(
            "app/b.yaml",
            &format!("{CM}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s\n---\n"),
        ),
        file(
            "app/a.json",
            r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
        ),
        file("app/README.md", "not a manifest"),
        file("app/fleet.yaml", "defaultNamespace: x"),
    ];
    let built = build("c0ffee", "default", &files).unwrap();
    let sources: Vec<_> = built
        .content
        .manifests
        .iter()
        .map(|m| m.source.as_str())
        .collect();
    assert_eq!(sources, ["app/a.json#1", "app/b.yaml#1", "app/b.yaml#2"]);
    assert_eq!(built.manifests.len(), 3);
    assert_eq!(built.content.revision, "c0ffee");
}

#[test]
fn content_hash_ignores_revision_but_not_content() {
    let a = build("r1", "default", &[file("a.yaml", CM)]).unwrap();
    let b = build("r2", "default", &[file("a.yaml", CM)]).unwrap();
    assert_eq!(a.content.content_hash, b.content.content_hash);
    let c = build(
        "r2",
        "default",
        &[file("a.yaml", &CM.replace("k: v", "k: w"))],
    )
    .unwrap();
    assert_ne!(a.content.content_hash, c.content.content_hash);
    let d = build("r2", "other", &[file("a.yaml", CM)]).unwrap();
    assert_ne!(a.content.content_hash, d.content.content_hash);
}

#[test]
fn errors_name_file_and_line() {
    let bad_yaml = format!("{CM}---\napiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n");
    let err = build("r", "default", &[file("app/x.yaml", &bad_yaml)]).unwrap_err();
    assert_eq!(err.file, "app/x.yaml");
    assert_eq!(err.line, Some(7), "{err}");

    let no_name = "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n";
    let err = build("r", "default", &[file("y.yml", no_name)]).unwrap_err();
    assert!(err.to_string().starts_with("y.yml:1: "), "{err}");
    assert!(err.message.contains("metadata.name"), "{err}");

    let scalar = "just a string\n";
    let err = build("r", "default", &[file("z.yaml", scalar)]).unwrap_err();
    assert!(err.message.contains("found a string"), "{err}");

    let bad_json = "{\"apiVersion\": ";
    let err = build("r", "default", &[file("j.json", bad_json)]).unwrap_err();
    assert_eq!(err.file, "j.json");
}

#[test]
fn lists_are_expanded_and_empty_documents_skipped() {
    let list = "---\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n...\n";
    let built = build("r", "default", &[file("l.yaml", list)]).unwrap();
    assert_eq!(built.manifests.len(), 2);
}

#[test]
fn identical_objects_share_one_hash() {
    let built = build("r", "default", &[file("a.yaml", CM), file("b.yaml", CM)]).unwrap();
    assert_eq!(
        built.content.manifests[0].hash,
        built.content.manifests[1].hash
    );
}
