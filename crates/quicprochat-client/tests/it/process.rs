//! Starting `qpc-server` as a child process and running `qpc` commands.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn qpc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_qpc"))
}

/// `qpc-server` is built next to `qpc` (same target dir) by `cargo test --workspace`.
pub(crate) fn server_bin() -> PathBuf {
    let path = qpc_bin().with_file_name(format!("qpc-server{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is missing: run `cargo test --workspace` (it builds qpc-server)", path.display());
    path
}

/// A running `qpc-server` child, killed on drop.
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) addr: String,
    /// The federation port's address, when the server federates.
    pub(crate) federation: Option<String>,
}

impl ServerProcess {
    /// Starts the server on `127.0.0.1:0` and waits for its readiness line.
    pub(crate) fn start(data_dir: &Path) -> ServerProcess {
        ServerProcess::start_with(data_dir, &[], &[])
    }

    /// Starts the server with extra flags and environment variables (on
    /// `127.0.0.1:0` unless `flags` name a `--listen` address).
    pub(crate) fn start_with(data_dir: &Path, flags: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let listen: &[&str] = if flags.contains(&"--listen") { &[] } else { &["--listen", "127.0.0.1:0"] };
        let mut child = Command::new(server_bin())
            .args(["--data-dir", &data_dir.display().to_string()])
            .args(listen)
            .args(flags)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
        let line = lines_rx.recv_timeout(WAIT).expect("qpc-server prints its address");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected readiness line {line:?}"))
            .to_owned();
        let federation = line.split_once(" federation ").map(|(_, addr)| addr.trim().to_owned());
        ServerProcess { child, addr, federation }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for qpc-server") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "qpc-server did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `qpc --profile PROFILE ARGS...`, logging errors only, no input; to
/// run, or to change first (environment, pipes).
pub(crate) fn qpc_command(profile: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(qpc_bin());
    command.arg("--profile").arg(profile).args(args).env("QPC_LOG", "error").stdin(Stdio::null());
    command
}

/// Runs `qpc --profile PROFILE ARGS...`.
pub(crate) fn qpc(profile: &Path, args: &[&str]) -> Output {
    qpc_command(profile, args).output().expect("run qpc")
}

/// The objects of `qpc --json` output, one per line.
pub(crate) fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|line| serde_json::from_str(line).expect("one JSON object per line")).collect()
}

/// Runs `qpc` and asserts success; returns stdout.
pub(crate) fn qpc_ok(profile: &Path, args: &[&str]) -> String {
    let output = qpc(profile, args);
    assert!(
        output.status.success(),
        "qpc {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A server under `dir`, alice and bob registered (profiles `dir/alice`,
/// `dir/bob`), and a group "team" of the two created by alice.
pub(crate) fn alice_and_bob_in_team(dir: &Path) -> (ServerProcess, PathBuf, PathBuf) {
    let server = ServerProcess::start(&dir.join("server"));
    let alice = dir.join("alice");
    let bob = dir.join("bob");
    qpc_ok(&alice, &["register", "alice", "--server", &server.addr]);
    qpc_ok(&bob, &["register", "bob", "--server", &server.addr]);
    qpc_ok(&alice, &["group", "create", "team"]);
    qpc_ok(&alice, &["group", "add", "team", "bob"]);
    (server, alice, bob)
}
