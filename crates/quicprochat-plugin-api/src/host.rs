//! The host's side of the boundary: reading a plugin's hook table and
//! calling its entries, so that the server itself never touches a raw
//! pointer. Plugins are trusted native code (they run with the server's
//! rights); what this module guards against is a plugin that is built for
//! another ABI, leaves entries out, or answers with codes, verdicts or text
//! it should not: each becomes a typed error, never undefined behaviour on
//! our side.

use core::ffi::{c_char, c_void};
use core::mem::{size_of, MaybeUninit};

use crate::abi::*;

/// The size of the v1.0 hook table: a plugin's table must be at least this long.
pub const PLUGIN_V1_0_SIZE: usize = size_of::<QpcPluginV1>();

/// Longest reason or error text a plugin may give (longer is cut).
pub const MAX_REASON_BYTES: usize = 256;

/// Longest plugin name or version.
pub const MAX_NAME_BYTES: usize = 64;

/// Why a plugin's table is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("the entry function returned no table")]
    Null,
    #[error("the table is {0} bytes, shorter than ABI v1.0's {PLUGIN_V1_0_SIZE}")]
    Short(u32),
    #[error("the plugin speaks ABI {0}.x; this server speaks {QPC_ABI_MAJOR}.x")]
    Major(u16),
    #[error("the plugin needs ABI 1.{0}; this server speaks 1.{QPC_ABI_MINOR}")]
    Minor(u16),
    #[error("the plugin's {0} is missing, longer than {MAX_NAME_BYTES} bytes, or not made of A-Z a-z 0-9 . _ + -")]
    Text(&'static str),
}

/// A plugin's table as the host keeps it (entries past the plugin's
/// `struct_size` read as absent), with its name and version.
#[derive(Debug, Clone, Copy)]
pub struct PluginTable {
    table: QpcPluginV1,
}

impl PluginTable {
    /// Reads and checks the table at `table`.
    ///
    /// # Safety
    /// `table` is null or points to at least `struct_size` readable bytes
    /// laid out as [`QpcPluginV1`] (its first `u32` says how many), alive
    /// as long as the library that returned it, whose `name` and `version`
    /// are null or NUL-terminated strings alive as long.
    pub unsafe fn read(table: *const QpcPluginV1) -> Result<(PluginTable, String, String), TableError> {
        if table.is_null() {
            return Err(TableError::Null);
        }
        // SAFETY: non-null, and by the caller's contract at least the
        // leading `struct_size` field is readable; it may be unaligned
        // only in a broken plugin, which read_unaligned tolerates.
        let size = unsafe { core::ptr::read_unaligned(table.cast::<u32>()) };
        if (size as usize) < PLUGIN_V1_0_SIZE {
            return Err(TableError::Short(size));
        }
        let mut copy = MaybeUninit::<QpcPluginV1>::zeroed();
        // SAFETY: the caller guarantees `size` ≥ the v1.0 size readable
        // bytes at `table`; we copy only v1.0's (later fields are the
        // plugin's, unknown here) into our own zeroed, aligned storage.
        unsafe {
            core::ptr::copy_nonoverlapping(table.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), PLUGIN_V1_0_SIZE);
        }
        // SAFETY: every field of QpcPluginV1 is an integer, a raw pointer or
        // an Option of a function pointer, for which all-zero (null/None)
        // and any copied bit pattern of a valid table are valid values.
        let table = unsafe { copy.assume_init() };
        if table.abi_major != QPC_ABI_MAJOR {
            return Err(TableError::Major(table.abi_major));
        }
        if table.abi_minor > QPC_ABI_MINOR {
            return Err(TableError::Minor(table.abi_minor));
        }
        // SAFETY: by the caller's contract, null or NUL-terminated and alive.
        let name = unsafe { bounded_text(table.name) }.ok_or(TableError::Text("name"))?;
        // SAFETY: as above.
        let version = unsafe { bounded_text(table.version) }.ok_or(TableError::Text("version"))?;
        Ok((PluginTable { table }, name, version))
    }

    pub fn thread_safe(&self) -> bool {
        self.table.flags & QPC_THREAD_SAFE != 0
    }

    pub fn entries(&self) -> &QpcPluginV1 {
        &self.table
    }
}

/// A NUL-terminated name of 1 to [`MAX_NAME_BYTES`] bytes from
/// `[A-Za-z0-9._+-]` (it reaches logs, `/healthz` and clients' error
/// messages), copied; at most `MAX_NAME_BYTES + 1` bytes are read.
///
/// # Safety
/// `text` is null, or points to readable bytes up to a NUL or at least
/// `MAX_NAME_BYTES + 1` of them, alive for the call.
unsafe fn bounded_text(text: *const c_char) -> Option<String> {
    if text.is_null() {
        return None;
    }
    let mut name = Vec::with_capacity(MAX_NAME_BYTES);
    for offset in 0..=MAX_NAME_BYTES {
        // SAFETY: within the readable bytes of the caller's contract: this
        // stops at the first NUL or after MAX_NAME_BYTES + 1 bytes.
        let byte = unsafe { *text.add(offset) } as u8;
        if byte == 0 {
            break;
        }
        name.push(byte);
    }
    let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || b"._+-".contains(byte);
    let fits = !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.iter().all(allowed);
    fits.then(|| String::from_utf8_lossy(&name).into_owned())
}

