//! Groups: registration of a new group from its creator's GroupInfo and
//! ratchet tree, roster queries, and the helpers the commit and message
//! services share (loading a group, restoring the DS view from its snapshot
//! and log).
//!
//! The roster stored with the group is the MLS roster of the DS view; members
//! that sent a leave proposal stay in it (marked leaving) until a commit
//! removes them, but may no longer post.

use quicprochat_core::ds::DsGroupView;
use quicprochat_core::names::hub_of;

use super::devices::{queues_of, require_current_device, session_device, Caller};
use super::DomainError;
use crate::storage::{EntryKind, GroupCreation, GroupKind, GroupRecord, GroupRoster, GroupSummary, NewGroup, Store};

/// Length of a group id, in bytes.
pub const GROUP_ID_LEN: usize = 16;

/// Longest group name, in characters.
pub const MAX_GROUP_NAME_LEN: usize = 64;

/// Most member accounts of a [`GroupKind::Direct`] group (each may have several devices).
pub const DIRECT_GROUP_MAX_MEMBERS: usize = 2;

/// A group registration request.
#[derive(Debug, Clone, Copy)]
pub struct CreateGroup<'a> {
    pub group_id: &'a [u8],
    pub name: &'a str,
    pub kind: GroupKind,
    /// TLS-serialized MlsMessage(GroupInfo).
    pub group_info: &'a [u8],
    /// TLS-serialized ratchet tree.
    pub ratchet_tree: &'a [u8],
    /// This server's domain when it federates: a group id may then name it
    /// as the group's hub (and no other server).
    pub home: Option<&'a str>,
}

/// Roster of a group as shown to a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembers {
    pub name: String,
    pub epoch: u64,
    /// Sorted usernames, leaving members included.
    pub members: Vec<String>,
}

/// A group id is [`GROUP_ID_LEN`] random bytes, followed, for a group of a
/// federating server, by the domain of the server hosting it.
pub(crate) fn check_group_id(group_id: &[u8]) -> Result<(), DomainError> {
    if group_id.len() != GROUP_ID_LEN && hub_of(group_id).is_none() {
        return Err(DomainError::invalid(format!(
            "group id must be {GROUP_ID_LEN} bytes, or {GROUP_ID_LEN} followed by its server's domain; got {} bytes",
            group_id.len()
        )));
    }
    Ok(())
}

/// A group created here is hosted here: its id names no hub, or this
/// server's domain (when it federates).
fn check_hosted_here(group_id: &[u8], home: Option<&str>) -> Result<(), DomainError> {
    match (hub_of(group_id), home) {
        (None, _) => Ok(()),
        (Some(hub), Some(home)) if hub == home => Ok(()),
        (Some(hub), Some(home)) => {
            Err(DomainError::invalid(format!("group id names {hub} as its server, but this server is {home}")))
        }
        (Some(hub), None) => Err(DomainError::invalid(format!(
            "group id names {hub} as its server, but this server does not federate: use a {GROUP_ID_LEN}-byte id"
        ))),
    }
}

