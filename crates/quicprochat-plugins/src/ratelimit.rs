//! A rate limit on messages per (sender, group), in `on_enqueue`: a token
//! bucket of `burst` messages refilled at `per_second`, kept per pair by
//! `governor`'s keyed GCRA limiter. Over the limit the gate answers
//! `RETRY_LATER` with the time until a token is free (at least 1 ms), which
//! the server sends as `RESOURCE_EXHAUSTED` with `retry_after_ms`. The
//! server asks `on_enqueue` for application messages only (commits go
//! through `on_commit`); any kind it is asked about counts.
//!
//! Config keys (the plugin's `config` table):
//! ```toml
//! [plugins.config]
//! per_second = 2.0    # tokens refilled per second, > 0 (0.5 = one every 2 s)
//! burst = 10          # bucket size, >= 1: messages accepted back to back
//! max_keys = 100000   # optional (default 100000): pairs tracked at most
//! ```
//!
//! Memory: pairs whose bucket is full again are forgotten every
//! [`RETAIN_EVERY`] (`retain_recent`), so what is kept is the pairs active
//! in the last refill period. If more than `max_keys` pairs are tracked
//! anyway, the limiter starts afresh (every pair gets a full bucket) and
//! says so in the server's log: memory stays bounded, at the price of one
//! burst of leniency under such a flood.
//!
//! This module does no IO; the clock is `governor`'s (a fake one in tests).

use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use quicprochat_plugin_api::abi::QPC_LOG_WARN;
use quicprochat_plugin_api::host::GateAnswer;
use quicprochat_plugin_api::sdk::{EnqueueInfo, GateResult, Hooks, Host, Plugin};
use serde::Deserialize;

use crate::{bad_key, parse_config};

const PLUGIN: &str = "ratelimit";

/// How often pairs back to a full bucket are forgotten.
pub const RETAIN_EVERY: Duration = Duration::from_secs(10);

/// `max_keys` when the config leaves it out.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The config as the operator wrote it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    per_second: f64,
    burst: u32,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
}

fn default_max_keys() -> usize {
    DEFAULT_MAX_KEYS
}

/// The checked config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    quota: Quota,
    per_second: f64,
    burst: u32,
    max_keys: usize,
}

impl Settings {
    /// Reads and checks the `config` JSON.
    pub(crate) fn parse(config: &str) -> Result<Settings, String> {
        let raw: RawConfig = parse_config(PLUGIN, config)?;
        let burst = NonZeroU32::new(raw.burst).ok_or_else(|| bad_key(PLUGIN, "burst", "must be at least 1"))?;
        let bad_rate = || bad_key(PLUGIN, "per_second", "must be a number above 0 and at most 1e9");
        if !(raw.per_second.is_finite() && raw.per_second > 0.0 && raw.per_second <= 1e9) {
            return Err(bad_rate());
        }
        let period = Duration::try_from_secs_f64(1.0 / raw.per_second).map_err(|_| bad_rate())?;
        let quota = Quota::with_period(period).ok_or_else(bad_rate)?.allow_burst(burst);
        if raw.max_keys == 0 {
            return Err(bad_key(PLUGIN, "max_keys", "must be at least 1"));
        }
        Ok(Settings { quota, per_second: raw.per_second, burst: raw.burst, max_keys: raw.max_keys })
    }
}

/// A pair's key: the sender's name and the group id.
type Key = (String, Vec<u8>);

type Keyed<C> = RateLimiter<Key, DashMapStateStore<Key>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The plugin: one keyed limiter shared by every gate call (it is `Sync`).
pub struct RateLimit<C: Clock = DefaultClock> {
    settings: Settings,
    clock: C,
    /// Replaced by a fresh one when it tracks more than `max_keys` pairs.
    limiter: RwLock<Keyed<C>>,
    /// When idle pairs were last forgotten.
    last_retain: Mutex<C::Instant>,
    host: Host,
}

