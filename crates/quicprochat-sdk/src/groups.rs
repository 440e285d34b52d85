//! Group operations: create, add, remove, leave, and direct conversations.
//!
//! Every membership change is an MLS commit the Delivery Service must accept
//! for the group's current epoch. When another member committed first the
//! server answers `STALE_EPOCH`; the client then drops its pending commit,
//! processes what it missed, and builds the commit again, transparently.
//!
//! When the answer is lost (a transport error, a timeout, `UNAVAILABLE`) the
//! server may or may not have applied the commit, and it never echoes a
//! commit to its sender. So the same bytes under the same message id are
//! submitted again: the server's idempotency record answers a commit it
//! already applied, and the client merges instead of forking off one epoch
//! behind its group.

use quicprochat_core::names::{group_id_hosted_by, Naming};
use quicprochat_core::PendingCommit;
use quicprochat_core::{DeviceId, MlsClient};
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};

use crate::client::{GroupSummary, Inner, QpcClient};
use crate::direct::group_name_problem;
use crate::local_store::Conversation;
use crate::{message_id, now_ms, random_id, SdkError};

/// How often a commit is rebuilt after losing its epoch before giving up.
const MAX_COMMIT_ATTEMPTS: u32 = 8;
/// How often the same commit is resubmitted when its outcome is unknown.
const MAX_UNKNOWN_OUTCOME_RETRIES: u32 = 6;
/// First pause before such a resubmission; doubles each time (0.1 s … 3.2 s).
const UNKNOWN_OUTCOME_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

impl QpcClient {
    /// Creates a group named `name` with us as its only member.
    pub async fn create_group(&self, name: &str) -> Result<GroupSummary, SdkError> {
        validate_group_name(name)?;
        let mut inner = self.inner.lock().await;
        if inner.store.find_active(name)?.is_some() {
            return Err(SdkError::InvalidInput(format!("you already have a group named {name:?}")));
        }
        let conversation = inner.create_group(name, v1::GroupKind::Named, None).await?;
        inner.add_our_other_devices(&conversation).await;
        Ok(GroupSummary { name: name.to_owned(), members: vec![inner.username.clone()] })
    }

    /// Adds users to a group: one commit, with a Welcome for each new member.
    pub async fn add_members(&self, group: &str, users: &[String]) -> Result<(), SdkError> {
        let mut inner = self.inner.lock().await;
        let conversation = inner.active_conversation(group)?;
        if conversation.peer.is_some() {
            return Err(SdkError::InvalidInput("a direct conversation has exactly two members; create a group".into()));
        }
        let users = normalise_users(users, inner.mls.home_domain())?;
        let members = inner.mls.members(&conversation.group_id)?;
        if let Some(already) = users.iter().find(|user| members.contains(user)) {
            return Err(SdkError::InvalidInput(format!("{already} is already a member of {group}")));
        }
        inner.add_members(&conversation, &users).await
    }

    /// Removes users from a group; they cannot read anything sent afterwards.
    pub async fn remove_members(&self, group: &str, users: &[String]) -> Result<(), SdkError> {
        let mut inner = self.inner.lock().await;
        let conversation = inner.active_conversation(group)?;
        let users = normalise_users(users, inner.mls.home_domain())?;
        if users.contains(&inner.username) {
            return Err(SdkError::InvalidInput("to remove yourself, use `group leave`".into()));
        }
        let members = inner.mls.members(&conversation.group_id)?;
        if let Some(missing) = users.iter().find(|user| !members.contains(user)) {
            return Err(SdkError::InvalidInput(format!("{missing} is not a member of {group}")));
        }
        let group_id = conversation.group_id.clone();
        inner.submit_commit_with_retry(&conversation, |mls| mls.remove_members(&group_id, &users).map(Some)).await
    }

