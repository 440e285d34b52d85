//! The user-facing flows of `qpc` against a real `qpc-server` process.

use crate::process::{alice_and_bob_in_team, qpc, qpc_bin, qpc_ok, ServerProcess};

#[test]
fn register_group_send_and_receive_as_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, alice, bob) = alice_and_bob_in_team(dir.path());
    qpc_ok(&alice, &["send", "team", "hello", "bob"]);

    let received = qpc_ok(&bob, &["--json", "recv", "--wait", "10"]);
    let lines: Vec<serde_json::Value> =
        received.lines().map(|line| serde_json::from_str(line).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 1, "{received}");
    let message = &lines[0];
    assert_eq!(message["group"], "team");
    assert_eq!(message["from"], "alice");
    assert_eq!(message["text"], "hello bob");
    assert!(message["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(message["sent_at"].as_u64().is_some_and(|at| at > 0));
    // Shown once: a second recv prints nothing.
    assert_eq!(qpc_ok(&bob, &["--json", "recv"]), "");

    let members = qpc_ok(&bob, &["group", "members", "team"]);
    assert_eq!(members.lines().collect::<Vec<_>>(), ["alice", "bob"]);
    let groups = qpc_ok(&bob, &["--json", "group", "list"]);
    assert!(groups.contains("\"team\""), "{groups}");

    qpc_ok(&bob, &["send", "@alice", "hi", "alice"]);
    let at_alice = qpc_ok(&alice, &["recv", "--wait", "10"]);
    assert!(at_alice.contains("@bob <bob> hi alice"), "{at_alice}");
    let history = qpc_ok(&alice, &["history", "team"]);
    assert!(history.contains("hello bob (sent)"), "{history}");

    let verify_alice = qpc_ok(&alice, &["--json", "verify", "bob"]);
    let verify_bob = qpc_ok(&bob, &["--json", "verify", "alice"]);
    let number = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("json")["safety_number"].clone();
    assert_eq!(number(&verify_alice), number(&verify_bob), "both sides see the same safety number");

    assert!(server.terminate().success(), "SIGTERM stops the server with exit code 0");
}

#[test]
fn errors_are_clear_and_exit_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProcess::start(&dir.path().join("server"));
    qpc_ok(&dir.path().join("alice"), &["register", "alice", "--server", &server.addr]);

    let taken = qpc(&dir.path().join("other"), &["register", "alice", "--server", &server.addr]);
    assert!(!taken.status.success());
    let stderr = String::from_utf8_lossy(&taken.stderr);
    assert!(stderr.contains("ALREADY_EXISTS"), "{stderr}");

    let invalid = qpc(&dir.path().join("bad"), &["register", "Bad Name!", "--server", &server.addr]);
    assert!(!invalid.status.success());
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("INVALID_ARGUMENT"));

    let no_profile = qpc(&dir.path().join("nobody"), &["whoami"]);
    assert!(!no_profile.status.success());
    assert!(String::from_utf8_lossy(&no_profile.stderr).contains("register first"));

    let unknown_group = qpc(&dir.path().join("alice"), &["--json", "send", "nope", "hi"]);
    assert!(!unknown_group.status.success());
    let error: serde_json::Value =
        serde_json::from_slice(&unknown_group.stderr).expect("--json errors are a JSON object on stderr");
    assert!(error["error"].as_str().is_some_and(|text| text.contains("nope")));
}

