//! Registration invites: what `qpc-server invite create` makes and what
//! `Register` consumes under the `invite` registration policy.
//!
//! An invite is a random token good for `uses` registrations until an
//! optional expiry. Tokens are [`TOKEN_LEN`] characters from
//! [`TOKEN_ALPHABET`] (lowercase base32 without `l`, `o`, `0`, `1`, so they
//! survive being read aloud or typed; 130 bits), safe in URLs and shells.
//! Randomness and time are parameters. Consumption happens in
//! [`super::accounts::register`], in the same store transaction as the
//! account creation; this module owns creation and the refusal messages.

use std::time::Duration;

use rand::Rng;

use super::DomainError;
use crate::storage::{InviteUse, Store, StoreError};

/// Characters of a token.
pub const TOKEN_LEN: usize = 26;

/// The token alphabet: 32 symbols, 5 bits each.
pub const TOKEN_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Most uses one invite may carry.
pub const MAX_USES: u32 = 100_000;

/// Longest token `Register` accepts (longer ones are malformed, not unknown).
pub const MAX_TOKEN_LEN: usize = 128;

/// What to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewInvite {
    /// Registrations the invite admits, 1 to [`MAX_USES`].
    pub uses: u32,
    /// How long it stays valid from creation; `None`: until used up.
    pub expires_in: Option<Duration>,
}

/// A created invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub token: String,
    pub uses: u32,
    /// Exclusive expiry (ms since the Unix epoch); `None`: never expires.
    pub expires_at_ms: Option<u64>,
}

/// A fresh random token.
pub fn generate_token<R: Rng + ?Sized>(rng: &mut R) -> String {
    (0..TOKEN_LEN).map(|_| char::from(TOKEN_ALPHABET[rng.random_range(0..TOKEN_ALPHABET.len())])).collect()
}

/// Creates an invite with a token drawn from `rng`, valid from `now_ms`.
pub fn create<R: Rng + ?Sized>(
    store: &dyn Store,
    invite: NewInvite,
    rng: &mut R,
    now_ms: u64,
) -> Result<Invite, DomainError> {
    if invite.uses == 0 || invite.uses > MAX_USES {
        return Err(DomainError::invalid(format!("uses must be 1 to {MAX_USES}, got {}", invite.uses)));
    }
    let expires_at_ms = match invite.expires_in {
        None => None,
        Some(Duration::ZERO) => return Err(DomainError::invalid("expiry must be longer than zero")),
        Some(expires_in) => {
            let millis = u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX).max(1);
            Some(now_ms.saturating_add(millis))
        }
    };
    let token = generate_token(rng);
    match store.create_invite(&token, invite.uses, expires_at_ms, now_ms) {
        Ok(()) => Ok(Invite { token, uses: invite.uses, expires_at_ms }),
        // 130 random bits do not collide; a conflict means a broken RNG.
        Err(StoreError::Conflict { .. }) => Err(DomainError::internal("invite token collision: is the RNG broken?")),
        Err(error) => Err(error.into()),
    }
}

/// Checks the shape of a token a client sent (not whether it exists).
pub(crate) fn check_token_shape(token: &str) -> Result<(), DomainError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(DomainError::invalid(format!(
            "invite token must be at most {MAX_TOKEN_LEN} bytes, got {}",
            token.len()
        )));
    }
    Ok(())
}

/// The error for an invite that cannot be used (`PermissionDenied`).
pub(crate) fn refusal(outcome: InviteUse) -> DomainError {
    let message = match outcome {
        InviteUse::Consumed { .. } => return DomainError::internal("a consumed invite is not a refusal"),
        InviteUse::Unknown => "invite token is not valid on this server",
        InviteUse::Expired => "invite token has expired; ask the operator for a new one",
        InviteUse::Exhausted => "invite token has already been used up; ask the operator for a new one",
    };
    DomainError::denied(message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::storage::MemoryStore;

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let mut rng = StdRng::seed_from_u64(7);
        let first = generate_token(&mut rng);
        let second = generate_token(&mut rng);
        assert_eq!(first.len(), TOKEN_LEN);
        assert!(first.bytes().all(|byte| TOKEN_ALPHABET.contains(&byte)), "{first}");
        assert_ne!(first, second);
        let mut real = rand::rng();
        assert_ne!(generate_token(&mut real), generate_token(&mut real));
    }

    #[test]
    fn create_stores_a_usable_invite() {
        let store = MemoryStore::new();
        let mut rng = StdRng::seed_from_u64(1);
        let invite = NewInvite { uses: 2, expires_in: Some(Duration::from_secs(60)) };
        let created = create(&store, invite, &mut rng, 1_000).unwrap();
        assert_eq!(created.uses, 2);
        assert_eq!(created.expires_at_ms, Some(61_000));
        assert_eq!(store.consume_invite(&created.token, 60_999).unwrap(), InviteUse::Consumed { remaining: 1 });
        assert_eq!(store.consume_invite(&created.token, 61_000).unwrap(), InviteUse::Expired);

        let forever = create(&store, NewInvite { uses: 1, expires_in: None }, &mut rng, 0).unwrap();
        assert_eq!(forever.expires_at_ms, None);
        assert_ne!(forever.token, created.token);
    }

    #[test]
    fn create_refuses_bad_requests() {
        let store = MemoryStore::new();
        let mut rng = StdRng::seed_from_u64(1);
        let error = create(&store, NewInvite { uses: 0, expires_in: None }, &mut rng, 0).unwrap_err();
        assert_eq!(error.status_name(), "INVALID_ARGUMENT");
        assert!(error.to_string().contains("uses must be 1 to 100000, got 0"), "{error}");
        let error = create(&store, NewInvite { uses: MAX_USES + 1, expires_in: None }, &mut rng, 0).unwrap_err();
        assert!(error.to_string().contains("got 100001"), "{error}");
        let error = create(&store, NewInvite { uses: 1, expires_in: Some(Duration::ZERO) }, &mut rng, 0).unwrap_err();
        assert!(error.to_string().contains("expiry"), "{error}");
    }

    #[test]
    fn refusal_messages() {
        assert_eq!(refusal(InviteUse::Consumed { remaining: 0 }).status_name(), "INTERNAL");
        for (outcome, fragment) in
            [(InviteUse::Unknown, "not valid"), (InviteUse::Expired, "expired"), (InviteUse::Exhausted, "used up")]
        {
            let error = refusal(outcome);
            assert_eq!(error.status_name(), "PERMISSION_DENIED");
            assert!(error.to_string().contains(fragment), "{error}");
        }
    }
}
