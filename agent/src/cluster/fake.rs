//! A scripted HTTP/1.1 API server for unit tests of the kube path: it records every request
//! and answers from a handler, so tests can check request shapes (paths, query, content type,
//! bodies) and the handling of awkward answers (plain-text 404, 429 with `Retry-After`).
//! The full behaviour of a real API server is the e2e emulator's job, not this one's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::Cluster;
use crate::config::KubeSource;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/api/v1/namespaces/x/configmaps/y?&fieldManager=flotilla`.
    pub target: String,
    pub content_type: String,
    pub body: String,
}

impl Recorded {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// An answer: status, extra headers, body.
pub(crate) struct Reply {
    pub code: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(code: u16, body: serde_json::Value) -> Self {
        Self {
            code,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn text(code: u16, body: &str) -> Self {
        Self {
            code,
            headers: vec![("content-type", "text/plain".into())],
            body: body.into(),
        }
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// The running server; stops when dropped.
pub(crate) struct FakeApi {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, handler.clone(), log.clone()));
            }
        });
        Self {
            port,
            requests,
            task,
        }
    }

    /// A cluster handle that talks to this server, through a kubeconfig file in `dir`.
    pub async fn cluster(&self, dir: &Path) -> Cluster {
        let kubeconfig = dir.join("kubeconfig");
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\n",
            self.port
        );
        std::fs::write(&kubeconfig, yaml).unwrap();
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        Cluster::connect(&KubeSource::Kubeconfig(kubeconfig), "flotilla-system")
            .await
            .unwrap()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The paths of the recorded requests with `method`, in the order they came.
    pub fn paths(&self, method: &str) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method)
            .map(|r| r.path().to_string())
            .collect()
    }

    /// A fake that stores what is applied and serves discovery for core/v1 (namespaces,
    /// configmaps), apps/v1 (deployments), CRDs, and `example.com/v1` (widgets) once the CRD
    /// `widgets.example.com` exists (after `lag` more 404s). Names with capitals or `_` are
    /// refused with 422 as a real server does. Like a real server, every write moves the
    /// object to a new `resourceVersion` (unique across the store), an object gets a `uid`
    /// when created, and merge patches and deletes honour their preconditions (409). A
    /// `dryRun=All` apply answers what it would store and stores nothing.
    pub async fn stateful(lag: usize) -> (Self, Store) {
        let store: Store = Arc::default();
        let s = store.clone();
        let lag: Lag = Arc::new(lag.into());
        (Self::start(move |r| handle(&s, &lag, r)).await, store)
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    handler: Arc<Handler>,
    log: Arc<Mutex<Vec<Recorded>>>,
) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        let (mut length, mut content_type) = (0usize, String::new());
        loop {
            let mut header = String::new();
            if read.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "content-type" => content_type = value.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        let request = Recorded {
            method,
            target,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let reply = handler(&request);
        log.lock().unwrap().push(request);
        let mut head = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
            reply.code,
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(&reply.body);
        // One write: a separate body write would meet Nagle and delayed ACKs (40 ms a request).
        if write.write_all(head.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A JSON merge patch (RFC 7386) of a stored object, honouring a `metadata.resourceVersion`
/// precondition as a real API server does, and moving the object's resourceVersion on.
fn merge_patch(objects: &mut BTreeMap<String, Value>, path: &str, patch: &Value) -> Reply {
    let Some(live) = objects.get_mut(path) else {
        return not_found(path);
    };
    let current = live["metadata"]["resourceVersion"].as_str().unwrap_or("0");
    if let Some(wanted) = patch
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && wanted != current
    {
        return Reply::json(
            409,
            json!({"kind": "Status", "status": "Failure", "code": 409, "reason": "Conflict",
            "message": "the object has been modified; please apply your changes to the latest version and try again"}),
        );
    }
    merge(live, patch);
    let next = next_resource_version(objects);
    let live = objects.get_mut(path).expect("patched above");
    live["metadata"]["resourceVersion"] = json!(next);
    Reply::json(200, live.clone())
}

/// A resourceVersion newer than every stored one, as a real server's would be.
fn next_resource_version(objects: &BTreeMap<String, Value>) -> String {
    let newest = objects
        .values()
        .filter_map(|o| {
            o.pointer("/metadata/resourceVersion")?
                .as_str()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0u64);
    (newest + 1).to_string()
}

/// A server-side apply, simplified: the body replaces the object; the `uid` stays (or is
/// made up on create) and the `resourceVersion` moves on.
fn apply(objects: &mut BTreeMap<String, Value>, path: String, mut body: Value) -> Value {
    let uid = objects
        .get(&path)
        .and_then(|live| live.pointer("/metadata/uid").cloned());
    let next = next_resource_version(objects);
    let meta = &mut body["metadata"];
    meta["uid"] = uid.unwrap_or_else(|| json!(format!("uid-{next}")));
    meta["resourceVersion"] = json!(next);
    objects.insert(path, body.clone());
    body
}

/// A delete honouring `preconditions` (`uid`, `resourceVersion`) as a real server does.
fn delete(objects: &mut BTreeMap<String, Value>, path: &str, options: &Value) -> Reply {
    let Some(live) = objects.get(path) else {
        return not_found(path);
    };
    let holds = |field: &str| {
        options
            .pointer(&format!("/preconditions/{field}"))
            .is_none_or(|want| want.is_null() || *want == live["metadata"][field])
    };
    if !(holds("uid") && holds("resourceVersion")) {
        return Reply::json(
            409,
            json!({"kind": "Status", "status": "Failure", "code": 409, "reason": "Conflict",
            "message": "Precondition failed: the object changed since it was read"}),
        );
    }
    objects.remove(path);
    Reply::json(200, json!({"kind": "Status", "status": "Success"}))
}

fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Objects by path, as the stateful fake keeps them.
pub(crate) type Store = Arc<Mutex<BTreeMap<String, Value>>>;

fn resources(group_version: &str, list: &[(&str, &str, bool)]) -> Value {
    let resources: Vec<Value> =
        list.iter().map(|(name, kind, namespaced)| json!({"name": name, "kind": kind, "namespaced": namespaced})).collect();
    json!({"kind": "APIResourceList", "groupVersion": group_version, "resources": resources})
}

fn not_found(what: &str) -> Reply {
    Reply::json(
        404,
        json!({"kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound",
        "message": format!("{what} not found")}),
    )
}

/// How many more times discovery of `example.com/v1` answers 404 after its CRD exists, as a
/// real API server may for a moment after `Established`.
type Lag = Arc<AtomicUsize>;

fn handle(store: &Store, lag: &Lag, r: &Recorded) -> Reply {
    let mut objects = store.lock().unwrap();
    let path = r.path().to_string();
    match (r.method.as_str(), path.as_str()) {
        ("GET", "/api/v1") => {
            return Reply::json(
                200,
                resources(
                    "v1",
                    &[
                        ("namespaces", "Namespace", false),
                        ("configmaps", "ConfigMap", true),
                    ],
                ),
            );
        }
        ("GET", "/apis/apps/v1") => {
            return Reply::json(
                200,
                resources("apps/v1", &[("deployments", "Deployment", true)]),
            );
        }
        ("GET", "/apis/apiextensions.k8s.io/v1") => {
            let list = [(
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )];
            return Reply::json(200, resources("apiextensions.k8s.io/v1", &list));
        }
        ("GET", "/apis/example.com/v1") => {
            let crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com";
            let lagging = || {
                lag.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            };
            return if objects.contains_key(crd) && !lagging() {
                Reply::json(
                    200,
                    resources("example.com/v1", &[("widgets", "Widget", true)]),
                )
            } else {
                Reply::text(404, "404 page not found\n")
            };
        }
        _ => {}
    }
    match r.method.as_str() {
        "PATCH" if r.content_type.starts_with("application/merge-patch+json") => {
            merge_patch(&mut objects, &path, &r.json())
        }
        "PATCH" => {
            let name = path.rsplit('/').next().unwrap();
            if name.chars().any(|c| c.is_uppercase() || c == '_') {
                let kind = r.json()["kind"].as_str().unwrap_or_default().to_string();
                return Reply::json(
                    422,
                    json!({"kind": "Status", "status": "Failure", "code": 422, "reason": "Invalid",
                    "message": format!("{kind}.apps \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\"")}),
                );
            }
            let mut body = r.json();
            if body["kind"] == "CustomResourceDefinition" {
                body["status"] = json!({"conditions": [{"type": "Established", "status": "True"}]});
            }
            if r.target.contains("dryRun=All") {
                // What the apply would store, without storing it.
                return Reply::json(200, apply(&mut objects.clone(), path, body));
            }
            Reply::json(200, apply(&mut objects, path, body))
        }
        "DELETE" => delete(&mut objects, &path, &r.json()),
        _ if objects.contains_key(&path) => Reply::json(200, objects[&path].clone()),
        _ if path.ends_with("/configmaps") => {
            let prefix = format!("{path}/");
            let items: Vec<Value> = objects
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v.clone())
                .collect();
            Reply::json(200, json!({"metadata": {}, "items": items}))
        }
        _ => not_found(&path),
    }
}
