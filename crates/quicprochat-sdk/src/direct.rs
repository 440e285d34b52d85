//! Which conversation is the direct conversation with whom, decided only by
//! what MLS verifies: a group is the direct conversation with `peer` while
//! its MLS roster is exactly two leaves, ours and one whose credential
//! names `peer`. The server's group name and kind are hints at most: a
//! server (or a group creator) can set both to anything, so neither ever
//! decides who reads a message sent to `@peer`.
//!
//! The stored `peer` of a conversation is a cache of that check, made when
//! the group is joined or created and made again whenever a commit changes
//! the group; `send @peer` checks the roster once more before it encrypts.
//! Group names that arrive from the server are sanitised so that a named
//! group can never look like a direct conversation (`@…`, `dm:…`).

use quicprochat_proto::v1;

use crate::client::{Inner, Local};
use crate::local_store::Conversation;
use crate::SdkError;

/// Longest group name (the server's limit too).
pub(crate) const MAX_GROUP_NAME_LEN: usize = 64;

/// The other member of a roster (sorted usernames, each account once) that
/// is exactly `me` and one other account.
pub(crate) fn direct_peer_of(members: &[String], me: &str) -> Option<String> {
    match members {
        [first, second] if first == me && second != me => Some(second.clone()),
        [first, second] if second == me && first != me => Some(first.clone()),
        _ => None,
    }
}

/// The name a direct conversation between `a` and `b` is stored under.
pub(crate) fn direct_name(a: &str, b: &str) -> String {
    let (first, second) = if a < b { (a, b) } else { (b, a) };
    format!("dm:{first}:{second}")
}

/// Why `name` cannot be a named group's name, if it cannot.
pub(crate) fn group_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.chars().count() > MAX_GROUP_NAME_LEN {
        Some("is longer than 64 characters")
    } else if name.starts_with('@') || name.starts_with("dm:") {
        Some("may not start with '@' or 'dm:' (those are direct conversations)")
    } else if name.chars().any(char::is_control) {
        Some("contains control characters")
    } else if name.trim() != name {
        Some("has leading or trailing spaces")
    } else {
        None
    }
}

/// The first hex digits of a group id, to tell groups of one name apart.
/// Total on any id, even an empty one.
pub(crate) fn short_id(group_id: &[u8]) -> String {
    let hex = hex::encode(group_id);
    hex.get(..6).unwrap_or(&hex).to_owned()
}

/// A server-supplied name usable for a named group: kept when it is a valid
/// group name, otherwise replaced by `group-<id>`.
fn sanitised_group_name(name: &str, group_id: &[u8]) -> String {
    match group_name_problem(name) {
        None => name.to_owned(),
        Some(problem) => {
            tracing::info!(name, problem, "a joined group's name is not a valid group name; renaming it");
            format!("group-{}", short_id(group_id))
        }
    }
}

impl Local {
    /// The account this group is the direct conversation with, from its
    /// MLS roster now; `None` when the roster is not exactly us and one other.
    pub(crate) fn verified_peer(&self, group_id: &[u8]) -> Result<Option<String>, SdkError> {
        if !self.mls.is_active(group_id)? {
            return Ok(None);
        }
        Ok(direct_peer_of(&self.mls.members(group_id)?, &self.username))
    }

    /// How a group just joined from `entry` (a Welcome for `group_id`) is
    /// recorded: in place of a broken group it was rebuilt for (see
    /// `fork`), as the direct conversation with its other member when the
    /// server calls it direct *and* the roster is exactly two accounts, as
    /// a named group (its name sanitised, and made unique) otherwise.
    pub(crate) fn record_joined(&self, entry: &v1::QueueEntry, group_id: &[u8]) -> Result<Conversation, SdkError> {
        if let Some(broken) = self.replaced_by(group_id, &entry.group_name)? {
            tracing::info!(group = %broken.name, "joined the group rebuilt in place of a broken one");
            self.store.retire_broken(&broken.group_id)?;
            self.store.add_conversation(group_id, &broken.name, None, crate::now_ms())?;
            return Ok(Conversation { group_id: group_id.to_vec(), name: broken.name, peer: None, active: true });
        }
        let direct = entry.group_kind == v1::GroupKind::Direct as i32;
        let peer = if direct { self.verified_peer(group_id)? } else { None };
        let name = match &peer {
            Some(peer) => direct_name(&self.username, peer),
            None => {
                if direct {
                    tracing::warn!(
                        group = %hex::encode(group_id),
                        "a group the server calls direct does not have exactly two members; joined as a named group"
                    );
                }
                self.unique_name(&sanitised_group_name(&entry.group_name, group_id), group_id)?
            }
        };
        self.store.add_conversation(group_id, &name, peer.as_deref(), crate::now_ms())?;
        Ok(Conversation { group_id: group_id.to_vec(), name, peer, active: true })
    }

