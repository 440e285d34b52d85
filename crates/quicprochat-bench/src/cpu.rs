//! CPU time by thread, so a phase's server work can be told apart from its
//! clients' when both share the process and its cores.
//!
//! The servers under test in B6 run on a runtime of their own whose worker
//! and blocking threads are named [`SERVER_THREADS`]; qpc-server's storage
//! and checkpoint threads have names of their own. A [`CpuMeter`] reads
//! `/proc/self/task/*/schedstat` (nanoseconds spent on a CPU, per thread)
//! at the start and end of a phase: the server threads' growth is the
//! servers' CPU time, every thread's growth the process's. A server thread
//! that ends during a phase loses its share (tokio keeps an idle blocking
//! thread for 10 s, longer than a phase). Linux only: elsewhere the meter
//! reads nothing and the figures are `None`.

use std::collections::HashMap;
use std::time::Duration;

/// Name of the threads of [`server_runtime`] (at most 15 bytes: Linux
/// truncates thread names there).
pub(crate) const SERVER_THREADS: &str = "qpc-bench-srv";

/// Thread names that are the server's: the runtime's, qpc-server's
/// storage thread and checkpoint thread (`qpc-sqlite-checkpoint`, truncated),
/// and its plugins' threads.
const SERVER_THREAD_PREFIXES: [&str; 4] = [SERVER_THREADS, "qpc-storage", "qpc-sqlite-chec", "qpc-plugin-"];

/// A runtime for the servers alone, with as many workers as the process's.
pub(crate) fn server_runtime() -> std::io::Result<ServerRuntime> {
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()?;
    Ok(ServerRuntime { handle: runtime.handle().clone(), runtime: Some(runtime) })
}

/// The servers' runtime. Dropped, it shuts down without waiting for its
/// tasks: dropping a tokio runtime inside async code (as on an early error
/// return from a suite) would panic and hide that error.
pub(crate) struct ServerRuntime {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl ServerRuntime {
    /// Where to spawn the servers' tasks (or `enter` to start them).
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// CPU time of a phase, split between the server threads and the rest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSplit {
    pub(crate) server: Duration,
    pub(crate) process: Duration,
    /// Wall-clock time of the phase.
    pub(crate) wall: Duration,
}

impl CpuSplit {
    /// Units of work (clients, messages) per second the server's threads
    /// alone could do on every core of this machine, at the server CPU
    /// this split spent on `units` of them.
    pub(crate) fn server_alone_per_s(&self, units: u64) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        units as f64 * cores / self.server.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// CPU time per thread at the start of a phase.
pub(crate) struct CpuMeter {
    start: Option<HashMap<u32, Sample>>,
    started: std::time::Instant,
}

#[derive(Clone, Copy)]
struct Sample {
    nanos: u64,
    server: bool,
}

impl CpuMeter {
    pub(crate) fn start() -> CpuMeter {
        CpuMeter { start: threads(), started: std::time::Instant::now() }
    }

    /// CPU time since [`CpuMeter::start`]; `None` where `/proc` cannot tell.
    pub(crate) fn finish(&self) -> Option<CpuSplit> {
        let start = self.start.as_ref()?;
        let end = threads()?;
        let (mut server, mut process) = (0u64, 0u64);
        for (tid, sample) in &end {
            let before = start.get(tid).map_or(0, |earlier| earlier.nanos);
            let grew = sample.nanos.saturating_sub(before);
            process += grew;
            if sample.server {
                server += grew;
            }
        }
        Some(CpuSplit {
            server: Duration::from_nanos(server),
            process: Duration::from_nanos(process),
            wall: self.started.elapsed(),
        })
    }
}

/// Every thread of the process: CPU nanoseconds so far, and whether it is a server thread.
fn threads() -> Option<HashMap<u32, Sample>> {
    let mut samples = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        // A thread that ended between the listing and the reads is skipped.
        let (Some(nanos), Ok(name)) = (cpu_nanos(&entry.path()), std::fs::read_to_string(entry.path().join("comm")))
        else {
            continue;
        };
        let server = SERVER_THREAD_PREFIXES.iter().any(|prefix| name.trim_end().starts_with(prefix));
        samples.insert(tid, Sample { nanos, server });
    }
    Some(samples)
}

/// Nanoseconds the thread whose `/proc` directory is `task` has spent on a
/// CPU (the first field of its `schedstat`).
fn cpu_nanos(task: &std::path::Path) -> Option<u64> {
    let schedstat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    schedstat.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU nanoseconds of the calling thread.
    fn own_cpu() -> u64 {
        cpu_nanos(std::path::Path::new("/proc/thread-self")).expect("Linux /proc")
    }

    /// Keeps the calling thread on a CPU until it has used `amount` more.
    fn burn(amount: Duration) {
        let until = own_cpu() + amount.as_nanos() as u64;
        let mut counter = 0u64;
        while own_cpu() < until {
            for _ in 0..10_000 {
                counter = std::hint::black_box(counter.wrapping_add(1));
            }
        }
    }

    #[test]
    fn work_on_the_server_runtime_counts_as_server_time() {
        let runtime = server_runtime().expect("runtime");
        let meter = CpuMeter::start();
        runtime
            .handle()
            .block_on(async { tokio::spawn(async { burn(Duration::from_millis(50)) }).await.expect("task") });
        burn(Duration::from_millis(30));
        let split = meter.finish().expect("Linux /proc");
        drop(runtime);
        // The spawned task ran on a server worker; this thread's work is not the server's.
        assert!(split.server >= Duration::from_millis(50), "{split:?}");
        assert!(split.process >= split.server + Duration::from_millis(30), "{split:?}");
    }
}
