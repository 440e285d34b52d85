//! `kill -9` of either server in the middle of a stream: after a restart
//! every entry reaches its user exactly once and in order. The killed
//! server runs as a child process (`qpc-server` with a config file); the
//! other in process.

use std::path::Path;

use quicprochat_core::DeviceId;
use quicprochat_rpc::tls::ServerIdentity;
use quicprochat_server::storage::SqliteStore;
use quicprochat_server::RunningServer;

use super::stream::{receive, write_events};
use super::{federated_config, peer, quick_to_notice, UdpRelay};
use crate::harness::{Harness, TestServer};
use crate::process::ServerProcess;

/// Entries in the stream: enough that the kill lands in the middle.
const ENTRIES: u32 = 10_000;
/// Entries the user has before the kill.
const BEFORE_KILL: usize = 1_000;

/// A config file for a child `qpc-server` as `domain`, whose one peer is
/// `peer_domain` at `peer_address` with `peer_identity`'s pin.
fn config_file(
    dir: &Path,
    domain: &str,
    peer_domain: &str,
    peer_address: &str,
    peer_identity: &ServerIdentity,
) -> std::path::PathBuf {
    let text = format!(
        "[server]\ndomain = \"{domain}\"\n\n[federation]\nlisten = \"127.0.0.1:0\"\nretry_min = \"50ms\"\nretry_max = \"1s\"\n\n\
         [[federation.peers]]\ndomain = \"{peer_domain}\"\naddress = \"{peer_address}\"\nfingerprints = [\"{}\"]\n",
        peer_identity.fingerprint()
    );
    let path = dir.join("qpc-server.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// How the sending server is stopped in the middle of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Terminate,
}

#[tokio::test]
async fn kill_9_of_the_sending_server_mid_stream_repeats_and_loses_nothing() {
    stop_the_sender_mid_stream(Stop::Kill).await;
}

#[tokio::test]
async fn sigterm_with_entries_pending_exits_0_and_delivers_the_rest_after_the_restart() {
    stop_the_sender_mid_stream(Stop::Terminate).await;
}

async fn stop_the_sender_mid_stream(stop: Stop) {
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (config_a, identity_a) = federated_config(&dir_a, "a.test");
    let (mut config_b, identity_b) = federated_config(&dir_b, "b.test");
    let (to_a, to_b) = (UdpRelay::bind().await, UdpRelay::bind().await);
    config_b.federation.peers = vec![peer("a.test", to_a.addr(), &identity_a)];
    quick_to_notice(&mut config_b);
    let b = Harness { server: RunningServer::start(config_b).await.expect("b starts"), dir: dir_b };
    to_b.set_target(b.server.federation_addr().expect("b's federation port"));
    let (_, bob) = b.register("bob").await;
    let bob_device = DeviceId::of_key(bob.public_key());

    {
        let store = SqliteStore::open(config_a.data_dir.join("qpc-server.db")).expect("a's database");
        write_events(&store, &bob_device, 1, ENTRIES);
    }
    let config = config_file(dir_a.path(), "a.test", "b.test", &to_b.addr().to_string(), &identity_b);
    let mut a = ServerProcess::start_with(&config_a.data_dir, Some(&config));
    to_a.set_target(a.federation_addr.expect("a's federation port"));

    let bob_rpc = b.login("bob", &bob).await;
    let first = receive(&bob_rpc, BEFORE_KILL).await;
    match stop {
        Stop::Kill => a.kill(),
        Stop::Terminate => {
            let (status, took) = a.terminate();
            assert!(status.success(), "SIGTERM exits 0: {status:?}");
            // The default grace is 10 s; a batch in flight is answered in milliseconds.
            assert!(took < std::time::Duration::from_secs(11), "within the grace period: {took:?}");
            drop(a);
        }
    }
    let applied = applied_from(&b.dir.path().join("data"), "a.test");
    eprintln!("a stopped ({stop:?}) with {applied} of {ENTRIES} entries applied at b");
    assert!(applied < u64::from(ENTRIES), "the stop landed in the middle of the stream");
    assert_eq!(first[..BEFORE_KILL], (1..=BEFORE_KILL as u32).collect::<Vec<_>>()[..]);

    let a = ServerProcess::start_with(&config_a.data_dir, Some(&config));
    to_a.set_target(a.federation_addr.expect("a's federation port"));
    let bob_rpc = b.login("bob", &bob).await;
    let all = receive(&bob_rpc, ENTRIES as usize).await;
    assert_eq!(all, (1..=ENTRIES).collect::<Vec<_>>(), "every entry once, in order");
    drop(a);
    b.server.shutdown().await;
}

#[tokio::test]
async fn kill_9_of_the_receiving_server_mid_apply_repeats_and_loses_nothing() {
    let (dir_a, dir_b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (mut config_a, identity_a) = federated_config(&dir_a, "a.test");
    let (config_b, identity_b) = federated_config(&dir_b, "b.test");
    let (to_a, to_b) = (UdpRelay::bind().await, UdpRelay::bind().await);
    config_a.federation.peers = vec![peer("b.test", to_b.addr(), &identity_b)];
    quick_to_notice(&mut config_a);
    let config = config_file(dir_b.path(), "b.test", "a.test", &to_a.addr().to_string(), &identity_a);
    let b = ServerProcess::start_with(&config_b.data_dir, Some(&config));
    to_b.set_target(b.federation_addr.expect("b's federation port"));
    let (_, bob) = b.register("bob").await;
    let bob_device = DeviceId::of_key(bob.public_key());

    {
        let store = SqliteStore::open(config_a.data_dir.join("qpc-server.db")).expect("a's database");
        write_events(&store, &bob_device, 1, ENTRIES);
    }
    let a = RunningServer::start(config_a).await.expect("a starts");
    to_a.set_target(a.federation_addr().expect("a's federation port"));

    let bob_rpc = b.login("bob", &bob).await;
    let first = receive(&bob_rpc, BEFORE_KILL).await;
    assert_eq!(first[..BEFORE_KILL], (1..=BEFORE_KILL as u32).collect::<Vec<_>>()[..]);
    b.kill();
    let applied = applied_from(&config_b.data_dir, "a.test");
    eprintln!("b killed with {applied} of {ENTRIES} entries applied");
    assert!(applied < u64::from(ENTRIES), "the kill landed in the middle of the stream");

    let b = ServerProcess::start_with(&config_b.data_dir, Some(&config));
    to_b.set_target(b.federation_addr.expect("b's federation port"));
    let bob_rpc = b.login("bob", &bob).await;
    let all = receive(&bob_rpc, ENTRIES as usize).await;
    assert_eq!(all, (1..=ENTRIES).collect::<Vec<_>>(), "every entry once, in order");
    let drained = a.wait_for_peer("b.test", crate::harness::WAIT, |status| status.pending == 0).await;
    assert!(drained.is_some(), "a has nothing pending: {:?}", a.federation_peers());
    a.shutdown().await;
    drop(b);
}

/// How far the server on `data_dir` applied `peer`'s stream.
fn applied_from(data_dir: &Path, peer: &str) -> u64 {
    use quicprochat_server::storage::Store;
    let store = SqliteStore::open(data_dir.join("qpc-server.db")).expect("database");
    let streams = store.fed_streams().expect("streams");
    streams.iter().find(|stream| stream.peer == peer).map_or(0, |stream| stream.in_applied)
}