/// Borrowed bytes as the ABI passes them.
pub fn bytes(data: &[u8]) -> QpcBytes {
    QpcBytes { ptr: data.as_ptr(), len: data.len() }
}

/// What a gate answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateAnswer {
    Allow,
    Deny { reason: String },
    RetryLater { after_ms: u32, reason: String },
}

/// Why a gate gave no answer: the hook's failure policy decides then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("the plugin failed: {0}")]
    Failed(String),
    #[error("the plugin panicked")]
    Panicked,
    #[error("the plugin returned code {0}")]
    BadCode(i32),
    #[error("the plugin returned verdict {0}")]
    BadVerdict(u32),
}

/// Calls `gate` on `event` and reads its answer; `None` when the plugin
/// has no such gate.
///
/// # Safety
/// `gate` comes from a table accepted by [`PluginTable::read`] of a
/// library still loaded, `state` is the state its `on_load` produced (or
/// null if it has none), and `event` is a v1 event whose borrowed bytes
/// outlive the call.
pub unsafe fn call_gate<E>(gate: QpcGateFn<E>, state: *mut c_void, event: &E) -> Option<Result<GateAnswer, GateError>> {
    let gate = gate?;
    // A gate that returns QPC_OK without writing a verdict answers with an
    // unknown one (an error, so the hook's policy decides), never ALLOW.
    let mut decision = QpcDecision { verdict: u32::MAX, retry_after_ms: 0 };
    let mut text = [0u8; MAX_REASON_BYTES];
    let mut written = 0usize;
    let out = QpcOutBuf { ptr: text.as_mut_ptr(), cap: text.len(), len: &mut written };
    // SAFETY: the caller vouches for the function and the state; every
    // pointer passed is to our own stack storage, valid for the call.
    let code = unsafe { gate(state, event, &mut decision, out) };
    let reason = reason_text(&text, written);
    Some(match code {
        QPC_OK => match decision.verdict {
            QPC_ALLOW => Ok(GateAnswer::Allow),
            QPC_DENY => Ok(GateAnswer::Deny { reason }),
            QPC_RETRY_LATER => Ok(GateAnswer::RetryLater { after_ms: decision.retry_after_ms, reason }),
            other => Err(GateError::BadVerdict(other)),
        },
        QPC_ERR => Err(GateError::Failed(reason)),
        QPC_ERR_PANIC => Err(GateError::Panicked),
        other => Err(GateError::BadCode(other)),
    })
}

