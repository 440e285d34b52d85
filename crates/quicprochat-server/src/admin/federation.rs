//! `qpc-server federation fingerprint`: the pin other servers list for this
//! one in their `[[federation.peers]]` `fingerprints`; `qpc-server
//! federation status`: each peer's stream from the database (pending
//! entries, the oldest one's age) and, when the server runs with
//! `server.metrics_listen`, whether it reaches the peer now and the last
//! error (`/federation`).

use anyhow::Context;
use quicprochat_server::storage::Store;
use quicprochat_server::{PeerStatus, ServerConfig};

/// Prints the certificate's pin (`sha256:<hex>`), making the certificate
/// first on a new data dir, as the server's first start would.
pub(crate) fn fingerprint(config: &ServerConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let identity = quicprochat_server::server_identity(config).context("cannot load or make the certificate")?;
    println!("{}", identity.fingerprint());
    Ok(())
}

/// Prints each configured peer (and any peer the database still holds a
/// stream for): reachable now, pending entries, oldest pending age, last
/// error.
pub(crate) fn status(config: &ServerConfig) -> anyhow::Result<()> {
    let store = super::open_existing_store(config)?;
    let streams = store.fed_streams().context("cannot read the federation streams")?;
    let up = live_peer_states(config);
    let now = super::now_ms()?;
    let mut peers: Vec<&str> = config.federation.peers.iter().map(|peer| peer.domain.as_str()).collect();
    for stream in &streams {
        if !peers.contains(&stream.peer.as_str()) {
            peers.push(&stream.peer);
        }
    }
    if peers.is_empty() {
        println!("no federation peers configured (federation.peers) and none in the database");
        return Ok(());
    }
    println!("{:<32} {:<11} {:>8} {:>12}  last error", "peer", "reachable", "pending", "oldest");
    for peer in peers {
        let stream = streams.iter().find(|stream| stream.peer == peer);
        let live = up.as_ref().and_then(|up| up.iter().find(|status| status.domain == peer));
        let reachable = match (live, config.federation.peers.iter().any(|p| p.domain == peer)) {
            (_, false) => "not a peer",
            (Some(status), true) if status.reachable => "yes",
            (Some(_), true) => "no",
            (None, true) => "unknown",
        };
        let pending = stream.map_or(0, |stream| stream.pending());
        let oldest = match stream.and_then(|stream| stream.oldest_pending_ms) {
            Some(at) => {
                humantime::format_duration(std::time::Duration::from_secs(now.saturating_sub(at) / 1000)).to_string()
            }
            None => "-".to_owned(),
        };
        let error = live.and_then(|status| status.last_error.clone()).unwrap_or_else(|| "-".to_owned());
        println!("{peer:<32} {reachable:<11} {pending:>8} {oldest:>12}  {error}");
    }
    if up.is_none() {
        println!("(reachable and last error: unknown without a running server's server.metrics_listen)");
    }
    Ok(())
}

/// The running server's peer status (`/federation`); `None` when it
/// cannot be asked.
fn live_peer_states(config: &ServerConfig) -> Option<Vec<PeerStatus>> {
    let addr = config.metrics_listen?;
    let response = super::status::get(addr, "/federation").ok().filter(|response| response.status == 200)?;
    serde_json::from_str(&response.body).ok()
}
