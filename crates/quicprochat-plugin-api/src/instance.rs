//! A started plugin: its table and the opaque state its `on_load` made,
//! from `on_load` to `on_shutdown`, which is called once and consumes it.
//! The server moves an instance to the plugin's own thread and calls it
//! only there, one call at a time (ABI 1.0 hosts do so even for a plugin
//! that declares `QPC_THREAD_SAFE`).

use core::ffi::c_void;

use crate::abi::*;
use crate::host::{call_gate, GateAnswer, GateError, PluginTable, MAX_REASON_BYTES};

/// Why `on_load` did not start the plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("on_load failed: {0}")]
    Failed(String),
    #[error("on_load panicked")]
    Panicked,
    #[error("on_load returned code {0}")]
    BadCode(i32),
}

/// A plugin between `on_load` and `on_shutdown`.
#[derive(Debug)]
pub struct PluginInstance {
    table: PluginTable,
    state: *mut c_void,
    /// Set once an entry panicked: its state may be broken, and nothing of
    /// the plugin is called again (its gates' failure policy applies).
    poisoned: bool,
}

// SAFETY: the state is the plugin's, and ABI v1 lets the host call a
// plugin's entries from a thread other than the one that loaded it (its
// own thread); what the plugin does not allow is concurrent calls without
// QPC_THREAD_SAFE, and `&mut self` on every call keeps them apart.
unsafe impl Send for PluginInstance {}

impl PluginInstance {
    /// Calls `on_load` with the plugin's config (JSON), if it has one.
    ///
    /// # Safety
    /// `table` was read by [`PluginTable::read`] from a library that stays
    /// loaded (the loader never closes one).
    pub unsafe fn start(table: PluginTable, config_json: &str) -> Result<PluginInstance, StartError> {
        let mut state: *mut c_void = core::ptr::null_mut();
        if let Some(on_load) = table.entries().on_load {
            let mut text = [0u8; MAX_REASON_BYTES];
            let mut written = 0usize;
            let error = QpcOutBuf { ptr: text.as_mut_ptr(), cap: text.len(), len: &mut written };
            let config = QpcBytes { ptr: config_json.as_ptr(), len: config_json.len() };
            // SAFETY: the caller vouches for the entry; every pointer is to
            // our own storage, valid for the call.
            let code = unsafe { on_load(config, &mut state, error) };
            match code {
                QPC_OK => {}
                QPC_ERR => return Err(StartError::Failed(crate::host::reason_text(&text, written))),
                QPC_ERR_PANIC => return Err(StartError::Panicked),
                other => return Err(StartError::BadCode(other)),
            }
        }
        Ok(PluginInstance { table, state, poisoned: false })
    }

    pub fn table(&self) -> &PluginTable {
        &self.table
    }

    pub fn poisoned(&self) -> bool {
        self.poisoned
    }

    /// Asks `gate` (an entry of this plugin's table) about `event`; `None`
    /// when the plugin has no such gate or is poisoned.
    pub fn ask<E>(
        &mut self,
        gate: impl FnOnce(&QpcPluginV1) -> QpcGateFn<E>,
        event: &E,
    ) -> Option<Result<GateAnswer, GateError>> {
        if self.poisoned {
            return None;
        }
        let gate = gate(self.table.entries());
        // SAFETY: the entry comes from this instance's checked table, the
        // state from its on_load, and the event is borrowed for the call.
        let answer = unsafe { call_gate(gate, self.state, event) };
        if matches!(answer, Some(Err(GateError::Panicked))) {
            self.poisoned = true;
        }
        answer
    }

    /// Tells `observer` (an entry of this plugin's table) about `event`.
    pub fn tell<E>(&mut self, observer: impl FnOnce(&QpcPluginV1) -> QpcObserverFn<E>, event: &E) {
        if self.poisoned {
            return;
        }
        if let Some(observer) = observer(self.table.entries()) {
            // SAFETY: as for `ask`.
            unsafe { observer(self.state, event) };
        }
    }

    /// Calls `on_shutdown` (after the server drained): the state is not
    /// used again, poisoned or not (the plugin may still free it).
    pub fn shut_down(self) {
        if let Some(on_shutdown) = self.table.entries().on_shutdown {
            // SAFETY: this instance's entry and state; called once, as
            // `self` is consumed.
            unsafe { on_shutdown(self.state) };
        }
    }
}

#[cfg(test)]
mod tests {
    use core::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::host::PLUGIN_V1_0_SIZE;

