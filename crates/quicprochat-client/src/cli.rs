//! Command-line syntax of `qpc` (the contract in DESIGN.md).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// quicprochat: end-to-end encrypted group chat over QUIC and MLS.
#[derive(Parser, Debug)]
#[command(name = "qpc", version, about)]
pub(crate) struct Cli {
    /// Profile directory (identity, groups, history). Default: $QPC_PROFILE, else the user's config dir.
    #[arg(long, global = true)]
    pub(crate) profile: Option<PathBuf>,
    /// Print results as JSON, one object per line.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create an account on a server and store it in the profile.
    Register {
        /// Username (lowercase letters, digits, `_`, `-`, `.`; starts with a letter).
        name: String,
        /// Server address, HOST:PORT.
        #[arg(long)]
        server: String,
        /// Invite token from the server's operator (`qpc-server invite create`),
        /// needed when the server only admits invited users.
        #[arg(long, value_name = "TOKEN")]
        invite: Option<String>,
    },
    /// Show the profile's account, server and identity key.
    Whoami,
    /// Manage groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Link, list and remove the devices of your account.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Send a message to a group, or to `@user` for a direct conversation.
    Send {
        /// Group name, or @user.
        target: String,
        /// The message text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Print messages not shown before.
    Recv {
        /// Wait up to this many seconds for at least one message.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Keep printing messages as they arrive until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// Show the last messages of a conversation.
    History {
        /// Group name, or @user.
        target: String,
        /// How many messages.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show the safety number you share with a user, to compare out of band.
    Verify {
        /// The other user.
        user: String,
    },
    /// Interactive shell.
    Repl,
    /// Full-screen terminal chat (conversation list, messages, input line).
    Tui,
    /// Run an in-process server and three clients holding an encrypted conversation.
    Demo,
}

#[derive(Subcommand, Debug)]
pub(crate) enum GroupCommand {
    /// Create a group with you as its only member.
    Create {
        /// Group name.
        name: String,
    },
    /// Add users to a group.
    Add {
        /// Group name.
        group: String,
        /// Users to add.
        #[arg(required = true, num_args = 1..)]
        users: Vec<String>,
    },
    /// Remove users from a group.
    Remove {
        /// Group name.
        group: String,
        /// Users to remove.
        #[arg(required = true, num_args = 1..)]
        users: Vec<String>,
    },
    /// Leave a group.
    Leave {
        /// Group name.
        group: String,
    },
    /// List your groups.
    List,
    /// List a group's members.
    Members {
        /// Group name, or @user.
        group: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum DeviceCommand {
    /// Make this (new, empty) profile a device of an existing account:
    /// prints a link code to approve on the account's first device, and waits.
    Link {
        /// Server address, HOST:PORT.
        #[arg(long)]
        server: String,
        /// A name for this device, shown in `device list`.
        #[arg(long, default_value = "new device")]
        label: String,
        /// Wait up to this many seconds for the approval (the code expires
        /// sooner if the server says so).
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        wait: u64,
    },
    /// Approve a link code shown by a new device (on the account's first device).
    Approve {
        /// The link code the new device printed.
        code: String,
        /// Wait up to this many seconds for the new device to come online and
        /// be added to your groups.
        #[arg(long, default_value_t = 60, value_name = "SECS")]
        wait: u64,
    },
    /// List your account's devices.
    List,
    /// Remove a device of your account: it can no longer log in or read
    /// anything sent afterwards.
    Remove {
        /// The device id, as `device list` shows it.
        id: String,
    },
}