    /// After a commit changed a direct conversation: if its roster is no
    /// longer exactly us and the peer, it stops being the direct
    /// conversation with them (so `send @peer` never reaches a third
    /// member) and is kept as a named group.
    pub(crate) fn recheck_direct(&self, group_id: &[u8]) -> Result<(), SdkError> {
        let Some(conversation) = self.store.conversation(group_id)? else { return Ok(()) };
        let Some(peer) = conversation.peer.as_deref() else { return Ok(()) };
        if !conversation.active || self.verified_peer(group_id)?.as_deref() == Some(peer) {
            return Ok(());
        }
        let name = self.unique_name(&format!("was-dm-{peer}"), group_id)?;
        tracing::warn!(%peer, %name, "a direct conversation's members changed; it is a named group now");
        self.store.set_conversation_kind(group_id, &name, None)?;
        Ok(())
    }

    /// Keeps `name`, unless we already have an active conversation of that
    /// name in another group: then a short id suffix tells them apart.
    pub(crate) fn unique_name(&self, name: &str, group_id: &[u8]) -> Result<String, SdkError> {
        match self.store.find_active(name)? {
            Some(existing) if existing.group_id != group_id => Ok(format!("{name}#{}", short_id(group_id))),
            _ => Ok(name.to_owned()),
        }
    }

    /// The direct conversation with `peer` whose MLS roster is exactly us
    /// and `peer`, or `None`. Several (both sides opened one at once) are
    /// fine while they agree on `peer`'s account key: the one with the
    /// smallest group id is used, the same on both sides. When they hold
    /// different keys for `peer`, which of them is `peer` is ambiguous and
    /// nothing is chosen.
    pub(crate) fn verified_direct(&self, peer: &str) -> Result<Option<Conversation>, SdkError> {
        let mut chosen: Option<(Conversation, Vec<u8>)> = None;
        for candidate in self.store.direct_candidates(peer)? {
            if self.verified_peer(&candidate.group_id)?.as_deref() != Some(peer) {
                continue;
            }
            let Some(key) = self.mls.member_account_key(&candidate.group_id, peer)? else { continue };
            match &chosen {
                Some((_, chosen_key)) if *chosen_key != key => {
                    return Err(SdkError::AmbiguousPeer { peer: peer.to_owned() });
                }
                Some((current, _)) if current.group_id <= candidate.group_id => {}
                _ => chosen = Some((candidate, key)),
            }
        }
        Ok(chosen.map(|(conversation, _)| conversation))
    }
}

impl Inner {
    /// Finds the verified direct conversation with `peer`, or creates one.
    pub(crate) async fn direct_conversation(&mut self, peer: &str) -> Result<Conversation, SdkError> {
        // `@alice@home` is our own `alice`: names of our domain read bare.
        let peer = &quicprochat_core::names::Naming::at_home(self.mls.home_domain()).read(peer);
        if *peer == self.username {
            return Err(SdkError::InvalidInput("cannot open a direct conversation with yourself".into()));
        }
        if let Some(existing) = self.verified_direct(peer)? {
            return Ok(existing);
        }
        // Resolve first so a typo does not leave an empty group behind.
        let request = v1::ResolveUserRequest { username: peer.to_owned() };
        let _: v1::ResolveUserResponse = self.rpc().call(quicprochat_proto::Method::ResolveUser, &request).await?;
        let name = direct_name(&self.username, peer);
        let conversation = self.create_group(&name, v1::GroupKind::Direct, Some(peer)).await?;
        self.add_members(&conversation, &[peer.to_owned()]).await?;
        self.add_our_other_devices(&conversation).await;
        Ok(conversation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_direct_peer_needs_exactly_us_and_one_other() {
        assert_eq!(direct_peer_of(&names(&["alice", "bob"]), "bob").as_deref(), Some("alice"));
        assert_eq!(direct_peer_of(&names(&["alice", "bob"]), "alice").as_deref(), Some("bob"));
        assert_eq!(direct_peer_of(&names(&["alice", "bob", "carol"]), "bob"), None, "a third member");
        assert_eq!(direct_peer_of(&names(&["bob"]), "bob"), None, "alone");
        assert_eq!(direct_peer_of(&names(&["bob", "bob"]), "bob"), None, "ourselves twice");
        assert_eq!(direct_peer_of(&names(&["alice", "mallory"]), "bob"), None, "not ours");
        assert_eq!(direct_peer_of(&[], "bob"), None);
    }

    #[test]
    fn direct_names_are_sorted() {
        assert_eq!(direct_name("bob", "alice"), "dm:alice:bob");
        assert_eq!(direct_name("alice", "bob"), "dm:alice:bob");
    }

    #[test]
    fn server_names_that_look_direct_are_replaced() {
        let id = [0xab, 0xcd, 0xef, 0x01];
        assert_eq!(sanitised_group_name("team", &id), "team");
        for bad in ["dm:alice:", "@alice", "", " team", "a\u{7}b", &"x".repeat(65)] {
            assert_eq!(sanitised_group_name(bad, &id), "group-abcdef", "{bad:?}");
        }
    }

    #[test]
    fn short_ids_never_panic() {
        assert_eq!(short_id(&[]), "");
        assert_eq!(short_id(&[1]), "01");
        assert_eq!(short_id(&[1, 2, 3, 4]), "010203");
    }
}
