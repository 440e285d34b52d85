//! Commits and leave proposals: the DS's per-group sequencer.
//!
//! A commit is validated against the group's public view, checked against
//! the account registry (every added member is a registered, enabled
//! account whose identity key is the leaf's key) and applied with a
//! compare-and-set on the epoch: the first commit of an epoch wins, any
//! other gets `STALE_EPOCH`. The accepted commit is appended to the group's
//! log and goes to the old and new roster except its sender, the Welcome to
//! the added members, in the same transaction. A commit that adds members
//! is stored with the view after it as the group's snapshot (so no restore
//! ever replays an Add, whose KeyPackage lifetime OpenMLS checks against
//! the clock); other commits leave serialising to `snapshots`, after the
//! answer. Everything that needs no view (framing, group, epoch, a member
//! sender, the commit budget in the transport) is checked before a view is
//! restored, one restore at a time per group; a commit the view refuses
//! leaves it kept.
//!
//! A leave is a self-Remove proposal: it is appended to the group's log
//! (replayed into the view, so a later commit may reference it), fanned out
//! to the other members, and the sender is marked leaving so it can no
//! longer post. The MLS roster stays the truth until a commit removes the
//! leaf.

use std::collections::BTreeSet;

use quicprochat_core::ds::{
    check_key_package_lifetime, inspect_handshake, AddedMember, CommitOutcome, HandshakeKind,
    MIN_KEY_PACKAGE_REMAINING_SECS,
};

use quicprochat_core::names::split_qualified;
use quicprochat_core::{DeviceId, DsGroupView};

use super::devices::{added_queue, check_added_device, current_device, queues_of, session_device, Caller};
use super::federation::outbox::remote_device_entry;
use super::federation::outbox::{entries_for, is_remote, split_recipients, Outbox};
use super::groups::{
    direct_pair, is_leaving, is_member, load_group, load_roster, others, require_active_member, restore_view,
    serialise_view, Roster, DIRECT_GROUP_MAX_MEMBERS,
};
use super::snapshots::SNAPSHOT_AFTER_ENTRIES;
use super::views::{RestoreClaim, ViewCache};
use super::{check_message_id, DomainError};
use crate::storage::{
    CommitResult, CommitWrite, EntryKind, Fanout, GroupKind, GroupRoster, MessageRecord, NewMessage, ProposalResult,
    ProposalWrite, Store, StoreError,
};

/// How often a leave is re-processed when the group state changed under it.
const LEAVE_ATTEMPTS: usize = 3;

/// How long a client waits before retrying while another request restores
/// the group's view.
const RESTORE_RETRY_AFTER_MS: u64 = 50;

/// Largest commit or Welcome a queue entry may carry. A Fetch answer or a
/// push event holding it, with the entry's other fields (all bounded: ids,
/// group name, sender) and the protobuf framing, must still fit in one
/// frame, or its recipients could never read past it: their queue would be
/// stuck at that entry.
pub const MAX_ENTRY_PAYLOAD_LEN: usize = quicprochat_proto::method::MAX_FRAME_LEN as usize - 64 * 1024;

/// Fails if `payload` is too large to be delivered as one queue entry.
fn check_entry_payload(what: &str, payload: &[u8]) -> Result<(), DomainError> {
    if payload.len() > MAX_ENTRY_PAYLOAD_LEN {
        return Err(DomainError::invalid(format!(
            "the {what} is {} bytes; at most {MAX_ENTRY_PAYLOAD_LEN} can be delivered",
            payload.len()
        )));
    }
    Ok(())
}

/// Who submits a commit or a leave: a session of ours, or a user of a peer
/// whose server proxies it to us, the group's hub (`FedSubmitCommit`).
#[derive(Debug, Clone, Copy)]
pub enum Committer<'a> {
    Local(Caller<'a>),
    Remote {
        /// `name@domain`, the domain the proxying peer's.
        user: &'a str,
        device: DeviceId,
    },
}

