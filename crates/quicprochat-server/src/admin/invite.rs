//! `qpc-server invite create [--uses N] [--expires DUR]`: stores a fresh
//! random token (see `domain::invites`) in the data dir's database and prints it on stdout, alone on
//! its line, for `qpc register NAME --server ADDR --invite TOKEN`.

use std::time::Duration;

use quicprochat_server::domain::invites::{self, NewInvite};
use quicprochat_server::ServerConfig;

use super::{now_ms, open_or_create_store};

/// Creates an invite good for `uses` registrations, expiring after `expires`.
pub(crate) fn create(config: &ServerConfig, uses: u32, expires: Option<Duration>) -> anyhow::Result<()> {
    let store = open_or_create_store(config)?;
    let invite = invites::create(&store, NewInvite { uses, expires_in: expires }, &mut rand::rng(), now_ms()?)
        .map_err(|error| anyhow::anyhow!("cannot create the invite: {error}"))?;
    println!("{}", invite.token);
    let expiry = match expires {
        Some(lifetime) => format!("expires in {}", humantime::format_duration(lifetime)),
        None => "never expires".to_owned(),
    };
    eprintln!("invite for {uses} registration(s), {expiry}");
    Ok(())
}
