//! Our users, as a peer server asks for them: `FedResolveUser` (a user's
//! account key, for the peer's users' `verify` and pins) and
//! `FedClaimKeyPackage` (key packages of a user's devices, so a user of the
//! peer can add them to a group), and the other way round, forwarding our
//! users' `ResolveUser` and `FetchKeyPackage` of `name@domain` to `domain`.
//!
//! A claim speaks for a user of the peer's domain (`requester` must be
//! `name@peer`, else `PERMISSION_DENIED`); it is budgeted per peer
//! (`rate_limits.key_package_claim_per_peer`), per requester and per target
//! as a local fetch is (past the target's budget the last-resort packages
//! are served), and serves only packages that name the user with this
//! server's domain: a bare name would read as a user of the group's hub.

use bytes::Bytes;
use prost::Message;
use quicprochat_core::names::split_qualified;
use quicprochat_core::DeviceId;
use quicprochat_proto::{v1, Method};

use super::inbound::check_addressing;
use super::peers::Peer;
use super::Federation;
use crate::clock::now_ms;
use crate::domain::commits::CommitPolicy;
use crate::domain::key_packages::{self, FetchFor, FetchedKeyPackage};
use crate::domain::DomainError;
use crate::rate_limit::{KeyPackageGrant, RetryAfter};
use crate::transport::dispatch::{blocking, Reply};
use crate::transport::ServerState;

fn decode<M: Message + Default>(body: &Bytes) -> Result<M, DomainError> {
    M::decode(body.clone()).map_err(|error| DomainError::invalid(format!("malformed request: {error}")))
}

/// A rate limit's refusal as the peer sees it.
fn limited(state: &ServerState, refusal: RetryAfter) -> DomainError {
    state.metrics.rate_limited(refusal.limit);
    DomainError::ResourceExhausted {
        message: format!("rate limit {} reached; retry in {:?}", refusal.limit, refusal.wait),
        retry_after_ms: refusal.retry_after_ms(),
    }
}

/// The name here of `username`, which a peer gives bare or with our domain.
fn local_name<'a>(username: &'a str, our_domain: &str) -> Result<&'a str, DomainError> {
    match split_qualified(username) {
        None => Ok(username),
        Some((name, domain)) if domain == our_domain => Ok(name),
        Some((_, domain)) => Err(DomainError::invalid(format!("{username} is a user of {domain}, not of this server"))),
    }
}

/// `FedResolveUser`: one of our users' account key.
pub(super) async fn resolve_user(
    state: &ServerState,
    federation: &Federation,
    peer: &Peer,
    body: &Bytes,
) -> Result<Reply, DomainError> {
    let request: v1::FedResolveUserRequest = decode(body)?;
    check_addressing(state, federation, peer, &request.origin, &request.destination)?;
    let name = local_name(&request.username, &federation.domain)?.to_owned();
    let identity_key = blocking(state, move |store| {
        let account = store.get_account(&name)?.filter(|account| !account.disabled);
        account
            .map(|account| account.identity_key)
            .ok_or_else(|| DomainError::not_found(format!("no user named {name:?}")))
    })
    .await?;
    Ok(Reply::ok(&v1::FedResolveUserResponse { identity_key: identity_key.into() }))
}

/// `FedClaimKeyPackage`: key packages of one of our users for a user of the peer.
pub(super) async fn claim_key_package(
    state: &ServerState,
    federation: &Federation,
    peer: &Peer,
    body: &Bytes,
) -> Result<Reply, DomainError> {
    let answer = serve_claim(state, federation, peer, body).await;
    let outcome = match &answer {
        Ok((_, true)) => "last_resort",
        Ok((_, false)) => "served",
        Err(_) => "refused",
    };
    federation.metrics().claim(&peer.config.domain, outcome);
    let (key_packages, last_resort) = answer?;
    Ok(Reply::ok(&v1::FedClaimKeyPackageResponse { key_packages, last_resort }))
}