impl Committer<'_> {
    /// The committer's home domain, for a remote committer.
    fn home(&self) -> Option<&str> {
        match self {
            Committer::Local(_) => None,
            Committer::Remote { user, .. } => split_qualified(user).map(|(_, domain)| domain),
        }
    }

    /// The name the group's roster knows the committer by.
    fn name(&self) -> &str {
        match self {
            Committer::Local(caller) => caller.username,
            Committer::Remote { user, .. } => user,
        }
    }

    /// The committer's device in the group's device roster.
    fn roster_entry(&self) -> String {
        match self {
            Committer::Local(caller) => caller.queue.to_owned(),
            Committer::Remote { user, device } => remote_device_entry(user, device),
        }
    }

    /// The committing device, checked current for a local session (a
    /// remote one is its home's to check).
    fn device(&self, store: &dyn Store) -> Result<DeviceId, DomainError> {
        match self {
            Committer::Local(caller) => {
                session_device(store, *caller)?;
                Ok(current_device(store, *caller)?.device_id)
            }
            Committer::Remote { device, .. } => Ok(*device),
        }
    }
}

/// A commit submission.
#[derive(Debug, Clone, Copy)]
pub struct SubmitCommit<'a> {
    pub group_id: &'a [u8],
    /// The epoch the commit was created in.
    pub epoch: u64,
    /// MlsMessage carrying a PublicMessage commit.
    pub commit: &'a [u8],
    /// MlsMessage(Welcome); required iff the commit adds members.
    pub welcome: Option<&'a [u8]>,
    pub message_id: &'a [u8],
}

/// What the server requires of commits beyond MLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPolicy {
    /// Now, in seconds since the Unix epoch (the clock KeyPackage
    /// lifetimes are checked against).
    pub now_s: u64,
    /// How long every KeyPackage a commit adds must stay valid: the longer
    /// of the delivery retention and [`MIN_KEY_PACKAGE_REMAINING_SECS`], so
    /// every member processes the Add while it is valid and an Add never
    /// turns unprocessable while it waits in a queue (review F4).
    pub key_package_remaining_s: u64,
}

impl CommitPolicy {
    /// The policy at `now_ms` for a server keeping entries `retention_secs`.
    pub fn at(now_ms: u64, retention_secs: u64) -> CommitPolicy {
        CommitPolicy {
            now_s: now_ms / 1000,
            key_package_remaining_s: retention_secs.max(MIN_KEY_PACKAGE_REMAINING_SECS),
        }
    }
}

/// An accepted commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitAccepted {
    /// The group's epoch after the commit.
    pub epoch: u64,
    /// Everyone who got a queue entry (the commit or the Welcome); empty
    /// for a retry of an accepted commit, which wrote nothing.
    pub recipients: Vec<String>,
    /// `Some(state_version after this commit)` when the group's log is long
    /// enough that a snapshot should be stored now (see [`super::snapshots`]).
    pub snapshot_due: Option<u64>,
    /// Peer servers whose streams got entries (their senders are woken).
    pub peers: Vec<String>,
    /// `Some` when this call applied the commit (not a retry): who it
    /// added and removed (usernames, qualified for other servers' users).
    pub change: Option<MembershipChange>,
}

/// The members an applied commit added and removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// A leave request.
#[derive(Debug, Clone, Copy)]
pub struct LeaveGroup<'a> {
    pub group_id: &'a [u8],
    /// MlsMessage carrying a PublicMessage self-Remove proposal.
    pub proposal: &'a [u8],
    pub message_id: &'a [u8],
}

