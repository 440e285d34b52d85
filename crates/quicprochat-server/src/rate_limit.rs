//! Per-key rate limits on the abusable RPCs, with `governor` keyed GCRA
//! limiters (a token bucket of `burst` cells refilled at `burst` per
//! `period`, see [`crate::config::RateLimit`]).
//!
//! [`RateLimiters`] owns nine limiters: registrations and device links
//! started per source address (an IPv6 address counts by its /64, see
//! [`address_key`]), key package
//! fetches per requester and per target, last-resort packages served per
//! (requester, target) pair, sends per account, commits and leaves per
//! account, group creations per account, and key package claims per
//! federation peer (a peer's users also count as requesters, `name@domain`,
//! and share each target's bucket with local requesters).
//! Each `check_*` consumes one cell or returns [`RetryAfter`], the wait until
//! a cell is free, which the transport sends as `RESOURCE_EXHAUSTED` with
//! `retry_after_ms` (and counts with `Metrics::rate_limited(limit_name)`).
//! Call [`RateLimiters::retain_recent`] periodically (say every minute) so
//! keys that are back to a full bucket are forgotten and memory stays
//! bounded by the recently active keys.
//!
//! Key package exhaustion: a requester draining someone's stock is first
//! held by its own per-requester limit; one that is refused there consumes
//! nothing from the target, so a single attacker cannot spend the victim's
//! budget with refused calls. Many requesters (sybils) share the victim's
//! per-target bucket, so together they take at most `burst` packages per
//! `period` and the victim's client has time to refill its stock when it is
//! told the stock is low. If the ordinary packages run out anyway, the store
//! keeps serving the victim's last-resort package (it is never deleted), so
//! a legitimate add still finds a package; for the same reason, when only
//! the per-target bucket is empty, [`RateLimiters::check_key_package_fetch`]
//! answers [`KeyPackageGrant::LastResortOnly`] rather than refusing: the
//! caller should then serve the last-resort package without consuming an
//! ordinary one, so an attack on the target's stock never locks out adders.
//!
//! Each serving of a last-resort package lets the requester add the target
//! once (the grant is consumed by the commit), so the last-resort package
//! is budgeted per (requester, target) pair
//! ([`RateLimiters::check_last_resort`]): one account cannot add someone to
//! groups without end once their stock is gone. The budget is per pair and
//! not per target on purpose: a budget shared by every requester would let
//! one attacker spend it and lock everybody else out of adding the victim.
//!
//! This module does not see the network or the store; the clock is
//! `governor`'s (injectable for tests).

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{RateLimit, RateLimits};

/// Name of the registration limit (metrics label, logs).
pub const REGISTER_PER_ADDRESS: &str = "register_per_address";
/// Name of the limit on device links started per address.
pub const LINK_PER_ADDRESS: &str = "link_per_address";
/// Name of the per-requester key package fetch limit.
pub const KEY_PACKAGE_FETCH_PER_REQUESTER: &str = "key_package_fetch_per_requester";
/// Name of the per-target key package fetch limit.
pub const KEY_PACKAGE_FETCH_PER_TARGET: &str = "key_package_fetch_per_target";
/// Name of the limit on last-resort packages served per (requester, target).
pub const LAST_RESORT_PER_PAIR: &str = "last_resort_per_pair";
/// Name of the per-account send limit.
pub const SEND_PER_ACCOUNT: &str = "send_per_account";
/// Name of the per-account limit on commits and leaves (each may make the
/// server restore and check a group's view).
pub const COMMIT_PER_ACCOUNT: &str = "commit_per_account";
/// Name of the per-account group creation limit.
pub const CREATE_GROUP_PER_ACCOUNT: &str = "create_group_per_account";
/// Name of the limit on key package claims per federation peer.
pub const KEY_PACKAGE_CLAIM_PER_PEER: &str = "key_package_claim_per_peer";

