//! Reconnect backoff: exponential with "full jitter", bounded below so a client cannot spin.
//!
//! Owns only the arithmetic: given the number of failures since the last healthy connection and an
//! injected random source, how long to wait before the next attempt. It keeps no state of its own.

use std::time::Duration;

use rand::Rng;

use super::SupervisorConfig;

/// The interval `[lowest, highest]` the delay after the `failures`-th failure is drawn from.
///
/// `highest` is `min(ceiling, floor · 2^(failures − 1))` and `lowest` is `floor / 4` (but never above
/// `highest`). Saturating: any `failures` count, up to `u32::MAX`, yields the ceiling without overflow.
/// `failures == 0` is treated like `1`.
pub(super) fn bounds(config: &SupervisorConfig, failures: u32) -> (Duration, Duration) {
    let doublings = failures.saturating_sub(1);
    // `checked_shl` fails only for shifts of 32 and more; the ceiling caps the result long before.
    let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
    let highest = config.backoff_floor.saturating_mul(factor).min(config.backoff_ceiling);
    let lowest = (config.backoff_floor / 4).min(highest);
    (lowest, highest)
}

/// A delay drawn uniformly from [`bounds`]`(config, failures)`.
pub(super) fn delay(config: &SupervisorConfig, failures: u32, rng: &mut impl Rng) -> Duration {
    let (lowest, highest) = bounds(config, failures);
    let nanos = rng.random_range(nanos_of(lowest)..=nanos_of(highest));
    Duration::from_nanos(nanos)
}

/// Whole nanoseconds, saturating at `u64::MAX` (≈ 584 years; configs are clamped far below).
fn nanos_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;

    fn config() -> SupervisorConfig {
        SupervisorConfig::default()
    }

    #[test]
    fn bounds_double_from_the_floor_up_to_the_ceiling() {
        let ms = Duration::from_millis;
        let expected_highest = [250, 500, 1000, 2000, 4000, 8000, 15_000, 15_000];
        for (failures, highest) in (1..).zip(expected_highest) {
            assert_eq!(bounds(&config(), failures), (ms(62) + Duration::from_micros(500), ms(highest)), "{failures}");
        }
    }

    #[test]
    fn bounds_saturate_for_huge_failure_counts() {
        let config = config();
        for failures in [31, 32, 33, 64, 1000, u32::MAX] {
            assert_eq!(bounds(&config, failures), (config.backoff_floor / 4, config.backoff_ceiling), "{failures}");
        }
        assert_eq!(bounds(&config, 0), bounds(&config, 1));
    }

    #[test]
    fn lowest_never_exceeds_highest_when_the_ceiling_is_tiny() {
        let config = SupervisorConfig {
            backoff_floor: Duration::from_secs(1),
            backoff_ceiling: Duration::from_millis(100),
            ..config()
        };
        assert_eq!(bounds(&config, 1), (Duration::from_millis(100), Duration::from_millis(100)));
    }

    #[test]
    fn delays_stay_within_bounds() {
        let config = config();
        let mut rng = SmallRng::seed_from_u64(7);
        for failures in 1..=20 {
            let (lowest, highest) = bounds(&config, failures);
            for _ in 0..200 {
                let drawn = delay(&config, failures, &mut rng);
                assert!(lowest <= drawn && drawn <= highest, "{failures}: {drawn:?} not in [{lowest:?}, {highest:?}]");
            }
        }
    }
}
