//! `qpc-server`: command-line entry point.
//!
//! Parses the command line (clap), loads the configuration once through
//! [`quicprochat_server::config::load`] (file, `QPC_*` environment, flags),
//! sets up logging, then runs the server or an admin command (`admin`).
//!
//! Exit codes: 0 on success (including a shutdown by SIGTERM/SIGINT), 2 for
//! a usage or configuration error, 1 for anything else. Stdout carries only
//! machine-readable output (the readiness line, `gen-config`, tokens,
//! listings); logs and errors go to stderr.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod admin;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use quicprochat_server::config::{self, ConfigFile, Flags, LogConfig, LogFormat, Sources};
use quicprochat_server::{RunningServer, ServerConfig};
use tracing_subscriber::EnvFilter;

/// The quicprochat server: MLS Authentication and Delivery Service over QUIC.
///
/// Settings come from (highest first) flags, QPC_* environment variables,
/// the --config file and built-in defaults; `qpc-server gen-config` prints
/// every key.
#[derive(Parser, Debug)]
#[command(name = "qpc-server", version, about)]
struct Cli {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags shared by every command (they may come before or after it).
#[derive(clap::Args, Debug)]
struct SettingsArgs {
    /// TOML config file [env QPC_CONFIG].
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Directory for the database and the TLS certificate [env QPC_DATA_DIR; default ./qpc-data].
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<String>,
    /// Address to listen on for QUIC (UDP) [env QPC_LISTEN; default 127.0.0.1:7443].
    #[arg(long, value_name = "ADDR", global = true)]
    listen: Option<String>,
    /// HTTP address for /metrics and /healthz, or "off" [env QPC_METRICS_LISTEN; default off].
    #[arg(long, value_name = "ADDR", global = true)]
    metrics_listen: Option<String>,
    /// This server's domain name (users are name@domain) [env QPC_DOMAIN; default localhost].
    #[arg(long, value_name = "NAME", global = true)]
    domain: Option<String>,
    /// Log format on stderr: pretty or json [env QPC_LOG_FORMAT; default pretty].
    #[arg(long, value_name = "FORMAT", global = true)]
    log_format: Option<String>,
    /// Log filter, e.g. info or "info,qpc_server=debug"; RUST_LOG wins [env QPC_LOG_LEVEL; default info].
    #[arg(long, value_name = "FILTER", global = true)]
    log_level: Option<String>,
    /// Who may register: open, invite or closed [env QPC_REGISTRATION; default open].
    #[arg(long, value_name = "POLICY", global = true)]
    registration: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default when no command is given).
    Run,
    /// Print a commented config file with every key set to its default.
    GenConfig {
        /// Print the Markdown reference table instead (as in docs/operations.md).
        #[arg(long)]
        markdown: bool,
    },
    /// Manage invite tokens (for `registration.policy = "invite"`).
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Manage accounts in the data dir's database.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Show whether a running server is ready or draining, and headline metrics.
    Status,
    /// Federation with other servers.
    #[command(subcommand)]
    Federation(FederationCommand),
}

#[derive(Subcommand, Debug)]
enum FederationCommand {
    /// Print this server's certificate pin, for the `fingerprints` of its
    /// entry in other servers' [[federation.peers]] (the certificate is
    /// made if the data dir has none yet).
    Fingerprint,
    /// Show each peer: reachable now (asks the running server's
    /// metrics_listen), entries pending for it, the oldest one's age and
    /// the last error.
    Status,
}

#[derive(Subcommand, Debug)]
enum InviteCommand {
    /// Create an invite token and print it.
    Create {
        /// How many registrations the token allows.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        uses: u32,
        /// Lifetime, e.g. 7d or 12h; without it the token does not expire.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
    },
}

