//! Deployment status: how object outcomes add up to a deployment state and message, and the
//! [`StatusBoard`] that coalesces changes until the hub client sends them.
//!
//! *Invariant:* only changes are reported. The reconciler publishes whenever it likes; the
//! board drops a status equal to the last one and keeps only the latest per deployment, so a
//! burst of changes becomes one line in the next report.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::model::{Deployment, DeploymentState, DeploymentStatus, ObjectState, ObjectStatus};

/// The message of an object as the deployment shows it: `<source>: <Kind>/<name>: <why>`.
pub(crate) fn failure_message(o: &ObjectStatus) -> String {
    format!(
        "{}: {}/{}: {}",
        o.source, o.object.kind, o.object.name, o.message
    )
}

/// The deployment state an object's state calls for; `None` for a ready object.
fn demands(state: ObjectState) -> Option<DeploymentState> {
    match state {
        ObjectState::Failed => Some(DeploymentState::ErrApplied),
        ObjectState::Waiting => Some(DeploymentState::WaitApplied),
        ObjectState::Missing => Some(DeploymentState::Missing),
        ObjectState::Modified => Some(DeploymentState::Modified),
        ObjectState::NotReady => Some(DeploymentState::NotReady),
        ObjectState::Ready => None,
    }
}

/// Severity of a deployment state, highest first: `ErrApplied` > `WaitApplied` > `Missing` >
/// `Modified` > `NotReady` > `Ready`.
fn severity(state: DeploymentState) -> u8 {
    match state {
        DeploymentState::ErrApplied => 5,
        DeploymentState::WaitApplied => 4,
        DeploymentState::Missing => 3,
        DeploymentState::Modified => 2,
        DeploymentState::NotReady => 1,
        DeploymentState::Ready => 0,
    }
}

/// Adds up object outcomes (in bundle order) into a deployment status.
///
/// The deployment takes the most severe state any object calls for (see [`severity`]), and
/// the message of the first object in that state: `<source>: <Kind>/<name>: <why>` (empty
/// while objects merely wait to be applied). With every object ready it is `Ready`.
pub(crate) fn summarize(deployment: &Deployment, objects: Vec<ObjectStatus>) -> DeploymentStatus {
    let worst = objects
        .iter()
        .filter_map(|o| demands(o.state).map(|s| (s, o)))
        // `max_by_key` keeps the last of equals: reverse so the first in bundle order wins.
        .rev()
        .max_by_key(|(s, _)| severity(*s));
    let (state, message) = match worst {
        None => (DeploymentState::Ready, String::new()),
        Some((DeploymentState::WaitApplied, _)) => (DeploymentState::WaitApplied, String::new()),
        Some((state, o)) => (state, failure_message(o)),
    };
    DeploymentStatus {
        deployment_id: deployment.deployment_id.clone(),
        content_hash: deployment.content_hash.clone(),
        revision: deployment.revision.clone(),
        state,
        message,
        objects,
    }
}

/// A status for a deployment that failed as a whole, before any object was tried (for example
/// its manifests could not be fetched).
pub(crate) fn failed_whole(deployment: &Deployment, message: String) -> DeploymentStatus {
    DeploymentStatus {
        deployment_id: deployment.deployment_id.clone(),
        content_hash: deployment.content_hash.clone(),
        revision: deployment.revision.clone(),
        state: DeploymentState::ErrApplied,
        message,
        objects: Vec::new(),
    }
}

#[derive(Default)]
struct Board {
    latest: HashMap<String, DeploymentStatus>,
    pending: BTreeSet<String>,
}

/// The latest status of every deployment, and which ones the hub has not been told about.
/// Shared by the reconciler (which publishes) and the hub client (which drains).
#[derive(Default)]
pub(crate) struct StatusBoard {
    board: Mutex<Board>,
    changed: Notify,
}

