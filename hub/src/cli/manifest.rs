//! `flotilla agent manifest`: the YAML that installs the agent on a cluster with
//! `kubectl apply --server-side -f -`.
//!
//! One source of truth: the objects are the files of the kustomize base in `deploy/agent/`,
//! embedded at build time. They are parsed, the chosen namespace, the hub's URL and CA bundle
//! (from the `GetHubInfo` admin call), the token, the image and the agent's arguments are
//! set in the parsed documents, and the result is printed with each file's leading comment.
//! The identity Secret is not part of the output: the agent creates it, so re-applying the
//! manifest never wipes a cluster's identity.
//!
//! *Invariant:* the token appears in the output only in the bootstrap Secret, and in no
//! error message or `Debug` output.

use std::fmt;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use flotilla_proto::admin::v1 as api;
use flotilla_proto::admin::v1::admin_client::AdminClient;
use serde_json::Value;
use tonic::transport::Channel;

use crate::model::is_dns_label;

/// The files of `deploy/agent/`, in the order of its kustomization.yaml.
const BASE: [(&str, &str); 5] = [
    (
        "namespace.yaml",
        include_str!("../../../deploy/agent/namespace.yaml"),
    ),
    (
        "serviceaccount.yaml",
        include_str!("../../../deploy/agent/serviceaccount.yaml"),
    ),
    (
        "clusterrolebinding.yaml",
        include_str!("../../../deploy/agent/clusterrolebinding.yaml"),
    ),
    (
        "bootstrap-secret.yaml",
        include_str!("../../../deploy/agent/bootstrap-secret.yaml"),
    ),
    (
        "deployment.yaml",
        include_str!("../../../deploy/agent/deployment.yaml"),
    ),
];

/// The agent's container in the Deployment.
const CONTAINER: &str = "agent";
const DEFAULT_NAMESPACE: &str = "flotilla-system";

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Print the manifest that installs the agent on a cluster: pipe it to `kubectl apply --server-side -f -`.
    Manifest(ManifestArgs),
}

/// The raw flags of `flotilla agent manifest`; [`ManifestArgs::validate`] checks them.
#[derive(Args)]
pub struct ManifestArgs {
    /// Registration token from `flotilla token create` (`<id>.<secret>`).
    #[arg(long, env = "FLOTILLA_TOKEN", hide_env_values = true, value_parser = secret)]
    pub token: Redacted,
    /// The cluster's name on the hub; without it the agent derives a stable one.
    #[arg(long)]
    pub name: Option<String>,
    /// The namespace the agent runs in.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// The agent's image [default: ghcr.io/flotilla-dev/flotilla-agent:<this version>].
    #[arg(long)]
    pub image: Option<String>,
    /// A label the agent reports for the cluster, key=value (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

impl fmt::Debug for ManifestArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestArgs")
            .field("token", &self.token)
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("image", &self.image)
            .field("labels", &self.labels)
            .finish()
    }
}

/// A string that never shows in `Debug` output: the registration token.
#[derive(Clone)]
pub struct Redacted(String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redacted(***)")
    }
}

// Infallible: a clap error would echo the value, and this value is a secret.
fn secret(s: &str) -> Result<Redacted, std::convert::Infallible> {
    Ok(Redacted(s.to_string()))
}

/// Why no manifest was printed. Each message names the flag and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "--token: not a registration token: expected `<id>.<secret>` exactly as `flotilla token create` prints it; create a new one if it is lost"
    )]
    Token,
    #[error(
        "--name: {0:?} is not a lower-case RFC 1123 label (a-z, 0-9 and '-', at most 63 characters, starting and ending with a letter or digit); pick such a name, or leave --name out and the agent derives one"
    )]
    Name(String),
    #[error(
        "--namespace: {0:?} is not a lower-case RFC 1123 label (a-z, 0-9 and '-', at most 63 characters, starting and ending with a letter or digit); pick such a namespace, or leave --namespace out for {DEFAULT_NAMESPACE}"
    )]
    Namespace(String),
    #[error("--label: {label:?} {why}; pass --label key=value, e.g. --label env=prod")]
    Label { label: String, why: String },
    #[error(
        "--image: {0:?} is not an image reference; pass one like registry.example/flotilla-agent:1.2.3"
    )]
    Image(String),
    #[error("the hub's GetHubInfo answer has {0}; upgrade the hub to the version of this CLI")]
    HubInfo(&'static str),
    #[error(
        "the agent manifests built into this binary are broken ({0}); this is a bug in flotilla, please report it"
    )]
    Template(String),
}