#[derive(Subcommand, Debug)]
enum UsersCommand {
    /// List accounts: name, state (active/disabled), identity key.
    List,
    /// Disable an account: it can no longer log in or act.
    Disable {
        /// The username.
        name: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// The username.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::GenConfig { markdown }) = cli.command {
        print!("{}", if markdown { config::reference_markdown() } else { config::default_config_toml() });
        return ExitCode::SUCCESS;
    }
    let config = match load_config(&cli.settings) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("qpc-server: configuration error: {error:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = init_logging(&config.log) {
        eprintln!("qpc-server: configuration error: {error:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        None | Some(Command::Run) => run(config),
        Some(Command::GenConfig { .. }) => Ok(()),
        Some(Command::Invite(InviteCommand::Create { uses, expires })) => admin::invite::create(&config, uses, expires),
        Some(Command::Users(UsersCommand::List)) => admin::users::list(&config),
        Some(Command::Users(UsersCommand::Disable { name })) => admin::users::disable(&config, &name),
        Some(Command::Users(UsersCommand::Enable { name })) => admin::users::enable(&config, &name),
        Some(Command::Status) => admin::status::show(&config),
        Some(Command::Federation(FederationCommand::Fingerprint)) => admin::federation::fingerprint(&config),
        Some(Command::Federation(FederationCommand::Status)) => admin::federation::status(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("qpc-server: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the config file and the `QPC_*` environment and runs the loader.
fn load_config(settings: &SettingsArgs) -> anyhow::Result<ServerConfig> {
    // `--config` wins over `QPC_CONFIG`; an empty `QPC_CONFIG` counts as unset
    // like every other `QPC_*` variable.
    let config_path = settings
        .config
        .clone()
        .or_else(|| std::env::var_os("QPC_CONFIG").filter(|value| !value.is_empty()).map(PathBuf::from));
    let file_text = match &config_path {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?),
        None => None,
    };
    let file_name = config_path.as_ref().map(|path| path.display().to_string()).unwrap_or_default();
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with("QPC_").then(|| (name, value.to_string_lossy().into_owned()))
        })
        .collect();
    let flags = Flags {
        data_dir: settings.data_dir.clone(),
        listen: settings.listen.clone(),
        metrics_listen: settings.metrics_listen.clone(),
        domain: settings.domain.clone(),
        log_format: settings.log_format.clone(),
        log_level: settings.log_level.clone(),
        registration: settings.registration.clone(),
    };
    let file = file_text.as_deref().map(|text| ConfigFile { name: &file_name, text });
    Ok(config::load(&Sources { file, env: &env, flags: &flags })?)
}

/// Logs to stderr in the configured format; `RUST_LOG`, when set, replaces
/// the configured level filter.
fn init_logging(log: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(rust_log) if !rust_log.trim().is_empty() => {
            EnvFilter::try_new(&rust_log).with_context(|| format!("RUST_LOG = {rust_log:?} is not a valid filter"))?
        }
        _ => EnvFilter::try_new(&log.level).with_context(|| format!("log.level = {:?}", log.level))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    }
    .map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

fn run(config: ServerConfig) -> anyhow::Result<()> {
    quicprochat_rpc::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async {
        let server = RunningServer::start(config).await.context("cannot start qpc-server")?;
        // Listen for signals before announcing readiness, so a SIGTERM sent as
        // soon as the line appears is a graceful shutdown, not the default kill.
        let shutdown_signal = shutdown_signal().context("cannot listen for signals")?;
        // Machine-readable readiness line for scripts and tests.
        match server.federation_addr() {
            Some(federation) => println!(
                "listening on {} fingerprint {} federation {federation}",
                server.local_addr(),
                server.fingerprint()
            ),
            None => println!("listening on {} fingerprint {}", server.local_addr(), server.fingerprint()),
        }
        let token = server.shutdown_token();
        tokio::spawn(async move {
            shutdown_signal.await;
            tracing::info!("signal received, shutting down");
            token.cancel();
        });
        server.wait().await;
        Ok(())
    })
}

/// Registers SIGTERM and SIGINT handlers now; the future resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// Ctrl-C on platforms without Unix signals.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