/// The text a plugin wrote: at most the buffer's capacity (a larger count
/// is a lie we do not follow), invalid UTF-8 replaced, control characters
/// dropped (it reaches clients and logs).
pub(crate) fn reason_text(buffer: &[u8], written: usize) -> String {
    let written = &buffer[..written.min(buffer.len())];
    // Control characters and bidirectional overrides could reshape a log
    // line or the text a client shows.
    let shown = |c: &char| {
        !c.is_control() && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    String::from_utf8_lossy(written).chars().filter(shown).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" fn deny_admins(
        _state: *mut c_void,
        event: *const QpcRegisterEvent,
        decision: *mut QpcDecision,
        reason: QpcOutBuf,
    ) -> i32 {
        // SAFETY: the host passes a valid event and decision for the call.
        let (event, decision) = unsafe { (&*event, &mut *decision) };
        // SAFETY: the username is borrowed bytes valid for the call.
        let name = unsafe { core::slice::from_raw_parts(event.username.ptr, event.username.len) };
        if name.starts_with(b"admin") {
            decision.verdict = QPC_DENY;
            write_reason(&reason, "names starting with admin are reserved here\n");
        } else if name != b"silent" {
            decision.verdict = QPC_ALLOW;
        }
        QPC_OK
    }

    unsafe extern "C" fn garbage(
        _state: *mut c_void,
        _event: *const QpcRegisterEvent,
        decision: *mut QpcDecision,
        reason: QpcOutBuf,
    ) -> i32 {
        // SAFETY: valid for the call.
        unsafe { (*decision).verdict = 7 };
        // SAFETY: the host's out buffer; claim more than its capacity, and
        // write bytes that are not UTF-8.
        unsafe {
            *reason.ptr = 0xff;
            *reason.len = usize::MAX;
        }
        QPC_OK
    }

    fn write_reason(reason: &QpcOutBuf, text: &str) {
        let n = text.len().min(reason.cap);
        // SAFETY: the host's buffer holds `cap` bytes and `len` is valid for the call.
        unsafe {
            core::ptr::copy_nonoverlapping(text.as_ptr(), reason.ptr, n);
            *reason.len = n;
        }
    }

    fn register(name: &str) -> QpcRegisterEvent {
        QpcRegisterEvent {
            struct_size: size_of::<QpcRegisterEvent>() as u32,
            invite_used: 0,
            username: bytes(name.as_bytes()),
            key_fingerprint: bytes(&[]),
            source_address: bytes(&[]),
        }
    }

    #[test]
    fn a_gate_allows_denies_with_its_reason_and_may_be_absent() {
        let gate: QpcGateFn<QpcRegisterEvent> = Some(deny_admins);
        // SAFETY: an in-process gate of this test; no state.
        let alice = unsafe { call_gate(gate, core::ptr::null_mut(), &register("alice")) };
        assert_eq!(alice, Some(Ok(GateAnswer::Allow)));
        // SAFETY: as above.
        let admin = unsafe { call_gate(gate, core::ptr::null_mut(), &register("admin2")) };
        let reason = "names starting with admin are reserved here".to_owned();
        assert_eq!(admin, Some(Ok(GateAnswer::Deny { reason })), "the newline is dropped");
        // SAFETY: no gate: nothing is called.
        assert_eq!(unsafe { call_gate::<QpcRegisterEvent>(None, core::ptr::null_mut(), &register("x")) }, None);
        // QPC_OK without a verdict written is no answer, never an allow.
        // SAFETY: the gate is this module's own function; the event outlives the call.
        let silent = unsafe { call_gate(gate, core::ptr::null_mut(), &register("silent")) };
        assert_eq!(silent, Some(Err(GateError::BadVerdict(u32::MAX))));
    }

    #[test]
    fn a_bad_verdict_and_a_lying_length_are_errors_not_reads_past_the_buffer() {
        // SAFETY: an in-process gate of this test.
        let answer = unsafe { call_gate(Some(garbage), core::ptr::null_mut(), &register("alice")) };
        assert_eq!(answer, Some(Err(GateError::BadVerdict(7))));
        assert_eq!(reason_text(&[0xff, b'o', b'k'], usize::MAX), "\u{fffd}ok");
        assert_eq!(reason_text("a\u{202e}b\u{2066}c".as_bytes(), usize::MAX), "abc", "no bidirectional overrides");
    }

    static NAME: &[u8] = b"test-plugin\0";
    static VERSION: &[u8] = b"1.2.3\0";

    fn table() -> QpcPluginV1 {
        QpcPluginV1 {
            struct_size: PLUGIN_V1_0_SIZE as u32,
            abi_major: QPC_ABI_MAJOR,
            abi_minor: QPC_ABI_MINOR,
            flags: 0,
            name: NAME.as_ptr().cast(),
            version: VERSION.as_ptr().cast(),
            on_load: None,
            on_register: Some(deny_admins),
            on_login: None,
            on_group_create: None,
            on_enqueue: None,
            on_stored: None,
            on_commit: None,
            on_shutdown: None,
        }
    }

    #[test]
    fn tables_of_another_abi_short_ones_and_bad_names_are_refused() {
        let good = table();
        // SAFETY: a table of this test, alive for the call.
        let (read, name, version) = unsafe { PluginTable::read(&good) }.expect("accepted");
        assert_eq!((name.as_str(), version.as_str()), ("test-plugin", "1.2.3"));
        assert!(read.entries().on_register.is_some() && read.entries().on_login.is_none());
        let refused = |table: QpcPluginV1| {
            // SAFETY: as above.
            unsafe { PluginTable::read(&table) }.map(|_| ()).expect_err("refused")
        };
        assert_eq!(refused(QpcPluginV1 { abi_major: 2, ..table() }), TableError::Major(2));
        assert_eq!(refused(QpcPluginV1 { abi_minor: QPC_ABI_MINOR + 1, ..table() }), TableError::Minor(1));
        assert_eq!(refused(QpcPluginV1 { struct_size: 16, ..table() }), TableError::Short(16));
        assert_eq!(refused(QpcPluginV1 { name: core::ptr::null(), ..table() }), TableError::Text("name"));
        let newline: &[u8] = b"evil\nINFO forged\0";
        assert_eq!(refused(QpcPluginV1 { name: newline.as_ptr().cast(), ..table() }), TableError::Text("name"));
        let unterminated = [b'a'; 200];
        assert_eq!(refused(QpcPluginV1 { name: unterminated.as_ptr().cast(), ..table() }), TableError::Text("name"));
        let not_utf8: &[u8] = b"\xff\xfe\0";
        assert_eq!(refused(QpcPluginV1 { version: not_utf8.as_ptr().cast(), ..table() }), TableError::Text("version"));
        // SAFETY: null is allowed and refused.
        assert_eq!(unsafe { PluginTable::read(core::ptr::null()) }.map(|_| ()), Err(TableError::Null));
    }
}
