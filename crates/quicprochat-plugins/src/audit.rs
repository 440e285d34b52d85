//! A metadata audit log: one JSON line per registration, login, group
//! creation, stored message and accepted commit, appended to a file, with
//! every user name replaced by a pseudonym (the first 16 hex digits of
//! HMAC-SHA256 under the operator's key: stable, so one user's lines can be
//! followed, but not reversible without the key). Group and message ids are
//! hex. The gates always allow: the log watches, it does not decide.
//!
//! Config keys (the plugin's `config` table):
//! ```toml
//! [plugins.config]
//! path = "/var/log/qpc/audit.jsonl"   # absolute; created (mode 0600) or appended to
//! key = "<hex, at least 16 bytes>"     # pseudonym key, e.g. `openssl rand -hex 32`
//! ```
//!
//! Lines (`ts_ms` is the server's clock when the hook ran):
//! ```text
//! {"ts_ms":…,"event":"register","user":"<pseudonym>","invite_used":false}
//! {"ts_ms":…,"event":"login","user":"<pseudonym>","device":"<hex>"}
//! {"ts_ms":…,"event":"group_create","creator":"<pseudonym>","group":"<hex>","kind":"named"}
//! {"ts_ms":…,"event":"stored","sender":"<pseudonym>","group":"<hex>","message":"<hex>","kind":"application","size":…,"epoch":…,"recipients":["<pseudonym>" or "<pseudonym>#<device>",…]}
//! {"ts_ms":…,"event":"commit","committer":"<pseudonym>","group":"<hex>","epoch":…,"added":[…],"removed":[…]}
//! ```
//! `register`, `login` and `group_create` are written when the gate is
//! asked, before the server decides: another gate may still refuse.
//!
//! What it does not log: message bytes (hooks never see them), key
//! fingerprints and source addresses (either would undo the pseudonyms),
//! group names. Each line is written whole and flushed under one lock, so a
//! reader (`tail -f`) sees complete lines; a write that fails is reported in
//! the server's log and the hook still allows.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use hmac::{Hmac, Mac};
use quicprochat_plugin_api::abi::QPC_LOG_WARN;
use quicprochat_plugin_api::host::GateAnswer;
use quicprochat_plugin_api::sdk::{
    CommitInfo, EntryKind, GateResult, GroupCreateInfo, GroupKind, Hooks, Host, LoginInfo, Plugin, RegisterInfo,
    StoredInfo,
};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{bad_key, parse_config};

const PLUGIN: &str = "audit";

/// Shortest pseudonym key, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// Hex digits of a pseudonym (64 bits of the HMAC).
pub const PSEUDONYM_HEX: usize = 16;

/// The config as the operator wrote it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    path: PathBuf,
    key: String,
}

/// The plugin: the open log and the pseudonym key.
pub struct Audit {
    log: Mutex<BufWriter<File>>,
    key: Hmac<Sha256>,
    host: Host,
    failed_writes: AtomicU64,
}

/// One line of the log, before its time stamp.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Record {
    Register {
        user: String,
        invite_used: bool,
    },
    Login {
        user: String,
        device: String,
    },
    GroupCreate {
        creator: String,
        group: String,
        kind: &'static str,
    },
    Stored {
        sender: String,
        group: String,
        message: String,
        kind: &'static str,
        size: u64,
        epoch: u64,
        recipients: Vec<String>,
    },
    Commit {
        committer: String,
        group: String,
        epoch: u64,
        added: Vec<String>,
        removed: Vec<String>,
    },
}

#[derive(Debug, Serialize)]
struct Line {
    ts_ms: u64,
    #[serde(flatten)]
    record: Record,
}

