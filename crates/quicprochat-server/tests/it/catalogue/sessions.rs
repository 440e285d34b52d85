//! Catalogue: requests without a session, sessions and proofs used where
//! they do not belong, and registrations with names or keys that must be
//! refused.

use quicprochat_core::{auth_transcript, AuthPurpose, Identity};
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_rpc::RpcClient;

use super::{Bench, Connection, Outcome};
use crate::harness::{challenge, login_request, TestServer};

/// Methods that serve only a logged-in connection.
const SESSION_METHODS: &[Method] = &[
    Method::ResolveUser,
    Method::UploadKeyPackages,
    Method::FetchKeyPackage,
    Method::KeyPackageStock,
    Method::CreateGroup,
    Method::SubmitCommit,
    Method::LeaveGroup,
    Method::SendMessage,
    Method::GroupMembers,
    Method::SendMessages,
    Method::Fetch,
    Method::Ack,
    Method::Subscribe,
];

#[tokio::test]
async fn sessions_catalogue() {
    // Refused registrations count against the per-address limit too; this
    // catalogue makes more than its default burst.
    let mut bench = Bench::start_with(|config| config.rate_limits.register_per_address.burst = 100).await;
    // The write detector's positive control: a registration is seen.
    let before = bench.writes();
    let (_alice_rpc, alice) = bench.harness.register("alice").await;
    assert_ne!(bench.writes(), before, "a real write moves data_version");
    let unauthenticated = Outcome::Status(Status::Unauthenticated);

    let anonymous = bench.harness.connect().await;
    for method in SESSION_METHODS {
        // An empty body is a valid Protobuf message of every request type.
        let outcome = async { Outcome::of(anonymous.call_raw(*method, bytes::Bytes::new()).await) };
        let name = format!("{} without a session", method.name());
        bench.case(&name, &anonymous, unauthenticated.clone(), Connection::Survives, outcome).await;
    }

    // alice is logged in on another connection: that session is not this one's.
    let _logged_in = bench.harness.login("alice", &alice).await;
    let outcome = async { Outcome::of(anonymous.call_raw(Method::Fetch, fetch_body()).await) };
    bench
        .case("session of another connection", &anonymous, unauthenticated.clone(), Connection::Survives, outcome)
        .await;

    let victim = bench.harness.connect().await;
    let attacker = bench.harness.connect().await;
    let outcome = async {
        let nonce = challenge(&attacker).await;
        let stolen = login_request(&alice, "alice", &nonce, &victim.auth_exporter().expect("exporter"));
        Outcome::of(attacker.call::<_, v1::LoginResponse>(Method::Login, &stolen).await)
    };
    bench
        .case(
            "login proof made for another connection",
            &attacker,
            unauthenticated.clone(),
            Connection::Survives,
            outcome,
        )
        .await;

    let nonce = challenge(&victim).await;
    let proof = login_request(&alice, "alice", &nonce, &victim.auth_exporter().expect("exporter"));
    let _: v1::LoginResponse = victim.call(Method::Login, &proof).await.expect("first use logs in");
    let outcome = async { Outcome::of(victim.call::<_, v1::LoginResponse>(Method::Login, &proof).await) };
    bench.case("replayed login signature", &victim, unauthenticated.clone(), Connection::Survives, outcome).await;

    let fresh = bench.harness.connect().await;
    let outcome = async {
        let proof = login_request(&alice, "alice", b"a nonce never issued", &fresh.auth_exporter().expect("exporter"));
        Outcome::of(fresh.call::<_, v1::LoginResponse>(Method::Login, &proof).await)
    };
    bench.case("login without a challenge", &fresh, unauthenticated.clone(), Connection::Survives, outcome).await;

    let mallory = Identity::generate().expect("identity");
    let outcome = async {
        let nonce = challenge(&fresh).await;
        let proof = login_request(&mallory, "alice", &nonce, &fresh.auth_exporter().expect("exporter"));
        Outcome::of(fresh.call::<_, v1::LoginResponse>(Method::Login, &proof).await)
    };
    bench.case("login signed by another key", &fresh, unauthenticated.clone(), Connection::Survives, outcome).await;

    let outcome = async {
        let nonce = challenge(&fresh).await;
        let proof = login_request(&mallory, "nobody", &nonce, &fresh.auth_exporter().expect("exporter"));
        Outcome::of(fresh.call::<_, v1::LoginResponse>(Method::Login, &proof).await)
    };
    bench.case("login as an unknown user", &fresh, unauthenticated.clone(), Connection::Survives, outcome).await;

    let invalid = Outcome::Status(Status::InvalidArgument);
    for (name, username) in [
        ("username empty", String::new()),
        ("username too long", "a".repeat(33)),
        ("username with a control character", "al\u{7}ice".to_owned()),
        ("username with a confusable Cyrillic a", "\u{430}lice".to_owned()),
        ("username with upper case", "Alice".to_owned()),
        ("username with a space", "alice smith".to_owned()),
        ("reserved username", "admin".to_owned()),
    ] {
        let outcome = async { Outcome::of(register(&fresh, &username, &mallory, Tamper::None).await) };
        bench.case(name, &fresh, invalid.clone(), Connection::Survives, outcome).await;
    }
    let outcome = async { Outcome::of(register(&fresh, "alice", &mallory, Tamper::None).await) };
    bench.case("username taken", &fresh, Outcome::Status(Status::AlreadyExists), Connection::Survives, outcome).await;
    let outcome = async { Outcome::of(register(&fresh, "mallory", &mallory, Tamper::Signature).await) };
    bench
        .case("registration with a bad signature", &fresh, unauthenticated.clone(), Connection::Survives, outcome)
        .await;
    let outcome = async { Outcome::of(register(&fresh, "mallory", &mallory, Tamper::ShortKey).await) };
    bench
        .case("registration with a truncated identity key", &fresh, invalid.clone(), Connection::Survives, outcome)
        .await;

    assert_eq!(bench.cases(), SESSION_METHODS.len() + 16);
}

fn fetch_body() -> bytes::Bytes {
    use prost::Message;
    v1::FetchRequest { after_seq: 0, limit: 10 }.encode_to_vec().into()
}

enum Tamper {
    None,
    Signature,
    ShortKey,
}

async fn register(
    rpc: &RpcClient,
    username: &str,
    identity: &Identity,
    tamper: Tamper,
) -> Result<v1::RegisterResponse, quicprochat_rpc::RpcError> {
    let nonce = challenge(rpc).await;
    let exporter = rpc.auth_exporter().expect("exporter");
    let transcript = auth_transcript(AuthPurpose::Register, &nonce, &exporter, username, identity.public_key());
    let mut signature = identity.sign(&transcript).expect("sign");
    let mut identity_key = identity.public_key().to_vec();
    match tamper {
        Tamper::None => {}
        Tamper::Signature => signature[0] ^= 1,
        Tamper::ShortKey => identity_key.truncate(31),
    }
    let request = v1::RegisterRequest {
        username: username.into(),
        identity_key: identity_key.into(),
        signature: signature.into(),
        invite_token: String::new(),
    };
    rpc.call(Method::Register, &request).await
}
