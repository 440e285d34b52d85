//! B3's sender/recipient pairs: two accounts in a group of their own, and a
//! pre-encrypted message the sender's first device sends over and over.
//!
//! With one device per account (the default) a pair is two connections and
//! a two-member group. With N devices per account (`--devices-per-account`)
//! both accounts get N − 1 linked devices (`devices.rs`), every device is a
//! leaf of the pair's group, and the server fans each message out to
//! 2N − 1 devices: the recipient's N and the sender's other N − 1 (never
//! back to the sending device). Every one of them is a receiver of the
//! pair, subscribed and counted on its own (`load.rs`).

use bytes::Bytes;
use quicprochat_core::MlsClient;
use quicprochat_rpc::RpcClient;

use crate::devices::{add_devices, drain_queue, fetch_devices, fetch_every_device, upload_own, FirstDevice};
use crate::setup::{add_and_merge, create_named_group, register, BenchServer};

/// One sender, its recipient, every device that receives their group's
/// messages, the group, and a pre-encrypted message.
pub(crate) struct Pair {
    /// The sending device: the sender account's first device.
    pub(crate) sender: RpcClient,
    /// Every device the server pushes the pair's messages to: the
    /// recipient's first device, its other devices, then the sender's
    /// other devices. One with one device per account.
    pub(crate) receivers: Vec<RpcClient>,
    pub(crate) group_id: Bytes,
    /// An MLS PrivateMessage made once at setup: the load measures the
    /// server, not client crypto (B1 measures that).
    pub(crate) ciphertext: Bytes,
}

/// Copies the server delivers of each message with `devices` devices per
/// account: every device of the group but the sending one.
pub(crate) fn copies_per_message(devices: usize) -> usize {
    (2 * devices).saturating_sub(1).max(1)
}

/// Registers `index`'s sender and recipient, adds `devices − 1` more devices
/// to each, and puts every device in one group.
pub(crate) async fn make_pair(
    server: &BenchServer,
    index: usize,
    payload_len: usize,
    devices: usize,
) -> anyhow::Result<Pair> {
    // One device per account keeps the names the suite always had.
    let tag = if devices > 1 { format!("d{devices}") } else { String::new() };
    let (sender_name, recipient_name) = (format!("{tag}s{index}"), format!("{tag}r{index}"));
    let (sender, sender_identity) = register(server.address(), &sender_name).await?;
    let (recipient, recipient_identity) = register(server.address(), &recipient_name).await?;
    let state = server.dir.path().join(format!("clients-{tag}{index}"));
    std::fs::create_dir_all(&state)?;
    let extra = devices.saturating_sub(1);
    let recipient_first = FirstDevice { rpc: &recipient, username: &recipient_name, account: &recipient_identity };
    let recipient_others = add_devices(server.address(), &recipient_first, extra, &state, "r").await?;
    let sender_first = FirstDevice { rpc: &sender, username: &sender_name, account: &sender_identity };
    let sender_others = add_devices(server.address(), &sender_first, extra, &state, "s").await?;
    let sender_mls = MlsClient::open(&state.join("s.db"), sender_identity, &sender_name)?;
    let recipient_mls = MlsClient::open(&state.join("r.db"), recipient_identity, &recipient_name)?;
    upload_own(&recipient, &recipient_mls, 1, true).await?;
    for device in recipient_others.iter().chain(&sender_others) {
        upload_own(&device.rpc, &device.mls, 1, true).await?;
    }

    let group_id = if devices > 1 {
        format!("bench-g{devices:02}{index:07}").into_bytes()
    } else {
        format!("bench-grp{index:07}").into_bytes() // group ids are 16 bytes
    };
    create_named_group(&sender, &sender_mls, &group_id, format!("bench {tag}{index}")).await?;
    // One package per device of the recipient, and one of each of the
    // sender's other devices: every device a leaf, added in one commit.
    let mut key_packages = fetch_every_device(&sender, &recipient_name).await?;
    key_packages.extend(fetch_devices(&sender, &sender_name, &sender_others).await?);
    anyhow::ensure!(
        key_packages.len() == copies_per_message(devices),
        "pair {index}: {} key packages for {} devices",
        key_packages.len(),
        copies_per_message(devices)
    );
    add_and_merge(&sender, &sender_mls, &group_id, &key_packages, b"add").await?;
    let ciphertext = sender_mls.encrypt(&group_id, &vec![b'x'; payload_len])?;

    // The Welcome and the commit are not part of the measurement.
    let mut receivers = vec![recipient];
    receivers.extend(recipient_others.into_iter().chain(sender_others).map(|device| device.rpc));
    for receiver in &receivers {
        drain_queue(receiver).await?;
    }
    Ok(Pair { sender, receivers, group_id: group_id.into(), ciphertext: ciphertext.into() })
}