    /// A counter as the plugin's state: gates count calls, shutdown frees
    /// it and records the count it reached.
    static SHUT_DOWN_AT: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn load(config: QpcBytes, state: *mut *mut c_void, error: QpcOutBuf) -> i32 {
        // SAFETY: the host's config bytes, valid for the call.
        let config = unsafe { core::slice::from_raw_parts(config.ptr, config.len) };
        if config == b"{\"refuse\":true}" {
            let text = b"refused by config";
            // SAFETY: the host's buffer holds `cap` bytes.
            unsafe {
                core::ptr::copy_nonoverlapping(text.as_ptr(), error.ptr, text.len().min(error.cap));
                *error.len = text.len().min(error.cap);
            }
            return QPC_ERR;
        }
        // SAFETY: the host's out pointer for the state.
        unsafe { *state = Box::into_raw(Box::new(0usize)).cast() };
        QPC_OK
    }

    unsafe extern "C" fn count(
        state: *mut c_void,
        _event: *const QpcEnqueueEvent,
        decision: *mut QpcDecision,
        _reason: QpcOutBuf,
    ) -> i32 {
        // SAFETY: the state on_load made, used from one thread at a time.
        let calls = unsafe { &mut *state.cast::<usize>() };
        *calls += 1;
        // SAFETY: valid for the call.
        unsafe { (*decision).verdict = QPC_ALLOW };
        if *calls == 3 {
            return QPC_ERR_PANIC;
        }
        QPC_OK
    }

    unsafe extern "C" fn shutdown(state: *mut c_void) {
        // SAFETY: the Box on_load made, freed once here.
        let calls = unsafe { Box::from_raw(state.cast::<usize>()) };
        SHUT_DOWN_AT.store(*calls, Ordering::SeqCst);
    }

    static NAME: &[u8] = b"counter\0";

    fn table() -> PluginTable {
        let raw = QpcPluginV1 {
            struct_size: PLUGIN_V1_0_SIZE as u32,
            abi_major: QPC_ABI_MAJOR,
            abi_minor: QPC_ABI_MINOR,
            flags: 0,
            name: NAME.as_ptr().cast(),
            version: NAME.as_ptr().cast(),
            on_load: Some(load),
            on_register: None,
            on_login: None,
            on_group_create: None,
            on_enqueue: Some(count),
            on_stored: None,
            on_commit: None,
            on_shutdown: Some(shutdown),
        };
        // SAFETY: a table of this test with static strings.
        unsafe { PluginTable::read(&raw) }.expect("accepted").0
    }

    fn enqueue() -> QpcEnqueueEvent {
        let none = QpcBytes { ptr: core::ptr::null(), len: 0 };
        QpcEnqueueEvent {
            struct_size: core::mem::size_of::<QpcEnqueueEvent>() as u32,
            kind: QPC_ENTRY_APPLICATION,
            sender: none,
            sender_device: none,
            group_id: none,
            message_id: none,
            payload_len: 100,
            epoch: 1,
        }
    }

    #[test]
    fn the_state_lives_from_on_load_to_on_shutdown_and_a_panic_poisons_the_instance() {
        // SAFETY: the test's table.
        let refused = unsafe { PluginInstance::start(table(), "{\"refuse\":true}") }.expect_err("refused");
        assert_eq!(refused, StartError::Failed("refused by config".into()));

        // SAFETY: as above.
        let mut plugin = unsafe { PluginInstance::start(table(), "{}") }.expect("started");
        for _ in 0..2 {
            assert_eq!(plugin.ask(|t| t.on_enqueue, &enqueue()), Some(Ok(GateAnswer::Allow)));
        }
        assert_eq!(plugin.ask(|t| t.on_login, &enqueue_as_login()), None, "no such gate");
        assert_eq!(plugin.ask(|t| t.on_enqueue, &enqueue()), Some(Err(GateError::Panicked)));
        assert!(plugin.poisoned());
        assert_eq!(plugin.ask(|t| t.on_enqueue, &enqueue()), None, "not called again");
        plugin.shut_down();
        assert_eq!(SHUT_DOWN_AT.load(Ordering::SeqCst), 3, "the state was freed after three calls");
    }

    fn enqueue_as_login() -> QpcLoginEvent {
        let none = QpcBytes { ptr: core::ptr::null(), len: 0 };
        QpcLoginEvent {
            struct_size: core::mem::size_of::<QpcLoginEvent>() as u32,
            username: none,
            device_id: none,
            key_fingerprint: none,
            source_address: none,
        }
    }
}
