//! Plugins in a running server (issue 20), with the real example plugins
//! of `quicprochat-plugins` and its fault-injecting `testkit`: gates,
//! observers, failure policies, switching off, start-up refusals,
//! `on_shutdown` on SIGTERM.
//!
//! `cargo test` does not build another package's cdylibs where a test can
//! load them, so [`plugin`] builds the examples once per test binary with
//! `cargo build --examples` into their own target dir (this run's cargo
//! holds the lock of the main one) and copies the one asked for into a
//! directory of the test's, owner-writable only as the loader requires.

mod examples;
mod failures;
mod gates;
mod start;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use quicprochat_server::config::PluginConfig;

use crate::harness::WAIT;

/// The workspace's root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the example plugins once; returns the directory holding them.
fn built_examples() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = workspace().join("target/plugin-examples");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace())
            .args(["build", "--locked", "-p", "quicprochat-plugins", "--examples", "--target-dir"])
            .arg(&target)
            .status()
            .expect("run cargo build for the example plugins");
        assert!(status.success(), "building the example plugins failed");
        target.join("debug/examples")
    })
}

/// A copy of example plugin `name` (`testkit`, `ratelimit`, ...) in `dir`,
/// mode 0755.
pub(crate) fn plugin(name: &str, dir: &Path) -> PathBuf {
    let library = format!("libqpc_plugin_{name}.so");
    let copy = dir.join(&library);
    std::fs::copy(built_examples().join(&library), &copy).expect("copy the plugin");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod the plugin");
    copy
}

/// A `[[plugins]]` entry for example `name` with `config` (JSON text).
pub(crate) fn configured(name: &str, dir: &Path, config: serde_json::Value) -> PluginConfig {
    let mut plugin = PluginConfig::new(self::plugin(name, dir));
    plugin.config_json = config.to_string();
    plugin
}

/// Waits until `done` holds (an observer wrote its line), checking every
/// few milliseconds, at most [`WAIT`].
pub(crate) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The JSON lines of a file (none if it does not exist yet).
pub(crate) fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}