    /// Leaves a group: removes our other devices' leaves (one commit), then
    /// asks the other members to remove us (the next member
    /// online commits it) and stops showing it here at once. Until a commit
    /// removes us, every commit that does not (its committer had not seen
    /// the leave, or left it out) makes this client send the leave again
    /// for the new epoch, whenever it syncs.
    pub async fn leave_group(&self, group: &str) -> Result<(), SdkError> {
        let mut inner = self.inner.lock().await;
        let conversation = inner.active_conversation(group)?;
        inner.sync().await?;
        if inner.store.broken(&conversation.group_id)?.is_some() {
            // No leave can be committed in a group no one can follow: stop
            // following it here (the server keeps us on its roster).
            inner.store.retire_broken(&conversation.group_id)?;
            return Ok(());
        }
        // The account leaves, not only this device: a commit removes our
        // other devices' leaves first (a proposal can remove its sender only).
        let group_id = conversation.group_id.clone();
        let own_device = inner.mls.device_id();
        let mut others = inner.mls.devices_of(&group_id, &inner.username)?;
        others.retain(|device| *device != own_device);
        if !others.is_empty() {
            inner.submit_commit_with_retry(&conversation, |mls| mls.remove_devices(&group_id, &others)).await?;
        }
        let proposal = inner.mls.leave_group(&conversation.group_id)?;
        let request = v1::LeaveGroupRequest {
            group_id: conversation.group_id.clone().into(),
            proposal: proposal.into(),
            message_id: message_id().into(),
        };
        let _: v1::LeaveGroupResponse = inner.rpc().call(Method::LeaveGroup, &request).await?;
        let epoch = inner.mls.epoch(&conversation.group_id)?;
        inner.store.leave(&conversation.group_id, epoch)?;
        Ok(())
    }
}

impl Inner {
    /// Creates the MLS group and registers it with the server.
    pub(crate) async fn create_group(
        &mut self,
        name: &str,
        kind: v1::GroupKind,
        peer: Option<&str>,
    ) -> Result<Conversation, SdkError> {
        // A federating home hosts the group: its domain is in the id, which
        // every member's client (on any server) reads as the group's hub.
        let group_id = match self.mls.home_domain() {
            Some(domain) => group_id_hosted_by(rand::random(), domain),
            None => random_id(),
        };
        let bootstrap = self.mls.create_group(&group_id)?;
        let request = v1::CreateGroupRequest {
            group_id: group_id.clone().into(),
            name: name.to_owned(),
            kind: kind as i32,
            group_info: bootstrap.group_info.into(),
            ratchet_tree: bootstrap.ratchet_tree.into(),
        };
        if let Err(error) = self.rpc().call::<_, v1::CreateGroupResponse>(Method::CreateGroup, &request).await {
            self.mls.delete_group(&group_id)?;
            return Err(error.into());
        }
        self.store.add_conversation(&group_id, name, peer, now_ms())?;
        Ok(Conversation { group_id, name: name.to_owned(), peer: peer.map(str::to_owned), active: true })
    }

    /// Fetches a key package of every device of each user, then commits
    /// adding them all.
    pub(crate) async fn add_members(&mut self, conversation: &Conversation, users: &[String]) -> Result<(), SdkError> {
        let mut key_packages = Vec::with_capacity(users.len());
        for user in users {
            key_packages.extend(self.fetch_key_packages(user, None).await?);
        }
        let group_id = conversation.group_id.clone();
        self.submit_commit_with_retry(conversation, |mls| mls.add_members(&group_id, &key_packages).map(Some)).await
    }

    /// One key package of each current device of `user` (or of `device`
    /// only), each checked ([`Inner::check_fetched_key_package`]) and each
    /// of another device.
    pub(crate) async fn fetch_key_packages(
        &mut self,
        user: &str,
        device: Option<DeviceId>,
    ) -> Result<Vec<Vec<u8>>, SdkError> {
        let request = v1::FetchKeyPackageRequest {
            username: user.to_owned(),
            device_id: device.map(|device| device.as_bytes().to_vec()).unwrap_or_default().into(),
        };
        let response: v1::FetchKeyPackageResponse = self.rpc().call(Method::FetchKeyPackage, &request).await?;
        // A server before devices answers `key_package` only.
        let packages = if response.key_packages.is_empty() {
            vec![response.key_package.to_vec()]
        } else {
            response.key_packages.iter().map(|package| package.to_vec()).collect()
        };
        // Every package is checked before any key is pinned: all of them must
        // be of one account key, so the server's order decides nothing.
        let mut devices = std::collections::BTreeSet::new();
        let mut account_key: Option<Vec<u8>> = None;
        for package in &packages {
            let (served, key) = self.check_fetched_key_package(user, package)?;
            if device.is_some_and(|asked| asked != served) || !devices.insert(served) {
                return Err(SdkError::Refused(format!(
                    "the server served {user}'s key packages for devices other than those asked for"
                )));
            }
            if account_key.as_ref().is_some_and(|first| *first != key) {
                return Err(SdkError::UnknownDevice {
                    user: user.to_owned(),
                    reason: "the devices served are certified by different account keys".to_owned(),
                });
            }
            account_key = Some(key);
        }
        if let Some(key) = account_key {
            self.check_and_pin(user, &key)?;
        }
        Ok(packages)
    }

