//! Loading a plugin library: the file checks an operator relies on (an
//! absolute path, not writable by others, the pinned SHA-256 if one is
//! configured), `dlopen` through `libloading`, the v1 entry symbol, and the
//! table check of [`PluginTable::read`]. A loaded library is never closed
//! (a Rust cdylib's thread-local destructors may still run): it lives as
//! long as the process.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::abi::{QpcEntryV1, QpcHostV1, QPC_ENTRY_SYMBOL_V1};
use crate::host::{PluginTable, TableError};

/// Why a plugin was not loaded; the server refuses to start with it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: the path must be absolute")]
    NotAbsolute(PathBuf),
    #[error("{path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{path}: writable by group or others (mode {mode:o}); only its owner may write it")]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path}: owned by uid {owner}; a plugin must be owned by root or by the server's user (uid {server})")]
    Owner { path: PathBuf, owner: u32, server: u32 },
    #[error("{path}: /proc/self/fd is not available (plugins are loaded through their open descriptor; mount /proc)")]
    NoProc { path: PathBuf },
    #[error("{path}: sha256 is {found}, not the pinned {expected}")]
    Pin { path: PathBuf, expected: String, found: String },
    #[error("{path}: cannot be loaded: {source}")]
    Open { path: PathBuf, source: libloading::Error },
    #[error(
        "{path}: exports no qpc_plugin_entry_v1 (not a qpc-server plugin, or built for another ABI major version)"
    )]
    NoEntry { path: PathBuf },
    #[error("{path}: {source}")]
    Table { path: PathBuf, source: TableError },
}

/// A loaded plugin: its table, name and version, and the library that
/// holds them (kept until the process ends).
#[derive(Debug)]
pub struct LoadedPlugin {
    pub table: PluginTable,
    pub name: String,
    pub version: String,
    _library: &'static libloading::Library,
}

/// Checks the file at `path` (absolute, not writable by group or others,
/// the pinned SHA-256 when `pin` is given as hex) before anything of it runs.
pub fn check_file(path: &Path, pin: Option<&str>) -> Result<(), LoadError> {
    open_checked(path, pin).map(drop)
}

/// Opens the file at `path` and checks it through that one open file, so
/// what was checked is what [`load`] hands `dlopen` (as `/proc/self/fd/N`),
/// even if the path is pointed elsewhere meanwhile.
fn open_checked(path: &Path, pin: Option<&str>) -> Result<std::fs::File, LoadError> {
    if !path.is_absolute() {
        return Err(LoadError::NotAbsolute(path.to_owned()));
    }
    let unreadable = |source| LoadError::Unreadable { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    let mode = metadata.permissions().mode();
    // Whoever owns the file can change it: root or the server's own user
    // (the owner of /proc/self is the process's effective user).
    let server = std::fs::metadata("/proc/self").map_err(|_| LoadError::NoProc { path: path.to_owned() })?.uid();
    if metadata.uid() != 0 && metadata.uid() != server {
        return Err(LoadError::Owner { path: path.to_owned(), owner: metadata.uid(), server });
    }
    if mode & 0o022 != 0 {
        return Err(LoadError::Writable { path: path.to_owned(), mode: mode & 0o7777 });
    }
    if let Some(expected) = pin {
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(unreadable)?;
        let found = hex::encode(hasher.finalize());
        let expected = expected.trim_start_matches("sha256:").to_ascii_lowercase();
        if found != expected {
            return Err(LoadError::Pin { path: path.to_owned(), expected, found });
        }
    }
    Ok(file)
}

/// Checks and loads the plugin at `path`, calls its entry with `host`, and
/// checks the table it returns.
///
/// # Safety
/// Loading a library runs its initialisers and calling its entry runs its
/// code: the operator vouches for the file (plugins are trusted native
/// code). `host` must stay valid as long as the plugin may call it (the
/// server keeps it in a `static`).
pub unsafe fn load(path: &Path, pin: Option<&str>, host: &'static QpcHostV1) -> Result<LoadedPlugin, LoadError> {
    let file = open_checked(path, pin)?;
    let checked = std::path::PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)));
    if !checked.exists() {
        return Err(LoadError::NoProc { path: path.to_owned() });
    }
    // Every symbol is bound now (RTLD_NOW): a library with an unresolved
    // symbol is refused here, not at its first call; RTLD_LOCAL keeps its
    // symbols from other plugins.
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: the caller vouches for the library; the file opened is the
    // one checked, named by its descriptor (no search path is involved).
    let library = unsafe { libloading::os::unix::Library::open(Some(&checked), flags) }
        .map(libloading::Library::from)
        .map_err(|source| LoadError::Open { path: path.to_owned(), source })?;
    // Never closed: kept for the life of the process.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // The descriptor stays open too: its `/proc/self/fd/N` name is the
    // library's name in the dynamic linker, which must never be reused for
    // another file (dlopen would return this library for it).
    LIBRARIES.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((library, file));
    // SAFETY: the symbol is looked up with the type ABI v1 gives it; a
    // library exporting it with another type breaks the ABI's contract,
    // which the caller vouches for.
    let entry = unsafe { library.get::<QpcEntryV1>(QPC_ENTRY_SYMBOL_V1) }
        .map_err(|_| LoadError::NoEntry { path: path.to_owned() })?;
    // SAFETY: as above; `host` outlives the plugin (static).
    let table = unsafe { entry(host) };
    // SAFETY: the table of a v1 plugin, alive as long as the library,
    // which is never closed.
    let (table, name, version) =
        unsafe { PluginTable::read(table) }.map_err(|source| LoadError::Table { path: path.to_owned(), source })?;
    Ok(LoadedPlugin { table, name, version, _library: library })
}

