//! The `#[repr(C)]` types and constants of ABI v1, one for one with
//! `include/qpc_plugin.h` (the layout tests below pin both to the same
//! sizes and offsets).
//!
//! Rules every type keeps (and every later minor version must keep):
//! - structs a side may grow start with `struct_size` and are append-only:
//!   fields are never reordered or removed, and a reader reads only the
//!   bytes the writer said it wrote;
//! - text is UTF-8 in a [`QpcBytes`] (pointer and length, not
//!   NUL-terminated), except the plugin's `name` and `version`, which are
//!   NUL-terminated and live as long as the library;
//! - every buffer is borrowed for the duration of one call;
//! - kinds, verdicts and return codes are integers (`u32`/`i32`), checked by
//!   the reader: an unknown value is an error, never a transmute.

use core::ffi::{c_char, c_void};

/// The ABI major version this crate describes; a plugin built for another
/// major version is refused at load.
pub const QPC_ABI_MAJOR: u16 = 1;
/// The ABI minor version; a host accepts plugins of its minor version or
/// older (the fields they lack read as absent).
pub const QPC_ABI_MINOR: u16 = 0;
/// The symbol a plugin exports for ABI v1 (NUL-terminated, as `dlsym` takes it).
pub const QPC_ENTRY_SYMBOL_V1: &[u8] = b"qpc_plugin_entry_v1\0";

/// An entry returned normally.
pub const QPC_OK: i32 = 0;
/// The plugin failed; its reason is in the call's out buffer.
pub const QPC_ERR: i32 = 1;
/// The SDK caught a panic at the boundary; the plugin's state is poisoned.
pub const QPC_ERR_PANIC: i32 = 2;

/// A gate's verdict: go on.
pub const QPC_ALLOW: u32 = 0;
/// A gate's verdict: refuse (`PERMISSION_DENIED` to the client, with the reason).
pub const QPC_DENY: u32 = 1;
/// A gate's verdict: not now (`RESOURCE_EXHAUSTED` with `retry_after_ms`).
pub const QPC_RETRY_LATER: u32 = 2;

/// `QpcPluginV1.flags`: the plugin's hooks may be called from several
/// threads at once. Hosts of ABI 1.0 call each plugin from one thread, one
/// call at a time, whether it is set or not.
pub const QPC_THREAD_SAFE: u32 = 1;

/// Group kinds in events.
pub const QPC_GROUP_NAMED: u32 = 0;
pub const QPC_GROUP_DIRECT: u32 = 1;

/// Entry kinds in events.
pub const QPC_ENTRY_APPLICATION: u32 = 0;
pub const QPC_ENTRY_COMMIT: u32 = 1;
pub const QPC_ENTRY_WELCOME: u32 = 2;
pub const QPC_ENTRY_PROPOSAL: u32 = 3;

/// Log levels of [`QpcHostV1::log`].
pub const QPC_LOG_ERROR: u32 = 0;
pub const QPC_LOG_WARN: u32 = 1;
pub const QPC_LOG_INFO: u32 = 2;
pub const QPC_LOG_DEBUG: u32 = 3;

/// Bytes borrowed for one call (`ptr` may be null when `len` is 0).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QpcBytes {
    pub ptr: *const u8,
    pub len: usize,
}

/// A host-owned buffer a plugin may write UTF-8 text into (a reason, an
/// error): at most `cap` bytes at `ptr`, the count written stored at `len`.
#[repr(C)]
#[derive(Debug)]
pub struct QpcOutBuf {
    pub ptr: *mut u8,
    pub cap: usize,
    pub len: *mut usize,
}

/// A gate's answer: one of `QPC_ALLOW`, `QPC_DENY`, `QPC_RETRY_LATER`, and
/// for the last, how long the client should wait.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QpcDecision {
    pub verdict: u32,
    pub retry_after_ms: u32,
}

/// `on_register`: an account is about to be created.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QpcRegisterEvent {
    pub struct_size: u32,
    /// 1 if the request carries an invite token (not yet checked: the
    /// gate runs before the token, the key proof and the name are).
    pub invite_used: u32,
    pub username: QpcBytes,
    /// SHA-256 of the account's identity key (32 bytes).
    pub key_fingerprint: QpcBytes,
    /// The client's address as text; empty unless the operator opted in.
    pub source_address: QpcBytes,
}

/// `on_login`: a device is about to log in.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QpcLoginEvent {
    pub struct_size: u32,
    pub username: QpcBytes,
    /// The device id (8 bytes).
    pub device_id: QpcBytes,
    pub key_fingerprint: QpcBytes,
    pub source_address: QpcBytes,
}

/// `on_group_create`: a group is about to be registered.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QpcGroupCreateEvent {
    pub struct_size: u32,
    /// `QPC_GROUP_NAMED` or `QPC_GROUP_DIRECT`.
    pub kind: u32,
    pub creator: QpcBytes,
    pub group_id: QpcBytes,
    /// The server's label of the group (clients do not trust it).
    pub name: QpcBytes,
}

/// `on_enqueue`: a message is about to be stored and fanned out.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QpcEnqueueEvent {
    pub struct_size: u32,
    /// One of the `QPC_ENTRY_*` kinds.
    pub kind: u32,
    pub sender: QpcBytes,
    pub sender_device: QpcBytes,
    pub group_id: QpcBytes,
    pub message_id: QpcBytes,
    /// The ciphertext's length (never its bytes).
    pub payload_len: u64,
    pub epoch: u64,
}

