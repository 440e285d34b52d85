//! The C example plugin (`crates/quicprochat-plugins/c/guest_gate.c`),
//! built with the system's `cc` against `include/qpc_plugin.h` and run in
//! this process the way the server runs a plugin: `loader::load`, then
//! `PluginInstance::start`, `ask`, `shut_down`. It proves the header and
//! the Rust side agree, from a compiler other than rustc.
//!
//! `unsafe` is allowed here (the crate's lint is `deny`): loading a library
//! and starting it are `unsafe fn`s, and the test's host reads the bytes a
//! plugin logs.

#![allow(unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use crate::register;
use quicprochat_plugin_api::abi::*;
use quicprochat_plugin_api::host::{bytes, GateAnswer};
use quicprochat_plugin_api::instance::PluginInstance;
use quicprochat_plugin_api::loader;

/// What the plugin logged through the host.
static LOGGED: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn log(level: u32, message: QpcBytes) {
    let text = if message.ptr.is_null() {
        &[][..]
    } else {
        // SAFETY: ABI v1: the plugin passes `len` bytes readable for the call.
        unsafe { std::slice::from_raw_parts(message.ptr, message.len) }
    };
    let text = String::from_utf8_lossy(text).into_owned();
    LOGGED.lock().unwrap_or_else(PoisonError::into_inner).push((level, text));
}

static HOST: QpcHostV1 = QpcHostV1 {
    struct_size: core::mem::size_of::<QpcHostV1>() as u32,
    abi_major: QPC_ABI_MAJOR,
    abi_minor: QPC_ABI_MINOR,
    log: Some(log),
    now_ms: None,
};

fn logged() -> Vec<(u32, String)> {
    LOGGED.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Compiles the example into `dir`; fails the test, saying why, when there
/// is no C compiler.
fn build(dir: &Path) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = manifest.join("../quicprochat-plugins/c/guest_gate.c");
    let library = dir.join("libguest_gate.so");
    let compiled = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I"])
        .arg(manifest.join("include"))
        .arg(&source)
        .arg("-o")
        .arg(&library)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `cc` ({e}): this test builds the C example plugin and needs a C compiler")
        });
    assert!(
        compiled.status.success(),
        "cc refused {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&compiled.stderr)
    );
    // The loader refuses a library writable by group or others (a umask of
    // 002 would make one).
    std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    library
}

fn enqueue(sender: &str) -> QpcEnqueueEvent {
    QpcEnqueueEvent {
        struct_size: core::mem::size_of::<QpcEnqueueEvent>() as u32,
        kind: QPC_ENTRY_APPLICATION,
        sender: bytes(sender.as_bytes()),
        sender_device: bytes(&[1; 8]),
        group_id: bytes(b"group"),
        message_id: bytes(&[2; 16]),
        payload_len: 100,
        epoch: 1,
    }
}

#[test]
fn the_c_example_loads_refuses_guests_counts_messages_and_frees_its_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let library = build(dir.path());
    // SAFETY: the library was just built from this repository's source
    // against this crate's header; HOST is static.
    let plugin = unsafe { loader::load(&library, None, &HOST) }.expect("the C example loads");
    assert_eq!((plugin.name.as_str(), plugin.version.as_str()), ("guest_gate", "1.0.0"));
    assert!(!plugin.table.thread_safe(), "its counter is not atomic");

    // SAFETY: the table of a library that is never closed.
    let mut instance = unsafe { PluginInstance::start(plugin.table, "{}") }.expect("on_load succeeds");
    let loaded = (QPC_LOG_INFO, "guest_gate loaded: refusing usernames starting with guest-".to_owned());
    assert!(logged().contains(&loaded), "on_load logged through the host: {:?}", logged());

    assert_eq!(instance.ask(|t| t.on_register, &register("alice")), Some(Ok(GateAnswer::Allow)));
    assert_eq!(instance.ask(|t| t.on_register, &register("guest")), Some(Ok(GateAnswer::Allow)), "no dash");
    let reason = "guest accounts cannot register on this server".to_owned();
    assert_eq!(instance.ask(|t| t.on_register, &register("guest-bob")), Some(Ok(GateAnswer::Deny { reason })));
    for _ in 0..3 {
        assert_eq!(instance.ask(|t| t.on_enqueue, &enqueue("alice")), Some(Ok(GateAnswer::Allow)));
    }
    let login = QpcLoginEvent {
        struct_size: core::mem::size_of::<QpcLoginEvent>() as u32,
        username: bytes(b"alice"),
        device_id: bytes(&[1; 8]),
        key_fingerprint: bytes(&[]),
        source_address: bytes(&[]),
    };
    assert_eq!(instance.ask(|t| t.on_login, &login), None, "a NULL entry is no gate");
    assert!(!instance.poisoned());

    instance.shut_down();
    let stopped = (QPC_LOG_INFO, "guest_gate stopping after 3 messages".to_owned());
    assert!(logged().contains(&stopped), "on_shutdown saw the state on_load made: {:?}", logged());
}
