//! The hostile-input catalogue: each case sends one kind of bad input to a
//! real server over QUIC and checks the same four things — the typed outcome
//! (a status, no answer, or a closed connection), that the attacker's
//! connection survives exactly when it should, that nothing was written to
//! the database (SQLite's `PRAGMA data_version`, which moves on every commit
//! that changed the file), and that a bystander connection is still served. Every case is listed by name in
//! the test output (`--nocapture`); `docs/TESTING.md` explains how to add one.

mod devices;
mod expensive;
mod federation;
mod floods;
mod framing;
mod groups;
mod key_packages;
mod sessions;
mod subscriptions;

use std::time::Duration;

use quicprochat_proto::v1;
use quicprochat_proto::{Frame, FrameKind, Method, Status};
use quicprochat_rpc::stream::read_frame;
use quicprochat_rpc::{RpcClient, RpcError};
use quicprochat_server::ServerConfig;

use crate::harness::{Harness, TestServer, WAIT};

/// What a hostile request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An answer with this status on the request's own stream.
    Status(Status),
    /// A success: the request was (wrongly) served.
    Served,
    /// The stream ended or was reset without an answer.
    NoAnswer,
    /// The server closed the whole connection with this application code.
    ConnectionClosed(u32),
    /// Anything else (a transport error on the client side).
    Other(String),
}

impl Outcome {
    /// The outcome of a typed call.
    pub(crate) fn of<T>(result: Result<T, RpcError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Served,
            Err(error) => match error.status() {
                Some(status) => Outcome::Status(status),
                None => Outcome::Other(error.to_string()),
            },
        }
    }
}

/// Whether the attacker's connection must still work after the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connection {
    Survives,
    Closed,
}

/// A server, a reader of its database, a bystander connection, and a count of cases.
pub(crate) struct Bench {
    pub(crate) harness: Harness,
    database: rusqlite::Connection,
    bystander: RpcClient,
    cases: usize,
}

