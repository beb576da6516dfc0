//! Requests on resource paths: resolves the type (unknown → plain 404), checks scope and
//! subresource, decodes query parameters and bodies (JSON, or YAML for apply), and dispatches to
//! reads, watches, the write path and deletes, all under one lock of the store. Follow-up work
//! (CRD establishing, namespace finalization) is spawned after the lock is released.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Response};
use serde_json::{Value, json};

use super::catalog::ResourceType;
use super::core::Core;
use super::http::{Query, ResourcePath, json_response, success_status};
use super::lifecycle::{self, DeleteOpts, Deleted};
use super::read::{self, ListOptions, Representation};
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, FieldError};
use super::store::{State, meta_str, now_rfc3339};
use super::watch::{self, WatchOptions};
use super::write::{self, PatchBody, WriteCtx};

/// The largest request body accepted (the real server's limit is 3 MiB).
const BODY_LIMIT: usize = 3 * 1024 * 1024;
const ACCEPTED_PATCHES: &str =
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";

/// The decoded parts of a resource request.
struct Call {
    method: Method,
    path: ResourcePath,
    query: Query,
    body: Vec<u8>,
    content_type: String,
    repr: Representation,
    user_agent: String,
}

pub(crate) async fn handle(
    core: &Arc<Core>,
    path: ResourcePath,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let body = axum::body::to_bytes(Body::new(body), BODY_LIMIT)
        .await
        .map_err(|_| {
            ApiError::new(
                413,
                "RequestEntityTooLarge",
                "the request body is too large",
                None,
            )
        })?;
    let call = Call {
        method: parts.method.clone(),
        path,
        query: Query::parse(parts.uri.query().unwrap_or_default()),
        body: body.to_vec(),
        content_type: text(CONTENT_TYPE),
        repr: Representation::from_accept(&text(ACCEPT)),
        user_agent: text(USER_AGENT),
    };
    let mut state = core.lock();
    let result = dispatch(core, &mut state, &call);
    let effects = std::mem::take(&mut state.effects);
    drop(state);
    core.spawn_effects(effects);
    result
}

/// A request resolved against the catalog.
struct Target {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
    dry_run: bool,
}

impl Target {
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    fn ctx(&self, manager: String) -> WriteCtx {
        WriteCtx {
            rt: self.rt.clone(),
            namespace: self.namespace.clone(),
            status: self.status,
            manager,
            dry_run: self.dry_run,
            now: now_rfc3339(),
        }
    }
}

/// The served type, scope and subresource of a path; anything unserved is the plain 404.
fn resolve(state: &State, call: &Call) -> Result<Target, ApiError> {
    let p = &call.path;
    let rt = state
        .catalog
        .by_resource(&p.group, &p.version, &p.resource)
        .ok_or(ApiError::PageNotFound)?;
    let unscoped_name = rt.namespaced && p.namespace.is_none() && p.name.is_some();
    if unscoped_name || (!rt.namespaced && p.namespace.is_some()) {
        return Err(ApiError::PageNotFound);
    }
    let status = match p.subresource.as_deref() {
        None => false,
        Some("status") if rt.status_subresource => true,
        Some(_) => return Err(ApiError::PageNotFound),
    };
    let dry_run = match call.query.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            let msg = format!("Invalid dry run value: {other:?}; supported values: \"All\"");
            return Err(ApiError::bad_request(msg));
        }
    };
    Ok(Target {
        rt,
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        status,
        dry_run,
    })
}

