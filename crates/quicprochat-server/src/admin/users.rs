//! `qpc-server users list|disable|enable` on the data dir's database.
//!
//! `list` prints one account per line on stdout, tab-separated: username,
//! `active` or `disabled`, identity key (hex). A disabled account can no
//! longer log in, and its open sessions are refused on their next RPC.

use anyhow::Context;
use quicprochat_server::storage::{SqliteStore, Store};
use quicprochat_server::ServerConfig;

use super::open_existing_store;

/// Prints every account.
pub(crate) fn list(config: &ServerConfig) -> anyhow::Result<()> {
    let store = open_existing_store(config)?;
    let accounts = store.list_accounts().context("cannot list accounts")?;
    for account in &accounts {
        let state = if account.disabled { "disabled" } else { "active" };
        println!("{}\t{state}\t{}", account.username, hex::encode(&account.identity_key));
    }
    eprintln!("{} account(s)", accounts.len());
    Ok(())
}

/// Disables `name`.
pub(crate) fn disable(config: &ServerConfig, name: &str) -> anyhow::Result<()> {
    set_disabled(&open_existing_store(config)?, name, true)?;
    println!("disabled {name}");
    Ok(())
}

/// Enables `name` again.
pub(crate) fn enable(config: &ServerConfig, name: &str) -> anyhow::Result<()> {
    set_disabled(&open_existing_store(config)?, name, false)?;
    println!("enabled {name}");
    Ok(())
}

fn set_disabled(store: &SqliteStore, name: &str, disabled: bool) -> anyhow::Result<()> {
    store.set_account_disabled(name, disabled).with_context(|| format!("cannot change account {name:?}"))
}
