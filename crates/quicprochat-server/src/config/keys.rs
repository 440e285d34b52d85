//! The table of every config key: the single source of truth for the loader,
//! `gen-config` and the documentation reference.
//!
//! Each [`Key`] has its TOML path (`section.name`), its `QPC_*` environment
//! variable, its flag (if it has one), a one-line doc, a function rendering
//! the current value as a TOML literal and one parsing and range-checking a
//! raw value into [`ServerConfig`] (parsers live in `values`). Rules between
//! keys (keep-alive below the idle timeout, ...) are checked by the loader
//! once every layer is applied.

use std::time::Duration;

use super::values::{
    address, data_dir, domain, duration_in, duration_literal, integer_in, log_format, log_level, optional_address,
    registration, string_literal, u32_in, Raw, HOUR, KIB, MAX_BURST, MAX_WINDOW, MILLISECOND, SECOND, TEN_YEARS,
    THIRTY_DAYS,
};
use super::{LogFormat, RegistrationPolicy, ServerConfig};

/// One config key. `apply` returns what is allowed when the value is refused.
pub(crate) struct Key {
    /// Dotted TOML path, e.g. `timeouts.rpc`.
    pub(crate) name: &'static str,
    /// Environment variable, e.g. `QPC_RPC_TIMEOUT`.
    pub(crate) env: &'static str,
    /// Command-line flag, e.g. `--listen`, for the keys that have one.
    pub(crate) flag: Option<&'static str>,
    /// One line for `gen-config` and the docs.
    pub(crate) doc: &'static str,
    /// The key's current value as a TOML literal.
    pub(crate) render: fn(&ServerConfig) -> String,
    /// Parses and range-checks `raw` and stores it in the config.
    pub(crate) apply: fn(&mut ServerConfig, Raw<'_>) -> Result<(), String>,
}

/// The two keys (`burst`, `period`) of one `[rate_limits.NAME]` table.
macro_rules! rate_limit_burst {
    ($field:ident, $env:literal, $what:literal) => {
        Key {
            name: concat!("rate_limits.", stringify!($field), ".burst"),
            env: concat!("QPC_RATE_LIMITS_", $env, "_BURST"),
            flag: None,
            doc: concat!("Most ", $what, " allowed at once (token bucket size)."),
            render: |config| config.rate_limits.$field.burst.to_string(),
            apply: |config, raw| {
                config.rate_limits.$field.burst = u32_in(raw, 1, MAX_BURST, "an integer")?;
                Ok(())
            },
        }
    };
}
macro_rules! rate_limit_period {
    ($field:ident, $env:literal) => {
        Key {
            name: concat!("rate_limits.", stringify!($field), ".period"),
            env: concat!("QPC_RATE_LIMITS_", $env, "_PERIOD"),
            flag: None,
            doc: "Time to refill the whole bucket.",
            render: |config| duration_literal(config.rate_limits.$field.period),
            apply: |config, raw| {
                config.rate_limits.$field.period = duration_in(raw, MILLISECOND, THIRTY_DAYS)?;
                Ok(())
            },
        }
    };
}

/// Every key, in `gen-config` order (grouped by section).
pub(crate) static KEYS: &[Key] = &[
    Key {
        name: "plugins",
        env: "QPC_PLUGINS",
        flag: None,
        doc: "Native plugins, loaded in order at start: [[plugins]] tables of path (absolute), sha256 (optional pin), \
              config (a table for the plugin), on_error and deadline per gate, source_address (docs/plugins.md). \
              A plugin is native code with the server's rights.",
        render: |config| super::plugins::render(&config.plugins),
        apply: |config, raw| {
            config.plugins = super::plugins::plugins(raw)?;
            Ok(())
        },
    },
    Key {
        name: "server.listen",
        env: "QPC_LISTEN",
        flag: Some("--listen"),
        doc: "Address to listen on for QUIC (UDP); port 0 picks a free port.",
        render: |config| string_literal(&config.listen.to_string()),
        apply: |config, raw| {
            config.listen = address(raw)?;
            Ok(())
        },
    },
    Key {
        name: "server.domain",
        env: "QPC_DOMAIN",
        flag: Some("--domain"),
        doc: "This server's domain: users are name@domain; also a name in the TLS certificate.",
        render: |config| string_literal(&config.domain),
        apply: |config, raw| {
            config.domain = domain(raw)?;
            Ok(())
        },
    },
    Key {
        name: "server.data_dir",
        env: "QPC_DATA_DIR",
        flag: Some("--data-dir"),
        doc: "Directory holding the database (qpc-server.db) and the TLS certificate; created if missing.",
        render: |config| string_literal(&config.data_dir.display().to_string()),
        apply: |config, raw| {
            config.data_dir = data_dir(raw)?;
            Ok(())
        },
    },
    Key {
        name: "server.metrics_listen",
        env: "QPC_METRICS_LISTEN",
        flag: Some("--metrics-listen"),
        doc: "HTTP address serving /metrics (Prometheus) and /healthz, or \"off\"; keep it private.",
        render: |config| match config.metrics_listen {
            Some(addr) => string_literal(&addr.to_string()),
            None => string_literal("off"),
        },
        apply: |config, raw| {
            config.metrics_listen = optional_address(raw)?;
            Ok(())
        },
    },
    Key {
        name: "log.level",
        env: "QPC_LOG_LEVEL",
        flag: Some("--log-level"),
        doc: "Log filter: a level or a tracing filter like \"info,qpc_server=debug\"; RUST_LOG wins when set.",
        render: |config| string_literal(&config.log.level),
        apply: |config, raw| {
            config.log.level = log_level(raw)?;
            Ok(())
        },
    },
    Key {
        name: "log.format",
        env: "QPC_LOG_FORMAT",
        flag: Some("--log-format"),
        doc: "Log format on stderr: \"pretty\" (human-readable lines) or \"json\" (one object per line).",
        render: |config| match config.log.format {
            LogFormat::Pretty => string_literal("pretty"),
            LogFormat::Json => string_literal("json"),
        },
        apply: |config, raw| {
            config.log.format = log_format(raw)?;
            Ok(())
        },
    },
    Key {
        name: "timeouts.rpc",
        env: "QPC_RPC_TIMEOUT",
        flag: None,
        doc: "Deadline of one RPC; past it the handler is cancelled and the client gets DEADLINE_EXCEEDED.",
        render: |config| duration_literal(config.rpc_timeout),
        apply: |config, raw| {
            config.rpc_timeout = duration_in(raw, MILLISECOND, HOUR)?;
            Ok(())
        },
    },
    Key {
        name: "timeouts.storage",
        env: "QPC_STORAGE_TIMEOUT",
        flag: None,
        doc: "Deadline of every storage (database) call.",
        render: |config| duration_literal(config.storage_timeout),
        apply: |config, raw| {
            config.storage_timeout = duration_in(raw, MILLISECOND, HOUR)?;
            Ok(())
        },
    },
    Key {
        name: "timeouts.shutdown_grace",
        env: "QPC_SHUTDOWN_GRACE",
        flag: None,
        doc: "On SIGTERM/SIGINT, how long in-flight RPCs may take to finish before connections are closed.",
        render: |config| duration_literal(config.shutdown_grace),
        apply: |config, raw| {
            config.shutdown_grace = duration_in(raw, Duration::ZERO, HOUR)?;
            Ok(())
        },
    },
    Key {
        name: "delivery.retention",
        env: "QPC_DELIVERY_RETENTION",
        flag: None,
        doc: "How long a message waits for a recipient who never acknowledges it, and how long a message id is remembered so a retry is not stored twice (at least 1h, longer than any client retries).",
        render: |config| duration_literal(config.retention),
        apply: |config, raw| {
            config.retention = duration_in(raw, HOUR, TEN_YEARS)?;
            Ok(())
        },
    },
    Key {
        name: "delivery.max_queue_entries",
        env: "QPC_DELIVERY_MAX_QUEUE_ENTRIES",
        flag: None,
        doc: "Most unacknowledged entries one queue keeps; the oldest beyond it are deleted at the next expiry round (the client reports them as expired). Bounds what senders can pile up for an offline user.",
        render: |config| config.max_queue_entries.to_string(),
        apply: |config, raw| {
            config.max_queue_entries = integer_in(raw, 100, 100_000_000, "an integer")?;
            Ok(())
        },
    },
    Key {
        name: "delivery.max_send_burst",
        env: "QPC_DELIVERY_MAX_SEND_BURST",
        flag: None,
        doc: "Most messages one SendMessages request may carry (a client's burst of sends: one round trip and one fsync for all of them; each still rate-limited and gated alone). 0 turns SendMessages off: clients send one message per request.",
        render: |config| config.max_send_burst.to_string(),
        apply: |config, raw| {
            config.max_send_burst = u32_in(raw, 0, quicprochat_proto::MAX_SEND_MESSAGES as u64, "an integer")?;
            Ok(())
        },
    },
    Key {
        name: "devices.max_per_account",
        env: "QPC_DEVICES_MAX_PER_ACCOUNT",
        flag: None,
        doc: "Most devices one account may have at once (a removed device frees its place).",
        render: |config| config.max_devices_per_account.to_string(),
        apply: |config, raw| {
            config.max_devices_per_account = u32_in(raw, 1, 64, "an integer")?;
            Ok(())
        },
    },
    Key {
        name: "devices.link_code_ttl",
        env: "QPC_DEVICES_LINK_CODE_TTL",
        flag: None,
        doc: "How long a device link code stays usable after the new device shows it.",
        render: |config| duration_literal(config.link_code_ttl),
        apply: |config, raw| {
            config.link_code_ttl = duration_in(raw, SECOND, HOUR)?;
            Ok(())
        },
    },
    Key {
        name: "registration.policy",
        env: "QPC_REGISTRATION",
        flag: Some("--registration"),
        doc: "Who may register: \"open\" (anyone), \"invite\" (holders of a token from `qpc-server invite create`) or \"closed\".",
        render: |config| match config.registration {
            RegistrationPolicy::Open => string_literal("open"),
            RegistrationPolicy::Invite => string_literal("invite"),
            RegistrationPolicy::Closed => string_literal("closed"),
        },
        apply: |config, raw| {
            config.registration = registration(raw)?;
            Ok(())
        },
    },
    Key {
        name: "transport.max_concurrent_rpcs",
        env: "QPC_TRANSPORT_MAX_CONCURRENT_RPCS",
        flag: None,
        doc: "Concurrent request streams (in-flight RPCs) per connection.",
        render: |config| config.transport.max_concurrent_rpcs.to_string(),
        apply: |config, raw| {
            config.transport.max_concurrent_rpcs = u32_in(raw, 1, 4096, "an integer")?;
            Ok(())
        },
    },
    Key {
        name: "transport.stream_receive_window",
        env: "QPC_TRANSPORT_STREAM_RECEIVE_WINDOW",
        flag: None,
        doc: "Bytes a peer may send on one stream before it must wait; at most connection_receive_window.",
        render: |config| config.transport.stream_receive_window.to_string(),
        apply: |config, raw| {
            config.transport.stream_receive_window = u32_in(raw, 1024, MAX_WINDOW, "a number of bytes")?;
            Ok(())
        },
    },
    Key {
        name: "transport.connection_receive_window",
        env: "QPC_TRANSPORT_CONNECTION_RECEIVE_WINDOW",
        flag: None,
        doc: "Bytes a peer may have in flight on the whole connection: bounds memory per connection.",
        render: |config| config.transport.connection_receive_window.to_string(),
        apply: |config, raw| {
            config.transport.connection_receive_window = u32_in(raw, 1024, MAX_WINDOW, "a number of bytes")?;
            Ok(())
        },
    },
    Key {
        name: "transport.idle_timeout",
        env: "QPC_TRANSPORT_IDLE_TIMEOUT",
        flag: None,
        doc: "A connection silent this long is closed.",
        render: |config| duration_literal(config.transport.idle_timeout),
        apply: |config, raw| {
            config.transport.idle_timeout = duration_in(raw, SECOND, HOUR)?;
            Ok(())
        },
    },
    Key {
        name: "transport.keep_alive",
        env: "QPC_TRANSPORT_KEEP_ALIVE",
        flag: None,
        doc: "Keep-alive interval; must be below idle_timeout.",
        render: |config| duration_literal(config.transport.keep_alive),
        apply: |config, raw| {
            config.transport.keep_alive = duration_in(raw, MILLISECOND, HOUR)?;
            Ok(())
        },
    },
    Key {
        name: "connections.max_pending_handshakes",
        env: "QPC_CONNECTIONS_MAX_PENDING_HANDSHAKES",
        flag: None,
        doc: "Handshakes in progress at once; more are refused.",
        render: |config| config.connections.max_pending_handshakes.to_string(),
        apply: |config, raw| {
            config.connections.max_pending_handshakes = u32_in(raw, 1, 1_000_000, "an integer")?;
            Ok(())
        },
    },
    Key {
        name: "connections.incoming_buffer_bytes",
        env: "QPC_CONNECTIONS_INCOMING_BUFFER_BYTES",
        flag: None,
        doc: "Bytes buffered for connections not yet accepted.",
        render: |config| config.connections.incoming_buffer_bytes.to_string(),
        apply: |config, raw| {
            config.connections.incoming_buffer_bytes = integer_in(raw, 64 * KIB, 1024 * MAX_WINDOW, "a number of bytes")?;
            Ok(())
        },
    },
    Key {
        name: "connections.udp_receive_buffer_bytes",
        env: "QPC_CONNECTIONS_UDP_RECEIVE_BUFFER_BYTES",
        flag: None,
        doc: "Kernel receive buffer requested for the UDP socket; the kernel grants at most net.core.rmem_max (logged at start-up).",
        render: |config| config.connections.udp_receive_buffer_bytes.to_string(),
        apply: |config, raw| {
            config.connections.udp_receive_buffer_bytes = integer_in(raw, 64 * KIB, 1024 * MAX_WINDOW, "a number of bytes")?;
            Ok(())
        },
    },
    Key {
        name: "connections.retry_above_pending",
        env: "QPC_CONNECTIONS_RETRY_ABOVE_PENDING",
        flag: None,
        doc: "Above this many pending handshakes, new addresses must answer a QUIC Retry first; at most max_pending_handshakes.",
        render: |config| config.connections.retry_above_pending.to_string(),
        apply: |config, raw| {
            config.connections.retry_above_pending = u32_in(raw, 0, 1_000_000, "an integer")?;
            Ok(())
        },
    },
    Key {
        name: "connections.per_address",
        env: "QPC_CONNECTIONS_PER_ADDRESS",
        flag: None,
        doc: "Open connections allowed per source IP address.",
        render: |config| config.connections.per_address.to_string(),
        apply: |config, raw| {
            config.connections.per_address = u32_in(raw, 1, 1_000_000, "an integer")?;
            Ok(())
        },
    },
    Key {
        name: "connections.stream_read_timeout",
        env: "QPC_CONNECTIONS_STREAM_READ_TIMEOUT",
        flag: None,
        doc: "Longest time a request stream may take to deliver its request (slow senders are cut off).",
        render: |config| duration_literal(config.connections.stream_read_timeout),
        apply: |config, raw| {
            config.connections.stream_read_timeout = duration_in(raw, MILLISECOND, HOUR)?;
            Ok(())
        },
    },
    Key {
        name: "federation.listen",
        env: "QPC_FEDERATION_LISTEN",
        flag: None,
        doc: "Address of the federation port (QUIC, ALPN qpc-fed/1, peers only), or \"off\": no federation.",
        render: |config| match config.federation.listen {
            Some(addr) => string_literal(&addr.to_string()),
            None => string_literal("off"),
        },
        apply: |config, raw| {
            config.federation.listen = optional_address(raw)?;
            Ok(())
        },
    },
    Key {
        name: "federation.peers",
        env: "QPC_FEDERATION_PEERS",
        flag: None,
        doc: "Peer servers, the allow-list: [[federation.peers]] tables of domain, address (host:port) and \
              fingerprints (1 or 2 pins from `qpc-server federation fingerprint`).",
        render: |config| super::peers::render(&config.federation.peers),
        apply: |config, raw| {
            config.federation.peers = super::peers::peers(raw)?;
            Ok(())
        },
    },
    Key {
        name: "federation.retry_min",
        env: "QPC_FEDERATION_RETRY_MIN",
        flag: None,
        doc: "First retry delay towards an unreachable peer (doubling with full jitter up to retry_max).",
        render: |config| duration_literal(config.federation.retry_min),
        apply: |config, raw| {
            config.federation.retry_min = duration_in(raw, MILLISECOND, HOUR)?;
            Ok(())
        },
    },
    Key {
        name: "federation.retry_max",
        env: "QPC_FEDERATION_RETRY_MAX",
        flag: None,
        doc: "Longest retry delay towards an unreachable peer; a peer that gets in touch is retried at once.",
        render: |config| duration_literal(config.federation.retry_max),
        apply: |config, raw| {
            config.federation.retry_max = duration_in(raw, MILLISECOND, HOUR)?;
            Ok(())
        },
    },
    rate_limit_burst!(register_per_address, "REGISTER_PER_ADDRESS", "registrations per source IP address"),
    rate_limit_period!(register_per_address, "REGISTER_PER_ADDRESS"),
    rate_limit_burst!(link_per_address, "LINK_PER_ADDRESS", "device links started from one source IP address"),
    rate_limit_period!(link_per_address, "LINK_PER_ADDRESS"),
    rate_limit_burst!(
        key_package_fetch_per_requester,
        "KEY_PACKAGE_FETCH_PER_REQUESTER",
        "key package fetches by one account"
    ),
    rate_limit_period!(key_package_fetch_per_requester, "KEY_PACKAGE_FETCH_PER_REQUESTER"),
    rate_limit_burst!(
        key_package_fetch_per_target,
        "KEY_PACKAGE_FETCH_PER_TARGET",
        "fetches of one account's key packages"
    ),
    rate_limit_period!(key_package_fetch_per_target, "KEY_PACKAGE_FETCH_PER_TARGET"),
    rate_limit_burst!(
        last_resort_per_pair,
        "LAST_RESORT_PER_PAIR",
        "last-resort key packages of one account served to one requester"
    ),
    rate_limit_period!(last_resort_per_pair, "LAST_RESORT_PER_PAIR"),
    rate_limit_burst!(send_per_account, "SEND_PER_ACCOUNT", "messages sent by one account"),
    rate_limit_period!(send_per_account, "SEND_PER_ACCOUNT"),
    rate_limit_burst!(commit_per_account, "COMMIT_PER_ACCOUNT", "commits and leaves submitted by one account"),
    rate_limit_period!(commit_per_account, "COMMIT_PER_ACCOUNT"),
    rate_limit_burst!(create_group_per_account, "CREATE_GROUP_PER_ACCOUNT", "groups created by one account"),
    rate_limit_period!(create_group_per_account, "CREATE_GROUP_PER_ACCOUNT"),
    rate_limit_burst!(
        key_package_claim_per_peer,
        "KEY_PACKAGE_CLAIM_PER_PEER",
        "key package claims by one federation peer"
    ),
    rate_limit_period!(key_package_claim_per_peer, "KEY_PACKAGE_CLAIM_PER_PEER"),
];

/// The key at a dotted TOML path.
pub(crate) fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.name == name)
}

/// The section (`rate_limits.send_per_account`) of a dotted key name.
pub(crate) fn section_of(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(section, _)| section)
}
