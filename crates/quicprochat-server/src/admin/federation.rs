//! `qpc-server federation fingerprint`: the pin other servers list for this
//! one in their `[[federation.peers]]` `fingerprints`.

use anyhow::Context;
use quicprochat_server::ServerConfig;

/// Prints the certificate's pin (`sha256:<hex>`), making the certificate
/// first on a new data dir, as the server's first start would.
pub(crate) fn fingerprint(config: &ServerConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let identity = quicprochat_server::server_identity(config).context("cannot load or make the certificate")?;
    println!("{}", identity.fingerprint());
    Ok(())
}
