//! Example plugins of `qpc-server`, one cdylib each under `examples/`
//! (`cargo build -p quicprochat-plugins --examples` puts them in
//! `target/debug/examples/`), and what they share: reading a plugin's
//! `config` table. Writing a plugin: docs/plugins.md.
//!
//! Each plugin's logic lives in a module of this library, where its unit
//! tests call the [`Plugin`](quicprochat_plugin_api::sdk::Plugin) methods
//! directly; the example file only exports it with `qpc_plugin!`:
//! - [`ratelimit`]: messages per (sender, group), `RETRY_LATER` over the rate;
//! - [`audit`]: a JSON-lines metadata log with pseudonymised names;
//! - [`policy`]: username deny-list, registration allow-list, banned
//!   accounts, size limits per group kind;
//! - [`webhook`]: an HTTP POST per event, from a background thread.
//!
//! The C example (`c/guest_gate.c`) is built and loaded by the plugin API
//! crate's `tests/it/c_example.rs`.
//!
//! This crate has no `unsafe` code: the C boundary is the SDK's
//! (`quicprochat_plugin_api::sdk`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod audit;
pub mod policy;
pub mod ratelimit;
pub mod webhook;

/// Reads a plugin's `config` table (JSON text from the host) into `T`, with
/// an error naming the plugin and the key at fault
/// (`ratelimit: bad config: key `burst`: invalid type: string "x", expected u32`;
/// an unknown key is named by serde's message, under its parent table).
pub fn parse_config<T: serde::de::DeserializeOwned>(plugin: &str, config: &str) -> Result<T, String> {
    let config = if config.trim().is_empty() { "{}" } else { config };
    let mut json = serde_json::Deserializer::from_str(config);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let message = e.inner().to_string();
        let mut segments: Vec<_> = e.path().iter().collect();
        if message.starts_with("unknown field") {
            segments.pop();
        }
        let key = segments.iter().fold(String::new(), |mut key, segment| {
            if !key.is_empty() && !matches!(segment, serde_path_to_error::Segment::Seq { .. }) {
                key.push('.');
            }
            key.push_str(&segment.to_string());
            key
        });
        if key.is_empty() {
            format!("{plugin}: bad config: {message}")
        } else {
            format!("{plugin}: bad config: key `{key}`: {message}")
        }
    })
}

/// A value that fails a config key's check: the error names the plugin,
/// the key and the rule (`ratelimit: config key `burst` must be at least 1`).
pub(crate) fn bad_key(plugin: &str, key: &str, rule: impl std::fmt::Display) -> String {
    format!("{plugin}: config key `{key}` {rule}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Config {
        burst: u32,
    }

    #[test]
    fn errors_name_the_plugin_and_the_key() {
        let unknown = parse_config::<Config>("ratelimit", r#"{"burts": 3}"#).expect_err("unknown key");
        assert!(unknown.starts_with("ratelimit: bad config: unknown field `burts`"), "{unknown}");
        let missing = parse_config::<Config>("ratelimit", "").expect_err("missing key");
        assert!(missing.starts_with("ratelimit: bad config: missing field `burst`"), "{missing}");
        let bad_type = parse_config::<Config>("ratelimit", r#"{"burst": "x"}"#).expect_err("bad type");
        assert!(bad_type.starts_with("ratelimit: bad config: key `burst`: invalid type: string"), "{bad_type}");
        assert_eq!(
            bad_key("ratelimit", "burst", "must be at least 1"),
            "ratelimit: config key `burst` must be at least 1"
        );
    }
}
