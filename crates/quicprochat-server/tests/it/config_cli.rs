//! `qpc-server` as a process: `gen-config` and the docs, configuration
//! errors (exit code 2), admin commands on a data dir, `status` against a
//! stub HTTP endpoint, JSON logs on stderr and exit 0 on SIGTERM.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use quicprochat_server::config::{self, ConfigFile, Flags, Sources};
use quicprochat_server::http::serve_http;
use quicprochat_server::metrics::Metrics;
use quicprochat_server::storage::{InviteUse, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

/// `qpc-server ARGS` with a clean environment plus `env`, killed after
/// [`DEADLINE`] (so a config error that regresses into a running server
/// fails the test instead of hanging it).
fn qpc_server(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qpc-server"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qpc-server");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("qpc-server {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn gen_config_output_parses_to_the_defaults() {
    let output = qpc_server(&["gen-config"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let file = ConfigFile { name: "gen-config", text: &text };
    let loaded = config::load(&Sources { file: Some(file), env: &BTreeMap::new(), flags: &Flags::default() })
        .expect("gen-config output loads");
    assert_eq!(format!("{loaded:?}"), format!("{:?}", config::defaults()));
}

#[test]
fn operations_doc_contains_the_generated_reference() {
    let docs_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
    let docs = std::fs::read_to_string(docs_path).expect("docs/operations.md exists");
    for (args, what) in [(&["gen-config"][..], "gen-config"), (&["gen-config", "--markdown"][..], "key table")] {
        let output = qpc_server(args, &[]);
        assert!(output.status.success());
        assert!(
            docs.contains(&stdout(&output)),
            "docs/operations.md does not contain the current {what}: paste the output of `qpc-server {}`",
            args.join(" ")
        );
    }
}

/// (arguments, environment, expected part of stderr).
type ErrorCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn configuration_errors_exit_with_code_2_and_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = path_str(&data);
    let bad_file = dir.path().join("bad.toml");
    std::fs::write(&bad_file, "[server]\nlisten = \"127.0.0.1:0\"\n\n[transport]\nfoo = 1\n").expect("write");
    let bad_file = path_str(&bad_file);
    let missing = dir.path().join("missing.toml");
    let missing = path_str(&missing);
    let cases: &[ErrorCase<'_>] = &[
        // `run` (the default command) must fail before it binds anything.
        (&["--config", bad_file, "--data-dir", data], &[], "unknown key \"transport.foo\""),
        (&["run", "--config", bad_file], &[], "unknown key \"transport.foo\""),
        (&["users", "list", "--config", bad_file], &[], "transport.foo"),
        (&["users", "list"], &[("QPC_CONFIG", bad_file)], "transport.foo"),
        (&["users", "list", "--config", missing], &[], "cannot read"),
        (
            &["users", "list"],
            &[("QPC_RPC_TIMEOUT", "ten")],
            "timeouts.rpc = \"ten\" (from QPC_RPC_TIMEOUT): expected a duration like \"10s\"",
        ),
        (&["--listen", "nope", "users", "list"], &[], "server.listen = \"nope\" (from --listen)"),
        (&["status", "--log-format", "xml"], &[], "log.format = \"xml\" (from --log-format)"),
        (&["users", "list", "--data-dir", data], &[("RUST_LOG", "qpc_server=loud")], "RUST_LOG"),
        (&["users", "list", "--no-such-flag"], &[], "--no-such-flag"),
        (&["invite", "create", "--uses", "0", "--data-dir", data], &[], "--uses"),
        (&["invite", "create", "--expires", "soon", "--data-dir", data], &[], "--expires"),
    ];
    for (args, env, expected) in cases {
        let output = qpc_server(args, env);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{args:?}: stderr {:?} lacks {expected:?}", stderr(&output));
    }
}

#[test]
fn invites_and_users_on_a_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_arg = path_str(&data);

    // An empty QPC_* variable counts as unset, QPC_CONFIG included.
    let output = qpc_server(&["users", "list", "--data-dir", data_arg], &[("QPC_CONFIG", ""), ("QPC_LISTEN", "")]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("no database at"), "{}", stderr(&output));

    let output = qpc_server(&["invite", "create", "--uses", "3", "--expires", "1h", "--data-dir", data_arg], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let token = stdout(&output).trim().to_owned();
    assert!(
        token.len() == quicprochat_server::domain::invites::TOKEN_LEN
            && token.bytes().all(|byte| byte.is_ascii_alphanumeric()),
        "token {token:?}"
    );
    {
        let store = SqliteStore::open(data.join("qpc-server.db")).expect("open store");
        assert_eq!(store.consume_invite(&token, 0).expect("consume"), InviteUse::Consumed { remaining: 2 });
        for name in ["bob", "alice"] {
            store.create_account(name, &[7; 32], 0).expect("create account");
        }
    }

    // The data dir may also come from a config file named after the command.
    let config_file = dir.path().join("qpc.toml");
    std::fs::write(&config_file, format!("[server]\ndata_dir = {:?}\n", data_arg)).expect("write config");
    let config_arg = path_str(&config_file);
    let key = "07".repeat(32);
    let list = |expected: &str| {
        let output = qpc_server(&["users", "list", "--config", config_arg], &[]);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stdout(&output), expected);
    };
    list(&format!("alice\tactive\t{key}\nbob\tactive\t{key}\n"));

    let output = qpc_server(&["users", "disable", "alice"], &[("QPC_DATA_DIR", data_arg)]);
    assert!(output.status.success(), "{}", stderr(&output));
    list(&format!("alice\tdisabled\t{key}\nbob\tactive\t{key}\n"));
    let output = qpc_server(&["--data-dir", data_arg, "users", "enable", "alice"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    list(&format!("alice\tactive\t{key}\nbob\tactive\t{key}\n"));

    let output = qpc_server(&["users", "disable", "carol", "--data-dir", data_arg], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("carol"), "{}", stderr(&output));
}

/// A one-request-per-connection HTTP stub answering `/healthz` with
/// `health` and `/metrics` with a small page; returns its address.
fn stub_endpoint(health: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
    let addr = listener.local_addr().expect("stub addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            // Read the whole request: closing a socket with unread input
            // resets the connection instead of finishing the response.
            let mut reader = BufReader::new(&mut stream);
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut header = String::from("-");
            while !header.trim().is_empty() {
                header.clear();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    break;
                }
            }
            let response = if request_line.starts_with("GET /healthz ") {
                health.to_owned()
            } else {
                let page = "qpc_uptime_seconds 42\nqpc_open_connections 2\n\
                            qpc_rpc_requests_total{method=\"Send\",status=\"OK\"} 5\n# EOF\n";
                format!("HTTP/1.0 200 OK\r\ncontent-length: {}\r\n\r\n{page}", page.len())
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    addr
}

#[test]
fn status_reports_ready_or_draining() {
    let ready = stub_endpoint("HTTP/1.0 200 OK\r\n\r\nready\n");
    let output = qpc_server(&["status", "--metrics-listen", &ready], &[]);
    assert!(output.status.success(), "{:?} {} {}", output.status, stdout(&output), stderr(&output));
    let text = stdout(&output);
    assert!(text.contains(&format!("qpc-server at {ready}: ready")), "{text}");
    assert!(text.contains("open connections") && text.contains("RPCs handled"), "{text}");

    let draining = stub_endpoint("HTTP/1.0 503 Service Unavailable\r\n\r\ndraining\n");
    let output = qpc_server(&["status"], &[("QPC_METRICS_LISTEN", &draining)]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains(": draining"), "{}", stdout(&output));

    let output = qpc_server(&["status"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("metrics_listen"), "{}", stderr(&output));

    let closed = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let output = qpc_server(&["status", "--metrics-listen", &closed], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot connect"), "{}", stderr(&output));
}

/// The value printed by `status` for a headline `label`.
fn headline<'a>(status_output: &'a str, label: &str) -> Option<&'a str> {
    status_output
        .lines()
        .find_map(|line| line.trim_start().strip_prefix(label).filter(|rest| rest.starts_with(' ')))
        .map(str::trim)
}

#[test]
fn status_reads_the_servers_http_endpoint() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let metrics = Metrics::new();
    metrics.record_rpc("SendMessage", "OK", Duration::from_millis(3));
    metrics.record_rpc("SendMessage", "OK", Duration::from_millis(4));
    metrics.record_rpc("FetchKeyPackage", "NOT_FOUND", Duration::from_millis(1));
    let draining = CancellationToken::new();
    let stop = CancellationToken::new();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    runtime.spawn(serve_http(listener, metrics, draining.clone(), stop.clone()));

    let output = qpc_server(&["status", "--metrics-listen", &addr], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with(&format!("qpc-server at {addr}: ready\n")), "{text}");
    assert_eq!(headline(&text, "RPCs handled"), Some("3"), "{text}");
    assert_eq!(headline(&text, "RPCs failed (status not OK)"), Some("1"), "{text}");
    assert_eq!(headline(&text, "open connections"), Some("0"), "{text}");

    draining.cancel();
    let output = qpc_server(&["status", "--metrics-listen", &addr], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stdout(&output).starts_with(&format!("qpc-server at {addr}: draining\n")), "{}", stdout(&output));
    stop.cancel();
}

#[test]
fn run_logs_json_to_stderr_prints_readiness_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qpc-server"))
        .args(["--data-dir", path_str(&data), "--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qpc-server");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut readiness = String::new();
    stdout.read_line(&mut readiness).expect("readiness line");
    assert!(readiness.starts_with("listening on 127.0.0.1:"), "{readiness:?}");
    assert!(readiness.contains(" fingerprint "), "{readiness:?}");

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
    assert!(kill.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "qpc-server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("rest of stdout");
    assert_eq!(rest, "", "stdout carries only the readiness line");
    let mut logs = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut logs).expect("stderr");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
        .collect();
    assert!(
        lines.iter().any(|line| line["fields"]["message"] == "qpc-server listening"),
        "no listening event in {logs}"
    );
}

#[tokio::test]
async fn federation_fingerprint_prints_the_pin_the_server_presents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let printed = |output: Output| {
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output).trim().to_owned()
    };
    // On a new data dir the certificate is made, and printed the same after.
    let first = printed(qpc_server(&["--data-dir", path_str(&data_dir), "federation", "fingerprint"], &[]));
    let again = printed(qpc_server(&["federation", "fingerprint"], &[("QPC_DATA_DIR", path_str(&data_dir))]));
    assert_eq!(first, again);
    let pin = quicprochat_rpc::CertFingerprint::parse(&first).expect("a sha256: pin");
    assert_eq!(pin.to_string(), first);
    quicprochat_rpc::install_crypto_provider();
    let config = quicprochat_server::ServerConfig::new(data_dir, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = quicprochat_server::RunningServer::start(config).await.expect("server starts on that data dir");
    assert_eq!(server.fingerprint(), pin, "the pin is the certificate the server presents");
    server.shutdown().await;
}

#[test]
fn federation_status_shows_each_peers_stream_from_the_database() {
    use quicprochat_server::storage::NewOutboundEntry;
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    {
        let store = SqliteStore::open(data_dir.join("qpc-server.db")).expect("database");
        let entry = |at: u64| NewOutboundEntry { accepted_at_ms: at, entry: vec![1, 2, 3] };
        store.append_outbound("b.example", &[entry(1), entry(2), entry(3)]).expect("append");
        store.append_outbound("gone.example", &[entry(4)]).expect("append");
    }
    let pin = format!("sha256:{}", "ab".repeat(32));
    let peers = format!("[{{ domain = \"b.example\", address = \"192.0.2.1:7444\", fingerprints = [\"{pin}\"] }}]");
    let env = [
        ("QPC_DATA_DIR", path_str(&data_dir)),
        ("QPC_FEDERATION_LISTEN", "127.0.0.1:0"),
        ("QPC_FEDERATION_PEERS", peers.as_str()),
    ];
    let output = qpc_server(&["federation", "status"], &env);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let line =
        |peer: &str| text.lines().find(|line| line.starts_with(peer)).unwrap_or_else(|| panic!("{peer}: {text}"));
    let b = line("b.example");
    assert!(b.contains("unknown") && b.contains(" 3 "), "{b}");
    let gone = line("gone.example");
    assert!(gone.contains("not a peer") && gone.contains(" 1 "), "{gone}");
}
