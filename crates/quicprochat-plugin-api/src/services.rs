//! The host's services as the server offers them to every plugin
//! ([`SERVER_HOST`], passed to the entry function): `log` goes to the
//! server's `tracing` log under target `qpc_plugin`, with the name of the
//! plugin whose thread is calling ([`set_thread_plugin`]); `now_ms` is the
//! system clock. A plugin's text is bounded ([`MAX_LOG_BYTES`]), read as
//! UTF-8 with invalid bytes replaced and control characters dropped, so a
//! plugin cannot forge log lines.

use std::cell::RefCell;

use crate::abi::*;

/// The longest log message kept from a plugin; the rest is cut.
pub const MAX_LOG_BYTES: usize = 4096;

thread_local! {
    static PLUGIN_NAME: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Names the plugin the current thread runs (its log lines carry it);
/// threads a plugin starts itself log as `plugin="?"`.
pub fn set_thread_plugin(name: &str) {
    let _ = PLUGIN_NAME.try_with(|current| {
        if let Ok(mut current) = current.try_borrow_mut() {
            name.clone_into(&mut current);
        }
    });
}

/// The host table every plugin of this server receives.
pub static SERVER_HOST: QpcHostV1 = QpcHostV1 {
    struct_size: core::mem::size_of::<QpcHostV1>() as u32,
    abi_major: QPC_ABI_MAJOR,
    abi_minor: QPC_ABI_MINOR,
    log: Some(log),
    now_ms: Some(now_ms),
};

unsafe extern "C" fn log(level: u32, message: QpcBytes) {
    let bytes = if message.ptr.is_null() {
        &[][..]
    } else {
        // SAFETY: ABI v1: `message` points to `len` bytes readable for the
        // call; only the first MAX_LOG_BYTES of them are read.
        unsafe { core::slice::from_raw_parts(message.ptr, message.len.min(MAX_LOG_BYTES)) }
    };
    let text = crate::host::reason_text(bytes, bytes.len());
    // `try_with`: a plugin may log from a thread-local destructor, after
    // this thread's name is gone; a panic here would abort the process.
    let _ = PLUGIN_NAME.try_with(|name| {
        let Ok(name) = name.try_borrow() else { return };
        let plugin = if name.is_empty() { "?" } else { name.as_str() };
        match level {
            QPC_LOG_ERROR => tracing::error!(target: "qpc_plugin", plugin, "{text}"),
            QPC_LOG_WARN => tracing::warn!(target: "qpc_plugin", plugin, "{text}"),
            QPC_LOG_INFO => tracing::info!(target: "qpc_plugin", plugin, "{text}"),
            _ => tracing::debug!(target: "qpc_plugin", plugin, "{text}"),
        }
    });
}

unsafe extern "C" fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_log_line_is_bounded_and_cannot_forge_lines() {
        let long = format!("first\nsecond {}", "x".repeat(2 * MAX_LOG_BYTES));
        set_thread_plugin("test");
        let log = SERVER_HOST.log.expect("the server logs");
        // SAFETY: `long` outlives the call.
        unsafe { log(QPC_LOG_INFO, QpcBytes { ptr: long.as_ptr(), len: long.len() }) };
        // SAFETY: a null pointer with a length is read as empty.
        unsafe { log(QPC_LOG_WARN, QpcBytes { ptr: core::ptr::null(), len: 7 }) };
        let text = crate::host::reason_text(long.as_bytes(), MAX_LOG_BYTES);
        assert!(!text.contains('\n') && text.len() < MAX_LOG_BYTES, "cut and one line");
        let now = SERVER_HOST.now_ms.expect("the server has a clock");
        // SAFETY: no arguments.
        assert!(unsafe { now() } > 1_700_000_000_000);
    }
}
