//! Webhook notifier: an HTTP POST per configured event, from a background thread, as a plugin library (`libqpc_plugin_webhook.so`); the logic, its
//! config keys and its tests are in `quicprochat_plugins::webhook`.

quicprochat_plugin_api::qpc_plugin!(quicprochat_plugins::webhook::Webhook, name = "webhook");
