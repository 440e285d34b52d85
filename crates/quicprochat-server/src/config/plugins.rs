//! The `plugins` key: the `[[plugins]]` tables of native plugins to load
//! (issue 20; docs/plugins.md). In the file, `[[plugins]]` tables (or an
//! inline array); in `QPC_PLUGINS`, the same inline TOML array. Each has an
//! absolute `path`, an optional `sha256` pin, a `config` table handed to
//! the plugin as JSON, and per gate an `on_error` policy and a `deadline`.
//! The file itself is checked when the server loads it, not here.

use std::path::PathBuf;
use std::time::Duration;

use super::values::{duration_in, duration_literal, table_array, Raw, MILLISECOND};
use super::{FailurePolicy, GateHook, PluginConfig};

const ALLOWED: &str = "expected an array of tables { path = \"/abs/libplugin.so\", sha256 = \"…\" (optional), \
                       config = { … }, on_error = { on_register = \"deny\" }, deadline = { on_enqueue = \"100ms\" }, \
                       source_address = false }";

/// Most plugins one server loads (each costs a thread and a hop per hook).
pub(crate) const MAX_PLUGINS: usize = 16;
/// Most bytes of one plugin's `config`, as JSON.
pub(crate) const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// The longest deadline a gate may have: a request waits this long at most.
const MAX_DEADLINE: Duration = Duration::from_secs(10);

/// Parses and checks the whole plugin table.
pub(crate) fn plugins(raw: Raw<'_>) -> Result<Vec<PluginConfig>, String> {
    let array = table_array(raw, ALLOWED)?;
    if array.len() > MAX_PLUGINS {
        return Err(format!("at most {MAX_PLUGINS} plugins"));
    }
    array
        .iter()
        .enumerate()
        .map(|(index, value)| plugin(value).map_err(|problem| format!("plugin {}: {problem}", index + 1)))
        .collect()
}

fn plugin(value: &toml::Value) -> Result<PluginConfig, String> {
    let Some(table) = value.as_table() else { return Err(ALLOWED.to_owned()) };
    const KEYS: [&str; 6] = ["path", "sha256", "config", "on_error", "deadline", "source_address"];
    if let Some(unknown) = table.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(format!("unknown key \"{unknown}\" (a plugin has {})", KEYS.join(", ")));
    }
    let path = match table.get("path") {
        Some(toml::Value::String(path)) if PathBuf::from(path).is_absolute() => PathBuf::from(path),
        Some(_) => return Err("path: expected an absolute path to the plugin's shared library".into()),
        None => return Err("path is missing".into()),
    };
    let sha256 = match table.get("sha256") {
        None => None,
        Some(toml::Value::String(pin)) if is_sha256(pin) => {
            Some(pin.trim_start_matches("sha256:").to_ascii_lowercase())
        }
        Some(_) => {
            return Err("sha256: expected 64 hex digits (`sha256sum` of the library), optionally after sha256:".into())
        }
    };
    let config_json = match table.get("config") {
        None => "{}".to_owned(),
        Some(config @ toml::Value::Table(_)) => {
            json_safe(config, "config")?;
            serde_json::to_string(config).map_err(|e| format!("config: {e}"))?
        }
        Some(_) => return Err("config: expected a table".into()),
    };
    if config_json.len() > MAX_CONFIG_BYTES {
        return Err(format!("config: at most {MAX_CONFIG_BYTES} bytes as JSON"));
    }
    let mut plugin = PluginConfig::new(path);
    plugin.sha256 = sha256;
    plugin.config_json = config_json;
    plugin.source_address = match table.get("source_address") {
        None => false,
        Some(toml::Value::Boolean(share)) => *share,
        Some(_) => return Err("source_address: expected true or false".into()),
    };
    for (name, value) in hook_table(table, "on_error")? {
        let hook = gate(name, "on_error")?;
        plugin.on_error[hook as usize] = match value.as_str() {
            Some("allow") => FailurePolicy::Allow,
            Some("deny") => FailurePolicy::Deny,
            _ => return Err(format!("on_error.{name}: expected \"allow\" or \"deny\"")),
        };
    }
    for (name, value) in hook_table(table, "deadline")? {
        let hook = gate(name, "deadline")?;
        plugin.deadline[hook as usize] = duration_in(Raw::Toml(value), MILLISECOND, MAX_DEADLINE)
            .map_err(|allowed| format!("deadline.{name}: {allowed}"))?;
    }
    Ok(plugin)
}