/// Checks an earlier use of `(sender, message_id)`: `Ok(Some)` when it was the
/// same kind of request for the same group (a retry), an error when the id
/// was used for something else.
fn earlier_use(
    store: &dyn Store,
    sender: &str,
    message_id: &[u8],
    group_id: &[u8],
    kind: EntryKind,
) -> Result<Option<MessageRecord>, DomainError> {
    match store.lookup_message(sender, message_id)? {
        Some(record) if record.kind == kind && record.group_id == group_id => Ok(Some(record)),
        Some(_) => Err(DomainError::invalid("message_id was already used for another message")),
        None => Ok(None),
    }
}

/// Checks that every added member is a registered, enabled account whose
/// identity key is the one in its leaf, with a KeyPackage that lasts as
/// long as `policy` asks.
/// A user of a peer (`name@domain`) is the AS's of their home: their key
/// package was served to the committer by it (checked with every add, see
/// `was_served`), and their clients' pins check their key; the server only
/// needs to federate.
fn check_added_members(
    store: &dyn Store,
    added: &[AddedMember],
    policy: &CommitPolicy,
    federating: bool,
) -> Result<(), DomainError> {
    for member in added {
        let (now, remaining) = (policy.now_s, policy.key_package_remaining_s);
        check_key_package_lifetime(member.not_before, member.not_after, now, remaining).map_err(|error| {
            DomainError::invalid(format!("the key package adding {:?} cannot be used: {error}", member.username))
        })?;
        if is_remote(&member.username) {
            if !federating {
                return Err(DomainError::invalid(format!(
                    "added member {:?} is a user of another server, and this server does not federate",
                    member.username
                )));
            }
            continue;
        }
        let account = store
            .get_account(&member.username)?
            .ok_or_else(|| DomainError::invalid(format!("added member {:?} is not registered", member.username)))?;
        if account.disabled {
            return Err(DomainError::denied(format!("added member {:?} is disabled", member.username)));
        }
        if account.identity_key != member.identity_key {
            return Err(DomainError::invalid(format!(
                "added member {:?} has another identity key than their account",
                member.username
            )));
        }
        check_added_device(store, member)?;
    }
    Ok(())
}

/// A direct group holds at most its two named accounts: nobody else can
/// be added to it.
fn check_direct_members(name: &str, outcome: &CommitOutcome) -> Result<(), DomainError> {
    // Accounts, not leaves: each account may have several devices.
    let accounts: std::collections::BTreeSet<&str> = outcome.members.iter().map(|m| m.username.as_str()).collect();
    if accounts.len() > DIRECT_GROUP_MAX_MEMBERS {
        return Err(DomainError::invalid(format!(
            "a direct conversation has at most {DIRECT_GROUP_MAX_MEMBERS} members"
        )));
    }
    let pair = direct_pair(name);
    let named = |user: &str| pair.is_some_and(|(first, second)| user == first || user == second);
    match outcome.added.iter().find(|member| !named(&member.username)) {
        Some(stranger) => Err(DomainError::denied(format!(
            "{:?} is not one of the two accounts of this direct conversation",
            stranger.username
        ))),
        None => Ok(()),
    }
}

/// The checks that need no group view: `bytes` is a PublicMessage of
/// `kind` from a member, for `group_id`; returns its epoch for the caller
/// to compare. Run before a view is restored, so a malformed request costs
/// a parse.
fn check_framing(bytes: &[u8], kind: HandshakeKind, group_id: &[u8]) -> Result<u64, DomainError> {
    let what = framing_name(kind);
    let header = inspect_handshake(bytes, kind).map_err(|error| DomainError::from_ds(what, error))?;
    if header.group_id != group_id {
        return Err(DomainError::invalid(format!("the {what} is for another group")));
    }
    Ok(header.epoch)
}

/// What a handshake of `kind` is called in errors.
fn framing_name(kind: HandshakeKind) -> &'static str {
    match kind {
        HandshakeKind::Commit => "commit",
        HandshakeKind::Proposal => "leave proposal",
    }
}

