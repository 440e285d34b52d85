//! Cheap checks the Delivery Service runs before it touches a group's view,
//! and the size caps on what members may make the view (and every member's
//! state) hold.
//!
//! [`inspect_handshake`] reads only the clear framing of a handshake message:
//! wire format, content type, group id, epoch and sender. A request that
//! fails it costs the server a parse, never a view restore. Senders other
//! than a member (external commits and proposals) are refused here: this
//! service never admits a member without an Add that a member committed.
//!
//! The caps: a leaf's extensions at most [`MAX_LEAF_EXTENSIONS_BYTES`], a
//! whole leaf at most [`MAX_LEAF_NODE_BYTES`], a handshake's authenticated
//! data at most [`MAX_AUTHENTICATED_DATA_BYTES`]. quicprochat's own clients
//! put no leaf extensions and no authenticated data, so the caps only stop
//! a member from growing the group's state by megabytes per leaf.

use openmls::prelude::tls_codec::{DeserializeBytes as _, Serialize as _, Size as _};
use openmls::prelude::{ContentType, LeafNode, MlsMessageIn, ProtocolMessage, Sender, WireFormat};

use super::DsError;

/// Most bytes of one leaf's extensions.
pub const MAX_LEAF_EXTENSIONS_BYTES: usize = 1024;
/// Most bytes of one leaf node (a post-quantum leaf is about 1.5 KiB).
pub const MAX_LEAF_NODE_BYTES: usize = 8 * 1024;
/// Most bytes of authenticated data on a commit or proposal.
pub const MAX_AUTHENTICATED_DATA_BYTES: usize = 1024;

/// The least time a KeyPackage must have left when it is added (7 days):
/// every member must be able to process the Add before it expires, and a
/// member may be offline that long (the server asks for more: at least its
/// retention).
pub const MIN_KEY_PACKAGE_REMAINING_SECS: u64 = 7 * 24 * 3600;

/// Fails unless a KeyPackage valid from `not_before` to `not_after` (seconds
/// since the Unix epoch) may be added at `now` (same unit): its lifetime
/// range is one OpenMLS accepts, it has begun, and it lasts at least
/// `remaining` more seconds, so members that process the Add later do not
/// refuse it as expired.
pub fn check_key_package_lifetime(not_before: u64, not_after: u64, now: u64, remaining: u64) -> Result<(), DsError> {
    let refuse = |reason: String| Err(DsError::InvalidKeyPackage { reason });
    if !openmls::prelude::Lifetime::init(not_before, not_after).has_acceptable_range() {
        return refuse(format!("its lifetime ({not_before} to {not_after}) is longer than members accept"));
    }
    if not_before > now {
        return refuse(format!("it is not valid before {not_before} (now {now})"));
    }
    if not_after < now.saturating_add(remaining) {
        let left = not_after.saturating_sub(now);
        return refuse(format!(
            "it expires in {} hours, and members need at least {} hours to process the add; \
             its owner's client uploads fresh ones at its next login",
            left / 3600,
            remaining / 3600
        ));
    }
    Ok(())
}

/// What the clear framing of a handshake message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The group id in the header.
    pub group_id: Vec<u8>,
    /// The epoch in the header.
    pub epoch: u64,
    /// The sender's leaf index (always a member).
    pub sender_leaf: u32,
    /// A commit's confirmation tag (TLS-serialised): what the new epoch's
    /// confirmation key authenticates, the same for every member who
    /// merges the commit.
    pub confirmation_tag: Option<Vec<u8>>,
}

/// The handshake kinds the DS takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeKind {
    /// A commit (`SubmitCommit`).
    Commit,
    /// A proposal (`LeaveGroup`).
    Proposal,
}

impl HandshakeKind {
    fn content_type(self) -> ContentType {
        match self {
            HandshakeKind::Commit => ContentType::Commit,
            HandshakeKind::Proposal => ContentType::Proposal,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            HandshakeKind::Commit => "commit",
            HandshakeKind::Proposal => "proposal",
        }
    }
}

