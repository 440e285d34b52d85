//! Decodes each method's request, runs the domain against the store, and
//! encodes the reply. Sends and acks, the bulk of the traffic, run as jobs
//! on the storage executor (batched, no thread blocked per request); the
//! rest runs on a blocking thread (the store is synchronous), and so do
//! commits, whose validation is too heavy to hold up a batch.
//!
//! Every method except `Challenge`, `Ping`, `Register` and `Login` needs a
//! logged-in session. Domain errors map 1:1 onto status codes.

use crate::clock::now_ms;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use prost::Message;
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};

use quicprochat_core::device::DEVICE_ID_LEN;
use quicprochat_core::link::LinkRequest;
use quicprochat_core::names::{hub_of, split_qualified};
use quicprochat_core::DeviceId;

use super::federation::{self, claims};
use super::link_relay::{Approval, StartedLink};
use super::sending;
use super::session::{Session, SessionUser};
use super::{Mailboxes, ServerState};
use crate::config::GateHook;
use crate::domain::accounts::AuthProof;
use crate::domain::commits::{CommitPolicy, LeaveGroup, SubmitCommit};
use crate::domain::devices::{self, AddDevice};
use crate::domain::groups::CreateGroup;
use crate::domain::snapshots::{self, ViewSource};
use crate::domain::{accounts, commits, delivery, groups, key_packages, DomainError};
use crate::plugins::{CommitMeta, GateEvent, GroupCreateMeta, LoginMeta, ObservedEvent, RegisterMeta, StoredMeta};
use crate::rate_limit::{KeyPackageGrant, RetryAfter, KEY_PACKAGE_FETCH_PER_TARGET};
use crate::storage::{EntryKind, GroupKind, QueueItem, Store, StoreError, TimedStore};

/// The answer to one RPC.
pub(crate) struct Reply {
    pub(crate) status: Status,
    pub(crate) body: Bytes,
    /// Set by a successful `Subscribe`: start pushing after this seq.
    pub(crate) subscribe_from: Option<u64>,
}

impl Reply {
    pub(crate) fn ok(message: &impl Message) -> Reply {
        Reply { status: Status::Ok, body: Bytes::from(message.encode_to_vec()), subscribe_from: None }
    }

    /// The retryable `UNAVAILABLE` every request gets once shutdown began.
    pub(crate) fn shutting_down() -> Reply {
        let draining = DomainError::Unavailable { message: "server shutting down".into(), retry_after_ms: 1000 };
        Reply::from_domain(&draining)
    }

    /// An error reply with a human message.
    pub(crate) fn error(status: Status, message: &str) -> Reply {
        Reply { status, body: super::connection::error_body(message), subscribe_from: None }
    }

    pub(crate) fn from_domain(error: &DomainError) -> Reply {
        if let DomainError::Internal { detail } = error {
            tracing::error!(%detail, "internal error");
        }
        let body = error_body(error);
        Reply { status: error.status(), body: Bytes::from(body.encode_to_vec()), subscribe_from: None }
    }
}

/// The body of an error answer: the client's message and the hints.
pub(crate) fn error_body(error: &DomainError) -> v1::ErrorBody {
    v1::ErrorBody {
        message: error.client_message(),
        retry_after_ms: error.retry_after_ms(),
        current_epoch: error.current_epoch(),
    }
}

/// Runs `work` against the store on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &ServerState,
    work: impl FnOnce(&dyn Store) -> Result<T, DomainError> + Send + 'static,
) -> Result<T, DomainError> {
    let store = Arc::clone(&state.store);
    let timeout = state.config.storage_timeout;
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || work(&*store))).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(DomainError::Internal { detail: format!("storage task failed: {join}") }),
        Err(_) => Err(storage_timed_out(timeout)),
    }
}

/// The storage deadline passed. The write may still complete; every
/// mutating request is idempotent on its message id, so a retry is safe.
fn storage_timed_out(timeout: std::time::Duration) -> DomainError {
    DomainError::Unavailable { message: format!("storage did not answer within {timeout:?}"), retry_after_ms: 100 }
}

