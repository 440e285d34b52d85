//! Admission of new connections: Retry for unvalidated addresses when many
//! handshakes are pending, and a cap on open connections per source IP (an
//! IPv6 source by its /64, [`address_key`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::ConnectionLimits;
use crate::rate_limit::address_key;

/// What to do with a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go ahead with the handshake.
    Accept,
    /// Ask the client to prove its address first (QUIC Retry).
    Retry,
    /// Refuse: this address has too many connections.
    Refuse,
}

/// Counts pending handshakes and open connections per address.
#[derive(Debug, Default)]
pub(crate) struct Admissions {
    pending_handshakes: AtomicU32,
    per_address: Mutex<HashMap<IpAddr, u32>>,
}

impl Admissions {
    /// Decides on an attempt from `ip` (`validated`: the address already
    /// answered a Retry; `may_retry`: a Retry is still possible).
    pub(crate) fn decide(&self, limits: &ConnectionLimits, ip: IpAddr, validated: bool, may_retry: bool) -> Admission {
        let ip = address_key(ip);
        let open = self.per_address.lock().map(|map| map.get(&ip).copied().unwrap_or(0)).unwrap_or(0);
        if open >= limits.per_address {
            return Admission::Refuse;
        }
        let pending = self.pending_handshakes.load(Ordering::Relaxed);
        if pending >= limits.retry_above_pending && !validated && may_retry {
            return Admission::Retry;
        }
        Admission::Accept
    }

    /// Counts an admitted connection until the returned guard is dropped.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> AdmissionGuard {
        let ip = address_key(ip);
        self.pending_handshakes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut map) = self.per_address.lock() {
            *map.entry(ip).or_insert(0) += 1;
        }
        AdmissionGuard { admissions: Arc::clone(self), ip, handshaking: true }
    }
}

/// Holds one connection's place in the per-address count.
#[derive(Debug)]
pub(crate) struct AdmissionGuard {
    admissions: Arc<Admissions>,
    ip: IpAddr,
    handshaking: bool,
}

impl AdmissionGuard {
    /// The handshake finished (either way): it no longer counts as pending.
    pub(crate) fn handshake_done(&mut self) {
        if std::mem::replace(&mut self.handshaking, false) {
            self.admissions.pending_handshakes.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for AdmissionGuard {
    fn drop(&mut self) {
        self.handshake_done();
        if let Ok(mut map) = self.admissions.per_address.lock() {
            if let Some(count) = map.get_mut(&self.ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    map.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerConfig;

    fn limits(per_address: u32, retry_above_pending: u32) -> ConnectionLimits {
        let mut limits = ServerConfig::new("/tmp".into(), ([127, 0, 0, 1], 0).into()).connections;
        limits.per_address = per_address;
        limits.retry_above_pending = retry_above_pending;
        limits
    }

    #[test]
    fn per_address_cap_and_release() {
        let admissions = Arc::new(Admissions::default());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let limits = limits(2, 100);
        let first = admissions.admit(ip);
        let _second = admissions.admit(ip);
        assert_eq!(admissions.decide(&limits, ip, true, false), Admission::Refuse);
        assert_eq!(admissions.decide(&limits, other, true, false), Admission::Accept);
        drop(first);
        assert_eq!(admissions.decide(&limits, ip, true, false), Admission::Accept);
    }

    #[test]
    fn an_ipv6_slash_64_shares_one_cap() {
        let admissions = Arc::new(Admissions::default());
        let limits = limits(2, 100);
        let _first = admissions.admit("2001:db8::1".parse().expect("an address"));
        let _second = admissions.admit("2001:db8::2".parse().expect("an address"));
        let same_64: IpAddr = "2001:db8::ffff".parse().expect("an address");
        assert_eq!(admissions.decide(&limits, same_64, true, false), Admission::Refuse);
        let next_64: IpAddr = "2001:db8:0:1::1".parse().expect("an address");
        assert_eq!(admissions.decide(&limits, next_64, true, false), Admission::Accept);
    }

    #[test]
    fn retry_only_under_load_and_for_unvalidated_addresses() {
        let admissions = Arc::new(Admissions::default());
        let limits = limits(100, 1);
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(admissions.decide(&limits, ip, false, true), Admission::Accept);
        let mut pending = admissions.admit(ip);
        assert_eq!(admissions.decide(&limits, ip, false, true), Admission::Retry);
        assert_eq!(admissions.decide(&limits, ip, true, false), Admission::Accept);
        assert_eq!(admissions.decide(&limits, ip, false, false), Admission::Accept);
        pending.handshake_done();
        assert_eq!(admissions.decide(&limits, ip, false, true), Admission::Accept);
    }
}
