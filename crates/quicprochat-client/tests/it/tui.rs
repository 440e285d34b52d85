//! Smoke test of `qpc tui`: the real binary in a pseudo-terminal against a
//! real `qpc-server`, typed at like a person would.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

use crate::process::{alice_and_bob_in_team, qpc_bin, qpc_ok, WAIT};

/// A `qpc tui` running in a pseudo-terminal.
struct TuiSession {
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    output: Receiver<Vec<u8>>,
    /// Everything the TUI wrote so far, escape sequences removed.
    screen_text: String,
    /// Everything the TUI wrote so far, raw.
    raw: Vec<u8>,
    _master: Box<dyn MasterPty + Send>,
}

impl TuiSession {
    fn start(profile: &Path) -> TuiSession {
        let pty = native_pty_system()
            .openpty(PtySize { rows: 24, cols: 100, pixel_width: 0, pixel_height: 0 })
            .expect("open a pseudo-terminal");
        let mut command = CommandBuilder::new(qpc_bin());
        command.arg("--profile");
        command.arg(profile);
        command.arg("tui");
        command.env("QPC_LOG", "error");
        command.env("TERM", "xterm-256color");
        let child = pty.slave.spawn_command(command).expect("spawn qpc tui");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().expect("pty reader");
        let writer = pty.master.take_writer().expect("pty writer");
        let (chunks_tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = reader.read(&mut buffer) {
                if read == 0 || chunks_tx.send(buffer[..read].to_vec()).is_err() {
                    return;
                }
            }
        });
        TuiSession { child, writer, output, screen_text: String::new(), raw: Vec::new(), _master: pty.master }
    }

    /// Reads the TUI's output until `needle` appears in it (after `from`,
    /// a position in the text), or fails after [`WAIT`]. Returns where it ends.
    fn wait_for(&mut self, needle: &str, from: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(found) = self.screen_text.get(from..).and_then(|text| text.find(needle)) {
                return from + found + needle.len();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => {
                    self.raw.extend_from_slice(&chunk);
                    self.screen_text = strip_escapes(&String::from_utf8_lossy(&self.raw));
                }
                Err(_) => panic!("{needle:?} did not appear within {WAIT:?}; the TUI showed:\n{}", self.screen_text),
            }
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).expect("write to the pty");
        self.writer.flush().expect("flush the pty");
    }

    /// Waits for the process to exit; fails after [`WAIT`].
    fn wait_exit(&mut self) -> portable_pty::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll qpc tui") {
                // Collect the rest of the output (the terminal restore sequences).
                while let Ok(chunk) = self.output.recv_timeout(Duration::from_millis(500)) {
                    self.raw.extend_from_slice(&chunk);
                }
                return status;
            }
            assert!(Instant::now() < deadline, "qpc tui did not exit; it showed:\n{}", self.screen_text);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TuiSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Removes CSI (`ESC [ ... final`) and OSC (`ESC ] ... BEL`) sequences.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                for c in chars.by_ref() {
                    if c == '\u{7}' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn tui_sends_and_receives_in_a_pseudo_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, alice, bob) = alice_and_bob_in_team(dir.path());

    let mut tui = TuiSession::start(&alice);
    // Words without spaces: ratatui redraws only changed cells, so a space
    // over a blank cell may be skipped in the output stream.
    let at = tui.wait_for("connected", 0);
    let at = tui.wait_for("team", at);
    tui.type_keys("hello-from-the-tui\r");
    let at = tui.wait_for("✓", at); // acknowledged by the server
    let received = qpc_ok(&bob, &["--json", "recv", "--wait", "10"]);
    let message: serde_json::Value = serde_json::from_str(received.trim()).expect("one JSON message");
    assert_eq!((message["group"].as_str(), message["from"].as_str()), (Some("team"), Some("alice")));
    assert_eq!(message["text"], "hello-from-the-tui");

    // Incoming messages appear without any key press.
    qpc_ok(&bob, &["send", "team", "reply-from-bob"]);
    let at = tui.wait_for("reply-from-bob", at);
    // Commands: an unknown one is a system line, not a crash.
    tui.type_keys("/frobnicate\r");
    tui.wait_for("unknown", at);
    tui.type_keys("/quit\r");
    assert!(tui.wait_exit().success(), "/quit exits with status 0");
    let raw = String::from_utf8_lossy(&tui.raw);
    assert!(raw.contains("\u{1b}[?1049l"), "the alternate screen is left on exit");
    drop(tui);

    // A second session shows the history, opens a direct conversation with
    // its first message, shows a safety number, and quits on Ctrl-C.
    let mut tui = TuiSession::start(&alice);
    let at = tui.wait_for("hello-from-the-tui", 0);
    let at = tui.wait_for("reply-from-bob", at);
    tui.type_keys("/dm bob\r");
    let at = tui.wait_for("creates", at);
    tui.type_keys("direct-hello\r");
    let at = tui.wait_for("✓", at);
    let received = qpc_ok(&bob, &["--json", "recv", "--wait", "10"]);
    let message: serde_json::Value = serde_json::from_str(received.trim()).expect("one JSON message");
    assert_eq!((message["group"].as_str(), message["text"].as_str()), (Some("@alice"), Some("direct-hello")));
    tui.type_keys("/verify\r");
    tui.wait_for("Compare", at);
    tui.type_keys("\u{3}");
    assert!(tui.wait_exit().success(), "Ctrl-C exits with status 0");
    drop(server);
}