/// Runs `work` as a job on the storage executor and returns its result
/// once its writes are durable. `after` runs on the executor right after
/// that, with the value, so an RPC deadline passing meanwhile cannot skip it.
pub(crate) async fn durably<T: Send + 'static>(
    state: &ServerState,
    work: impl FnOnce(&dyn Store) -> Result<T, DomainError> + Send + 'static,
    after: impl FnOnce(&T) + Send + 'static,
) -> Result<T, DomainError> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let metrics = state.metrics.clone();
    state.executor.submit(Box::new(move |store| {
        // The caller gave up (its deadline passed): it was told to retry,
        // so the work need not be done.
        if answer.is_closed() {
            return Box::new(|_| {});
        }
        let result = work(&TimedStore::new(store, metrics));
        Box::new(move |durable: Result<(), StoreError>| {
            // A failed batch wins over the job's own answer: the job read
            // state of the batch that was rolled back.
            let result = match durable {
                Ok(()) => result,
                Err(error) => Err(DomainError::from(error)),
            };
            if let Ok(value) = &result {
                after(value);
            }
            let _ = answer.send(result);
        })
    }));
    let timeout = state.config.storage_timeout;
    match tokio::time::timeout(timeout, answered).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(DomainError::Internal { detail: "the storage thread dropped a request".into() }),
        Err(_) => Err(storage_timed_out(timeout)),
    }
}

/// Handles one request body for `method`.
pub(crate) async fn dispatch(state: &ServerState, session: &Session, method: Method, body: Bytes) -> Reply {
    if state.shutdown.is_cancelled() {
        return Reply::shutting_down();
    }
    let result = match method {
        Method::Challenge => Ok(Reply::ok(&v1::ChallengeResponse { nonce: session.new_challenge().into() })),
        Method::Ping => Ok(Reply::ok(&v1::PingResponse { server_time_ms: now_ms() })),
        Method::Register => register(state, session, body).await,
        Method::Login => login(state, session, body).await,
        Method::LinkStart => link_start(state, session, body),
        Method::LinkWait => link_wait(state, body).await,
        method if method.is_federation() => Err(DomainError::InvalidArgument {
            message: format!("{method} is a federation method, served on the federation port only"),
        }),
        _ => match session.user() {
            None => Err(DomainError::Unauthenticated { message: "log in first".into() }),
            Some(user) => authenticated(state, user, method, body).await,
        },
    };
    result.unwrap_or_else(|error| Reply::from_domain(&error))
}

pub(super) fn decode<M: Message + Default>(body: &Bytes) -> Result<M, DomainError> {
    M::decode(body.clone())
        .map_err(|error| DomainError::InvalidArgument { message: format!("malformed request: {error}") })
}

fn take_challenge(session: &Session) -> Result<Vec<u8>, DomainError> {
    session
        .take_challenge()
        .ok_or_else(|| DomainError::Unauthenticated { message: "ask for a challenge first (it is single-use)".into() })
}

/// What the server requires of commits and served key packages now.
fn commit_policy(state: &ServerState) -> CommitPolicy {
    CommitPolicy::at(now_ms(), state.config.retention.as_secs())
}

/// Turns a rate-limit refusal into `RESOURCE_EXHAUSTED` with a retry-after hint.
pub(super) fn limited(state: &ServerState, refusal: RetryAfter) -> DomainError {
    state.metrics.rate_limited(refusal.limit);
    refused(refusal)
}

/// The error a rate limit's refusal is answered with.
fn refused(refusal: RetryAfter) -> DomainError {
    DomainError::ResourceExhausted {
        message: format!("rate limit {} reached; retry in {:?}", refusal.limit, refusal.wait),
        retry_after_ms: refusal.retry_after_ms(),
    }
}

/// A new device files a link (no session needed; limited per address).
fn link_start(state: &ServerState, session: &Session, body: Bytes) -> Result<Reply, DomainError> {
    let request: v1::LinkStartRequest = decode(&body)?;
    state.limiters.check_link(session.remote.ip()).map_err(|refusal| limited(state, refusal))?;
    let published = LinkRequest {
        device_key: request.device_key.to_vec(),
        link_key: request.link_key.to_vec(),
        label: request.label,
    };
    published.check_form().map_err(|error| DomainError::invalid(error.to_string()))?;
    if request.mac.len() != 32 || request.wait_proof_hash.len() != 32 {
        return Err(DomainError::invalid("a link MAC and a wait proof hash are 32 bytes each"));
    }
    let started = StartedLink {
        request: published,
        mac: request.mac.to_vec(),
        wait_proof_hash: request.wait_proof_hash.to_vec(),
    };
    let now = Instant::now();
    let expires_at = state.links.start(&request.link_id, started, now)?;
    let expires_in_ms = u64::try_from(expires_at.duration_since(now).as_millis()).unwrap_or(u64::MAX);
    Ok(Reply::ok(&v1::LinkStartResponse { expires_in_ms }))
}

