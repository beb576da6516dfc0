//! `flotilla agent manifest`: the rendered objects, where the token goes, flag validation,
//! the kustomize bases rendering with the real `kubectl`, and the command against a real hub.

use std::process::Command;

use clap::Parser as _;
use serde_json::{Value, json};

use super::*;
use crate::cli::{Cli, execute};

const TOKEN: &str = "0a1b2c3d4e5f.00112233445566778899aabbccddeeff";
const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\nline2\n-----END CERTIFICATE-----\n";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn args(extra: &[&str]) -> ManifestArgs {
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ManifestArgs,
    }
    let mut argv = vec!["manifest"];
    argv.extend_from_slice(extra);
    Wrap::try_parse_from(argv).expect("flags parse").args
}

fn hub() -> HubEndpoint {
    HubEndpoint {
        url: "https://hub.example.com:443".into(),
        ca_bundle_pem: CA.into(),
    }
}

fn render_with(extra: &[&str]) -> (String, Vec<Value>) {
    let install = args(extra).validate().expect("valid flags");
    let out = render(&install, &hub()).expect("renders");
    let docs = serde_saphyr::from_multiple(&out).expect("the output is YAML");
    (out, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

fn container(docs: &[Value]) -> &Value {
    &find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn objects_land_in_the_chosen_namespace() {
    for ns in ["flotilla-system", "fleet-agents"] {
        let (out, docs) = render_with(&["--token", TOKEN, "--namespace", ns]);
        let names: Vec<(String, String, String)> = docs
            .iter()
            .map(|d| {
                let s = |v: &Value| v.as_str().unwrap_or("").to_string();
                (
                    s(&d["kind"]),
                    s(&d["metadata"]["name"]),
                    s(&d["metadata"]["namespace"]),
                )
            })
            .collect();
        let expect = |k: &str, n: &str, ns: &str| (k.to_string(), n.to_string(), ns.to_string());
        assert_eq!(
            names,
            vec![
                expect("Namespace", ns, ""),
                expect("ServiceAccount", "flotilla-agent", ns),
                expect("ClusterRoleBinding", "flotilla-agent", ""),
                expect("Secret", "flotilla-agent-bootstrap", ns),
                expect("Deployment", "flotilla-agent", ns),
            ]
        );
        let binding = find(&docs, "ClusterRoleBinding");
        assert_eq!(binding["roleRef"]["name"], "cluster-admin");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "flotilla-agent", "namespace": ns}])
        );
        if ns != "flotilla-system" {
            assert!(
                !out.contains("flotilla-system"),
                "the default namespace leaks:\n{out}"
            );
        }
        assert!(out.contains("as Rancher Fleet's agent is"), "comments kept");
    }
}

#[test]
fn the_token_is_only_in_the_secret() {
    let (out, docs) = render_with(&["--token", TOKEN, "--name", "east"]);
    assert_eq!(out.matches(TOKEN).count(), 1, "{out}");
    for d in &docs {
        let has = d.to_string().contains(TOKEN);
        assert_eq!(has, d["kind"] == "Secret", "token in a {}", d["kind"]);
    }
    let secret = find(&docs, "Secret");
    assert_eq!(
        secret["stringData"],
        json!({"hubURL": "https://hub.example.com:443", "caBundle": CA, "token": TOKEN})
    );
    assert!(secret.get("data").is_none());
    let install = args(&["--token", TOKEN]).validate().unwrap();
    assert!(!format!("{install:?}").contains(TOKEN));
    assert!(!format!("{:?}", args(&["--token", TOKEN])).contains(TOKEN));
}

#[test]
fn a_token_that_looks_like_a_number_stays_a_string() {
    let (_, docs) = render_with(&["--token", "123456.789012"]);
    assert_eq!(
        find(&docs, "Secret")["stringData"]["token"],
        "123456.789012"
    );
}

#[test]
fn deployment_arguments_without_a_name() {
    let (_, docs) = render_with(&["--token", TOKEN]);
    let c = container(&docs);
    assert_eq!(
        c["args"],
        json!([
            "--bootstrap-secret=flotilla-agent-bootstrap",
            "--identity-secret=flotilla-agent-identity",
            "--metrics-addr=0.0.0.0:9091",
        ])
    );
    assert_eq!(
        c["env"],
        json!([{"name": "FLOTILLA_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}])
    );
    // The metrics port is named, and is the one `--metrics-addr` binds.
    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 9091, "protocol": "TCP"}])
    );
    assert_eq!(
        c["image"],
        format!("ghcr.io/flotilla-dev/flotilla-agent:{VERSION}")
    );
    assert_eq!(
        c["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "capabilities": {"drop": ["ALL"]}})
    );
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}})
    );
    let d = find(&docs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "flotilla-agent");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn deployment_arguments_with_a_name_labels_and_image() {
    let (_, docs) = render_with(&[
        "--token",
        TOKEN,
        "--name",
        "prod-east",
        "--label",
        "env=prod",
        "--label",
        "example.com/region=us-east-1",
        "--label",
        "empty=",
        "--image",
        "registry.local/agent:dev",
    ]);
    let c = container(&docs);
    assert_eq!(
        c["args"],
        json!([
            "--bootstrap-secret=flotilla-agent-bootstrap",
            "--identity-secret=flotilla-agent-identity",
            "--metrics-addr=0.0.0.0:9091",
            "--cluster-name=prod-east",
            "--label=env=prod",
            "--label=example.com/region=us-east-1",
            "--label=empty=",
        ])
    );
    assert_eq!(c["image"], "registry.local/agent:dev");
}

