//! The disk alone: how long one fsync of a WAL-sized append takes in the
//! data directory's file system, with no SQLite and no server. Every
//! durable figure of B3–B5 waits for such an fsync, so its tail is their
//! floor: a step whose messages wait out one long fsync misses a 50 ms p99
//! bound whatever the server does. Counting the fsyncs over the bound tells
//! the disk's share of the variance from SQLite's and the server's.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::histogram::{Latencies, Summary};

/// Bytes appended before each fsync: about what one batch of a few sends
/// adds to the WAL (six 4 KiB frames and their headers).
const APPEND_BYTES: usize = 24 * 1024;
/// The appends wrap around within this much of the file, as SQLite's WAL
/// restarts from its start: the file is written once at full size first,
/// so no fsync also has to commit the file's growth.
const FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Pause between fsyncs: about a commit per millisecond, a server under
/// moderate load.
const PAUSE: Duration = Duration::from_millis(1);

/// What the disk did over the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DiskResult {
    pub(crate) seconds: f64,
    pub(crate) append_bytes: usize,
    /// Latency of each fsync.
    pub(crate) fsync: Summary,
    /// The bound a stall is counted against (B3's p99 bound).
    pub(crate) stall_bound_ms: f64,
    /// Fsyncs that took longer than the bound.
    pub(crate) stalls: u64,
    pub(crate) stalls_per_minute: f64,
}

/// Appends and fsyncs in a scratch file under `dir` for `duration`.
pub(crate) fn run(dir: &Path, duration: Duration, stall_bound: Duration) -> anyhow::Result<DiskResult> {
    let path = dir.join("disk-probe");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    let measured = measure(&file, duration, stall_bound);
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    measured
}

fn measure(file: &File, duration: Duration, stall_bound: Duration) -> anyhow::Result<DiskResult> {
    let block = vec![0x5a_u8; APPEND_BYTES];
    let mut offset = 0;
    while offset < FILE_BYTES {
        file.write_all_at(&block, offset).context("fill the probe file")?;
        offset += APPEND_BYTES as u64;
    }
    file.sync_all().context("fsync the filled probe file")?;

    let (mut latencies, mut stalls, mut offset) = (Latencies::new(), 0, 0);
    let started = Instant::now();
    while started.elapsed() < duration {
        file.write_all_at(&block, offset).context("append to the probe file")?;
        offset = (offset + APPEND_BYTES as u64) % (FILE_BYTES - APPEND_BYTES as u64);
        let syncing = Instant::now();
        file.sync_all().context("fsync the probe file")?;
        let took = syncing.elapsed();
        latencies.record(took);
        stalls += u64::from(took > stall_bound);
        std::thread::sleep(PAUSE);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(DiskResult {
        seconds,
        append_bytes: APPEND_BYTES,
        fsync: latencies.summary(),
        stall_bound_ms: stall_bound.as_secs_f64() * 1e3,
        stalls,
        stalls_per_minute: stalls as f64 * 60.0 / seconds,
    })
}

/// One line for the progress output.
pub(crate) fn describe(result: &DiskResult) -> String {
    format!(
        "{} fsyncs of a {} KiB append in {:.0} s: p50 {:.3} p99 {:.3} p99.9 {:.2} max {:.1} ms; {} over {:.0} ms ({:.1} per minute)",
        result.fsync.count,
        result.append_bytes / 1024,
        result.seconds,
        result.fsync.p50_ms,
        result.fsync.p99_ms,
        result.fsync.p999_ms,
        result.fsync.max_ms,
        result.stalls,
        result.stall_bound_ms,
        result.stalls_per_minute
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A short run times every fsync and leaves no file behind.
    #[test]
    fn a_short_run_times_every_fsync_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let result = run(dir.path(), Duration::from_millis(50), Duration::from_secs(60)).unwrap();
        assert!(result.fsync.count > 0);
        assert!(result.fsync.max_ms >= result.fsync.p50_ms);
        assert_eq!(result.stalls, 0, "no fsync takes a minute");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the probe file is removed");
    }
}
