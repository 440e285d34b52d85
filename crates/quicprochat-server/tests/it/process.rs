//! `qpc-server` as a child process, for tests of signals and exit codes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use quicprochat_rpc::CertFingerprint;

use crate::harness::{TestServer, WAIT};

/// A running `qpc-server` child, killed on drop.
pub(crate) struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    fingerprint: CertFingerprint,
    /// The federation port, when the config turns it on.
    pub(crate) federation_addr: Option<SocketAddr>,
    scratch: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `qpc-server` on `data_dir`, `127.0.0.1:0`, and waits for its readiness line.
    pub(crate) fn start(data_dir: &Path) -> ServerProcess {
        ServerProcess::start_with(data_dir, None)
    }

    /// [`ServerProcess::start`] with a config file too (flags still win).
    pub(crate) fn start_with(data_dir: &Path, config: Option<&Path>) -> ServerProcess {
        let mut args = vec!["--data-dir".to_owned(), data_dir.display().to_string()];
        args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        if let Some(config) = config {
            args.extend(["--config".to_owned(), config.display().to_string()]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_qpc-server"))
            .args(&args)
            .env("RUST_LOG", std::env::var("QPC_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn qpc-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        });
        let line = lines_rx.recv_timeout(WAIT).expect("readiness line");
        let mut words = line.split_whitespace();
        let (Some("listening"), Some("on"), Some(addr), Some("fingerprint"), Some(fingerprint)) =
            (words.next(), words.next(), words.next(), words.next(), words.next())
        else {
            panic!("unexpected readiness line {line:?}");
        };
        let federation_addr = match (words.next(), words.next()) {
            (Some("federation"), Some(addr)) => Some(addr.parse().expect("federation address")),
            _ => None,
        };
        ServerProcess {
            child,
            addr: addr.parse().expect("address"),
            fingerprint: CertFingerprint::parse(fingerprint).expect("fingerprint"),
            federation_addr,
            scratch: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Sends SIGTERM; returns the exit status and how long the exit took.
    pub(crate) fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let kill = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill");
        assert!(kill.success());
        let status = self.child.wait().expect("wait for qpc-server");
        (status, started.elapsed())
    }
}

impl ServerProcess {
    /// SIGKILL: no shutdown hooks, no close frames, nothing flushed by us.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL qpc-server");
        self.child.wait().expect("reap qpc-server");
    }
}

impl TestServer for ServerProcess {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    fn dir(&self) -> &Path {
        self.scratch.path()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
