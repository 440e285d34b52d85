//! Catalogue: requests that would make the server restore a group's view
//! for nothing (security review F3). Bad framing is refused before any view
//! is restored (the store's `get_group`, the whole record a restore reads,
//! is not called; no group has a log yet, so housekeeping reads none
//! either), a member already leaving writes nothing, and commits, leaves
//! and group creations stop at the account's budget.

use std::net::SocketAddr;
use std::time::Duration;

use quicprochat_core::MlsClient;
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_rpc::RpcClient;
use quicprochat_server::config::RateLimit;

use super::{submit, Bench, Connection, Outcome};
use crate::harness::{alice_and_bob, clone_identity, http_get, register_group, sample, TestServer};

/// Commits and leaves each account may submit in this catalogue.
const COMMIT_BUDGET: u32 = 6;
/// Groups each account may create in this catalogue.
const CREATE_BUDGET: u32 = 1;
/// A period no test outlives: spent cells never come back.
const NEVER: Duration = Duration::from_secs(30 * 24 * 3600);

/// Calls of the store's `get_group` (the full record a view restore reads).
async fn full_reads(metrics: SocketAddr) -> f64 {
    let (_, body) = tokio::task::spawn_blocking(move || http_get(metrics, "/metrics")).await.expect("scrape");
    sample(&body, r#"qpc_storage_operation_duration_seconds_count{operation="get_group"}"#)
}

async fn leave(rpc: &RpcClient, group_id: &[u8], proposal: Vec<u8>, message_id: &[u8]) -> Outcome {
    let request = v1::LeaveGroupRequest {
        group_id: group_id.to_vec().into(),
        proposal: proposal.into(),
        message_id: message_id.to_vec().into(),
    };
    Outcome::of(rpc.call::<_, v1::LeaveGroupResponse>(Method::LeaveGroup, &request).await)
}

async fn create(rpc: &RpcClient, mls: &MlsClient, group_id: &[u8]) -> Outcome {
    Outcome::of(register_group(rpc, mls, group_id, "mine").await)
}

#[tokio::test]
async fn expensive_requests_catalogue() {
    let mut bench = Bench::start_with(|config| {
        config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.rate_limits.commit_per_account = RateLimit { burst: COMMIT_BUDGET, period: NEVER };
        config.rate_limits.create_group_per_account = RateLimit { burst: CREATE_BUDGET, period: NEVER };
    })
    .await;
    let metrics = bench.harness.server.metrics_addr().expect("metrics enabled");
    let (alice, alice_mls, bob, group_id) = alice_and_bob(&bench.harness).await;
    let alice_rpc = bench.harness.login("alice", &alice).await;
    let bob_rpc = bench.harness.login("bob", &bob).await;
    let invalid = Outcome::Status(Status::InvalidArgument);

    // Commit budget: 1 of 6 spent by the add in alice_and_bob.
    let before = full_reads(metrics).await;
    let outcome = submit(&alice_rpc, &group_id, 1, b"not an MLS message".to_vec(), b"garbage");
    bench.case("garbage commit at the current epoch", &alice_rpc, invalid.clone(), Connection::Survives, outcome).await;
    let proposal = alice_mls.leave_group(&group_id).expect("a proposal");
    let outcome = submit(&alice_rpc, &group_id, 1, proposal, b"proposal-as-commit");
    bench.case("a proposal submitted as a commit", &alice_rpc, invalid.clone(), Connection::Survives, outcome).await;
    assert_eq!(full_reads(metrics).await, before, "no view was restored for either");

    // bob leaves (a write, outside the cases); leaving again writes nothing.
    let bob_mls = MlsClient::open(&bench.harness.dir().join("bob.db"), clone_identity(&bob), "bob").expect("mls");
    let fetched: v1::FetchResponse =
        bob_rpc.call(Method::Fetch, &v1::FetchRequest { after_seq: 0, limit: 10 }).await.expect("fetch");
    let welcome = fetched.entries.iter().find(|entry| entry.kind == v1::EntryKind::Welcome as i32).expect("welcome");
    bob_mls.join_from_welcome(&welcome.payload).expect("bob joins");
    let first = bob_mls.leave_group(&group_id).expect("leave");
    assert_eq!(leave(&bob_rpc, &group_id, first, b"bye").await, Outcome::Served);
    let again = bob_mls.leave_group(&group_id).expect("leave again");
    let outcome = leave(&bob_rpc, &group_id, again, b"bye-again");
    bench.case("a second leave in the same epoch", &bob_rpc, Outcome::Served, Connection::Survives, outcome).await;

    // alice has spent 3 of 6: the 4th to 6th are refused as garbage, the
    // 7th by the budget, before it is even parsed.
    let outcome = async {
        for attempt in 0..COMMIT_BUDGET {
            let outcome =
                submit(&alice_rpc, &group_id, 1, b"junk".to_vec(), format!("junk-{attempt}").as_bytes()).await;
            if outcome != invalid {
                return outcome;
            }
        }
        Outcome::Other("never refused by the budget".into())
    };
    let exhausted = Outcome::Status(Status::ResourceExhausted);
    bench.case("commits past the account's budget", &alice_rpc, exhausted.clone(), Connection::Survives, outcome).await;

    // Group creations: carol's first is a write, her second is refused.
    let (carol_rpc, carol) = bench.harness.register("carol").await;
    let carol_mls =
        MlsClient::open(&bench.harness.dir().join("carol.db"), clone_identity(&carol), "carol").expect("mls");
    assert_eq!(create(&carol_rpc, &carol_mls, &[1u8; 16]).await, Outcome::Served);
    let outcome = create(&carol_rpc, &carol_mls, &[2u8; 16]);
    bench.case("groups created past the account's budget", &carol_rpc, exhausted, Connection::Survives, outcome).await;
    assert_eq!(bench.cases(), 5);
}
