//! Decode + dispatch: the first byte picks a request method and a session
//! (none, alice, bob); the rest is decoded as that method's request and, if
//! it decodes, handed to the domain service over a fresh in-memory store
//! holding alice, bob and a real group of the two (made once with MLS at
//! start-up). The domain must answer every input with a value or a typed
//! error, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use quicprochat_core::{DeviceId, Identity, MlsClient};
use quicprochat_proto::{decode_message, v1, Method};
use quicprochat_server::config::RegistrationPolicy;
use quicprochat_server::domain::accounts::{self, AuthProof, Registration};
use quicprochat_server::domain::commits::{self, CommitPolicy, LeaveGroup, SubmitCommit};
use quicprochat_server::domain::devices::{self, AddDevice, Caller};
use quicprochat_server::domain::groups::{self, CreateGroup};
use quicprochat_server::domain::messages::{self, SendMessage};
use quicprochat_server::domain::views::ViewCache;
use quicprochat_server::domain::{delivery, key_packages};
use quicprochat_server::storage::{GroupKind, KeyPackageServed, MemoryStore, Store};

const NOW: u64 = 1_800_000_000_000;

/// A group alice created and added bob to, as the bytes the DS received.
struct World {
    alice_key: Vec<u8>,
    bob_key: Vec<u8>,
    group_id: Vec<u8>,
    group_info: Vec<u8>,
    ratchet_tree: Vec<u8>,
    add_commit: Vec<u8>,
    /// The init key of the package the add uses (served to alice).
    add_init_key: Vec<u8>,
    welcome: Vec<u8>,
    message: Vec<u8>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("qpc-fuzz-domain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let (alice, bob) = (Identity::generate().expect("key"), Identity::generate().expect("key"));
        let (alice_key, bob_key) = (alice.public_key().to_vec(), bob.public_key().to_vec());
        let alice = MlsClient::open(&dir.join("alice.db"), alice, "alice").expect("mls");
        let bob = MlsClient::open(&dir.join("bob.db"), bob, "bob").expect("mls");
        let group_id = vec![7u8; 16];
        let bootstrap = alice.create_group(&group_id).expect("group");
        let key_package = bob.generate_key_packages(1).expect("kp").remove(0);
        let add_init_key = quicprochat_core::ds::validate_key_package(&key_package).expect("kp").init_key;
        let pending = alice.add_members(&group_id, &[key_package]).expect("add");
        alice.merge_pending_commit(&group_id).expect("merge");
        let message = alice.encrypt(&group_id, b"hello").expect("encrypt");
        World {
            alice_key,
            bob_key,
            group_id,
            group_info: bootstrap.group_info,
            ratchet_tree: bootstrap.ratchet_tree,
            add_commit: pending.commit,
            add_init_key,
            welcome: pending.welcome.expect("welcome"),
            message,
        }
    })
}

/// The commit policy of a server with the default 30-day retention, now
/// (key packages are stamped with the real clock).
fn policy() -> CommitPolicy {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(NOW, |elapsed| elapsed.as_millis() as u64);
    CommitPolicy::at(now_ms, 30 * 24 * 3600)
}

/// A store with alice and bob registered and the group at epoch 0 (alice only).
fn store(world: &World) -> MemoryStore {
    let store = MemoryStore::default();
    store.create_account("alice", &world.alice_key, NOW).expect("alice");
    store.create_account("bob", &world.bob_key, NOW).expect("bob");
    let create = CreateGroup {
        group_id: &world.group_id,
        name: "team",
        kind: GroupKind::Named,
        group_info: &world.group_info,
        ratchet_tree: &world.ratchet_tree,
        home: None,
    };
    groups::create_group(&store, Caller::first_device("alice"), &create, NOW).expect("group");
    // As if alice had fetched the key package her add commit uses.
    let served = KeyPackageServed {
        requester: "alice".to_owned(),
        init_key: world.add_init_key.clone(),
        target: "bob".to_owned(),
        last_resort: false,
        served_at_ms: NOW,
    };
    store.record_served(&served, 0).expect("served");
    store
}