/// A validated `flotilla agent manifest` request.
#[derive(Debug)]
pub struct AgentInstall {
    pub token: Redacted,
    pub name: Option<String>,
    pub namespace: String,
    pub image: String,
    pub labels: Vec<(String, String)>,
}

/// What the manifest needs from the hub.
#[derive(Debug)]
pub struct HubEndpoint {
    /// The URL agents dial.
    pub url: String,
    /// The CA certificates agents trust for the hub, PEM.
    pub ca_bundle_pem: String,
}

impl ManifestArgs {
    /// Check every flag; the token's secret part is never echoed.
    pub fn validate(self) -> Result<AgentInstall, ManifestError> {
        let token_ok = self.token.0.split_once('.').is_some_and(|(id, secret)| {
            !id.is_empty()
                && !secret.is_empty()
                && (id.chars().chain(secret.chars())).all(|c| c.is_ascii_alphanumeric())
        });
        if !token_ok {
            return Err(ManifestError::Token);
        }
        if let Some(name) = &self.name
            && !is_dns_label(name)
        {
            return Err(ManifestError::Name(name.clone()));
        }
        if !is_dns_label(&self.namespace) {
            return Err(ManifestError::Namespace(self.namespace));
        }
        let image = match self.image {
            None => format!(
                "ghcr.io/flotilla-dev/flotilla-agent:{}",
                env!("CARGO_PKG_VERSION")
            ),
            Some(i) if i.is_empty() || i.contains(char::is_whitespace) => {
                return Err(ManifestError::Image(i));
            }
            Some(i) => i,
        };
        let mut labels: Vec<(String, String)> = Vec::new();
        for label in self.labels {
            let (k, v) = parse_label(&label).map_err(|why| ManifestError::Label {
                label: label.clone(),
                why,
            })?;
            if labels.iter().any(|(seen, _)| *seen == k) {
                let why = format!("repeats the key {k:?}");
                return Err(ManifestError::Label { label, why });
            }
            labels.push((k, v));
        }
        Ok(AgentInstall {
            token: self.token,
            name: self.name,
            namespace: self.namespace,
            image,
            labels,
        })
    }
}

/// `flotilla agent manifest`: validate the flags, ask the hub where agents reach it, render.
pub async fn agent_manifest(
    admin: &mut AdminClient<Channel>,
    args: ManifestArgs,
) -> anyhow::Result<String> {
    let install = args.validate()?;
    let info = admin
        .get_hub_info(api::GetHubInfoRequest {})
        .await
        .context("asking the hub for its agent URL and CA bundle")?
        .into_inner();
    let hub = HubEndpoint {
        url: info.agent_url,
        ca_bundle_pem: info.ca_bundle_pem,
    };
    Ok(render(&install, &hub)?)
}

