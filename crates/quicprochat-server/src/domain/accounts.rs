//! Accounts: username rules, registration and login (the MLS Authentication
//! Service binding a username to an Ed25519 identity key).
//!
//! Username rules: 1 to 32 characters; lowercase ASCII letters, digits, `_`,
//! `-` and `.`; the first character is a letter. Names reserved for the
//! server and its operators ([`RESERVED_USERNAMES`], e.g. `admin`, `root`,
//! `server`, `system`) are refused.
//!
//! Register and login prove possession of the identity key by a signature
//! over [`auth_transcript`], which binds the purpose, the server's challenge
//! nonce, the TLS exporter of the connection, the username and the key. This
//! module does not issue nonces nor make them single-use, and does not track
//! sessions: the transport does.
//!
//! Registration policy (the server's config, passed in): `Open` lets anyone
//! register (an invite token sent anyway is ignored, not consumed);
//! `Closed` refuses everyone; `Invite` requires a token, and one use of it
//! is taken in the same store transaction that creates the account, so a
//! refused registration (bad signature, name taken) never spends a use.

use quicprochat_core::identity::{auth_transcript, verify_signature, AuthPurpose};

use super::commits::CommitPolicy;
use super::devices::{require_current_device, Caller};
use super::{invites, DomainError};
use crate::config::RegistrationPolicy;
use crate::storage::{Account, AccountCreation, InviteUse, InvitedAccountCreation, KeyPackageStock, Store};

/// Longest username, in characters.
pub const MAX_USERNAME_LEN: usize = 32;

/// Length of an Ed25519 public key.
pub const IDENTITY_KEY_LEN: usize = 32;

/// Names nobody may register.
pub const RESERVED_USERNAMES: &[&str] =
    &["admin", "administrator", "root", "server", "system", "support", "postmaster", "operator", "qpc", "quicprochat"];

/// Same message for an unknown user and a bad signature, so a login does not
/// reveal which usernames exist.
const LOGIN_FAILED: &str = "unknown username or invalid signature";

/// Proof of possession of an identity key for one connection.
#[derive(Debug, Clone, Copy)]
pub struct AuthProof<'a> {
    /// The challenge the server issued on this connection.
    pub nonce: &'a [u8],
    /// The connection's TLS exporter value.
    pub tls_exporter: &'a [u8],
    /// Ed25519 signature over the auth transcript.
    pub signature: &'a [u8],
}

/// What a successful login reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginOutcome {
    /// The key package stock of the device that logged in.
    pub key_package_stock: KeyPackageStock,
    /// The queue of the device that logged in.
    pub queue: String,
    /// The key the device proved (the account key for its first device).
    pub device_key: Vec<u8>,
}

/// A user's public identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub username: String,
    pub identity_key: Vec<u8>,
}

/// Checks `username` against the rules in the module doc.
pub fn validate_username(username: &str) -> Result<(), DomainError> {
    let length = username.chars().count();
    if length == 0 || length > MAX_USERNAME_LEN {
        return Err(DomainError::invalid(format!("username must be 1 to {MAX_USERNAME_LEN} characters, got {length}")));
    }
    if !username.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(DomainError::invalid("username must start with a lowercase letter a-z"));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c);
    if let Some(bad) = username.chars().find(|c| !allowed(*c)) {
        return Err(DomainError::invalid(format!(
            "username may contain only a-z, 0-9, '_', '-' and '.', found {bad:?}"
        )));
    }
    if RESERVED_USERNAMES.contains(&username) {
        return Err(DomainError::invalid(format!("username {username:?} is reserved")));
    }
    Ok(())
}

/// A client's registration request.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    pub username: &'a str,
    /// Ed25519 public key to bind to the name.
    pub identity_key: &'a [u8],
    /// Signature over the `Register` transcript with `identity_key`.
    pub proof: AuthProof<'a>,
    /// Invite token; `None` or empty when the client sent none.
    pub invite_token: Option<&'a str>,
}

/// Message of a registration refused by the `Closed` policy.
pub const REGISTRATION_CLOSED: &str = "registration is closed on this server";

/// Message of a registration without a token under the `Invite` policy.
pub const INVITE_REQUIRED: &str = "registration on this server needs an invite token (qpc register --invite TOKEN)";

