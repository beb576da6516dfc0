//! Live updates: one stream per open page, fed by `Fleet::subscribe()`, turned into
//! server-sent events (`event: status`, `data: <version>`) at most once per
//! [`MIN_INTERVAL`]. The page re-fetches its fragment when the version differs from the one
//! it shows.
//!
//! Nothing polls the fleet: a stream waits on the watch channel, which keeps only the latest
//! version, so a burst of changes costs one event. Streams end when the hub shuts down, so
//! the HTTP server's graceful shutdown is not held up by open pages.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The shortest time between two events to one page (at most ~4 updates per second).
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// How many pages may follow the live stream at once; more are refused with 503.
pub const MAX_FOLLOWERS: usize = 1000;

/// What a live stream needs: the versions to follow, and when to stop.
#[derive(Clone)]
pub struct Live {
    shutdown: CancellationToken,
    followers: Arc<Semaphore>,
}

impl Live {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            followers: Arc::new(Semaphore::new(MAX_FOLLOWERS)),
        }
    }

    /// A stream of status versions for one page, or None when too many pages follow already.
    pub fn follow(
        &self,
        versions: watch::Receiver<u64>,
    ) -> Option<impl Stream<Item = u64> + use<>> {
        let permit = self.followers.clone().try_acquire_owned().ok()?;
        Some(versions_stream(
            versions,
            self.shutdown.clone(),
            MIN_INTERVAL,
            Some(permit),
        ))
    }
}

struct Follow {
    versions: watch::Receiver<u64>,
    shutdown: CancellationToken,
    min_interval: Duration,
    last: Option<Instant>,
    /// Released when the stream is dropped (the page went away or the hub stops).
    _permit: Option<OwnedSemaphorePermit>,
}

/// The current version at once, then the latest version after each change, no more often
/// than `min_interval`; ends on `shutdown` or when the fleet is gone.
pub fn versions_stream(
    versions: watch::Receiver<u64>,
    shutdown: CancellationToken,
    min_interval: Duration,
    permit: Option<OwnedSemaphorePermit>,
) -> impl Stream<Item = u64> {
    let state = Follow {
        versions,
        shutdown,
        min_interval,
        last: None,
        _permit: permit,
    };
    futures::stream::unfold(state, |mut f| async move {
        if let Some(last) = f.last {
            tokio::select! {
                biased;
                () = f.shutdown.cancelled() => return None,
                changed = f.versions.changed() => changed.ok()?,
            }
            // Coalesce: whatever else changes before the interval is over rides along.
            tokio::select! {
                biased;
                () = f.shutdown.cancelled() => return None,
                () = tokio::time::sleep_until(last + f.min_interval) => {}
            }
        } else if f.shutdown.is_cancelled() {
            return None;
        }
        f.last = Some(Instant::now());
        let version = *f.versions.borrow_and_update();
        Some((version, f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt as _, StreamExt as _};

    #[tokio::test]
    async fn first_the_current_version_then_one_event_per_burst() {
        let (tx, rx) = watch::channel(7u64);
        let s = versions_stream(rx, CancellationToken::new(), Duration::ZERO, None);
        let mut s = Box::pin(s);
        assert_eq!(s.next().await, Some(7));
        assert_eq!(s.next().now_or_never(), None, "nothing changed: no event");
        for _ in 0..100 {
            tx.send_modify(|v| *v += 1);
        }
        assert_eq!(
            s.next().await,
            Some(107),
            "the burst is one event with the latest"
        );
        assert_eq!(s.next().now_or_never(), None);
        drop(tx);
        assert_eq!(s.next().await, None, "the fleet is gone: the stream ends");
    }

    #[tokio::test]
    async fn waits_out_the_interval_and_ends_on_shutdown() {
        let (tx, rx) = watch::channel(0u64);
        let shutdown = CancellationToken::new();
        let s = versions_stream(rx, shutdown.clone(), Duration::from_secs(3600), None);
        let mut s = Box::pin(s);
        assert_eq!(s.next().await, Some(0));
        tx.send_modify(|v| *v += 1);
        assert_eq!(s.next().now_or_never(), None, "held back by the interval");
        shutdown.cancel();
        assert_eq!(s.next().await, None, "shutdown ends the stream at once");
    }

    #[tokio::test]
    async fn followers_are_limited() {
        let live = Live::new(CancellationToken::new());
        let (_tx, rx) = watch::channel(0u64);
        let streams: Vec<_> = (0..MAX_FOLLOWERS)
            .map(|_| live.follow(rx.clone()).expect("room"))
            .collect();
        assert!(live.follow(rx.clone()).is_none());
        drop(streams);
        assert!(live.follow(rx).is_some(), "a closed page frees its place");
    }
}