/// The new device waits for its link's approval, up to half the RPC deadline.
async fn link_wait(state: &ServerState, body: Bytes) -> Result<Reply, DomainError> {
    let request: v1::LinkWaitRequest = decode(&body)?;
    let response = match state.links.wait(&request.link_id, &request.proof, state.config.rpc_timeout / 2).await? {
        Some(approval) => {
            v1::LinkWaitResponse { approved: true, username: approval.username, sealed: approval.sealed.into() }
        }
        None => v1::LinkWaitResponse::default(),
    };
    Ok(Reply::ok(&response))
}

async fn register(state: &ServerState, session: &Session, body: Bytes) -> Result<Reply, DomainError> {
    let request: v1::RegisterRequest = decode(&body)?;
    state.limiters.check_register(session.remote.ip()).map_err(|refusal| limited(state, refusal))?;
    let policy = state.config.registration;
    let nonce = take_challenge(session)?;
    if state.plugins.has_gate(GateHook::Register) {
        // Plugins see only names the server would accept.
        accounts::validate_username(&request.username)?;
        let meta = RegisterMeta {
            username: request.username.clone(),
            key_fingerprint: fingerprint(&request.identity_key),
            source_address: session.remote.ip().to_string(),
            invite_used: !request.invite_token.is_empty(),
        };
        state.plugins.gate(GateEvent::Register(meta)).await?;
    }
    let exporter = session.exporter;
    let now = now_ms();
    let account = blocking(state, move |store| {
        let proof = AuthProof { nonce: &nonce, tls_exporter: &exporter, signature: &request.signature };
        let registration = accounts::Registration {
            username: &request.username,
            identity_key: &request.identity_key,
            proof,
            invite_token: Some(&request.invite_token),
        };
        accounts::register(store, policy, &registration, now)
    })
    .await?;
    tracing::info!(user = %account.username, "registered");
    // Registration makes the account's first device, keyed by the account key.
    let device = DeviceId::of_key(&account.identity_key);
    session.log_in(account.username.clone(), account.username.clone(), device);
    let domain = state.config.federation_domain().unwrap_or_default().to_owned();
    Ok(Reply::ok(&v1::RegisterResponse {
        username: account.username,
        domain,
        max_send_messages: state.config.max_send_burst,
    }))
}

async fn login(state: &ServerState, session: &Session, body: Bytes) -> Result<Reply, DomainError> {
    let request: v1::LoginRequest = decode(&body)?;
    let nonce = take_challenge(session)?;
    let exporter = session.exporter;
    let username = request.username.clone();
    let policy = commit_policy(state);
    let outcome = blocking(state, move |store| {
        let proof = AuthProof { nonce: &nonce, tls_exporter: &exporter, signature: &request.signature };
        accounts::login(store, &request.username, &request.device_key, &proof, &policy)
    })
    .await?;
    if state.plugins.has_gate(GateHook::Login) {
        // Asked once the device proved its key: plugins see real logins only.
        let meta = LoginMeta {
            username: username.clone(),
            device_id: DeviceId::of_key(&outcome.device_key).as_bytes().to_vec(),
            key_fingerprint: fingerprint(&outcome.device_key),
            source_address: session.remote.ip().to_string(),
        };
        state.plugins.gate(GateEvent::Login(meta)).await?;
    }
    session.log_in(username, outcome.queue.clone(), DeviceId::of_key(&outcome.device_key));
    Ok(Reply::ok(&v1::LoginResponse {
        key_package_stock: u32::try_from(outcome.key_package_stock.count).unwrap_or(u32::MAX),
        has_last_resort: outcome.key_package_stock.has_last_resort,
        server_instance: state.instance,
        domain: state.config.federation_domain().unwrap_or_default().to_owned(),
        max_send_messages: state.config.max_send_burst,
    }))
}

