//! Shared by the criterion suites B1 (`crypto_floor`) and B2 (`group_size`) of issue 6:
//! the two ciphersuites, parties that use [`quicprochat_core::MlsClient`] ("ours"), and
//! parties that drive OpenMLS directly with the same group configuration ("raw").
//!
//! Every party keeps its state in its own file (SQLite) or map (memory) so that a
//! benchmark can copy that state once and replay one step many times from the same
//! starting point: copying and reopening are never timed.
//!
//! Scratch files go to the system temp directory (`TMPDIR`). Both our layer and the raw
//! SQLite baseline use `synchronous=FULL`, so on a disk every write pays an fsync;
//! `TMPDIR=/dev/shm` measures without it.

// Each bench target compiles this module and uses a different part of it.
#![allow(dead_code)]

pub(crate) mod ours;
pub(crate) mod raw;

use std::path::Path;

use quicprochat_core::{Ciphersuite, CLASSICAL_CIPHERSUITE, DEFAULT_CIPHERSUITE};

/// The suites every MLS benchmark runs: classical 0x0001 and the default hybrid 0x004F.
pub(crate) const SUITES: [Ciphersuite; 2] = [CLASSICAL_CIPHERSUITE, DEFAULT_CIPHERSUITE];

/// The group id every benchmark group uses (16 bytes, as the SDK chooses them).
pub(crate) const GROUP_ID: [u8; 16] = *b"qpc-bench-group!";

/// The code point of a suite as benchmark ids show it, e.g. `0x004F`.
pub(crate) fn suite_label(suite: Ciphersuite) -> String {
    format!("0x{:04X}", u16::from(suite))
}

/// A fresh, empty file in `scratch`, deleted when the returned path is dropped.
pub(crate) fn scratch_file(scratch: &Path) -> tempfile::TempPath {
    tempfile::Builder::new()
        .prefix("party-")
        .suffix(".db")
        .tempfile_in(scratch)
        .expect("the scratch directory is writable")
        .into_temp_path()
}

/// A copy of the SQLite file `source`, in `scratch`. The source must be idle: the
/// storage uses SQLite's default rollback journal, so between transactions the main
/// file alone is the whole database.
pub(crate) fn copy_database(source: &Path, scratch: &Path) -> tempfile::TempPath {
    let copy = scratch_file(scratch);
    std::fs::copy(source, &copy).expect("copying a party's database within the scratch directory");
    copy
}

/// A scratch directory for one fixture, removed with it.
pub(crate) fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("qpc-bench-").tempdir().expect("the temp directory is writable")
}
