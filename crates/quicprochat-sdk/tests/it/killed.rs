//! A server killed with SIGKILL (no close frames, the path just goes
//! silent) and restarted: clients detect the dead path by heartbeat,
//! reconnect, deliver what was queued, and nothing arrives twice.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use quicprochat_sdk::{ConnectionStatus, MessageState, QpcClient};

use crate::harness::{fast_options, receive_n, texts, WAIT};

/// `qpc-server`, built next to this test binary by `cargo test --workspace`.
fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(format!("qpc-server{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is missing: run `cargo test --workspace` (it builds qpc-server)", path.display());
    path
}

struct Server(Child);

impl Server {
    fn start(data: &Path, listen: &str) -> (Server, String) {
        let mut child = Command::new(server_bin())
            .args(["--data-dir", &data.display().to_string(), "--listen", listen])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn qpc-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("readiness line");
        let addr = line.split_whitespace().nth(2).expect("address in the readiness line").to_owned();
        (Server(child), addr)
    }

    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_connected(client: &QpcClient) {
    let mut status = client.status();
    tokio::time::timeout(WAIT, status.wait_for(|status| *status == ConnectionStatus::Connected))
        .await
        .expect("reconnected in time")
        .expect("status channel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_server_clients_recover_with_nothing_lost_or_doubled() {
    quicprochat_sdk::install_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let (mut server, addr) = Server::start(&data, "127.0.0.1:0");
    let socket = addr.parse().expect("address");
    let alice =
        QpcClient::register(&dir.path().join("alice"), socket, "alice", None, fast_options()).await.expect("alice");
    let bob = QpcClient::register(&dir.path().join("bob"), socket, "bob", None, fast_options()).await.expect("bob");
    alice.create_group("team").await.expect("create");
    alice.add_members("team", &["bob".into()]).await.expect("add bob");
    bob.sync().await.expect("bob joins");
    alice.send("team", "before the crash").await.expect("send");

    server.kill();
    let mut status = alice.status();
    tokio::time::timeout(WAIT, status.wait_for(|status| *status != ConnectionStatus::Connected))
        .await
        .expect("the dead path is detected by heartbeat")
        .expect("status channel");
    let queued = alice.send("team", "while the server was dead").await.expect("queued");
    assert_eq!(queued.state, MessageState::Pending);

    let (_server, _) = Server::start(&data, &addr);
    wait_connected(&alice).await;
    wait_connected(&bob).await;
    assert_eq!(alice.flush_outbox().await.expect("flush"), 0);
    let received = receive_n(&bob, 2).await;
    assert_eq!(texts(&received), ["before the crash", "while the server was dead"]);
    assert!(bob.receive().await.expect("receive").is_empty(), "nothing twice");
}
