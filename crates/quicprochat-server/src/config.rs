//! The server's effective configuration, validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use quicprochat_rpc::transport::TransportLimits;

/// Everything the running server needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Directory holding the database and the TLS certificate.
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// This server's domain (`name@domain`); also the certificate name.
    pub domain: String,
    /// Per-RPC deadline.
    pub rpc_timeout: Duration,
    /// How long in-flight RPCs may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// QUIC limits per connection.
    pub transport: TransportLimits,
}

impl ServerConfig {
    /// Defaults for a data dir and listen address.
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            data_dir,
            listen,
            domain: "localhost".to_owned(),
            rpc_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            transport: TransportLimits::default(),
        }
    }
}