/// The key a per-address limit counts `address` under: an IPv4 address
/// (an IPv4-mapped IPv6 one too) as it is, an IPv6 address by its /64, the
/// block one subscriber usually holds whole (so one /64 is one client,
/// however many addresses it picks from it).
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// A request was refused by the limit `limit`; a cell frees up after `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit {limit} exceeded, retry in {wait:?}")]
pub struct RetryAfter {
    /// Which limit refused (one of the `*_PER_*` constants).
    pub limit: &'static str,
    /// How long until the same request would be admitted; at least 1 ms.
    pub wait: Duration,
}

impl RetryAfter {
    /// The wait in whole milliseconds, rounded up (the wire `retry_after_ms`).
    pub fn retry_after_ms(&self) -> u64 {
        u64::try_from(self.wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX).max(1)
    }
}

/// What a key package fetch that passed the requester's limit may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPackageGrant {
    /// Serve the next ordinary package as usual.
    Ordinary,
    /// The target's bucket is empty: serve its last-resort package only
    /// (`Store::last_resort_key_package`, which consumes no stock). If it
    /// has none, refuse with `RESOURCE_EXHAUSTED` and `wait`, the time until
    /// an ordinary package may be served.
    LastResortOnly { wait: Duration },
}

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One keyed limiter with its name.
#[derive(Debug)]
struct Limiter<K: Hash + Eq + Clone, C: Clock> {
    name: &'static str,
    limiter: Keyed<K, C>,
}

impl<K: Hash + Eq + Clone, C: Clock> Limiter<K, C> {
    fn new(name: &'static str, limit: RateLimit, clock: C) -> Self {
        Limiter { name, limiter: RateLimiter::dashmap_with_clock(quota(limit), clock) }
    }

    fn check(&self, key: &K) -> Result<(), RetryAfter> {
        self.limiter.check_key(key).map_err(|not_until| RetryAfter {
            limit: self.name,
            wait: not_until.wait_time_from(self.limiter.clock().now()).max(Duration::from_millis(1)),
        })
    }
}

/// `burst` cells, one refilled every `period / burst`. Zero values were
/// refused by config validation; they are clamped here rather than panic.
fn quota(limit: RateLimit) -> Quota {
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    let per_cell = (limit.period / burst.get()).max(Duration::from_nanos(1));
    match Quota::with_period(per_cell) {
        Some(quota) => quota.allow_burst(burst),
        None => Quota::per_second(burst),
    }
}

/// The server's rate limiters; share one instance (it is `Sync`).
#[derive(Debug)]
pub struct RateLimiters<C: Clock = DefaultClock> {
    register: Limiter<IpAddr, C>,
    link: Limiter<IpAddr, C>,
    fetch_by_requester: Limiter<String, C>,
    fetch_by_target: Limiter<String, C>,
    last_resort: Limiter<(String, String), C>,
    send: Limiter<String, C>,
    commit: Limiter<String, C>,
    create_group: Limiter<String, C>,
    claim_by_peer: Limiter<String, C>,
}

