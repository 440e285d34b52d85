//! Commits and leaves of a group another server hosts: a follower forwards
//! its user's `SubmitCommit` and `LeaveGroup` to the group's hub
//! synchronously (`FedSubmitCommit`, `FedLeaveGroup`), and the hub orders
//! them as its own users' (one commit per epoch: `STALE_EPOCH` and every
//! other answer pass through to the user; `UNAVAILABLE` while the hub cannot
//! be reached, which the client retries).
//!
//! The hub takes them only for a group it hosts, from a user of the calling
//! peer (`PERMISSION_DENIED` otherwise), naming the committing device, which
//! must be the leaf that signed the commit.
//!
//! Order: a user's messages go to the hub through the stream, their commits
//! around it. So that the hub sees them in the order the user sent them (a
//! message sent before a removal reaches the removed member), a commit or
//! leave is forwarded only once the hub acknowledged every stream entry
//! written before it ([`wait_for_stream`]; `UNAVAILABLE` if that takes
//! longer than [`STREAM_WAIT`], which the client retries).

use bytes::Bytes;
use prost::Message;
use quicprochat_core::names::{hub_of, split_qualified};
use quicprochat_core::DeviceId;
use quicprochat_proto::{v1, Method};

use super::inbound::check_addressing;
use super::peers::Peer;
use super::Federation;
use crate::domain::DomainError;
use crate::transport::dispatch::{accept_commit, accept_leave, blocking, CommitterOwned, Reply};
use crate::transport::session::SessionUser;
use crate::transport::ServerState;

fn decode<M: Message + Default>(body: &Bytes) -> Result<M, DomainError> {
    M::decode(body.clone()).map_err(|error| DomainError::invalid(format!("malformed request: {error}")))
}

/// Our federation, with our user `user`'s name there and the session's
/// device (checked current, as for a local commit).
async fn proxied<'a>(
    state: &'a ServerState,
    user: &SessionUser,
) -> Result<(&'a Federation, String, Vec<u8>), DomainError> {
    let federation = state.federation.as_deref().ok_or_else(|| {
        DomainError::invalid("the group is hosted by another server, and this server does not federate")
    })?;
    let session = user.clone();
    let device = blocking(state, move |store| {
        crate::domain::devices::session_device(store, session.caller())?;
        Ok(crate::domain::devices::current_device(store, session.caller())?.device_id)
    })
    .await?;
    Ok((federation, format!("{}@{}", user.username, federation.domain), device.as_bytes().to_vec()))
}

/// How long a commit waits for the stream to the hub to catch up.
const STREAM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until `hub` acknowledged every entry of our stream to it written
/// so far (the messages our users sent before this commit).
async fn wait_for_stream(state: &ServerState, federation: &Federation, hub: &str) -> Result<(), DomainError> {
    let peer = hub.to_owned();
    let written =
        blocking(state, move |store| Ok(store.fed_stream(&peer)?.map_or(0, |stream| stream.out_last))).await?;
    if written == 0 {
        return Ok(());
    }
    // A hub known down cannot catch up now: the user hears it at once.
    let caught_up_or_down = |status: &crate::transport::federation::PeerStatus| {
        status.acked_through >= written || (!status.reachable && status.last_error.is_some())
    };
    match federation.peers.wait_for(hub, STREAM_WAIT, caught_up_or_down).await {
        Some(status) if status.acked_through >= written => Ok(()),
        _ => Err(DomainError::Unavailable {
            message: format!("messages sent earlier have not reached {hub} yet; retry the change"),
            retry_after_ms: 0,
        }),
    }
}

