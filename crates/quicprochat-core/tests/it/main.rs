//! Integration tests of quicprochat-core: real MLS groups of several clients, each with
//! its own SQLite state, followed by a Delivery Service view.
#![allow(clippy::unwrap_used)]

mod devices;
mod federation;
mod group_flow;
mod harness;
mod hostile_ingress;
mod leave_and_races;
mod persistence;
mod shared_state;