impl RateLimiters<DefaultClock> {
    /// Limiters for `limits` on the real clock.
    pub fn new(limits: &RateLimits) -> Self {
        Self::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiters<C> {
    /// Limiters for `limits` on `clock` (a fake clock in tests).
    pub fn with_clock(limits: &RateLimits, clock: C) -> Self {
        RateLimiters {
            register: Limiter::new(REGISTER_PER_ADDRESS, limits.register_per_address, clock.clone()),
            link: Limiter::new(LINK_PER_ADDRESS, limits.link_per_address, clock.clone()),
            fetch_by_requester: Limiter::new(
                KEY_PACKAGE_FETCH_PER_REQUESTER,
                limits.key_package_fetch_per_requester,
                clock.clone(),
            ),
            fetch_by_target: Limiter::new(
                KEY_PACKAGE_FETCH_PER_TARGET,
                limits.key_package_fetch_per_target,
                clock.clone(),
            ),
            last_resort: Limiter::new(LAST_RESORT_PER_PAIR, limits.last_resort_per_pair, clock.clone()),
            send: Limiter::new(SEND_PER_ACCOUNT, limits.send_per_account, clock.clone()),
            commit: Limiter::new(COMMIT_PER_ACCOUNT, limits.commit_per_account, clock.clone()),
            create_group: Limiter::new(CREATE_GROUP_PER_ACCOUNT, limits.create_group_per_account, clock.clone()),
            claim_by_peer: Limiter::new(KEY_PACKAGE_CLAIM_PER_PEER, limits.key_package_claim_per_peer, clock),
        }
    }

    /// One registration attempt from `address` (counted by [`address_key`]).
    pub fn check_register(&self, address: IpAddr) -> Result<(), RetryAfter> {
        self.register.check(&address_key(address))
    }

    /// One device link started from `address` (counted by [`address_key`]).
    pub fn check_link(&self, address: IpAddr) -> Result<(), RetryAfter> {
        self.link.check(&address_key(address))
    }

    /// One key package fetch by `requester` for `target`. Refused only by the
    /// requester's own limit; an exhausted target bucket downgrades the fetch
    /// to [`KeyPackageGrant::LastResortOnly`] (see the module doc).
    pub fn check_key_package_fetch(&self, requester: &str, target: &str) -> Result<KeyPackageGrant, RetryAfter> {
        self.fetch_by_requester.check(&requester.to_owned())?;
        match self.fetch_by_target.check(&target.to_owned()) {
            Ok(()) => Ok(KeyPackageGrant::Ordinary),
            Err(refused) => Ok(KeyPackageGrant::LastResortOnly { wait: refused.wait }),
        }
    }

    /// One serving of `target`'s last-resort key package to `requester`;
    /// ask only when that package is about to be served.
    pub fn check_last_resort(&self, requester: &str, target: &str) -> Result<(), RetryAfter> {
        self.last_resort.check(&(requester.to_owned(), target.to_owned()))
    }

    /// One message sent by `account`.
    pub fn check_send(&self, account: &str) -> Result<(), RetryAfter> {
        self.send.check(&account.to_owned())
    }

    /// One commit or leave submitted by `account`.
    pub fn check_commit(&self, account: &str) -> Result<(), RetryAfter> {
        self.commit.check(&account.to_owned())
    }

    /// One group created by `account`.
    pub fn check_create_group(&self, account: &str) -> Result<(), RetryAfter> {
        self.create_group.check(&account.to_owned())
    }

    /// Forgets keys whose bucket is full again; call periodically.
    pub fn retain_recent(&self) {
        self.register.limiter.retain_recent();
        self.link.limiter.retain_recent();
        self.fetch_by_requester.limiter.retain_recent();
        self.fetch_by_target.limiter.retain_recent();
        self.last_resort.limiter.retain_recent();
        self.send.limiter.retain_recent();
        self.commit.limiter.retain_recent();
        self.create_group.limiter.retain_recent();
        self.claim_by_peer.limiter.retain_recent();
    }

    /// One key package claim by the federation peer `peer` (its users' fetches
    /// of our users' packages, all together).
    pub fn check_claim(&self, peer: &str) -> Result<(), RetryAfter> {
        self.claim_by_peer.check(&peer.to_owned())
    }

    /// Keys currently tracked across all limiters (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.register.limiter.len()
            + self.link.limiter.len()
            + self.fetch_by_requester.limiter.len()
            + self.fetch_by_target.limiter.len()
            + self.last_resort.limiter.len()
            + self.send.limiter.len()
            + self.commit.limiter.len()
            + self.create_group.limiter.len()
            + self.claim_by_peer.limiter.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn limits() -> RateLimits {
        RateLimits {
            register_per_address: RateLimit { burst: 3, period: MINUTE },
            link_per_address: RateLimit { burst: 1, period: MINUTE },
            key_package_fetch_per_requester: RateLimit { burst: 5, period: MINUTE },
            key_package_fetch_per_target: RateLimit { burst: 2, period: MINUTE },
            last_resort_per_pair: RateLimit { burst: 2, period: MINUTE },
            send_per_account: RateLimit { burst: 4, period: Duration::from_secs(8) },
            commit_per_account: RateLimit { burst: 2, period: MINUTE },
            create_group_per_account: RateLimit { burst: 1, period: MINUTE },
            key_package_claim_per_peer: RateLimit { burst: 2, period: MINUTE },
        }
    }

    fn limiters() -> (RateLimiters<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimiters::with_clock(&limits(), clock.clone()), clock)
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn register_burst_then_refused_then_refilled() {
        let (limiters, clock) = limiters();
        for _ in 0..3 {
            limiters.check_register(ip(1)).unwrap();
        }
        let refused = limiters.check_register(ip(1)).unwrap_err();
        assert_eq!(refused.limit, REGISTER_PER_ADDRESS);
        // One cell every 60 s / 3 = 20 s.
        assert_eq!(refused.wait, Duration::from_secs(20));
        assert_eq!(refused.retry_after_ms(), 20_000);
        assert!(refused.to_string().contains("register_per_address"), "{refused}");

        clock.advance(Duration::from_secs(19));
        assert_eq!(limiters.check_register(ip(1)).unwrap_err().wait, Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        limiters.check_register(ip(1)).unwrap();
        assert!(limiters.check_register(ip(1)).is_err());
    }

    #[test]
    fn keys_are_independent() {
        let (limiters, _clock) = limiters();
        for _ in 0..3 {
            limiters.check_register(ip(1)).unwrap();
        }
        assert!(limiters.check_register(ip(1)).is_err());
        limiters.check_register(ip(2)).unwrap();
        limiters.check_register("2001:db8::1".parse().unwrap()).unwrap();

        for _ in 0..4 {
            limiters.check_send("alice").unwrap();
        }
        let refused = limiters.check_send("alice").unwrap_err();
        assert_eq!((refused.limit, refused.wait), (SEND_PER_ACCOUNT, Duration::from_secs(2)));
        limiters.check_send("bob").unwrap();
    }

    #[test]
    fn one_attacker_is_held_by_its_requester_limit() {
        let (limiters, clock) = limiters();
        let grants: Vec<_> = (0..5).map(|_| limiters.check_key_package_fetch("mallory", "victim").unwrap()).collect();
        // The victim's bucket (2) limits how many ordinary packages go.
        assert_eq!(grants.iter().filter(|grant| **grant == KeyPackageGrant::Ordinary).count(), 2);
        assert_eq!(grants[2], KeyPackageGrant::LastResortOnly { wait: Duration::from_secs(30) });
        let refused = limiters.check_key_package_fetch("mallory", "victim").unwrap_err();
        assert_eq!(refused.limit, KEY_PACKAGE_FETCH_PER_REQUESTER);
        assert_eq!(refused.wait, Duration::from_secs(12));

        // Refused calls did not spend the victim's budget: after one target
        // cell refills, a legitimate requester gets an ordinary package.
        clock.advance(Duration::from_secs(30));
        assert_eq!(limiters.check_key_package_fetch("alice", "victim").unwrap(), KeyPackageGrant::Ordinary);
        assert_eq!(
            limiters.check_key_package_fetch("alice", "other").unwrap(),
            KeyPackageGrant::Ordinary,
            "other targets are unaffected"
        );
    }

    #[test]
    fn many_requesters_share_the_victims_budget() {
        let (limiters, _clock) = limiters();
        let ordinary = (0..50)
            .map(|n| limiters.check_key_package_fetch(&format!("sybil{n}"), "victim").unwrap())
            .filter(|grant| *grant == KeyPackageGrant::Ordinary)
            .count();
        assert_eq!(ordinary, 2, "at most `burst` ordinary packages leave per period");
        // A legitimate adder is not refused: it gets the last-resort package.
        assert!(matches!(
            limiters.check_key_package_fetch("alice", "victim").unwrap(),
            KeyPackageGrant::LastResortOnly { .. }
        ));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address() {
        let (limiters, _clock) = limiters();
        for host in 1..=3 {
            limiters.check_register(format!("2001:db8:1:2::{host:x}").parse().unwrap()).unwrap();
        }
        let other_host_same_64: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(limiters.check_register(other_host_same_64).unwrap_err().limit, REGISTER_PER_ADDRESS);
        limiters.check_register("2001:db8:1:3::1".parse().unwrap()).unwrap();
        // An IPv4-mapped address is its IPv4 address.
        assert_eq!(address_key("::ffff:192.0.2.7".parse().unwrap()), ip(7));
        assert_eq!(address_key(ip(7)), ip(7));
    }

    #[test]
    fn commits_and_group_creations_have_budgets_of_their_own() {
        let (limiters, _clock) = limiters();
        limiters.check_commit("mallory").unwrap();
        limiters.check_commit("mallory").unwrap();
        assert_eq!(limiters.check_commit("mallory").unwrap_err().limit, COMMIT_PER_ACCOUNT);
        limiters.check_create_group("mallory").unwrap();
        assert_eq!(limiters.check_create_group("mallory").unwrap_err().limit, CREATE_GROUP_PER_ACCOUNT);
        limiters.check_send("mallory").unwrap();
        limiters.check_commit("alice").unwrap();
        limiters.check_create_group("alice").unwrap();
    }

    #[test]
    fn last_resort_packages_are_budgeted_per_requester_and_target() {
        let (limiters, _clock) = limiters();
        limiters.check_last_resort("mallory", "bob").unwrap();
        limiters.check_last_resort("mallory", "bob").unwrap();
        let refused = limiters.check_last_resort("mallory", "bob").unwrap_err();
        assert_eq!(refused.limit, LAST_RESORT_PER_PAIR);
        // Mallory spending her budget for bob leaves everyone else's intact.
        limiters.check_last_resort("alice", "bob").unwrap();
        limiters.check_last_resort("mallory", "carol").unwrap();
    }

    #[test]
    fn device_links_are_budgeted_per_address_apart_from_registrations() {
        let (limiters, _clock) = limiters();
        limiters.check_link(ip(1)).unwrap();
        assert_eq!(limiters.check_link(ip(1)).unwrap_err().limit, LINK_PER_ADDRESS);
        limiters.check_register(ip(1)).unwrap();
        limiters.check_link(ip(2)).unwrap();
    }

    #[test]
    fn retain_recent_forgets_idle_keys() {
        let (limiters, clock) = limiters();
        limiters.check_register(ip(1)).unwrap();
        limiters.check_send("alice").unwrap();
        assert_eq!(limiters.tracked_keys(), 2);
        clock.advance(Duration::from_secs(10));
        limiters.retain_recent();
        assert_eq!(limiters.tracked_keys(), 1, "the send bucket refilled (2 s), the register one not (20 s)");
        clock.advance(MINUTE);
        limiters.retain_recent();
        assert_eq!(limiters.tracked_keys(), 0);
    }

    #[test]
    fn real_clock_constructor_limits() {
        let limiters = RateLimiters::new(&limits());
        for _ in 0..3 {
            limiters.check_register(ip(9)).unwrap();
        }
        let refused = limiters.check_register(ip(9)).unwrap_err();
        assert!(refused.wait > Duration::ZERO && refused.wait <= Duration::from_secs(20), "{refused:?}");
    }

    #[test]
    fn zero_config_values_do_not_panic() {
        let quota = quota(RateLimit { burst: 0, period: Duration::ZERO });
        assert_eq!(quota.burst_size().get(), 1);
    }
}
