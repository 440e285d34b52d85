//! Metadata audit log (JSON lines, pseudonymised names), as a plugin library (`libqpc_plugin_audit.so`); the logic, its
//! config keys and its tests are in `quicprochat_plugins::audit`.

quicprochat_plugin_api::qpc_plugin!(quicprochat_plugins::audit::Audit, name = "audit");
