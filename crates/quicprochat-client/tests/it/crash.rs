//! `qpc` stopped dead in the middle of a catch-up, at the crash points
//! (`quicprochat_core::crash_point`, debug builds) that matter to a batched
//! receive: half way through a batch's MLS writes, just before its commit,
//! and just after it (before the `Ack`). Each stop is the process's SIGKILL
//! of itself: no destructor, no flush, as `kill -9`. After a restart every
//! message is shown once, in order; the history holds each once; the MLS
//! state is consistent (both directions still decrypt).

use std::path::Path;
use std::process::Output;

use quicprochat_sdk::{ClientOptions, QpcClient};

use crate::process::{alice_and_bob_in_team, json_lines, qpc_command, qpc_ok};

/// Messages alice queues for bob; the server's fetch page is 200, so the
/// catch-up takes two batches, the first with bob's Welcome and the commit
/// adding carol (entry 152) in it.
const BACKLOG: usize = 300;

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("m{n:04}")).collect()
}

fn texts(stdout: &str) -> Vec<String> {
    json_lines(stdout).iter().map(|value| value["text"].as_str().unwrap_or_default().to_owned()).collect()
}

/// `qpc ARGS` for `profile`, stopped at `crash_at` (`point:n`).
fn qpc_crashing_at(profile: &Path, args: &[&str], crash_at: &str) -> Output {
    qpc_command(profile, args).env("QPC_CRASH_AT", crash_at).output().expect("run qpc")
}

/// Asserts that `output` is of a process stopped dead at `crash_at`, not
/// one that failed on its own.
fn assert_stopped_at(output: &Output, crash_at: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("crash point {crash_at} reached")), "qpc did not reach {crash_at}: {stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(matches!(output.status.signal(), Some(9) | Some(6)), "stopped by a signal: {:?}", output.status);
    }
    assert!(!output.status.success());
}

/// Alice queues the backlog through the SDK, adding carol half way.
fn queue_backlog(alice: &Path) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = QpcClient::open(alice, ClientOptions::default()).await.expect("alice opens");
        for (index, text) in numbered(0..BACKLOG).iter().enumerate() {
            if index == BACKLOG / 2 {
                client.add_members("team", &["carol".to_owned()]).await.expect("add carol");
            }
            client.send("team", text).await.expect("send");
        }
        client.disconnect().await;
    });
}

#[test]
fn a_catch_up_stopped_dead_at_any_crash_point_shows_every_message_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, alice, bob) = alice_and_bob_in_team(dir.path());
    let carol = dir.path().join("carol");
    qpc_ok(&carol, &["register", "carol", "--server", &server.addr]);
    queue_backlog(&alice);

    let mut shown = Vec::new();
    // Half way through the first batch's MLS writes (the Welcome, the
    // first messages), just before its commit (the commit adding carol
    // merged), after its commit but before the Ack; then, the first batch
    // kept, half way through the second and just before its commit.
    for crash_at in [
        "mls_storage_call:40",
        "batch_before_commit:1",
        "batch_after_commit:1",
        "mls_storage_call:30",
        "batch_before_commit:1",
    ] {
        let output = qpc_crashing_at(&bob, &["--json", "recv"], crash_at);
        assert_stopped_at(&output, crash_at);
        shown.extend(texts(&String::from_utf8_lossy(&output.stdout)));
    }
    assert!(shown.is_empty(), "a run stopped before it printed anything: {shown:?}");
    loop {
        let printed = texts(&qpc_ok(&bob, &["--json", "recv"]));
        if printed.is_empty() {
            break;
        }
        shown.extend(printed);
    }
    assert_eq!(shown, numbered(0..BACKLOG), "every message shown once, in queue order");

    let history = texts(&qpc_ok(&bob, &["--json", "history", "team", "--limit", "1000"]));
    assert_eq!(history, numbered(0..BACKLOG), "the history holds every message once, in order");
    let integrity: String = rusqlite::Connection::open(bob.join("client.db"))
        .and_then(|db| db.query_row("PRAGMA integrity_check", [], |row| row.get(0)))
        .expect("integrity check");
    assert_eq!(integrity, "ok");

    // The MLS state is consistent: the group still works both ways.
    qpc_ok(&bob, &["send", "team", "bob is back"]);
    let at_alice = texts(&qpc_ok(&alice, &["--json", "recv", "--wait", "10"]));
    assert_eq!(at_alice, ["bob is back"]);
    qpc_ok(&alice, &["send", "team", "welcome back"]);
    assert_eq!(texts(&qpc_ok(&bob, &["--json", "recv", "--wait", "10"])), ["welcome back"]);
    assert!(server.terminate().success());
}

#[test]
fn sends_stopped_dead_before_and_after_the_server_took_them_are_delivered_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, alice, bob) = alice_and_bob_in_team(dir.path());
    qpc_ok(&bob, &["recv"]);
    for text in numbered(0..3) {
        qpc_ok(&alice, &["send", "team", &text]);
    }
    // m0003 is encrypted and in the outbox, and never leaves this run.
    let stopped = qpc_crashing_at(&alice, &["send", "team", "m0003"], "send_after_commit:1");
    assert_stopped_at(&stopped, "send_after_commit:1");
    // The next run sends m0003 from the outbox at login; the server takes
    // it, and the run stops before it records that.
    let stopped = qpc_crashing_at(&alice, &["send", "team", "m0004"], "send_after_answer:1");
    assert_stopped_at(&stopped, "send_after_answer:1");
    // m0003 goes again with its id (the server answers from its record),
    // then m0004 and the rest.
    for text in numbered(4..6) {
        qpc_ok(&alice, &["send", "team", &text]);
    }
    let mut at_bob = Vec::new();
    loop {
        let printed = texts(&qpc_ok(&bob, &["--json", "recv"]));
        if printed.is_empty() {
            break;
        }
        at_bob.extend(printed);
    }
    assert_eq!(at_bob, numbered(0..6), "every send delivered once, in order");
    let history = json_lines(&qpc_ok(&alice, &["--json", "history", "team"]));
    let states: Vec<(&str, &str)> = history
        .iter()
        .map(|line| (line["text"].as_str().unwrap_or_default(), line["state"].as_str().unwrap_or_default()))
        .collect();
    let expected: Vec<(String, &str)> = numbered(0..6).into_iter().map(|text| (text, "sent")).collect();
    let expected: Vec<(&str, &str)> = expected.iter().map(|(text, state)| (text.as_str(), *state)).collect();
    assert_eq!(states, expected, "alice's outbox is empty and each message sent once");

    // Neither side's MLS state went wrong: both directions still decrypt.
    qpc_ok(&bob, &["send", "team", "got them all"]);
    assert_eq!(texts(&qpc_ok(&alice, &["--json", "recv", "--wait", "10"])), ["got them all"]);
    assert!(server.terminate().success());
}