/// Parses `bytes` as an MlsMessage carrying a PublicMessage of `kind` from
/// a member, and returns its header. Nothing is verified cryptographically.
pub fn inspect_handshake(bytes: &[u8], kind: HandshakeKind) -> Result<HandshakeInfo, DsError> {
    let protocol = parse_public(bytes, kind)?;
    let ProtocolMessage::PublicMessage(public) = &protocol else {
        return Err(DsError::WrongWireFormat { expected: "PublicMessage", found: "PrivateMessage".to_owned() });
    };
    let sender_leaf = match public.sender() {
        Sender::Member(index) => index.u32(),
        other => {
            return Err(DsError::InvalidMessage {
                reason: format!("only members may send a {}; this one is from {other:?}", kind.name()),
            })
        }
    };
    let confirmation_tag = public.confirmation_tag().and_then(|tag| tag.tls_serialize_detached().ok());
    Ok(HandshakeInfo {
        group_id: protocol.group_id().to_vec(),
        epoch: protocol.epoch().as_u64(),
        sender_leaf,
        confirmation_tag,
    })
}

/// Parses a PublicMessage of `kind` (any sender).
pub(crate) fn parse_public(bytes: &[u8], kind: HandshakeKind) -> Result<ProtocolMessage, DsError> {
    let message =
        MlsMessageIn::tls_deserialize_exact_bytes(bytes).map_err(|err| DsError::malformed("MlsMessage", err))?;
    let wire_format = message.wire_format();
    if wire_format != WireFormat::PublicMessage {
        return Err(DsError::WrongWireFormat { expected: "PublicMessage", found: format!("{wire_format:?}") });
    }
    let protocol = message.try_into_protocol_message().map_err(|err| DsError::malformed("PublicMessage", err))?;
    if protocol.content_type() != kind.content_type() {
        return Err(DsError::WrongContentType {
            expected: kind.name(),
            found: format!("{:?}", protocol.content_type()),
        });
    }
    Ok(protocol)
}

/// Fails with [`DsError::Oversized`] if `len` is over `max`; `what` (built
/// only then) names what is too large.
pub(crate) fn check_size(what: impl FnOnce() -> String, len: usize, max: usize) -> Result<(), DsError> {
    if len > max {
        return Err(DsError::Oversized { what: what(), len, max });
    }
    Ok(())
}

/// Fails if `leaf` is larger than the caps allow; `whose` names it in the error.
pub(crate) fn check_leaf_size(leaf: &LeafNode, whose: &str) -> Result<(), DsError> {
    let extensions = leaf.extensions().tls_serialized_len();
    check_size(|| format!("{whose} leaf's extensions"), extensions, MAX_LEAF_EXTENSIONS_BYTES)?;
    check_size(|| format!("{whose} leaf"), leaf.tls_serialized_len(), MAX_LEAF_NODE_BYTES)
}

/// Fails if a handshake's authenticated data is over the cap.
pub(crate) fn check_authenticated_data(aad: &[u8]) -> Result<(), DsError> {
    check_size(|| "authenticated data".to_owned(), aad.len(), MAX_AUTHENTICATED_DATA_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_packages_must_outlive_the_margin() {
        let day = 24 * 3600;
        let now = 1_000 * day;
        assert!(check_key_package_lifetime(now - 3600, now + 84 * day, now, 30 * day).is_ok());
        assert!(check_key_package_lifetime(now - 3600, now + 29 * day, now, 30 * day).is_err(), "expires too soon");
        assert!(check_key_package_lifetime(now - 3600, now + 1, now, 0).is_ok());
        assert!(check_key_package_lifetime(now + 60, now + 84 * day, now, 0).is_err(), "not valid yet");
        assert!(check_key_package_lifetime(0, u64::MAX, now, 30 * day).is_err(), "a range no member accepts");
    }

    #[test]
    fn garbage_and_wrong_framing_are_refused() {
        assert!(matches!(inspect_handshake(b"", HandshakeKind::Commit), Err(DsError::Malformed { .. })));
        assert!(matches!(inspect_handshake(&[0, 1, 0, 1, 9], HandshakeKind::Commit), Err(DsError::Malformed { .. })));
        assert!(check_authenticated_data(&[0; MAX_AUTHENTICATED_DATA_BYTES]).is_ok());
        assert!(matches!(
            check_authenticated_data(&[0; MAX_AUTHENTICATED_DATA_BYTES + 1]),
            Err(DsError::Oversized { .. })
        ));
    }
}
