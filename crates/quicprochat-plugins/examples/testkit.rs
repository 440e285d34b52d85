//! A plugin for the server's own tests, not for production: each behaviour
//! a test needs is a config key. `deny_register_prefix` denies names
//! starting with it; `panic_on_register` panics for that exact name;
//! `sleep_enqueue_ms` sleeps in every `on_enqueue` (a plugin past its
//! deadline); `fail_enqueue` makes `on_enqueue` fail; `retry_enqueue_ms`
//! answers every `on_enqueue` with retry-later; `record` appends one JSON
//! line per hook call to that file (what observers were told);
//! `shutdown_marker` is written by `on_shutdown`.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use quicprochat_plugin_api::host::GateAnswer;
use quicprochat_plugin_api::qpc_plugin;
use quicprochat_plugin_api::sdk::{
    CommitInfo, EnqueueInfo, GateResult, GroupCreateInfo, Hooks, Host, LoginInfo, Plugin, RegisterInfo, StoredInfo,
};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    deny_register_prefix: Option<String>,
    panic_on_register: Option<String>,
    sleep_enqueue_ms: Option<u64>,
    #[serde(default)]
    fail_enqueue: bool,
    retry_enqueue_ms: Option<u32>,
    record: Option<String>,
    shutdown_marker: Option<String>,
}

struct Testkit {
    config: Config,
    record: Option<Mutex<std::fs::File>>,
}

impl Testkit {
    fn record(&self, line: serde_json::Value) {
        if let Some(file) = &self.record {
            if let Ok(mut file) = file.lock() {
                let _ = writeln!(file, "{line}");
            }
        }
    }
}

impl Plugin for Testkit {
    const HOOKS: Hooks =
        Hooks { register: true, login: true, group_create: true, enqueue: true, stored: true, commit: true };

    fn load(config: &str, host: &Host) -> Result<Self, String> {
        let config: Config = quicprochat_plugins::parse_config("testkit", config)?;
        let record = match &config.record {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("testkit: record {path}: {e}"))?,
            )),
            None => None,
        };
        host.log(quicprochat_plugin_api::QPC_LOG_INFO, "testkit loaded");
        Ok(Testkit { config, record })
    }

    fn on_register(&self, event: &RegisterInfo<'_>) -> GateResult {
        self.record(json!({
            "hook": "on_register",
            "username": event.username,
            "invite_used": event.invite_used,
            "source_address": event.source_address,
        }));
        if self.config.panic_on_register.as_deref() == Some(event.username) {
            panic!("testkit: asked to panic for {}", event.username);
        }
        match &self.config.deny_register_prefix {
            Some(prefix) if event.username.starts_with(prefix.as_str()) => {
                Ok(GateAnswer::Deny { reason: format!("names starting with {prefix} are reserved") })
            }
            _ => Ok(GateAnswer::Allow),
        }
    }

    fn on_login(&self, event: &LoginInfo<'_>) -> GateResult {
        self.record(json!({
            "hook": "on_login",
            "username": event.username,
            "device_id": hex::encode(event.device_id),
            "key_fingerprint": hex::encode(event.key_fingerprint),
        }));
        Ok(GateAnswer::Allow)
    }

    fn on_group_create(&self, event: &GroupCreateInfo<'_>) -> GateResult {
        let direct = event.kind == quicprochat_plugin_api::sdk::GroupKind::Direct;
        self.record(json!({"hook": "on_group_create", "creator": event.creator, "direct": direct}));
        Ok(GateAnswer::Allow)
    }

    fn on_enqueue(&self, event: &EnqueueInfo<'_>) -> GateResult {
        self.record(json!({
            "hook": "on_enqueue",
            "sender": event.sender,
            "sender_device": hex::encode(event.sender_device),
            "size": event.payload_len,
        }));
        if let Some(ms) = self.config.sleep_enqueue_ms {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if self.config.fail_enqueue {
            return Err("testkit: asked to fail".into());
        }
        if let Some(after_ms) = self.config.retry_enqueue_ms {
            return Ok(GateAnswer::RetryLater { after_ms, reason: "testkit: slow down".into() });
        }
        Ok(GateAnswer::Allow)
    }

    fn on_stored(&self, event: &StoredInfo<'_>) {
        self.record(json!({
            "hook": "on_stored",
            "sender": event.sender,
            "message_id": hex::encode(event.message_id),
            "size": event.payload_len,
            "recipients": event.recipients,
        }));
    }

    fn on_commit(&self, event: &CommitInfo<'_>) {
        self.record(json!({
            "hook": "on_commit",
            "committer": event.committer,
            "epoch": event.new_epoch,
            "added": event.added,
            "removed": event.removed,
        }));
    }

    fn on_shutdown(self) {
        if let Some(path) = &self.config.shutdown_marker {
            let _ = std::fs::write(path, "on_shutdown ran\n");
        }
    }
}

qpc_plugin!(Testkit, name = "testkit");
