//! Integration tests of the plugin ABI crate: the C example compiled and
//! loaded in process, and the Rust SDK driven by the host's own code.

mod c_example;
mod sdk;

use quicprochat_plugin_api::abi::QpcRegisterEvent;
use quicprochat_plugin_api::host::bytes;

/// An `on_register` event for `username` (a fixed key fingerprint, no address).
pub(crate) fn register(username: &str) -> QpcRegisterEvent {
    QpcRegisterEvent {
        struct_size: core::mem::size_of::<QpcRegisterEvent>() as u32,
        invite_used: 1,
        username: bytes(username.as_bytes()),
        key_fingerprint: bytes(&[7; 32]),
        source_address: bytes(&[]),
    }
}
