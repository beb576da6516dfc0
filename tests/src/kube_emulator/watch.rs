//! Watches (`?watch=true`): newline-delimited JSON events (`ADDED`/`MODIFIED`/`DELETED`) from a
//! `resourceVersion`, replayed from the bounded per-type history and then live from the store's
//! broadcast. Without a resourceVersion (or with "0") the current objects come first as `ADDED`;
//! `sendInitialEvents=true` ends them with the `k8s.io/initial-events-end` bookmark. A version
//! older than the history gives one `ERROR` event holding a 410 `Expired` Status, as etcd
//! compaction does. Selectors apply to both sides of a change, so objects leaving a selector are
//! seen as `DELETED`. Streams end at `timeoutSeconds` or shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures::{Stream, StreamExt as _, stream};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::catalog::ResourceType;
use super::read::{Representation, serve};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{EventKind, State, WatchEvent, meta_str};

/// Query options of a watch.
#[derive(Debug)]
pub(crate) struct WatchOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub timeout: Duration,
    pub send_initial_events: bool,
    pub repr: Representation,
}

/// What a watch filters on.
struct Filter {
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    repr: Representation,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| meta_str(obj, "namespace") == ns)
            && self.labels.matches(&obj["metadata"]["labels"])
            && self.fields.matches(obj)
    }

    /// The line a client sees for `event`, if any (selector transitions become ADDED/DELETED).
    fn line(&self, event: &WatchEvent) -> Option<Bytes> {
        if event.ty != self.rt.key() {
            return None;
        }
        let now = self.matches(&event.object);
        let kind = match (event.kind, event.previous.as_ref().map(|p| self.matches(p))) {
            (EventKind::Modified, Some(true)) if !now => EventKind::Deleted,
            (EventKind::Modified, Some(false)) if now => EventKind::Added,
            (kind, _) if now => kind,
            _ => return None,
        };
        Some(self.encode(kind.as_str(), &event.object))
    }

    fn encode(&self, kind: &str, obj: &Value) -> Bytes {
        event_line(kind, serve(&self.rt, obj, self.repr))
    }
}

fn event_line(kind: &str, object: Value) -> Bytes {
    let mut line = json!({ "type": kind, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// Starts a watch; must be called under the state lock so replay and live events do not overlap.
pub(crate) fn start(
    state: &State,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    opts: WatchOptions,
    cancel: CancellationToken,
) -> Result<Body, ApiError> {
    let from = match opts.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: {rv:?}: strconv.ParseUint: parsing {rv:?}: invalid syntax"
            ))
        })?),
    };
    let filter = Filter {
        rt,
        namespace,
        labels: opts.labels,
        fields: opts.fields,
        repr: opts.repr,
    };
    let initial = from.is_none() || opts.send_initial_events;
    let mut first = if initial {
        initial_events(state, &filter, opts.send_initial_events)
    } else {
        Vec::new()
    };
    let start_rv = match from {
        Some(rv) if !opts.send_initial_events => rv,
        _ => state.resource_version(),
    };
    let receiver = match state.watch_from(&filter.rt.key(), start_rv) {
        Ok((backlog, receiver)) => {
            first.extend(backlog.iter().filter_map(|e| filter.line(e)));
            Some(receiver)
        }
        Err(oldest) => {
            let msg = format!("too old resource version: {start_rv} ({oldest})");
            let status = ApiError::expired(msg)
                .to_status()
                .expect("Expired is a Status");
            first.push(event_line("ERROR", status));
            None
        }
    };
    let end = async move {
        tokio::select! {
            _ = tokio::time::sleep(opts.timeout) => {}
            _ = cancel.cancelled() => {}
        }
    };
    let events = stream::iter(first)
        .chain(live(receiver, filter))
        .take_until(Box::pin(end));
    Ok(Body::from_stream(events.map(Ok::<_, Infallible>)))
}

/// The current objects as `ADDED`, then (for `sendInitialEvents`) the initial-events-end bookmark.
fn initial_events(state: &State, filter: &Filter, bookmark: bool) -> Vec<Bytes> {
    let objects = state.list(&filter.rt.key(), filter.namespace.as_deref());
    let mut lines: Vec<Bytes> = objects
        .filter(|o| filter.matches(o))
        .map(|o| filter.encode("ADDED", o))
        .collect();
    if bookmark {
        let rv = state.resource_version().to_string();
        let object = json!({
            "kind": filter.rt.kind, "apiVersion": filter.rt.api_version(),
            "metadata": {"resourceVersion": rv, "annotations": {"k8s.io/initial-events-end": "true"}},
        });
        lines.push(event_line("BOOKMARK", object));
    }
    lines
}

/// Live events from the store's broadcast, until it closes or the client falls behind.
fn live(
    receiver: Option<broadcast::Receiver<Arc<WatchEvent>>>,
    filter: Filter,
) -> impl Stream<Item = Bytes> {
    stream::unfold((receiver, filter), |(receiver, filter)| async move {
        let mut receiver = receiver?;
        loop {
            match receiver.recv().await {
                Ok(event) => {
                    if let Some(line) = filter.line(&event) {
                        return Some((line, (Some(receiver), filter)));
                    }
                }
                // A client that fell behind resumes from its last resourceVersion, as after any
                // closed watch.
                Err(
                    broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed,
                ) => return None,
            }
        }
    })
}
