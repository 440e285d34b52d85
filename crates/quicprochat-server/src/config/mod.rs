//! The server's effective configuration: typed, validated once at start-up.
//!
//! This module defines what the running server consumes ([`ServerConfig`]).
//! Submodules:
//! - `keys`: the one table of every config key (TOML name, `QPC_*`
//!   environment variable, flag, documentation, how to read and render it);
//!   the loader, `gen-config` and the docs reference are all derived from it;
//! - `values`: parsing and range-checking one raw value, with the message
//!   saying what is allowed; `peers`: the federation peer table;
//! - `load`: [`load`], a pure function from (file text, environment map,
//!   flags) to a validated [`ServerConfig`] or a [`ConfigError`] naming the
//!   key, the value and what is allowed;
//! - `render`: the commented default config printed by `qpc-server
//!   gen-config` and the Markdown reference in `docs/operations.md`.
//!
//! It deliberately does no IO: reading the file and the process environment
//! is the binary's job.

mod keys;
mod load;
mod peers;
mod plugins;
mod render;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod values;

pub use load::{defaults, load, ConfigError, ConfigFile, Flags, Origin, Sources, DEFAULT_DATA_DIR, DEFAULT_LISTEN};
pub use render::{default_config_toml, reference_markdown};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quicprochat_rpc::transport::TransportLimits;
use quicprochat_rpc::CertFingerprint;

use values::THIRTY_DAYS;

/// Everything the running server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Directory holding the database and the TLS certificate.
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// This server's domain (`name@domain`); also the certificate name.
    pub domain: String,
    /// Where to serve `/metrics` and `/healthz` over HTTP; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Log level filter and format.
    pub log: LogConfig,
    /// Per-RPC deadline: the handler is cancelled and the client gets `DEADLINE_EXCEEDED`.
    pub rpc_timeout: Duration,
    /// Deadline of every storage call.
    pub storage_timeout: Duration,
    /// How long in-flight RPCs may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// How long an unacknowledged queue entry, and a message id kept for
    /// idempotent retries, is kept.
    pub retention: Duration,
    /// Most unacknowledged entries one queue keeps; older ones are
    /// deleted (the client reports them as expired).
    pub max_queue_entries: u64,
    /// Most messages one `SendMessages` request may carry (at most
    /// `MAX_SEND_MESSAGES`); 0 turns `SendMessages` off, and clients send
    /// one `SendMessage` at a time.
    pub max_send_burst: u32,
    /// Most current devices of one account.
    pub max_devices_per_account: u32,
    /// How long a device link code stays usable.
    pub link_code_ttl: Duration,
    /// Who may register.
    pub registration: RegistrationPolicy,
    /// QUIC limits per connection.
    pub transport: TransportLimits,
    /// Limits on connections and streams across the endpoint.
    pub connections: ConnectionLimits,
    /// Rate limits.
    pub rate_limits: RateLimits,
    /// Federation with other home servers.
    pub federation: FederationConfig,
    /// Native plugins, loaded at start in this order (`[[plugins]]`).
    pub plugins: Vec<PluginConfig>,
}

/// One `[[plugins]]` table: a native plugin and how the server treats it
/// (docs/plugins.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// Absolute path of the shared library.
    pub path: PathBuf,
    /// The library's SHA-256 (lowercase hex), checked before it is loaded.
    pub sha256: Option<String>,
    /// The plugin's `config` table, as JSON, handed to its `on_load`.
    pub config_json: String,
    /// Per gate (indexed by [`GateHook`]): what a failure of the plugin
    /// (deadline, error, panic, garbage, switched off) decides.
    pub on_error: [FailurePolicy; GateHook::COUNT],
    /// Per gate: how long a request waits for the plugin's answer.
    pub deadline: [Duration; GateHook::COUNT],
    /// Whether the plugin sees clients' addresses (`source_address` of
    /// `on_register` and `on_login`); off by default.
    pub source_address: bool,
}

impl PluginConfig {
    /// A plugin at `path` with the default policies and deadlines.
    pub fn new(path: PathBuf) -> PluginConfig {
        PluginConfig {
            path,
            sha256: None,
            config_json: "{}".to_owned(),
            on_error: GateHook::ALL.map(GateHook::default_policy),
            deadline: GateHook::ALL.map(GateHook::default_deadline),
            source_address: false,
        }
    }
}

/// The hooks that decide (the others only observe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GateHook {
    Register = 0,
    Login = 1,
    GroupCreate = 2,
    Enqueue = 3,
}

impl GateHook {
    /// How many gates there are.
    pub const COUNT: usize = 4;
    /// Every gate, in index order.
    pub const ALL: [GateHook; GateHook::COUNT] =
        [GateHook::Register, GateHook::Login, GateHook::GroupCreate, GateHook::Enqueue];

    /// The hook's name in the config, the ABI and metrics.
    pub fn name(self) -> &'static str {
        match self {
            GateHook::Register => "on_register",
            GateHook::Login => "on_login",
            GateHook::GroupCreate => "on_group_create",
            GateHook::Enqueue => "on_enqueue",
        }
    }

    /// A failing `on_register` denies; the other gates allow.
    pub fn default_policy(self) -> FailurePolicy {
        match self {
            GateHook::Register => FailurePolicy::Deny,
            _ => FailurePolicy::Allow,
        }
    }

    /// Registration and login are rare and may ask a directory; a send is
    /// on every message's path.
    pub fn default_deadline(self) -> Duration {
        match self {
            GateHook::Register | GateHook::Login => Duration::from_secs(1),
            GateHook::GroupCreate => Duration::from_millis(500),
            GateHook::Enqueue => Duration::from_millis(100),
        }
    }
}

