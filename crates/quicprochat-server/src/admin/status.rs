//! `qpc-server status`: asks a running server's HTTP endpoint
//! (`server.metrics_listen`) for `/healthz` and `/metrics` and prints whether
//! it is ready, degraded (serving, with a plugin switched off) or draining,
//! and a few headline metrics. Exits 0 only when the server serves (ready or
//! degraded), so it doubles as a health check in scripts.
//!
//! The request is a minimal HTTP/1.0 `GET` over a blocking
//! `std::net::TcpStream` rather than a hyper client: the peer is our own
//! endpoint on an operator-chosen (usually loopback) address, there is no TLS,
//! no redirect, no keep-alive, and an HTTP/1.0 request makes the server send a
//! body delimited by closing the connection (never chunked). That is a dozen
//! lines with connect/read/write timeouts and a size cap, against a tokio
//! runtime plus hyper-util's legacy client and http-body-util for one GET.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;
use quicprochat_server::ServerConfig;

/// Connect, write and read timeout of each request.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response read (a metrics page is a few tens of KiB).
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Headline metrics: (label, metric name); each is summed over its labels.
const HEADLINES: &[(&str, &str)] = &[
    ("uptime (s)", "qpc_uptime_seconds"),
    ("open connections", "qpc_open_connections"),
    ("RPCs in flight", "qpc_rpcs_in_flight"),
    ("RPCs handled", "qpc_rpc_requests_total"),
    ("queue depth", "qpc_queue_depth"),
    ("rate-limited requests", "qpc_rate_limited_total"),
    ("key package stock-low events", "qpc_key_package_stock_low_total"),
];

/// An HTTP response: status code and body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Prints the health and headline metrics of the server at `metrics_listen`.
pub(crate) fn show(config: &ServerConfig) -> anyhow::Result<()> {
    let addr = config.metrics_listen.context(
        "the HTTP endpoint is off: set server.metrics_listen (--metrics-listen, QPC_METRICS_LISTEN) \
         to the address the server serves /healthz on",
    )?;
    let health = get(addr, "/healthz")?;
    let state = match health.status {
        200 if health.body.starts_with("degraded") => health.body.trim(),
        200 => "ready",
        503 => "draining",
        other => anyhow::bail!("GET http://{addr}/healthz answered {other}: {}", health.body.trim()),
    };
    println!("qpc-server at {addr}: {state}");
    let metrics = get(addr, "/metrics")?;
    if metrics.status != 200 {
        anyhow::bail!("GET http://{addr}/metrics answered {}", metrics.status);
    }
    for (label, value) in headlines(&metrics.body) {
        println!("  {label:<30} {value}");
    }
    if health.status != 200 {
        anyhow::bail!("the server is draining (shutting down)");
    }
    Ok(())
}

/// One `GET path` with HTTP/1.0 (see the module docs for why not hyper).
pub(crate) fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Response> {
    let url = format!("http://{addr}{path}");
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("cannot connect to {url}: is qpc-server running with this metrics_listen?"))?;
    stream.set_read_timeout(Some(TIMEOUT)).context("socket setup")?;
    stream.set_write_timeout(Some(TIMEOUT)).context("socket setup")?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        .with_context(|| format!("cannot send GET {url}"))?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut raw).with_context(|| format!("cannot read {url}"))?;
    parse_response(&raw).with_context(|| format!("bad answer from {url}"))
}

/// Parses an HTTP/1.x response whose body ends where the connection closed.
pub(crate) fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split_whitespace().collect::<Vec<_>>().as_slice() {
        [version, code, ..] if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    }
    .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked")
        })
    });
    if chunked {
        anyhow::bail!("chunked body in an answer to HTTP/1.0");
    }
    Ok(Response { status, body: body.to_owned() })
}

/// The headline metrics present in a Prometheus/OpenMetrics text page, plus
/// the RPCs whose status is not `OK`.
pub(crate) fn headlines(page: &str) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for (label, name) in HEADLINES {
        if let Some(total) = sum_of(page, name, |_| true) {
            found.push((*label, show_number(total)));
        }
        if *name == "qpc_rpc_requests_total" {
            if let Some(errors) = sum_of(page, name, |labels| !labels.contains("status=\"OK\"")) {
                found.push(("RPCs failed (status not OK)", show_number(errors)));
            }
        }
    }
    found
}

/// Sum of the samples of metric `name` whose label set passes `keep`; `None`
/// if the page has no sample of `name` at all.
fn sum_of(page: &str, name: &str, keep: impl Fn(&str) -> bool) -> Option<f64> {
    let mut total = None;
    for line in page.lines().filter(|line| !line.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(labelled) => match labelled.rsplit_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue, // a longer name with this prefix
        };
        let value = value.split_whitespace().next().and_then(|value| value.parse::<f64>().ok());
        total = Some(total.unwrap_or(0.0) + if keep(labels) { value.unwrap_or(0.0) } else { 0.0 });
    }
    total
}

fn show_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP qpc_rpc_requests RPCs\n# TYPE qpc_rpc_requests counter\n\
        qpc_rpc_requests_total{method=\"Send\",status=\"OK\"} 7\n\
        qpc_rpc_requests_total{method=\"Send\",status=\"NOT_FOUND\"} 2\n\
        qpc_rpc_requests_total{method=\"Login\",status=\"UNAVAILABLE\"} 1\n\
        qpc_uptime_seconds 12.5\nqpc_open_connections 3\nqpc_open_connections_extra 99\n# EOF\n";

    #[test]
    fn headlines_sum_over_labels_and_skip_absent_metrics() {
        let found = headlines(PAGE);
        assert_eq!(
            found,
            vec![
                ("uptime (s)", "12.5".to_owned()),
                ("open connections", "3".to_owned()),
                ("RPCs handled", "10".to_owned()),
                ("RPCs failed (status not OK)", "3".to_owned()),
            ]
        );
    }

    #[test]
    fn responses_parse_or_are_refused() {
        for (raw, expected) in [
            ("HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nready\n", Some((200, "ready\n"))),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\ndraining\n", Some((503, "draining\n"))),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nready\r\n0\r\n\r\n", None),
            ("SSH-2.0-OpenSSH\r\n\r\n", None),
            ("HTTP/1.0 200 OK\r\n", None),
        ] {
            let parsed = parse_response(raw.as_bytes()).ok();
            assert_eq!(parsed, expected.map(|(status, body)| Response { status, body: body.to_owned() }), "{raw:?}");
        }
    }
}
