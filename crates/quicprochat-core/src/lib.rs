//! quicprochat-core: identity keys, the OpenMLS wrapper (client groups, key packages,
//! commits, welcomes), the Delivery Service's public group view, and safety numbers.
//!
//! This is the only crate that holds MLS or identity secrets. It does no networking,
//! runs no async runtime and reads no clock of its own (OpenMLS checks lifetimes).
//!
//! Module map:
//! - [`ciphersuite`]: which MLS ciphersuites the project allows.
//! - [`identity`]: the Ed25519 identity key and the login/register transcript.
//! - [`device`]: device ids, device certificates and the MLS credential of
//!   an account's device.
//! - [`link`]: linking a new device end to end (link code, request MAC,
//!   the bundle sealed to the new device with HPKE).
//! - [`safety`]: safety numbers users compare out of band.
//! - [`names`]: domains, `name@domain` users and the hub domain in a group
//!   id (federation).
//! - [`client`]: one user's MLS state ([`MlsClient`]), persisted in SQLite.
//! - [`ds`]: the server's secret-free view of a group ([`DsGroupView`]) and
//!   key-package / application-message checks.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
// Tests may unwrap; the non-test build above still denies it.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod ciphersuite;
pub mod client;
pub mod crash_point;
pub mod device;
pub mod ds;
pub mod identity;
pub mod link;
pub mod names;
pub mod safety;

pub use ciphersuite::{is_allowed_ciphersuite, CLASSICAL_CIPHERSUITE, DEFAULT_CIPHERSUITE};
pub use client::{
    any_verified_member, GroupBootstrap, GroupMember, Incoming, MemberCheck, MemberRefusal, MlsClient, MlsError,
    PendingCommit, Savepoint, StateDb, MAXIMUM_FORWARD_DISTANCE, OUT_OF_ORDER_TOLERANCE,
};
pub use device::{verify_member, CredentialError, DeviceId, MemberCredential, VerifiedMember};
pub use ds::{
    inspect_application, validate_key_package, ApplicationInfo, CommitOutcome, DsError, DsGroupView, KeyPackageInfo,
    MemberInfo, ProposalOutcome,
};
pub use identity::{auth_transcript, verify_signature, AuthPurpose, Identity, IdentityError};
pub use openmls::prelude::Ciphersuite;
pub use safety::safety_number;
