//! Catalogue: slow and flooding clients — slowloris headers and bodies,
//! large requests before login, more streams than a connection may open,
//! and more request bytes in flight than a connection's body budget.

use std::time::Duration;

use quicprochat_proto::{FrameKind, Method, Status};
use quicprochat_rpc::RpcClient;

use super::{header, Bench, Connection, Outcome};
use crate::harness::{TestServer, WAIT};

const STREAM_READ_TIMEOUT: Duration = Duration::from_millis(300);

/// Opens a stream, writes `bytes` without finishing, and waits for what the
/// server does: an answer, or a reset once it gives up on the stream.
async fn hold_open(rpc: &RpcClient, bytes: Vec<u8>) -> Outcome {
    let Ok((mut send, mut recv)) = rpc.connection().open_bi().await else {
        return Outcome::Other("could not open a stream".into());
    };
    if send.write_all(&bytes).await.is_err() {
        return Outcome::Other("write failed".into());
    }
    match tokio::time::timeout(WAIT, quicprochat_rpc::stream::read_frame(&mut recv)).await {
        Ok(Ok(Some(frame))) => Outcome::Status(frame.status),
        Ok(_) => Outcome::NoAnswer,
        Err(_) => Outcome::Other("the server neither answered nor gave up".into()),
    }
}

#[tokio::test]
async fn floods_catalogue() {
    let mut bench = Bench::start_with(|config| config.connections.stream_read_timeout = STREAM_READ_TIMEOUT).await;
    let request = FrameKind::Request;
    let anonymous = bench.harness.connect().await;

    let half_header = header(10, Method::Challenge as u16, request)[..4].to_vec();
    let outcome = hold_open(&anonymous, half_header.clone());
    bench
        .case("slowloris: half a header, then silence", &anonymous, Outcome::NoAnswer, Connection::Survives, outcome)
        .await;

    let mut half_body = header(100, Method::Challenge as u16, request);
    half_body.extend_from_slice(&[0u8; 50]);
    let outcome = hold_open(&anonymous, half_body);
    bench
        .case("slowloris: half a body, then silence", &anonymous, Outcome::NoAnswer, Connection::Survives, outcome)
        .await;

    let outcome = hold_open(&anonymous, header(1024 * 1024, Method::SubmitCommit as u16, request));
    let unauthenticated = Outcome::Status(Status::Unauthenticated);
    bench.case("1 MiB request before login", &anonymous, unauthenticated, Connection::Survives, outcome).await;

    // Twice the stream limit, each stalled: the extra streams wait on QUIC
    // flow control until the server gives up on earlier ones.
    let streams = 2 * quicprochat_rpc::transport::TransportLimits::default().max_concurrent_rpcs;
    let outcome = async {
        let mut stalled = tokio::task::JoinSet::new();
        for _ in 0..streams {
            stalled.spawn(hold_open_owned(anonymous.clone(), half_header.clone()));
        }
        let mut first_other = None;
        while let Some(outcome) = stalled.join_next().await {
            let outcome = outcome.expect("stream task");
            if outcome != Outcome::NoAnswer && first_other.is_none() {
                first_other = Some(outcome);
            }
        }
        first_other.unwrap_or(Outcome::NoAnswer)
    };
    bench
        .case(
            "twice the stream limit, every stream stalled",
            &anonymous,
            Outcome::NoAnswer,
            Connection::Survives,
            outcome,
        )
        .await;
    assert_eq!(bench.cases(), 4);

    // Logged in, a connection may have 32 MiB of request bodies in flight:
    // of three stalled 16 MiB commits, two are admitted and one is refused
    // at once, before any byte of its body is read.
    let mut bench = Bench::start_with(|config| config.connections.stream_read_timeout = WAIT).await;
    let (member, _) = bench.harness.register("mallory").await;
    let big = header(quicprochat_proto::method::MAX_FRAME_LEN, Method::SubmitCommit as u16, request);
    let mut holders = tokio::task::JoinSet::new();
    let outcome = async {
        for _ in 0..3 {
            holders.spawn(hold_open_owned(member.clone(), big.clone()));
        }
        holders.join_next().await.expect("three holders").expect("holder task")
    };
    let exhausted = Outcome::Status(Status::ResourceExhausted);
    bench
        .case("request bodies beyond the connection's budget", &member, exhausted, Connection::Survives, outcome)
        .await;
    holders.abort_all();
    assert_eq!(bench.cases(), 1);
}

async fn hold_open_owned(rpc: RpcClient, bytes: Vec<u8>) -> Outcome {
    hold_open(&rpc, bytes).await
}
