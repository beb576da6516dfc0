//! The emulator's etcd: every object by type, namespace and name, the global `resourceVersion`
//! counter (bumped on every write, carried by objects and lists), a bounded per-type history of
//! watch events, and the allocators for Service cluster IPs and node ports. Everything here is
//! synchronous and runs under one mutex, so each request sees and makes one consistent snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::catalog::{Catalog, TypeKey, crd_established};

/// How many events each type keeps for watches that resume from a `resourceVersion`.
const HISTORY_PER_TYPE: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One committed change, as watches see it.
#[derive(Debug)]
pub(crate) struct WatchEvent {
    pub ty: TypeKey,
    pub rv: u64,
    pub kind: EventKind,
    pub object: Value,
    /// The object before a modification (selectors may stop or start matching).
    pub previous: Option<Value>,
}

/// Follow-up work a write asks for, run by a background task like the real controllers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// A workload controller pass over one object.
    Reconcile {
        ty: TypeKey,
        namespace: String,
        name: String,
    },
    EstablishCrd(String),
    CleanupCrd(String),
    FinalizeNamespace(String),
}

#[derive(Default)]
struct History {
    events: VecDeque<Arc<WatchEvent>>,
    /// Events at or below this resourceVersion are gone.
    compacted: u64,
}

/// Cluster IPs from 10.96.0.0/12 and node ports from 30000-32767.
#[derive(Default)]
pub(crate) struct Allocators {
    ips: BTreeSet<u32>,
    ports: BTreeSet<u16>,
}

const IP_BASE: u32 = (10 << 24) | (96 << 16);
const IP_LAST: u32 = IP_BASE + (1 << 20) - 2;

impl Allocators {
    /// The next free cluster IP (10.96.0.1 is the `kubernetes` Service's); reserved unless dry run.
    pub(crate) fn cluster_ip(&mut self, reserve: bool) -> Option<String> {
        let ip = (IP_BASE + 1..=IP_LAST).find(|ip| !self.ips.contains(ip))?;
        if reserve {
            self.ips.insert(ip);
        }
        Some(std::net::Ipv4Addr::from(ip).to_string())
    }

    pub(crate) fn node_port(&mut self, reserve: bool) -> Option<u16> {
        let port = (30000..=32767).find(|p| !self.ports.contains(p))?;
        if reserve {
            self.ports.insert(port);
        }
        Some(port)
    }

    /// Marks the IPs and ports of a stored Service as used (`used`) or free again.
    pub(crate) fn track_service(&mut self, svc: &Value, used: bool) {
        let ips = svc
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for ip in ips
            .filter_map(Value::as_str)
            .filter_map(|s| s.parse::<std::net::Ipv4Addr>().ok())
        {
            if used {
                self.ips.insert(u32::from(ip))
            } else {
                self.ips.remove(&u32::from(ip))
            };
        }
        let ports = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for p in ports
            .filter_map(|p| p["nodePort"].as_u64())
            .map(|p| p as u16)
        {
            if used {
                self.ports.insert(p)
            } else {
                self.ports.remove(&p)
            };
        }
    }
}

/// Everything the server knows.
pub(crate) struct State {
    rv: u64,
    pub catalog: Catalog,
    objects: BTreeMap<TypeKey, BTreeMap<(String, String), Value>>,
    history: HashMap<TypeKey, History>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    pub alloc: Allocators,
    /// Follow-ups of the writes made under the current lock; drained by the caller.
    pub effects: Vec<Effect>,
    pub ca_pem: String,
    /// Whether the workload controllers (`controllers.rs`) stand still.
    pub workload_controllers_paused: bool,
    /// Load-balancer addresses handed out so far.
    pub next_load_balancer: u32,
}

fn crd_key() -> TypeKey {
    TypeKey {
        group: "apiextensions.k8s.io".into(),
        resource: "customresourcedefinitions".into(),
    }
}

