//! Writing a plugin in Rust without `unsafe`: the [`Plugin`] trait, the
//! borrowed views of each event, and the [`qpc_plugin!`](crate::qpc_plugin)
//! macro that exports `qpc_plugin_entry_v1` for a type.
//!
//! The shims here are the plugin's side of the C boundary: each reads the
//! host's event into a safe view, runs the trait method under
//! `catch_unwind` (a panic unwinding out of an `extern "C"` function aborts
//! the process; caught, it is `QPC_ERR_PANIC` and the host stops calling the
//! plugin), and writes the answer and its reason into the host's buffers.
//! A plugin built with the SDK is `Sync` and says so (`QPC_THREAD_SAFE`),
//! so a later host may call it from several threads at once; this one calls
//! each plugin from its own thread, one call at a time.

use core::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use crate::abi::*;
use crate::host::GateAnswer;

/// Which hooks a plugin implements: the others are left out of its table,
/// and the host never queues work for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hooks {
    pub register: bool,
    pub login: bool,
    pub group_create: bool,
    pub enqueue: bool,
    pub stored: bool,
    pub commit: bool,
}

impl Hooks {
    /// No hook (start from this: `Hooks { enqueue: true, ..Hooks::NONE }`).
    pub const NONE: Hooks =
        Hooks { register: false, login: false, group_create: false, enqueue: false, stored: false, commit: false };
}

/// A group's kind, as the server knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Named,
    Direct,
}

/// What a queued entry is (the server sees this much of a message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Application,
    Commit,
    Welcome,
    Proposal,
}

/// `on_register`: an account is about to be created.
#[derive(Debug, Clone)]
pub struct RegisterInfo<'a> {
    pub username: &'a str,
    /// SHA-256 of the account's identity key.
    pub key_fingerprint: &'a [u8],
    /// Empty unless the operator opted in.
    pub source_address: &'a str,
    pub invite_used: bool,
}

/// `on_login`: a device is about to log in.
#[derive(Debug, Clone)]
pub struct LoginInfo<'a> {
    pub username: &'a str,
    pub device_id: &'a [u8],
    pub key_fingerprint: &'a [u8],
    pub source_address: &'a str,
}

/// `on_group_create`: a group is about to be registered.
#[derive(Debug, Clone)]
pub struct GroupCreateInfo<'a> {
    pub kind: GroupKind,
    pub creator: &'a str,
    pub group_id: &'a [u8],
    /// The server's label of the group (clients do not trust it).
    pub name: &'a str,
}

/// `on_enqueue`: a message is about to be stored and fanned out.
#[derive(Debug, Clone)]
pub struct EnqueueInfo<'a> {
    pub kind: EntryKind,
    pub sender: &'a str,
    pub sender_device: &'a [u8],
    pub group_id: &'a [u8],
    pub message_id: &'a [u8],
    /// The ciphertext's length, never its bytes.
    pub payload_len: u64,
    pub epoch: u64,
}

/// `on_stored`: a message was stored and queued.
#[derive(Debug, Clone)]
pub struct StoredInfo<'a> {
    pub kind: EntryKind,
    pub sender: &'a str,
    pub group_id: &'a [u8],
    pub message_id: &'a [u8],
    pub payload_len: u64,
    pub epoch: u64,
    pub stored_at_ms: u64,
    /// The device queues it was queued in: `name` for an account's first
    /// device, `name#<device id hex>` for the others (the sender's other
    /// devices among them).
    pub recipients: Vec<&'a str>,
}

/// `on_commit`: a commit was accepted.
#[derive(Debug, Clone)]
pub struct CommitInfo<'a> {
    pub committer: &'a str,
    pub group_id: &'a [u8],
    pub new_epoch: u64,
    pub added: Vec<&'a str>,
    pub removed: Vec<&'a str>,
}

/// A gate's result: an answer, or the plugin's own failure (which the host
/// turns into the hook's failure policy and counts).
pub type GateResult = Result<GateAnswer, String>;