impl<C: Clock + Clone> RateLimit<C> {
    /// The plugin for `settings` on `clock`.
    pub(crate) fn with_clock(settings: Settings, clock: C, host: Host) -> Self {
        let limiter = RateLimiter::dashmap_with_clock(settings.quota, clock.clone());
        let last_retain = Mutex::new(clock.now());
        RateLimit { settings, clock, limiter: RwLock::new(limiter), last_retain, host }
    }

    /// Pairs currently tracked.
    pub fn tracked_pairs(&self) -> usize {
        self.limiter.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Forgets idle pairs every [`RETAIN_EVERY`], and starts afresh above
    /// `max_keys` (one caller does it; the others go on).
    fn upkeep(&self) {
        let Ok(mut last_retain) = self.last_retain.try_lock() else { return };
        let now = self.clock.now();
        let tracked = self.tracked_pairs();
        if tracked > self.settings.max_keys {
            let fresh = RateLimiter::dashmap_with_clock(self.settings.quota, self.clock.clone());
            *self.limiter.write().unwrap_or_else(PoisonError::into_inner) = fresh;
            *last_retain = now;
            let max_keys = self.settings.max_keys;
            let message =
                format!("{tracked} sender and group pairs tracked, over max_keys = {max_keys}: starting afresh");
            self.host.log(QPC_LOG_WARN, &message);
        } else if Duration::from(now.duration_since(*last_retain)) >= RETAIN_EVERY {
            self.limiter.read().unwrap_or_else(PoisonError::into_inner).retain_recent();
            *last_retain = now;
        }
    }
}

impl<C: Clock + Clone + Default + Send + Sync + 'static> Plugin for RateLimit<C> {
    const HOOKS: Hooks = Hooks { enqueue: true, ..Hooks::NONE };

    fn load(config: &str, host: &Host) -> Result<Self, String> {
        Ok(RateLimit::with_clock(Settings::parse(config)?, C::default(), *host))
    }

    fn on_enqueue(&self, event: &EnqueueInfo<'_>) -> GateResult {
        self.upkeep();
        let key = (event.sender.to_owned(), event.group_id.to_vec());
        let checked = self.limiter.read().unwrap_or_else(PoisonError::into_inner).check_key(&key);
        match checked {
            Ok(()) => Ok(GateAnswer::Allow),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let Settings { per_second, burst, .. } = self.settings;
                let reason =
                    format!("rate limit of {per_second} messages/s per sender and group (burst {burst}) reached");
                Ok(GateAnswer::RetryLater { after_ms: whole_ms(wait), reason })
            }
        }
    }
}