async fn authenticated(
    state: &ServerState,
    user: SessionUser,
    method: Method,
    body: Bytes,
) -> Result<Reply, DomainError> {
    match method {
        Method::ResolveUser => {
            let mut request: v1::ResolveUserRequest = decode(&body)?;
            match remote_user(state, &request.username) {
                UserAt::Remote { name, domain } => {
                    let identity_key = claims::resolve_remote(state, name, domain).await?;
                    let username = request.username.clone();
                    return Ok(Reply::ok(&v1::ResolveUserResponse { username, identity_key: identity_key.into() }));
                }
                UserAt::Here(name) => request.username = name,
            }
            let resolved =
                blocking(state, move |store| accounts::resolve_user(store, user.caller(), &request.username)).await?;
            Ok(Reply::ok(&v1::ResolveUserResponse {
                username: resolved.username,
                identity_key: resolved.identity_key.into(),
            }))
        }
        Method::UploadKeyPackages => {
            // Counted on the wire first: decoding allocates every package
            // (an empty one is 2 bytes there).
            quicprochat_proto::shape::count_field(&body, 1, key_packages::MAX_UPLOAD, "key packages per upload")
                .map_err(|error| DomainError::invalid(error.to_string()))?;
            let request: v1::UploadKeyPackagesRequest = decode(&body)?;
            let home = state.config.federation_domain().map(str::to_owned);
            let report = blocking(state, move |store| {
                let packages: Vec<Vec<u8>> = request.key_packages.iter().map(|package| package.to_vec()).collect();
                let last_resort = (!request.last_resort.is_empty()).then_some(request.last_resort.as_ref());
                key_packages::upload(store, user.caller(), &packages, last_resort, home.as_deref())
            })
            .await?;
            Ok(Reply::ok(&v1::UploadKeyPackagesResponse { stock: report.stock, low_water: report.low_water }))
        }
        Method::FetchKeyPackage => fetch_key_package(state, user, body).await,
        Method::KeyPackageStock => {
            let policy = commit_policy(state);
            let report = blocking(state, move |store| key_packages::stock(store, user.caller(), &policy)).await?;
            Ok(Reply::ok(&v1::KeyPackageStockResponse {
                stock: report.stock,
                low_water: report.low_water,
                has_last_resort: report.has_last_resort,
            }))
        }
        Method::CreateGroup => {
            let request: v1::CreateGroupRequest = decode(&body)?;
            let kind = match v1::GroupKind::try_from(request.kind) {
                Ok(v1::GroupKind::Named) => GroupKind::Named,
                Ok(v1::GroupKind::Direct) => GroupKind::Direct,
                Err(_) => return Err(DomainError::InvalidArgument { message: "unknown group kind".into() }),
            };
            state.limiters.check_create_group(&user.username).map_err(|refusal| limited(state, refusal))?;
            if state.plugins.has_gate(GateHook::GroupCreate) {
                let meta = GroupCreateMeta {
                    direct: kind == GroupKind::Direct,
                    creator: user.username.clone(),
                    group_id: request.group_id.to_vec(),
                    name: request.name.clone(),
                };
                state.plugins.gate(GateEvent::GroupCreate(meta)).await?;
            }
            let now = now_ms();
            let home = state.config.federation_domain().map(str::to_owned);
            let epoch = blocking(state, move |store| {
                let create = CreateGroup {
                    group_id: &request.group_id,
                    name: &request.name,
                    kind,
                    group_info: &request.group_info,
                    ratchet_tree: &request.ratchet_tree,
                    home: home.as_deref(),
                };
                groups::create_group(store, user.caller(), &create, now)
            })
            .await?;
            Ok(Reply::ok(&v1::CreateGroupResponse { epoch }))
        }
        Method::SubmitCommit => {
            state.limiters.check_commit(&user.username).map_err(|refusal| limited(state, refusal))?;
            submit_commit(state, user, body).await
        }
        Method::LeaveGroup => {
            state.limiters.check_commit(&user.username).map_err(|refusal| limited(state, refusal))?;
            leave_group(state, user, body).await
        }
        Method::SendMessage => sending::send_message(state, user, body).await,
        Method::SendMessages => sending::send_messages(state, user, body).await,
        Method::GroupMembers => {
            let request: v1::GroupMembersRequest = decode(&body)?;
            let roster = blocking(state, move |store| groups::members(store, user.caller(), &request.group_id)).await?;
            Ok(Reply::ok(&v1::GroupMembersResponse { name: roster.name, epoch: roster.epoch, members: roster.members }))
        }
        Method::Fetch => {
            let request: v1::FetchRequest = decode(&body)?;
            let queue =
                blocking(state, move |store| delivery::fetch(store, user.caller(), request.after_seq, request.limit))
                    .await?;
            Ok(Reply::ok(&v1::FetchResponse {
                entries: queue.items.into_iter().map(queue_entry).collect(),
                head_seq: queue.head_seq,
            }))
        }
        Method::Ack => {
            let request: v1::AckRequest = decode(&body)?;
            let ack = move |store: &dyn Store| delivery::ack(store, user.caller(), request.up_to_seq);
            let deleted = durably(state, ack, |_| {}).await?;
            Ok(Reply::ok(&v1::AckResponse { deleted: u32::try_from(deleted).unwrap_or(u32::MAX) }))
        }
        Method::Subscribe => {
            let request: v1::SubscribeRequest = decode(&body)?;
            blocking(state, move |store| delivery::may_subscribe(store, user.caller())).await?;
            let mut reply = Reply::ok(&v1::SubscribeResponse {});
            reply.subscribe_from = Some(request.after_seq);
            Ok(reply)
        }
        Method::AddDevice => {
            let request: v1::AddDeviceRequest = decode(&body)?;
            let (max, now) = (u64::from(state.config.max_devices_per_account), now_ms());
            let device_id = blocking(state, move |store| {
                let add = AddDevice {
                    device_key: &request.device_key,
                    certificate: &request.certificate,
                    label: &request.label,
                };
                devices::add_device(store, user.caller(), &add, max, now)
            })
            .await?;
            Ok(Reply::ok(&v1::AddDeviceResponse { device_id: device_id.as_bytes().to_vec().into() }))
        }
        Method::ListDevices => {
            let _: v1::ListDevicesRequest = decode(&body)?;
            let list = blocking(state, move |store| devices::list_devices(store, user.caller())).await?;
            let devices = list
                .into_iter()
                .map(|device| v1::DeviceInfo {
                    device_id: device.device_id.as_bytes().to_vec().into(),
                    device_key: device.device_key.into(),
                    certificate: device.certificate.unwrap_or_default().into(),
                    label: device.label,
                    created_at_ms: device.created_at_ms,
                })
                .collect();
            Ok(Reply::ok(&v1::ListDevicesResponse { devices }))
        }
        Method::RemoveDevice => {
            let request: v1::RemoveDeviceRequest = decode(&body)?;
            let now = now_ms();
            let removed =
                blocking(state, move |store| devices::remove_device(store, user.caller(), &request.device_id, now))
                    .await?;
            // Its push tasks end now; its other requests are refused from now on.
            state.mailboxes.end_queue(&removed);
            Ok(Reply::ok(&v1::RemoveDeviceResponse {}))
        }
        Method::LinkFetch => {
            let request: v1::LinkFetchRequest = decode(&body)?;
            let session = user.clone();
            blocking(state, move |store| devices::require_current_device(store, session.caller())).await?;
            let StartedLink { request: published, mac, .. } = state.links.fetch(&request.link_id, Instant::now())?;
            Ok(Reply::ok(&v1::LinkFetchResponse {
                device_key: published.device_key.into(),
                link_key: published.link_key.into(),
                label: published.label,
                mac: mac.into(),
            }))
        }
        Method::LinkApprove => {
            let request: v1::LinkApproveRequest = decode(&body)?;
            let device_key = state.links.device_key(&request.link_id, Instant::now())?;
            let approver = user.clone();
            blocking(state, move |store| devices::check_link_approval(store, approver.caller(), &device_key)).await?;
            let approval = Approval { username: user.username, sealed: request.sealed.to_vec() };
            state.links.approve(&request.link_id, approval, Instant::now())?;
            Ok(Reply::ok(&v1::LinkApproveResponse {}))
        }
        Method::Challenge
        | Method::Register
        | Method::Login
        | Method::Ping
        | Method::Push
        | Method::LinkStart
        | Method::LinkWait
        | Method::FedHello
        | Method::FedPush
        | Method::FedSubmitCommit
        | Method::FedLeaveGroup
        | Method::FedClaimKeyPackage
        | Method::FedResolveUser => {
            Err(DomainError::InvalidArgument { message: format!("{method} is not callable here") })
        }
    }
}

