//! [`load`]: builds the validated [`ServerConfig`] from its layers.
//!
//! Layers, lowest to highest: built-in defaults ([`defaults`]), the TOML
//! file, `QPC_*` environment variables, command-line flags. Each layer only
//! sets the keys it mentions; every value is parsed and range-checked as it
//! is applied, and the rules between keys are checked once at the end. The
//! first problem found is returned as a [`ConfigError`].
//!
//! The loader is pure: the caller reads the file and the environment and
//! passes them in, so every rule is testable without touching the process.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use super::keys::{find, section_of, Key, KEYS};
use super::values::Raw;
use super::ServerConfig;

/// Data directory when none is configured (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "./qpc-data";
/// Listen address when none is configured.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7443));

/// The built-in defaults: what `gen-config` prints and every layer starts from.
pub fn defaults() -> ServerConfig {
    ServerConfig::new(PathBuf::from(DEFAULT_DATA_DIR), DEFAULT_LISTEN)
}

/// A config file's name (for messages) and text.
#[derive(Debug, Clone, Copy)]
pub struct ConfigFile<'a> {
    /// How to refer to the file in errors, usually its path.
    pub name: &'a str,
    /// The TOML text.
    pub text: &'a str,
}

/// Values given as command-line flags (the highest layer), unparsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--data-dir`
    pub data_dir: Option<String>,
    /// `--listen`
    pub listen: Option<String>,
    /// `--metrics-listen`
    pub metrics_listen: Option<String>,
    /// `--domain`
    pub domain: Option<String>,
    /// `--log-format`
    pub log_format: Option<String>,
    /// `--log-level`
    pub log_level: Option<String>,
    /// `--registration`
    pub registration: Option<String>,
}

impl Flags {
    /// The value given for `flag` (as named in the key table), if any.
    pub(crate) fn value_of(&self, flag: &str) -> Option<&str> {
        let value = match flag {
            "--data-dir" => &self.data_dir,
            "--listen" => &self.listen,
            "--metrics-listen" => &self.metrics_listen,
            "--domain" => &self.domain,
            "--log-format" => &self.log_format,
            "--log-level" => &self.log_level,
            "--registration" => &self.registration,
            _ => &None,
        };
        value.as_deref()
    }
}

/// Everything the loader reads.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The config file, if one was given.
    pub file: Option<ConfigFile<'a>>,
    /// Environment variables; only the `QPC_*` names of the key table are
    /// read, and an empty value counts as unset.
    pub env: &'a BTreeMap<String, String>,
    /// Command-line flags.
    pub flags: &'a Flags,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The config file with this name.
    File(String),
    /// This environment variable.
    Env(&'static str),
    /// This flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(name) => write!(formatter, "in {name}"),
            Origin::Env(name) => write!(formatter, "from {name}"),
            Origin::Flag(flag) => write!(formatter, "from {flag}"),
        }
    }
}

/// Why the configuration was refused. None is retryable: the operator must
/// fix the file, the environment or the flags (`qpc-server` exits with 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not valid TOML.
    #[error("{file} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The TOML parser's message (with line and column).
        message: String,
    },
    /// The file has a key the server does not know (often a typo).
    #[error("unknown key \"{key}\" in {file} (`qpc-server gen-config` prints every key)")]
    UnknownKey {
        /// The file.
        file: String,
        /// The dotted key, e.g. `transport.foo`.
        key: String,
    },
    /// A value that does not parse or is out of range.
    #[error("{key} = {value} ({origin}): {allowed}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// The value as given.
        value: String,
        /// Which layer gave it.
        origin: Origin,
        /// What is allowed.
        allowed: String,
    },
    /// Values that are valid alone but not together.
    #[error("{key} = {value}: {allowed}")]
    Conflict {
        /// The dotted key that must change.
        key: &'static str,
        /// Its effective value.
        value: String,
        /// The rule it breaks.
        allowed: String,
    },
}

/// Applies every layer of `sources` over the defaults and validates the result.
pub fn load(sources: &Sources<'_>) -> Result<ServerConfig, ConfigError> {
    let mut config = defaults();
    if let Some(file) = sources.file {
        let table: toml::Table = toml::from_str(file.text)
            .map_err(|error| ConfigError::Syntax { file: file.name.to_owned(), message: error.to_string() })?;
        apply_table(&mut config, &table, "", file.name)?;
    }
    for key in KEYS {
        let value = sources.env.get(key.env).map(String::as_str).filter(|value| !value.trim().is_empty());
        if let Some(value) = value {
            apply(key, &mut config, Raw::Text(value), Origin::Env(key.env))?;
        }
    }
    for key in KEYS {
        let Some(flag) = key.flag else { continue };
        if let Some(value) = sources.flags.value_of(flag) {
            apply(key, &mut config, Raw::Text(value), Origin::Flag(flag))?;
        }
    }
    check_consistency(&config)?;
    Ok(config)
}