/// Our user's commit to a group `hub` hosts; the new epoch.
pub(crate) async fn forward_commit(
    state: &ServerState,
    user: &SessionUser,
    hub: &str,
    request: v1::SubmitCommitRequest,
) -> Result<u64, DomainError> {
    let (federation, sender, sender_device) = proxied(state, user).await?;
    wait_for_stream(state, federation, hub).await?;
    let forwarded = v1::FedSubmitCommitRequest {
        origin: federation.domain.clone(),
        destination: hub.to_owned(),
        sender,
        sender_device: sender_device.into(),
        group_id: request.group_id,
        epoch: request.epoch,
        commit: request.commit,
        welcome: request.welcome,
        message_id: request.message_id,
    };
    let answer: v1::FedSubmitCommitResponse = federation.call_peer(hub, Method::FedSubmitCommit, &forwarded).await?;
    Ok(answer.epoch)
}

/// Our user's leave of a group `hub` hosts.
pub(crate) async fn forward_leave(
    state: &ServerState,
    user: &SessionUser,
    hub: &str,
    request: v1::LeaveGroupRequest,
) -> Result<(), DomainError> {
    let (federation, sender, sender_device) = proxied(state, user).await?;
    wait_for_stream(state, federation, hub).await?;
    let forwarded = v1::FedLeaveGroupRequest {
        origin: federation.domain.clone(),
        destination: hub.to_owned(),
        sender,
        sender_device: sender_device.into(),
        group_id: request.group_id,
        proposal: request.proposal,
        message_id: request.message_id,
    };
    let _: v1::FedLeaveGroupResponse = federation.call_peer(hub, Method::FedLeaveGroup, &forwarded).await?;
    Ok(())
}

/// The remote committer of a proxied request, once its binding is checked.
fn remote_committer(
    federation: &Federation,
    peer: &Peer,
    (sender, device, group_id): (&str, &[u8], &[u8]),
) -> Result<CommitterOwned, DomainError> {
    if hub_of(group_id) != Some(federation.domain.as_str()) {
        federation.metrics().auth_failure("not_hub");
        return Err(DomainError::denied("this server does not host that group"));
    }
    if split_qualified(sender).is_none_or(|(_, domain)| domain != peer.config.domain) {
        federation.metrics().auth_failure("sender");
        return Err(DomainError::denied(format!(
            "{} speaks for its own users only, not {sender:?}",
            peer.config.domain
        )));
    }
    let device = DeviceId::from_bytes(device).ok_or_else(|| DomainError::invalid("sender_device must be 8 bytes"))?;
    Ok(CommitterOwned::Remote { user: sender.to_owned(), device })
}

/// `FedSubmitCommit` at the hub.
pub(super) async fn submit_commit(
    state: &ServerState,
    federation: &Federation,
    peer: &Peer,
    body: &Bytes,
) -> Result<Reply, DomainError> {
    let request: v1::FedSubmitCommitRequest = decode(body)?;
    check_addressing(state, federation, peer, &request.origin, &request.destination)?;
    let committer = remote_committer(federation, peer, (&request.sender, &request.sender_device, &request.group_id))?;
    let submit = v1::SubmitCommitRequest {
        group_id: request.group_id,
        epoch: request.epoch,
        commit: request.commit,
        welcome: request.welcome,
        message_id: request.message_id,
    };
    let epoch = accept_commit(state, committer, submit).await?;
    Ok(Reply::ok(&v1::FedSubmitCommitResponse { epoch }))
}

/// `FedLeaveGroup` at the hub.
pub(super) async fn leave_group(
    state: &ServerState,
    federation: &Federation,
    peer: &Peer,
    body: &Bytes,
) -> Result<Reply, DomainError> {
    let request: v1::FedLeaveGroupRequest = decode(body)?;
    check_addressing(state, federation, peer, &request.origin, &request.destination)?;
    let committer = remote_committer(federation, peer, (&request.sender, &request.sender_device, &request.group_id))?;
    let leave = v1::LeaveGroupRequest {
        group_id: request.group_id,
        proposal: request.proposal,
        message_id: request.message_id,
    };
    accept_leave(state, committer, leave).await?;
    Ok(Reply::ok(&v1::FedLeaveGroupResponse {}))
}
