//! B1 (issue 6): the crypto floor under MLS, and MLS application messages.
//!
//! Primitives run through OpenMLS's RustCrypto provider (`OpenMlsCrypto`), so they are
//! the exact code MLS uses:
//! - `kem/<kem>/{keygen,encaps,decaps,seal_32B,open_32B}`: DHKEM(X25519) (suite 0x0001),
//!   ML-KEM-768 alone, and X-Wing (ML-KEM-768 + X25519, suite 0x004F). `encaps` /
//!   `decaps` are HPKE sender / receiver setup plus a 32-byte export, i.e. the KEM plus a
//!   few HKDF calls: for X25519, encaps is one key generation and one DH, decaps one DH.
//!   `seal_32B` / `open_32B` are what a commit pays per path secret it encrypts.
//! - `sig/ed25519/{sign,verify}_100B` (both suites sign with Ed25519).
//! - `aead/aes128gcm/{encrypt,decrypt}_1KiB` (both suites use AES-128-GCM).
//!
//! MLS application messages of 100 bytes, per suite (`app_{encrypt,decrypt}_100B/<suite>`):
//! `ours` is `MlsClient::encrypt` / `process_incoming` (SQLite, the group held in memory
//! between calls, plus the cross-process state lock each call takes); `raw_sqlite` is `MlsGroup::create_message` / `process_message` with the
//! same SQLite storage and codec, the group held in memory; `raw_memory` the same with
//! OpenMLS's in-memory store. All three (de)serialise the wire message.
//!
//! Run: `cargo bench -p quicprochat-core --bench crypto_floor [-- --quick] [FILTER]`.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::ours::OursParty;
use common::raw::{Memory, Processed, RawParty, Sqlite, StorageKind};
use common::{scratch_dir, suite_label, GROUP_ID, SUITES};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use openmls::prelude::{Ciphersuite, OpenMlsCrypto, SignatureScheme};
use openmls_rust_crypto::RustCrypto;
use openmls_traits::types::{AeadType, HpkeAeadType, HpkeConfig, HpkeKdfType, HpkeKemType};
use quicprochat_core::Incoming;

const INFO: &[u8] = b"qpc-bench info";
const EXPORTER_CONTEXT: &[u8] = b"qpc-bench exporter";
const APP_MESSAGE: [u8; 100] = [0x61; 100];

fn kems(c: &mut Criterion) {
    let crypto = RustCrypto::default();
    let kems = [
        ("x25519", HpkeKemType::DhKem25519),
        ("mlkem768", HpkeKemType::MlKem768),
        ("xwing", HpkeKemType::XWingKemDraft6),
    ];
    for (label, kem) in kems {
        // HpkeConfig is not Copy; building one is free.
        let hpke = || HpkeConfig(kem, HpkeKdfType::HkdfSha256, HpkeAeadType::AesGcm128);
        let ikm = [7u8; 32];
        let key_pair = crypto.derive_hpke_keypair(hpke(), &ikm).expect("the KEM derives key pairs from 32 bytes");
        let (enc, _) = crypto
            .hpke_setup_sender_and_export(hpke(), &key_pair.public, INFO, EXPORTER_CONTEXT, 32)
            .expect("encapsulation works");
        let sealed = crypto.hpke_seal(hpke(), &key_pair.public, INFO, b"", &[1u8; 32]).expect("sealing works");

        let mut group = c.benchmark_group(format!("kem/{label}"));
        group.bench_function("keygen", |b| b.iter(|| crypto.derive_hpke_keypair(hpke(), black_box(&ikm))));
        group.bench_function("encaps", |b| {
            b.iter(|| {
                crypto.hpke_setup_sender_and_export(hpke(), black_box(&key_pair.public), INFO, EXPORTER_CONTEXT, 32)
            })
        });
        group.bench_function("decaps", |b| {
            b.iter(|| {
                crypto
                    .hpke_setup_receiver_and_export(
                        hpke(),
                        black_box(&enc),
                        &key_pair.private,
                        INFO,
                        EXPORTER_CONTEXT,
                        32,
                    )
                    .expect("decapsulation works")
            })
        });
        group.bench_function("seal_32B", |b| {
            b.iter(|| crypto.hpke_seal(hpke(), black_box(&key_pair.public), INFO, b"", &[1u8; 32]))
        });
        group.bench_function("open_32B", |b| {
            b.iter(|| {
                crypto.hpke_open(hpke(), black_box(&sealed), &key_pair.private, INFO, b"").expect("opening works")
            })
        });
        group.finish();
    }
}

