//! A server policy in four rules, each optional:
//! - `deny_usernames`: names nobody may register (`PERMISSION_DENIED`,
//!   "username not allowed on this server");
//! - `allow_registration`: when present, the only names that may register;
//! - `banned`: accounts refused at login, when sending and when creating a
//!   group ("account banned"), and whose name cannot be registered again;
//! - `max_payload_bytes`: the largest application message per group kind
//!   (commits, welcomes and proposals are not limited here).
//!
//! Names match exactly, or by prefix with a trailing `*` (`"guest-*"`);
//! `*` anywhere else is refused at load.
//!
//! Config keys (the plugin's `config` table):
//! ```toml
//! [plugins.config]
//! deny_usernames = ["admin", "root", "support*"]
//! allow_registration = ["staff-*", "alice"]          # optional
//! banned = ["mallory"]
//! max_payload_bytes = { named = 1048576, direct = 65536 }  # optional, each too
//! ```
//!
//! Group kinds: `on_enqueue` carries no kind, so the plugin remembers the
//! direct groups it sees created (at most [`MAX_REMEMBERED_GROUPS`]) and
//! applies the `named` limit to every other group, including direct groups
//! created before the server last started.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use quicprochat_plugin_api::abi::QPC_LOG_WARN;
use quicprochat_plugin_api::host::GateAnswer;
use quicprochat_plugin_api::sdk::{
    EnqueueInfo, EntryKind, GateResult, GroupCreateInfo, GroupKind, Hooks, Host, LoginInfo, Plugin, RegisterInfo,
};
use serde::Deserialize;

use crate::{bad_key, parse_config};

const PLUGIN: &str = "policy";

/// Direct groups remembered at most (32 bytes of id and some overhead each).
pub const MAX_REMEMBERED_GROUPS: usize = 1_000_000;

/// The reason given for a registration refused by a name rule.
pub const NAME_NOT_ALLOWED: &str = "username not allowed on this server";

/// The reason given to a banned account.
pub const BANNED: &str = "account banned";

/// The config as the operator wrote it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    deny_usernames: Vec<String>,
    allow_registration: Option<Vec<String>>,
    #[serde(default)]
    banned: Vec<String>,
    #[serde(default)]
    max_payload_bytes: PayloadLimits,
}

/// The largest application message per group kind; `None` is no limit.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayloadLimits {
    named: Option<u64>,
    direct: Option<u64>,
}

/// A name, or a prefix of names (written with a trailing `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(key: &str, text: &str) -> Result<Pattern, String> {
        let bad = |rule: &str| bad_key(PLUGIN, key, format!("has the pattern {text:?}, but {rule}"));
        if text.is_empty() {
            return Err(bad("a pattern may not be empty"));
        }
        match text.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => Err(bad("`*` may only end a pattern")),
            Some(prefix) => Ok(Pattern::Prefix(prefix.to_owned())),
            None if text.contains('*') => Err(bad("`*` may only end a pattern")),
            None => Ok(Pattern::Exact(text.to_owned())),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => name == exact,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

fn patterns(key: &str, texts: &[String]) -> Result<Vec<Pattern>, String> {
    texts.iter().map(|text| Pattern::parse(key, text)).collect()
}

fn any_matches(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|pattern| pattern.matches(name))
}

/// The plugin: its checked rules and the direct groups it has seen created.
pub struct Policy {
    deny_usernames: Vec<Pattern>,
    allow_registration: Option<Vec<Pattern>>,
    banned: HashSet<String>,
    limits: PayloadLimits,
    direct_groups: Mutex<HashSet<Vec<u8>>>,
    /// Set once `direct_groups` is full (and the operator was told).
    forgetting: AtomicBool,
    host: Host,
}

impl Policy {
    fn new(config: &str, host: Host) -> Result<Policy, String> {
        let raw: RawConfig = parse_config(PLUGIN, config)?;
        let allow_registration = match &raw.allow_registration {
            Some(texts) => Some(patterns("allow_registration", texts)?),
            None => None,
        };
        Ok(Policy {
            deny_usernames: patterns("deny_usernames", &raw.deny_usernames)?,
            allow_registration,
            banned: raw.banned.into_iter().collect(),
            limits: raw.max_payload_bytes,
            direct_groups: Mutex::new(HashSet::new()),
            forgetting: AtomicBool::new(false),
            host,
        })
    }

    fn deny(reason: &str) -> GateResult {
        Ok(GateAnswer::Deny { reason: reason.to_owned() })
    }

