//! `qpc device …`: linking this profile to an account, approving a link,
//! listing and removing the account's devices.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use quicprochat_sdk::{ClientOptions, QpcClient};
use serde_json::json;

use crate::cli::DeviceCommand;
use crate::output::{clock, date, print_result};

/// `qpc device link`: runs without an account in the profile.
pub(crate) async fn link(profile: &Path, server: &str, label: &str, wait: u64, json: bool) -> anyhow::Result<()> {
    let address = crate::commands::resolve(server).await?;
    let show_code = |code: &str| {
        print_result(json, json!({ "link_code": code }), &format!("link code: {code}"));
        if !json {
            eprintln!("approve it on your account's first device: qpc device approve {code}");
            eprintln!("waiting for the approval…");
        }
    };
    let client =
        QpcClient::link_device(profile, address, label, Duration::from_secs(wait), ClientOptions::default(), show_code)
            .await
            .with_context(|| format!("cannot link this profile at {address}"))?;
    let device = client.device_id().await;
    print_result(
        json,
        json!({ "username": client.username(), "device": device, "label": label, "profile": profile.display().to_string() }),
        &format!(
            "linked: this profile is device {device} ({label}) of {}\nprofile: {}",
            client.username(),
            profile.display()
        ),
    );
    client.disconnect().await;
    Ok(())
}

/// The device commands that need a logged-in client.
pub(crate) async fn run(client: &QpcClient, command: DeviceCommand, json: bool) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Link { .. } => anyhow::bail!("this profile already holds an account"),
        DeviceCommand::Approve { code, wait } => {
            let approved = client.approve_device(&code, Duration::from_secs(wait)).await?;
            print_result(
                json,
                json!({ "device": approved.device, "label": approved.label, "groups": approved.groups, "pending": approved.pending }),
                &format!(
                    "approved device {} ({}); added to {} group(s)",
                    approved.device, approved.label, approved.groups
                ),
            );
            if approved.pending > 0 {
                eprintln!(
                    "note: {} group(s) wait for the new device to come online; any device of your account \
                     adds it when it next connects",
                    approved.pending
                );
            }
        }
        DeviceCommand::List => {
            for device in client.devices().await? {
                let marks = match (device.current, device.certified) {
                    (_, false) => "  NOT CERTIFIED by your account key: not added by you",
                    (true, true) => "  (this device)",
                    (false, true) => "",
                };
                // A label comes from the server: shown without control characters.
                let label: String = device.label.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
                print_result(
                    json,
                    json!({ "id": device.id, "label": label, "created_at": device.created_at_ms, "current": device.current, "certified": device.certified }),
                    &format!(
                        "{}  {}  linked {} {}{marks}",
                        device.id,
                        label,
                        date(device.created_at_ms),
                        clock(device.created_at_ms)
                    ),
                );
            }
        }
        DeviceCommand::Remove { id } => {
            let groups = client.remove_device(&id).await?;
            print_result(
                json,
                json!({ "device": id, "removed": true, "groups": groups }),
                &format!("removed device {id}; it left {groups} group(s)"),
            );
        }
    }
    Ok(())
}
