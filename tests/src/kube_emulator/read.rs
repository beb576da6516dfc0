//! Reads: GET of one object and LIST of a collection (one namespace or all), with label and
//! field selectors, `limit`/`continue` paging, and the metadata-only representation
//! (`PartialObjectMetadata`) clients ask for with `Accept`. Items of built-in lists carry no
//! `apiVersion`/`kind`, as on a real server; custom resource items do.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::catalog::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{State, meta_str};

/// Full objects, or `PartialObjectMetadata`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Representation {
    Full,
    Metadata,
}

impl Representation {
    /// From an `Accept` header.
    pub(crate) fn from_accept(accept: &str) -> Self {
        if accept.contains("as=PartialObjectMetadata") {
            Representation::Metadata
        } else {
            Representation::Full
        }
    }
}

/// An object as served at `rt`'s version.
pub(crate) fn serve(rt: &ResourceType, obj: &Value, repr: Representation) -> Value {
    match repr {
        Representation::Metadata => json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"],
        }),
        Representation::Full => {
            let mut out = obj.clone();
            out["apiVersion"] = json!(rt.api_version());
            out["kind"] = json!(rt.kind);
            out
        }
    }
}

pub(crate) fn get(
    state: &State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    repr: Representation,
) -> Result<Value, ApiError> {
    state
        .get(&rt.key(), ns, name)
        .map(|o| serve(rt, o, repr))
        .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
}

/// Query options of a LIST.
#[derive(Debug, Default)]
pub(crate) struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

fn decode_continue(token: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid: illegal base64 data");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    v["start"].as_str().map(String::from).ok_or_else(bad)
}

fn encode_continue(rv: u64, start: &str) -> String {
    let v = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

/// The sort key of an object in a list (`namespace/name`).
fn position(obj: &Value) -> String {
    format!("{}/{}", meta_str(obj, "namespace"), meta_str(obj, "name"))
}

pub(crate) fn list(
    state: &State,
    rt: &ResourceType,
    ns: Option<&str>,
    opts: &ListOptions,
    repr: Representation,
) -> Result<Value, ApiError> {
    let after = opts
        .continue_token
        .as_deref()
        .map(decode_continue)
        .transpose()?;
    let mut matching = state
        .list(&rt.key(), ns)
        .filter(|o| opts.labels.matches(&o["metadata"]["labels"]) && opts.fields.matches(o))
        .filter(|o| after.as_ref().is_none_or(|a| position(o) > *a));
    let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page: Vec<&Value> = matching.by_ref().take(limit).collect();
    let remaining = matching.count();
    let rv = state.resource_version();
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    if remaining > 0 {
        let last = page.last().map(|o| position(o)).unwrap_or_default();
        meta.insert("continue".into(), json!(encode_continue(rv, &last)));
        meta.insert("remainingItemCount".into(), json!(remaining));
    }
    let items: Vec<Value> = page
        .into_iter()
        .map(|o| {
            let mut item = serve(rt, o, repr);
            if repr == Representation::Full && rt.custom.is_none() {
                item.as_object_mut().map(|m| {
                    m.remove("apiVersion");
                    m.remove("kind")
                });
            }
            item
        })
        .collect();
    let (api_version, kind) = match repr {
        Representation::Metadata => (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadataList".to_string(),
        ),
        Representation::Full => (rt.api_version(), format!("{}List", rt.kind)),
    };
    Ok(json!({ "apiVersion": api_version, "kind": kind, "metadata": meta, "items": items }))
}
