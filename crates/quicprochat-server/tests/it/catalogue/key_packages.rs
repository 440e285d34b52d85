//! Catalogue: key package uploads and fetches that must be refused —
//! garbage, bad signatures, foreign owners, wrong slots, a ciphersuite the
//! server does not allow, lifetimes outside now, reused init keys, and
//! fetches naming a device id of the wrong length or of another account.

use openmls::prelude::tls_codec::Serialize;
use openmls::prelude::{BasicCredential, Ciphersuite, CredentialWithKey, KeyPackage, Lifetime};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use quicprochat_core::MlsClient;
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_rpc::RpcClient;

use super::{Bench, Connection, Outcome};
use crate::harness::{clone_identity, TestServer};

/// A key package for `username` made with raw OpenMLS: any ciphersuite, any lifetime.
fn crafted(username: &str, ciphersuite: Ciphersuite, lifetime: Lifetime) -> Vec<u8> {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(ciphersuite.signature_algorithm()).expect("signer");
    let credential = CredentialWithKey {
        credential: BasicCredential::new(username.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let bundle = KeyPackage::builder()
        .key_package_lifetime(lifetime)
        .build(ciphersuite, &provider, &signer, credential)
        .expect("build key package");
    bundle.key_package().tls_serialize_detached().expect("serialize")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

async fn upload(rpc: &RpcClient, key_packages: Vec<Vec<u8>>, last_resort: Vec<u8>) -> Outcome {
    let request = v1::UploadKeyPackagesRequest {
        key_packages: key_packages.into_iter().map(Into::into).collect(),
        last_resort: last_resort.into(),
    };
    Outcome::of(rpc.call::<_, v1::UploadKeyPackagesResponse>(Method::UploadKeyPackages, &request).await)
}

#[tokio::test]
async fn key_packages_catalogue() {
    let mut bench = Bench::start().await;
    let (alice_rpc, alice) = bench.harness.register("alice").await;
    let (bob_rpc, bob) = bench.harness.register("bob").await;
    let alice_mls =
        MlsClient::open(&bench.harness.dir().join("alice.db"), clone_identity(&alice), "alice").expect("mls");
    let bob_mls = MlsClient::open(&bench.harness.dir().join("bob.db"), clone_identity(&bob), "bob").expect("mls");
    let stored = alice_mls.generate_key_packages(1).expect("kp");
    let _: v1::UploadKeyPackagesResponse = alice_rpc
        .call(
            Method::UploadKeyPackages,
            &v1::UploadKeyPackagesRequest {
                key_packages: stored.iter().cloned().map(Into::into).collect(),
                last_resort: Default::default(),
            },
        )
        .await
        .expect("a good upload");
    let rpc = &alice_rpc;
    let invalid = Outcome::Status(Status::InvalidArgument);

    let outcome = upload(rpc, vec![b"not a key package".to_vec()], vec![]);
    bench.case("garbage key package", rpc, invalid.clone(), Connection::Survives, outcome).await;

    // Almost a million empty packages in under 2 MiB: refused before decoding.
    let outcome = upload(rpc, vec![Vec::new(); 1_000_000], vec![]);
    bench.case("a million empty key packages", rpc, invalid.clone(), Connection::Survives, outcome).await;

    let mut tampered = alice_mls.generate_key_packages(1).expect("kp").remove(0);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let outcome = upload(rpc, vec![tampered], vec![]);
    bench.case("key package with a bad signature", rpc, invalid.clone(), Connection::Survives, outcome).await;

    let foreign = bob_mls.generate_key_packages(1).expect("kp");
    let outcome = upload(rpc, foreign, vec![]);
    bench
        .case(
            "key package of another user",
            rpc,
            Outcome::Status(Status::PermissionDenied),
            Connection::Survives,
            outcome,
        )
        .await;

    let classical_chacha = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;
    let outcome = upload(rpc, vec![crafted("alice", classical_chacha, Lifetime::new(3600))], vec![]);
    bench
        .case(
            "key package with a ciphersuite the server does not allow",
            rpc,
            invalid.clone(),
            Connection::Survives,
            outcome,
        )
        .await;

    let suite = quicprochat_core::DEFAULT_CIPHERSUITE;
    let now = now_secs();
    let outcome = upload(rpc, vec![crafted("alice", suite, Lifetime::init(now - 7200, now - 3600))], vec![]);
    bench.case("expired key package", rpc, invalid.clone(), Connection::Survives, outcome).await;
    let outcome = upload(rpc, vec![crafted("alice", suite, Lifetime::init(now + 3600, now + 7200))], vec![]);
    bench.case("key package not valid yet", rpc, invalid.clone(), Connection::Survives, outcome).await;

    let last_resort = alice_mls.generate_last_resort_key_package().expect("kp");
    let outcome = upload(rpc, vec![last_resort], vec![]);
    bench.case("last-resort package in an ordinary slot", rpc, invalid.clone(), Connection::Survives, outcome).await;
    let ordinary = alice_mls.generate_key_packages(1).expect("kp").remove(0);
    let outcome = upload(rpc, vec![], ordinary);
    bench.case("ordinary package in the last-resort slot", rpc, invalid.clone(), Connection::Survives, outcome).await;

    let twice = alice_mls.generate_key_packages(1).expect("kp").remove(0);
    let outcome = upload(rpc, vec![twice.clone(), twice], vec![]);
    bench
        .case(
            "one init key twice in an upload",
            rpc,
            Outcome::Status(Status::AlreadyExists),
            Connection::Survives,
            outcome,
        )
        .await;
    let outcome = upload(rpc, stored.clone(), vec![]);
    bench
        .case("init key already stored", rpc, Outcome::Status(Status::AlreadyExists), Connection::Survives, outcome)
        .await;

    let too_many = alice_mls.generate_key_packages(101).expect("kp");
    let outcome = upload(rpc, too_many, vec![]);
    bench
        .case("more key packages than one upload may carry", rpc, invalid.clone(), Connection::Survives, outcome)
        .await;

    let outcome = async {
        Outcome::of(
            rpc.call::<_, v1::FetchKeyPackageResponse>(
                Method::FetchKeyPackage,
                &v1::FetchKeyPackageRequest { username: "nobody".into(), device_id: Default::default() },
            )
            .await,
        )
    };
    bench
        .case("key package of an unknown user", rpc, Outcome::Status(Status::NotFound), Connection::Survives, outcome)
        .await;

    // A fetch naming a device: the id must be 8 bytes, and a device of the
    // user asked for. Bob's packages stay where they are.
    let fetch_bob_device = |device_id: Vec<u8>| async move {
        Outcome::of(
            rpc.call::<_, v1::FetchKeyPackageResponse>(
                Method::FetchKeyPackage,
                &v1::FetchKeyPackageRequest { username: "bob".into(), device_id: device_id.into() },
            )
            .await,
        )
    };
    let bob_packages = bob_mls.generate_key_packages(1).expect("kp");
    assert_eq!(upload(&bob_rpc, bob_packages, vec![]).await, Outcome::Served);
    for length in [1, 7, 9, 32] {
        let outcome = fetch_bob_device(vec![0xb0; length]);
        let name = format!("key package fetch naming a device id of {length} bytes");
        bench.case(&name, rpc, invalid.clone(), Connection::Survives, outcome).await;
    }
    let alices_device = quicprochat_core::DeviceId::of_key(alice.public_key());
    let outcome = fetch_bob_device(alices_device.as_bytes().to_vec());
    bench
        .case(
            "key package fetch naming another account's device",
            rpc,
            Outcome::Status(Status::NotFound),
            Connection::Survives,
            outcome,
        )
        .await;
    let bobs_device = quicprochat_core::DeviceId::of_key(bob.public_key());
    assert_eq!(fetch_bob_device(bobs_device.as_bytes().to_vec()).await, Outcome::Served, "bob's package was kept");

    // Bob drains alice's one ordinary package, then takes her last-resort
    // package as often as one requester may (each lets him add her once).
    let last_resort = alice_mls.generate_last_resort_key_package().expect("kp");
    let _ = upload(rpc, vec![], last_resort).await;
    let fetch_alice = || async {
        Outcome::of(
            bob_rpc
                .call::<_, v1::FetchKeyPackageResponse>(
                    Method::FetchKeyPackage,
                    &v1::FetchKeyPackageRequest { username: "alice".into(), device_id: Default::default() },
                )
                .await,
        )
    };
    for _ in 0..=LAST_RESORT_BURST {
        assert_eq!(fetch_alice().await, Outcome::Served, "within the budget");
    }
    bench
        .case(
            "last-resort package past the requester's budget for that user",
            &bob_rpc,
            Outcome::Status(Status::ResourceExhausted),
            Connection::Survives,
            fetch_alice(),
        )
        .await;

    assert_eq!(bench.cases(), 19);
}

/// `rate_limits.last_resort_per_pair.burst` by default.
const LAST_RESORT_BURST: usize = 5;
