//! Per-connection login state.
//!
//! A challenge nonce is single-use and bound to this connection; the login
//! proof signs it together with the connection's TLS exporter, so a proof
//! cannot be replayed on another connection or twice on this one.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

use crate::domain::devices::Caller;
use quicprochat_core::DeviceId;

/// Login state of one connection.
pub(crate) struct Session {
    /// The connection's TLS exporter (see `quicprochat_rpc::auth_exporter`).
    pub(crate) exporter: [u8; 32],
    /// The client's address (rate limits per source address).
    pub(crate) remote: std::net::SocketAddr,
    state: Mutex<SessionState>,
}

/// The account and device a session logged in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionUser {
    pub(crate) username: String,
    /// The queue of the device the session logged in with.
    pub(crate) queue: String,
    /// That device's id.
    pub(crate) device: DeviceId,
}

impl SessionUser {
    /// The session as the domain sees a request's origin.
    pub(crate) fn caller(&self) -> Caller<'_> {
        Caller { username: &self.username, queue: &self.queue }
    }
}

#[derive(Default)]
struct SessionState {
    challenge: Option<Vec<u8>>,
    user: Option<SessionUser>,
    /// The end signal of the connection's push subscription, if any.
    push: Option<CancellationToken>,
}

impl Session {
    pub(crate) fn new(exporter: [u8; 32], remote: std::net::SocketAddr) -> Session {
        Session { exporter, remote, state: Mutex::default() }
    }

    /// Issues a fresh challenge, replacing any earlier one.
    pub(crate) fn new_challenge(&self) -> Vec<u8> {
        let nonce = rand::random::<[u8; 32]>().to_vec();
        if let Ok(mut state) = self.state.lock() {
            state.challenge = Some(nonce.clone());
        }
        nonce
    }

    /// Takes the current challenge (single use).
    pub(crate) fn take_challenge(&self) -> Option<Vec<u8>> {
        self.state.lock().ok().and_then(|mut state| state.challenge.take())
    }

    /// Marks the connection as logged in as `username` on the device whose
    /// queue is `queue`.
    pub(crate) fn log_in(&self, username: String, queue: String, device: DeviceId) {
        if let Ok(mut state) = self.state.lock() {
            state.user = Some(SessionUser { username, queue, device });
        }
    }

    /// Starts a new push subscription: ends the connection's earlier one
    /// (a connection has at most one) and returns the new one's end signal.
    pub(crate) fn replace_push(&self) -> CancellationToken {
        let ended = CancellationToken::new();
        let earlier = self.state.lock().ok().and_then(|mut state| state.push.replace(ended.clone()));
        if let Some(earlier) = earlier {
            earlier.cancel();
        }
        ended
    }

    /// The logged-in user and device, if any.
    pub(crate) fn user(&self) -> Option<SessionUser> {
        self.state.lock().ok().and_then(|state| state.user.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_is_single_use() {
        let session = Session::new([0; 32], ([127, 0, 0, 1], 1).into());
        assert_eq!(session.take_challenge(), None);
        let nonce = session.new_challenge();
        assert_eq!(nonce.len(), 32);
        assert_eq!(session.take_challenge(), Some(nonce));
        assert_eq!(session.take_challenge(), None);
        assert_eq!(session.user(), None);
        session.log_in("alice".into(), "alice#0102030405060708".into(), DeviceId::of_key(b"alice's device key"));
        let user = session.user().expect("logged in");
        assert_eq!(user.caller(), Caller { username: "alice", queue: "alice#0102030405060708" });
    }

    #[test]
    fn a_new_push_subscription_ends_the_earlier_one() {
        let session = Session::new([0; 32], ([127, 0, 0, 1], 1).into());
        let first = session.replace_push();
        let second = session.replace_push();
        assert!(first.is_cancelled());
        assert!(!second.is_cancelled());
    }
}
