//! The push stream a client keeps between `receive_wait` calls.
//!
//! [`KeptPush`] is the slot `receive_wait` parks its stream in once
//! everything it delivered is processed (the REPL and the TUI park it at
//! every command). A send finding a stream parked there makes no catch-up
//! `Fetch`: it processes the events already arrived in it instead (see
//! `Inner::catch_up_for_sending` in [`crate::sync`]).

use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};

use quicprochat_proto::v1;
use quicprochat_rpc::{PushStream, RpcError};
use tokio::time::error::Elapsed;

use crate::sync::FETCH_LIMIT;

/// The push stream `receive_wait` keeps between calls, shared by the
/// client and its `Inner` behind a plain mutex: taking or keeping it never
/// awaits, so no cancellation can come between and drop it.
#[derive(Clone, Default)]
pub(crate) struct KeptPush(Arc<StdMutex<Option<PushStream>>>);

impl KeptPush {
    fn slot(&self) -> MutexGuard<'_, Option<PushStream>> {
        // Each update is one assignment, consistent under a panic elsewhere.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn holds(&self) -> bool {
        self.slot().is_some()
    }

    pub(crate) fn take(&self) -> Option<PushStream> {
        self.slot().take()
    }

    pub(crate) fn keep(&self, push: PushStream) {
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
    pub(crate) push: Option<PushStream>,
    pub(crate) kept: &'a KeptPush,
}

impl ParkOnCancel<'_> {
    /// Waits until `deadline` for the next event; returns it with the stream.
    #[allow(clippy::type_complexity)]
    pub(crate) async fn wait(
        mut self,
        deadline: tokio::time::Instant,
    ) -> Option<(Result<Result<Option<v1::PushEvent>, RpcError>, Elapsed>, PushStream)> {
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