/// Where a user named in a request lives.
enum UserAt<'a> {
    /// Here, under this (bare) name.
    Here(String),
    /// At the home server `domain`, as `name`.
    Remote { name: &'a str, domain: &'a str },
}

/// `name@domain` of another server is remote; `name` and `name@<our
/// domain>` are ours.
fn remote_user<'a>(state: &ServerState, username: &'a str) -> UserAt<'a> {
    match split_qualified(username) {
        Some((name, domain)) if state.config.federation_domain() == Some(domain) => UserAt::Here(name.to_owned()),
        Some((name, domain)) => UserAt::Remote { name, domain },
        None => UserAt::Here(username.to_owned()),
    }
}

/// `FetchKeyPackage`: one package per current device of the target (or of
/// the device named), the first also in the fields old clients read.
async fn fetch_key_package(state: &ServerState, user: SessionUser, body: Bytes) -> Result<Reply, DomainError> {
    let mut request: v1::FetchKeyPackageRequest = decode(&body)?;
    let device = match request.device_id.as_ref() {
        [] => None,
        bytes => Some(DeviceId::from_bytes(bytes).ok_or_else(|| {
            DomainError::invalid(format!("device_id is empty or {DEVICE_ID_LEN} bytes, got {}", bytes.len()))
        })?),
    };
    match remote_user(state, &request.username) {
        UserAt::Remote { name, domain } => {
            // Our requester's own budget first; the target's home budgets the rest.
            state
                .limiters
                .check_key_package_fetch(&user.username, &request.username)
                .map_err(|refusal| limited(state, refusal))?;
            let (packages, last_resort) = claims::claim_remote(state, &user.username, name, domain, device).await?;
            let first = packages.first().cloned().unwrap_or_default();
            return Ok(Reply::ok(&v1::FetchKeyPackageResponse {
                key_package: first.into(),
                last_resort,
                key_packages: packages.into_iter().map(Into::into).collect(),
            }));
        }
        UserAt::Here(name) => request.username = name,
    }
    let grant = state
        .limiters
        .check_key_package_fetch(&user.username, &request.username)
        .map_err(|refusal| limited(state, refusal))?;
    if let KeyPackageGrant::LastResortOnly { .. } = grant {
        state.metrics.rate_limited(KEY_PACKAGE_FETCH_PER_TARGET);
    }
    let policy = commit_policy(state);
    let (limiters, metrics) = (Arc::clone(&state.limiters), state.metrics.clone());
    let (fetched, devices_low) = blocking(state, move |store| {
        let (requester, target) = (user.username.as_str(), request.username.as_str());
        let budget = || {
            limiters.check_last_resort(requester, target).map_err(|refusal| {
                metrics.rate_limited(refusal.limit);
                refused(refusal)
            })
        };
        let fetched = match grant {
            KeyPackageGrant::Ordinary => key_packages::fetch(store, user.caller(), target, device, &policy, &budget)?,
            KeyPackageGrant::LastResortOnly { .. } => {
                key_packages::fetch_last_resort(store, user.caller(), target, device, &policy, &budget)?
            }
        };
        // Count each served device whose stock just fell below the refill
        // mark, and each that had to fall back to its last-resort package.
        let mut devices_low = 0u64;
        for package in &fetched {
            let remaining = store.key_package_stock(target, &package.device_id)?.count;
            if package.last_resort || remaining + 1 == u64::from(key_packages::LOW_WATER) {
                devices_low += 1;
            }
        }
        Ok((fetched, devices_low))
    })
    .await?;
    for _ in 0..devices_low {
        state.metrics.stock_low();
    }
    let first = fetched.first().ok_or_else(|| DomainError::internal("a key package fetch served no package"))?;
    Ok(Reply::ok(&v1::FetchKeyPackageResponse {
        key_package: first.key_package.clone().into(),
        last_resort: first.last_resort,
        key_packages: fetched.into_iter().map(|package| package.key_package.into()).collect(),
    }))
}

