//! The plugin ABI of `qpc-server`, version 1 (issue 20; design in
//! `docs/design/plugins.md`): what a plugin exports and what the host
//! passes it, as `#[repr(C)]` types matched one for one by
//! `include/qpc_plugin.h`.
//!
//! A plugin is a shared library exporting
//! `const QpcPluginV1 *qpc_plugin_entry_v1(const QpcHostV1 *host)`. The
//! table it returns starts with its own size and ABI version; the host
//! reads only `struct_size` bytes of it (fields appended by later minor
//! versions read as absent), accepts `abi_major == 1` and a minor version
//! up to its own, and treats every entry as optional. Nothing but the
//! plugin's opaque state pointer crosses the boundary as owned: every
//! buffer is borrowed for one call. Results are integer codes, never Rust
//! enums (an unknown discriminant would be undefined behaviour).
//!
//! Hooks see metadata only (names, key fingerprints, group ids, message
//! ids, sizes, epochs, recipients, times), never message bytes.

pub mod abi;
// The one place the server's code crosses into a plugin's.
#[allow(unsafe_code)]
pub mod host;
#[allow(unsafe_code)]
pub mod instance;
#[allow(unsafe_code)]
pub mod loader;
#[allow(unsafe_code)]
pub mod sdk;
#[allow(unsafe_code)]
pub mod services;

pub use abi::*;
