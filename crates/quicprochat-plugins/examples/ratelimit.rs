//! Rate limit per (sender, group) on `on_enqueue`, as a plugin library (`libqpc_plugin_ratelimit.so`); the logic, its
//! config keys and its tests are in `quicprochat_plugins::ratelimit`.

quicprochat_plugin_api::qpc_plugin!(quicprochat_plugins::ratelimit::RateLimit, name = "ratelimit");
