//! A plugin that allows every message: its `on_enqueue` gate returns at
//! once. It measures what the plugin machinery itself costs a send (B3 in
//! BENCHMARKS.md) and is the smallest plugin to copy from.

use quicprochat_plugin_api::host::GateAnswer;
use quicprochat_plugin_api::qpc_plugin;
use quicprochat_plugin_api::sdk::{EnqueueInfo, GateResult, Hooks, Host, Plugin};

struct Noop;

impl Plugin for Noop {
    const HOOKS: Hooks = Hooks { enqueue: true, ..Hooks::NONE };

    fn load(_config: &str, _host: &Host) -> Result<Self, String> {
        Ok(Noop)
    }

    fn on_enqueue(&self, _event: &EnqueueInfo<'_>) -> GateResult {
        Ok(GateAnswer::Allow)
    }
}

qpc_plugin!(Noop, name = "noop");