fn check_group_name(name: &str) -> Result<(), DomainError> {
    let length = name.chars().count();
    if length == 0 || length > MAX_GROUP_NAME_LEN {
        return Err(DomainError::invalid(format!(
            "group name must be 1 to {MAX_GROUP_NAME_LEN} characters, got {length}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(DomainError::invalid("group name must not contain control characters"));
    }
    Ok(())
}

/// The two accounts a direct group's name `dm:<a>:<b>` names (`a < b`).
pub(crate) fn direct_pair(name: &str) -> Option<(&str, &str)> {
    let (first, second) = name.strip_prefix("dm:")?.split_once(':')?;
    (!first.is_empty() && first < second && !second.contains(':')).then_some((first, second))
}

/// A direct group is named `dm:<a>:<b>` for its two accounts, in order,
/// one of them its creator. Clients never trust this name (they take a
/// direct conversation's peer from the MLS roster); the rule keeps a
/// creator from labelling a group as someone else's conversation.
fn check_direct_name(name: &str, creator: &str) -> Result<(), DomainError> {
    match direct_pair(name) {
        Some((first, second)) if first == creator || second == creator => Ok(()),
        _ => Err(DomainError::invalid(format!(
            "a direct group is named dm:<a>:<b> for its two members in order, one of them you ({creator})"
        ))),
    }
}

/// Loads a group by id (checked for length first).
/// The group's roster without its MLS state, or `NOT_FOUND`.
pub(crate) fn load_roster(store: &dyn Store, group_id: &[u8]) -> Result<GroupRoster, DomainError> {
    check_group_id(group_id)?;
    store.group_roster(group_id)?.ok_or_else(|| DomainError::not_found(format!("no group {}", hex::encode(group_id))))
}

pub(crate) fn load_group(store: &dyn Store, group_id: &[u8]) -> Result<GroupRecord, DomainError> {
    check_group_id(group_id)?;
    store.get_group(group_id)?.ok_or_else(|| DomainError::not_found(format!("no group {}", hex::encode(group_id))))
}

/// Restores the DS view of `group`: its snapshot, then every logged commit
/// and proposal in order. A failure is server-side.
pub(crate) fn restore_view(group: &GroupRecord) -> Result<DsGroupView, DomainError> {
    let failed = |what: String| {
        DomainError::internal(format!("cannot restore view of group {}: {what}", hex::encode(&group.group_id)))
    };
    let mut view = DsGroupView::from_bytes(&group.state).map_err(|error| failed(error.to_string()))?;
    for (expected, entry) in (group.snapshot_through + 1..).zip(&group.log) {
        if entry.seq != expected {
            return Err(failed(format!("log entry {expected} is missing (found {})", entry.seq)));
        }
        let replayed = match entry.kind {
            EntryKind::Commit => view.process_commit(&entry.payload).map(drop),
            EntryKind::Proposal => view.process_proposal(&entry.payload).map(drop),
            other => return Err(failed(format!("log entry {} is a {other:?}", entry.seq))),
        };
        replayed.map_err(|error| failed(format!("log entry {}: {error}", entry.seq)))?;
    }
    Ok(view)
}

/// The bytes of `view` to store as a group's snapshot. A failure is server-side.
pub(crate) fn serialise_view(view: &DsGroupView) -> Result<Vec<u8>, DomainError> {
    view.to_bytes().map_err(|error| DomainError::internal(format!("cannot serialise the view: {error}")))
}

/// A group's roster as carried by the whole record or by the roster-only read.
pub(crate) trait Roster {
    fn members(&self) -> &[String];
    fn leaving(&self) -> &[String];
    /// The queues of the members' devices, sorted.
    fn devices(&self) -> &[String];
}

impl Roster for GroupRecord {
    fn members(&self) -> &[String] {
        &self.members
    }
    fn leaving(&self) -> &[String] {
        &self.leaving
    }
    fn devices(&self) -> &[String] {
        &self.devices
    }
}

impl Roster for GroupRoster {
    fn members(&self) -> &[String] {
        &self.members
    }
    fn leaving(&self) -> &[String] {
        &self.leaving
    }
    fn devices(&self) -> &[String] {
        &self.devices
    }
}

pub(crate) fn is_member(group: &impl Roster, username: &str) -> bool {
    group.members().iter().any(|member| member == username)
}

pub(crate) fn is_leaving(group: &impl Roster, username: &str) -> bool {
    group.leaving().iter().any(|member| member == username)
}

/// Fails unless `username` is in the roster and has not asked to leave.
pub(crate) fn require_active_member(group: &impl Roster, username: &str) -> Result<(), DomainError> {
    if !is_member(group, username) {
        return Err(DomainError::denied(format!("{username:?} is not a member of this group")));
    }
    if is_leaving(group, username) {
        return Err(DomainError::denied(format!("{username:?} is leaving this group")));
    }
    Ok(())
}

/// Fails unless the caller's device is in the roster: only a device that
/// is a leaf of the group may post to it.
pub(crate) fn require_member_device(group: &impl Roster, caller: Caller<'_>) -> Result<(), DomainError> {
    if group.devices().binary_search_by(|queue| queue.as_str().cmp(caller.queue)).is_err() {
        return Err(DomainError::denied("this device is not a member of the group (another device of yours is)"));
    }
    Ok(())
}

/// Roster minus `sender`, in roster order.
pub(crate) fn others(members: &[String], sender: &str) -> Vec<String> {
    members.iter().filter(|member| member.as_str() != sender).cloned().collect()
}

/// Registers a new group at epoch 0 whose only member is `session_user`.
/// Returns the epoch (0). A retry by the creator of an identical
/// registration succeeds again.
pub fn create_group(
    store: &dyn Store,
    caller: Caller<'_>,
    request: &CreateGroup<'_>,
    now_ms: u64,
) -> Result<u64, DomainError> {
    let session_user = caller.username;
    check_group_id(request.group_id)?;
    check_hosted_here(request.group_id, request.home)?;
    check_group_name(request.name)?;
    if request.kind == GroupKind::Direct {
        check_direct_name(request.name, session_user)?;
    }
    let account = session_device(store, caller)?;
    let view = DsGroupView::from_group_info(request.group_info, request.ratchet_tree)
        .map_err(|error| DomainError::from_ds("group info", error))?;
    if view.group_id() != request.group_id {
        return Err(DomainError::invalid("group info is for another group id than the request's"));
    }
    if view.epoch() != 0 {
        return Err(DomainError::invalid(format!(
            "a new group must be at epoch 0, group info is at epoch {}",
            view.epoch()
        )));
    }
    let members = view.members();
    let sole_member_is_creator = members.len() == 1
        && members[0].username == session_user
        && members[0].identity_key == account.identity_key
        && queues_of(&members) == [caller.queue];
    if !sole_member_is_creator {
        return Err(DomainError::invalid(
            "a new group must have exactly one member: you, on this device, with your account's key",
        ));
    }
    let group = NewGroup {
        group_id: request.group_id.to_vec(),
        name: request.name.to_owned(),
        kind: request.kind,
        creator: session_user.to_owned(),
        epoch: 0,
        state: serialise_view(&view)?,
        members: vec![session_user.to_owned()],
        devices: vec![caller.queue.to_owned()],
        created_at_ms: now_ms,
    };
    match store.create_group(&group)? {
        GroupCreation::Created => Ok(0),
        GroupCreation::IdTaken => {
            let existing = load_group(store, request.group_id)?;
            let same_registration = existing.creator == session_user
                && existing.name == request.name
                && existing.kind == request.kind
                && existing.epoch == 0;
            if same_registration {
                Ok(0)
            } else {
                Err(DomainError::AlreadyExists {
                    message: format!("group {} already exists", hex::encode(request.group_id)),
                })
            }
        }
    }
}

/// The roster of a group; only its members may ask.
pub fn members(store: &dyn Store, caller: Caller<'_>, group_id: &[u8]) -> Result<GroupMembers, DomainError> {
    require_current_device(store, caller)?;
    let group = load_group(store, group_id)?;
    if !is_member(&group, caller.username) {
        return Err(DomainError::denied("only members may list a group's members"));
    }
    Ok(GroupMembers { name: group.name, epoch: group.epoch, members: group.members })
}

/// The groups `session_user` is a member of.
pub fn list_groups(store: &dyn Store, session_user: &str) -> Result<Vec<GroupSummary>, DomainError> {
    Ok(store.groups_of(session_user)?)
}
