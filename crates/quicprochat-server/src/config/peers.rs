//! The `federation.peers` key: the table of peer servers, which is also
//! the federation allow-list. In the file it is written as
//! `[[federation.peers]]` tables (or an inline array); in
//! `QPC_FEDERATION_PEERS` as the same inline TOML array. Each peer has a
//! `domain`, an `address` (`host:port`, resolved when dialled) and one or
//! two certificate `fingerprints` (two while a certificate rotates).

use quicprochat_rpc::CertFingerprint;

use super::values::{domain, table_array, Raw};
use super::PeerConfig;

const ALLOWED: &str = "expected an array of tables { domain = \"b.example\", address = \"host:port\", \
                       fingerprints = [\"sha256:…\"] } (1 or 2 fingerprints each, domains unique)";

/// Most peers one server may list (each costs an outbound worker).
pub(crate) const MAX_PEERS: usize = 256;

/// Parses and checks the whole peer table.
pub(crate) fn peers(raw: Raw<'_>) -> Result<Vec<PeerConfig>, String> {
    let array = table_array(raw, ALLOWED)?;
    if array.len() > MAX_PEERS {
        return Err(format!("at most {MAX_PEERS} peers"));
    }
    let mut peers: Vec<PeerConfig> = Vec::with_capacity(array.len());
    for (index, value) in array.iter().enumerate() {
        let peer = peer(value).map_err(|problem| format!("peer {}: {problem}", index + 1))?;
        if peers.iter().any(|other| other.domain == peer.domain) {
            return Err(format!("peer {}: domain {} is listed twice", index + 1, peer.domain));
        }
        peers.push(peer);
    }
    Ok(peers)
}

fn peer(value: &toml::Value) -> Result<PeerConfig, String> {
    let Some(table) = value.as_table() else { return Err(ALLOWED.to_owned()) };
    if let Some(unknown) = table.keys().find(|key| !["domain", "address", "fingerprints"].contains(&key.as_str())) {
        return Err(format!("unknown key \"{unknown}\" (a peer has domain, address and fingerprints)"));
    }
    let field = |name: &str| table.get(name).ok_or_else(|| format!("{name} is missing"));
    let peer_domain = domain(Raw::Toml(field("domain")?)).map_err(|allowed| format!("domain: {allowed}"))?;
    let address = match field("address")? {
        toml::Value::String(address) if is_host_and_port(address) => address.clone(),
        _ => return Err("address: expected \"host:port\" like \"b.example:7444\" or \"192.0.2.7:7444\"".into()),
    };
    let fingerprints = match field("fingerprints")? {
        toml::Value::Array(pins) if (1..=2).contains(&pins.len()) => {
            pins.iter().map(|pin| pin.as_str().and_then(CertFingerprint::parse)).collect::<Option<Vec<_>>>().ok_or(
                "fingerprints: expected \"sha256:<64 hex digits>\" as printed by \
                    `qpc-server federation fingerprint`",
            )?
        }
        _ => return Err("fingerprints: expected 1 or 2 pins (2 while a certificate rotates)".into()),
    };
    Ok(PeerConfig { domain: peer_domain, address, fingerprints })
}

/// `host:port` with a port number and a non-empty host (an IPv6 address in
/// brackets); the host is resolved when the peer is dialled.
fn is_host_and_port(text: &str) -> bool {
    if text.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(':')
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

/// The peer table as an inline TOML array (for `gen-config` and messages).
pub(crate) fn render(peers: &[PeerConfig]) -> String {
    let array: Vec<toml::Value> = peers
        .iter()
        .map(|peer| {
            let mut table = toml::Table::new();
            table.insert("domain".into(), peer.domain.clone().into());
            table.insert("address".into(), peer.address.clone().into());
            let pins = peer.fingerprints.iter().map(|pin| toml::Value::String(pin.to_string())).collect();
            table.insert("fingerprints".into(), toml::Value::Array(pins));
            toml::Value::Table(table)
        })
        .collect();
    toml::Value::Array(array).to_string()
}