fn apply(key: &Key, config: &mut ServerConfig, raw: Raw<'_>, origin: Origin) -> Result<(), ConfigError> {
    (key.apply)(config, raw).map_err(|allowed| ConfigError::Invalid {
        key: key.name.to_owned(),
        value: raw.shown(),
        origin,
        allowed,
    })
}

/// Applies one TOML table whose dotted path is `prefix` (empty at the top).
fn apply_table(config: &mut ServerConfig, table: &toml::Table, prefix: &str, file: &str) -> Result<(), ConfigError> {
    for (name, value) in table {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        if let Some(key) = find(&path) {
            apply(key, config, Raw::Toml(value), Origin::File(file.to_owned()))?;
            continue;
        }
        let is_section = KEYS.iter().any(|key| is_within(section_of(key.name), &path));
        if !is_section {
            return Err(ConfigError::UnknownKey { file: file.to_owned(), key: path });
        }
        match value {
            toml::Value::Table(inner) => apply_table(config, inner, &path, file)?,
            other => {
                return Err(ConfigError::Invalid {
                    allowed: format!("expected a table [{path}]"),
                    key: path,
                    value: other.to_string(),
                    origin: Origin::File(file.to_owned()),
                })
            }
        }
    }
    Ok(())
}

/// Whether `section` is `path` or nested inside it.
fn is_within(section: &str, path: &str) -> bool {
    section == path || section.strip_prefix(path).is_some_and(|rest| rest.starts_with('.'))
}

/// The effective value of `name`, as a TOML literal.
fn shown(config: &ServerConfig, name: &str) -> String {
    find(name).map(|key| (key.render)(config)).unwrap_or_default()
}

fn check_consistency(config: &ServerConfig) -> Result<(), ConfigError> {
    let conflict = |key: &'static str, other: &str, rule: &str| ConfigError::Conflict {
        key,
        value: shown(config, key),
        allowed: format!("{rule} {other} ({})", shown(config, other)),
    };
    let transport = &config.transport;
    if transport.keep_alive >= transport.idle_timeout {
        return Err(conflict("transport.keep_alive", "transport.idle_timeout", "must be below"));
    }
    if transport.stream_receive_window > transport.connection_receive_window {
        return Err(conflict(
            "transport.stream_receive_window",
            "transport.connection_receive_window",
            "must not exceed",
        ));
    }
    check_federation(config, &conflict)?;
    let connections = &config.connections;
    if connections.retry_above_pending > connections.max_pending_handshakes {
        return Err(conflict(
            "connections.retry_above_pending",
            "connections.max_pending_handshakes",
            "must not exceed",
        ));
    }
    Ok(())
}

/// Rules of the federation keys: a peer is never ourselves, needs the
/// federation port, and no certificate pin names two peers.
fn check_federation(
    config: &ServerConfig,
    conflict: &dyn Fn(&'static str, &str, &str) -> ConfigError,
) -> Result<(), ConfigError> {
    let federation = &config.federation;
    if federation.retry_min > federation.retry_max {
        return Err(conflict("federation.retry_min", "federation.retry_max", "must not exceed"));
    }
    if !federation.peers.is_empty() && federation.listen.is_none() {
        return Err(conflict("federation.listen", "federation.peers", "must be set to use"));
    }
    if federation.peers.iter().any(|peer| peer.domain == config.domain) {
        return Err(conflict("federation.peers", "server.domain", "must not list this server's own domain"));
    }
    let mut pins = quicprochat_rpc::federation::PeerPins::default();
    for peer in &federation.peers {
        for pin in &peer.fingerprints {
            if let Some(other) = pins.insert(*pin, &peer.domain) {
                return Err(ConfigError::Conflict {
                    key: "federation.peers",
                    value: pin.to_string(),
                    allowed: format!(
                        "a fingerprint pins one peer, but this one is listed for {other} and {}",
                        peer.domain
                    ),
                });
            }
        }
    }
    Ok(())
}