#[test]
fn invalid_flags_name_the_flag_and_never_echo_the_token() {
    let cases: &[(&[&str], &str)] = &[
        (&["--token", "s3cr3tvalue"], "--token"),
        (&["--token", "abc.de.f"], "--token"),
        (&["--token", ".abc"], "--token"),
        (&["--token", "abc.x y"], "--token"),
        (&["--token", TOKEN, "--name", "Prod_1"], "--name"),
        (&["--token", TOKEN, "--name", ""], "--name"),
        (&["--token", TOKEN, "--namespace=-ns"], "--namespace"),
        (&["--token", TOKEN, "--label", "env"], "--label"),
        (&["--token", TOKEN, "--label", "=x"], "--label"),
        (&["--token", TOKEN, "--label", "a=b=c"], "--label"),
        (&["--token", TOKEN, "--label", "Bad..Prefix/a=b"], "--label"),
        (
            &["--token", TOKEN, "--label", "a=1", "--label", "a=2"],
            "--label",
        ),
        (&["--token", TOKEN, "--image", "a b"], "--image"),
    ];
    for (flags, flag) in cases {
        let err = args(flags)
            .validate()
            .expect_err(&format!("{flags:?} must be refused"))
            .to_string();
        assert!(err.starts_with(&format!("{flag}: ")), "{flags:?}: {err}");
        for secret in ["s3cr3tvalue", "de.f", "x y", TOKEN] {
            assert!(!err.contains(secret), "{flags:?} echoes a secret: {err}");
        }
    }
}

#[test]
fn a_hub_without_url_or_ca_is_refused() {
    let install = args(&["--token", TOKEN]).validate().unwrap();
    let no_ca = HubEndpoint {
        ca_bundle_pem: String::new(),
        ..hub()
    };
    assert!(matches!(
        render(&install, &no_ca),
        Err(ManifestError::HubInfo(_))
    ));
    let no_url = HubEndpoint {
        url: String::new(),
        ..hub()
    };
    assert!(matches!(
        render(&install, &no_url),
        Err(ManifestError::HubInfo(_))
    ));
}

#[test]
fn the_embedded_files_are_the_kustomization_and_match_the_version() {
    let kustomization: Value =
        serde_saphyr::from_str(include_str!("../../../../deploy/agent/kustomization.yaml"))
            .unwrap();
    let names: Vec<&str> = BASE.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        kustomization["resources"],
        json!(names),
        "deploy/agent/kustomization.yaml and manifest::BASE must list the same files"
    );
    let base: Value = serde_saphyr::from_str(BASE[4].1).unwrap();
    assert_eq!(
        base["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("ghcr.io/flotilla-dev/flotilla-agent:{VERSION}"),
        "bump the image tag in deploy/agent/deployment.yaml with the crate version"
    );
}

/// `kubectl kustomize dir`, parsed; fails (never skips) when kubectl is missing.
fn kustomize(dir: &str) -> Vec<Value> {
    let path = format!("{}/../deploy/{dir}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("kubectl")
        .args(["kustomize", &path])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `kubectl kustomize` ({e}): install kubectl 1.32 or newer and put it on PATH to run this test")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/{dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

#[test]
fn kustomize_renders_the_agent_base_as_embedded() {
    let rendered = kustomize("agent");
    let embedded: Vec<Value> = BASE
        .iter()
        .map(|(_, text)| serde_saphyr::from_str(text).unwrap())
        .collect();
    assert_eq!(rendered, embedded);
}

#[test]
fn kustomize_renders_the_hub_base() {
    let docs = kustomize("hub");
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["Namespace", "ServiceAccount", "Service", "StatefulSet"]
    );
    let sts = find(&docs, "StatefulSet");
    assert_eq!(sts["spec"]["replicas"], 1);
    let c = &sts["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args[..7],
        [
            "serve",
            "--data-dir",
            "/var/lib/flotilla",
            "--listen",
            "0.0.0.0:8443",
            "--agent-url",
            "https://flotilla-hub.flotilla-system.svc:8443"
        ]
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let ports: Vec<(i64, &str)> = find(&docs, "Service")["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_i64().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    assert_eq!(ports, [(8443, "grpc"), (9090, "metrics")]);
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        c["volumeMounts"][0]["name"]
    );
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/var/lib/flotilla");
}

#[tokio::test]
async fn the_command_fills_in_the_hub_it_talks_to() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::HubConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.agent_url = Some("https://hub.example.com:443".into());
    let hub = crate::Hub::bind(config).await.unwrap();
    let ca = hub.ca_pem();
    let cred = hub.admin_credential_path().to_str().unwrap().to_string();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(hub.run(shutdown.clone()));

    let run = |argv: &[&str]| {
        let mut full = vec!["flotilla", "--config", cred.as_str()];
        full.extend_from_slice(argv);
        execute(Cli::try_parse_from(full).unwrap())
    };
    let token = run(&["token", "create"]).await.unwrap();
    let out = run(&[
        "agent",
        "manifest",
        "--token",
        token.trim(),
        "--name",
        "east",
    ])
    .await
    .unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
    let secret = find(&docs, "Secret");
    assert_eq!(
        secret["stringData"]["hubURL"],
        "https://hub.example.com:443"
    );
    assert_eq!(secret["stringData"]["caBundle"], ca.as_str());
    assert_eq!(secret["stringData"]["token"], token.trim());

    let err = run(&["agent", "manifest", "--token", "nope"])
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("--token: "), "{err}");

    shutdown.cancel();
    running.await.unwrap().unwrap();
}