async fn submit_commit(state: &ServerState, user: SessionUser, body: Bytes) -> Result<Reply, DomainError> {
    let request: v1::SubmitCommitRequest = decode(&body)?;
    if let Some(hub) = remote_hub(state, &request.group_id)? {
        let epoch = federation::proxy::forward_commit(state, &user, &hub, request).await?;
        return Ok(Reply::ok(&v1::SubmitCommitResponse { epoch }));
    }
    let epoch = accept_commit(state, CommitterOwned::Local(user), request).await?;
    Ok(Reply::ok(&v1::SubmitCommitResponse { epoch }))
}

/// Who submits a commit, owned (to move into a storage task).
pub(crate) enum CommitterOwned {
    Local(SessionUser),
    Remote { user: String, device: DeviceId },
}

impl CommitterOwned {
    fn borrow(&self) -> commits::Committer<'_> {
        match self {
            CommitterOwned::Local(user) => commits::Committer::Local(user.caller()),
            CommitterOwned::Remote { user, device } => commits::Committer::Remote { user, device: *device },
        }
    }
}

/// The hub of `group_id` when another server hosts it (this server must
/// federate then).
fn remote_hub(state: &ServerState, group_id: &[u8]) -> Result<Option<String>, DomainError> {
    match (hub_of(group_id), state.config.federation_domain()) {
        (Some(hub), Some(home)) if hub != home => Ok(Some(hub.to_owned())),
        (Some(hub), None) => {
            Err(DomainError::invalid(format!("the group is hosted by {hub}, and this server does not federate")))
        }
        _ => Ok(None),
    }
}