/// Keeps `view`, which a refused commit or proposal left as it was: the
/// state of `roster`'s version (the view changes only when it accepts).
fn keep_unchanged(views: &ViewCache, group_id: &[u8], roster: &GroupRoster, view: DsGroupView) {
    let size = usize::try_from(roster.snapshot_bytes).unwrap_or(usize::MAX);
    views.put(group_id, roster.state_version, size, view);
}

/// Claims the restore of `group_id`'s view, or tells the client to retry
/// shortly while another request restores it.
fn claim_restore<'a>(views: &'a ViewCache, group_id: &[u8]) -> Result<RestoreClaim<'a>, DomainError> {
    views.claim_restore(group_id).ok_or_else(|| DomainError::Unavailable {
        message: "the group's state is being loaded; retry shortly".to_owned(),
        retry_after_ms: RESTORE_RETRY_AFTER_MS,
    })
}

/// The refusal of an Add whose key package the committer was not served
/// (review F7: an add must use a package fetched for it, once).
fn not_served(username: &str) -> DomainError {
    DomainError::denied(format!(
        "the key package adding {username:?} was not served to you, or was used already; fetch one first"
    ))
}

/// Fails unless `session_user` may commit to `group` (now at
/// `current_epoch`) at `epoch`.
fn may_commit(group: &impl Roster, current_epoch: u64, session_user: &str, epoch: u64) -> Result<(), DomainError> {
    require_active_member(group, session_user)?;
    if epoch != current_epoch {
        return Err(DomainError::StaleEpoch { current_epoch });
    }
    Ok(())
}

/// The checks on a commit the view accepted: its signer is the session
/// user, every added member is registered with the leaf's key and was
/// served to the committer here (or, for a member on another server, is a
/// user of that server, which vouches for their package), a direct group
/// keeps to its two accounts, and a Welcome comes exactly with adds.
/// Returns the init keys served here, which the commit's write consumes.
fn check_accepted(
    store: &dyn Store,
    policy: &CommitPolicy,
    committer: Committer<'_>,
    (kind, name): (GroupKind, &str),
    outcome: &CommitOutcome,
    request: &SubmitCommit<'_>,
    federating: bool,
) -> Result<Vec<Vec<u8>>, DomainError> {
    let session_user = committer.name();
    if outcome.sender != session_user {
        return Err(DomainError::denied(format!("the commit is signed by {:?}, not by you", outcome.sender)));
    }
    check_added_members(store, &outcome.added, policy, federating)?;
    let mut served = Vec::with_capacity(outcome.added.len());
    for member in &outcome.added {
        if store.was_served(session_user, &member.init_key)? {
            served.push(member.init_key.clone());
            continue;
        }
        // A member on another server adds users of their own server with
        // packages it served them, which it vouches for (it could make its
        // users' packages anyway); ours they claimed here (served above).
        match committer.home() {
            Some(home) if split_qualified(&member.username).is_some_and(|(_, domain)| domain == home) => {}
            Some(home) => {
                return Err(DomainError::denied(format!(
                    "{:?} can be added by a member on this server, on {home} only with a key package {home} served",
                    member.username
                )))
            }
            None => return Err(not_served(&member.username)),
        }
    }
    if kind == GroupKind::Direct {
        check_direct_members(name, outcome)?;
    }
    match (outcome.added.is_empty(), request.welcome.is_some()) {
        (false, false) => Err(DomainError::invalid("the commit adds members but no welcome was given")),
        (true, true) => Err(DomainError::invalid("a welcome was given but the commit adds nobody")),
        _ => Ok(served),
    }
}

/// Accepts one commit for `request.epoch` and fans it out. Returns the new
/// epoch and who got an entry. A retry of an accepted commit (same message id) returns the same
/// result without writing anything. `views` supplies the group's decoded
/// view when it holds the current one, and keeps the merged view after.
pub fn submit_commit(
    store: &dyn Store,
    views: &ViewCache,
    caller: Caller<'_>,
    request: &SubmitCommit<'_>,
    now_ms: u64,
    policy: &CommitPolicy,
) -> Result<CommitAccepted, DomainError> {
    submit_commit_federated(store, views, Committer::Local(caller), request, now_ms, policy, None)
}