    /// Remembers a direct group, if a size limit could tell it apart.
    fn remember(&self, event: &GroupCreateInfo<'_>) {
        if event.kind != GroupKind::Direct || (self.limits.named.is_none() && self.limits.direct.is_none()) {
            return;
        }
        let mut direct_groups = self.direct_groups.lock().unwrap_or_else(PoisonError::into_inner);
        if direct_groups.len() < MAX_REMEMBERED_GROUPS {
            direct_groups.insert(event.group_id.to_vec());
        } else if !self.forgetting.swap(true, Ordering::Relaxed) {
            let message = format!("{MAX_REMEMBERED_GROUPS} direct groups remembered: newer ones get the named limit");
            self.host.log(QPC_LOG_WARN, &message);
        }
    }

    fn kind_of(&self, group_id: &[u8]) -> GroupKind {
        let direct_groups = self.direct_groups.lock().unwrap_or_else(PoisonError::into_inner);
        if direct_groups.contains(group_id) {
            GroupKind::Direct
        } else {
            GroupKind::Named
        }
    }
}

impl Plugin for Policy {
    const HOOKS: Hooks = Hooks { register: true, login: true, group_create: true, enqueue: true, ..Hooks::NONE };

    fn load(config: &str, host: &Host) -> Result<Self, String> {
        Policy::new(config, *host)
    }

    fn on_register(&self, event: &RegisterInfo<'_>) -> GateResult {
        let name = event.username;
        let allowed = match &self.allow_registration {
            Some(allowed) => any_matches(allowed, name),
            None => true,
        };
        if !allowed || any_matches(&self.deny_usernames, name) || self.banned.contains(name) {
            return Policy::deny(NAME_NOT_ALLOWED);
        }
        Ok(GateAnswer::Allow)
    }

    fn on_login(&self, event: &LoginInfo<'_>) -> GateResult {
        if self.banned.contains(event.username) {
            return Policy::deny(BANNED);
        }
        Ok(GateAnswer::Allow)
    }

    fn on_group_create(&self, event: &GroupCreateInfo<'_>) -> GateResult {
        if self.banned.contains(event.creator) {
            return Policy::deny(BANNED);
        }
        self.remember(event);
        Ok(GateAnswer::Allow)
    }