fn signatures_and_aead(c: &mut Criterion) {
    let crypto = RustCrypto::default();
    let message = [0x5au8; 100];
    let (private, public) = crypto.signature_key_gen(SignatureScheme::ED25519).expect("Ed25519 key generation works");
    let signature = crypto.sign(SignatureScheme::ED25519, &message, &private).expect("signing works");
    let mut group = c.benchmark_group("sig/ed25519");
    group.bench_function("sign_100B", |b| {
        b.iter(|| crypto.sign(SignatureScheme::ED25519, black_box(&message), &private).expect("signing works"))
    });
    group.bench_function("verify_100B", |b| {
        b.iter(|| {
            crypto
                .verify_signature(SignatureScheme::ED25519, black_box(&message), &public, &signature)
                .expect("the signature verifies")
        })
    });
    group.finish();

    let key = [3u8; 16];
    let nonce = [9u8; 12];
    let aad = [0u8; 32];
    let plaintext = [0x42u8; 1024];
    let ciphertext = crypto.aead_encrypt(AeadType::Aes128Gcm, &key, &plaintext, &nonce, &aad).expect("AEAD works");
    let mut group = c.benchmark_group("aead/aes128gcm");
    group.throughput(Throughput::Bytes(plaintext.len() as u64));
    group.bench_function("encrypt_1KiB", |b| {
        b.iter(|| crypto.aead_encrypt(AeadType::Aes128Gcm, &key, black_box(&plaintext), &nonce, &aad))
    });
    group.bench_function("decrypt_1KiB", |b| {
        b.iter(|| {
            crypto
                .aead_decrypt(AeadType::Aes128Gcm, &key, black_box(&ciphertext), &nonce, &aad)
                .expect("the ciphertext authenticates")
        })
    });
    group.finish();
}

/// Alice and Bob in a two-member group through `MlsClient`.
fn ours_pair(scratch: &std::path::Path, suite: Ciphersuite) -> (OursParty, OursParty) {
    let alice = OursParty::new(scratch, "alice", suite);
    let bob = OursParty::new(scratch, "bob", suite);
    alice.client.create_group(&GROUP_ID).expect("alice creates the group");
    let key_package = bob.client.generate_key_packages(1).expect("bob makes a key package");
    let pending = alice.client.add_members(&GROUP_ID, &key_package).expect("alice adds bob");
    alice.client.merge_pending_commit(&GROUP_ID).expect("alice merges");
    bob.client.join_from_welcome(&pending.welcome.expect("an add has a Welcome")).expect("bob joins");
    (alice, bob)
}

/// Alice and Bob in a two-member group driving OpenMLS directly.
fn raw_pair<K: StorageKind>(scratch: &std::path::Path, suite: Ciphersuite) -> (RawParty<K>, RawParty<K>) {
    let mut alice = RawParty::<K>::new(scratch, "alice", suite);
    let mut bob = RawParty::<K>::new(scratch, "bob", suite);
    alice.create_group();
    let (_commit, welcome) = alice.add(&[bob.key_package()]);
    alice.merge_pending();
    bob.join(&welcome);
    (alice, bob)
}

fn app_messages(c: &mut Criterion) {
    for suite in SUITES {
        let scratch = scratch_dir();
        let (ours_alice, ours_bob) = ours_pair(scratch.path(), suite);
        let (mut sqlite_alice, mut sqlite_bob) = raw_pair::<Sqlite>(scratch.path(), suite);
        let (mut memory_alice, mut memory_bob) = raw_pair::<Memory>(scratch.path(), suite);

        // Bob encrypts here and only Alice decrypts below: Bob's receiving ratchet for
        // Alice never has to jump over the messages of the encryption benchmark.
        let mut group = c.benchmark_group(format!("app_encrypt_100B/{}", suite_label(suite)));
        group.bench_function("ours", |b| {
            b.iter(|| ours_bob.client.encrypt(&GROUP_ID, black_box(&APP_MESSAGE)).expect("encrypting works"))
        });
        group.bench_function(Sqlite::LABEL, |b| b.iter(|| sqlite_bob.encrypt(black_box(&APP_MESSAGE))));
        group.bench_function(Memory::LABEL, |b| b.iter(|| memory_bob.encrypt(black_box(&APP_MESSAGE))));
        group.finish();

        // Each message decrypts once; Alice encrypts them (untimed) in the order Bob reads them.
        let mut group = c.benchmark_group(format!("app_decrypt_100B/{}", suite_label(suite)));
        group.bench_function("ours", |b| {
            b.iter_batched(
                || ours_alice.client.encrypt(&GROUP_ID, &APP_MESSAGE).expect("encrypting works"),
                |message| match ours_bob.client.process_incoming(&GROUP_ID, &message).expect("decrypting works") {
                    Incoming::Application { plaintext, .. } => assert_eq!(plaintext, APP_MESSAGE),
                    other => panic!("expected an application message, got {other:?}"),
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(Sqlite::LABEL, |b| {
            b.iter_batched(
                || sqlite_alice.encrypt(&APP_MESSAGE),
                |message| assert_eq!(sqlite_bob.process(&message), Processed::Application(APP_MESSAGE.to_vec())),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(Memory::LABEL, |b| {
            b.iter_batched(
                || memory_alice.encrypt(&APP_MESSAGE),
                |message| assert_eq!(memory_bob.process(&message), Processed::Application(APP_MESSAGE.to_vec())),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = kems, signatures_and_aead, app_messages
}
criterion_main!(benches);
