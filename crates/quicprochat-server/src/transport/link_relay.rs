//! The link relay: pending device links, filed under their link ids. A new
//! device (not logged in) starts a link and waits on it; a logged-in device
//! of the account fetches it and approves it with a sealed bundle (see
//! docs/design/devices.md and `quicprochat_core::link`).
//!
//! The relay holds only what the server may see: the new device's public
//! keys, its label, a MAC under a secret the server never learns, and the
//! bundle sealed to the new device. It lives in memory: a link lasts
//! minutes (`devices.link_code_ttl`), and after a restart the new device
//! starts again. At most [`MAX_PENDING_LINKS`] links are pending at once
//! (expired ones are dropped first), so the relay's memory is bounded; the
//! per-address `link_per_address` rate limit keeps one client from taking
//! them all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use quicprochat_core::link::LinkRequest;
use tokio::sync::Notify;

use crate::domain::DomainError;

/// Links pending at once, across all clients (each about 1.5 KB).
pub(crate) const MAX_PENDING_LINKS: usize = 10_000;

/// Length of a link id.
pub(crate) const LINK_ID_LEN: usize = quicprochat_core::link::LINK_ID_LEN;

/// Largest sealed bundle the relay keeps.
pub(crate) const MAX_SEALED_LEN: usize = quicprochat_core::link::MAX_SEALED_BUNDLE_LEN;

/// Sealed bundle bytes the relay holds at once, across all links.
pub(crate) const MAX_APPROVED_BYTES: usize = 32 * 1024 * 1024;

/// What the new device published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartedLink {
    /// The new device's keys and label, as the approving device checks them.
    pub(crate) request: LinkRequest,
    pub(crate) mac: Vec<u8>,
    /// SHA-256 of the proof the new device shows when it waits.
    pub(crate) wait_proof_hash: Vec<u8>,
}

/// What the approving device left for the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Approval {
    pub(crate) username: String,
    pub(crate) sealed: Vec<u8>,
}

struct PendingLink {
    started: StartedLink,
    expires_at: Instant,
    approval: Option<Approval>,
    approved: Arc<Notify>,
}

/// Every pending link; share one (it is `Sync`).
pub(crate) struct LinkRelay {
    links: Mutex<HashMap<[u8; LINK_ID_LEN], PendingLink>>,
    ttl: Duration,
}

fn link_id(bytes: &[u8]) -> Result<[u8; LINK_ID_LEN], DomainError> {
    bytes.try_into().map_err(|_| DomainError::invalid(format!("a link id is {LINK_ID_LEN} bytes")))
}

fn not_found() -> DomainError {
    DomainError::not_found("no pending link with this code: it expired, was used, or never existed; start again")
}

impl LinkRelay {
    pub(crate) fn new(ttl: Duration) -> LinkRelay {
        LinkRelay { links: Mutex::new(HashMap::new()), ttl }
    }

