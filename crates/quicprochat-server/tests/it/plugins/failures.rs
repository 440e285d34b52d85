//! A plugin that is slow, fails or panics never stops the server: its
//! gate takes the policy, five failures in a row switch it off (metrics and
//! `/healthz` say so), a panic switches it off for good.

use std::net::SocketAddr;
use std::time::Duration;

use quicprochat_proto::{v1, Method, Status};
use quicprochat_server::config::{FailurePolicy, GateHook};
use serde_json::json;

use super::configured;
use super::gates::send;
use crate::harness::register_as;
use crate::harness::{group_of_two, http_get, sample, status_of, Harness, TestServer};

fn with_metrics(config: &mut quicprochat_server::ServerConfig) {
    config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sleeping_past_its_deadline_does_not_stop_sends_and_is_switched_off() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let mut testkit = configured("testkit", plugins.path(), json!({ "sleep_enqueue_ms": 400 }));
    testkit.deadline[GateHook::Enqueue as usize] = Duration::from_millis(20);
    let harness = Harness::start_with(|config| {
        with_metrics(config);
        config.plugins = vec![testkit];
    })
    .await;
    let metrics = harness.server.metrics_addr().expect("metrics");
    let group_id = vec![5u8; 16];
    let pair = group_of_two(&harness, harness.dir(), &group_id).await;
    let ciphertext = pair.alice_mls.encrypt(&group_id, b"hi").expect("encrypt");
    for index in 0..8 {
        send(&pair.alice_rpc, &group_id, &format!("m-{index}"), &ciphertext).await.expect("sends keep succeeding");
    }
    assert_eq!(crate::harness::queued_message_ids(&pair.bob_rpc).await.len(), 9, "the Welcome and 8 messages");

    let (_, page) = http_get(metrics, "/metrics");
    let series = |kind: &str| {
        sample(
            &page,
            &format!("qpc_plugin_hook_failures_total{{plugin=\"testkit\",hook=\"on_enqueue\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(series("timeout"), 5.0, "five timeouts, then switched off:\n{page}");
    assert_eq!(series("off"), 3.0, "the rest took the policy at once");
    assert_eq!(sample(&page, "qpc_plugin_enabled{plugin=\"testkit\"}"), 0.0);
    let (status, body) = http_get(metrics, "/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "degraded: plugins switched off: testkit\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gate_with_a_deny_policy_refuses_retryably() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let mut testkit = configured("testkit", plugins.path(), json!({ "fail_enqueue": true }));
    testkit.on_error[GateHook::Enqueue as usize] = FailurePolicy::Deny;
    let harness = Harness::start_with(|config| config.plugins = vec![testkit]).await;
    let group_id = vec![6u8; 16];
    let pair = group_of_two(&harness, harness.dir(), &group_id).await;
    let ciphertext = pair.alice_mls.encrypt(&group_id, b"hi").expect("encrypt");
    assert_eq!(status_of(send(&pair.alice_rpc, &group_id, "m-1", &ciphertext).await.map(|_| ())), Status::Unavailable);
    assert_eq!(crate::harness::queued_message_ids(&pair.bob_rpc).await.len(), 1, "only the Welcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_plugin_is_switched_off_for_good_and_registration_fails_closed() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let testkit = configured("testkit", plugins.path(), json!({ "panic_on_register": "boom" }));
    let harness = Harness::start_with(|config| {
        with_metrics(config);
        config.plugins = vec![testkit];
    })
    .await;
    let metrics = harness.server.metrics_addr().expect("metrics");
    register_as(&harness.connect().await, "alice").await.expect("allowed before the panic");
    assert_eq!(status_of(register_as(&harness.connect().await, "boom").await), Status::Unavailable);
    // on_register's default policy is deny: with its plugin off, nobody registers.
    assert_eq!(status_of(register_as(&harness.connect().await, "carol").await), Status::Unavailable);
    let (_, page) = http_get(metrics, "/metrics");
    let failures = |kind: &str| {
        sample(
            &page,
            &format!("qpc_plugin_hook_failures_total{{plugin=\"testkit\",hook=\"on_register\",kind=\"{kind}\"}}"),
        )
    };
    assert_eq!((failures("panic"), failures("off")), (1.0, 1.0), "{page}");
    let (_, health) = http_get(metrics, "/healthz");
    assert_eq!(health, "degraded: plugins switched off: testkit\n");
    // The server itself is fine: it still answers.
    let ping: quicprochat_proto::v1::PingResponse = harness
        .connect()
        .await
        .call(quicprochat_proto::Method::Ping, &quicprochat_proto::v1::PingRequest {})
        .await
        .expect("ping");
    assert!(ping.server_time_ms > 0);
}

/// A gate answering within its deadline but slowly: a burst of messages
/// gets half the request's time for its gates; what was admitted by then is
/// stored (in order), the rest is answered "not tried" instead of the whole
/// request running out of time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_behind_a_slow_gate_stores_what_was_admitted_in_time() {
    let plugins = tempfile::tempdir().expect("tempdir");
    let mut testkit = configured("testkit", plugins.path(), json!({ "sleep_enqueue_ms": 50 }));
    testkit.deadline[GateHook::Enqueue as usize] = Duration::from_millis(500);
    let harness = Harness::start_with(|config| {
        config.rpc_timeout = Duration::from_secs(1);
        config.plugins = vec![testkit];
    })
    .await;
    let group_id = vec![7u8; 16];
    let pair = group_of_two(&harness, harness.dir(), &group_id).await;
    let messages: Vec<_> = (0..20)
        .map(|index| v1::SendMessageRequest {
            group_id: group_id.clone().into(),
            message_id: format!("m-{index:02}").into_bytes().into(),
            ciphertext: pair.alice_mls.encrypt(&group_id, b"hi").expect("encrypt").into(),
        })
        .collect();
    let response: v1::SendMessagesResponse = pair
        .alice_rpc
        .call(Method::SendMessages, &v1::SendMessagesRequest { messages })
        .await
        .expect("answered within the request's time");
    let admitted = response.results.iter().take_while(|result| result.status == v1::StatusCode::Ok as i32).count();
    assert!((1..20).contains(&admitted), "{admitted} of 20 admitted in half a second of 50 ms gates");
    for result in &response.results[admitted..] {
        assert_eq!(result.status, v1::StatusCode::Unavailable as i32, "{result:?}");
    }
    let queued: Vec<Vec<u8>> =
        crate::harness::queue_in_order(&pair.bob_rpc).await.into_iter().filter(|id| id.starts_with(b"m-")).collect();
    let expected: Vec<Vec<u8>> = (0..admitted).map(|index| format!("m-{index:02}").into_bytes()).collect();
    assert_eq!(queued, expected, "the admitted messages, in order, and no other");
}
