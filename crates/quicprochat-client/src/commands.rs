//! Runs one `qpc` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use quicprochat_sdk::{ClientOptions, QpcClient};
use serde_json::json;

use crate::cli::{Cli, Command, DeviceCommand, GroupCommand};
use crate::output::{print_message, print_result};

/// Runs the parsed command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Demo => crate::demo::run(json).await,
        Command::Tui => crate::tui::run(&profile_dir(cli.profile)?).await,
        Command::Register { name, server, invite } => {
            let profile = profile_dir(cli.profile)?;
            let server = resolve(&server).await?;
            let client = QpcClient::register(&profile, server, &name, invite.as_deref(), ClientOptions::default())
                .await
                .with_context(|| format!("cannot register {name} at {server}"))?;
            let fingerprint = client.server_fingerprint().await;
            print_result(
                json,
                json!({ "username": client.username(), "server": server.to_string(), "server_fingerprint": fingerprint.to_string(), "profile": profile.display().to_string() }),
                &format!(
                    "registered {} at {server}\nserver certificate pinned: {fingerprint}\nprofile: {}",
                    client.username(),
                    profile.display()
                ),
            );
            client.disconnect().await;
            Ok(())
        }
        Command::Device(DeviceCommand::Link { server, label, wait }) => {
            crate::devices::link(&profile_dir(cli.profile)?, &server, &label, wait, json).await
        }
        command => {
            let profile = profile_dir(cli.profile)?;
            let client = QpcClient::open(&profile, ClientOptions::default())
                .await
                .with_context(|| format!("cannot open profile {}", profile.display()))?;
            let result = run_with_client(&client, command, json).await;
            client.disconnect().await;
            result
        }
    }
}

/// Runs a command that needs a logged-in client (also used by the REPL).
pub(crate) async fn run_with_client(client: &QpcClient, command: Command, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Whoami => {
            let fingerprint = client.server_fingerprint().await;
            let device = client.device_id().await;
            print_result(
                json,
                json!({
                    "username": client.username(),
                    "device": device,
                    "server": client.server().to_string(),
                    "server_fingerprint": fingerprint.to_string(),
                    "tls_key_exchange": quicprochat_sdk::TLS_KEY_EXCHANGE,
                    "mls_ciphersuite": quicprochat_sdk::MLS_CIPHERSUITE,
                }),
                &format!(
                    "{} at {} (device {device})\nserver certificate {fingerprint}\nTLS 1.3 key exchange {}; MLS ciphersuite {}",
                    client.username(),
                    client.server(),
                    quicprochat_sdk::TLS_KEY_EXCHANGE,
                    quicprochat_sdk::MLS_CIPHERSUITE
                ),
            );
        }
        Command::Group(group) => run_group(client, group, json).await?,
        Command::Device(device) => crate::devices::run(client, device, json).await?,
        Command::Send { target, text } => {
            let message = client.send(&target, &text.join(" ")).await?;
            let queued = message.state == quicprochat_sdk::MessageState::Pending;
            if json {
                println!("{}", crate::output::message_json(&message));
            } else if queued {
                println!("queued for {} ({})", message.group, message.id);
            } else {
                println!("sent to {} ({})", message.group, message.id);
            }
            if queued {
                eprintln!(
                    "note: the server could not take the message now; it stays queued and is sent \
                     (with the same id) the next time qpc connects"
                );
            }
        }
        Command::Recv { wait, follow } => {
            let mut wait = Duration::from_secs(wait);
            loop {
                for message in client.receive_wait(wait).await? {
                    print_message(&message, json);
                }
                warn_if_expired(client).await?;
                if !follow {
                    break;
                }
                wait = Duration::from_secs(3600);
            }
        }
        Command::History { target, limit } => {
            for message in client.history(&target, limit).await? {
                print_message(&message, json);
            }
        }
        Command::Verify { user } => {
            let safety = client.safety_number(&user).await?;
            print_result(
                json,
                json!({ "user": safety.user, "safety_number": safety.digits, "identity_key": safety.their_key }),
                &format!(
                    "safety number with {}:\n{}\nCompare it with {} in person or over a trusted channel.",
                    safety.user, safety.digits, safety.user
                ),
            );
        }
        Command::Repl => Box::pin(crate::repl::run(client, json)).await?,
        Command::Register { .. } => bail!("this profile already holds an account"),
        Command::Demo => bail!("run `qpc demo` on its own"),
        Command::Tui => bail!("run `qpc tui` on its own"),
    }
    Ok(())
}

/// Tells the user (on stderr) about queue entries that expired on the
/// server before this device fetched them.
async fn warn_if_expired(client: &QpcClient) -> anyhow::Result<()> {
    let expired = client.take_expired_count().await?;
    if expired > 0 {
        eprintln!("{}", crate::output::expired_note(expired));
    }
    Ok(())
}

async fn run_group(client: &QpcClient, command: GroupCommand, json: bool) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create { name } => {
            client.create_group(&name).await?;
            print_result(json, json!({ "group": name, "created": true }), &format!("created group {name}"));
        }
        GroupCommand::Add { group, users } => {
            client.add_members(&group, &users).await?;
            print_result(
                json,
                json!({ "group": group, "added": users }),
                &format!("added {} to {group}", users.join(", ")),
            );
        }
        GroupCommand::Remove { group, users } => {
            client.remove_members(&group, &users).await?;
            print_result(
                json,
                json!({ "group": group, "removed": users }),
                &format!("removed {} from {group}", users.join(", ")),
            );
        }
        GroupCommand::Leave { group } => {
            client.leave_group(&group).await?;
            print_result(json, json!({ "group": group, "left": true }), &format!("left {group}"));
        }
        GroupCommand::List => {
            // Catch up first so groups we were added to are listed.
            client.sync().await?;
            for group in client.groups().await? {
                print_result(
                    json,
                    json!({ "group": group.name, "members": group.members }),
                    &format!("{} ({})", group.name, group.members.join(", ")),
                );
            }
        }
        GroupCommand::Members { group } => {
            client.sync().await?;
            let members = client.members(&group).await?;
            print_result(json, json!({ "group": group, "members": members }), &members.join("\n"));
        }
    }
    Ok(())
}

fn profile_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    flag.or_else(|| quicprochat_sdk::profile::default_profile_dir(dirs::config_dir()))
        .ok_or_else(|| anyhow!("no profile directory: pass --profile DIR or set QPC_PROFILE"))
}

pub(crate) async fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(server)
        .await
        .with_context(|| format!("cannot resolve server address {server:?} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| anyhow!("server address {server:?} resolves to nothing"))
}
