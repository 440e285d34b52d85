//! Integration tests of the RPC layer against real quinn endpoints on loopback.

mod push_stream;
