//! The Rust SDK in process: a plugin type's table as `sdk::entry` makes it
//! (what `qpc_plugin!` exports), read and started by the host's own code
//! (`PluginTable::read`, `PluginInstance::start`), then asked and told the
//! way the server does. Checks the SDK's promises at the boundary: only
//! declared hooks are entries, reasons are cut to the host's buffer on a
//! character boundary, a panic is caught and poisons the instance, and
//! `on_shutdown` runs once.
//!
//! `unsafe` is allowed here (the crate's lint is `deny`): the entry, the
//! table read and the start are `unsafe fn`s, and the host reads logs.

#![allow(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::register;
use quicprochat_plugin_api::abi::*;
use quicprochat_plugin_api::host::{bytes, GateAnswer, GateError, PluginTable, MAX_REASON_BYTES};
use quicprochat_plugin_api::instance::{PluginInstance, StartError};
use quicprochat_plugin_api::sdk::{self, GateResult, Hooks, Host, Plugin, RegisterInfo, StoredInfo};

/// `on_register` panics for this name.
const PANIC_NAME: &str = "panic-now";
/// `on_register` denies this name with [`long_reason`].
const LONG_NAME: &str = "long-reason";
/// `on_register` fails (an `Err`) for this name.
const FAIL_NAME: &str = "fail-now";

/// 401 bytes: byte 256 falls inside a two-byte `é`.
fn long_reason() -> String {
    format!("x{}", "é".repeat(200))
}

/// Observer calls and shutdowns, across every instance of [`Probe`] (only
/// the lifecycle test tells observers or shuts down).
static STORED: AtomicUsize = AtomicUsize::new(0);
static SHUTDOWNS: AtomicUsize = AtomicUsize::new(0);

struct Probe;

impl Plugin for Probe {
    const HOOKS: Hooks = Hooks { register: true, stored: true, ..Hooks::NONE };

    fn load(config: &str, host: &Host) -> Result<Self, String> {
        if config.contains("refuse") {
            return Err("probe: refused by its config".into());
        }
        host.log(QPC_LOG_INFO, "probe loaded");
        Ok(Probe)
    }

    fn on_register(&self, event: &RegisterInfo<'_>) -> GateResult {
        match event.username {
            PANIC_NAME => panic!("the probe was asked to panic"),
            LONG_NAME => Ok(GateAnswer::Deny { reason: long_reason() }),
            FAIL_NAME => Err("the probe was asked to fail".into()),
            _ => Ok(GateAnswer::Allow),
        }
    }

    fn on_stored(&self, _event: &StoredInfo<'_>) {
        STORED.fetch_add(1, Ordering::SeqCst);
    }

    fn on_shutdown(self) {
        SHUTDOWNS.fetch_add(1, Ordering::SeqCst);
    }
}

static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

unsafe extern "C" fn log(_level: u32, message: QpcBytes) {
    // SAFETY: ABI v1: the plugin passes `len` bytes readable for the call
    // (the SDK never passes a null pointer).
    let text = unsafe { std::slice::from_raw_parts(message.ptr, message.len) };
    LOGGED.lock().unwrap_or_else(PoisonError::into_inner).push(String::from_utf8_lossy(text).into_owned());
}

static HOST: QpcHostV1 = QpcHostV1 {
    struct_size: core::mem::size_of::<QpcHostV1>() as u32,
    abi_major: QPC_ABI_MAJOR,
    abi_minor: QPC_ABI_MINOR,
    log: Some(log),
    now_ms: None,
};

/// The probe's table, as the server would read it from a library.
fn table() -> (PluginTable, String, String) {
    // SAFETY: HOST is a static v1 host table.
    let raw = unsafe { sdk::entry::<Probe>(&HOST, c"probe", c"1.0") };
    // SAFETY: the SDK's table is leaked (lives for the process) and its
    // name and version are static C strings.
    unsafe { PluginTable::read(raw) }.expect("the SDK's table is accepted")
}

