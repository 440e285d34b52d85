//! Integration tests of the plugin ABI crate: the C example compiled and
//! loaded in process, and the Rust SDK driven by the host's own code.

mod c_example;
mod sdk;