/// Binds a free `username` to `identity_key` if `policy` admits the
/// request (see the module doc), proven by a signature over the `Register`
/// transcript. Returns the new account.
pub fn register(
    store: &dyn Store,
    policy: RegistrationPolicy,
    request: &Registration<'_>,
    now_ms: u64,
) -> Result<Account, DomainError> {
    let invite_token = request.invite_token.filter(|token| !token.is_empty());
    let invite_token = match policy {
        RegistrationPolicy::Closed => return Err(DomainError::denied(REGISTRATION_CLOSED)),
        RegistrationPolicy::Open => None,
        RegistrationPolicy::Invite => Some(invite_token.ok_or_else(|| DomainError::denied(INVITE_REQUIRED))?),
    };
    let Registration { username, identity_key, proof, .. } = *request;
    validate_username(username)?;
    if identity_key.len() != IDENTITY_KEY_LEN {
        return Err(DomainError::invalid(format!(
            "identity key must be {IDENTITY_KEY_LEN} bytes (Ed25519), got {}",
            identity_key.len()
        )));
    }
    if let Some(token) = invite_token {
        invites::check_token_shape(token)?;
    }
    let transcript = auth_transcript(AuthPurpose::Register, proof.nonce, proof.tls_exporter, username, identity_key);
    verify_signature(identity_key, &transcript, proof.signature)
        .map_err(|_| DomainError::Unauthenticated { message: "invalid registration signature".to_owned() })?;
    let created = match invite_token {
        None => store.create_account(username, identity_key, now_ms)? == AccountCreation::Created,
        Some(token) => match store.create_account_with_invite(username, identity_key, now_ms, token)? {
            InvitedAccountCreation::Created { .. } => true,
            InvitedAccountCreation::UsernameTaken => false,
            InvitedAccountCreation::InviteUnknown => return Err(invites::refusal(InviteUse::Unknown)),
            InvitedAccountCreation::InviteExpired => return Err(invites::refusal(InviteUse::Expired)),
            InvitedAccountCreation::InviteExhausted => return Err(invites::refusal(InviteUse::Exhausted)),
        },
    };
    if !created {
        return Err(DomainError::AlreadyExists { message: format!("username {username:?} is taken") });
    }
    Ok(Account { username: username.to_owned(), identity_key: identity_key.to_vec(), disabled: false })
}

/// Challenge–response login with the stored identity key. The signature is
/// checked before the disabled flag, so only the key holder learns that an
/// account is disabled.
pub fn login(
    store: &dyn Store,
    username: &str,
    device_key: &[u8],
    proof: &AuthProof<'_>,
    policy: &CommitPolicy,
) -> Result<LoginOutcome, DomainError> {
    let unauthenticated = || DomainError::Unauthenticated { message: LOGIN_FAILED.to_owned() };
    let account = store.get_account(username)?.ok_or_else(unauthenticated)?;
    // No device key: the account's first device, keyed by the account key.
    let device_key = if device_key.is_empty() { account.identity_key.as_slice() } else { device_key };
    let device = store.device_by_key(username, device_key)?.ok_or_else(unauthenticated)?;
    let transcript = auth_transcript(AuthPurpose::Login, proof.nonce, proof.tls_exporter, username, device_key);
    verify_signature(device_key, &transcript, proof.signature).map_err(|_| unauthenticated())?;
    if account.disabled {
        return Err(DomainError::denied(format!("account {username:?} is disabled")));
    }
    if !device.is_current() {
        return Err(DomainError::denied(format!("this device was removed from {username:?}'s account")));
    }
    // The logging-in device's own stock: each device refills its own.
    let key_package_stock = super::key_packages::usable_stock(store, username, &device.device_id, policy)?;
    Ok(LoginOutcome { key_package_stock, queue: device.queue, device_key: device_key.to_vec() })
}

/// The identity key of `username`.
pub fn resolve_user(store: &dyn Store, caller: Caller<'_>, username: &str) -> Result<ResolvedUser, DomainError> {
    require_current_device(store, caller)?;
    let account =
        store.get_account(username)?.ok_or_else(|| DomainError::not_found(format!("no user named {username:?}")))?;
    Ok(ResolvedUser { username: account.username, identity_key: account.identity_key })
}

/// The account of an authenticated session user; a session whose account
/// vanished or was disabled is refused.
pub(crate) fn session_account(store: &dyn Store, session_user: &str) -> Result<Account, DomainError> {
    let account = store
        .get_account(session_user)?
        .ok_or_else(|| DomainError::Unauthenticated { message: "session account no longer exists".to_owned() })?;
    if account.disabled {
        return Err(DomainError::denied(format!("account {session_user:?} is disabled")));
    }
    Ok(account)
}