fn dispatch(core: &Arc<Core>, state: &mut State, call: &Call) -> Result<Response<Body>, ApiError> {
    let t = resolve(state, call)?;
    let rt = &t.rt;
    match (&call.method, t.name.as_deref()) {
        (&Method::GET, Some(name)) => Ok(json_response(
            200,
            &read::get(state, rt, t.ns(), name, call.repr)?,
        )),
        (&Method::GET, None) if call.query.flag("watch") => {
            let opts = watch_options(call, rt)?;
            let body = watch::start(
                state,
                rt.clone(),
                t.namespace.clone(),
                opts,
                core.cancel.clone(),
            )?;
            let mut resp = Response::new(body);
            resp.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        (&Method::GET, None) => {
            let list = read::list(
                state,
                rt,
                t.namespace.as_deref(),
                &list_options(call, rt)?,
                call.repr,
            )?;
            Ok(json_response(200, &list))
        }
        (&Method::POST, None) if !rt.namespaced || t.namespace.is_some() => {
            let created =
                write::create(state, &t.ctx(update_manager(call)), parse_json(&call.body)?)?;
            Ok(json_response(
                201,
                &read::serve(rt, &created, Representation::Full),
            ))
        }
        (&Method::PUT, Some(name)) => {
            let written = write::update(
                state,
                &t.ctx(update_manager(call)),
                name,
                parse_json(&call.body)?,
            )?;
            Ok(written_response(rt, &written))
        }
        (&Method::PATCH, Some(name)) => {
            let (body, manager) = patch_body(call, rt)?;
            Ok(written_response(
                rt,
                &write::patch(state, &t.ctx(manager), name, body)?,
            ))
        }
        (&Method::DELETE, Some(name)) if !t.status => {
            let opts = delete_options(call, t.dry_run)?;
            let body = match lifecycle::delete(state, rt, t.ns(), name, &opts)? {
                Deleted::Gone(obj) => {
                    success_status(&rt.group, &rt.plural, name, meta_str(&obj, "uid"))
                }
                Deleted::Pending(obj) => read::serve(rt, &obj, Representation::Full),
            };
            Ok(json_response(200, &body))
        }
        (&Method::DELETE, None) => {
            delete_collection(state, rt, t.namespace.as_deref(), call, t.dry_run)
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn written_response(rt: &ResourceType, written: &write::Written) -> Response<Body> {
    let code = if written.created { 201 } else { 200 };
    json_response(
        code,
        &read::serve(rt, &written.object, Representation::Full),
    )
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body as JSON: {e}")))
}

/// An apply body: JSON, or YAML.
fn parse_yaml(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("apply body is not UTF-8"))?;
    serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// The manager of a non-apply write: `fieldManager`, else the user agent's program name.
fn update_manager(call: &Call) -> String {
    match call.query.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => call
            .user_agent
            .split('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    }
}

fn patch_body(call: &Call, rt: &ResourceType) -> Result<(PatchBody, String), ApiError> {
    let media = call
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let force = call.query.get("force");
    if media == "application/apply-patch+yaml" {
        let force = match force {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid force value {other:?}"
                )));
            }
        };
        let manager = call
            .query
            .get("fieldManager")
            .unwrap_or_default()
            .to_string();
        return Ok((
            PatchBody::Apply {
                config: parse_yaml(&call.body)?,
                force,
            },
            manager,
        ));
    }
    if force.is_some() {
        let err = FieldError::forbidden("force", "may not be specified for non-apply patch");
        return Err(ApiError::invalid("meta.k8s.io", "PatchOptions", "", &[err]));
    }
    let body = parse_json(&call.body)?;
    let patch = match media {
        "application/merge-patch+json" => PatchBody::Merge(body),
        "application/json-patch+json" => PatchBody::Json(body),
        "application/strategic-merge-patch+json" if rt.custom.is_none() => {
            PatchBody::Strategic(body)
        }
        _ => return Err(ApiError::unsupported_media_type(media, ACCEPTED_PATCHES)),
    };
    Ok((patch, update_manager(call)))
}

fn selectors(call: &Call, rt: &ResourceType) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(call.query.get("labelSelector").unwrap_or_default())?;
    let fields = FieldSelector::parse(
        call.query.get("fieldSelector").unwrap_or_default(),
        &rt.kind,
    )?;
    Ok((labels, fields))
}

fn list_options(call: &Call, rt: &ResourceType) -> Result<ListOptions, ApiError> {
    let (labels, fields) = selectors(call, rt)?;
    let limit = match call.query.get("limit") {
        None | Some("") => None,
        Some(l) => Some(
            l.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
    };
    let continue_token = call
        .query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(String::from);
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token,
    })
}

fn watch_options(call: &Call, rt: &ResourceType) -> Result<WatchOptions, ApiError> {
    let (labels, fields) = selectors(call, rt)?;
    let seconds = call
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800);
    Ok(WatchOptions {
        labels,
        fields,
        resource_version: call.query.get("resourceVersion").map(String::from),
        timeout: Duration::from_secs(seconds),
        send_initial_events: call.query.flag("sendInitialEvents"),
        repr: call.repr,
    })
}

fn delete_options(call: &Call, dry_run: bool) -> Result<DeleteOpts, ApiError> {
    let body: Value = if call.body.is_empty() {
        json!({})
    } else {
        parse_json(&call.body)?
    };
    let body_dry_run = body["dryRun"]
        .as_array()
        .is_some_and(|d| d.iter().any(|v| v == "All"));
    let text = |p: &str| body.pointer(p).and_then(Value::as_str).map(String::from);
    Ok(DeleteOpts {
        dry_run: dry_run || body_dry_run,
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
    })
}

fn delete_collection(
    state: &mut State,
    rt: &Arc<ResourceType>,
    ns: Option<&str>,
    call: &Call,
    dry_run: bool,
) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(call, rt)?;
    let targets: Vec<(String, String)> = state
        .list(&rt.key(), ns)
        .filter(|o| labels.matches(&o["metadata"]["labels"]) && fields.matches(o))
        .map(|o| {
            (
                meta_str(o, "namespace").to_string(),
                meta_str(o, "name").to_string(),
            )
        })
        .collect();
    let opts = delete_options(call, dry_run)?;
    let mut items = Vec::new();
    for (obj_ns, name) in targets {
        match lifecycle::delete(state, rt, &obj_ns, &name, &opts)? {
            Deleted::Gone(o) | Deleted::Pending(o) => {
                items.push(read::serve(rt, &o, Representation::Full))
            }
        }
    }
    let list = json!({
        "apiVersion": rt.api_version(), "kind": format!("{}List", rt.kind),
        "metadata": {"resourceVersion": state.resource_version().to_string()}, "items": items,
    });
    Ok(json_response(200, &list))
}