/// What a gate's failure decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    Allow,
    Deny,
}

impl FailurePolicy {
    /// As written in the config.
    pub fn name(self) -> &'static str {
        match self {
            FailurePolicy::Allow => "allow",
            FailurePolicy::Deny => "deny",
        }
    }
}

/// Federation with other home servers (issue 19).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationConfig {
    /// The federation port (ALPN `qpc-fed/1`); `None`: federation is off.
    pub listen: Option<SocketAddr>,
    /// The peer servers: the only servers we talk to or accept.
    pub peers: Vec<PeerConfig>,
    /// First retry delay towards an unreachable peer (full jitter, doubling).
    pub retry_min: Duration,
    /// Longest retry delay towards an unreachable peer.
    pub retry_max: Duration,
}

/// One peer server of `[[federation.peers]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its `server.domain`: the domain of its users and groups.
    pub domain: String,
    /// Where to dial it (`host:port`, resolved at each dial).
    pub address: String,
    /// SHA-256 pins of its certificate (two while it rotates).
    pub fingerprints: Vec<CertFingerprint>,
}

/// Log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `qpc_server=debug,warn`, ...); `RUST_LOG` overrides it.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationPolicy {
    /// Anyone.
    Open,
    /// Only holders of an invite token (`qpc-server invite create`).
    Invite,
    /// Nobody.
    Closed,
}

/// Endpoint-wide connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Handshakes in progress at once; more are refused.
    pub max_pending_handshakes: u32,
    /// Bytes buffered for connections not yet accepted.
    pub incoming_buffer_bytes: u64,
    /// Kernel receive buffer requested for the UDP socket (the kernel may
    /// grant less: `net.core.rmem_max`); a burst of handshakes that
    /// overflows it costs each dropped client a retransmission timeout.
    pub udp_receive_buffer_bytes: u64,
    /// Above this many pending handshakes, unvalidated addresses must answer a Retry first.
    pub retry_above_pending: u32,
    /// Open connections per source IP address.
    pub per_address: u32,
    /// Longest time a request stream may take to deliver its request frame.
    pub stream_read_timeout: Duration,
}

/// One token-bucket limit: `burst` events at once, refilled at `burst` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Bucket size.
    pub burst: u32,
    /// Time to refill the whole bucket.
    pub period: Duration,
}

/// The server's rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Registrations per source IP address.
    pub register_per_address: RateLimit,
    /// Device links started per source IP address.
    pub link_per_address: RateLimit,
    /// Key package fetches per requesting account.
    pub key_package_fetch_per_requester: RateLimit,
    /// Key package fetches per target account (protects the victim's stock).
    pub key_package_fetch_per_target: RateLimit,
    /// Last-resort key packages of one target served to one requester
    /// (bounds how often one account can add someone with it).
    pub last_resort_per_pair: RateLimit,
    /// Messages sent per account.
    pub send_per_account: RateLimit,
    /// Commits and leaves submitted per account.
    pub commit_per_account: RateLimit,
    /// Groups created per account.
    pub create_group_per_account: RateLimit,
    /// Key package claims per federation peer (all its users together).
    pub key_package_claim_per_peer: RateLimit,
}

impl ServerConfig {
    /// This server's domain when it federates (`federation.listen` set):
    /// what users of it are named `name@…` by, everywhere else.
    pub fn federation_domain(&self) -> Option<&str> {
        self.federation.listen.map(|_| self.domain.as_str())
    }

    /// Defaults for a data dir and listen address (what `gen-config` prints).
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            data_dir,
            listen,
            domain: "localhost".to_owned(),
            metrics_listen: None,
            log: LogConfig { level: "info".to_owned(), format: LogFormat::Pretty },
            rpc_timeout: Duration::from_secs(10),
            storage_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            retention: THIRTY_DAYS,
            max_queue_entries: 100_000,
            max_send_burst: quicprochat_proto::MAX_SEND_MESSAGES as u32,
            max_devices_per_account: 16,
            link_code_ttl: Duration::from_secs(600),
            registration: RegistrationPolicy::Open,
            transport: TransportLimits::default(),
            connections: ConnectionLimits {
                max_pending_handshakes: 1024,
                incoming_buffer_bytes: 8 * 1024 * 1024,
                udp_receive_buffer_bytes: 8 * 1024 * 1024,
                retry_above_pending: 256,
                per_address: 64,
                stream_read_timeout: Duration::from_secs(10),
            },
            rate_limits: RateLimits {
                register_per_address: RateLimit { burst: 10, period: Duration::from_secs(3600) },
                link_per_address: RateLimit { burst: 10, period: Duration::from_secs(3600) },
                key_package_fetch_per_requester: RateLimit { burst: 200, period: Duration::from_secs(60) },
                key_package_fetch_per_target: RateLimit { burst: 50, period: Duration::from_secs(60) },
                last_resort_per_pair: RateLimit { burst: 5, period: Duration::from_secs(3600) },
                send_per_account: RateLimit { burst: 1000, period: Duration::from_secs(10) },
                commit_per_account: RateLimit { burst: 200, period: Duration::from_secs(60) },
                create_group_per_account: RateLimit { burst: 100, period: Duration::from_secs(3600) },
                key_package_claim_per_peer: RateLimit { burst: 1000, period: Duration::from_secs(60) },
            },
            federation: FederationConfig {
                listen: None,
                peers: Vec::new(),
                retry_min: Duration::from_millis(250),
                retry_max: Duration::from_secs(30),
            },
            plugins: Vec::new(),
        }
    }
}
