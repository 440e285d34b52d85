//! Storage faults on a real filesystem: the data dir of a real `qpc-server`
//! on a small tmpfs that fills up. Writes are refused with a retryable
//! `UNAVAILABLE`, nothing acknowledged is missing, reads keep working, and
//! the server takes writes again once space returns (no restart). Then the
//! filesystem is remounted read-only: the server refuses to start, clearly. Mounting needs root (CI runs as root); elsewhere the test
//! says it was skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use quicprochat_core::MlsClient;
use quicprochat_proto::v1;
use quicprochat_proto::{Method, Status};
use quicprochat_rpc::RpcClient;

use crate::harness::{assert_integrity, group_of_two, queued_message_ids, GroupOfTwo, TestServer, WAIT};
use crate::process::ServerProcess;

const GROUP: [u8; 16] = [0xd1; 16];

/// A tmpfs mounted on a temporary directory, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        let options = format!("size={size},mode=0700");
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(&path).status();
        match mounted {
            Ok(status) if status.success() => Some(Tmpfs { _dir: dir, path }),
            _ => None,
        }
    }

    fn remount(&self, read_only: bool) {
        let options = if read_only { "remount,ro" } else { "remount,rw" };
        let status = Command::new("mount").args(["-o", options]).arg(&self.path).status().expect("mount");
        assert!(status.success(), "mount -o {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

/// Starts `qpc-server` on `data` expecting it to refuse; returns its stderr.
fn start_refused(data: &Path) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_qpc-server"))
        .args(["--data-dir", &data.display().to_string(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qpc-server");
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    let output = done_rx.recv_timeout(WAIT).expect("qpc-server exits on a read-only data dir").expect("output");
    assert!(!output.status.success(), "qpc-server started on a read-only data dir");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn send(
    rpc: &RpcClient,
    mls: &MlsClient,
    id: &str,
) -> Result<v1::SendMessageResponse, quicprochat_rpc::RpcError> {
    let request = v1::SendMessageRequest {
        group_id: GROUP.to_vec().into(),
        message_id: id.as_bytes().to_vec().into(),
        ciphertext: mls.encrypt(&GROUP, &[b'x'; 4096]).expect("encrypt").into(),
    };
    rpc.call(Method::SendMessage, &request).await
}

/// Sends until one is refused; returns the acknowledged ids and the refusal.
async fn send_until_refused(
    rpc: &RpcClient,
    mls: &MlsClient,
    prefix: &str,
) -> (Vec<Vec<u8>>, quicprochat_rpc::RpcError) {
    let mut acked = Vec::new();
    for n in 0..10_000 {
        let id = format!("{prefix}-{n}");
        match send(rpc, mls, &id).await {
            Ok(_) => acked.push(id.into_bytes()),
            Err(error) => return (acked, error),
        }
    }
    panic!("10000 sends of 4 KiB fit on a full 8 MiB filesystem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_refuses_writes_loses_nothing_and_recovers_read_only_is_refused_at_start() {
    quicprochat_rpc::install_crypto_provider();
    let Some(tmpfs) = Tmpfs::mount("8m") else {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = tmpfs.path.join("data");
    let server = ServerProcess::start(&data);
    let GroupOfTwo { alice_rpc, alice, alice_mls, bob_rpc, bob } = group_of_two(&server, scratch.path(), &GROUP).await;

    let mut acked = Vec::new();
    for n in 0..20 {
        let id = format!("before-{n}");
        send(&alice_rpc, &alice_mls, &id).await.expect("room on the disk");
        acked.push(id.into_bytes());
    }

    // Disk full.
    let filler = tmpfs.path.join("filler");
    fill(&filler);
    let (during, refusal) = send_until_refused(&alice_rpc, &alice_mls, "full").await;
    acked.extend(during);
    assert_eq!(refusal.status(), Some(Status::Unavailable), "{refusal}");
    assert!(refusal.is_retryable());
    assert!(refusal.to_string().contains("full or read-only"), "a clear message: {refusal}");
    let queued = queued_message_ids(&bob_rpc).await;
    assert!(acked.iter().all(|id| queued.contains(id)), "every acknowledged send is stored");
    let _: v1::PingResponse = alice_rpc.call(Method::Ping, &v1::PingRequest {}).await.expect("still serving");

    // Space returns: the same connection can write again, no restart.
    std::fs::remove_file(&filler).expect("free space");
    let retried = format!("full-{}", acked.len() - 20);
    send(&alice_rpc, &alice_mls, &retried).await.expect("the refused send, retried, is stored");
    acked.push(retried.into_bytes());

    // A read-only data dir (Linux refuses to remount a filesystem read-only
    // while the server holds the database open for writing, so this is
    // checked at start-up): the server exits with a clear error.
    drop(server);
    tmpfs.remount(true);
    let refused = start_refused(&data);
    tmpfs.remount(false);
    assert!(refused.contains("read-only"), "a clear start-up error: {refused}");
    eprintln!("read-only data dir at start-up: {}", refused.trim());

    let server = ServerProcess::start(&data);
    let bob_rpc = server.login("bob", &bob).await;
    let alice_rpc = server.login("alice", &alice).await;
    send(&alice_rpc, &alice_mls, "after-ro").await.expect("writable again");
    acked.push(b"after-ro".to_vec());

    let queued = queued_message_ids(&bob_rpc).await;
    let missing = acked.iter().filter(|id| !queued.contains(*id)).count();
    assert_eq!(missing, 0, "acknowledged sends missing after disk faults");
    drop(server);
    assert_integrity(&data, "after disk faults");
    eprintln!("disk faults: {} sends acknowledged around a full disk and a read-only restart, 0 missing", acked.len());
}
