//! `Frame::decode` on arbitrary bytes: never panics, consumes nothing while
//! the frame is incomplete, and a decoded frame re-encodes to exactly the
//! bytes it consumed.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use quicprochat_proto::Frame;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    // Decode frames back to back, as a stream reader does.
    loop {
        let before = buf.len();
        match Frame::decode(&mut buf) {
            Ok(Some(frame)) => {
                let consumed = before - buf.len();
                let start = data.len() - before;
                let mut encoded = BytesMut::new();
                frame.encode(&mut encoded).expect("a decoded frame is within its limit");
                assert_eq!(&encoded[..], &data[start..start + consumed]);
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete frame consumes nothing");
                break;
            }
            Err(_) => break,
        }
    }
});