    fn on_enqueue(&self, event: &EnqueueInfo<'_>) -> GateResult {
        if self.banned.contains(event.sender) {
            return Policy::deny(BANNED);
        }
        if event.kind != EntryKind::Application {
            return Ok(GateAnswer::Allow);
        }
        let (kind, limit) = match self.kind_of(event.group_id) {
            GroupKind::Named => ("named", self.limits.named),
            GroupKind::Direct => ("direct", self.limits.direct),
        };
        match limit {
            Some(max) if event.payload_len > max => {
                let len = event.payload_len;
                Policy::deny(&format!(
                    "message of {len} bytes is over this server's limit of {max} bytes in {kind} groups"
                ))
            }
            _ => Ok(GateAnswer::Allow),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn policy(config: Value) -> Policy {
        Policy::load(&config.to_string(), &Host::get()).expect("valid config")
    }

    fn register(policy: &Policy, username: &str) -> GateAnswer {
        let event = RegisterInfo { username, key_fingerprint: &[], source_address: "", invite_used: false };
        policy.on_register(&event).expect("answers")
    }

    fn send(policy: &Policy, sender: &str, group_id: &[u8], kind: EntryKind, payload_len: u64) -> GateAnswer {
        let event = EnqueueInfo { kind, sender, sender_device: &[], group_id, message_id: &[], payload_len, epoch: 1 };
        policy.on_enqueue(&event).expect("answers")
    }

    fn create(policy: &Policy, creator: &str, group_id: &[u8], kind: GroupKind) -> GateAnswer {
        policy.on_group_create(&GroupCreateInfo { kind, creator, group_id, name: "" }).expect("answers")
    }

    fn denied(reason: &str) -> GateAnswer {
        GateAnswer::Deny { reason: reason.to_owned() }
    }

    #[test]
    fn the_deny_list_takes_exact_names_and_prefixes() {
        let policy = policy(json!({ "deny_usernames": ["admin", "support*"] }));
        assert_eq!(register(&policy, "admin"), denied(NAME_NOT_ALLOWED));
        assert_eq!(register(&policy, "administrator"), GateAnswer::Allow, "exact, not a prefix");
        assert_eq!(register(&policy, "support"), denied(NAME_NOT_ALLOWED));
        assert_eq!(register(&policy, "support-desk"), denied(NAME_NOT_ALLOWED));
        assert_eq!(register(&policy, "alice"), GateAnswer::Allow);
    }

    #[test]
    fn an_allow_list_admits_only_its_names_and_the_deny_list_still_applies() {
        let policy = policy(json!({ "allow_registration": ["staff-*", "alice"], "deny_usernames": ["staff-root"] }));
        assert_eq!(register(&policy, "alice"), GateAnswer::Allow);
        assert_eq!(register(&policy, "staff-bob"), GateAnswer::Allow);
        assert_eq!(register(&policy, "bob"), denied(NAME_NOT_ALLOWED));
        assert_eq!(register(&policy, "staff-root"), denied(NAME_NOT_ALLOWED));
        let nobody = self::policy(json!({ "allow_registration": [] }));
        assert_eq!(register(&nobody, "alice"), denied(NAME_NOT_ALLOWED), "an empty list closes registration");
    }

    #[test]
    fn banned_accounts_cannot_log_in_send_create_groups_or_register_again() {
        let policy = policy(json!({ "banned": ["mallory"] }));
        let login = LoginInfo { username: "mallory", device_id: &[], key_fingerprint: &[], source_address: "" };
        assert_eq!(policy.on_login(&login), Ok(denied(BANNED)));
        assert_eq!(send(&policy, "mallory", b"g", EntryKind::Commit, 10), denied(BANNED));
        assert_eq!(create(&policy, "mallory", b"g", GroupKind::Named), denied(BANNED));
        assert_eq!(register(&policy, "mallory"), denied(NAME_NOT_ALLOWED));
        let login = LoginInfo { username: "alice", ..login };
        assert_eq!(policy.on_login(&login), Ok(GateAnswer::Allow));
        assert_eq!(send(&policy, "alice", b"g", EntryKind::Application, 10), GateAnswer::Allow);
    }

    #[test]
    fn payload_limits_follow_the_group_kind_it_saw_created() {
        let policy = policy(json!({ "max_payload_bytes": { "named": 1000, "direct": 100 } }));
        assert_eq!(create(&policy, "alice", b"dm", GroupKind::Direct), GateAnswer::Allow);
        assert_eq!(create(&policy, "alice", b"team", GroupKind::Named), GateAnswer::Allow);
        assert_eq!(send(&policy, "alice", b"dm", EntryKind::Application, 100), GateAnswer::Allow);
        let over = "message of 101 bytes is over this server's limit of 100 bytes in direct groups";
        assert_eq!(send(&policy, "alice", b"dm", EntryKind::Application, 101), denied(over));
        assert_eq!(send(&policy, "alice", b"team", EntryKind::Application, 1000), GateAnswer::Allow);
        let over = "message of 1001 bytes is over this server's limit of 1000 bytes in named groups";
        assert_eq!(send(&policy, "alice", b"unknown", EntryKind::Application, 1001), denied(over), "named by default");
        assert_eq!(
            send(&policy, "alice", b"dm", EntryKind::Commit, 5000),
            GateAnswer::Allow,
            "commits are not limited"
        );
    }

    #[test]
    fn a_missing_limit_is_no_limit() {
        let policy = policy(json!({ "max_payload_bytes": { "direct": 10 } }));
        assert_eq!(send(&policy, "alice", b"team", EntryKind::Application, u64::MAX), GateAnswer::Allow);
        let open = self::policy(json!({}));
        assert_eq!(send(&open, "alice", b"team", EntryKind::Application, u64::MAX), GateAnswer::Allow);
        assert_eq!(register(&open, "anyone"), GateAnswer::Allow);
    }

    #[test]
    fn bad_configs_are_refused_naming_the_key() {
        let refused = |config: Value| match Policy::load(&config.to_string(), &Host::get()) {
            Ok(_) => panic!("accepted {config}"),
            Err(error) => error,
        };
        let star = refused(json!({ "deny_usernames": ["ad*min"] }));
        assert_eq!(
            star,
            "policy: config key `deny_usernames` has the pattern \"ad*min\", but `*` may only end a pattern"
        );
        let empty = refused(json!({ "allow_registration": [""] }));
        assert!(empty.starts_with("policy: config key `allow_registration`"), "{empty}");
        let nested = refused(json!({ "max_payload_bytes": { "named": 1, "group": 2 } }));
        assert!(nested.contains("unknown field `group`"), "{nested}");
        let negative = refused(json!({ "max_payload_bytes": { "named": -1 } }));
        assert!(negative.contains("key `max_payload_bytes.named`"), "{negative}");
        assert!(refused(json!({ "banned": "mallory" })).contains("key `banned`"));
    }
}