impl Audit {
    /// Opens the log of `config` (JSON).
    fn open(config: &str, host: Host) -> Result<Audit, String> {
        let raw: RawConfig = parse_config(PLUGIN, config)?;
        if !raw.path.is_absolute() {
            return Err(bad_key(PLUGIN, "path", format!("must be an absolute path, not {:?}", raw.path)));
        }
        // The key's value is never echoed in an error.
        let key = hex::decode(raw.key.trim()).map_err(|e| bad_key(PLUGIN, "key", format!("is not hex ({e})")))?;
        if key.len() < MIN_KEY_BYTES {
            let rule =
                format!("must be at least {MIN_KEY_BYTES} bytes ({} hex digits), not {}", 2 * MIN_KEY_BYTES, key.len());
            return Err(bad_key(PLUGIN, "key", rule));
        }
        let key = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| bad_key(PLUGIN, "key", e))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&raw.path)
            .map_err(|e| format!("{PLUGIN}: cannot open {}: {e}", raw.path.display()))?;
        Ok(Audit { log: Mutex::new(BufWriter::new(file)), key, host, failed_writes: AtomicU64::new(0) })
    }

    /// `name`'s pseudonym: the first [`PSEUDONYM_HEX`] hex digits of its HMAC.
    pub fn pseudonym(&self, name: &str) -> String {
        let mut mac = self.key.clone();
        mac.update(name.as_bytes());
        let mut digits = hex::encode(mac.finalize().into_bytes());
        digits.truncate(PSEUDONYM_HEX);
        digits
    }

    fn pseudonyms(&self, names: &[&str]) -> Vec<String> {
        names.iter().map(|name| self.pseudonym(name)).collect()
    }

    /// A device queue's pseudonym: the user's, then the device id as the
    /// server names it (`name#<hex>` → `<pseudonym>#<hex>`), so a user's
    /// devices share their pseudonym.
    fn queue_pseudonyms(&self, queues: &[&str]) -> Vec<String> {
        let one = |queue: &&str| match queue.split_once('#') {
            Some((name, device)) => format!("{}#{device}", self.pseudonym(name)),
            None => self.pseudonym(queue),
        };
        queues.iter().map(one).collect()
    }

    /// Writes `record` as one line and flushes it.
    fn write(&self, record: Record) {
        let line = Line { ts_ms: self.host.now_ms(), record };
        let mut text = match serde_json::to_vec(&line) {
            Ok(text) => text,
            Err(e) => return self.failed(&format!("cannot encode a line: {e}")),
        };
        text.push(b'\n');
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = log.write_all(&text).and_then(|()| log.flush()) {
            drop(log);
            self.failed(&format!("cannot write the audit log: {e}"));
        }
    }

    /// Reports a failed write: the first, then every power of two (a full
    /// disk must not flood the server's log).
    fn failed(&self, why: &str) {
        let failures = self.failed_writes.fetch_add(1, Ordering::Relaxed) + 1;
        if failures.is_power_of_two() {
            self.host.log(QPC_LOG_WARN, &format!("{why} ({failures} lines lost so far)"));
        }
    }
}

fn entry_kind(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Application => "application",
        EntryKind::Commit => "commit",
        EntryKind::Welcome => "welcome",
        EntryKind::Proposal => "proposal",
    }
}

impl Plugin for Audit {
    const HOOKS: Hooks =
        Hooks { register: true, login: true, group_create: true, stored: true, commit: true, ..Hooks::NONE };

    fn load(config: &str, host: &Host) -> Result<Self, String> {
        Audit::open(config, *host)
    }

    fn on_register(&self, event: &RegisterInfo<'_>) -> GateResult {
        self.write(Record::Register { user: self.pseudonym(event.username), invite_used: event.invite_used });
        Ok(GateAnswer::Allow)
    }

    fn on_login(&self, event: &LoginInfo<'_>) -> GateResult {
        self.write(Record::Login { user: self.pseudonym(event.username), device: hex::encode(event.device_id) });
        Ok(GateAnswer::Allow)
    }

    fn on_group_create(&self, event: &GroupCreateInfo<'_>) -> GateResult {
        let kind = match event.kind {
            GroupKind::Named => "named",
            GroupKind::Direct => "direct",
        };
        let creator = self.pseudonym(event.creator);
        self.write(Record::GroupCreate { creator, group: hex::encode(event.group_id), kind });
        Ok(GateAnswer::Allow)
    }

    fn on_stored(&self, event: &StoredInfo<'_>) {
        self.write(Record::Stored {
            sender: self.pseudonym(event.sender),
            group: hex::encode(event.group_id),
            message: hex::encode(event.message_id),
            kind: entry_kind(event.kind),
            size: event.payload_len,
            epoch: event.epoch,
            recipients: self.queue_pseudonyms(&event.recipients),
        });
    }

    fn on_commit(&self, event: &CommitInfo<'_>) {
        self.write(Record::Commit {
            committer: self.pseudonym(event.committer),
            group: hex::encode(event.group_id),
            epoch: event.new_epoch,
            added: self.pseudonyms(&event.added),
            removed: self.pseudonyms(&event.removed),
        });
    }

