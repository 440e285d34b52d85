//! Integration tests of the SDK against a real in-process server on
//! `127.0.0.1:0`: groups, removal, direct conversations, restarts,
//! idempotent delivery and commit races.

mod delivery;
mod groups;
mod harness;
mod killed;
mod resilience;
mod restart;