fn start(config: &str) -> Result<PluginInstance, StartError> {
    // SAFETY: the table's entries are this binary's own functions.
    unsafe { PluginInstance::start(table().0, config) }
}

#[test]
fn only_the_declared_hooks_are_entries() {
    let (table, name, version) = table();
    assert_eq!((name.as_str(), version.as_str()), ("probe", "1.0"));
    assert!(table.thread_safe(), "an SDK plugin is Sync and says so");
    let entries = table.entries();
    assert!(entries.on_load.is_some() && entries.on_shutdown.is_some());
    assert!(entries.on_register.is_some() && entries.on_stored.is_some());
    assert!(entries.on_login.is_none(), "not in HOOKS");
    assert!(entries.on_group_create.is_none(), "not in HOOKS");
    assert!(entries.on_enqueue.is_none(), "not in HOOKS");
    assert!(entries.on_commit.is_none(), "not in HOOKS");
}

#[test]
fn load_errors_reasons_and_failures_cross_the_boundary_intact_or_cut_safely() {
    assert_eq!(
        start(r#"{"refuse": true}"#).map(|_| ()),
        Err(StartError::Failed("probe: refused by its config".into()))
    );
    let mut probe = start("{}").expect("starts");
    assert!(LOGGED.lock().unwrap_or_else(PoisonError::into_inner).iter().any(|line| line == "probe loaded"));

    assert_eq!(probe.ask(|t| t.on_register, &register("alice")), Some(Ok(GateAnswer::Allow)));
    let Some(Ok(GateAnswer::Deny { reason })) = probe.ask(|t| t.on_register, &register(LONG_NAME)) else {
        panic!("the long reason is a denial");
    };
    assert!(long_reason().len() > MAX_REASON_BYTES);
    assert_eq!(reason.len(), MAX_REASON_BYTES - 1, "cut before the `é` that straddles byte 256");
    assert!(long_reason().starts_with(&reason) && !reason.contains('\u{fffd}'), "valid UTF-8, nothing replaced");

    let failed = probe.ask(|t| t.on_register, &register(FAIL_NAME));
    assert_eq!(failed, Some(Err(GateError::Failed("the probe was asked to fail".into()))));
    assert!(!probe.poisoned(), "a failure is an answer, not a poison");
}

#[test]
fn a_panic_poisons_the_instance_and_on_shutdown_runs_once() {
    let mut probe = start("{}").expect("starts");
    let recipients = [bytes(b"bob"), bytes(b"carol")];
    let stored = QpcStoredEvent {
        struct_size: core::mem::size_of::<QpcStoredEvent>() as u32,
        kind: QPC_ENTRY_APPLICATION,
        sender: bytes(b"alice"),
        group_id: bytes(b"group"),
        message_id: bytes(&[1; 16]),
        payload_len: 10,
        epoch: 2,
        stored_at_ms: 1,
        recipients: recipients.as_ptr(),
        recipients_len: recipients.len(),
    };
    probe.tell(|t| t.on_stored, &stored);
    probe.tell(|t| t.on_stored, &stored);
    assert_eq!(STORED.load(Ordering::SeqCst), 2);

    assert_eq!(probe.ask(|t| t.on_register, &register(PANIC_NAME)), Some(Err(GateError::Panicked)));
    assert!(probe.poisoned());
    assert_eq!(probe.ask(|t| t.on_register, &register("alice")), None, "a poisoned plugin is not asked again");
    probe.tell(|t| t.on_stored, &stored);
    assert_eq!(STORED.load(Ordering::SeqCst), 2, "nor told");

    assert_eq!(SHUTDOWNS.load(Ordering::SeqCst), 0);
    probe.shut_down();
    assert_eq!(SHUTDOWNS.load(Ordering::SeqCst), 1, "on_shutdown ran once, poisoned or not");
}
