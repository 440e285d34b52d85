//! Starting a `qpc-server` process for the timing examples (`#[path]`-included
//! by each: an example is a crate of its own).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// Starts `qpc-server` on `data`, listening on `listen`, with `env` set
/// (raised limits, say); returns it with the address from its readiness line.
pub(crate) fn start_server(
    binary: &Path,
    data: &Path,
    listen: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(binary)
        .args(["--data-dir", &data.display().to_string(), "--listen", listen])
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn qpc-server")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line.split_whitespace().nth(2).context("readiness line")?.to_owned();
    Ok((child, addr))
}
