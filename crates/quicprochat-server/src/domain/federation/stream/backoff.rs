//! When an outbound stream retries: the [`RetryPolicy`] and its backoff, exponential with full
//! jitter, bounded below so a stream cannot spin against a peer that keeps failing.
//!
//! Owns only the policy and the arithmetic: given the number of consecutive failures and an
//! injected random source, how long to wait before the next attempt. It keeps no state of its
//! own. The scheme is the client supervisor's (`quicprochat-sdk`, `supervisor/backoff.rs`).

use std::time::Duration;

use rand::Rng;

/// The smallest `retry_min` and `answer_timeout` accepted; lower ones are raised to it.
const MIN_SETTING: Duration = Duration::from_millis(10);
/// The largest duration accepted for any setting; larger ones are lowered to it.
const MAX_SETTING: Duration = Duration::from_secs(24 * 60 * 60);

/// When to retry. Out-of-range values are clamped by [`OutboundStream::new`](super::OutboundStream::new), never
/// rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The longest wait before the first retry after a failure; doubles with each further
    /// consecutive failure (full jitter: the wait is drawn from `[retry_min / 4, bound]`).
    /// Default 250 ms (`federation.retry_min`); at least 10 ms.
    pub retry_min: Duration,
    /// The longest wait between attempts, however many failed. Default 30 s
    /// (`federation.retry_max`); at least `retry_min`.
    pub retry_max: Duration,
    /// How long a sent batch may stay unanswered before it counts as failed. Default 10 s;
    /// at least 10 ms.
    pub answer_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// This policy with every value clamped into its documented range.
    pub(super) fn clamped(self) -> Self {
        let retry_min = self.retry_min.clamp(MIN_SETTING, MAX_SETTING);
        RetryPolicy {
            retry_min,
            retry_max: self.retry_max.clamp(retry_min, MAX_SETTING),
            answer_timeout: self.answer_timeout.clamp(MIN_SETTING, MAX_SETTING),
        }
    }
}

/// The interval `[lowest, highest]` the delay after the `failures`-th consecutive failure is
/// drawn from.
///
/// `highest` is `min(retry_max, retry_min · 2^(failures − 1))` and `lowest` is `retry_min / 4`
/// (but never above `highest`). Saturating: any `failures` count, up to `u32::MAX`, yields
/// `retry_max` without overflow. `failures == 0` is treated like `1`.
pub(super) fn bounds(policy: &RetryPolicy, failures: u32) -> (Duration, Duration) {
    let doublings = failures.saturating_sub(1);
    // `checked_shl` fails only for shifts of 32 and more; retry_max caps the result long before.
    let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
    let highest = policy.retry_min.saturating_mul(factor).min(policy.retry_max);
    let lowest = (policy.retry_min / 4).min(highest);
    (lowest, highest)
}

/// A delay drawn uniformly from [`bounds`]`(policy, failures)`.
pub(crate) fn delay(policy: &RetryPolicy, failures: u32, rng: &mut impl Rng) -> Duration {
    let (lowest, highest) = bounds(policy, failures);
    Duration::from_nanos(rng.random_range(nanos_of(lowest)..=nanos_of(highest)))
}

/// Whole nanoseconds, saturating at `u64::MAX` (≈ 584 years; policies are clamped far below).
fn nanos_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn bounds_double_from_retry_min_up_to_retry_max() {
        let policy = RetryPolicy::default();
        let expected_highest = [250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000];
        for (failures, highest) in (1..).zip(expected_highest) {
            assert_eq!(bounds(&policy, failures), (ms(62) + Duration::from_micros(500), ms(highest)), "{failures}");
        }
    }

    #[test]
    fn bounds_saturate_for_huge_failure_counts() {
        let policy = RetryPolicy::default();
        for failures in [31, 32, 33, 64, 1000, u32::MAX] {
            assert_eq!(bounds(&policy, failures), (policy.retry_min / 4, policy.retry_max), "{failures}");
        }
        assert_eq!(bounds(&policy, 0), bounds(&policy, 1));
    }

    #[test]
    fn delays_stay_within_bounds() {
        let policy = RetryPolicy::default();
        let mut rng = SmallRng::seed_from_u64(7);
        for failures in 1..=20 {
            let (lowest, highest) = bounds(&policy, failures);
            for _ in 0..200 {
                let drawn = delay(&policy, failures, &mut rng);
                assert!(lowest <= drawn && drawn <= highest, "{failures}: {drawn:?} not in [{lowest:?}, {highest:?}]");
            }
        }
    }
}
