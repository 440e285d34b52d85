//! Loader tests: precedence of every layer for every key, every validation
//! error (one `check` helper over a table), and `gen-config` round-trips.

use std::collections::{BTreeMap, BTreeSet};

use super::keys::{find, section_of, KEYS};
use super::render::section_doc;
use super::{default_config_toml, defaults, load, ConfigError, ConfigFile, Flags, Sources};

/// A test input: lines `QPC_NAME=value` are environment variables, lines
/// `--flag=value` are flags, every other line is TOML of the file (`test.toml`;
/// no file at all when there are no such lines).
fn run(input: &str) -> Result<super::ServerConfig, ConfigError> {
    let mut env = BTreeMap::new();
    let mut flags = Flags::default();
    let mut file = String::new();
    for line in input.lines() {
        if let Some((name, value)) = line.strip_prefix("QPC_").and_then(|rest| rest.split_once('=')) {
            env.insert(format!("QPC_{name}"), value.to_owned());
        } else if let Some((flag, value)) = line.strip_prefix("--").and_then(|rest| rest.split_once('=')) {
            let slot = match flag {
                "data-dir" => &mut flags.data_dir,
                "listen" => &mut flags.listen,
                "metrics-listen" => &mut flags.metrics_listen,
                "domain" => &mut flags.domain,
                "log-format" => &mut flags.log_format,
                "log-level" => &mut flags.log_level,
                "registration" => &mut flags.registration,
                other => panic!("unknown test flag {other}"),
            };
            *slot = Some(value.to_owned());
        } else {
            file.push_str(line);
            file.push('\n');
        }
    }
    let file = (!file.trim().is_empty()).then_some(ConfigFile { name: "test.toml", text: &file });
    load(&Sources { file, env: &env, flags: &flags })
}

/// What a key needs set beside it to be valid alone (peers need the
/// federation port), as a line of test input at the lowest layer that
/// reaches everywhere (only flags override the environment).
fn prerequisite(key: &str) -> &'static str {
    match key {
        "federation.peers" => "QPC_FEDERATION_LISTEN=127.0.0.1:7444\n",
        _ => "",
    }
}

/// The effective value of `key` (as a TOML literal) after loading `input`.
fn effective(input: &str, key: &str) -> String {
    let input = format!("{}{input}", prerequisite(key));
    let config = run(&input).unwrap_or_else(|error| panic!("{input:?} should load: {error}"));
    (find(key).unwrap().render)(&config)
}

/// Loading `input` fails with a message containing `expected`.
fn check(input: &str, expected: &str) {
    match run(input) {
        Ok(_) => panic!("{input:?} should be refused with {expected:?}"),
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains(expected), "{input:?}: got {message:?}, expected {expected:?}");
        }
    }
}