/// Every library loaded and the descriptor it was loaded through, for the
/// life of the process (leak checkers see an owner; nothing closes them).
static LIBRARIES: std::sync::Mutex<Vec<(&'static libloading::Library, std::fs::File)>> =
    std::sync::Mutex::new(Vec::new());

/// Loads a plugin the operator configured, handing it the server's
/// services ([`crate::services::SERVER_HOST`]).
///
/// This is safe to call where [`load`] is not because the decision it
/// needs was made by the operator: the library is named by an absolute path
/// in the server's own configuration, is writable by its owner only and
/// matches its pin if one is set ([`check_file`]); a plugin is native code
/// with the server's rights, and an operator who lists one trusts it to
/// keep ABI v1's contract (docs/plugins.md).
pub fn load_configured(path: &Path, pin: Option<&str>) -> Result<LoadedPlugin, LoadError> {
    // SAFETY: the operator's configuration vouches for the library (above);
    // the host table is static.
    unsafe { load(path, pin, &crate::services::SERVER_HOST) }
}

impl LoadedPlugin {
    /// Runs the plugin's `on_load` with its config (JSON text).
    pub fn start(&self, config_json: &str) -> Result<crate::instance::PluginInstance, crate::instance::StartError> {
        // SAFETY: the table was read from a library that is never closed,
        // and its entries keep ABI v1's contract (the operator's trust, as
        // for `load_configured`).
        unsafe { crate::instance::PluginInstance::start(self.table, config_json) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(dir: &Path, mode: u32, contents: &[u8]) -> PathBuf {
        let path = dir.join(format!("plugin-{mode:o}.so"));
        std::fs::write(&path, contents).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn files_are_checked_before_anything_of_them_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner_only = file_with(dir.path(), 0o755, b"not really a library");
        check_file(&owner_only, None).expect("an owner-writable file passes");
        let pin = hex::encode(Sha256::digest(b"not really a library"));
        check_file(&owner_only, Some(&format!("sha256:{}", pin.to_uppercase()))).expect("the pin matches");
        assert!(matches!(check_file(&owner_only, Some(&"00".repeat(32))), Err(LoadError::Pin { .. })));
        let shared = file_with(dir.path(), 0o775, b"x");
        assert!(matches!(check_file(&shared, None), Err(LoadError::Writable { mode: 0o775, .. })));
        assert!(matches!(check_file(Path::new("relative.so"), None), Err(LoadError::NotAbsolute(_))));
        // Owned by another user (the test runs as root in CI, which may chown).
        let foreign = file_with(dir.path(), 0o700, b"x");
        if std::os::unix::fs::chown(&foreign, Some(4242), None).is_ok() {
            assert!(matches!(check_file(&foreign, None), Err(LoadError::Owner { owner: 4242, .. })));
        }
        let missing = dir.path().join("missing.so");
        assert!(matches!(check_file(&missing, None), Err(LoadError::Unreadable { .. })));
    }

    static HOST: QpcHostV1 = QpcHostV1 {
        struct_size: core::mem::size_of::<QpcHostV1>() as u32,
        abi_major: crate::abi::QPC_ABI_MAJOR,
        abi_minor: crate::abi::QPC_ABI_MINOR,
        log: None,
        now_ms: None,
    };

    #[test]
    fn a_file_that_is_not_a_library_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = file_with(dir.path(), 0o644, b"not an ELF file");
        // SAFETY: dlopen refuses the file before running anything of it.
        let error = unsafe { load(&path, None, &HOST) }.expect_err("not a library");
        assert!(matches!(error, LoadError::Open { .. }), "{error}");
        assert!(error.to_string().contains("plugin-644.so"), "{error}");
    }
}