/// A plugin. Every hook but `load` has a default that allows or ignores;
/// [`Plugin::HOOKS`] says which ones the host should call.
pub trait Plugin: Send + Sync + Sized + 'static {
    /// The hooks this plugin implements.
    const HOOKS: Hooks;

    /// Starts the plugin from its `config` table (JSON text); an error keeps
    /// the server from starting, with this text.
    fn load(config: &str, host: &Host) -> Result<Self, String>;

    fn on_register(&self, _event: &RegisterInfo<'_>) -> GateResult {
        Ok(GateAnswer::Allow)
    }
    fn on_login(&self, _event: &LoginInfo<'_>) -> GateResult {
        Ok(GateAnswer::Allow)
    }
    fn on_group_create(&self, _event: &GroupCreateInfo<'_>) -> GateResult {
        Ok(GateAnswer::Allow)
    }
    fn on_enqueue(&self, _event: &EnqueueInfo<'_>) -> GateResult {
        Ok(GateAnswer::Allow)
    }
    fn on_stored(&self, _event: &StoredInfo<'_>) {}
    fn on_commit(&self, _event: &CommitInfo<'_>) {}
    /// After the server drained, before it exits.
    fn on_shutdown(self) {}
}

/// The host's services, as the entry function received them.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    log: Option<unsafe extern "C" fn(level: u32, message: QpcBytes)>,
    now_ms: Option<unsafe extern "C" fn() -> u64>,
}

static HOST: OnceLock<Host> = OnceLock::new();

impl Host {
    /// Logs through the server's log, under the plugin's name (`level` is
    /// one of the `QPC_LOG_*`).
    pub fn log(&self, level: u32, message: &str) {
        if let Some(log) = self.log {
            // SAFETY: the host's function takes a borrowed buffer for the
            // call's duration; `message` outlives it.
            unsafe { log(level, QpcBytes { ptr: message.as_ptr(), len: message.len() }) };
        }
    }

