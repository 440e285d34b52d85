//! Start-up: a plugin that cannot be trusted or loaded stops the start with
//! an error naming it; `on_shutdown` runs on SIGTERM after the drain.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use quicprochat_server::config::PluginConfig;
use quicprochat_server::{RunningServer, ServerConfig};
use serde_json::json;

use super::{configured, plugin};
use crate::process::ServerProcess;

/// The error text (with its causes) of a start with `plugin` configured.
async fn refused(dir: &Path, plugin: PluginConfig) -> String {
    refused_all(dir, vec![plugin]).await
}

/// The error text (with its causes) of a start with `plugins` configured.
async fn refused_all(dir: &Path, plugins: Vec<PluginConfig>) -> String {
    quicprochat_rpc::install_crypto_provider();
    let mut config = ServerConfig::new(dir.join("data"), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    config.plugins = plugins;
    let error = match RunningServer::start(config).await {
        Ok(_) => panic!("the server started"),
        Err(error) => error,
    };
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_missing_or_foreign_plugins_stop_the_start_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = plugin("noop", dir.path());
    let shown = good.display().to_string();

    let missing = refused(dir.path(), PluginConfig::new(dir.path().join("libmissing.so"))).await;
    assert!(missing.starts_with("plugins: plugin 1: ") && missing.contains("libmissing.so"), "{missing}");

    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    let writable = refused(dir.path(), PluginConfig::new(good.clone())).await;
    assert!(writable.contains(&shown) && writable.contains("writable by group or others"), "{writable}");
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let mut pinned = PluginConfig::new(good.clone());
    pinned.sha256 = Some("0".repeat(64));
    let pin = refused(dir.path(), pinned).await;
    assert!(pin.contains(&shown) && pin.contains("not the pinned"), "{pin}");

    let foreign = refused(dir.path(), PluginConfig::new(abi_2_plugin(dir.path()))).await;
    assert!(foreign.contains("libabi2.so") && foreign.contains("speaks ABI 2.x"), "{foreign}");

    let bad_config = refused(dir.path(), configured("testkit", dir.path(), json!({ "no_such_key": 1 }))).await;
    assert!(bad_config.contains("testkit") && bad_config.contains("on_load failed"), "{bad_config}");

    // One library listed twice, or two plugins with one name.
    let twice = [PluginConfig::new(good.clone()), PluginConfig::new(good.clone())];
    let duplicate = refused_all(dir.path(), twice.to_vec()).await;
    assert!(duplicate.contains("plugin 2") && duplicate.contains("the same file as plugin 1"), "{duplicate}");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let same_name = [PluginConfig::new(good.clone()), PluginConfig::new(plugin("noop", other_dir.path()))];
    let named = refused_all(dir.path(), same_name.to_vec()).await;
    assert!(named.contains("plugin 2") && named.contains("named noop like plugin 1"), "{named}");
}

/// A C plugin claiming ABI 2.0, compiled against the header.
fn abi_2_plugin(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("abi2.c");
    std::fs::write(
        &source,
        "#include \"qpc_plugin.h\"\n\
         static QpcPluginV1 table = { sizeof(QpcPluginV1), 2, 0, 0, \"abi2\", \"1\" };\n\
         const QpcPluginV1 *qpc_plugin_entry_v1(const QpcHostV1 *host) { (void)host; return &table; }\n",
    )
    .expect("write C source");
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../quicprochat-plugin-api/include");
    let library = dir.join("libabi2.so");
    let status = Command::new("cc")
        .args(["-std=c11", "-shared", "-fPIC", "-I"])
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&library)
        .status()
        .expect("run cc (a C compiler is needed for this test)");
    assert!(status.success(), "cc failed");
    std::fs::set_permissions(&library, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    library
}

#[test]
fn on_shutdown_runs_on_sigterm_after_the_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("marker");
    let library = plugin("testkit", dir.path());
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[[plugins]]\npath = {:?}\nconfig = {{ shutdown_marker = {:?} }}\n",
            library.display().to_string(),
            marker.display().to_string()
        ),
    )
    .expect("write config");
    let mut server = ServerProcess::start_with(&dir.path().join("data"), Some(&config));
    assert!(!marker.exists());
    let (status, _) = server.terminate();
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    assert_eq!(std::fs::read_to_string(&marker).expect("on_shutdown wrote its marker"), "on_shutdown ran\n");
}
