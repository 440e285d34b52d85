//! The server's business rules: the MLS Authentication Service (accounts,
//! key packages) and Delivery Service (groups, commits, fan-out, queues).
//!
//! Every service is a plain function over `&dyn Store` and plain arguments;
//! the current time comes in as `now_ms`, never read here. This module does
//! not see Protobuf types, frames, QUIC, SQL or the clock, and holds no state
//! of its own (rate limits, challenges and sessions belong to the transport)
//! beyond [`views::ViewCache`], which the caller owns and passes in: decoded
//! group views, a shortcut past the store that never outlives the state it
//! was decoded from.
//! MLS validation is delegated to `quicprochat_core::ds` (verification only:
//! the server holds no group secrets).
//!
//! Modules: [`accounts`] (usernames, register, login), [`invites`],
//! [`key_packages`],
//! [`groups`] (create, members), [`commits`] (submit commit, leave),
//! [`messages`] (application messages), [`delivery`] (fetch, ack),
//! [`devices`] (the caller's device, device queues of a roster), [`views`],
//! [`snapshots`] (storing decoded views, which shortens the group logs),
//! [`federation`] (the server-to-server stream, sans IO).
//! Errors map 1:1 onto wire status codes through [`DomainError`].

pub mod accounts;
pub mod commits;
pub mod delivery;
pub mod devices;
mod error;
pub mod federation;
pub mod groups;
pub mod invites;
pub mod key_packages;
pub mod messages;
pub mod snapshots;
pub mod views;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

pub use error::DomainError;

/// Upper bound on client-generated message ids, in bytes.
pub const MAX_MESSAGE_ID_LEN: usize = 64;

/// Checks a client-generated message id: 1 to [`MAX_MESSAGE_ID_LEN`] bytes.
pub(crate) fn check_message_id(message_id: &[u8]) -> Result<(), DomainError> {
    if message_id.is_empty() || message_id.len() > MAX_MESSAGE_ID_LEN {
        return Err(DomainError::invalid(format!(
            "message_id must be 1 to {MAX_MESSAGE_ID_LEN} bytes, got {}",
            message_id.len()
        )));
    }
    Ok(())
}
