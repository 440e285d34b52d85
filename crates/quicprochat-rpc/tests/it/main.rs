//! Integration tests of the RPC layer against real quinn endpoints on loopback.

mod ack_frequency;
mod push_stream;