/// Orders and fans out a commit of a group we host (of our user, or of a
/// peer's user it proxies); returns the new epoch.
pub(crate) async fn accept_commit(
    state: &ServerState,
    committer: CommitterOwned,
    request: v1::SubmitCommitRequest,
) -> Result<u64, DomainError> {
    let now = now_ms();
    let policy = commit_policy(state);
    let views = Arc::clone(&state.views);
    let mailboxes = Arc::clone(&state.mailboxes);
    let group_id = request.group_id.clone();
    let federation = state.federation.clone();
    let committer_name = match &committer {
        CommitterOwned::Local(user) => user.username.clone(),
        CommitterOwned::Remote { user, .. } => user.clone(),
    };
    let plugins = state.plugins.observes_commit().then(|| state.plugins.clone());
    let accepted = blocking(state, move |store| {
        let submit = SubmitCommit {
            group_id: &request.group_id,
            epoch: request.epoch,
            commit: &request.commit,
            welcome: (!request.welcome.is_empty()).then_some(request.welcome.as_ref()),
            message_id: &request.message_id,
        };
        let outbox = federation.as_ref().map(|federation| federation.outbox());
        let accepted = commits::submit_commit_federated(
            store,
            &views,
            committer.borrow(),
            &submit,
            now,
            &policy,
            outbox.as_ref(),
        )?;
        if let Some(federation) = &federation {
            federation.written(&accepted.peers);
        }
        // Told here, once the commit is durable, even if the request's
        // storage deadline passed meanwhile (its retry would find it applied).
        if let (Some(plugins), Some(change)) = (&plugins, &accepted.change) {
            plugins.observe(ObservedEvent::Commit(CommitMeta {
                committer: committer_name,
                group_id: request.group_id.to_vec(),
                new_epoch: accepted.epoch,
                added: change.added.clone(),
                removed: change.removed.clone(),
            }));
        }
        // Exactly who got an entry (a member removed by a concurrent commit
        // may be in neither roster); a retry wakes the current roster.
        if accepted.recipients.is_empty() {
            wake_roster(&mailboxes, store, &request.group_id);
        } else {
            mailboxes.wake(accepted.recipients.iter().map(String::as_str));
        }
        Ok(accepted)
    })
    .await?;
    if let Some(state_version) = accepted.snapshot_due {
        snapshot_later(state, group_id, state_version);
    }
    Ok(accepted.epoch)
}

/// Stores the group's view as of `state_version` on a blocking thread,
/// after the commit that produced it has been answered (see
/// `domain::snapshots`). A failure costs only a longer log.
fn snapshot_later(state: &ServerState, group_id: Bytes, state_version: u64) {
    let store = Arc::clone(&state.store);
    let views = Arc::clone(&state.views);
    tokio::task::spawn_blocking(move || {
        snapshots::report(
            &group_id,
            snapshots::snapshot_group(&*store, &views, &group_id, state_version, ViewSource::Kept),
        )
    });
}

async fn leave_group(state: &ServerState, user: SessionUser, body: Bytes) -> Result<Reply, DomainError> {
    let request: v1::LeaveGroupRequest = decode(&body)?;
    if let Some(hub) = remote_hub(state, &request.group_id)? {
        federation::proxy::forward_leave(state, &user, &hub, request).await?;
    } else {
        accept_leave(state, CommitterOwned::Local(user), request).await?;
    }
    Ok(Reply::ok(&v1::LeaveGroupResponse {}))
}