/// Refuses what JSON cannot carry as written: TOML dates (they would reach
/// the plugin as an object of serde's) and infinite or NaN floats (`null`).
fn json_safe(value: &toml::Value, at: &str) -> Result<(), String> {
    match value {
        toml::Value::Datetime(_) => Err(format!("{at}: a date; write it as a string")),
        toml::Value::Float(float) if !float.is_finite() => Err(format!("{at}: {float} has no JSON form")),
        toml::Value::Table(table) => table.iter().try_for_each(|(key, value)| json_safe(value, &format!("{at}.{key}"))),
        toml::Value::Array(array) => {
            array.iter().enumerate().try_for_each(|(index, value)| json_safe(value, &format!("{at}[{index}]")))
        }
        _ => Ok(()),
    }
}

fn hook_table<'a>(table: &'a toml::Table, key: &str) -> Result<Vec<(&'a str, &'a toml::Value)>, String> {
    match table.get(key) {
        None => Ok(Vec::new()),
        Some(toml::Value::Table(hooks)) => Ok(hooks.iter().map(|(name, value)| (name.as_str(), value)).collect()),
        Some(_) => Err(format!("{key}: expected a table of gates, like {{ on_register = … }}")),
    }
}

fn gate(name: &str, key: &str) -> Result<GateHook, String> {
    GateHook::ALL.into_iter().find(|hook| hook.name() == name).ok_or_else(|| {
        let names: Vec<&str> = GateHook::ALL.iter().map(|hook| hook.name()).collect();
        format!("{key}.{name}: not a gate (gates: {})", names.join(", "))
    })
}

fn is_sha256(pin: &str) -> bool {
    let hex = pin.strip_prefix("sha256:").unwrap_or(pin);
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The plugin table as an inline TOML array (for `gen-config` and messages).
pub(crate) fn render(plugins: &[PluginConfig]) -> String {
    let array: Vec<toml::Value> = plugins
        .iter()
        .map(|plugin| {
            let mut table = toml::Table::new();
            table.insert("path".into(), plugin.path.display().to_string().into());
            if let Some(pin) = &plugin.sha256 {
                table.insert("sha256".into(), pin.clone().into());
            }
            if let Ok(config) = serde_json::from_str::<toml::Value>(&plugin.config_json) {
                table.insert("config".into(), config);
            }
            let defaults = PluginConfig::new(plugin.path.clone());
            let mut on_error = toml::Table::new();
            let mut deadline = toml::Table::new();
            for hook in GateHook::ALL {
                let i = hook as usize;
                if plugin.on_error[i] != defaults.on_error[i] {
                    on_error.insert(hook.name().into(), plugin.on_error[i].name().into());
                }
                if plugin.deadline[i] != defaults.deadline[i] {
                    let literal = duration_literal(plugin.deadline[i]);
                    deadline.insert(hook.name().into(), literal.trim_matches('"').to_owned().into());
                }
            }
            if !on_error.is_empty() {
                table.insert("on_error".into(), on_error.into());
            }
            if !deadline.is_empty() {
                table.insert("deadline".into(), deadline.into());
            }
            if plugin.source_address {
                table.insert("source_address".into(), true.into());
            }
            toml::Value::Table(table)
        })
        .collect();
    toml::Value::Array(array).to_string()
}
