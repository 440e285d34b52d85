//! The webhook plugin against a loopback listener.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::Sender;
use std::time::Instant;

use serde_json::{json, Value};

use super::*;

/// The bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(10);

/// One request as the loopback endpoint read it.
#[derive(Debug)]
struct Request {
    head: String,
    body: String,
}

/// An HTTP endpoint on 127.0.0.1:0 answering `200 OK` to every request
/// and passing each on; returns its port.
fn endpoint() -> (u16, Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (requests, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let requests = requests.clone();
            std::thread::spawn(move || serve(stream, &requests));
        }
    });
    (port, received)
}

fn serve(stream: TcpStream, requests: &Sender<Request>) {
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut head = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            head.push_str(&line);
            line.clear();
        }
        if head.is_empty() {
            return;
        }
        let length = head
            .lines()
            .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|n| n.trim().to_owned()))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("the body");
        let body = String::from_utf8(body).expect("UTF-8");
        writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").expect("answer");
        if requests.send(Request { head, body }).is_err() {
            return;
        }
    }
}

fn body_without_time(request: &Request) -> Value {
    let mut body: Value = serde_json::from_str(&request.body).expect("a JSON body");
    let ts_ms = body.as_object_mut().and_then(|object| object.remove("ts_ms"));
    assert!(ts_ms.and_then(|ts| ts.as_u64()).is_some_and(|ts| ts > 0), "a time stamp in ms");
    body
}

fn register(webhook: &Webhook, username: &str) {
    let event = RegisterInfo { username, key_fingerprint: &[1; 32], source_address: "", invite_used: false };
    assert_eq!(webhook.on_register(&event), Ok(GateAnswer::Allow));
}

#[test]
fn configured_events_are_posted_as_json_to_the_url() {
    let (port, requests) = endpoint();
    let config = json!({ "url": format!("http://127.0.0.1:{port}/qpc-events"), "events": ["stored", "commit"] });
    let webhook = Webhook::load(&config.to_string(), &Host::get()).expect("loads");
    register(&webhook, "alice");
    webhook.on_stored(&StoredInfo {
        kind: quicprochat_plugin_api::sdk::EntryKind::Application,
        sender: "alice",
        group_id: &[0xab, 1],
        message_id: &[2; 4],
        payload_len: 321,
        epoch: 4,
        stored_at_ms: 1,
        recipients: vec!["bob"],
    });
    webhook.on_commit(&CommitInfo {
        committer: "bob",
        group_id: &[0xab, 1],
        new_epoch: 5,
        added: vec!["carol"],
        removed: vec!["alice"],
    });

    let stored = requests.recv_timeout(WAIT).expect("a POST for stored (register is not configured)");
    assert!(stored.head.starts_with("POST /qpc-events HTTP/1.1\r\n"), "{}", stored.head);
    assert!(stored.head.to_ascii_lowercase().contains("content-type: application/json"), "{}", stored.head);
    assert_eq!(
        body_without_time(&stored),
        json!({ "event": "stored", "sender": "alice", "group": "ab01", "message": "02020202", "size": 321,
                "epoch": 4, "recipients": ["bob"] })
    );
    let commit = requests.recv_timeout(WAIT).expect("a POST for commit");
    assert_eq!(
        body_without_time(&commit),
        json!({ "event": "commit", "committer": "bob", "group": "ab01", "epoch": 5, "added": ["carol"],
                "removed": ["alice"] })
    );
    assert_eq!(webhook.dropped(), 0);
    webhook.on_shutdown();
}

/// A sink that passes each document on, then waits until `release` is
/// sent to or dropped.
fn gated_sink() -> (Sink, Receiver<String>, SyncSender<()>) {
    let (seen_by_sink, seen) = mpsc::channel();
    let (release, released) = mpsc::sync_channel::<()>(0);
    let sink: Sink = Box::new(move |body: &str| {
        let _ = seen_by_sink.send(body.to_owned());
        let _ = released.recv();
        Ok(())
    });
    (sink, seen, release)
}

fn settings(queue_capacity: usize) -> Settings {
    let config = json!({ "url": "http://127.0.0.1:9/", "queue_capacity": queue_capacity });
    Settings::parse(&config.to_string()).expect("valid config")
}

fn user_of(document: &str) -> String {
    let document: Value = serde_json::from_str(document).expect("JSON");
    document["user"].as_str().expect("a register document").to_owned()
}

#[test]
fn a_full_queue_drops_and_counts_and_shutdown_drains_what_was_queued() {
    let (sink, seen, release) = gated_sink();
    let webhook = Webhook::start(&settings(1), sink, WAIT, Host::get()).expect("starts");
    register(&webhook, "alice");
    let first = seen.recv_timeout(WAIT).expect("the worker took alice's and waits");
    assert_eq!(user_of(&first), "alice");
    register(&webhook, "bob");
    register(&webhook, "carol");
    assert_eq!(webhook.dropped(), 1, "bob's filled the queue, carol's was dropped");

    drop(release);
    webhook.on_shutdown();
    let drained: Vec<String> = seen.try_iter().map(|document| user_of(&document)).collect();
    assert_eq!(drained, ["bob"], "shutdown returned after the queue was sent");
}

#[test]
fn shutdown_waits_a_bounded_time_then_gives_up_what_is_left() {
    let (sink, seen, release) = gated_sink();
    let webhook = Webhook::start(&settings(8), sink, Duration::from_millis(50), Host::get()).expect("starts");
    register(&webhook, "alice");
    seen.recv_timeout(WAIT).expect("the worker took alice's and waits");
    register(&webhook, "bob");
    let started = Instant::now();
    webhook.on_shutdown();
    assert!(started.elapsed() < WAIT, "on_shutdown returned while the endpoint hung");
    drop(release);
    assert_eq!(seen.recv_timeout(WAIT), Err(RecvTimeoutError::Disconnected), "bob's was given up");
}

#[test]
fn an_endpoint_that_cannot_be_reached_is_an_error_of_the_sink() {
    let closed_port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
    let config = json!({ "url": format!("http://127.0.0.1:{closed_port}/"), "timeout_ms": 2000 });
    let settings = Settings::parse(&config.to_string()).expect("valid config");
    assert!(http_sink(&settings)("{}").is_err());
}

#[test]
fn bad_configs_are_refused_naming_the_key() {
    let refused = |config: Value| match Settings::parse(&config.to_string()) {
        Ok(_) => panic!("accepted {config}"),
        Err(error) => error,
    };
    let https = refused(json!({ "url": "https://hooks.example/qpc" }));
    assert!(https.starts_with("webhook: config key `url` is https, but TLS is not built into"), "{https}");
    assert_eq!(refused(json!({ "url": "ftp://host/x" })), "webhook: config key `url` must start with http://");
    assert!(refused(json!({ "url": "not a url" })).starts_with("webhook: config key `url` is not a url"));
    let event = refused(json!({ "url": "http://h/", "events": ["stored", "login"] }));
    assert!(event.contains("key `events[1]`: unknown variant `login`"), "{event}");
    assert!(refused(json!({ "url": "http://h/", "events": [] })).contains("`events` must name at least one"));
    assert!(refused(json!({ "url": "http://h/", "queue_capacity": 0 })).contains("`queue_capacity`"));
    assert!(refused(json!({ "url": "http://h/", "retries": 3 })).contains("unknown field `retries`"));
    assert!(refused(json!({})).contains("missing field `url`"));
    let defaults = Settings::parse(r#"{"url": "http://127.0.0.1:8080/hook"}"#).expect("valid");
    assert_eq!(defaults.events, ALL_EVENTS);
}
