//! Writes the seed corpora under `fuzz/corpus/<target>/` from real encoders:
//! frames, Protobuf requests, a KeyPackage, an application message and a DS
//! group view produced by `MlsClient`, and message content.
//!
//! Run from `fuzz/`: `cargo run --release --example seed_corpus`.
//! Regenerating changes the MLS inputs (fresh keys); commit only when needed.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use prost::Message;
use quicprochat_core::{DsGroupView, Identity, MlsClient, CLASSICAL_CIPHERSUITE};
use quicprochat_proto::{v1, Frame, Method, Status};
use quicprochat_sdk::content::Content;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus directory is writable");
    fs::write(dir.join(name), bytes).expect("corpus file is writable");
}

fn encode_frame(frame: &Frame) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(&mut out).expect("seed frames are within limits");
    out.to_vec()
}

fn selector(method: Method) -> u8 {
    let index = Method::ALL.iter().position(|m| *m == method).expect("method is in ALL");
    u8::try_from(index).expect("fewer than 256 methods")
}

fn with_selector(selector: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(body);
    out
}

fn protocol_seeds(key_package: &[u8]) {
    let send = v1::SendMessageRequest { group_id: Bytes::from(vec![9; 16]), ..Default::default() }.encode_to_vec();
    let upload = v1::UploadKeyPackagesRequest {
        key_packages: vec![Bytes::copy_from_slice(key_package)],
        last_resort: Bytes::new(),
    }
    .encode_to_vec();
    let login =
        v1::LoginRequest { username: "alice".into(), signature: Bytes::from(vec![7; 64]), device_key: Bytes::new() }
            .encode_to_vec();
    let commit =
        v1::SubmitCommitRequest { group_id: Bytes::from(vec![9; 16]), epoch: 3, ..Default::default() }.encode_to_vec();
    let fetch = v1::FetchRequest::default().encode_to_vec();

    let request = encode_frame(&Frame::request(Method::SendMessage, Bytes::from(send.clone())));
    let error =
        encode_frame(&Frame::response(Method::SubmitCommit, Status::StaleEpoch, Bytes::from_static(b"\x18\x05")));
    let push = encode_frame(&Frame::push(Bytes::new()));
    write("frame_decode", "send_message_request", &request);
    write("frame_decode", "stale_epoch_response", &error);
    write("frame_decode", "two_frames", &[request.clone(), push.clone()].concat());
    write("frame_decode", "truncated", &request[..request.len() - 1]);
    write("frame_header", "request", &request[..8]);
    write("frame_header", "error_response", &error[..8]);
    write("frame_header", "push", &push[..8]);

    write("protobuf_requests", "send_message", &with_selector(selector(Method::SendMessage), &send));
    let burst =
        v1::SendMessagesRequest { messages: vec![v1::SendMessageRequest::decode(send.as_slice()).expect("seed")] };
    write("protobuf_requests", "send_messages", &with_selector(selector(Method::SendMessages), &burst.encode_to_vec()));
    write("protobuf_requests", "upload_key_packages", &with_selector(selector(Method::UploadKeyPackages), &upload));
    write("protobuf_requests", "login", &with_selector(selector(Method::Login), &login));
    write("protobuf_requests", "submit_commit", &with_selector(selector(Method::SubmitCommit), &commit));
    write("protobuf_requests", "fetch", &with_selector(selector(Method::Fetch), &fetch));
}

fn main() {
    let dir = std::env::temp_dir().join(format!("qpc-seed-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir is writable");
    let identity = Identity::generate().expect("identity generation works");
    let alice = MlsClient::open_with_ciphersuite(&dir.join("alice.db"), identity, "alice", CLASSICAL_CIPHERSUITE)
        .expect("client opens");
    let key_package = alice.generate_key_packages(1).expect("key package").remove(0);
    let group_id = [9u8; 16];
    let bootstrap = alice.create_group(&group_id).expect("group");
    let application = alice.encrypt(&group_id, b"hello").expect("encrypt");
    let view = DsGroupView::from_group_info(&bootstrap.group_info, &bootstrap.ratchet_tree).expect("view");
    let view_bytes = view.to_bytes().expect("view serialises");

    write("mls_ingress", "key_package", &with_selector(0, &key_package));
    write("mls_ingress", "application", &with_selector(1, &application));
    write("mls_ingress", "group_view", &with_selector(2, &view_bytes));
    // Selector 3 adds the magic and the checksum itself.
    write("mls_ingress", "group_view_body", &with_selector(3, &view_bytes[8..view_bytes.len() - 32]));

    let content = Content { v: 1, id: "00ff10".into(), text: "héllo".into(), sent_at: 1_700_000_000_000 };
    write("client_content", "hello", &content.encode());

    protocol_seeds(&key_package);
    let _ = fs::remove_dir_all(&dir);
}
