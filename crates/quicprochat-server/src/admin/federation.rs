//! `qpc-server federation fingerprint`: the pin other servers list for this
//! one in their `[[federation.peers]]` `fingerprints`; `qpc-server
//! federation status`: each peer's stream from the database (pending
//! entries, the oldest one's age, the last error) and, when the server runs
//! with `server.metrics_listen`, whether it reaches the peer now.

use anyhow::Context;
use quicprochat_server::storage::Store;
use quicprochat_server::ServerConfig;

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
        let reachable = match (&up, config.federation.peers.iter().any(|p| p.domain == peer)) {
            (_, false) => "not a peer",
            (Some(up), true) => match up.iter().find(|(name, _)| name == peer) {
                Some((_, true)) => "yes",
                Some((_, false)) => "no",
                None => "unknown",
            },
            (None, true) => "unknown",
        };
        let pending = stream.map_or(0, |stream| stream.pending());
        let oldest = match stream.and_then(|stream| stream.oldest_pending_ms) {
            Some(at) => {
                humantime::format_duration(std::time::Duration::from_secs(now.saturating_sub(at) / 1000)).to_string()
            }
            None => "-".to_owned(),
        };
        let error = stream.and_then(|stream| stream.last_error.clone()).unwrap_or_else(|| "-".to_owned());
        println!("{peer:<32} {reachable:<11} {pending:>8} {oldest:>12}  {error}");
    }
    if up.is_none() {
        println!("(reachable: unknown without a running server's server.metrics_listen)");
    }
    Ok(())
}

/// `qpc_fed_peer_up` of the running server, by peer; `None` when it cannot
/// be asked.
fn live_peer_states(config: &ServerConfig) -> Option<Vec<(String, bool)>> {
    let addr = config.metrics_listen?;
    let metrics = super::status::get(addr, "/metrics").ok().filter(|response| response.status == 200)?;
    let states = metrics
        .body
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("qpc_fed_peer_up{peer=\"")?;
            let (peer, value) = rest.split_once("\"} ")?;
            Some((peer.to_owned(), value.trim() == "1"))
        })
        .collect();
    Some(states)
}