    /// A key package the server served for `user` must name `user`, be of
    /// a device certified by the account key pinned for `user` (checked, and
    /// pinned when none is, by the caller once every package served agrees:
    /// a server cannot pass off another account's package, or a device of
    /// its own, as `user`'s), and stay valid for
    /// [`MIN_KEY_PACKAGE_REMAINING_SECS`](quicprochat_core::ds::MIN_KEY_PACKAGE_REMAINING_SECS).
    /// Returns the package's device and account key (pinned by the caller
    /// once every package served is checked).
    fn check_fetched_key_package(&self, user: &str, key_package: &[u8]) -> Result<(DeviceId, Vec<u8>), SdkError> {
        let info = quicprochat_core::ds::validate_key_package(key_package)
            .map_err(|error| SdkError::Refused(format!("the key package served for {user} is invalid: {error}")))?;
        // As names read here: a user of our own domain is named bare.
        if Naming::at_home(self.mls.home_domain()).read(&info.username) != user {
            return Err(SdkError::Refused(format!(
                "the server served a key package of {:?} when asked for {user:?}",
                info.username
            )));
        }
        // Every member must process the Add before the package expires.
        let now = now_ms() / 1000;
        let remaining = quicprochat_core::ds::MIN_KEY_PACKAGE_REMAINING_SECS;
        quicprochat_core::ds::check_key_package_lifetime(info.not_before, info.not_after, now, remaining)
            .map_err(|error| SdkError::Refused(format!("the key package served for {user}: {error}")))?;
        Ok((info.device_id(), info.identity_key))
    }

    /// Builds a commit with `build`, submits it, and merges it once accepted.
    /// On `STALE_EPOCH` it catches up and rebuilds; `build` returning `None`
    /// means there is nothing (left) to commit.
    pub(crate) async fn submit_commit_with_retry(
        &mut self,
        conversation: &Conversation,
        mut build: impl FnMut(&MlsClient) -> Result<Option<PendingCommit>, quicprochat_core::MlsError>,
    ) -> Result<(), SdkError> {
        let group_id = &conversation.group_id;
        for _attempt in 0..MAX_COMMIT_ATTEMPTS {
            // A broken group's epoch is one no other member shares: any
            // commit in it is lost. Stop instead of retrying.
            self.refuse_if_broken(conversation)?;
            let Some(pending) = build(&self.mls)? else {
                return Ok(());
            };
            let request = v1::SubmitCommitRequest {
                group_id: group_id.clone().into(),
                epoch: pending.epoch,
                commit: pending.commit.into(),
                welcome: pending.welcome.unwrap_or_default().into(),
                message_id: message_id().into(),
            };
            match self.submit_until_answered(&request).await {
                Ok(_) => {
                    self.mls.merge_pending_commit(group_id)?;
                    return Ok(());
                }
                Err(error) if error.status() == Some(Status::StaleEpoch) => {
                    tracing::debug!(group = %conversation.display_name(), "commit lost its epoch; catching up");
                    self.mls.clear_pending_commit(group_id)?;
                    self.sync().await?;
                    if !self.mls.is_active(group_id)? {
                        return Err(SdkError::InvalidInput(format!(
                            "you were removed from {} meanwhile",
                            conversation.display_name()
                        )));
                    }
                }
                Err(error) => {
                    self.mls.clear_pending_commit(group_id)?;
                    return Err(error.into());
                }
            }
        }
        Err(SdkError::CommitContention { group: conversation.display_name(), attempts: MAX_COMMIT_ATTEMPTS })
    }