    /// The server's clock (milliseconds since the Unix epoch), or the
    /// system clock if the host offers none.
    pub fn now_ms(&self) -> u64 {
        match self.now_ms {
            // SAFETY: a function of the host's table, no arguments.
            Some(now) => unsafe { now() },
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// The host as the entry function saw it (a host without services
    /// before that).
    pub fn get() -> Host {
        HOST.get().copied().unwrap_or(Host { log: None, now_ms: None })
    }
}

/// The entry function's body for `P` (called by the code
/// [`qpc_plugin!`](crate::qpc_plugin) generates).
///
/// # Safety
/// `host` is null or points to a host table whose `struct_size` bytes are
/// readable, alive for the life of the process.
#[doc(hidden)]
pub unsafe fn entry<P: Plugin>(
    host: *const QpcHostV1,
    name: &'static CStr,
    version: &'static CStr,
) -> *const QpcPluginV1 {
    if !host.is_null() {
        // SAFETY: per the contract, the first four bytes are readable.
        let size = unsafe { core::ptr::read_unaligned(host.cast::<u32>()) } as usize;
        if size >= core::mem::size_of::<QpcHostV1>() {
            // SAFETY: the host wrote at least a v1.0 host table.
            let table = unsafe { &*host };
            let _ = HOST.set(Host { log: table.log, now_ms: table.now_ms });
        }
    }
    let hooks = P::HOOKS;
    let table = QpcPluginV1 {
        struct_size: core::mem::size_of::<QpcPluginV1>() as u32,
        abi_major: QPC_ABI_MAJOR,
        abi_minor: QPC_ABI_MINOR,
        flags: QPC_THREAD_SAFE,
        name: name.as_ptr(),
        version: version.as_ptr(),
        on_load: Some(load_shim::<P>),
        on_register: hooks.register.then_some(register_shim::<P> as _),
        on_login: hooks.login.then_some(login_shim::<P> as _),
        on_group_create: hooks.group_create.then_some(group_create_shim::<P> as _),
        on_enqueue: hooks.enqueue.then_some(enqueue_shim::<P> as _),
        on_stored: hooks.stored.then_some(stored_shim::<P> as _),
        on_commit: hooks.commit.then_some(commit_shim::<P> as _),
        on_shutdown: Some(shutdown_shim::<P>),
    };
    // One table per call of the entry function (the host calls it once),
    // kept for the life of the process.
    let kept: &'static KeptTable = Box::leak(Box::new(KeptTable(table)));
    TABLES.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(kept);
    &kept.0
}

/// A hook table handed to the host; it must outlive every call.
struct KeptTable(QpcPluginV1);

// SAFETY: a kept table is never written after it is made, and its pointers
// are to static text and to functions: sharing it between threads is
// sharing immutable data.
unsafe impl Sync for KeptTable {}

/// Every table handed out, for the life of the process (so leak checkers
/// see an owner).
static TABLES: std::sync::Mutex<Vec<&'static KeptTable>> = std::sync::Mutex::new(Vec::new());

/// Exports `qpc_plugin_entry_v1` for a type implementing [`Plugin`]:
/// `qpc_plugin!(MyPlugin)` names the plugin after the crate
/// (`CARGO_PKG_NAME`), `qpc_plugin!(MyPlugin, name = "ratelimit")` after
/// the literal; the version is `CARGO_PKG_VERSION`.
#[macro_export]
macro_rules! qpc_plugin {
    ($plugin:ty) => {
        $crate::qpc_plugin!($plugin, name = env!("CARGO_PKG_NAME"));
    };
    ($plugin:ty, name = $name:expr) => {
        /// The plugin's entry (ABI v1), generated by `qpc_plugin!`.
        ///
        /// # Safety
        /// Called by the host with its host table.
        #[no_mangle]
        pub unsafe extern "C" fn qpc_plugin_entry_v1(
            host: *const $crate::abi::QpcHostV1,
        ) -> *const $crate::abi::QpcPluginV1 {
            const NAME: &::core::ffi::CStr =
                match ::core::ffi::CStr::from_bytes_with_nul(concat!($name, "\0").as_bytes()) {
                    Ok(name) => name,
                    Err(_) => panic!("the plugin's name has a NUL byte"),
                };
            const VERSION: &::core::ffi::CStr =
                match ::core::ffi::CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
                    Ok(version) => version,
                    Err(_) => panic!("the crate's version has a NUL byte"),
                };
            // SAFETY: the host passes its table, per ABI v1.
            unsafe { $crate::sdk::entry::<$plugin>(host, NAME, VERSION) }
        }
    };
}

/// Borrowed bytes of the host's event, alive for the call.
///
/// # Safety
/// `bytes.ptr` points to `bytes.len` readable bytes (or `len` is 0).
unsafe fn slice<'a>(bytes: QpcBytes) -> &'a [u8] {
    if bytes.ptr.is_null() || bytes.len == 0 {
        return &[];
    }
    // SAFETY: per the contract.
    unsafe { core::slice::from_raw_parts(bytes.ptr, bytes.len) }
}

/// Text of the host's event; the host sends UTF-8, anything else reads as
/// empty rather than failing the hook.
///
/// # Safety
/// As [`slice`].
unsafe fn text<'a>(bytes: QpcBytes) -> &'a str {
    // SAFETY: per the contract.
    std::str::from_utf8(unsafe { slice(bytes) }).unwrap_or("")
}

/// # Safety
/// `list` points to `len` readable `QpcBytes`, each as [`slice`].
unsafe fn texts<'a>(list: *const QpcBytes, len: usize) -> Vec<&'a str> {
    if list.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: per the contract.
    let list = unsafe { core::slice::from_raw_parts(list, len) };
    // SAFETY: per the contract, each entry is readable.
    list.iter().map(|entry| unsafe { text(*entry) }).collect()
}

/// Writes `message` into the host's buffer, cut at its capacity on a
/// character boundary.
///
/// # Safety
/// `out.ptr` has `out.cap` writable bytes and `out.len` is writable (or null).
unsafe fn write_out(out: &QpcOutBuf, message: &str) {
    if out.ptr.is_null() || out.len.is_null() {
        return;
    }
    let mut n = message.len().min(out.cap);
    while !message.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `n` ≤ `out.cap`, and the host owns both buffers for the call.
    unsafe {
        core::ptr::copy_nonoverlapping(message.as_ptr(), out.ptr, n);
        *out.len = n;
    }
}

unsafe extern "C" fn load_shim<P: Plugin>(config: QpcBytes, state: *mut *mut c_void, error: QpcOutBuf) -> i32 {
    // SAFETY: the host's config buffer, borrowed for this call.
    let config = unsafe { text(config) };
    match catch_unwind(|| P::load(config, &Host::get())) {
        Ok(Ok(plugin)) => {
            // SAFETY: the host passes a writable pointer to its state slot.
            unsafe { *state = Box::into_raw(Box::new(plugin)).cast() };
            QPC_OK
        }
        Ok(Err(why)) => {
            // SAFETY: the host's buffer for this call.
            unsafe { write_out(&error, &why) };
            QPC_ERR
        }
        Err(payload) => drop_panic(payload),
    }
}

/// Runs a gate of the plugin behind `state` and writes its answer.
///
/// # Safety
/// `state` is what `load_shim::<P>` stored; `decision` and `reason` are the
/// host's buffers for this call.
unsafe fn run_gate<P: Plugin>(
    state: *mut c_void,
    decision: *mut QpcDecision,
    reason: QpcOutBuf,
    gate: impl FnOnce(&P) -> GateResult,
) -> i32 {
    if state.is_null() || decision.is_null() {
        return QPC_ERR;
    }
    // SAFETY: the plugin `load_shim::<P>` boxed; shared (`P: Sync`).
    let plugin = unsafe { &*state.cast::<P>() };
    let answer = match catch_unwind(AssertUnwindSafe(|| gate(plugin))) {
        Ok(answer) => answer,
        Err(payload) => return drop_panic(payload),
    };
    // SAFETY: the host's buffers for this call.
    unsafe {
        match answer {
            Ok(GateAnswer::Allow) => *decision = QpcDecision { verdict: QPC_ALLOW, retry_after_ms: 0 },
            Ok(GateAnswer::Deny { reason: why }) => {
                *decision = QpcDecision { verdict: QPC_DENY, retry_after_ms: 0 };
                write_out(&reason, &why);
            }
            Ok(GateAnswer::RetryLater { after_ms, reason: why }) => {
                *decision = QpcDecision { verdict: QPC_RETRY_LATER, retry_after_ms: after_ms };
                write_out(&reason, &why);
            }
            Err(why) => {
                write_out(&reason, &why);
                return QPC_ERR;
            }
        }
    }
    QPC_OK
}

/// Runs an observer of the plugin behind `state`; a panic is swallowed here
/// (an observer has no answer to carry it).
///
/// # Safety
/// As [`run_gate`].
unsafe fn run_observer<P: Plugin>(state: *mut c_void, observer: impl FnOnce(&P)) {
    if state.is_null() {
        return;
    }
    // SAFETY: the plugin `load_shim::<P>` boxed.
    let plugin = unsafe { &*state.cast::<P>() };
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| observer(plugin))) {
        drop_panic(payload);
    }
}

