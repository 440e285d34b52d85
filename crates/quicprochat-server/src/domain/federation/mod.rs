//! Federation between home servers: several `qpc-server`s behaving, for their users, like one
//! (issue 19, docs/design/federation.md).
//!
//! Like the rest of [`domain`](super), this module sees no QUIC, SQL, frames or clock:
//! - [`stream`]: the sans-IO state machines of the ordered, exactly-once stream each server
//!   keeps towards each peer (what to send, what an answer acknowledges, when to retry, and
//!   what an arriving batch means);
//! - [`apply`]: applying a peer's batch to the store under the binding rules;
//! - [`outbox`]: the hub's fan-out to peers' users (stream entries written
//!   with the local queue entries);
//! - [`relay`]: a follower's users' messages to groups another server
//!   hosts, and the hub taking them.

pub mod apply;
pub mod outbox;
pub mod relay;
pub mod stream;
