//! Two federating `qpc-server` processes, `a.test` and `b.test`, and users
//! of each driving `qpc` as the README's walk-through does: alice on a adds
//! bob@b.test to a group, both write, a direct conversation across the
//! servers, and the same safety number on both sides.

use std::path::{Path, PathBuf};

use crate::process::{json_lines, qpc_ok, server_bin, ServerProcess};

/// Writes the config of a server for `domain` whose federation port is
/// `listen` and whose one peer is `peer` at `address` with `pin`.
fn write_config(dir: &Path, domain: &str, listen: &str, (peer, address, pin): (&str, &str, &str)) -> PathBuf {
    let path = dir.join(format!("{domain}.toml"));
    let text = format!(
        "[server]\ndomain = \"{domain}\"\n\n[federation]\nlisten = \"{listen}\"\nretry_min = \"50ms\"\nretry_max = \"1s\"\n\n\
         [[federation.peers]]\ndomain = \"{peer}\"\naddress = \"{address}\"\nfingerprints = [\"{pin}\"]\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// `qpc-server --data-dir DIR --domain DOMAIN federation fingerprint`.
fn fingerprint(data_dir: &Path, domain: &str) -> String {
    let output = std::process::Command::new(server_bin())
        .args(["--data-dir", &data_dir.display().to_string(), "--domain", domain, "federation", "fingerprint"])
        .output()
        .expect("run qpc-server");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let pin = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(pin.starts_with("sha256:"), "{pin}");
    pin
}

fn start(data_dir: &Path, config: &Path) -> ServerProcess {
    ServerProcess::start_with(data_dir, &["--config", &config.display().to_string()], &[])
}

/// a.test and b.test as `qpc-server` processes on `dir`, each the other's
/// peer: their processes and config files.
struct TwoServers {
    a: ServerProcess,
    b: ServerProcess,
    config_a: PathBuf,
    config_b: PathBuf,
}

fn two_servers(dir: &Path) -> TwoServers {
    let (data_a, data_b) = (dir.join("a"), dir.join("b"));
    let (pin_a, pin_b) = (fingerprint(&data_a, "a.test"), fingerprint(&data_b, "b.test"));
    // Each needs the other's federation address: a starts on a free port,
    // b with a's, then a again on the port it had, with b's.
    let config_a = write_config(dir, "a.test", "127.0.0.1:0", ("b.test", "127.0.0.1:9", &pin_b));
    let first_a = start(&data_a, &config_a);
    let port_a = first_a.federation.clone().expect("a's federation port");
    assert!(first_a.terminate().success());
    let config_b = write_config(dir, "b.test", "127.0.0.1:0", ("a.test", &port_a, &pin_a));
    let b = start(&data_b, &config_b);
    let port_b = b.federation.clone().expect("b's federation port");
    // b restarts on the ports it has now (the kill -9 test restarts it).
    let config_b = write_config(dir, "b.test", &port_b, ("a.test", &port_a, &pin_a));
    let config_a = write_config(dir, "a.test", &port_a, ("b.test", &port_b, &pin_b));
    let a = start(&data_a, &config_a);
    TwoServers { a, b, config_a, config_b }
}

#[test]
fn users_of_two_servers_share_a_group_a_direct_conversation_and_a_safety_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let TwoServers { a, b, .. } = two_servers(dir.path());

    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    qpc_ok(&alice, &["register", "alice", "--server", &a.addr]);
    qpc_ok(&bob, &["register", "bob", "--server", &b.addr]);
    qpc_ok(&alice, &["group", "create", "team"]);
    qpc_ok(&alice, &["group", "add", "team", "bob@b.test"]);
    qpc_ok(&alice, &["send", "team", "hi bob"]);

    let at_bob = json_lines(&qpc_ok(&bob, &["--json", "recv", "--wait", "10"]));
    assert_eq!(at_bob.len(), 1, "{at_bob:?}");
    assert_eq!((&at_bob[0]["from"], &at_bob[0]["text"]), (&"alice@a.test".into(), &"hi bob".into()));
    qpc_ok(&bob, &["send", "team", "hi alice"]);
    let at_alice = json_lines(&qpc_ok(&alice, &["--json", "recv", "--wait", "10"]));
    assert_eq!(at_alice.len(), 1, "{at_alice:?}");
    assert_eq!((&at_alice[0]["from"], &at_alice[0]["text"]), (&"bob@b.test".into(), &"hi alice".into()));
    let members = qpc_ok(&bob, &["group", "members", "team"]);
    assert_eq!(members.lines().collect::<Vec<_>>(), ["alice@a.test", "bob"]);

    qpc_ok(&alice, &["send", "@bob@b.test", "just us"]);
    let direct = json_lines(&qpc_ok(&bob, &["--json", "recv", "--wait", "10"]));
    assert_eq!((direct.len(), &direct[0]["text"]), (1, &"just us".into()), "{direct:?}");

    let number =
        |text: String| serde_json::from_str::<serde_json::Value>(&text).expect("json")["safety_number"].clone();
    let (at_alice, at_bob) = (
        number(qpc_ok(&alice, &["--json", "verify", "bob@b.test"])),
        number(qpc_ok(&bob, &["--json", "verify", "alice@a.test"])),
    );
    assert!(at_alice.as_str().is_some_and(|digits| !digits.is_empty()), "{at_alice}");
    assert_eq!(at_alice, at_bob, "both sides see the same safety number");

    assert!(a.terminate().success() && b.terminate().success(), "both stop with exit code 0");
}

/// Issue 19, scenario 3: `kill -9` of either server while messages cross,
/// then a restart on the same addresses: every message shows once, in order.
#[test]
fn kill_9_of_either_server_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let TwoServers { a, b, config_a, config_b } = two_servers(dir.path());
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    qpc_ok(&alice, &["register", "alice", "--server", &a.addr]);
    qpc_ok(&bob, &["register", "bob", "--server", &b.addr]);
    qpc_ok(&alice, &["group", "create", "team"]);
    qpc_ok(&alice, &["group", "add", "team", "bob@b.test"]);
    let texts = |lines: Vec<serde_json::Value>| -> Vec<String> {
        lines.iter().map(|line| line["text"].as_str().unwrap_or_default().to_owned()).collect()
    };
    let numbered = |prefix: &str, range: std::ops::RangeInclusive<u32>| -> Vec<String> {
        range.map(|n| format!("{prefix}{n}")).collect()
    };

    // b dies while alice's messages cross to it; a keeps the rest for it.
    for n in 1..=10 {
        qpc_ok(&alice, &["send", "team", &format!("a{n}")]);
    }
    let b_addr = b.addr.clone();
    drop(b); // SIGKILL
    for n in 11..=20 {
        qpc_ok(&alice, &["send", "team", &format!("a{n}")]);
    }
    let b = start_on(&dir.path().join("b"), &config_b, &b_addr);
    let at_bob = texts(recv_until(&bob, 20));
    assert_eq!(at_bob, numbered("a", 1..=20), "bob: once each, in order");

    // a, the group's hub, dies while bob's messages go to it; b keeps them.
    for n in 1..=5 {
        qpc_ok(&bob, &["send", "team", &format!("b{n}")]);
    }
    let a_addr = a.addr.clone();
    drop(a); // SIGKILL
    for n in 6..=10 {
        qpc_ok(&bob, &["send", "team", &format!("b{n}")]);
    }
    let a = start_on(&dir.path().join("a"), &config_a, &a_addr);
    let at_alice = texts(recv_until(&alice, 10));
    assert_eq!(at_alice, numbered("b", 1..=10), "alice: once each, in order");
    assert!(a.terminate().success() && b.terminate().success());
}

fn start_on(data_dir: &Path, config: &Path, listen: &str) -> ServerProcess {
    ServerProcess::start_with(data_dir, &["--config", &config.display().to_string(), "--listen", listen], &[])
}

/// `qpc --json recv --wait` until `count` messages arrived (each call
/// returns what is there, waiting up to 10 s for the first).
fn recv_until(profile: &Path, count: usize) -> Vec<serde_json::Value> {
    let mut received = Vec::new();
    for _ in 0..count {
        received.extend(json_lines(&qpc_ok(profile, &["--json", "recv", "--wait", "10"])));
        if received.len() >= count {
            break;
        }
    }
    assert_eq!(received.len(), count, "{received:?}");
    received
}