impl Bench {
    pub(crate) async fn start() -> Bench {
        Bench::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Bench {
        let harness = Harness::start_with(adjust).await;
        let path = harness.dir.path().join("data").join("qpc-server.db");
        let database = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the server's database read-only");
        let bystander = harness.connect().await;
        Bench { harness, database, bystander, cases: 0 }
    }

    /// Changes when another connection (the server) has committed a change.
    pub(crate) fn writes(&self) -> u64 {
        self.database.query_row("PRAGMA data_version", [], |row| row.get(0)).expect("data_version")
    }

    /// Runs one case: `attack` (on `attacker`) must end in `expected`, leave
    /// `attacker` alive or closed as `connection` says, write nothing, and
    /// leave the server serving the bystander.
    pub(crate) async fn case(
        &mut self,
        name: &str,
        attacker: &RpcClient,
        expected: Outcome,
        connection: Connection,
        attack: impl std::future::Future<Output = Outcome>,
    ) {
        let before = self.writes();
        let outcome = tokio::time::timeout(WAIT, attack).await.unwrap_or_else(|_| panic!("{name}: no outcome in time"));
        assert_eq!(outcome, expected, "{name}: outcome");
        let alive = match connection {
            Connection::Survives => {
                attacker.call::<_, v1::PingResponse>(Method::Ping, &v1::PingRequest {}).await.is_ok()
            }
            Connection::Closed => tokio::time::timeout(WAIT, attacker.connection().closed()).await.is_err(),
        };
        assert_eq!(alive, connection == Connection::Survives, "{name}: the attacker's connection");
        assert_eq!(self.writes(), before, "{name}: storage writes");
        let _: v1::PingResponse = self
            .bystander
            .call(Method::Ping, &v1::PingRequest {})
            .await
            .unwrap_or_else(|e| panic!("{name}: bystander: {e}"));
        self.cases += 1;
        eprintln!("catalogue case ok: {name} -> {outcome:?}");
    }

    /// Runs one case whose connection must fail its handshake: `attack`
    /// returns `Ok(why)` when it failed, `Err` when it connected. Nothing
    /// is written, and the bystander is still served.
    pub(crate) async fn handshake_case(
        &mut self,
        name: &str,
        attack: impl std::future::Future<Output = Result<String, String>>,
    ) {
        let before = self.writes();
        let outcome = tokio::time::timeout(WAIT, attack).await.unwrap_or_else(|_| panic!("{name}: no outcome in time"));
        let why = outcome.unwrap_or_else(|problem| panic!("{name}: {problem}"));
        assert_eq!(self.writes(), before, "{name}: storage writes");
        let _: v1::PingResponse = self
            .bystander
            .call(Method::Ping, &v1::PingRequest {})
            .await
            .unwrap_or_else(|e| panic!("{name}: bystander: {e}"));
        self.cases += 1;
        eprintln!("catalogue case ok: {name} -> refused ({why})");
    }

    /// The number of cases run; each test asserts its own count so a case
    /// cannot silently drop out.
    pub(crate) fn cases(&self) -> usize {
        self.cases
    }
}

/// `SubmitCommit` of `commit` (no Welcome) for `group_id` at `epoch` on `rpc`.
pub(crate) async fn submit(
    rpc: &RpcClient,
    group_id: &[u8],
    epoch: u64,
    commit: Vec<u8>,
    message_id: &[u8],
) -> Outcome {
    let request = v1::SubmitCommitRequest {
        group_id: group_id.to_vec().into(),
        epoch,
        commit: commit.into(),
        welcome: Default::default(),
        message_id: message_id.to_vec().into(),
    };
    Outcome::of(rpc.call::<_, v1::SubmitCommitResponse>(Method::SubmitCommit, &request).await)
}

/// A frame header as the client would write it.
pub(crate) fn header(len: u32, method: u16, kind: FrameKind) -> Vec<u8> {
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend_from_slice(&method.to_be_bytes());
    bytes.extend_from_slice(&[kind as u8, 0]);
    bytes
}

/// Writes raw bytes on a new stream (then finishes it) and reads what comes back.
pub(crate) async fn raw_exchange(rpc: &RpcClient, bytes: &[u8]) -> Outcome {
    let Ok((mut send, mut recv)) = rpc.connection().open_bi().await else {
        return Outcome::Other("could not open a stream".into());
    };
    if send.write_all(bytes).await.is_err() {
        return closed_or(rpc, Outcome::Other("write failed".into()));
    }
    let _ = send.finish();
    match tokio::time::timeout(WAIT, read_frame(&mut recv)).await {
        Ok(Ok(Some(Frame { status, .. }))) => Outcome::Status(status),
        Ok(_) => closed_or(rpc, Outcome::NoAnswer),
        Err(_) => Outcome::Other("no answer and no reset in time".into()),
    }
}

/// `ConnectionClosed` when the connection was closed by the server, else `otherwise`.
fn closed_or(rpc: &RpcClient, otherwise: Outcome) -> Outcome {
    match rpc.connection().close_reason() {
        Some(reason @ quinn::ConnectionError::ApplicationClosed(_)) => close_outcome(reason),
        _ => otherwise,
    }
}

/// Waits until `rpc`'s connection is closed and returns how.
pub(crate) async fn closed(rpc: &RpcClient) -> Outcome {
    match tokio::time::timeout(Duration::from_secs(5), rpc.connection().closed()).await {
        Ok(reason) => close_outcome(reason),
        Err(_) => Outcome::Other("still open".into()),
    }
}

/// An application close as `ConnectionClosed(code)`; any other reason as `Other`.
fn close_outcome(reason: quinn::ConnectionError) -> Outcome {
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            Outcome::ConnectionClosed(u32::try_from(close.error_code.into_inner()).unwrap_or(u32::MAX))
        }
        other => Outcome::Other(other.to_string()),
    }
}