/// `on_stored`: a message was stored and queued (an observer).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QpcStoredEvent {
    pub struct_size: u32,
    pub kind: u32,
    pub sender: QpcBytes,
    pub group_id: QpcBytes,
    pub message_id: QpcBytes,
    pub payload_len: u64,
    pub epoch: u64,
    pub stored_at_ms: u64,
    /// The device queues it went to: `recipients_len` entries.
    pub recipients: *const QpcBytes,
    pub recipients_len: usize,
}

/// `on_commit`: a commit was accepted (an observer).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QpcCommitEvent {
    pub struct_size: u32,
    pub committer: QpcBytes,
    pub group_id: QpcBytes,
    pub new_epoch: u64,
    pub added: *const QpcBytes,
    pub added_len: usize,
    pub removed: *const QpcBytes,
    pub removed_len: usize,
}

/// A gate: fills `decision` (and `reason` for a refusal), returns a `QPC_*` code.
pub type QpcGateFn<E> = Option<
    unsafe extern "C" fn(state: *mut c_void, event: *const E, decision: *mut QpcDecision, reason: QpcOutBuf) -> i32,
>;

/// An observer: told, never asked.
pub type QpcObserverFn<E> = Option<unsafe extern "C" fn(state: *mut c_void, event: *const E)>;

/// `on_load`: the plugin's config (the `[[plugins]]` table's `config`, as
/// JSON); sets `*state` to the plugin's state; on failure writes why.
pub type QpcLoadFn =
    Option<unsafe extern "C" fn(config_json: QpcBytes, state: *mut *mut c_void, error: QpcOutBuf) -> i32>;

/// `on_shutdown`: after the server drained, before it exits; the state is
/// not used again.
pub type QpcShutdownFn = Option<unsafe extern "C" fn(state: *mut c_void)>;

/// What a plugin exports: its hook table. Every entry may be null.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QpcPluginV1 {
    pub struct_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    /// `QPC_THREAD_SAFE` or 0.
    pub flags: u32,
    /// NUL-terminated UTF-8, alive as long as the library.
    pub name: *const c_char,
    pub version: *const c_char,
    pub on_load: QpcLoadFn,
    pub on_register: QpcGateFn<QpcRegisterEvent>,
    pub on_login: QpcGateFn<QpcLoginEvent>,
    pub on_group_create: QpcGateFn<QpcGroupCreateEvent>,
    pub on_enqueue: QpcGateFn<QpcEnqueueEvent>,
    pub on_stored: QpcObserverFn<QpcStoredEvent>,
    pub on_commit: QpcObserverFn<QpcCommitEvent>,
    pub on_shutdown: QpcShutdownFn,
}

/// What the host passes the entry function: its version and services.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QpcHostV1 {
    pub struct_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
    /// Logs through the server's log, under the plugin's name.
    pub log: Option<unsafe extern "C" fn(level: u32, message: QpcBytes)>,
    /// The server's clock, milliseconds since the Unix epoch.
    pub now_ms: Option<unsafe extern "C" fn() -> u64>,
}

/// The entry function's type.
pub type QpcEntryV1 = unsafe extern "C" fn(host: *const QpcHostV1) -> *const QpcPluginV1;

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of, size_of};

    use super::*;

    /// Sizes and offsets on 64-bit targets, as `include/qpc_plugin.h`
    /// asserts them (`_Static_assert`): a change here is an ABI change.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_layout_is_the_headers() {
        assert_eq!((size_of::<QpcBytes>(), align_of::<QpcBytes>()), (16, 8));
        assert_eq!(size_of::<QpcOutBuf>(), 24);
        assert_eq!((size_of::<QpcDecision>(), offset_of!(QpcDecision, retry_after_ms)), (8, 4));
        assert_eq!(size_of::<QpcRegisterEvent>(), 56);
        assert_eq!(offset_of!(QpcRegisterEvent, username), 8);
        assert_eq!(size_of::<QpcLoginEvent>(), 72);
        assert_eq!(offset_of!(QpcLoginEvent, username), 8);
        assert_eq!(size_of::<QpcGroupCreateEvent>(), 56);
        assert_eq!(offset_of!(QpcGroupCreateEvent, creator), 8);
        assert_eq!(size_of::<QpcEnqueueEvent>(), 88);
        assert_eq!((offset_of!(QpcEnqueueEvent, payload_len), offset_of!(QpcEnqueueEvent, epoch)), (72, 80));
        assert_eq!(size_of::<QpcStoredEvent>(), 96);
        assert_eq!(offset_of!(QpcStoredEvent, recipients), 80);
        assert_eq!(size_of::<QpcCommitEvent>(), 80);
        assert_eq!(offset_of!(QpcCommitEvent, new_epoch), 40);
        assert_eq!(size_of::<QpcPluginV1>(), 96);
        assert_eq!(
            (offset_of!(QpcPluginV1, flags), offset_of!(QpcPluginV1, name), offset_of!(QpcPluginV1, on_load)),
            (8, 16, 32)
        );
        assert_eq!(offset_of!(QpcPluginV1, on_shutdown), 88);
        assert_eq!(size_of::<QpcHostV1>(), 24);
        assert_eq!(offset_of!(QpcHostV1, log), 8);
    }

    /// An entry the plugin leaves out is a null pointer, which `Option` of a
    /// function pointer represents without a tag (the header's NULL).
    #[test]
    fn a_missing_entry_is_a_null_pointer() {
        assert_eq!(size_of::<QpcShutdownFn>(), size_of::<*const c_void>());
        assert_eq!(size_of::<QpcGateFn<QpcEnqueueEvent>>(), size_of::<*const c_void>());
    }
}