    /// Sends our leave of `group_id` again for its current epoch (the last
    /// one died with its epoch, left out of the commit that ended it).
    pub(crate) async fn leave_again(&mut self, group_id: &[u8]) -> Result<(), SdkError> {
        let Some(sent_in) = self.store.leaving_epoch(group_id)? else { return Ok(()) };
        if !self.mls.is_active(group_id)? || sent_in >= self.mls.epoch(group_id)? {
            // Removed meanwhile, or our leave for this epoch is out already.
            return Ok(());
        }
        let proposal = self.mls.leave_group(group_id)?;
        let request = v1::LeaveGroupRequest {
            group_id: group_id.to_vec().into(),
            proposal: proposal.into(),
            message_id: message_id().into(),
        };
        let _: v1::LeaveGroupResponse = self.rpc().call(Method::LeaveGroup, &request).await?;
        self.store.leave(group_id, self.mls.epoch(group_id)?)?;
        Ok(())
    }

    /// Submits `request`, resubmitting it unchanged (same message id) while
    /// the outcome is unknown, so an applied commit is never rebuilt.
    async fn submit_until_answered(
        &mut self,
        request: &v1::SubmitCommitRequest,
    ) -> Result<v1::SubmitCommitResponse, quicprochat_rpc::RpcError> {
        let mut pause = UNKNOWN_OUTCOME_BACKOFF;
        let mut retries = 0;
        loop {
            match self.rpc().call::<_, v1::SubmitCommitResponse>(Method::SubmitCommit, request).await {
                Err(error) if outcome_unknown(&error) && retries < MAX_UNKNOWN_OUTCOME_RETRIES => {
                    tracing::debug!(%error, retries, "commit outcome unknown; resubmitting the same commit");
                    retries += 1;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                outcome => return outcome,
            }
        }
    }
}

/// Whether the server may have applied a commit whose answer was `error`:
/// the answer was lost (transport error, timeout) or the server gave up
/// (`UNAVAILABLE`, `DEADLINE_EXCEEDED`). Any other status is a verdict.
/// A connection this client closed itself (`disconnect()`) is not retried.
fn outcome_unknown(error: &quicprochat_rpc::RpcError) -> bool {
    use quicprochat_rpc::RpcError;
    match error {
        RpcError::Connection(quinn::ConnectionError::LocallyClosed) => false,
        error => match error.status() {
            Some(status) => matches!(status, Status::Unavailable | Status::DeadlineExceeded),
            None => error.is_retryable(),
        },
    }
}

fn validate_group_name(name: &str) -> Result<(), SdkError> {
    match group_name_problem(name) {
        Some(problem) => Err(SdkError::InvalidInput(format!("group name {name:?} {problem}"))),
        None => Ok(()),
    }
}

/// Users as names read here: a leading `@` dropped, and a user of our own
/// domain (`name@home`) named bare.
fn normalise_users(users: &[String], home: Option<&str>) -> Result<Vec<String>, SdkError> {
    if users.is_empty() {
        return Err(SdkError::InvalidInput("name at least one user".into()));
    }
    let naming = Naming::at_home(home);
    let mut normalised: Vec<String> = users.iter().map(|user| naming.read(user.trim_start_matches('@'))).collect();
    normalised.sort();
    normalised.dedup();
    Ok(normalised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        for good in ["team", "Team Rocket", "ünïcode"] {
            assert!(validate_group_name(good).is_ok(), "{good}");
        }
        for bad in ["", "@bob", "dm:a:b", " padded", "tab\there", &"x".repeat(65)] {
            assert!(validate_group_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users_are_normalised() {
        let users = normalise_users(&["@bob".into(), "alice".into(), "bob".into()], None).expect("valid");
        assert_eq!(users, ["alice", "bob"]);
        assert!(normalise_users(&[], None).is_err());
        let at_home = normalise_users(&["bob@a.example".into(), "@carol@c.example".into()], Some("a.example"));
        assert_eq!(at_home.expect("valid"), ["bob", "carol@c.example"]);
    }
}