/// A wait in whole milliseconds, rounded up, at least 1, at most `u32::MAX`.
fn whole_ms(wait: Duration) -> u32 {
    u32::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;
    use quicprochat_plugin_api::sdk::EntryKind;

    use super::*;

    fn plugin(config: &str) -> (RateLimit<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let settings = Settings::parse(config).expect("valid config");
        (RateLimit::with_clock(settings, clock.clone(), Host::get()), clock)
    }

    fn send(plugin: &RateLimit<FakeRelativeClock>, sender: &str, group: &[u8]) -> GateAnswer {
        let event = EnqueueInfo {
            kind: EntryKind::Application,
            sender,
            sender_device: &[1; 8],
            group_id: group,
            message_id: &[9; 16],
            payload_len: 100,
            epoch: 3,
        };
        plugin.on_enqueue(&event).expect("the gate answers")
    }

    fn retry_after(answer: GateAnswer) -> u32 {
        match answer {
            GateAnswer::RetryLater { after_ms, reason } => {
                assert!(reason.starts_with("rate limit of "), "{reason}");
                after_ms
            }
            other => panic!("expected RetryLater, got {other:?}"),
        }
    }

    #[test]
    fn a_burst_passes_then_the_sender_waits_for_the_next_token() {
        let (plugin, clock) = plugin(r#"{"per_second": 2, "burst": 3}"#);
        for _ in 0..3 {
            assert_eq!(send(&plugin, "alice", b"g1"), GateAnswer::Allow);
        }
        assert_eq!(retry_after(send(&plugin, "alice", b"g1")), 500, "one token every 500 ms");
        clock.advance(Duration::from_millis(499));
        assert_eq!(retry_after(send(&plugin, "alice", b"g1")), 1, "never 0");
        clock.advance(Duration::from_millis(1));
        assert_eq!(send(&plugin, "alice", b"g1"), GateAnswer::Allow);
    }

    #[test]
    fn pairs_are_independent() {
        let (plugin, _clock) = plugin(r#"{"per_second": 0.5, "burst": 1}"#);
        assert_eq!(send(&plugin, "alice", b"g1"), GateAnswer::Allow);
        assert_eq!(retry_after(send(&plugin, "alice", b"g1")), 2000);
        assert_eq!(send(&plugin, "alice", b"g2"), GateAnswer::Allow, "another group");
        assert_eq!(send(&plugin, "bob", b"g1"), GateAnswer::Allow, "another sender");
    }

    #[test]
    fn idle_pairs_are_forgotten_and_a_flood_of_pairs_starts_afresh() {
        let (plugin, clock) = plugin(r#"{"per_second": 1, "burst": 2, "max_keys": 3}"#);
        send(&plugin, "alice", b"g1");
        send(&plugin, "bob", b"g1");
        assert_eq!(plugin.tracked_pairs(), 2);
        clock.advance(RETAIN_EVERY);
        send(&plugin, "carol", b"g1");
        assert_eq!(plugin.tracked_pairs(), 1, "alice's and bob's buckets were full again");

        for sender in ["d", "e", "f"] {
            send(&plugin, sender, b"g1");
        }
        assert_eq!(plugin.tracked_pairs(), 4);
        send(&plugin, "alice", b"g1");
        assert_eq!(plugin.tracked_pairs(), 1, "over max_keys: a fresh limiter, then alice");
    }

    #[test]
    fn bad_configs_are_refused_naming_the_key() {
        let refused = |config: &str| match Settings::parse(config) {
            Ok(_) => panic!("accepted {config}"),
            Err(error) => error,
        };
        assert_eq!(refused(r#"{"per_second": 1, "burst": 0}"#), "ratelimit: config key `burst` must be at least 1");
        for rate in ["0", "-1", "1e10", "1e-300"] {
            let error = refused(&format!(r#"{{"per_second": {rate}, "burst": 1}}"#));
            assert!(error.starts_with("ratelimit: config key `per_second`"), "{error}");
        }
        assert!(refused(r#"{"per_second": 1}"#).contains("missing field `burst`"));
        assert!(refused(r#"{"per_second": 1, "burst": 1, "brust": 2}"#).contains("unknown field `brust`"));
        assert!(refused(r#"{"per_second": "fast", "burst": 1}"#).contains("key `per_second`"));
        assert!(refused(r#"{"per_second": 1, "burst": 1, "max_keys": 0}"#).contains("`max_keys`"));
    }

    #[test]
    fn waits_round_up_to_whole_milliseconds() {
        assert_eq!(whole_ms(Duration::ZERO), 1);
        assert_eq!(whole_ms(Duration::from_micros(1500)), 2);
        assert_eq!(whole_ms(Duration::from_secs(u64::MAX)), u32::MAX);
    }

    #[test]
    fn the_plugin_is_send_and_sync_on_the_real_clock() {
        fn shared<T: Send + Sync>() {}
        shared::<RateLimit>();
        let plugin = RateLimit::<DefaultClock>::load(r#"{"per_second": 1, "burst": 1}"#, &Host::get()).expect("loads");
        let event = EnqueueInfo {
            kind: EntryKind::Commit,
            sender: "alice",
            sender_device: &[],
            group_id: b"g",
            message_id: &[],
            payload_len: 0,
            epoch: 0,
        };
        assert_eq!(plugin.on_enqueue(&event), Ok(GateAnswer::Allow));
        assert!(matches!(plugin.on_enqueue(&event), Ok(GateAnswer::RetryLater { after_ms: 1..=1000, .. })));
    }
}