    fn on_shutdown(self) {
        let mut log = self.log.into_inner().unwrap_or_else(PoisonError::into_inner);
        let flushed = log.flush().and_then(|()| log.get_ref().sync_data());
        if let Err(e) = flushed {
            self.host.log(QPC_LOG_WARN, &format!("cannot flush the audit log at shutdown: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use serde_json::{json, Value};

    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f";

    fn open(path: &Path) -> Audit {
        let config = json!({ "path": path, "key": KEY }).to_string();
        Audit::load(&config, &Host::get()).expect("loads")
    }

    fn lines(path: &Path) -> Vec<Value> {
        let text = std::fs::read_to_string(path).expect("the log exists");
        assert!(text.ends_with('\n'), "whole lines only: {text:?}");
        text.lines().map(|line| serde_json::from_str(line).expect("each line is JSON")).collect()
    }

    /// Drops the time stamp (checked apart) so lines compare whole.
    fn without_time(mut line: Value) -> Value {
        let ts_ms = line.as_object_mut().and_then(|object| object.remove("ts_ms"));
        assert!(ts_ms.and_then(|ts| ts.as_u64()).is_some_and(|ts| ts > 0), "a time stamp in ms");
        line
    }

    #[test]
    fn every_hook_writes_one_line_with_pseudonyms_and_hex_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let audit = open(&path);
        let (alice, bob, carol) = (audit.pseudonym("alice"), audit.pseudonym("bob"), audit.pseudonym("carol"));
        assert_eq!(alice.len(), PSEUDONYM_HEX);
        assert_ne!(alice, bob);

        let register =
            RegisterInfo { username: "alice", key_fingerprint: &[7; 32], source_address: "", invite_used: true };
        assert_eq!(audit.on_register(&register), Ok(GateAnswer::Allow));
        let login =
            LoginInfo { username: "alice", device_id: &[0xab; 8], key_fingerprint: &[7; 32], source_address: "" };
        assert_eq!(audit.on_login(&login), Ok(GateAnswer::Allow));
        let group = GroupCreateInfo { kind: GroupKind::Direct, creator: "alice", group_id: &[1, 2], name: "secret" };
        assert_eq!(audit.on_group_create(&group), Ok(GateAnswer::Allow));
        audit.on_stored(&StoredInfo {
            kind: EntryKind::Application,
            sender: "alice",
            group_id: &[1, 2],
            message_id: &[0xff, 0],
            payload_len: 1234,
            epoch: 5,
            stored_at_ms: 1,
            recipients: vec!["bob", "carol", "alice#0a0b0c0d0e0f1011"],
        });
        let commit =
            CommitInfo { committer: "bob", group_id: &[1, 2], new_epoch: 6, added: vec!["carol"], removed: vec![] };
        audit.on_commit(&commit);

        let written: Vec<Value> = lines(&path).into_iter().map(without_time).collect();
        assert_eq!(
            written,
            vec![
                json!({"event": "register", "user": alice, "invite_used": true}),
                json!({"event": "login", "user": alice, "device": "abababababababab"}),
                json!({"event": "group_create", "creator": alice, "group": "0102", "kind": "direct"}),
                json!({"event": "stored", "sender": alice, "group": "0102", "message": "ff00", "kind": "application",
                       "size": 1234, "epoch": 5,
                       "recipients": [bob, carol, format!("{alice}#0a0b0c0d0e0f1011")]}),
                json!({"event": "commit", "committer": bob, "group": "0102", "epoch": 6, "added": [carol], "removed": []}),
            ]
        );
        let text = std::fs::read_to_string(&path).expect("read");
        for secret in ["alice", "bob", "secret", "07".repeat(32).as_str()] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "only the server's user reads the log");
        audit.on_shutdown();
    }

    #[test]
    fn pseudonyms_depend_on_the_key_and_the_log_is_appended_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let first = open(&path);
        first
            .on_register(&RegisterInfo {
                username: "alice",
                key_fingerprint: &[],
                source_address: "",
                invite_used: false,
            })
            .expect("allows");
        let alice = first.pseudonym("alice");
        first.on_shutdown();

        let second = open(&path);
        assert_eq!(second.pseudonym("alice"), alice, "stable across restarts");
        second
            .on_login(&LoginInfo { username: "alice", device_id: &[], key_fingerprint: &[], source_address: "" })
            .expect("allows");
        second.on_shutdown();
        assert_eq!(lines(&path).len(), 2);

        let other_key = json!({ "path": path, "key": "ff".repeat(16) }).to_string();
        let other = Audit::load(&other_key, &Host::get()).expect("loads");
        assert_ne!(other.pseudonym("alice"), alice);
    }

    #[test]
    fn bad_configs_are_refused_naming_the_key_without_echoing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let refused = |config: Value| match Audit::load(&config.to_string(), &Host::get()) {
            Ok(_) => panic!("accepted {config}"),
            Err(error) => error,
        };
        let relative = refused(json!({ "path": "audit.jsonl", "key": KEY }));
        assert!(relative.starts_with("audit: config key `path` must be an absolute path"), "{relative}");
        let short = refused(json!({ "path": path, "key": "00112233" }));
        assert!(short.starts_with("audit: config key `key` must be at least 16 bytes"), "{short}");
        let not_hex = refused(json!({ "path": path, "key": "zz-my-secret-passphrase-zz" }));
        assert!(not_hex.starts_with("audit: config key `key` is not hex") && !not_hex.contains("secret"), "{not_hex}");
        assert!(refused(json!({ "key": KEY })).contains("missing field `path`"));
        assert!(refused(json!({ "path": path, "key": KEY, "level": 1 })).contains("unknown field `level`"));
        let missing_dir = refused(json!({ "path": dir.path().join("no/such/dir.jsonl"), "key": KEY }));
        assert!(missing_dir.starts_with("audit: cannot open"), "{missing_dir}");
    }
}