    fn links(&self) -> Result<MutexGuard<'_, HashMap<[u8; LINK_ID_LEN], PendingLink>>, DomainError> {
        self.links.lock().map_err(|_| DomainError::Internal { detail: "link relay lock poisoned".into() })
    }

    /// Files a new link under `id`; returns when it expires.
    pub(crate) fn start(&self, id: &[u8], started: StartedLink, now: Instant) -> Result<Instant, DomainError> {
        let id = link_id(id)?;
        let mut links = self.links()?;
        links.retain(|_, link| link.expires_at > now);
        if links.contains_key(&id) {
            return Err(DomainError::AlreadyExists { message: "this link id is in use; make a new code".into() });
        }
        // One pending link per device key: approvals need the key registered
        // on the approver's account, so the bundles held stay few per account.
        if links.values().any(|link| link.started.request.device_key == started.request.device_key) {
            return Err(DomainError::AlreadyExists { message: "a link for this device key is pending already".into() });
        }
        if links.len() >= MAX_PENDING_LINKS {
            return Err(DomainError::Unavailable {
                message: "too many device links are pending; retry in a minute".into(),
                retry_after_ms: 60_000,
            });
        }
        let expires_at = now + self.ttl;
        let approved = Arc::new(Notify::new());
        links.insert(id, PendingLink { started, expires_at, approval: None, approved });
        Ok(expires_at)
    }

    /// The new device's published keys, for the device about to approve.
    pub(crate) fn fetch(&self, id: &[u8], now: Instant) -> Result<StartedLink, DomainError> {
        let id = link_id(id)?;
        let links = self.links()?;
        match links.get(&id) {
            Some(link) if link.expires_at > now && link.approval.is_none() => Ok(link.started.clone()),
            _ => Err(not_found()),
        }
    }

    /// Leaves `approval` for the new device, once.
    pub(crate) fn approve(&self, id: &[u8], approval: Approval, now: Instant) -> Result<(), DomainError> {
        let id = link_id(id)?;
        if approval.sealed.len() > MAX_SEALED_LEN {
            return Err(DomainError::invalid(format!("a sealed bundle is at most {MAX_SEALED_LEN} bytes")));
        }
        let mut links = self.links()?;
        let held: usize = links
            .values()
            .filter(|link| link.expires_at > now)
            .filter_map(|link| link.approval.as_ref())
            .map(|approval| approval.sealed.len())
            .sum();
        if held + approval.sealed.len() > MAX_APPROVED_BYTES {
            return Err(DomainError::Unavailable {
                message: "the link relay is full; retry in a minute".into(),
                retry_after_ms: 60_000,
            });
        }
        let link = links.get_mut(&id).filter(|link| link.expires_at > now).ok_or_else(not_found)?;
        if link.approval.is_some() {
            return Err(DomainError::AlreadyExists { message: "this link was approved already".into() });
        }
        link.approval = Some(approval);
        link.approved.notify_waiters();
        Ok(())
    }

    /// The device key the link was started with (for the approval's
    /// checks), approved or not.
    pub(crate) fn device_key(&self, id: &[u8], now: Instant) -> Result<Vec<u8>, DomainError> {
        let id = link_id(id)?;
        let links = self.links()?;
        let link = links.get(&id).filter(|link| link.expires_at > now).ok_or_else(not_found)?;
        Ok(link.started.request.device_key.clone())
    }

    /// Waits up to `timeout` for the link's approval; hands it over once
    /// (the link is then gone) to whoever shows the proof whose hash the link
    /// was started with. `None` when it is still pending.
    pub(crate) async fn wait(
        &self,
        id: &[u8],
        proof: &[u8],
        timeout: Duration,
    ) -> Result<Option<Approval>, DomainError> {
        let id = link_id(id)?;
        let proof_hash = quicprochat_core::link::proof_hash(proof);
        {
            let links = self.links()?;
            let link = links.get(&id).ok_or_else(not_found)?;
            if link.started.wait_proof_hash != proof_hash {
                return Err(DomainError::denied("this is not the device that started the link"));
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let approved = {
                let mut links = self.links()?;
                let link = links.get(&id).filter(|link| link.expires_at > Instant::now()).ok_or_else(not_found)?;
                if link.approval.is_some() {
                    return Ok(links.remove(&id).and_then(|link| link.approval));
                }
                Arc::clone(&link.approved)
            };
            // Registered before the next check, so an approval in between is not missed.
            let notified = approved.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.links()?.get(&id).is_some_and(|link| link.approval.is_some()) {
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn started() -> StartedLink {
        StartedLink {
            request: LinkRequest { device_key: vec![1; 32], link_key: vec![2; 1216], label: "phone".into() },
            mac: vec![3; 32],
            wait_proof_hash: quicprochat_core::link::proof_hash(PROOF),
        }
    }

    const ID: [u8; LINK_ID_LEN] = [7; LINK_ID_LEN];
    const PROOF: &[u8] = b"the new device's proof";

    #[tokio::test]
    async fn a_link_is_fetched_approved_once_and_handed_over_once() {
        let relay = LinkRelay::new(Duration::from_secs(600));
        let now = Instant::now();
        relay.start(&ID, started(), now).unwrap();
        assert_eq!(relay.start(&ID, started(), now).unwrap_err().status_name(), "ALREADY_EXISTS");
        let same_key = relay.start(&[6; LINK_ID_LEN], started(), now).unwrap_err();
        assert_eq!(same_key.status_name(), "ALREADY_EXISTS", "one pending link per device key");
        assert_eq!(relay.fetch(&ID, now).unwrap(), started());
        assert_eq!(relay.wait(&ID, PROOF, Duration::from_millis(1)).await.unwrap(), None, "still pending");
        let stranger = relay.wait(&ID, b"a guess", Duration::from_millis(1)).await.unwrap_err();
        assert_eq!(stranger.status_name(), "PERMISSION_DENIED", "only the device that started it");

        let waiting = relay.wait(&ID, PROOF, Duration::from_secs(30));
        let approval = Approval { username: "alice".into(), sealed: vec![9; 100] };
        let approve = async {
            tokio::task::yield_now().await;
            relay.approve(&ID, approval.clone(), now).unwrap();
        };
        let (handed, ()) = tokio::join!(waiting, approve);
        assert_eq!(handed.unwrap(), Some(approval.clone()));
        assert_eq!(relay.approve(&ID, approval, now).unwrap_err().status_name(), "NOT_FOUND", "used up");
        assert_eq!(relay.wait(&ID, PROOF, Duration::from_millis(1)).await.unwrap_err().status_name(), "NOT_FOUND");
    }

    #[tokio::test]
    async fn a_link_is_approved_only_once_and_expires() {
        let relay = LinkRelay::new(Duration::from_secs(600));
        let now = Instant::now();
        relay.start(&ID, started(), now).unwrap();
        let approval = Approval { username: "alice".into(), sealed: vec![9; 10] };
        relay.approve(&ID, approval.clone(), now).unwrap();
        assert_eq!(relay.approve(&ID, approval.clone(), now).unwrap_err().status_name(), "ALREADY_EXISTS");
        assert_eq!(relay.fetch(&ID, now).unwrap_err().status_name(), "NOT_FOUND", "approved links are not shown");

        let later = now + Duration::from_secs(601);
        let other = [8; LINK_ID_LEN];
        let mut other_device = started();
        other_device.request.device_key = vec![4; 32];
        relay.start(&other, other_device, now).unwrap();
        assert_eq!(relay.fetch(&other, later).unwrap_err().status_name(), "NOT_FOUND", "expired");
        assert_eq!(relay.approve(&other, approval, later).unwrap_err().status_name(), "NOT_FOUND");
        assert_eq!(relay.start(&[1, 2], started(), now).unwrap_err().status_name(), "INVALID_ARGUMENT");
        let huge = Approval { username: "alice".into(), sealed: vec![0; MAX_SEALED_LEN + 1] };
        let mut fifth = started();
        fifth.request.device_key = vec![5; 32];
        relay.start(&[5; LINK_ID_LEN], fifth, now).unwrap();
        assert_eq!(relay.approve(&[5; LINK_ID_LEN], huge, now).unwrap_err().status_name(), "INVALID_ARGUMENT");
    }
}