/// The multi-document YAML installing the agent described by `install` for `hub`.
pub fn render(install: &AgentInstall, hub: &HubEndpoint) -> Result<String, ManifestError> {
    if !hub.url.starts_with("https://") {
        return Err(ManifestError::HubInfo("no https agent URL"));
    }
    if !hub.ca_bundle_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ManifestError::HubInfo("no CA certificate"));
    }
    let mut out = format!(
        "# The Flotilla agent{}, for the hub at {}.\n\
         # Generated by `flotilla agent manifest` {}; install with `kubectl apply --server-side -f -`\n\
         # (server-side: a client-side apply would copy the token into an annotation).\n\
         # It holds a registration token: keep it out of Git and logs.\n",
        install
            .name
            .as_ref()
            .map_or(String::new(), |n| format!(" of cluster {n}")),
        hub.url,
        env!("CARGO_PKG_VERSION"),
    );
    for (file, text) in BASE {
        let bad = |why: String| ManifestError::Template(format!("{file}: {why}"));
        let mut doc: Value = serde_saphyr::from_str(text).map_err(|e| bad(e.to_string()))?;
        customize(&mut doc, install, hub).map_err(bad)?;
        let yaml = serde_saphyr::to_string(&doc).map_err(|e| bad(e.to_string()))?;
        out.push_str("---\n");
        out.push_str(&leading_comment(text));
        out.push_str(&yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Set the namespace everywhere it appears, then what is specific to one kind.
fn customize(doc: &mut Value, install: &AgentInstall, hub: &HubEndpoint) -> Result<(), String> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("no kind")?
        .to_string();
    let ns = Value::from(install.namespace.as_str());
    match kind.as_str() {
        "Namespace" => set(doc, "/metadata/name", ns)?,
        "ClusterRoleBinding" => {
            let subjects = doc
                .pointer_mut("/subjects")
                .and_then(Value::as_array_mut)
                .ok_or("no subjects")?;
            for s in subjects {
                if s.get("kind").and_then(Value::as_str) == Some("ServiceAccount") {
                    set(s, "/namespace", ns.clone())?;
                }
            }
        }
        _ => set(doc, "/metadata/namespace", ns)?,
    }
    match kind.as_str() {
        "Secret" => {
            set(doc, "/stringData/hubURL", hub.url.as_str().into())?;
            set(
                doc,
                "/stringData/caBundle",
                hub.ca_bundle_pem.as_str().into(),
            )?;
            set(doc, "/stringData/token", install.token.0.as_str().into())?;
        }
        "Deployment" => agent_container(doc, install)?,
        _ => {}
    }
    Ok(())
}

/// The image and the per-cluster arguments of the agent's container.
fn agent_container(doc: &mut Value, install: &AgentInstall) -> Result<(), String> {
    let container = doc
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
        .and_then(|cs| {
            cs.iter_mut()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(CONTAINER))
        })
        .ok_or(format!("no container named {CONTAINER:?}"))?;
    set(container, "/image", install.image.as_str().into())?;
    let args = container
        .pointer_mut("/args")
        .and_then(Value::as_array_mut)
        .ok_or("the agent container has no args")?;
    if let Some(name) = &install.name {
        args.push(format!("--cluster-name={name}").into());
    }
    for (k, v) in &install.labels {
        args.push(format!("--label={k}={v}").into());
    }
    Ok(())
}

/// Replace the value at `pointer`, which the template must already have.
fn set(doc: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    let slot = doc
        .pointer_mut(pointer)
        .ok_or_else(|| format!("no {pointer}"))?;
    *slot = value;
    Ok(())
}

/// The comment lines a file starts with (why the object is as it is), kept in the output.
fn leading_comment(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A Kubernetes label `key=value`: the key an optional DNS-subdomain prefix and `/`, then a
/// name; the value empty or a name.
fn parse_label(s: &str) -> Result<(String, String), String> {
    let (key, value) = s.split_once('=').ok_or("has no `=`")?;
    let (prefix, name) = key
        .rsplit_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.split('.').all(is_dns_label))
    {
        return Err(format!(
            "has a key prefix {p:?} that is not a lower-case DNS name"
        ));
    }
    if !is_label_name(name) {
        return Err(format!(
            "has a key name {name:?} that is not 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    if !value.is_empty() && !is_label_name(value) {
        return Err(format!(
            "has a value {value:?} that is not empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok((key.to_string(), value.to_string()))
}

fn is_label_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests;
