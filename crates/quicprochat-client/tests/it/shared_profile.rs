//! Two processes on one profile: `qpc recv --follow` running while the same
//! user's `qpc send` (which catches up before it encrypts) runs beside it,
//! and the peer sends at the same time. Each process processes only what
//! the other has not (the stored cursor, read under the batch's locks, is
//! the truth), so no entry is processed twice: no used key is asked for
//! again, nothing is skipped with a warning, every message shows once.

use std::io::Read;
use std::process::Stdio;

use crate::process::{alice_and_bob_in_team, json_lines, qpc_command, qpc_ok};

const ROUNDS: usize = 20;

#[test]
fn recv_follow_and_send_on_one_profile_process_each_entry_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, alice, bob) = alice_and_bob_in_team(dir.path());
    qpc_ok(&bob, &["recv"]);
    let mut follow = qpc_command(&bob, &["--json", "recv", "--follow"])
        .env("QPC_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qpc recv --follow");
    for round in 0..ROUNDS {
        let from_alice = qpc_command(&alice, &["send", "team", &format!("a{round}")])
            .stdout(Stdio::null())
            .spawn()
            .expect("alice sends");
        let from_bob = qpc_command(&bob, &["send", "team", &format!("b{round}")])
            .env("QPC_LOG", "warn")
            .output()
            .expect("bob sends");
        assert!(from_bob.status.success(), "bob's send: {}", String::from_utf8_lossy(&from_bob.stderr));
        let warned = String::from_utf8_lossy(&from_bob.stderr);
        assert!(!warned.contains("skipping an entry"), "bob's send processed an entry again: {warned}");
        let status = from_alice.wait_with_output().expect("alice's send").status;
        assert!(status.success());
    }
    let expected: Vec<String> = (0..ROUNDS).map(|round| format!("a{round}")).collect();
    let mut from_alice: Vec<String> = json_lines(&qpc_ok(&bob, &["--json", "history", "team", "--limit", "1000"]))
        .iter()
        .filter(|value| value["from"] == "alice")
        .map(|value| value["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    from_alice.sort_by_key(|text| text[1..].parse::<usize>().unwrap_or(usize::MAX));
    assert_eq!(from_alice, expected, "bob's history holds each of alice's messages once");
    let _ = follow.kill();
    let _ = follow.wait();
    let mut warnings = String::new();
    follow.stderr.take().expect("piped").read_to_string(&mut warnings).expect("stderr");
    assert!(!warnings.contains("skipping an entry"), "the follow process processed an entry again: {warnings}");
    assert!(server.terminate().success());
}
