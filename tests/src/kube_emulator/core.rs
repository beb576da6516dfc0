//! The state shared by the HTTP handlers, the background controllers and the public handle: the
//! store behind one mutex, the bearer token, the shutdown token and task tracker every spawned
//! task belongs to, and the request log and injected failures tests use.
//! *Invariant:* no lock is held across an await.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::lifecycle;
use super::store::{Effect, State};

/// One request the emulator answered, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The request's `Content-Type`, if any.
    pub content_type: Option<String>,
    pub status: u16,
}

/// How many records the request log keeps.
const LOG_LIMIT: usize = 20_000;

pub(crate) struct Core {
    state: Mutex<State>,
    pub token: String,
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
    requests: AtomicU64,
    log: Mutex<VecDeque<RequestRecord>>,
    faults: Mutex<VecDeque<u16>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking handler must not take the whole emulator down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Core {
    pub(crate) fn new(state: State, token: String) -> Self {
        Core {
            state: Mutex::new(state),
            token,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            requests: AtomicU64::new(0),
            log: Mutex::new(VecDeque::new()),
            faults: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Starts the background work that writes asked for.
    pub(crate) fn spawn_effects(self: &Arc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            let span = tracing::info_span!("kube_emulator_controller", effect = ?effect);
            self.tasks
                .spawn(lifecycle::run_effect(self.clone(), effect).instrument(span));
        }
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, record: RequestRecord) {
        let mut log = lock(&self.log);
        if log.len() >= LOG_LIMIT {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub(crate) fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.log).iter().cloned().collect()
    }

    pub(crate) fn inject_failures(&self, status: u16, count: usize) {
        lock(&self.faults).extend(std::iter::repeat_n(status, count));
    }

    pub(crate) fn take_fault(&self) -> Option<u16> {
        lock(&self.faults).pop_front()
    }
}
