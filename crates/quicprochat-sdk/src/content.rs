//! The application payload inside an MLS application message.
//!
//! Encoded as JSON (`{"v":1,"id":"<hex>","text":"...","sent_at":ms}`): the
//! message id and send time are authenticated by MLS together with the text,
//! so the server cannot alter them. Decoding is bounded.

use serde::{Deserialize, Serialize};

/// Largest payload accepted from a peer.
pub const MAX_CONTENT_LEN: usize = 64 * 1024;
/// Longest text a user may send.
pub const MAX_TEXT_LEN: usize = 16 * 1024;

/// One chat message as carried end to end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// Format version (1).
    pub v: u32,
    /// Client-generated message id, hex.
    pub id: String,
    /// The text.
    pub text: String,
    /// Sender's clock, ms since the Unix epoch.
    pub sent_at: u64,
}

/// Why a peer's payload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// Larger than [`MAX_CONTENT_LEN`].
    #[error("payload of {len} bytes exceeds {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not a version-1 content object.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl Content {
    /// Encodes for encryption.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a decrypted payload from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Content, ContentError> {
        if bytes.len() > MAX_CONTENT_LEN {
            return Err(ContentError::TooLarge { len: bytes.len(), max: MAX_CONTENT_LEN });
        }
        let content: Content =
            serde_json::from_slice(bytes).map_err(|error| ContentError::Malformed(error.to_string()))?;
        if content.v != 1 {
            return Err(ContentError::Malformed(format!("unsupported version {}", content.v)));
        }
        if hex::decode(&content.id).map_or(true, |id| id.is_empty() || id.len() > 64) {
            return Err(ContentError::Malformed("bad message id".into()));
        }
        Ok(content)
    }

    /// The raw message id bytes.
    pub fn id_bytes(&self) -> Vec<u8> {
        hex::decode(&self.id).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let content = Content { v: 1, id: "00ff".into(), text: "héllo".into(), sent_at: 5 };
        assert_eq!(Content::decode(&content.encode()).expect("decode"), content);
        assert!(Content::decode(b"not json").is_err());
        assert!(Content::decode(br#"{"v":2,"id":"00","text":"","sent_at":0}"#).is_err());
        assert!(Content::decode(br#"{"v":1,"id":"zz","text":"","sent_at":0}"#).is_err());
        assert!(matches!(Content::decode(&vec![b' '; MAX_CONTENT_LEN + 1]), Err(ContentError::TooLarge { .. })));
    }
}
