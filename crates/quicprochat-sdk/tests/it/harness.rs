//! A server on a temporary data dir plus registered clients.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use quicprochat_sdk::{ClientOptions, QpcClient, StoredMessage};
use quicprochat_server::{RunningServer, ServerConfig};

/// How long a test waits for an event before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Harness {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) server: Option<RunningServer>,
    pub(crate) addr: SocketAddr,
}

impl Harness {
    pub(crate) async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    /// Starts the server with `configure` applied to its default config.
    pub(crate) async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Harness {
        quicprochat_sdk::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig::new(dir.path().join("server"), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        configure(&mut config);
        let server = RunningServer::start(config).await.expect("server starts");
        let addr = server.local_addr();
        Harness { dir, server: Some(server), addr }
    }

    /// Stops the server and starts it again on the same address and data dir.
    pub(crate) async fn restart_server(&mut self) {
        self.stop_server().await;
        self.start_server().await;
    }

    /// Stops the server (gracefully).
    pub(crate) async fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Starts the server again on the same address and data dir.
    pub(crate) async fn start_server(&mut self) {
        self.start_server_with(|_| {}).await;
    }

    /// [`Harness::start_server`] with `configure` applied to its config.
    pub(crate) async fn start_server_with(&mut self, configure: impl FnOnce(&mut ServerConfig)) {
        let mut config = ServerConfig::new(self.dir.path().join("server"), self.addr);
        configure(&mut config);
        self.server = Some(RunningServer::start(config).await.expect("server restarts on the same address"));
    }

    /// The server's count of finished `method` calls with status OK, from
    /// its metrics endpoint (the harness must have enabled it).
    pub(crate) async fn calls(&self, method: &str) -> u64 {
        self.metric(&format!(r#"qpc_rpc_requests_total{{method="{method}",status="OK"}}"#)).await
    }

    /// The value of one `series` (name and labels) on the server's metrics
    /// endpoint, 0 when absent (the harness must have enabled it).
    pub(crate) async fn metric(&self, series: &str) -> u64 {
        let addr = self.server.as_ref().and_then(RunningServer::metrics_addr).expect("metrics enabled");
        let body = tokio::task::spawn_blocking(move || scrape(addr)).await.expect("scrape");
        body.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0)
    }

    /// Waits until the server has finished `at_least` OK `method` calls.
    pub(crate) async fn wait_for_calls(&self, method: &str, at_least: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut poll = tokio::time::interval(Duration::from_millis(10));
        while self.calls(method).await < at_least {
            assert!(tokio::time::Instant::now() < deadline, "{method} never reached {at_least} calls");
            poll.tick().await;
        }
    }

    pub(crate) fn profile(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("profile-{name}"))
    }

    pub(crate) async fn register(&self, name: &str) -> QpcClient {
        QpcClient::register(&self.profile(name), self.addr, name, None, ClientOptions::default())
            .await
            .unwrap_or_else(|error| panic!("register {name}: {error}"))
    }

    /// Opens the profile `name`, or says why not.
    pub(crate) async fn open_result(&self, name: &str) -> Result<QpcClient, quicprochat_sdk::SdkError> {
        QpcClient::open(&self.profile(name), ClientOptions::default()).await
    }

    pub(crate) async fn open(&self, name: &str) -> QpcClient {
        open_profile(&self.profile(name)).await
    }
}

pub(crate) async fn open_profile(profile: &Path) -> QpcClient {
    QpcClient::open(profile, ClientOptions::default()).await.expect("open profile")
}

/// Waits until `client` has received `count` new messages (or fails after [`WAIT`]).
pub(crate) async fn receive_n(client: &QpcClient, count: usize) -> Vec<StoredMessage> {
    receive_within(client, count, WAIT).await
}

/// Exactly `count` new messages for `client` within `bound`.
pub(crate) async fn receive_within(client: &QpcClient, count: usize, bound: Duration) -> Vec<StoredMessage> {
    let deadline = tokio::time::Instant::now() + bound;
    let mut received = Vec::new();
    while received.len() < count {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(!remaining.is_zero(), "{} got {} of {count} messages: {received:?}", client.username(), received.len());
        received.extend(client.receive_wait(remaining).await.expect("receive"));
    }
    assert_eq!(received.len(), count, "{} got more messages than expected: {received:?}", client.username());
    received
}

/// The body of `GET /metrics` from the server's metrics endpoint at `addr`.
fn scrape(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").1
}

/// `GET path` on the server's metrics endpoint at `addr`: (status line, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

/// Texts of messages, in order.
pub(crate) fn texts(messages: &[StoredMessage]) -> Vec<&str> {
    messages.iter().map(|message| message.text.as_str()).collect()
}

/// A group "team" of alice (creator), bob and carol, everyone synced.
pub(crate) async fn team_of_three(harness: &Harness) -> (QpcClient, QpcClient, QpcClient) {
    let alice = harness.register("alice").await;
    let bob = harness.register("bob").await;
    let carol = harness.register("carol").await;
    alice.create_group("team").await.expect("create");
    alice.add_members("team", &["bob".into(), "carol".into()]).await.expect("add");
    bob.sync().await.expect("bob syncs");
    carol.sync().await.expect("carol syncs");
    (alice, bob, carol)
}

/// Fast heartbeats and short deadlines, for tests that break the path and
/// should not wait for the default dead-path bound.
pub(crate) fn fast_options() -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        supervisor: quicprochat_sdk::SupervisorConfig {
            heartbeat_interval: Duration::from_millis(200),
            heartbeat_timeout: Duration::from_millis(800),
            backoff_ceiling: Duration::from_secs(1),
            ..quicprochat_sdk::SupervisorConfig::default()
        },
        ..ClientOptions::default()
    }
}

/// Links a new device (profile `profile`) to the account of `approver`
/// through the server's relay: the new device shows its code, `approver`
/// approves it and adds it to its groups.
pub(crate) async fn link_device(
    harness: &Harness,
    approver: &QpcClient,
    profile: &str,
    label: &str,
) -> (QpcClient, quicprochat_sdk::LinkApproved) {
    let (code_tx, code_rx) = tokio::sync::oneshot::channel::<String>();
    let profile = harness.profile(profile);
    // Enough for the few groups of a test (100 take seconds in a debug build).
    let options = ClientOptions { linked_key_package_batch: 10, ..ClientOptions::default() };
    let new_device = QpcClient::link_device(&profile, harness.addr, label, WAIT, options, move |code| {
        let _ = code_tx.send(code.to_owned());
    });
    let approve = async {
        let code = code_rx.await.expect("the new device shows its code");
        approver.approve_device(&code, WAIT).await.expect("approved")
    };
    let (linked, approved) = tokio::join!(new_device, approve);
    (linked.expect("the new device is linked"), approved)
}