/// Stores and fans out a leave proposal of a group we host.
pub(crate) async fn accept_leave(
    state: &ServerState,
    committer: CommitterOwned,
    request: v1::LeaveGroupRequest,
) -> Result<(), DomainError> {
    let now = now_ms();
    let mailboxes = Arc::clone(&state.mailboxes);
    let views = Arc::clone(&state.views);
    let federation = state.federation.clone();
    blocking(state, move |store| {
        let leave =
            LeaveGroup { group_id: &request.group_id, proposal: &request.proposal, message_id: &request.message_id };
        let outbox = federation.as_ref().map(|federation| federation.outbox());
        let peers = commits::leave_group_federated(store, &views, committer.borrow(), &leave, now, outbox.as_ref())?;
        if let Some(federation) = &federation {
            federation.written(&peers);
        }
        wake_roster(&mailboxes, store, &request.group_id);
        Ok(())
    })
    .await
}

/// Wakes the push tasks of the group's current roster to re-read their
/// queues (nobody if the roster cannot be read).
fn wake_roster(mailboxes: &Mailboxes, store: &dyn Store, group_id: &[u8]) {
    mailboxes.wake(roster_of(store, group_id).iter().map(String::as_str));
}

/// The queues of the group's current devices (none if the roster cannot be read).
pub(super) fn roster_of(store: &dyn Store, group_id: &[u8]) -> Vec<String> {
    match store.group_roster(group_id) {
        Ok(Some(group)) => group.devices,
        _ => Vec::new(),
    }
}

/// What a stored message means for the push tasks, once it is durable.
pub(super) enum Handover {
    /// Hand the new entry to the recipients' mailboxes.
    Deliver { entry: Arc<v1::QueueEntry>, deliveries: Vec<(String, u64)> },
    /// Nothing new was stored (a retry): wake these users to re-read.
    Wake(Vec<String>),
}

impl Handover {
    pub(super) fn hand_to(&self, mailboxes: &Mailboxes) {
        match self {
            Handover::Deliver { entry, deliveries } => mailboxes.deliver(entry, deliveries),
            Handover::Wake(members) => mailboxes.wake(members.iter().map(String::as_str)),
        }
    }
}

/// SHA-256 of a public key, as plugins see keys.
fn fingerprint(key: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key).into()
}

/// What `on_stored` observers are told of a stored message.
pub(super) fn stored_meta(entry: &v1::QueueEntry, deliveries: &[(String, u64)]) -> StoredMeta {
    StoredMeta {
        sender: entry.sender.clone(),
        group_id: entry.group_id.to_vec(),
        message_id: entry.message_id.to_vec(),
        payload_len: entry.payload.len() as u64,
        epoch: entry.epoch,
        stored_at_ms: entry.stored_at_ms,
        recipients: deliveries.iter().map(|(queue, _)| queue.clone()).collect(),
    }
}

/// Wire form of a queue entry.
pub(crate) fn queue_entry(item: QueueItem) -> v1::QueueEntry {
    v1::QueueEntry {
        seq: item.seq,
        message_id: item.message_id.into(),
        group_id: item.group_id.into(),
        group_name: item.group_name,
        group_kind: wire_group_kind(item.group_kind),
        sender: item.sender,
        kind: wire_entry_kind(item.kind),
        payload: item.payload.into(),
        stored_at_ms: item.stored_at_ms,
        epoch: item.epoch,
    }
}

/// Wire form of an entry kind.
pub(crate) fn wire_entry_kind(kind: EntryKind) -> i32 {
    let kind = match kind {
        EntryKind::Application => v1::EntryKind::Application,
        EntryKind::Commit => v1::EntryKind::Commit,
        EntryKind::Welcome => v1::EntryKind::Welcome,
        EntryKind::Proposal => v1::EntryKind::Proposal,
        EntryKind::DeliveryFailed => v1::EntryKind::DeliveryFailed,
    };
    kind as i32
}

/// Wire form of a group kind.
pub(crate) fn wire_group_kind(kind: GroupKind) -> i32 {
    let kind = match kind {
        GroupKind::Named => v1::GroupKind::Named,
        GroupKind::Direct => v1::GroupKind::Direct,
    };
    kind as i32
}