/// Three distinct valid values per key, as TOML literals, none the default.
const SAMPLES: &[(&str, [&str; 3])] = &[
    ("server.listen", ["\"10.0.0.1:1\"", "\"[::1]:2\"", "\"0.0.0.0:3\""]),
    ("server.domain", ["\"a.example\"", "\"b.example\"", "\"c.example\""]),
    ("server.data_dir", ["\"/a\"", "\"/b\"", "\"/c\""]),
    ("server.metrics_listen", ["\"127.0.0.1:9100\"", "\"127.0.0.1:9101\"", "\"[::1]:9102\""]),
    ("log.level", ["\"warn\"", "\"debug\"", "\"info,qpc_server=trace\""]),
    ("log.format", ["\"json\"", "\"pretty\"", "\"json\""]),
    ("timeouts.rpc", ["\"1s\"", "\"2s\"", "\"3s\""]),
    ("timeouts.storage", ["\"1s\"", "\"2s\"", "\"3s\""]),
    ("timeouts.shutdown_grace", ["\"0s\"", "\"2s\"", "\"3m\""]),
    ("delivery.retention", ["\"1h\"", "\"7days\"", "\"365days\""]),
    ("registration.policy", ["\"invite\"", "\"closed\"", "\"invite\""]),
    ("transport.max_concurrent_rpcs", ["1", "2", "4096"]),
    ("transport.stream_receive_window", ["1024", "2048", "4096"]),
    ("transport.connection_receive_window", ["16777216", "33554432", "67108864"]),
    ("transport.idle_timeout", ["\"1m\"", "\"2m\"", "\"1h\""]),
    ("transport.keep_alive", ["\"1s\"", "\"2s\"", "\"500ms\""]),
    ("connections.max_pending_handshakes", ["2000", "3000", "4000"]),
    ("connections.incoming_buffer_bytes", ["65536", "131072", "1048576"]),
    ("connections.udp_receive_buffer_bytes", ["65536", "131072", "4194304"]),
    ("connections.retry_above_pending", ["0", "1", "2"]),
    ("connections.per_address", ["1", "2", "3"]),
    ("connections.stream_read_timeout", ["\"1s\"", "\"2s\"", "\"3s\""]),
    ("delivery.max_queue_entries", ["100", "5000", "100000000"]),
    ("delivery.max_send_burst", ["0", "1", "64"]),
    ("devices.max_per_account", ["1", "2", "64"]),
    ("devices.link_code_ttl", ["\"1s\"", "\"5m\"", "\"1h\""]),
    ("rate_limits.register_per_address.burst", ["1", "2", "3"]),
    ("rate_limits.register_per_address.period", ["\"1s\"", "\"2m\"", "\"30days\""]),
    ("rate_limits.link_per_address.burst", ["1", "2", "3"]),
    ("rate_limits.link_per_address.period", ["\"1s\"", "\"2s\"", "\"3s\""]),
    ("rate_limits.key_package_fetch_per_requester.burst", ["1", "2", "1000000"]),
    ("rate_limits.key_package_fetch_per_requester.period", ["\"1s\"", "\"2s\"", "\"3s\""]),
    ("rate_limits.key_package_fetch_per_target.burst", ["1", "2", "3"]),
    ("rate_limits.key_package_fetch_per_target.period", ["\"1s\"", "\"2s\"", "\"3s\""]),
    ("rate_limits.send_per_account.burst", ["1", "2", "3"]),
    ("rate_limits.send_per_account.period", ["\"1ms\"", "\"2s\"", "\"3s\""]),
    ("rate_limits.commit_per_account.burst", ["1", "2", "3"]),
    ("rate_limits.commit_per_account.period", ["\"1ms\"", "\"2s\"", "\"3s\""]),
    ("rate_limits.last_resort_per_pair.burst", ["1", "2", "3"]),
    ("rate_limits.last_resort_per_pair.period", ["\"1s\"", "\"2s\"", "\"3s\""]),
    ("rate_limits.create_group_per_account.burst", ["1", "2", "3"]),
    ("rate_limits.create_group_per_account.period", ["\"1ms\"", "\"2s\"", "\"3s\""]),
    ("rate_limits.key_package_claim_per_peer.burst", ["1", "2", "3"]),
    ("rate_limits.key_package_claim_per_peer.period", ["\"1s\"", "\"2s\"", "\"3s\""]),
    ("federation.listen", ["\"0.0.0.0:7444\"", "\"[::1]:7445\"", "\"127.0.0.1:0\""]),
    (
        "federation.peers",
        [
            r#"[{ domain = "b.example", address = "192.0.2.7:7444", fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"] }]"#,
            r#"[{ domain = "c.example", address = "c.example:7444", fingerprints = ["sha256:1111111111111111111111111111111111111111111111111111111111111111", "sha256:2222222222222222222222222222222222222222222222222222222222222222"] }]"#,
            r#"[{ domain = "b.example", address = "[::1]:1", fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"] }, { domain = "d.example", address = "d:2", fingerprints = ["sha256:1111111111111111111111111111111111111111111111111111111111111111"] }]"#,
        ],
    ),
    ("federation.retry_min", ["\"1ms\"", "\"2s\"", "\"3s\""]),
    (
        "plugins",
        [
            r#"[{ path = "/opt/qpc/libqpc_plugin_noop.so" }]"#,
            r#"[{ path = "/opt/qpc/libqpc_plugin_ratelimit.so", sha256 = "00000000000000000000000000000000000000000000000000000000000000aa", config = { burst = 3, names = ["a", "b"] }, on_error = { on_enqueue = "deny" }, deadline = { on_enqueue = "50ms" } }]"#,
            r#"[{ path = "/a.so", source_address = true }, { path = "/b.so", on_error = { on_register = "allow" } }]"#,
        ],
    ),
    ("federation.retry_max", ["\"10s\"", "\"1m\"", "\"1h\""]),
];

