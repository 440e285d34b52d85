//! `qpc-server invite create [--uses N] [--expires DUR]`: stores a fresh
//! random token in the data dir's database and prints it on stdout, alone on
//! its line, for `qpc register NAME --server ADDR --invite TOKEN`.

use std::time::Duration;

use anyhow::Context;
use quicprochat_server::storage::Store;
use quicprochat_server::ServerConfig;

use super::{now_ms, open_or_create_store};

/// Random bytes in a token: 128 bits, printed as 32 hex digits.
const TOKEN_BYTES: usize = 16;

/// Creates an invite good for `uses` registrations, expiring after `expires`.
pub(crate) fn create(config: &ServerConfig, uses: u32, expires: Option<Duration>) -> anyhow::Result<()> {
    let store = open_or_create_store(config)?;
    let created_at_ms = now_ms()?;
    let expires_at_ms = match expires {
        Some(lifetime) => {
            let lifetime_ms = u64::try_from(lifetime.as_millis()).context("--expires is too long")?;
            Some(created_at_ms.checked_add(lifetime_ms).context("--expires is too long")?)
        }
        None => None,
    };
    let token = hex::encode(rand::random::<[u8; TOKEN_BYTES]>());
    store.create_invite(&token, uses, expires_at_ms, created_at_ms).context("cannot store the invite")?;
    println!("{token}");
    let expiry = match expires {
        Some(lifetime) => format!("expires in {}", humantime::format_duration(lifetime)),
        None => "never expires".to_owned(),
    };
    eprintln!("invite for {uses} registration(s), {expiry}");
    Ok(())
}
