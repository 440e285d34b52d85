//! Graceful shutdown: connections are closed with the shutdown code.

use quicprochat_rpc::CLOSE_SERVER_SHUTDOWN;

use crate::harness::{Harness, TestServer, WAIT};

#[tokio::test]
async fn shutdown_closes_connections_with_the_shutdown_code() {
    let harness = Harness::start().await;
    let rpc = harness.connect().await;
    let addr = harness.server.local_addr();
    tokio::time::timeout(WAIT, harness.server.shutdown()).await.expect("shutdown completes");
    let reason = tokio::time::timeout(WAIT, rpc.connection().closed()).await.expect("connection closed");
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(CLOSE_SERVER_SHUTDOWN));
            assert_eq!(&close.reason[..], b"server shutting down");
        }
        other => panic!("expected an application close, got {other}"),
    }
    // Nothing listens any more.
    let pin = quicprochat_rpc::PinnedServer::new(None);
    let limits = quicprochat_rpc::transport::TransportLimits::default();
    let again = quicprochat_rpc::RpcClient::connect(addr, pin, &limits, std::time::Duration::from_millis(500)).await;
    assert!(again.is_err());
}
