//! The HTTP surface: bearer-token authentication (401 Status), the path grammar of the real
//! server (`/api/v1/...`, `/apis/{group}/{version}/...`, namespaced and cluster-scoped resource
//! paths, subresources), discovery routes, query parsing, injected failures, and turning results
//! into responses: JSON with the real codes, `Status` bodies for errors, and the mux's plain-text
//! `404 page not found` for anything the server does not serve.
//! *Boundary:* only this module and `resources.rs` see HTTP types.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tracing::debug;

use super::core::{Core, RequestRecord};
use super::discovery;
use super::resources;
use super::status::ApiError;

/// Where a path points.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Version,
    Health,
    CoreRoot,
    ApisRoot,
    Group(String),
    GroupVersion { group: String, version: String },
    Resource(ResourcePath),
    Unknown,
}

/// A resource path: `[/namespaces/{ns}]/{resource}[/{name}[/{subresource}]]` under a group version.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| {
                std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
                continue;
            }
            None => out.push(bytes[i]),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn parse_path(path: &str) -> Route {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (group, version, rest) = match s.as_slice() {
        ["version"] => return Route::Version,
        ["healthz" | "livez" | "readyz"] => return Route::Health,
        ["api"] => return Route::CoreRoot,
        ["apis"] => return Route::ApisRoot,
        ["apis", g] => return Route::Group(g.to_string()),
        ["api", v] => {
            return Route::GroupVersion {
                group: String::new(),
                version: v.to_string(),
            };
        }
        ["apis", g, v] => {
            return Route::GroupVersion {
                group: g.to_string(),
                version: v.to_string(),
            };
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    let namespace_subresource = rest.len() == 3 && matches!(rest[2], "status" | "finalize");
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() && !namespace_subresource => {
            (Some(ns.to_string()), tail)
        }
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [r] => (r, None, None),
        [r, n] => (r, Some(n.to_string()), None),
        [r, n, sub] => (r, Some(n.to_string()), Some(sub.to_string())),
        _ => return Route::Unknown,
    };
    Route::Resource(ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        resource: resource.to_string(),
        name,
        subresource,
    })
}

/// Decoded query parameters.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: &str) -> Self {
        let decode = |s: &str| percent_decode(&s.replace('+', " "));
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').unwrap_or((p, "")))
                .map(|(k, v)| (decode(k), decode(v)))
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

pub(crate) fn json_response(code: u16, body: &Value) -> Response<Body> {
    json_typed(code, body, "application/json")
}

pub(crate) fn json_typed(code: u16, body: &Value, content_type: &str) -> Response<Body> {
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    headers.insert(
        "cache-control",
        HeaderValue::from_static("no-cache, private"),
    );
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("audit-id", v);
    }
    resp
}

fn plain(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    match e.to_status() {
        Some(status) => json_response(e.code(), &status),
        None => plain(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

/// An injected failure: 429 is plain text with `Retry-After`, as API Priority and Fairness answers.
fn fault_response(code: u16) -> Response<Body> {
    if code == 429 {
        let mut resp = plain(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests, please try again later.\n",
        );
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return resp;
    }
    let reason = match code {
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    error_response(&ApiError::new(
        code,
        reason,
        format!("injected failure ({code})"),
        None,
    ))
}

fn header(req: &Request<Incoming>, name: hyper::header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// Serves one request and records it.
pub(crate) async fn handle(
    core: Arc<Core>,
    server_address: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    core.count_request();
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let query = req.uri().query().unwrap_or_default().to_string();
    let content_type = header(&req, CONTENT_TYPE);
    let response = match route(&core, &server_address, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let status = response.status().as_u16();
    debug!(%method, %path, %query, status, "kube emulator request");
    core.record(RequestRecord {
        method,
        path,
        query,
        content_type,
        status,
    });
    Ok(response)
}

async fn route(
    core: &Arc<Core>,
    server_address: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let expected = format!("Bearer {}", core.token);
    if header(&req, AUTHORIZATION).as_deref() != Some(expected.as_str()) {
        return Err(ApiError::unauthorized());
    }
    let route = parse_path(req.uri().path());
    if let Route::Resource(path) = route {
        if let Some(code) = core.take_fault() {
            return Ok(fault_response(code));
        }
        return resources::handle(core, path, req).await;
    }
    if req.method() != Method::GET {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let aggregated = discovery::wants_aggregated(&header(&req, ACCEPT).unwrap_or_default());
    let state = core.lock();
    let catalog = &state.catalog;
    let body = match route {
        Route::Version => discovery::version(),
        Route::Health => return Ok(plain(StatusCode::OK, "ok")),
        Route::CoreRoot if aggregated => {
            return Ok(json_typed(
                200,
                &discovery::aggregated_core(catalog),
                discovery::AGGREGATED_CONTENT_TYPE,
            ));
        }
        Route::ApisRoot if aggregated => {
            return Ok(json_typed(
                200,
                &discovery::aggregated_apis(catalog),
                discovery::AGGREGATED_CONTENT_TYPE,
            ));
        }
        Route::CoreRoot => discovery::core_versions(server_address),
        Route::ApisRoot => discovery::group_list(catalog),
        Route::Group(g) => discovery::group(catalog, &g).ok_or(ApiError::PageNotFound)?,
        Route::GroupVersion { group, version } => {
            discovery::resource_list(catalog, &group, &version).ok_or(ApiError::PageNotFound)?
        }
        Route::Resource(_) | Route::Unknown => return Err(ApiError::PageNotFound),
    };
    Ok(json_response(200, &body))
}

/// The `metav1.Status` of a successful delete.
pub(crate) fn success_status(group: &str, resource: &str, name: &str, uid: &str) -> Value {
    let mut details = json!({ "name": name, "kind": resource, "uid": uid });
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let r = |p: &str| parse_path(p);
        assert_eq!(
            r("/api/v1/namespaces/foo/status"),
            Route::Resource(ResourcePath {
                group: String::new(),
                version: "v1".into(),
                namespace: None,
                resource: "namespaces".into(),
                name: Some("foo".into()),
                subresource: Some("status".into()),
            })
        );
        let Route::Resource(p) = r("/apis/apps/v1/namespaces/ns1/deployments/web/status") else {
            panic!()
        };
        assert_eq!(
            (
                p.namespace.as_deref(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            (Some("ns1"), Some("web"), Some("status"))
        );
        let Route::Resource(p) = r("/api/v1/configmaps") else {
            panic!()
        };
        assert_eq!((p.namespace, p.resource.as_str()), (None, "configmaps"));
        assert_eq!(r("/apis/example.com"), Route::Group("example.com".into()));
        assert_eq!(
            Query::parse("labelSelector=app%20in%20(a%2Cb)&x=1").get("labelSelector"),
            Some("app in (a,b)")
        );
    }
}