fn services_key() -> TypeKey {
    TypeKey {
        group: String::new(),
        resource: "services".into(),
    }
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

impl State {
    pub(crate) fn new(ca_pem: String) -> Self {
        let (events, _) = broadcast::channel(4096);
        State {
            rv: 1000,
            catalog: Catalog::new(),
            objects: BTreeMap::new(),
            history: HashMap::new(),
            events,
            alloc: Allocators::default(),
            effects: Vec::new(),
            ca_pem,
            workload_controllers_paused: false,
            next_load_balancer: 0,
        }
    }

    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    pub(crate) fn get(&self, ty: &TypeKey, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(ty)?
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Objects of one type, optionally in one namespace, ordered by namespace then name.
    pub(crate) fn list<'a>(
        &'a self,
        ty: &TypeKey,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + use<'a> {
        self.objects
            .get(ty)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |((ns, _), _)| namespace.is_none_or(|want| want == ns))
            .map(|(_, v)| v)
    }

    /// Every (type, name) stored in `namespace`.
    pub(crate) fn in_namespace(&self, namespace: &str) -> Vec<(TypeKey, String)> {
        let mut out = Vec::new();
        for (ty, m) in &self.objects {
            for (_, name) in m.keys().filter(|(ns, _)| ns == namespace) {
                out.push((ty.clone(), name.clone()));
            }
        }
        out
    }

    /// Stores `obj` under a new resourceVersion and returns the stored copy.
    pub(crate) fn put(&mut self, ty: &TypeKey, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = (
            meta_str(&obj, "namespace").to_string(),
            meta_str(&obj, "name").to_string(),
        );
        let previous = self
            .objects
            .entry(ty.clone())
            .or_default()
            .insert(key, obj.clone());
        if *ty == services_key() {
            if let Some(prev) = &previous {
                self.alloc.track_service(prev, false);
            }
            self.alloc.track_service(&obj, true);
        }
        let kind = if previous.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.record(ty, kind, obj.clone(), previous);
        obj
    }

    /// Removes an object; the DELETED event carries it (or its `last` state, when the removal is
    /// the result of an update) with a new resourceVersion.
    pub(crate) fn remove(
        &mut self,
        ty: &TypeKey,
        namespace: &str,
        name: &str,
        last: Option<Value>,
    ) -> Option<Value> {
        let stored = self
            .objects
            .get_mut(ty)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        let mut obj = last.unwrap_or(stored);
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if *ty == services_key() {
            self.alloc.track_service(&obj, false);
        }
        self.record(ty, EventKind::Deleted, obj.clone(), None);
        Some(obj)
    }

    fn record(&mut self, ty: &TypeKey, kind: EventKind, object: Value, previous: Option<Value>) {
        let event = Arc::new(WatchEvent {
            ty: ty.clone(),
            rv: self.rv,
            kind,
            object,
            previous,
        });
        let history = self.history.entry(ty.clone()).or_default();
        history.events.push_back(event.clone());
        while history.events.len() > HISTORY_PER_TYPE {
            if let Some(old) = history.events.pop_front() {
                history.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
        if *ty == crd_key() {
            self.refresh_custom_types();
        }
    }

    /// Rebuilds the served custom types from the established CRDs.
    pub(crate) fn refresh_custom_types(&mut self) {
        let stored = self
            .objects
            .get(&crd_key())
            .into_iter()
            .flat_map(|m| m.values());
        let crds: Vec<&Value> = stored.filter(|c| crd_established(c)).collect();
        self.catalog.set_custom(&crds);
    }

    /// The events of `ty` after `from`, and a receiver for everything later; `Err` carries the
    /// oldest resourceVersion still available when `from` is older than the history.
    #[allow(clippy::type_complexity)]
    pub(crate) fn watch_from(
        &self,
        ty: &TypeKey,
        from: u64,
    ) -> Result<(Vec<Arc<WatchEvent>>, broadcast::Receiver<Arc<WatchEvent>>), u64> {
        let backlog = match self.history.get(ty) {
            Some(h) if from < h.compacted => return Err(h.compacted + 1),
            Some(h) => h.events.iter().filter(|e| e.rv > from).cloned().collect(),
            None => Vec::new(),
        };
        Ok((backlog, self.events.subscribe()))
    }

    /// Forgets all watch history, like an etcd compaction.
    pub(crate) fn compact(&mut self) {
        for h in self.history.values_mut() {
            h.events.clear();
            h.compacted = self.rv;
        }
        for ty in self.objects.keys() {
            self.history.entry(ty.clone()).or_default().compacted = self.rv;
        }
    }
}

/// The current time as RFC 3339 with second precision, as metadata timestamps are.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