/// One `[[plugins]]` table too many.
static SEVENTEEN_PLUGINS: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| "[[plugins]]\npath = \"/x.so\"\n".repeat(17));

/// A TOML literal as an environment variable or flag would spell it.
fn as_text(literal: &str) -> String {
    match toml::from_str::<toml::Table>(&format!("v = {literal}")).unwrap().remove("v").unwrap() {
        toml::Value::String(text) => text,
        other => other.to_string(),
    }
}

/// The file text setting dotted `key` to `literal`.
fn file_line(key: &str, literal: &str) -> String {
    match key.rsplit_once('.') {
        Some((section, name)) => format!("[{section}]\n{name} = {literal}"),
        None => format!("{key} = {literal}"),
    }
}

#[test]
fn samples_cover_every_key_and_names_are_unique() {
    let sampled: BTreeSet<&str> = SAMPLES.iter().map(|(key, _)| *key).collect();
    let keys: BTreeSet<&str> = KEYS.iter().map(|key| key.name).collect();
    assert_eq!(sampled, keys);
    assert_eq!(keys.len(), KEYS.len(), "duplicate key name");
    let envs: BTreeSet<&str> = KEYS.iter().map(|key| key.env).collect();
    assert_eq!(envs.len(), KEYS.len(), "duplicate environment variable");
    assert!(KEYS.iter().all(|key| key.env.starts_with("QPC_")));
}

#[test]
fn every_key_is_settable_by_file_and_environment() {
    for (key, [literal, ..]) in SAMPLES {
        let env = find(key).unwrap().env;
        let wanted = effective(&file_line(key, literal), key);
        assert_ne!(wanted, (find(key).unwrap().render)(&defaults()), "{key}: sample equals default");
        assert_eq!(effective(&format!("{env}={}", as_text(literal)), key), wanted, "{key} via {env}");
    }
}

#[test]
fn each_layer_overrides_the_one_below() {
    for (key, [in_file, in_env, in_flag]) in SAMPLES {
        let spec = find(key).unwrap();
        let file = file_line(key, in_file);
        let env = format!("{}={}", spec.env, as_text(in_env));
        let file_only = effective(&file, key);
        let env_over_file = effective(&format!("{file}\n{env}"), key);
        assert_ne!(file_only, (spec.render)(&defaults()), "{key}: file over defaults");
        assert_ne!(env_over_file, file_only, "{key}: samples must differ");
        assert_eq!(env_over_file, effective(&env, key), "{key}: env over file");
        if let Some(flag) = spec.flag {
            let flag_line = format!("{flag}={}", as_text(in_flag));
            let all = effective(&format!("{file}\n{env}\n{flag_line}"), key);
            assert_ne!(all, env_over_file, "{key}: samples must differ");
            assert_eq!(all, effective(&flag_line, key), "{key}: flag over env");
        }
    }
    // Spot checks with literal values, so the loop above is not vacuous.
    assert_eq!(effective("[timeouts]\nrpc = \"3s\"\nQPC_RPC_TIMEOUT=4s", "timeouts.rpc"), "\"4s\"");
    assert_eq!(effective("QPC_LISTEN=10.0.0.1:1\n--listen=10.0.0.2:2", "server.listen"), "\"10.0.0.2:2\"");
    assert_eq!(effective("[server]\nlisten = \"10.0.0.1:1\"", "server.listen"), "\"10.0.0.1:1\"");
}

#[test]
fn every_flag_in_the_table_reaches_the_loader() {
    let all = Flags {
        data_dir: Some(String::new()),
        listen: Some(String::new()),
        metrics_listen: Some(String::new()),
        domain: Some(String::new()),
        log_format: Some(String::new()),
        log_level: Some(String::new()),
        registration: Some(String::new()),
    };
    let flagged: Vec<&str> = KEYS.iter().filter_map(|key| key.flag).collect();
    assert_eq!(flagged.len(), 7);
    for flag in flagged {
        assert!(all.value_of(flag).is_some(), "{flag} is not read from Flags");
    }
}

