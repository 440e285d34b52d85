//! Retention: what no recipient acknowledged within `delivery.retention`
//! (queue entries and their message bodies), and idempotency records as
//! old, are deleted by a task that runs until shutdown, a chunk per storage
//! call so that no call holds the writer for long. Housekeeping holds each
//! queue to `delivery.max_queue_entries` with [`trim_all_queues`] (every 5
//! s), so a queue outgrows its quota only by what arrives in between.
//!
//! [`Store::trim_queues`]: crate::storage::Store::trim_queues

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::storage::{Expired, Store, StoreError, TrimmedQueues};
use crate::transport::ServerState;

/// Messages (and, separately, idempotency records) deleted per storage call.
const CHUNK: u32 = 500;

/// Pause between two storage calls of one round, so that a backlog (say
/// after an upgrade) leaves the writer to live traffic in between.
const BETWEEN_CHUNKS: Duration = Duration::from_millis(20);

/// How often expiry runs: every tenth of the retention period, and at least
/// once a minute (at most every 100 ms, for the short periods of tests), so
/// nothing outlives the retention by more than that interval.
pub(crate) fn interval_for(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Runs expiry every [`interval_for`] the configured retention until shutdown.
pub(crate) async fn expire_until_shutdown(state: Arc<ServerState>) {
    let retention_ms = u64::try_from(state.config.retention.as_millis()).unwrap_or(u64::MAX);
    let mut tick = tokio::time::interval(interval_for(state.config.retention));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let before_ms = now_ms().saturating_sub(retention_ms);
        if !expire_all_before(&state, before_ms).await {
            return;
        }
    }
}

/// Expires everything stored before `before_ms`, chunk by chunk. Returns
/// `false` when the runtime is going away.
async fn expire_all_before(state: &ServerState, before_ms: u64) -> bool {
    let step = move |store: &dyn Store| store.expire(before_ms, CHUNK);
    in_chunks(state, "expiry", step, |expired: &Expired| {
        state.metrics.expired(expired);
        if expired.queue_entries > 0 {
            tracing::info!(
                entries = expired.queue_entries,
                messages = expired.messages,
                "deleted messages no recipient acknowledged within the retention period"
            );
        }
        expired.more
    })
    .await
}

/// Trims every queue over `delivery.max_queue_entries`, a chunk of queues
/// per storage call. Returns `false` when the runtime is going away.
pub(crate) async fn trim_all_queues(state: &ServerState) -> bool {
    let max_entries = state.config.max_queue_entries;
    let step = move |store: &dyn Store| store.trim_queues(max_entries, CHUNK);
    in_chunks(state, "trimming queues", step, |trimmed: &TrimmedQueues| {
        state.metrics.trimmed(trimmed);
        if trimmed.queue_entries > 0 {
            tracing::warn!(
                queues = trimmed.queues,
                entries = trimmed.queue_entries,
                max_queue_entries = max_entries,
                "deleted the oldest unacknowledged entries of queues over their quota"
            );
        }
        trimmed.more
    })
    .await
}

/// Runs `step` on a blocking thread, call after call with a pause between
/// two, while `report` (told each result) says more is due. A failure waits
/// for the next round. Returns `false` when the runtime is going away.
async fn in_chunks<T: Send + 'static>(
    state: &ServerState,
    what: &str,
    step: impl Fn(&dyn Store) -> Result<T, StoreError> + Clone + Send + 'static,
    report: impl Fn(&T) -> bool,
) -> bool {
    loop {
        let (store, step) = (state.store.clone(), step.clone());
        let done = match tokio::task::spawn_blocking(move || step(&*store)).await {
            Ok(Ok(done)) => done,
            Ok(Err(error)) => {
                tracing::warn!(%error, "{what} failed; retrying at the next round");
                return true;
            }
            Err(join) if join.is_panic() => {
                tracing::error!("{what} panicked; retrying at the next round");
                return true;
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => return false,
        };
        if !report(&done) || state.shutdown.is_cancelled() {
            return true;
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return true,
            _ = tokio::time::sleep(BETWEEN_CHUNKS) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_runs_a_tenth_of_the_retention_within_bounds() {
        assert_eq!(interval_for(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(interval_for(Duration::from_secs(5)), Duration::from_millis(500));
        assert_eq!(interval_for(Duration::from_millis(1)), Duration::from_millis(100));
        assert_eq!(interval_for(Duration::from_secs(30 * 24 * 3600)), Duration::from_secs(60));
    }
}