/// Drops a caught panic's payload inside `catch_unwind`: its `Drop` could
/// panic again, and that unwind must not leave the `extern "C"` function
/// (a payload whose drop panics is forgotten instead).
fn drop_panic(payload: Box<dyn std::any::Any + Send>) -> i32 {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
    QPC_ERR_PANIC
}

fn group_kind(kind: u32) -> GroupKind {
    if kind == QPC_GROUP_DIRECT {
        GroupKind::Direct
    } else {
        GroupKind::Named
    }
}

fn entry_kind(kind: u32) -> EntryKind {
    match kind {
        QPC_ENTRY_COMMIT => EntryKind::Commit,
        QPC_ENTRY_WELCOME => EntryKind::Welcome,
        QPC_ENTRY_PROPOSAL => EntryKind::Proposal,
        _ => EntryKind::Application,
    }
}

unsafe extern "C" fn register_shim<P: Plugin>(
    state: *mut c_void,
    event: *const QpcRegisterEvent,
    decision: *mut QpcDecision,
    reason: QpcOutBuf,
) -> i32 {
    if event.is_null() {
        return QPC_ERR;
    }
    // SAFETY: the host's event and buffers for this call.
    unsafe {
        let e = &*event;
        let info = RegisterInfo {
            username: text(e.username),
            key_fingerprint: slice(e.key_fingerprint),
            source_address: text(e.source_address),
            invite_used: e.invite_used != 0,
        };
        run_gate::<P>(state, decision, reason, |p| p.on_register(&info))
    }
}

