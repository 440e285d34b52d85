//! The push stream a client keeps between `receive_wait` calls, and whether
//! it has one at all.
//!
//! [`KeptPush`] is the slot `receive_wait` parks its stream in between
//! calls. Every stream is a [`LivePush`], counted while it exists: dropped
//! (it ended, broke, missed entries, or its connection was replaced) it
//! stops counting. A send uses the count to skip its catch-up `Fetch`: while
//! a stream is alive the server pushes what is queued for this device as it
//! comes, so what it delivered is processed, or waits in the stream, or is
//! being processed by a `receive_wait` (see [`crate::sync`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};

use quicprochat_proto::v1;
use quicprochat_rpc::{PushStream, RpcError};
use tokio::time::error::Elapsed;

use crate::sync::FETCH_LIMIT;

/// A push stream, counted while it exists.
pub(crate) struct LivePush {
    stream: PushStream,
    live: Arc<AtomicUsize>,
}

impl std::ops::Deref for LivePush {
    type Target = PushStream;
    fn deref(&self) -> &PushStream {
        &self.stream
    }
}

impl std::ops::DerefMut for LivePush {
    fn deref_mut(&mut self) -> &mut PushStream {
        &mut self.stream
    }
}

impl Drop for LivePush {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The push stream `receive_wait` keeps between calls, shared by the
/// client and its `Inner` behind a plain mutex: taking or keeping it never
/// awaits, so no cancellation can come between and drop it.
#[derive(Clone, Default)]
pub(crate) struct KeptPush {
    slot: Arc<StdMutex<Option<LivePush>>>,
    live: Arc<AtomicUsize>,
}

impl KeptPush {
    fn slot(&self) -> MutexGuard<'_, Option<LivePush>> {
        // Each update is one assignment, consistent under a panic elsewhere.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a stream the server just opened.
    pub(crate) fn attach(&self, stream: PushStream) -> LivePush {
        self.live.fetch_add(1, Ordering::AcqRel);
        LivePush { stream, live: Arc::clone(&self.live) }
    }

    /// Whether some push stream of this client is alive: parked here, or
    /// held by a `receive_wait` in progress.
    pub(crate) fn alive(&self) -> bool {
        self.live.load(Ordering::Acquire) > 0
    }

    pub(crate) fn holds(&self) -> bool {
        self.slot().is_some()
    }

    pub(crate) fn take(&self) -> Option<LivePush> {
        self.slot().take()
    }

    pub(crate) fn keep(&self, push: LivePush) {
        *self.slot() = Some(push);
    }

    /// Drops the kept stream (its connection was replaced).
    pub(crate) fn clear(&self) {
        self.slot().take();
    }
}

/// Holds the push stream while `receive_wait` waits on it. A call cancelled
/// there (the REPL and TUI drop theirs when a command runs) keeps the
/// stream for the next call instead of dropping it: nothing was taken from
/// it (`PushStream::next` is cancel-safe), so the next call needs no new
/// subscription and no fetch.
pub(crate) struct ParkOnCancel<'a> {
    pub(crate) push: Option<LivePush>,
    pub(crate) kept: &'a KeptPush,
}

impl ParkOnCancel<'_> {
    /// Waits until `deadline` for the next event; returns it with the stream.
    #[allow(clippy::type_complexity)]
    pub(crate) async fn wait(
        mut self,
        deadline: tokio::time::Instant,
    ) -> Option<(Result<Result<Option<v1::PushEvent>, RpcError>, Elapsed>, LivePush)> {
        let waited = tokio::time::timeout_at(deadline, self.push.as_mut()?.next()).await;
        self.push.take().map(|push| (waited, push))
    }
}

impl Drop for ParkOnCancel<'_> {
    fn drop(&mut self) {
        if let Some(push) = self.push.take() {
            self.kept.keep(push);
        }
    }
}

/// The entries of `first` (if any) and of the push events that have
/// already arrived after it (up to about [`FETCH_LIMIT`] entries, as one
/// fetch would take), and whether the stream is still intact (not ended or
/// broken).
pub(crate) fn with_ready_events(first: Option<v1::PushEvent>, push: &mut PushStream) -> (Vec<v1::QueueEntry>, bool) {
    let mut entries = first.map(|event| event.entries).unwrap_or_default();
    while entries.len() < FETCH_LIMIT as usize {
        let Some(next) = push.ready() else { break };
        match next {
            Ok(Some(event)) => entries.extend(event.entries),
            Ok(None) | Err(_) => return (entries, false),
        }
    }
    (entries, true)
}
