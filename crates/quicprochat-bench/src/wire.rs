//! What a step put on the wire per message: UDP datagrams and the QUIC
//! frames in them, read from quinn's statistics of the load's own
//! connections. Every datagram of a B3 step goes between one of those
//! connections and the server, so their sent plus received counts are the
//! step's whole traffic, both directions.

use quicprochat_rpc::RpcClient;
use serde::Serialize;

/// Counters summed over a set of connections at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WireCount {
    datagrams: u64,
    send_calls: u64,
    ack_frames: u64,
    stream_frames: u64,
    flow_control_frames: u64,
    lost_packets: u64,
}

impl WireCount {
    /// Reads the counters of every connection in `clients`.
    pub(crate) fn read<'a>(clients: impl IntoIterator<Item = &'a RpcClient>) -> WireCount {
        let mut count = WireCount::default();
        for client in clients {
            let stats = client.connection().stats();
            count.datagrams += stats.udp_tx.datagrams + stats.udp_rx.datagrams;
            count.send_calls += stats.udp_tx.ios;
            for frames in [&stats.frame_tx, &stats.frame_rx] {
                count.ack_frames += frames.acks;
                count.stream_frames += frames.stream;
                count.flow_control_frames +=
                    frames.max_data + frames.max_stream_data + frames.max_streams_bidi + frames.max_streams_uni;
            }
            count.lost_packets += stats.path.lost_packets;
        }
        count
    }

    /// The traffic since `start`, per acknowledged message.
    pub(crate) fn since(self, start: WireCount, messages: u64) -> Option<StepWire> {
        if messages == 0 {
            return None;
        }
        let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / messages as f64;
        Some(StepWire {
            datagrams_per_message: per(self.datagrams, start.datagrams),
            client_send_calls_per_message: per(self.send_calls, start.send_calls),
            ack_frames_per_message: per(self.ack_frames, start.ack_frames),
            stream_frames_per_message: per(self.stream_frames, start.stream_frames),
            flow_control_frames_per_message: per(self.flow_control_frames, start.flow_control_frames),
            lost_packets: self.lost_packets.saturating_sub(start.lost_packets),
        })
    }
}

/// One step's traffic per acknowledged message, both directions.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct StepWire {
    /// UDP datagrams, client to server and back.
    pub(crate) datagrams_per_message: f64,
    /// The clients' send system calls (fewer than their datagrams when
    /// quinn batches them).
    pub(crate) client_send_calls_per_message: f64,
    /// QUIC ACK frames, both directions.
    pub(crate) ack_frames_per_message: f64,
    /// STREAM frames, both directions.
    pub(crate) stream_frames_per_message: f64,
    /// MAX_DATA, MAX_STREAM_DATA and MAX_STREAMS frames, both directions.
    pub(crate) flow_control_frames_per_message: f64,
    /// Packets quinn declared lost on these connections during the step.
    pub(crate) lost_packets: u64,
}
