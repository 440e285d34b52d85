//! Catalogue: frames that are too long, cut short, of the wrong kind or
//! method, or carry garbage instead of Protobuf.

use quicprochat_proto::method::MAX_FRAME_LEN;
use quicprochat_proto::{FrameKind, Method, Status};
use quicprochat_rpc::CLOSE_PROTOCOL_VIOLATION;

use super::{closed, header, raw_exchange, Bench, Connection, Outcome};
use crate::harness::TestServer;

#[tokio::test]
async fn framing_catalogue() {
    let mut bench = Bench::start().await;
    let request = FrameKind::Request;

    let rpc = bench.harness.connect().await;
    for (name, len, method) in [
        ("length prefix u32::MAX", u32::MAX, Method::Login),
        ("length one past the method's limit", Method::Login.max_request_len() + 1, Method::Login),
        ("length one past the largest frame", MAX_FRAME_LEN + 1, Method::SubmitCommit),
    ] {
        // Only the header is sent: the answer cannot have waited for a body.
        let bytes = header(len, method as u16, request);
        let outcome = raw_exchange(&rpc, &bytes);
        bench.case(name, &rpc, Outcome::Status(Status::InvalidArgument), Connection::Survives, outcome).await;
    }

    let mut truncated = header(100, Method::Challenge as u16, request);
    truncated.extend_from_slice(&[0u8; 10]);
    let outcome = raw_exchange(&rpc, &truncated);
    bench.case("body shorter than its length", &rpc, Outcome::NoAnswer, Connection::Survives, outcome).await;

    let outcome = raw_exchange(&rpc, &[0x00, 0x00, 0x01]);
    bench.case("header cut short", &rpc, Outcome::NoAnswer, Connection::Survives, outcome).await;

    let mut garbage = header(5, Method::Register as u16, request);
    garbage.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let outcome = raw_exchange(&rpc, &garbage);
    bench
        .case("garbage Protobuf body", &rpc, Outcome::Status(Status::InvalidArgument), Connection::Survives, outcome)
        .await;

    let mut wrong_type = header(4, Method::Challenge as u16, request);
    wrong_type.extend_from_slice(&[0x0a, 0x02, 0xff, 0xff]); // field 1 as bytes where none is declared: skipped
    let outcome = raw_exchange(&rpc, &wrong_type);
    bench
        .case(
            "unknown Protobuf field is ignored, not trusted",
            &rpc,
            Outcome::Status(Status::Ok),
            Connection::Survives,
            outcome,
        )
        .await;

    let protocol_violation = Outcome::ConnectionClosed(CLOSE_PROTOCOL_VIOLATION);
    let cases: [(&str, Vec<u8>); 4] = [
        ("unknown method", header(0, 999, request)),
        ("response frame sent as a request", header(0, Method::Ping as u16, FrameKind::Response)),
        ("server-only Push method from a client", header(0, Method::Push as u16, request)),
        ("unknown frame kind", {
            let mut bytes = header(0, Method::Ping as u16, request);
            bytes[6] = 0x7f;
            bytes
        }),
    ];
    for (name, bytes) in cases {
        let attacker = bench.harness.connect().await;
        let outcome = async {
            let _ = raw_exchange(&attacker, &bytes).await;
            closed(&attacker).await
        };
        bench.case(name, &attacker, protocol_violation.clone(), Connection::Closed, outcome).await;
    }
    assert_eq!(bench.cases(), 11);
}
