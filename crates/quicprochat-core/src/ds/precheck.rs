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

use openmls::prelude::tls_codec::{DeserializeBytes as _, Size as _};
use openmls::prelude::{ContentType, LeafNode, MlsMessageIn, ProtocolMessage, Sender, WireFormat};

use super::DsError;

/// Most bytes of one leaf's extensions.
pub const MAX_LEAF_EXTENSIONS_BYTES: usize = 1024;
/// Most bytes of one leaf node (a post-quantum leaf is about 1.5 KiB).
pub const MAX_LEAF_NODE_BYTES: usize = 8 * 1024;
/// Most bytes of authenticated data on a commit or proposal.
pub const MAX_AUTHENTICATED_DATA_BYTES: usize = 1024;

/// What the clear framing of a handshake message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The group id in the header.
    pub group_id: Vec<u8>,
    /// The epoch in the header.
    pub epoch: u64,
    /// The sender's leaf index (always a member).
    pub sender_leaf: u32,
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
    Ok(HandshakeInfo { group_id: protocol.group_id().to_vec(), epoch: protocol.epoch().as_u64(), sender_leaf })
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

/// Fails if `leaf` is larger than the caps allow; `whose` names it in the error.
pub(crate) fn check_leaf_size(leaf: &LeafNode, whose: &str) -> Result<(), DsError> {
    let extensions = leaf.extensions().tls_serialized_len();
    if extensions > MAX_LEAF_EXTENSIONS_BYTES {
        return Err(DsError::Oversized {
            what: format!("{whose} leaf's extensions"),
            len: extensions,
            max: MAX_LEAF_EXTENSIONS_BYTES,
        });
    }
    let whole = leaf.tls_serialized_len();
    if whole > MAX_LEAF_NODE_BYTES {
        return Err(DsError::Oversized { what: format!("{whose} leaf"), len: whole, max: MAX_LEAF_NODE_BYTES });
    }
    Ok(())
}

/// Fails if a handshake's authenticated data is over the cap.
pub(crate) fn check_authenticated_data(aad: &[u8]) -> Result<(), DsError> {
    if aad.len() > MAX_AUTHENTICATED_DATA_BYTES {
        return Err(DsError::Oversized {
            what: "authenticated data".to_owned(),
            len: aad.len(),
            max: MAX_AUTHENTICATED_DATA_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
