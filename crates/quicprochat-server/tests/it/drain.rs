//! Graceful drain: shutting down during 256 in-flight sends, every send
//! either completes or gets a retryable error, and nothing acknowledged is
//! lost across the restart.

use std::collections::HashSet;
use std::time::Instant;

use quicprochat_proto::v1;
use quicprochat_proto::Method;
use quicprochat_rpc::RpcClient;
use tokio::task::JoinSet;

use crate::harness::{alice_and_bob, queued_message_ids, Harness, TestServer, WAIT};
use crate::process::ServerProcess;

const MESSAGES: usize = 256;
const CONNECTIONS: usize = 4;
/// More sends for the process test: spawning `kill` takes a few milliseconds.
const PROCESS_MESSAGES: usize = 512;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_in_flight_sends_loses_nothing_acknowledged() {
    let harness = Harness::start().await;
    let (alice, alice_mls, bob, group_id) = alice_and_bob(&harness).await;
    let mut sends = start_sends(&harness, &alice, &alice_mls, &group_id, "drain", MESSAGES).await;
    // Shut down as soon as the first send is answered: the rest are in flight.
    let first = sends.join_next().await.expect("a send").expect("task");
    let grace = quicprochat_server::ServerConfig::new("/unused".into(), ([127, 0, 0, 1], 0).into()).shutdown_grace;
    let started = Instant::now();
    let shutdown = tokio::spawn(harness.server.shutdown());

    let (acknowledged, retryable) = settle(first, sends.join_all().await);
    tokio::time::timeout(WAIT + grace, shutdown).await.expect("shutdown finishes").expect("shutdown task");
    let drain_time = started.elapsed();
    assert!(drain_time < grace, "drain took {drain_time:?}, grace is {grace:?}");
    assert_eq!(acknowledged.len() + retryable, MESSAGES);
    eprintln!("drain: {} acknowledged, {retryable} retryable, stopped in {drain_time:?}", acknowledged.len());

    // Every acknowledged message survives the restart.
    let harness = Harness::restart(harness.dir).await;
    let bob_rpc = harness.login("bob", &bob).await;
    let stored = queued_message_ids(&bob_rpc).await;
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "{} acknowledged messages lost: {lost:?}", lost.len());
}

/// The same through the real binary: SIGTERM during 256 in-flight sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_in_flight_sends_exits_zero_and_loses_nothing() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = ServerProcess::start(data.path());
    let (alice, alice_mls, bob, group_id) = alice_and_bob(&server).await;
    let mut sends = start_sends(&server, &alice, &alice_mls, &group_id, "term", PROCESS_MESSAGES).await;
    let first = sends.join_next().await.expect("a send").expect("task");
    let first_answered = Instant::now();
    let (status, exit_time) = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "qpc-server exits 0 after SIGTERM: {status}");
    let grace = quicprochat_server::ServerConfig::new("/unused".into(), ([127, 0, 0, 1], 0).into()).shutdown_grace;
    assert!(exit_time < grace, "exit took {exit_time:?}, grace is {grace:?}");
    let (acknowledged, _retryable) = settle(first, sends.join_all().await);
    eprintln!(
        "sigterm: {} of {PROCESS_MESSAGES} acknowledged, process exited in {exit_time:?}, all answered {:?} after the first",
        acknowledged.len(),
        first_answered.elapsed()
    );
    drop(server);

    let server = ServerProcess::start(data.path());
    let bob_rpc = server.login("bob", &bob).await;
    let stored = queued_message_ids(&bob_rpc).await;
    let lost = acknowledged.difference(&stored).count();
    assert_eq!(lost, 0, "acknowledged messages lost across SIGTERM and restart");
}

type SendOutcome = (Vec<u8>, Result<v1::SendMessageResponse, quicprochat_rpc::RpcError>);

/// Logs alice in on [`CONNECTIONS`] connections, encrypts `count` messages
/// first (so the sends are really in flight together), then starts them all.
async fn start_sends(
    server: &impl TestServer,
    alice: &quicprochat_core::Identity,
    alice_mls: &quicprochat_core::MlsClient,
    group_id: &[u8],
    prefix: &str,
    count: usize,
) -> JoinSet<SendOutcome> {
    let mut connections: Vec<RpcClient> = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(server.login("alice", alice).await);
    }
    let requests: Vec<v1::SendMessageRequest> = (0..count)
        .map(|index| v1::SendMessageRequest {
            group_id: group_id.to_vec().into(),
            message_id: format!("{prefix}-{index}").into_bytes().into(),
            ciphertext: alice_mls.encrypt(group_id, format!("message {index}").as_bytes()).expect("encrypt").into(),
        })
        .collect();
    let mut sends = JoinSet::new();
    for (index, request) in requests.into_iter().enumerate() {
        let rpc = connections[index % CONNECTIONS].clone();
        sends.spawn(async move {
            let result = rpc.call::<_, v1::SendMessageResponse>(Method::SendMessage, &request).await;
            (request.message_id.to_vec(), result)
        });
    }
    sends
}

/// Splits outcomes into acknowledged ids and the count of retryable
/// failures; any other failure fails the test.
fn settle(first: SendOutcome, rest: Vec<SendOutcome>) -> (HashSet<Vec<u8>>, usize) {
    let mut acknowledged = HashSet::new();
    let mut retryable = 0usize;
    for (message_id, result) in std::iter::once(first).chain(rest) {
        match result {
            Ok(_) => {
                acknowledged.insert(message_id);
            }
            Err(error) => {
                assert!(error.is_retryable(), "send {message_id:?} failed with a non-retryable error: {error}");
                retryable += 1;
            }
        }
    }
    (acknowledged, retryable)
}
