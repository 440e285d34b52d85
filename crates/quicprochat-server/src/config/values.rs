//! Raw values and their parsers: each turns what one layer gave (a TOML
//! value, or text from the environment or a flag) into a typed value, or
//! says what is allowed. Also the TOML literals `gen-config` prints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{LogFormat, RegistrationPolicy};

/// A value as one layer supplied it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Raw<'a> {
    /// A TOML value from the config file: strings and integers are distinct.
    Toml(&'a toml::Value),
    /// Text from an environment variable or a flag.
    Text(&'a str),
}

impl<'a> Raw<'a> {
    /// The value as the operator wrote it, for error messages.
    pub(crate) fn shown(self) -> String {
        match self {
            Raw::Toml(value) => value.to_string(),
            Raw::Text(text) => format!("{text:?}"),
        }
    }

    fn text(self, expected: &str) -> Result<&'a str, String> {
        match self {
            Raw::Toml(toml::Value::String(text)) => Ok(text.trim()),
            Raw::Text(text) => Ok(text.trim()),
            Raw::Toml(_) => Err(expected.to_owned()),
        }
    }

    fn integer(self, expected: &str) -> Result<u64, String> {
        match self {
            Raw::Toml(toml::Value::Integer(value)) => u64::try_from(*value).map_err(|_| expected.to_owned()),
            Raw::Text(text) => text.trim().parse().map_err(|_| expected.to_owned()),
            Raw::Toml(_) => Err(expected.to_owned()),
        }
    }
}

const DURATION_LIKE: &str = "expected a duration like \"10s\"";
pub(crate) const MILLISECOND: Duration = Duration::from_millis(1);
pub(crate) const SECOND: Duration = Duration::from_secs(1);
pub(crate) const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 3600);
/// Ten of humantime's years (365.25 days each), so it prints as "10years".
pub(crate) const TEN_YEARS: Duration = Duration::from_secs(10 * 31_557_600);
pub(crate) const KIB: u64 = 1024;
pub(crate) const MAX_WINDOW: u64 = 256 * 1024 * 1024;
pub(crate) const MAX_BURST: u64 = 1_000_000;
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

pub(crate) fn duration_in(raw: Raw<'_>, min: Duration, max: Duration) -> Result<Duration, String> {
    let value = humantime::parse_duration(raw.text(DURATION_LIKE)?).map_err(|_| DURATION_LIKE.to_owned())?;
    if value < min || value > max {
        return Err(format!(
            "expected a duration from {} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(value)
}

pub(crate) fn integer_in(raw: Raw<'_>, min: u64, max: u64, what: &str) -> Result<u64, String> {
    let allowed = format!("expected {what} from {min} to {max}");
    let value = raw.integer(&allowed)?;
    if value < min || value > max {
        return Err(allowed);
    }
    Ok(value)
}

pub(crate) fn u32_in(raw: Raw<'_>, min: u32, max: u64, what: &str) -> Result<u32, String> {
    let max = max.min(u64::from(u32::MAX));
    let value = integer_in(raw, u64::from(min), max, what)?;
    u32::try_from(value).map_err(|_| format!("expected {what} from {min} to {max}"))
}

pub(crate) fn address(raw: Raw<'_>) -> Result<SocketAddr, String> {
    const ALLOWED: &str = "expected an IP address and port like \"0.0.0.0:7443\"";
    raw.text(ALLOWED)?.parse().map_err(|_| ALLOWED.to_owned())
}

pub(crate) fn optional_address(raw: Raw<'_>) -> Result<Option<SocketAddr>, String> {
    const ALLOWED: &str = "expected an IP address and port like \"127.0.0.1:9100\", or \"off\"";
    match raw.text(ALLOWED)? {
        "off" => Ok(None),
        text => text.parse().map(Some).map_err(|_| ALLOWED.to_owned()),
    }
}

pub(crate) fn domain(raw: Raw<'_>) -> Result<String, String> {
    const ALLOWED: &str = "expected a DNS name like \"chat.example.org\" (letters, digits, '-' and '.')";
    let text = raw.text(ALLOWED)?.to_ascii_lowercase();
    if !quicprochat_core::names::is_valid_domain(&text) {
        return Err(ALLOWED.to_owned());
    }
    Ok(text)
}

pub(crate) fn data_dir(raw: Raw<'_>) -> Result<PathBuf, String> {
    const ALLOWED: &str = "expected a directory path";
    match raw.text(ALLOWED)? {
        "" => Err(ALLOWED.to_owned()),
        text => Ok(PathBuf::from(text)),
    }
}

/// A `tracing` filter; a bare word must be a level (a bare target is almost
/// always a typo for one).
pub(crate) fn log_level(raw: Raw<'_>) -> Result<String, String> {
    const ALLOWED: &str =
        "expected a level (trace, debug, info, warn, error, off) or a filter like \"info,qpc_server=debug\"";
    let text = raw.text(ALLOWED)?;
    let directives_ok = text.split(',').all(|directive| {
        let directive = directive.trim();
        directive.contains('=')
            || directive.contains('[')
            || LOG_LEVELS.contains(&directive.to_ascii_lowercase().as_str())
    });
    if text.is_empty() || !directives_ok || tracing_subscriber::EnvFilter::builder().parse(text).is_err() {
        return Err(ALLOWED.to_owned());
    }
    Ok(text.to_owned())
}

pub(crate) fn log_format(raw: Raw<'_>) -> Result<LogFormat, String> {
    const ALLOWED: &str = "expected \"pretty\" or \"json\"";
    match raw.text(ALLOWED)?.to_ascii_lowercase().as_str() {
        "pretty" => Ok(LogFormat::Pretty),
        "json" => Ok(LogFormat::Json),
        _ => Err(ALLOWED.to_owned()),
    }
}

pub(crate) fn registration(raw: Raw<'_>) -> Result<RegistrationPolicy, String> {
    const ALLOWED: &str = "expected \"open\", \"invite\" or \"closed\"";
    match raw.text(ALLOWED)?.to_ascii_lowercase().as_str() {
        "open" => Ok(RegistrationPolicy::Open),
        "invite" => Ok(RegistrationPolicy::Invite),
        "closed" => Ok(RegistrationPolicy::Closed),
        _ => Err(ALLOWED.to_owned()),
    }
}

pub(crate) fn string_literal(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

pub(crate) fn duration_literal(duration: Duration) -> String {
    string_literal(&humantime::format_duration(duration).to_string())
}

/// An array of tables: the TOML array from the file, or the same inline
/// array as text (`[{ … }, { … }]`) from the environment; `allowed` when
/// it is neither.
pub(crate) fn table_array(raw: Raw<'_>, allowed: &str) -> Result<Vec<toml::Value>, String> {
    match raw {
        Raw::Toml(toml::Value::Array(array)) => Ok(array.clone()),
        Raw::Text(text) => match toml::from_str::<toml::Table>(&format!("array = {text}")) {
            Ok(mut parsed) => match parsed.remove("array") {
                Some(toml::Value::Array(array)) => Ok(array),
                _ => Err(allowed.to_owned()),
            },
            Err(_) => Err(allowed.to_owned()),
        },
        Raw::Toml(_) => Err(allowed.to_owned()),
    }
}
