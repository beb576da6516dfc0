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

/// The message of a failed object as the deployment shows it: `<source>: <Kind>/<name>: <why>`.
pub(crate) fn failure_message(o: &ObjectStatus) -> String {
    format!(
        "{}: {}/{}: {}",
        o.source, o.object.kind, o.object.name, o.message
    )
}

/// Adds up object outcomes (in bundle order) into a deployment status.
///
/// Any failure makes the deployment `ErrApplied` with the first failure's message; any object
/// still waiting makes it `WaitApplied`; otherwise every object applied and it is `Ready`.
/// `Ready` here means *applied*: per-kind health checks (a Deployment's rollout, a Job's
/// completion) come later and will turn applied objects into ready / not-ready ones, adding
/// the `NotReady` state — this function is where that rule goes.
pub(crate) fn summarize(deployment: &Deployment, objects: Vec<ObjectStatus>) -> DeploymentStatus {
    let first_failure = objects.iter().find(|o| o.state == ObjectState::Failed);
    let (state, message) = match first_failure {
        Some(o) => (DeploymentState::ErrApplied, failure_message(o)),
        None if objects.iter().any(|o| o.state == ObjectState::Waiting) => {
            (DeploymentState::WaitApplied, String::new())
        }
        None => (DeploymentState::Ready, String::new()),
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
        }
    }

    #[test]
    fn all_applied_is_ready() {
        let s = summarize(
            &deployment("d", "h"),
            vec![object("ConfigMap", "a", ObjectState::Applied, "")],
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
                object("ConfigMap", "a", ObjectState::Applied, ""),
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
    fn waiting_objects_mean_still_applying() {
        let s = summarize(
            &deployment("d", "h"),
            vec![
                object("ConfigMap", "a", ObjectState::Applied, ""),
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
            vec![object("Secret", "x", ObjectState::Applied, "")],
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
            vec![object("Secret", "x", ObjectState::Applied, "")],
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