impl StatusBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        // A panic while holding this lock leaves plain data behind; keep going with it.
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a deployment's status; a status equal to the current one is not a change.
    pub fn publish(&self, status: DeploymentStatus) {
        let mut b = self.lock();
        if b.latest.get(&status.deployment_id) == Some(&status) {
            return;
        }
        b.pending.insert(status.deployment_id.clone());
        b.latest.insert(status.deployment_id.clone(), status);
        drop(b);
        self.changed.notify_one();
    }

    /// Forgets a deployment that was removed: nothing more is reported about it.
    pub fn forget(&self, deployment_id: &str) {
        let mut b = self.lock();
        b.latest.remove(deployment_id);
        b.pending.remove(deployment_id);
    }

    /// Takes every status not sent yet, oldest deployment id order.
    pub fn take_pending(&self) -> Vec<DeploymentStatus> {
        let mut b = self.lock();
        let ids = std::mem::take(&mut b.pending);
        ids.into_iter()
            .filter_map(|id| b.latest.get(&id).cloned())
            .collect()
    }

    /// Marks everything as not sent: on a new stream, reports sent on a broken one may be lost.
    pub fn mark_all_pending(&self) {
        let mut b = self.lock();
        let ids: Vec<String> = b.latest.keys().cloned().collect();
        b.pending.extend(ids);
        let any = !b.pending.is_empty();
        drop(b);
        if any {
            self.changed.notify_one();
        }
    }

    /// How many objects of the latest statuses are in each state (states with none left out).
    pub fn object_counts(&self) -> Vec<(ObjectState, usize)> {
        let b = self.lock();
        let mut counts: Vec<(ObjectState, usize)> = Vec::new();
        for o in b.latest.values().flat_map(|s| &s.objects) {
            match counts.iter_mut().find(|(s, _)| *s == o.state) {
                Some((_, n)) => *n += 1,
                None => counts.push((o.state, 1)),
            }
        }
        counts
    }

    /// Resolves once something was published since the last call (or right away if so).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectRef;

    fn deployment(id: &str, hash: &str) -> Deployment {
        Deployment {
            deployment_id: id.into(),
            bundle: "repo/app".into(),
            revision: "abc".into(),
            content_hash: hash.into(),
            ..Deployment::default()
        }
    }

    fn object(kind: &str, name: &str, state: ObjectState, message: &str) -> ObjectStatus {
        ObjectStatus {
            object: ObjectRef {
                api_version: "v1".into(),
                kind: kind.into(),
                namespace: "ns".into(),
                name: name.into(),
            },
            source: format!("app/{name}.yaml#0"),
            state,
            message: message.into(),
            ..ObjectStatus::default()
        }
    }

    #[test]
    fn all_applied_is_ready() {
        let s = summarize(
            &deployment("d", "h"),
            vec![object("ConfigMap", "a", ObjectState::Ready, "")],
        );
        assert_eq!((s.state, s.message.as_str()), (DeploymentState::Ready, ""));
        assert_eq!(
            summarize(&deployment("d", "h"), vec![]).state,
            DeploymentState::Ready
        );
    }

    #[test]
    fn first_failure_names_source_kind_name_and_api_message() {
        let s = summarize(
            &deployment("d", "h"),
            vec![
                object("ConfigMap", "a", ObjectState::Ready, ""),
                object(
                    "Deployment",
                    "Bad_Name",
                    ObjectState::Failed,
                    "Deployment.apps \"Bad_Name\" is invalid",
                ),
                object("Service", "c", ObjectState::Failed, "other"),
                object("Secret", "d", ObjectState::Waiting, ""),
            ],
        );
        assert_eq!(s.state, DeploymentState::ErrApplied);
        assert_eq!(
            s.message,
            "app/Bad_Name.yaml#0: Deployment/Bad_Name: Deployment.apps \"Bad_Name\" is invalid"
        );
        assert_eq!(s.objects.len(), 4);
    }

    #[test]
    fn the_most_severe_state_wins_with_its_first_object() {
        use ObjectState::*;
        let table: &[(&[ObjectState], DeploymentState, &str)] = &[
            (&[Ready, Modified, NotReady], DeploymentState::Modified, "b"),
            (
                &[NotReady, Missing, Modified],
                DeploymentState::Missing,
                "b",
            ),
            (&[NotReady, NotReady], DeploymentState::NotReady, "a"),
            (&[Missing, Waiting], DeploymentState::WaitApplied, ""),
            (
                &[Waiting, Failed, Missing],
                DeploymentState::ErrApplied,
                "b",
            ),
            (&[Modified, Missing, Missing], DeploymentState::Missing, "b"),
            (&[Ready, Ready], DeploymentState::Ready, ""),
        ];
        for (states, want, first) in table {
            let objects = states
                .iter()
                .zip(["a", "b", "c"])
                .map(|(&st, name)| object("Deployment", name, st, "why"))
                .collect();
            let s = summarize(&deployment("d", "h"), objects);
            let expected = if first.is_empty() {
                String::new()
            } else {
                format!("app/{first}.yaml#0: Deployment/{first}: why")
            };
            assert_eq!((s.state, s.message), (*want, expected), "{states:?}");
        }
    }

    #[test]
    fn waiting_objects_mean_still_applying() {
        let s = summarize(
            &deployment("d", "h"),
            vec![
                object("ConfigMap", "a", ObjectState::Ready, ""),
                object("Secret", "b", ObjectState::Waiting, ""),
            ],
        );
        assert_eq!(s.state, DeploymentState::WaitApplied);
    }

    #[test]
    fn board_coalesces_per_deployment_and_drops_repeats() {
        let board = StatusBoard::default();
        board.publish(summarize(
            &deployment("a", "h1"),
            vec![object("Secret", "x", ObjectState::Waiting, "")],
        ));
        board.publish(summarize(
            &deployment("a", "h1"),
            vec![object("Secret", "x", ObjectState::Ready, "")],
        ));
        board.publish(summarize(&deployment("b", "h9"), vec![]));
        let sent = board.take_pending();
        assert_eq!(
            sent.iter()
                .map(|s| (s.deployment_id.as_str(), s.state))
                .collect::<Vec<_>>(),
            [("a", DeploymentState::Ready), ("b", DeploymentState::Ready)]
        );
        board.publish(summarize(
            &deployment("a", "h1"),
            vec![object("Secret", "x", ObjectState::Ready, "")],
        ));
        assert!(
            board.take_pending().is_empty(),
            "an unchanged status is not reported again"
        );
    }

    #[test]
    fn board_resends_everything_on_a_new_stream_and_forgets_removed() {
        let board = StatusBoard::default();
        board.publish(summarize(&deployment("a", "h"), vec![]));
        board.publish(summarize(&deployment("b", "h"), vec![]));
        assert_eq!(board.take_pending().len(), 2);
        board.forget("b");
        board.mark_all_pending();
        let again = board.take_pending();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].deployment_id, "a");
    }

    #[tokio::test]
    async fn board_wakes_the_sender_once_per_burst() {
        let board = StatusBoard::default();
        board.publish(summarize(&deployment("a", "h"), vec![]));
        board.publish(summarize(&deployment("a", "h2"), vec![]));
        // A permit is stored, so this returns at once rather than hanging.
        board.changed().await;
        assert_eq!(board.take_pending().len(), 1);
    }
}
