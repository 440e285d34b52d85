//! The example plugins an operator runs, loaded by a real server: the rate
//! limiter answers retry-later with a delay, the policy refuses names,
//! banned accounts and oversized messages with its reasons, the audit log
//! holds pseudonyms only, and the webhook posts to a loopback listener.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use std::net::{Ipv4Addr, SocketAddr};

use quicprochat_proto::Status;
use quicprochat_rpc::RpcError;
use quicprochat_server::{RunningServer, ServerConfig};
use serde_json::json;

use super::gates::send;
use super::{configured, eventually, json_lines};
use crate::harness::register_as;
use crate::harness::{group_of_two, Harness, TestServer, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_answers_retry_later_per_sender_and_group() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let ratelimit = configured("ratelimit", plugins.path(), json!({ "per_second": 0.001, "burst": 2 }));
    let harness = Harness::start_with(|config| config.plugins = vec![ratelimit]).await;
    let group_id = vec![8u8; 16];
    let pair = group_of_two(&harness, harness.dir(), &group_id).await;
    let ciphertext = pair.alice_mls.encrypt(&group_id, b"hi").expect("encrypt");
    for index in 0..2 {
        send(&pair.alice_rpc, &group_id, &format!("m-{index}"), &ciphertext).await.expect("within the burst");
    }
    match send(&pair.alice_rpc, &group_id, "m-2", &ciphertext).await {
        Err(RpcError::Status { status: Status::ResourceExhausted, retry_after_ms, .. }) => {
            // A token every 1000 s: the wait is most of that, however slow the machine.
            assert!((900_000..=1_000_000).contains(&retry_after_ms), "about 1000 s: {retry_after_ms}")
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    let queued = crate::harness::queued_message_ids(&pair.bob_rpc).await;
    let expected = ["add-bob", "m-0", "m-1"].map(|id| id.as_bytes().to_vec());
    assert_eq!(queued, expected.into_iter().collect(), "the group's add and two messages, not the third");
    // Another group of alice's has its own budget.
    let other = vec![18u8; 16];
    crate::harness::register_group(&pair.alice_rpc, &pair.alice_mls, &other, "other").await.expect("group");
    let alone = pair.alice_mls.encrypt(&other, b"hi").expect("encrypt");
    send(&pair.alice_rpc, &other, "o-1", &alone).await.expect("another group, another budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_refuses_names_banned_accounts_and_large_messages() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let policy = configured(
        "policy",
        plugins.path(),
        json!({ "deny_usernames": ["admin*"], "banned": ["mallory"], "max_payload_bytes": { "named": 512 } }),
    );
    // mallory registered before the operator banned her.
    let before = Harness::start().await;
    let (_, mallory) = before.register("mallory").await;
    before.server.shutdown().await;
    let mut config = ServerConfig::new(before.dir.path().join("data"), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    config.plugins = vec![policy];
    let server = RunningServer::start(config).await.expect("restart with the policy");
    let harness = Harness { dir: before.dir, server };
    let group_id = vec![9u8; 16];
    let pair = group_of_two(&harness, harness.dir(), &group_id).await;

    match register_as(&harness.connect().await, "admin-1").await {
        Err(RpcError::Status { status: Status::PermissionDenied, message, .. }) => {
            assert!(message.contains("username not allowed on this server"), "{message}")
        }
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
    let rpc = harness.connect().await;
    let nonce = crate::harness::challenge(&rpc).await;
    let request = crate::harness::login_request(&mallory, "mallory", &nonce, &rpc.auth_exporter().expect("exporter"));
    match rpc.call::<_, quicprochat_proto::v1::LoginResponse>(quicprochat_proto::Method::Login, &request).await {
        Err(RpcError::Status { status: Status::PermissionDenied, message, .. }) => {
            assert!(message.contains("account banned"), "{message}")
        }
        other => panic!("expected PERMISSION_DENIED for a banned account, got {other:?}"),
    }
    let small = pair.alice_mls.encrypt(&group_id, b"hi").expect("encrypt");
    send(&pair.alice_rpc, &group_id, "small", &small).await.expect("under the limit");
    let large = pair.alice_mls.encrypt(&group_id, &[b'x'; 1000]).expect("encrypt");
    match send(&pair.alice_rpc, &group_id, "big", &large).await {
        Err(RpcError::Status { status: Status::PermissionDenied, message, .. }) => {
            assert!(message.contains("512 bytes"), "the reason names the limit: {message}")
        }
        other => panic!("expected PERMISSION_DENIED for a large message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_holds_pseudonyms_and_no_names() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let log = plugins.path().join("audit.jsonl");
    let audit = configured(
        "audit",
        plugins.path(),
        json!({ "path": log.display().to_string(), "key": "00112233445566778899aabbccddeeff" }),
    );
    let harness = Harness::start_with(|config| config.plugins = vec![audit]).await;
    let group_id = vec![10u8; 16];
    let pair = group_of_two(&harness, harness.dir(), &group_id).await;
    let ciphertext = pair.alice_mls.encrypt(&group_id, b"hi").expect("encrypt");
    send(&pair.alice_rpc, &group_id, "m-1", &ciphertext).await.expect("send");

    eventually("the stored line", || json_lines(&log).iter().any(|line| line["event"] == "stored")).await;
    let lines = json_lines(&log);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("alice") && !text.contains("bob"), "no name in the audit log:\n{text}");
    let registered: Vec<&str> =
        lines.iter().filter(|line| line["event"] == "register").filter_map(|line| line["user"].as_str()).collect();
    assert_eq!(registered.len(), 2, "{text}");
    let stored = lines.iter().find(|line| line["event"] == "stored").expect("stored");
    assert_eq!(stored["sender"], registered[0], "alice's pseudonym is stable: {text}");
    assert_eq!(stored["recipients"], json!([registered[1]]));
    assert_eq!(stored["size"], ciphertext.len());
    assert!(registered[0].len() == 16 && registered[0].chars().all(|c| c.is_ascii_hexdigit()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_posts_each_event_to_its_url() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    let url = format!("http://{}/qpc-events", listener.local_addr().expect("addr"));
    let (bodies, received) = mpsc::channel();
    std::thread::spawn(move || serve_posts(listener, bodies));
    let plugins = tempfile::tempdir().expect("tempdir");
    let webhook = configured("webhook", plugins.path(), json!({ "url": url, "events": ["stored", "commit"] }));
    let harness = Harness::start_with(|config| config.plugins = vec![webhook]).await;
    let group_id = vec![11u8; 16];
    let pair = group_of_two(&harness, harness.dir(), &group_id).await;
    let ciphertext = pair.alice_mls.encrypt(&group_id, b"hi").expect("encrypt");
    send(&pair.alice_rpc, &group_id, "m-1", &ciphertext).await.expect("send");

    let mut events = Vec::new();
    while events.len() < 2 {
        let body: String = tokio::task::block_in_place(|| received.recv_timeout(WAIT)).expect("a notification");
        events.push(serde_json::from_str::<serde_json::Value>(&body).expect("JSON"));
    }
    assert_eq!(events[0]["event"], "commit");
    assert_eq!(events[0]["added"], json!(["bob"]));
    assert_eq!((events[1]["event"].clone(), events[1]["sender"].clone()), (json!("stored"), json!("alice")));
    assert_eq!(events[1]["message"], hex::encode("m-1"));
}

/// Answers every POST with 204 and hands its body on.
fn serve_posts(listener: TcpListener, bodies: mpsc::Sender<String>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        let mut reader = BufReader::new(stream);
        loop {
            let mut length = 0usize;
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                break;
            }
            let _ = reader.get_mut().write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
            if bodies.send(String::from_utf8_lossy(&body).into_owned()).is_err() {
                return;
            }
        }
    }
}
