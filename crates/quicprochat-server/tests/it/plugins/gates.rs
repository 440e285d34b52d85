//! Gates decide and observers see metadata: a refusal's reason reaches the
//! client, retry-later carries its delay, and the recorded events hold
//! names, sizes and recipients, never a message's bytes.

use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_rpc::{RpcClient, RpcError};
use serde_json::json;

use super::{configured, eventually, json_lines};
use crate::harness::{group_of_two, register_as, Harness, TestServer};

pub(crate) async fn send(
    rpc: &RpcClient,
    group_id: &[u8],
    message_id: &str,
    ciphertext: &[u8],
) -> Result<(), RpcError> {
    let request = v1::SendMessageRequest {
        group_id: group_id.to_vec().into(),
        message_id: message_id.as_bytes().to_vec().into(),
        ciphertext: ciphertext.to_vec().into(),
    };
    rpc.call::<_, v1::SendMessageResponse>(Method::SendMessage, &request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_refuse_with_their_reason_and_observers_see_metadata_only() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let record = plugins.path().join("record.jsonl");
    let testkit = configured(
        "testkit",
        plugins.path(),
        json!({ "deny_register_prefix": "guest-", "record": record.display().to_string() }),
    );
    let harness = Harness::start_with(|config| config.plugins = vec![testkit]).await;

    let rpc = harness.connect().await;
    let refused = register_as(&rpc, "guest-7").await;
    match &refused {
        Err(RpcError::Status { status: Status::PermissionDenied, message, .. }) => {
            assert!(message.contains("names starting with guest- are reserved"), "{message}")
        }
        other => panic!("expected PERMISSION_DENIED with the plugin's reason, got {other:?}"),
    }

    let group_id = vec![3u8; 16];
    let pair = group_of_two(&harness, harness.dir(), &group_id).await;
    let secret = b"the plaintext nobody on the server reads";
    let ciphertext = pair.alice_mls.encrypt(&group_id, secret).expect("encrypt");
    send(&pair.alice_rpc, &group_id, "m-1", &ciphertext).await.expect("send");
    harness.login("bob", &pair.bob).await;

    eventually("on_stored", || json_lines(&record).iter().any(|line| line["hook"] == "on_stored")).await;
    // Every gate is asked before its request is answered: no wait needed.
    let lines = json_lines(&record);
    let hooks: Vec<&str> = lines.iter().filter_map(|line| line["hook"].as_str()).collect();
    for hook in ["on_register", "on_login", "on_group_create", "on_enqueue", "on_stored", "on_commit"] {
        assert!(hooks.contains(&hook), "{hook} was not called: {hooks:?}");
    }
    let stored = lines.iter().find(|line| line["hook"] == "on_stored").expect("stored");
    assert_eq!(stored["sender"], "alice");
    assert_eq!(stored["message_id"], hex::encode("m-1"));
    assert_eq!(stored["size"], ciphertext.len());
    assert_eq!(stored["recipients"], json!(["bob"]));
    let login = lines.iter().find(|line| line["hook"] == "on_login").expect("login");
    let bob_device = quicprochat_core::DeviceId::of_key(pair.bob.public_key());
    assert_eq!(login["username"], "bob");
    assert_eq!(login["device_id"], hex::encode(bob_device.as_bytes()), "the first device's id, from the account key");
    let enqueue = lines.iter().find(|line| line["hook"] == "on_enqueue").expect("enqueue");
    let alice_device = quicprochat_core::DeviceId::of_key(pair.alice.public_key());
    assert_eq!(enqueue["sender_device"], hex::encode(alice_device.as_bytes()));
    let registered = |lines: &[serde_json::Value]| -> Vec<String> {
        let registrations = lines.iter().filter(|line| line["hook"] == "on_register");
        registrations.map(|line| line["source_address"].as_str().unwrap_or("?").to_owned()).collect()
    };
    assert_eq!(registered(&lines), ["", "", ""], "no address without the opt-in");
    let commit = lines.iter().find(|line| line["hook"] == "on_commit").expect("commit");
    assert_eq!((commit["committer"].clone(), commit["added"].clone()), (json!("alice"), json!(["bob"])));
    let created = lines.iter().find(|line| line["hook"] == "on_group_create").expect("created");
    assert_eq!((created["creator"].clone(), created["direct"].clone()), (json!("alice"), json!(false)));
    let text = std::fs::read_to_string(&record).expect("record");
    assert!(!text.contains("plaintext"), "no message text reaches a plugin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_later_reaches_the_client_with_its_delay() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let testkit = configured("testkit", plugins.path(), json!({ "retry_enqueue_ms": 1500 }));
    let harness = Harness::start_with(|config| config.plugins = vec![testkit]).await;
    let group_id = vec![4u8; 16];
    let pair = group_of_two(&harness, harness.dir(), &group_id).await;
    let ciphertext = pair.alice_mls.encrypt(&group_id, b"hi").expect("encrypt");
    match send(&pair.alice_rpc, &group_id, "m-1", &ciphertext).await {
        Err(RpcError::Status { status: Status::ResourceExhausted, retry_after_ms, message, .. }) => {
            assert_eq!(retry_after_ms, 1500);
            assert!(message.contains("slow down"), "{message}");
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    assert_eq!(crate::harness::queued_message_ids(&pair.bob_rpc).await.len(), 1, "only the Welcome, no message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_asked_in_order_and_only_an_opted_in_one_sees_addresses() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let record = plugins.path().join("record.jsonl");
    let policy = configured("policy", plugins.path(), json!({ "deny_usernames": ["guest-*"] }));
    let mut testkit = configured("testkit", plugins.path(), json!({ "record": record.display().to_string() }));
    testkit.source_address = true;
    let harness = Harness::start_with(|config| config.plugins = vec![policy, testkit]).await;
    register_as(&harness.connect().await, "guest-1").await.expect_err("the policy refuses");
    register_as(&harness.connect().await, "carol").await.expect("both allow");
    let lines = json_lines(&record);
    let asked: Vec<(&str, &str)> = lines
        .iter()
        .filter(|line| line["hook"] == "on_register")
        .filter_map(|line| Some((line["username"].as_str()?, line["source_address"].as_str()?)))
        .collect();
    // The first refusal wins: the testkit, second, was not asked about guest-1.
    assert_eq!(asked, [("carol", "127.0.0.1")]);
}