/// [`submit_commit`] on a federating server (`outbox`): the commit may add
/// users of peers whose key packages their home served to the committer,
/// and the commit and Welcome go to peers' users' devices as stream
/// entries, written with the local queue entries.
pub fn submit_commit_federated(
    store: &dyn Store,
    views: &ViewCache,
    committer: Committer<'_>,
    request: &SubmitCommit<'_>,
    now_ms: u64,
    policy: &CommitPolicy,
    outbox: Option<&Outbox<'_>>,
) -> Result<CommitAccepted, DomainError> {
    let session_user = committer.name();
    check_message_id(request.message_id)?;
    check_entry_payload("commit", request.commit)?;
    if let Some(welcome) = request.welcome {
        check_entry_payload("Welcome", welcome)?;
    }
    let roster = load_roster(store, request.group_id)?;
    if let Some(first) = earlier_use(store, session_user, request.message_id, request.group_id, EntryKind::Commit)? {
        return Ok(CommitAccepted {
            epoch: first.epoch + 1,
            recipients: Vec::new(),
            snapshot_due: None,
            peers: Vec::new(),
            change: None,
        });
    }
    let committing_device = committer.device(store)?;
    may_commit(&roster, roster.epoch, session_user, request.epoch)?;
    let framed_epoch = check_framing(request.commit, HandshakeKind::Commit, request.group_id)?;
    if framed_epoch != request.epoch {
        return Err(DomainError::invalid(format!(
            "the commit is for epoch {framed_epoch}, the request for epoch {}",
            request.epoch
        )));
    }
    // The kept view is the state the roster was read with; otherwise the
    // whole record, whose epoch and roster then count.
    let (mut view, group) = match views.take(request.group_id, roster.state_version) {
        Some(view) => (view, roster),
        None => {
            let _claim = claim_restore(views, request.group_id)?;
            let record = load_group(store, request.group_id)?;
            may_commit(&record, record.epoch, session_user, request.epoch)?;
            (restore_view(&record)?, GroupRoster::from(record))
        }
    };
    let outcome = match view.process_commit(request.commit) {
        Ok(outcome) => outcome,
        Err(error) => {
            keep_unchanged(views, request.group_id, &group, view);
            return Err(DomainError::from_ds("commit", error));
        }
    };
    // Past this point the view holds the commit: refused now, it is dropped.
    if outcome.sender_device != committing_device {
        // A device commits through its own session only: fan-out leaves out
        // the session's device, and the roster's devices must be its leaves.
        return Err(DomainError::denied("the commit is signed by another device than this session's"));
    }
    // The packages served here, which the write consumes.
    let served =
        check_accepted(store, policy, committer, (group.kind, &group.name), &outcome, request, outbox.is_some())?;

    // One entry per account (the view lists a leaf per device, sorted by account).
    let mut new_members: Vec<String> = outcome.members.iter().map(|m| m.username.clone()).collect();
    new_members.dedup();
    // Every device of the roster before and after, but the committing one.
    let new_devices = queues_of(&outcome.members);
    let commit_recipients: Vec<String> = group
        .devices
        .iter()
        .chain(&new_devices)
        .filter(|queue| **queue != committer.roster_entry())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .cloned()
        .collect();
    let message = |kind, payload: &[u8], epoch| NewMessage {
        message_id: request.message_id.to_vec(),
        group_id: request.group_id.to_vec(),
        sender: session_user.to_owned(),
        kind,
        payload: payload.to_vec(),
        epoch,
        stored_at_ms: now_ms,
    };
    // Devices of peers' users get the commit and the Welcome as stream
    // entries (the Welcome's first, as their queue must see it first).
    let welcome_message = request.welcome.map(|welcome| message(EntryKind::Welcome, welcome, outcome.new_epoch));
    let welcomed = split_recipients(&outcome.added.iter().map(added_queue).collect::<Vec<_>>());
    let committed = split_recipients(&commit_recipients);
    let commit_message = message(EntryKind::Commit, request.commit, group.epoch);
    let mut outbound = Vec::new();
    if !welcomed.remote.is_empty() || !committed.remote.is_empty() {
        let outbox = outbox
            .ok_or_else(|| DomainError::internal("a group with remote members on a server that does not federate"))?;
        if let Some(welcome) = &welcome_message {
            outbound.extend(entries_for(outbox, (&group.name, group.kind), welcome, &welcomed.remote));
        }
        outbound.extend(entries_for(outbox, (&group.name, group.kind), &commit_message, &committed.remote));
    }
    let peers: Vec<String> =
        welcomed.remote.keys().chain(committed.remote.keys()).cloned().collect::<BTreeSet<_>>().into_iter().collect();
    let welcome = welcome_message.map(|message| Fanout { message, recipients: welcomed.local });
    // A commit that adds members is stored with the view after it, so no
    // restore ever replays an Add: OpenMLS checks an added KeyPackage's
    // lifetime against the clock, and a replay after it expired would fail.
    let snapshot = if outcome.added.is_empty() { None } else { Some(serialise_view(&view)?) };
    let snapshot_len = snapshot.as_ref().map(Vec::len);
    let write = CommitWrite {
        group_id: request.group_id.to_vec(),
        expected_epoch: group.epoch,
        new_epoch: outcome.new_epoch,
        new_members,
        new_devices,
        commit: Fanout { message: commit_message, recipients: committed.local },
        welcome,
        snapshot,
        served,
        outbound,
    };
    match store.apply_commit(&write) {
        Ok(CommitResult::Applied(applied)) => {
            // Without a snapshot the view is serialised only by the next
            // one: estimate its size from the last snapshot's, scaled by
            // the roster's growth.
            let members = (outcome.members.len().max(1), group.members.len().max(1));
            let estimate = group.snapshot_bytes.saturating_mul(members.0 as u64) / members.1 as u64;
            let size = snapshot_len.unwrap_or_else(|| usize::try_from(estimate).unwrap_or(usize::MAX));
            views.put(request.group_id, applied.state_version, size, view);
            let welcomed = applied.welcome.into_iter().flat_map(|welcome| welcome.deliveries);
            let recipients = applied.commit.deliveries.into_iter().chain(welcomed).map(|d| d.queue).collect();
            let logged = (group.log_head + 1).saturating_sub(group.snapshot_through);
            let snapshot_due =
                (snapshot_len.is_none() && logged >= SNAPSHOT_AFTER_ENTRIES).then_some(applied.state_version);
            let change = MembershipChange {
                added: outcome.added.iter().map(|member| member.username.clone()).collect(),
                removed: outcome.removed.clone(),
            };
            Ok(CommitAccepted { epoch: outcome.new_epoch, recipients, snapshot_due, peers, change: Some(change) })
        }
        Ok(CommitResult::EpochMismatch { current_epoch }) => Err(DomainError::StaleEpoch { current_epoch }),
        Ok(CommitResult::NotServed { init_key }) => {
            let added = outcome.added.iter().find(|member| member.init_key == init_key);
            Err(not_served(added.map_or("a member", |member| member.username.as_str())))
        }
        Err(StoreError::Conflict { .. }) => {
            Err(DomainError::invalid("message_id was already used for another message"))
        }
        Err(error) => Err(error.into()),
    }
}