fn dispatch(store: &dyn Store, method: Method, user: Option<&str>, body: &[u8]) {
    macro_rules! decode {
        ($t:ty) => {
            match decode_message::<$t>(body) {
                Ok(request) => request,
                Err(_) => return,
            }
        };
    }
    let Some(user) = user else {
        // Without a session only registration and login reach the domain.
        match method {
            Method::Register => {
                let r = decode!(v1::RegisterRequest);
                let proof = AuthProof { nonce: b"nonce", tls_exporter: b"exporter", signature: &r.signature };
                let registration = Registration {
                    username: &r.username,
                    identity_key: &r.identity_key,
                    proof,
                    invite_token: Some(&r.invite_token),
                };
                let _ = accounts::register(store, RegistrationPolicy::Open, &registration, NOW);
            }
            Method::Login => {
                let r = decode!(v1::LoginRequest);
                let proof = AuthProof { nonce: b"nonce", tls_exporter: b"exporter", signature: &r.signature };
                let _ = accounts::login(store, &r.username, &r.device_key, &proof, &policy());
            }
            _ => {}
        }
        return;
    };
    match method {
        Method::ResolveUser => {
            drop(accounts::resolve_user(store, Caller::first_device(user), &decode!(v1::ResolveUserRequest).username))
        }
        Method::UploadKeyPackages => {
            let r = decode!(v1::UploadKeyPackagesRequest);
            let packages: Vec<Vec<u8>> = r.key_packages.iter().map(|kp| kp.to_vec()).collect();
            let last_resort = (!r.last_resort.is_empty()).then_some(&r.last_resort[..]);
            let _ = key_packages::upload(store, Caller::first_device(user), &packages, last_resort, None);
        }
        Method::FetchKeyPackage => {
            let r = decode!(v1::FetchKeyPackageRequest);
            // As the transport does: empty names no device, another length is refused.
            let device = match r.device_id.as_ref() {
                [] => None,
                bytes => match DeviceId::from_bytes(bytes) {
                    Some(device_id) => Some(device_id),
                    None => return,
                },
            };
            drop(key_packages::fetch(store, Caller::first_device(user), &r.username, device, &policy(), &|| Ok(())))
        }
        Method::KeyPackageStock => drop(key_packages::stock(store, Caller::first_device(user), &policy())),
        Method::CreateGroup => {
            let r = decode!(v1::CreateGroupRequest);
            let kind = if r.kind == v1::GroupKind::Direct as i32 { GroupKind::Direct } else { GroupKind::Named };
            let create = CreateGroup {
                group_id: &r.group_id,
                name: &r.name,
                kind,
                group_info: &r.group_info,
                ratchet_tree: &r.ratchet_tree,
                home: None,
            };
            let _ = groups::create_group(store, Caller::first_device(user), &create, NOW);
        }
        Method::SubmitCommit => {
            let r = decode!(v1::SubmitCommitRequest);
            let welcome = (!r.welcome.is_empty()).then_some(&r.welcome[..]);
            let submit = SubmitCommit {
                group_id: &r.group_id,
                epoch: r.epoch,
                commit: &r.commit,
                welcome,
                message_id: &r.message_id,
            };
            // A cache per call: each run has its own store, and a cache belongs to one store.
            let _ = commits::submit_commit(
                store,
                &ViewCache::default(),
                Caller::first_device(user),
                &submit,
                NOW,
                &policy(),
            );
        }
        Method::LeaveGroup => {
            let r = decode!(v1::LeaveGroupRequest);
            let leave = LeaveGroup { group_id: &r.group_id, proposal: &r.proposal, message_id: &r.message_id };
            let _ = commits::leave_group(store, &ViewCache::default(), Caller::first_device(user), &leave, NOW);
        }
        Method::SendMessage => {
            let r = decode!(v1::SendMessageRequest);
            let send = SendMessage { group_id: &r.group_id, message_id: &r.message_id, ciphertext: &r.ciphertext };
            let _ = messages::send_message(store, Caller::first_device(user), &send, NOW);
        }
        Method::SendMessages => {
            // The transport stores a burst's entries one after another in one job.
            for r in decode!(v1::SendMessagesRequest).messages.iter().take(quicprochat_proto::MAX_SEND_MESSAGES) {
                let send = SendMessage { group_id: &r.group_id, message_id: &r.message_id, ciphertext: &r.ciphertext };
                let _ = messages::send_message(store, Caller::first_device(user), &send, NOW);
            }
        }
        Method::GroupMembers => {
            drop(groups::members(store, Caller::first_device(user), &decode!(v1::GroupMembersRequest).group_id))
        }
        Method::Fetch => {
            let r = decode!(v1::FetchRequest);
            let _ = delivery::fetch(store, Caller::first_device(user), r.after_seq, r.limit);
        }
        Method::Ack => drop(delivery::ack(store, Caller::first_device(user), decode!(v1::AckRequest).up_to_seq)),
        Method::AddDevice => {
            let r = decode!(v1::AddDeviceRequest);
            let add = AddDevice { device_key: &r.device_key, certificate: &r.certificate, label: &r.label };
            let _ = devices::add_device(store, Caller::first_device(user), &add, 16, NOW);
        }
        Method::ListDevices => drop(devices::list_devices(store, Caller::first_device(user))),
        Method::RemoveDevice => {
            let r = decode!(v1::RemoveDeviceRequest);
            let _ = devices::remove_device(store, Caller::first_device(user), &r.device_id, NOW);
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let world = world();
    let store = store(world);
    // The byte after the selector may splice in real MLS bytes, so the
    // fuzzer reaches past the parsers: 1 the add commit, 2 the Welcome, 3 an
    // application message, appended to the request as its last field's value.
    let method = Method::ALL[usize::from(selector & 0x1f) % Method::ALL.len()];
    let user = [None, Some("alice"), Some("bob"), Some("alice")][usize::from(selector >> 6)];
    let Some((&splice, body)) = rest.split_first() else {
        return;
    };
    let mut request = body.to_vec();
    let real: &[u8] = match splice % 4 {
        1 => &world.add_commit,
        2 => &world.welcome,
        3 => &world.message,
        _ => &[],
    };
    if !real.is_empty() {
        // Field 3 (bytes), length-delimited: the commit / ciphertext / proposal slot.
        request.push(0x1a);
        let mut len = real.len();
        while len >= 0x80 {
            request.push((len as u8) | 0x80);
            len >>= 7;
        }
        request.push(len as u8);
        request.extend_from_slice(real);
    }
    dispatch(&store, method, user, &request);
});
