//! `qpc device …` as a user runs it (issue 18): a second profile links to
//! alice's account with the code it prints, alice's first device approves
//! it, both devices get bob's messages, `device list` marks the current
//! device, and `device remove` ends the removed device's login.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::process::{alice_and_bob_in_team, json_lines, qpc, qpc_bin, qpc_ok};

#[test]
fn a_second_device_links_receives_and_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, alice, bob) = alice_and_bob_in_team(dir.path());
    let phone = dir.path().join("alice-phone");

    let mut link = Command::new(qpc_bin())
        .arg("--profile")
        .arg(&phone)
        .args(["--json", "device", "link", "--server", &server.addr, "--label", "phone", "--wait", "30"])
        .env("QPC_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run qpc device link");
    let mut stdout = BufReader::new(link.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the link code line");
    let code = serde_json::from_str::<serde_json::Value>(&first).expect("json")["link_code"]
        .as_str()
        .expect("a link code")
        .to_owned();
    assert!(!code.contains(char::is_whitespace) && code.len() == 66, "one token: {code}");

    let approved = json_lines(&qpc_ok(&alice, &["--json", "device", "approve", &code]));
    assert_eq!((approved[0]["label"].as_str(), approved[0]["groups"].as_u64()), (Some("phone"), Some(1)));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("the rest of link's output");
    assert!(link.wait().expect("link exits").success(), "device link succeeds: {rest}");
    assert_eq!(json_lines(&rest)[0]["username"], "alice");

    let devices = json_lines(&qpc_ok(&phone, &["--json", "device", "list"]));
    let shown: Vec<(&str, bool)> =
        devices.iter().map(|d| (d["label"].as_str().unwrap_or(""), d["current"] == true)).collect();
    assert_eq!(shown, [("first device", false), ("phone", true)]);
    let phone_id = devices[1]["id"].as_str().expect("an id").to_owned();
    let whoami = json_lines(&qpc_ok(&phone, &["--json", "whoami"]));
    assert_eq!(
        (whoami[0]["username"].as_str(), whoami[0]["device"].as_str()),
        (Some("alice"), Some(phone_id.as_str()))
    );
    assert!(qpc_ok(&phone, &["group", "list"]).contains("team"), "the phone is in alice's group");

    qpc_ok(&bob, &["send", "team", "hello", "both"]);
    for device in [&alice, &phone] {
        let got = json_lines(&qpc_ok(device, &["--json", "recv", "--wait", "10"]));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0]["from"].as_str(), got[0]["text"].as_str()), (Some("bob"), Some("hello both")));
        assert_eq!(got[0]["device"].as_str().map(str::len), Some(16), "the sender's device id");
    }

    let removed = json_lines(&qpc_ok(&alice, &["--json", "device", "remove", &phone_id]));
    assert_eq!(removed[0]["groups"], 1);
    let refused = qpc(&phone, &["recv"]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("removed from"), "a clear error on the removed device: {error}");
    assert!(server.terminate().success());
}