/// Stores and fans out a self-Remove proposal of `session_user` and stops
/// them from posting. A retry (same message id) succeeds without writing,
/// and so does a leave from a member already leaving in this epoch (the
/// first one stands). Everything that needs no view is checked before one
/// is restored.
pub fn leave_group(
    store: &dyn Store,
    views: &ViewCache,
    caller: Caller<'_>,
    request: &LeaveGroup<'_>,
    now_ms: u64,
) -> Result<Vec<String>, DomainError> {
    leave_group_federated(store, views, Committer::Local(caller), request, now_ms, None)
}

/// [`leave_group`] on a federating server: the proposal reaches peers'
/// users as stream entries; the leaver may be a peer's user (`FedLeaveGroup`).
/// Returns the peers whose streams got an entry.
pub fn leave_group_federated(
    store: &dyn Store,
    views: &ViewCache,
    committer: Committer<'_>,
    request: &LeaveGroup<'_>,
    now_ms: u64,
    outbox: Option<&Outbox<'_>>,
) -> Result<Vec<String>, DomainError> {
    let session_user = committer.name();
    check_message_id(request.message_id)?;
    let mut roster = load_roster(store, request.group_id)?;
    if earlier_use(store, session_user, request.message_id, request.group_id, EntryKind::Proposal)?.is_some() {
        return Ok(Vec::new());
    }
    committer.device(store)?;
    for _ in 0..LEAVE_ATTEMPTS {
        if !is_member(&roster, session_user) {
            return Err(DomainError::denied(format!("{session_user:?} is not a member of this group")));
        }
        if is_leaving(&roster, session_user) {
            return Ok(Vec::new());
        }
        let framed_epoch = check_framing(request.proposal, HandshakeKind::Proposal, request.group_id)?;
        if framed_epoch < roster.epoch {
            return Err(DomainError::StaleEpoch { current_epoch: roster.epoch });
        }
        if framed_epoch > roster.epoch {
            return Err(DomainError::invalid(format!(
                "the leave proposal is for epoch {framed_epoch}, the group is at epoch {}",
                roster.epoch
            )));
        }
        let mut view = match views.take(request.group_id, roster.state_version) {
            Some(view) => view,
            None => {
                let _claim = claim_restore(views, request.group_id)?;
                let record = load_group(store, request.group_id)?;
                if record.state_version != roster.state_version {
                    roster = GroupRoster::from(record);
                    continue;
                }
                restore_view(&record)?
            }
        };
        let outcome = match view.process_proposal(request.proposal) {
            Ok(outcome) => outcome,
            Err(error) => {
                keep_unchanged(views, request.group_id, &roster, view);
                return Err(DomainError::from_ds("leave proposal", error));
            }
        };
        if outcome.sender != session_user || !outcome.self_remove {
            return Err(DomainError::invalid("a leave must be a proposal removing its own sender"));
        }
        let message = NewMessage {
            message_id: request.message_id.to_vec(),
            group_id: request.group_id.to_vec(),
            sender: session_user.to_owned(),
            kind: EntryKind::Proposal,
            payload: request.proposal.to_vec(),
            epoch: roster.epoch,
            stored_at_ms: now_ms,
        };
        let recipients = split_recipients(&others(&roster.devices, &committer.roster_entry()));
        let outbound = match outbox {
            Some(outbox) => entries_for(outbox, (&roster.name, roster.kind), &message, &recipients.remote),
            None if recipients.remote.is_empty() => Vec::new(),
            None => {
                return Err(DomainError::internal("a group with remote members on a server that does not federate"))
            }
        };
        let peers: Vec<String> = recipients.remote.keys().cloned().collect();
        let write = ProposalWrite {
            group_id: request.group_id.to_vec(),
            expected_state_version: roster.state_version,
            leaving: vec![session_user.to_owned()],
            proposal: Fanout { message, recipients: recipients.local },
            outbound,
        };
        match store.apply_proposal(&write)? {
            ProposalResult::Applied(_) => return Ok(peers),
            ProposalResult::StateChanged { .. } => roster = load_roster(store, request.group_id)?,
        }
    }
    Err(DomainError::Unavailable { message: "the group changed concurrently, retry".to_owned(), retry_after_ms: 50 })
}