#[test]
fn accepted_edge_values() {
    for (input, key, value) in [
        ("QPC_RPC_TIMEOUT=", "timeouts.rpc", "\"10s\""),
        ("[server]\nmetrics_listen = \"off\"", "server.metrics_listen", "\"off\""),
        ("QPC_METRICS_LISTEN=127.0.0.1:9100\n--metrics-listen=off", "server.metrics_listen", "\"off\""),
        ("[server]\ndomain = \"Chat.Example.ORG\"", "server.domain", "\"chat.example.org\""),
        ("[connections]\nincoming_buffer_bytes = 1_048_576", "connections.incoming_buffer_bytes", "1048576"),
        ("QPC_LOG_FORMAT=JSON", "log.format", "\"json\""),
        ("[transport]\nidle_timeout = \"1m\"\nkeep_alive = \"59s\"", "transport.keep_alive", "\"59s\""),
    ] {
        assert_eq!(effective(input, key), value, "{input:?}");
    }
}

#[test]
fn every_validation_error_names_key_value_and_what_is_allowed() {
    let like = "expected a duration like \"10s\"";
    let cases: &[(&str, &str)] = &[
        // file structure
        ("[server", "test.toml is not valid TOML"),
        ("[server]\nlisten = \"1.2.3.4:1\"\nlisten = \"1.2.3.4:2\"", "not valid TOML"),
        ("foo = 1", "unknown key \"foo\" in test.toml"),
        ("[transport]\nfoo = 1", "unknown key \"transport.foo\""),
        ("[nope]\nx = 1", "unknown key \"nope\""),
        ("[rate_limits.nope]\nburst = 1", "unknown key \"rate_limits.nope\""),
        ("[rate_limits.send_per_account]\nburst = 1\nrate = 2", "unknown key \"rate_limits.send_per_account.rate\""),
        ("transport = 5", "transport = 5 (in test.toml): expected a table [transport]"),
        ("rate_limits = \"x\"", "rate_limits = \"x\" (in test.toml): expected a table [rate_limits]"),
        // [server]
        ("[server]\nlisten = \"nope\"", "server.listen = \"nope\" (in test.toml): expected an IP address and port"),
        ("[server]\nlisten = 7443", "server.listen = 7443 (in test.toml): expected an IP address and port"),
        ("[server]\ndomain = \"a b\"", "server.domain = \"a b\" (in test.toml): expected a DNS name"),
        ("[server]\ndomain = \"\"", "server.domain = \"\" (in test.toml): expected a DNS name"),
        ("[server]\ndomain = \"-x.org\"", "expected a DNS name"),
        ("[server]\ndomain = \"a..org\"", "expected a DNS name"),
        ("--domain=alice@example.org", "server.domain = \"alice@example.org\" (from --domain): expected a DNS name"),
        ("[server]\ndata_dir = \"\"", "server.data_dir = \"\" (in test.toml): expected a directory path"),
        ("[server]\ndata_dir = 5", "server.data_dir = 5 (in test.toml): expected a directory path"),
        ("[server]\nmetrics_listen = \"on\"", "server.metrics_listen = \"on\" (in test.toml): expected an IP address"),
        ("--metrics-listen=9100", "server.metrics_listen = \"9100\" (from --metrics-listen): expected an IP"),
        // [log]
        ("[log]\nlevel = \"verbose\"", "log.level = \"verbose\" (in test.toml): expected a level (trace"),
        ("[log]\nlevel = \"\"", "log.level = \"\" (in test.toml): expected a level"),
        ("QPC_LOG_LEVEL=info,qpc_server=loud", "log.level = \"info,qpc_server=loud\" (from QPC_LOG_LEVEL)"),
        ("[log]\nformat = \"xml\"", "log.format = \"xml\" (in test.toml): expected \"pretty\" or \"json\""),
        ("--log-format=text", "log.format = \"text\" (from --log-format): expected \"pretty\" or \"json\""),
        // [timeouts]
        ("[timeouts]\nrpc = \"ten\"", "timeouts.rpc = \"ten\" (in test.toml): expected a duration like \"10s\""),
        ("QPC_RPC_TIMEOUT=ten", "timeouts.rpc = \"ten\" (from QPC_RPC_TIMEOUT): expected a duration like \"10s\""),
        ("[timeouts]\nrpc = 10", like),
        ("[timeouts]\nrpc = \"0s\"", "timeouts.rpc = \"0s\" (in test.toml): expected a duration from 1ms to 1h"),
        ("[timeouts]\nrpc = \"2h\"", "expected a duration from 1ms to 1h"),
        ("[timeouts]\nstorage = \"0s\"", "timeouts.storage = \"0s\" (in test.toml): expected a duration from 1ms"),
        ("QPC_STORAGE_TIMEOUT=soon", "timeouts.storage = \"soon\" (from QPC_STORAGE_TIMEOUT): expected a duration"),
        ("[timeouts]\nshutdown_grace = \"-1s\"", "timeouts.shutdown_grace = \"-1s\" (in test.toml): expected a duration"),
        ("QPC_SHUTDOWN_GRACE=2h", "timeouts.shutdown_grace = \"2h\" (from QPC_SHUTDOWN_GRACE): expected a duration from 0s to 1h"),
        // [delivery]
        ("[delivery]\nretention = \"59m\"", "delivery.retention = \"59m\" (in test.toml): expected a duration from 1h to 10years"),
        ("QPC_DELIVERY_RETENTION=forever", "delivery.retention = \"forever\" (from QPC_DELIVERY_RETENTION): expected a duration like \"10s\""),
        // [registration]
        ("[registration]\npolicy = \"maybe\"", "registration.policy = \"maybe\" (in test.toml): expected \"open\", \"invite\" or \"closed\""),
        ("QPC_REGISTRATION=invites", "registration.policy = \"invites\" (from QPC_REGISTRATION): expected \"open\""),
        ("--registration=", "registration.policy = \"\" (from --registration): expected \"open\""),
        // [transport]
        ("[transport]\nmax_concurrent_rpcs = 0", "transport.max_concurrent_rpcs = 0 (in test.toml): expected an integer from 1 to 4096"),
        ("[transport]\nmax_concurrent_rpcs = 5000", "expected an integer from 1 to 4096"),
        ("[transport]\nmax_concurrent_rpcs = -1", "transport.max_concurrent_rpcs = -1 (in test.toml): expected an integer"),
        ("[transport]\nmax_concurrent_rpcs = \"64\"", "transport.max_concurrent_rpcs = \"64\" (in test.toml): expected an integer"),
        ("[transport]\nmax_concurrent_rpcs = 1.5", "transport.max_concurrent_rpcs = 1.5 (in test.toml): expected an integer"),
        ("QPC_TRANSPORT_MAX_CONCURRENT_RPCS=lots", "(from QPC_TRANSPORT_MAX_CONCURRENT_RPCS): expected an integer from 1 to 4096"),
        ("[transport]\nstream_receive_window = 0", "transport.stream_receive_window = 0 (in test.toml): expected a number of bytes from 1024 to 268435456"),
        ("[transport]\nstream_receive_window = 268435457", "expected a number of bytes from 1024 to 268435456"),
        ("[transport]\nconnection_receive_window = 0", "transport.connection_receive_window = 0 (in test.toml): expected a number of bytes"),
        ("[transport]\nconnection_receive_window = 4294967296", "expected a number of bytes from 1024 to 268435456"),
        ("[transport]\nidle_timeout = \"500ms\"", "transport.idle_timeout = \"500ms\" (in test.toml): expected a duration from 1s to 1h"),
        ("[transport]\nkeep_alive = \"0s\"", "transport.keep_alive = \"0s\" (in test.toml): expected a duration from 1ms to 1h"),
        ("[transport]\nkeep_alive = \"30s\"", "transport.keep_alive = \"30s\": must be below transport.idle_timeout (\"30s\")"),
        ("[transport]\nidle_timeout = \"2s\"\nQPC_TRANSPORT_KEEP_ALIVE=3s", "transport.keep_alive = \"3s\": must be below transport.idle_timeout (\"2s\")"),
        ("[transport]\nstream_receive_window = 2048\nconnection_receive_window = 1024", "transport.stream_receive_window = 2048: must not exceed transport.connection_receive_window (1024)"),
        // [connections]
        ("[connections]\nmax_pending_handshakes = 0", "connections.max_pending_handshakes = 0 (in test.toml): expected an integer from 1 to 1000000"),
        ("[connections]\nincoming_buffer_bytes = 1", "connections.incoming_buffer_bytes = 1 (in test.toml): expected a number of bytes from 65536"),
        ("[connections]\nretry_above_pending = 2000000", "connections.retry_above_pending = 2000000 (in test.toml): expected an integer from 0 to 1000000"),
        ("[connections]\nretry_above_pending = 2000", "connections.retry_above_pending = 2000: must not exceed connections.max_pending_handshakes (1024)"),
        ("[connections]\nper_address = 0", "connections.per_address = 0 (in test.toml): expected an integer from 1 to 1000000"),
        ("[connections]\nstream_read_timeout = \"0s\"", "connections.stream_read_timeout = \"0s\" (in test.toml): expected a duration from 1ms to 1h"),
        // [rate_limits.*]
        ("[rate_limits.register_per_address]\nburst = 0", "rate_limits.register_per_address.burst = 0 (in test.toml): expected an integer from 1 to 1000000"),
        ("[rate_limits.key_package_fetch_per_requester]\nburst = 0", "rate_limits.key_package_fetch_per_requester.burst = 0 (in test.toml): expected an integer from 1"),
        ("[rate_limits.key_package_fetch_per_target]\nburst = 1000001", "rate_limits.key_package_fetch_per_target.burst = 1000001 (in test.toml): expected an integer from 1 to 1000000"),
        ("QPC_RATE_LIMITS_SEND_PER_ACCOUNT_BURST=0", "rate_limits.send_per_account.burst = \"0\" (from QPC_RATE_LIMITS_SEND_PER_ACCOUNT_BURST): expected an integer from 1"),
        ("[rate_limits.register_per_address]\nperiod = \"0s\"", "rate_limits.register_per_address.period = \"0s\" (in test.toml): expected a duration from 1ms to 30days"),
        ("[rate_limits.send_per_account]\nperiod = \"1y\"", "rate_limits.send_per_account.period = \"1y\" (in test.toml): expected a duration from 1ms to 30days"),
        ("[rate_limits.key_package_fetch_per_target]\nperiod = 60", "rate_limits.key_package_fetch_per_target.period = 60 (in test.toml): expected a duration like \"10s\""),
        // [[plugins]]
        ("plugins = 5", "plugins = 5 (in test.toml): expected an array of tables { path = "),
        ("[[plugins]]\npath = \"libx.so\"", "plugin 1: path: expected an absolute path"),
        ("[[plugins]]\nsha256 = \"00\"", "plugin 1: path is missing"),
        ("[[plugins]]\npath = \"/x.so\"\nsha256 = \"00\"", "plugin 1: sha256: expected 64 hex digits"),
        ("[[plugins]]\npath = \"/x.so\"\nconfig = 5", "plugin 1: config: expected a table"),
        ("[[plugins]]\npath = \"/x.so\"\nnope = 5", "plugin 1: unknown key \"nope\" (a plugin has path, sha256, config"),
        ("[[plugins]]\npath = \"/x.so\"\non_error = { on_enqueue = \"maybe\" }", "on_error.on_enqueue: expected \"allow\" or \"deny\""),
        ("[[plugins]]\npath = \"/x.so\"\non_error = { on_stored = \"deny\" }", "on_error.on_stored: not a gate (gates: on_register, on_login, on_group_create, on_enqueue)"),
        ("[[plugins]]\npath = \"/x.so\"\ndeadline = { on_enqueue = \"1m\" }", "deadline.on_enqueue: expected a duration from 1ms to 10s"),
        ("[[plugins]]\npath = \"/x.so\"\nsource_address = \"yes\"", "source_address: expected true or false"),
        ("[[plugins]]\npath = \"/x.so\"\n[[plugins]]\npath = \"/y.so\"\ndeadline = 3", "plugin 2: deadline: expected a table of gates"),
        ("[[plugins]]\npath = \"/x.so\"\nconfig = { since = 2026-12-07 }", "plugin 1: config.since: a date; write it as a string"),
        ("[[plugins]]\npath = \"/x.so\"\nconfig = { limits = [1.0, nan] }", "plugin 1: config.limits[1]: NaN has no JSON form"),
        ("QPC_PLUGINS=/x.so", "plugins = \"/x.so\" (from QPC_PLUGINS): expected an array of tables"),
        (&*SEVENTEEN_PLUGINS, "at most 16 plugins"),
        // [federation]
        ("[federation]\nlisten = \"nope\"", "federation.listen = \"nope\" (in test.toml): expected an IP address and port"),
        ("[federation]\nretry_min = \"0s\"", "federation.retry_min = \"0s\" (in test.toml): expected a duration from 1ms to 1h"),
        ("[federation]\nretry_min = \"1m\"", "federation.retry_min = \"1m\": must not exceed federation.retry_max (\"30s\")"),
        ("[federation]\npeers = 5", "federation.peers = 5 (in test.toml): expected an array of tables"),
        ("QPC_FEDERATION_PEERS=b.example", "federation.peers = \"b.example\" (from QPC_FEDERATION_PEERS): expected an array"),
        (r#"[[federation.peers]]
domain = "b.example"
address = "b:1""#, "peer 1: fingerprints is missing"),
        (r#"[[federation.peers]]
address = "b:1"
fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]"#, "peer 1: domain is missing"),
        (r#"[[federation.peers]]
domain = "b x"
address = "b:1"
fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]"#, "peer 1: domain: expected a DNS name"),
        (r#"[[federation.peers]]
domain = "b.example"
address = "b"
fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]"#, "peer 1: address: expected \"host:port\""),
        (r#"[[federation.peers]]
domain = "b.example"
address = "b:1"
fingerprints = ["sha256:zz"]"#, "peer 1: fingerprints: expected \"sha256:<64 hex digits>\""),
        (r#"[[federation.peers]]
domain = "b.example"
address = "b:1"
fingerprints = []"#, "peer 1: fingerprints: expected 1 or 2 pins"),
        (r#"[[federation.peers]]
domain = "b.example"
address = "b:1"
port = 1
fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]"#, "peer 1: unknown key \"port\""),
        (r#"[federation]
listen = "127.0.0.1:1"
[[federation.peers]]
domain = "b.example"
address = "b:1"
fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
[[federation.peers]]
domain = "b.example"
address = "c:1"
fingerprints = ["sha256:1111111111111111111111111111111111111111111111111111111111111111"]"#, "peer 2: domain b.example is listed twice"),
        (r#"[federation]
listen = "127.0.0.1:1"
[[federation.peers]]
domain = "b.example"
address = "b:1"
fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
[[federation.peers]]
domain = "c.example"
address = "c:1"
fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]"#, "a fingerprint pins one peer, but this one is listed for b.example and c.example"),
        (r#"[federation]
listen = "127.0.0.1:1"
[[federation.peers]]
domain = "localhost"
address = "b:1"
fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]"#, "must not list this server's own domain server.domain (\"localhost\")"),
        (r#"[[federation.peers]]
domain = "b.example"
address = "b:1"
fingerprints = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]"#, "federation.listen = \"off\": must be set to use federation.peers"),
        // layers: a bad value is refused even when a higher layer overrides it
        ("[server]\nlisten = \"nope\"\n--listen=127.0.0.1:1", "server.listen = \"nope\" (in test.toml)"),
        ("--listen=127.0.0.1", "server.listen = \"127.0.0.1\" (from --listen): expected an IP address and port"),
        ("QPC_LISTEN=localhost:7443", "server.listen = \"localhost:7443\" (from QPC_LISTEN)"),
        ("QPC_DATA_DIR= \n--data-dir=", "server.data_dir = \"\" (from --data-dir): expected a directory path"),
    ];
    for (input, expected) in cases {
        check(input, expected);
    }
}

#[test]
fn gen_config_parses_back_to_exactly_the_defaults() {
    let text = default_config_toml();
    let file = ConfigFile { name: "gen-config", text: &text };
    let loaded = load(&Sources { file: Some(file), env: &BTreeMap::new(), flags: &Flags::default() }).unwrap();
    assert_eq!(format!("{loaded:?}"), format!("{:?}", defaults()));
    for key in KEYS {
        assert!(text.contains(key.env), "gen-config does not mention {}", key.env);
        assert!(!key.doc.contains('\n'), "{}: doc must be one line", key.name);
    }
}

#[test]
fn every_section_has_a_doc_line() {
    for key in KEYS {
        let section = section_of(key.name);
        assert!(!section_doc(section).is_empty(), "section [{section}] has no doc");
    }
}
