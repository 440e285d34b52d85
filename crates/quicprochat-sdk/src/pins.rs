//! Whose devices this client accepts: a device is `alice`'s only when its
//! certificate verifies under the account key pinned for `alice` (see
//! `local_store::known_accounts`). The key is pinned the first time this
//! device sees it: in a verified group roster (a Welcome, a commit), a key
//! package the server served, or the server's answer to `verify`. Every
//! leaf a commit or Welcome brings in is checked against the pins before
//! it is merged (`MlsClient::process_incoming_checked`); a commit adding a
//! device under another key is refused, and the group is then treated as
//! forked by its committer (see `fork`).

use quicprochat_core::{MemberRefusal, VerifiedMember};

use crate::client::Local;
use crate::local_store::Pinned;
use crate::{now_ms, SdkError};

/// Why a device of `username` with `account_key` is not the account's,
/// when `pinned` is pinned for it.
fn other_key_reason(username: &str, account_key: &[u8], pinned: &[u8]) -> String {
    format!(
        "its certificate is signed by account key {}, but {username}'s account key as first seen here is {}: \
         the server may be adding a device {username} never linked; compare safety numbers (`qpc verify {username}`)",
        short_key(account_key),
        short_key(pinned)
    )
}

/// The first hex digits of a key, enough to tell keys apart in a message.
fn short_key(key: &[u8]) -> String {
    let hex = hex::encode(key);
    hex.get(..16).unwrap_or(&hex).to_owned()
}

impl Local {
    /// The check every leaf entering a group passes: its account key is the
    /// pinned one (or none is pinned yet for its account).
    pub(crate) fn check_member(&self, member: &VerifiedMember) -> Result<(), MemberRefusal> {
        match self.store.pinned_account_key(&member.username) {
            Ok(Some((pinned, _))) if pinned != member.account_key => {
                Err(MemberRefusal::Refused(other_key_reason(&member.username, &member.account_key, &pinned)))
            }
            Ok(_) => Ok(()),
            // Our store failed: nothing is said about the member (not a fork).
            Err(error) => Err(MemberRefusal::Local(format!("the pinned account keys cannot be read: {error}"))),
        }
    }

    /// Pins `account_key` for `username` when nothing is pinned for it, and
    /// refuses it when another key is.
    pub(crate) fn check_and_pin(&self, username: &str, account_key: &[u8]) -> Result<(), SdkError> {
        match self.store.pin_account_key(username, account_key, now_ms())? {
            Pinned::New | Pinned::Same => Ok(()),
            Pinned::Other { account_key: pinned, .. } => Err(SdkError::UnknownDevice {
                user: username.to_owned(),
                reason: other_key_reason(username, account_key, &pinned),
            }),
        }
    }

    /// Pins the account key of every account in the group's roster that has
    /// none pinned yet (after a Welcome or a commit whose leaves were checked).
    pub(crate) fn pin_roster(&self, group_id: &[u8]) -> Result<(), SdkError> {
        for leaf in self.mls.member_devices(group_id)? {
            if let Err(error) = self.check_and_pin(&leaf.member.username, &leaf.member.account_key) {
                // Only a group joined before pins existed can hold such a leaf.
                tracing::warn!(group = %hex::encode(group_id), %error, "a member's account key differs from its pin");
            }
        }
        Ok(())
    }

    /// At open: our own account key, and once, every roster of the groups
    /// joined before this version pinned keys.
    pub(crate) fn pin_known_accounts(&self) -> Result<(), SdkError> {
        const PINNED_ROSTERS: &str = "pinned_rosters";
        self.check_and_pin(&self.username, &self.account_key)?;
        if self.store.meta(PINNED_ROSTERS)? == 1 {
            return Ok(());
        }
        for conversation in self.store.conversations()?.into_iter().filter(|c| c.active) {
            if self.mls.has_group(&conversation.group_id)? && self.mls.is_active(&conversation.group_id)? {
                self.pin_roster(&conversation.group_id)?;
            }
        }
        self.store.set_meta(PINNED_ROSTERS, 1)?;
        Ok(())
    }
}
