//! Crash points for the client's kill tests: places where a debug build
//! has itself killed with SIGKILL (no destructor, no flush, no core file;
//! `abort()` where `kill` cannot run) when the environment asks, so a test can stop a client inside windows too short
//! to hit by chance (between a batch's last write and its commit, between
//! the commit and the acknowledgement).
//!
//! `QPC_CRASH_AT=name:n` stops the process at the n-th time (from 1) this process
//! reaches the point `name`. Release builds have no crash points: the call
//! compiles to nothing.

/// Stops the process dead here if `QPC_CRASH_AT` names this point and this
/// is the time it asks for (debug builds only).
#[inline]
pub fn crash_point(name: &'static str) {
    #[cfg(debug_assertions)]
    armed::reach(name);
    #[cfg(not(debug_assertions))]
    let _ = name;
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// The point and count `QPC_CRASH_AT` names, if it names one.
    fn target() -> Option<&'static (String, u64)> {
        static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
        TARGET
            .get_or_init(|| {
                let value = std::env::var("QPC_CRASH_AT").ok()?;
                let (name, count) = value.split_once(':')?;
                Some((name.to_owned(), count.parse().ok()?))
            })
            .as_ref()
    }

    pub(super) fn reach(name: &'static str) {
        static REACHED: AtomicU64 = AtomicU64::new(0);
        let Some((target, count)) = target() else { return };
        if target != name {
            return;
        }
        if REACHED.fetch_add(1, Ordering::SeqCst) + 1 == *count {
            eprintln!("crash point {name}:{count} reached: killing this process");
            let _ = std::process::Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
            std::process::abort();
        }
    }
}