#[test]
fn changed_server_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = dir.path().join("alice");
    let first = ServerProcess::start(&dir.path().join("server-1"));
    qpc_ok(&alice, &["register", "alice", "--server", &first.addr]);
    let addr = first.addr.clone();
    drop(first);
    // A different server (new certificate) on the same address.
    let impostor = std::process::Command::new(crate::process::server_bin())
        .args(["--data-dir", &dir.path().join("server-2").display().to_string(), "--listen", &addr])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut impostor = ServerGuard(impostor);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(impostor.0.stdout.as_mut().expect("stdout")), &mut line)
        .expect("readiness line");
    let refused = qpc(&alice, &["whoami"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is pinned"), "{stderr}");
    impostor.0.kill().ok();
}

struct ServerGuard(std::process::Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_holds_an_encrypted_conversation() {
    let output = std::process::Command::new(qpc_bin()).args(["--json", "demo"]).output().expect("run qpc demo");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect();
    let delivered: Vec<&serde_json::Value> = events.iter().filter(|event| event.get("latency_ms").is_some()).collect();
    // 3 group messages × 2 recipients, 1 direct message, 1 message after the removal.
    assert_eq!(delivered.len(), 8, "{events:?}");
    assert!(events.iter().any(|event| event["event"] == "removed_member_received" && event["messages"] == 0));
    assert_eq!(events.last().map(|event| event["event"].clone()), Some("done".into()));
}

#[test]
fn invite_only_registration_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let server = ServerProcess::start_with(&data, &["--registration", "invite"], &[]);
    let refused = qpc(&dir.path().join("alice"), &["register", "alice", "--server", &server.addr]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("invite"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let invite = std::process::Command::new(crate::process::server_bin())
        .args(["--data-dir", &data.display().to_string(), "invite", "create", "--uses", "1"])
        .output()
        .expect("qpc-server invite create");
    assert!(invite.status.success(), "{}", String::from_utf8_lossy(&invite.stderr));
    let token = String::from_utf8_lossy(&invite.stdout).trim().to_owned();
    qpc_ok(&dir.path().join("alice"), &["register", "alice", "--server", &server.addr, "--invite", &token]);
    let reused = qpc(&dir.path().join("bob"), &["register", "bob", "--server", &server.addr, "--invite", &token]);
    assert!(!reused.status.success(), "a single-use invite admits one registration");
}

#[test]
fn send_rate_limit_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One message per hour: the second send is refused with the retry hint.
    let server = ServerProcess::start_with(
        &dir.path().join("server"),
        &[],
        &[("QPC_RATE_LIMITS_SEND_PER_ACCOUNT_BURST", "1"), ("QPC_RATE_LIMITS_SEND_PER_ACCOUNT_PERIOD", "1h")],
    );
    let alice = dir.path().join("alice");
    qpc_ok(&alice, &["register", "alice", "--server", &server.addr]);
    qpc_ok(&dir.path().join("bob"), &["register", "bob", "--server", &server.addr]);
    qpc_ok(&alice, &["send", "@bob", "first"]);
    // Over the limit the message is kept in the outbox (pending), not lost.
    let limited = qpc_ok(&alice, &["--json", "send", "@bob", "second"]);
    let message: serde_json::Value = serde_json::from_str(limited.trim()).expect("json");
    assert_eq!(message["state"], "pending", "{limited}");
    let history = qpc_ok(&alice, &["history", "@bob"]);
    assert!(history.contains("second (pending)"), "{history}");
    let received = qpc_ok(&dir.path().join("bob"), &["--json", "recv", "--wait", "1"]);
    assert_eq!(received.lines().count(), 1, "only the first message got through: {received}");
}

#[test]
fn client_waits_out_a_short_rate_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    // One message per second: the SDK honours the retry-after hint and the second send succeeds.
    let server = ServerProcess::start_with(
        &dir.path().join("server"),
        &[],
        &[("QPC_RATE_LIMITS_SEND_PER_ACCOUNT_BURST", "1"), ("QPC_RATE_LIMITS_SEND_PER_ACCOUNT_PERIOD", "1s")],
    );
    let alice = dir.path().join("alice");
    qpc_ok(&alice, &["register", "alice", "--server", &server.addr]);
    qpc_ok(&dir.path().join("bob"), &["register", "bob", "--server", &server.addr]);
    qpc_ok(&alice, &["send", "@bob", "first"]);
    qpc_ok(&alice, &["send", "@bob", "second"]);
    let received = qpc_ok(&dir.path().join("bob"), &["--json", "recv", "--wait", "10"]);
    assert_eq!(received.lines().count(), 2, "{received}");
}
