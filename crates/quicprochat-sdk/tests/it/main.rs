//! Integration tests of the SDK against a real in-process server on
//! `127.0.0.1:0`: groups, removal, direct conversations, restarts,
//! idempotent delivery and commit races, seeded random interaction
//! schedules checked against a model, a hostile server relabelling groups,
//! and impaired networks (loss, delay,
//! reordering, blackholes) through a seeded UDP relay.

mod bursts;
mod delivery;
mod devices;
mod expiry;
mod federation;
mod groups;
mod harness;
mod hostile;
mod impairment;
mod interaction;
mod killed;
mod resilience;
mod restart;
mod rogue_device;
