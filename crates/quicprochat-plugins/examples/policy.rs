//! Server policy: username rules, banned accounts, payload limits per group kind, as a plugin library (`libqpc_plugin_policy.so`); the logic, its
//! config keys and its tests are in `quicprochat_plugins::policy`.

quicprochat_plugin_api::qpc_plugin!(quicprochat_plugins::policy::Policy, name = "policy");