/// The key packages a claim gets, and whether they are last-resort ones.
async fn serve_claim(
    state: &ServerState,
    federation: &Federation,
    peer: &Peer,
    body: &Bytes,
) -> Result<(Vec<Bytes>, bool), DomainError> {
    let request: v1::FedClaimKeyPackageRequest = decode(body)?;
    check_addressing(state, federation, peer, &request.origin, &request.destination)?;
    if split_qualified(&request.requester).is_none_or(|(_, domain)| domain != peer.config.domain) {
        federation.metrics().auth_failure("requester");
        return Err(DomainError::denied(format!(
            "{} speaks for users of {} only, not {:?}",
            peer.config.domain, peer.config.domain, request.requester
        )));
    }
    let target = local_name(&request.username, &federation.domain)?.to_owned();
    let device = match request.device_id.as_ref() {
        [] => None,
        bytes => Some(DeviceId::from_bytes(bytes).ok_or_else(|| DomainError::invalid("device_id must be 8 bytes"))?),
    };
    state.limiters.check_claim(&peer.config.domain).map_err(|refusal| limited(state, refusal))?;
    let grant = state
        .limiters
        .check_key_package_fetch(&request.requester, &target)
        .map_err(|refusal| limited(state, refusal))?;
    let policy = CommitPolicy::at(now_ms(), state.config.retention.as_secs());
    let (limiters, metrics) = (std::sync::Arc::clone(&state.limiters), state.metrics.clone());
    let (requester, home) = (request.requester, federation.domain.clone());
    let fetched: Vec<FetchedKeyPackage> = blocking(state, move |store| {
        let fetch = FetchFor { requester: &requester, target: &target, device, named_at: Some(&home) };
        let budget = || {
            limiters.check_last_resort(&requester, &target).map_err(|refusal| {
                metrics.rate_limited(refusal.limit);
                DomainError::ResourceExhausted {
                    message: format!("rate limit {} reached; retry in {:?}", refusal.limit, refusal.wait),
                    retry_after_ms: refusal.retry_after_ms(),
                }
            })
        };
        match grant {
            KeyPackageGrant::Ordinary => key_packages::fetch_for(store, &fetch, &policy, &budget),
            KeyPackageGrant::LastResortOnly { .. } => {
                key_packages::fetch_last_resort_for(store, &fetch, &policy, &budget)
            }
        }
    })
    .await?;
    let last_resort = fetched.first().is_some_and(|package| package.last_resort);
    Ok((fetched.into_iter().map(|package| package.key_package.into()).collect(), last_resort))
}

/// A user's account key from their home server `domain` (`ResolveUser` of
/// `name@domain` by one of our users).
pub(crate) async fn resolve_remote(state: &ServerState, name: &str, domain: &str) -> Result<Vec<u8>, DomainError> {
    let federation = remote(state, domain)?;
    let request = v1::FedResolveUserRequest {
        origin: federation.domain.clone(),
        destination: domain.to_owned(),
        username: name.to_owned(),
    };
    let answer: v1::FedResolveUserResponse = federation.call_peer(domain, Method::FedResolveUser, &request).await?;
    Ok(answer.identity_key.to_vec())
}

/// Key packages of `name`'s devices claimed at its home `domain` for our
/// user `requester` (`FetchKeyPackage` of `name@domain`); the last-resort
/// flag of the first.
pub(crate) async fn claim_remote(
    state: &ServerState,
    requester: &str,
    name: &str,
    domain: &str,
    device: Option<DeviceId>,
) -> Result<(Vec<Vec<u8>>, bool), DomainError> {
    let federation = remote(state, domain)?;
    let request = v1::FedClaimKeyPackageRequest {
        origin: federation.domain.clone(),
        destination: domain.to_owned(),
        requester: format!("{requester}@{}", federation.domain),
        username: name.to_owned(),
        device_id: device.map(|device| device.as_bytes().to_vec()).unwrap_or_default().into(),
    };
    let answer: v1::FedClaimKeyPackageResponse =
        federation.call_peer(domain, Method::FedClaimKeyPackage, &request).await?;
    if answer.key_packages.is_empty() {
        return Err(DomainError::not_found(format!("{name}@{domain} has no usable key package left")));
    }
    let packages: Vec<Vec<u8>> = answer.key_packages.into_iter().map(|package| package.to_vec()).collect();
    // Served to our user: one commit of theirs may add each (as a local fetch).
    let (requester, target, recorded) = (requester.to_owned(), format!("{name}@{domain}"), packages.clone());
    let (last_resort, policy) = (answer.last_resort, CommitPolicy::at(now_ms(), state.config.retention.as_secs()));
    blocking(state, move |store| {
        key_packages::record_claimed(store, &requester, &target, &recorded, last_resort, &policy)
    })
    .await?;
    Ok((packages, answer.last_resort))
}

/// The federation, to reach `domain`; `NOT_FOUND` when this server does not federate.
fn remote<'a>(state: &'a ServerState, domain: &str) -> Result<&'a Federation, DomainError> {
    state
        .federation
        .as_deref()
        .ok_or_else(|| DomainError::not_found(format!("this server does not federate, so it cannot reach {domain}")))
}