unsafe extern "C" fn login_shim<P: Plugin>(
    state: *mut c_void,
    event: *const QpcLoginEvent,
    decision: *mut QpcDecision,
    reason: QpcOutBuf,
) -> i32 {
    if event.is_null() {
        return QPC_ERR;
    }
    // SAFETY: the host's event and buffers for this call.
    unsafe {
        let e = &*event;
        let info = LoginInfo {
            username: text(e.username),
            device_id: slice(e.device_id),
            key_fingerprint: slice(e.key_fingerprint),
            source_address: text(e.source_address),
        };
        run_gate::<P>(state, decision, reason, |p| p.on_login(&info))
    }
}

unsafe extern "C" fn group_create_shim<P: Plugin>(
    state: *mut c_void,
    event: *const QpcGroupCreateEvent,
    decision: *mut QpcDecision,
    reason: QpcOutBuf,
) -> i32 {
    if event.is_null() {
        return QPC_ERR;
    }
    // SAFETY: the host's event and buffers for this call.
    unsafe {
        let e = &*event;
        let info = GroupCreateInfo {
            kind: group_kind(e.kind),
            creator: text(e.creator),
            group_id: slice(e.group_id),
            name: text(e.name),
        };
        run_gate::<P>(state, decision, reason, |p| p.on_group_create(&info))
    }
}

unsafe extern "C" fn enqueue_shim<P: Plugin>(
    state: *mut c_void,
    event: *const QpcEnqueueEvent,
    decision: *mut QpcDecision,
    reason: QpcOutBuf,
) -> i32 {
    if event.is_null() {
        return QPC_ERR;
    }
    // SAFETY: the host's event and buffers for this call.
    unsafe {
        let e = &*event;
        let info = EnqueueInfo {
            kind: entry_kind(e.kind),
            sender: text(e.sender),
            sender_device: slice(e.sender_device),
            group_id: slice(e.group_id),
            message_id: slice(e.message_id),
            payload_len: e.payload_len,
            epoch: e.epoch,
        };
        run_gate::<P>(state, decision, reason, |p| p.on_enqueue(&info))
    }
}

unsafe extern "C" fn stored_shim<P: Plugin>(state: *mut c_void, event: *const QpcStoredEvent) {
    if event.is_null() {
        return;
    }
    // SAFETY: the host's event for this call.
    unsafe {
        let e = &*event;
        let info = StoredInfo {
            kind: entry_kind(e.kind),
            sender: text(e.sender),
            group_id: slice(e.group_id),
            message_id: slice(e.message_id),
            payload_len: e.payload_len,
            epoch: e.epoch,
            stored_at_ms: e.stored_at_ms,
            recipients: texts(e.recipients, e.recipients_len),
        };
        run_observer::<P>(state, |p| p.on_stored(&info));
    }
}

unsafe extern "C" fn commit_shim<P: Plugin>(state: *mut c_void, event: *const QpcCommitEvent) {
    if event.is_null() {
        return;
    }
    // SAFETY: the host's event for this call.
    unsafe {
        let e = &*event;
        let info = CommitInfo {
            committer: text(e.committer),
            group_id: slice(e.group_id),
            new_epoch: e.new_epoch,
            added: texts(e.added, e.added_len),
            removed: texts(e.removed, e.removed_len),
        };
        run_observer::<P>(state, |p| p.on_commit(&info));
    }
}

unsafe extern "C" fn shutdown_shim<P: Plugin>(state: *mut c_void) {
    if state.is_null() {
        return;
    }
    // SAFETY: the plugin `load_shim::<P>` boxed; the host calls this once
    // and never uses the state again.
    let plugin = unsafe { Box::from_raw(state.cast::<P>()) };
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| plugin.on_shutdown())) {
        drop_panic(payload);
    }
}
