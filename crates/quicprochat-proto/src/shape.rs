//! Counting a message's repeated fields before it is decoded.
//!
//! Decoding with prost allocates every element of a repeated field: an
//! empty `FedEntry` is 2 bytes on the wire and about 200 decoded, so a
//! 16 MiB `FedPush` could cost gigabytes before any count is checked.
//! [`check_push_shape`] walks the wire form of a `FedPushRequest` without
//! allocating, counts its entries and their recipients, and refuses the body
//! past the limits, so the decode that follows is bounded;
//! [`check_send_messages_shape`] does the same for a `SendMessagesRequest`
//! (an empty message there is 2 bytes on the wire and about 100 decoded),
//! and [`count_field`] for any repeated top-level field (an
//! `UploadKeyPackagesRequest`'s packages). It checks only
//! what it counts: the decode still validates everything else.

use bytes::Buf;

/// Most entries one `FedPush` batch may carry.
pub const MAX_PUSH_ENTRIES: usize = 256;

/// Most recipients across all entries of one `FedPush` batch.
pub const MAX_PUSH_RECIPIENTS: usize = 64 * 1024;

/// Field numbers walked: `FedPushRequest.entries`, `FedEntry.group_event`,
/// `FedGroupEvent.recipients`.
const PUSH_ENTRIES: u64 = 5;
const ENTRY_GROUP_EVENT: u64 = 3;
const EVENT_RECIPIENTS: u64 = 9;

/// Field number of `SendMessagesRequest.messages`.
const SEND_MESSAGES: u64 = 1;

/// Why a body was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// The bytes are not a well-formed Protobuf message (at the levels walked).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// More entries than [`MAX_PUSH_ENTRIES`].
    #[error("a batch has more than {MAX_PUSH_ENTRIES} entries")]
    TooManyEntries,
    /// More recipients than [`MAX_PUSH_RECIPIENTS`].
    #[error("a batch names more than {MAX_PUSH_RECIPIENTS} recipients")]
    TooManyRecipients,
    /// More messages than [`crate::MAX_SEND_MESSAGES`].
    #[error("a SendMessages request carries more than {} messages", crate::MAX_SEND_MESSAGES)]
    TooManyMessages,
    /// More values of a repeated field than its limit ([`count_field`]).
    #[error("more than {most} {what}")]
    TooMany {
        /// What the field holds.
        what: &'static str,
        /// Its limit.
        most: usize,
    },
}

/// Counts the top-level values of field number `field` in `message` (an
/// encoded message), refusing it with [`ShapeError::TooMany`] past `most`.
pub fn count_field(message: &[u8], field: u64, most: usize, what: &'static str) -> Result<usize, ShapeError> {
    let mut count = 0;
    for_each_field(message, |number, _| {
        if number == field {
            count += 1;
            if count > most {
                return Err(ShapeError::TooMany { what, most });
            }
        }
        Ok(())
    })?;
    Ok(count)
}

/// Counts the messages of an encoded `SendMessagesRequest`, refusing it
/// past [`crate::MAX_SEND_MESSAGES`].
pub fn check_send_messages_shape(body: &[u8]) -> Result<usize, ShapeError> {
    count_field(body, SEND_MESSAGES, crate::MAX_SEND_MESSAGES, "messages").map_err(|error| match error {
        ShapeError::TooMany { .. } => ShapeError::TooManyMessages,
        other => other,
    })
}

/// What [`check_push_shape`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushShape {
    pub entries: usize,
    pub recipients: usize,
}

/// Counts the entries and recipients of an encoded `FedPushRequest`.
pub fn check_push_shape(body: &[u8]) -> Result<PushShape, ShapeError> {
    let mut shape = PushShape { entries: 0, recipients: 0 };
    for_each_field(body, |field, value| {
        if field == PUSH_ENTRIES {
            shape.entries += 1;
            if shape.entries > MAX_PUSH_ENTRIES {
                return Err(ShapeError::TooManyEntries);
            }
            let entry = value.ok_or(ShapeError::Malformed("an entry is not length-delimited"))?;
            for_each_field(entry, |field, event| {
                if field == ENTRY_GROUP_EVENT {
                    let event = event.ok_or(ShapeError::Malformed("an event is not length-delimited"))?;
                    for_each_field(event, |field, _| {
                        if field == EVENT_RECIPIENTS {
                            shape.recipients += 1;
                            if shape.recipients > MAX_PUSH_RECIPIENTS {
                                return Err(ShapeError::TooManyRecipients);
                            }
                        }
                        Ok(())
                    })?;
                }
                Ok(())
            })?;
        }
        Ok(())
    })?;
    Ok(shape)
}

/// Calls `visit(field number, Some(bytes))` for each length-delimited field
/// of `message` and `visit(field number, None)` for every other field.
fn for_each_field(
    mut message: &[u8],
    mut visit: impl FnMut(u64, Option<&[u8]>) -> Result<(), ShapeError>,
) -> Result<(), ShapeError> {
    while message.has_remaining() {
        let key = varint(&mut message)?;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                varint(&mut message)?;
                visit(field, None)?;
            }
            1 | 5 => {
                let len = if wire_type == 1 { 8 } else { 4 };
                if message.remaining() < len {
                    return Err(ShapeError::Malformed("a fixed-size field is cut short"));
                }
                message.advance(len);
                visit(field, None)?;
            }
            2 => {
                let len = usize::try_from(varint(&mut message)?).map_err(|_| ShapeError::Malformed("length"))?;
                if message.remaining() < len {
                    return Err(ShapeError::Malformed("a length-delimited field is cut short"));
                }
                let (value, rest) = message.split_at(len);
                message = rest;
                visit(field, Some(value))?;
            }
            _ => return Err(ShapeError::Malformed("groups and unknown wire types are not accepted")),
        }
    }
    Ok(())
}

/// A base-128 varint of at most 10 bytes.
fn varint(buf: &mut &[u8]) -> Result<u64, ShapeError> {
    let mut value = 0u64;
    for index in 0..10 {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err(ShapeError::Malformed("a varint is cut short"));
        };
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ShapeError::Malformed("a varint is longer than 10 bytes"))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::v1;

    fn push(entries: usize, recipients_each: usize) -> Vec<u8> {
        let event = v1::FedGroupEvent {
            sender: "alice@a.example".into(),
            recipients: vec![
                v1::FedRecipient { username: "bob".into(), device_id: vec![1; 8].into() };
                recipients_each
            ],
            ..v1::FedGroupEvent::default()
        };
        let entry = v1::FedEntry { seq: 1, accepted_at_ms: 2, event: Some(v1::fed_entry::Event::GroupEvent(event)) };
        v1::FedPushRequest {
            origin: "a.example".into(),
            instance: 9,
            entries: vec![entry; entries],
            ..v1::FedPushRequest::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn entries_and_recipients_are_counted() {
        assert_eq!(check_push_shape(&push(3, 4)), Ok(PushShape { entries: 3, recipients: 12 }));
        assert_eq!(check_push_shape(&[]), Ok(PushShape { entries: 0, recipients: 0 }));
        assert_eq!(check_push_shape(&push(MAX_PUSH_ENTRIES, 1)).map(|shape| shape.entries), Ok(MAX_PUSH_ENTRIES));
    }

    #[test]
    fn past_a_limit_the_body_is_refused_before_decoding() {
        assert_eq!(check_push_shape(&push(MAX_PUSH_ENTRIES + 1, 0)), Err(ShapeError::TooManyEntries));
        assert_eq!(check_push_shape(&push(2, MAX_PUSH_RECIPIENTS / 2 + 1)), Err(ShapeError::TooManyRecipients));
        // Empty entries: 2 bytes each on the wire.
        let empties: Vec<u8> = std::iter::repeat_n([0x2a, 0x00], 100_000).flatten().collect();
        assert_eq!(check_push_shape(&empties), Err(ShapeError::TooManyEntries));
    }

    #[test]
    fn a_burst_is_counted_and_refused_past_its_limit() {
        let burst = |count: usize| {
            v1::SendMessagesRequest { messages: vec![v1::SendMessageRequest::default(); count] }.encode_to_vec()
        };
        assert_eq!(check_send_messages_shape(&burst(3)), Ok(3));
        assert_eq!(check_send_messages_shape(&burst(crate::MAX_SEND_MESSAGES)), Ok(crate::MAX_SEND_MESSAGES));
        assert_eq!(check_send_messages_shape(&burst(crate::MAX_SEND_MESSAGES + 1)), Err(ShapeError::TooManyMessages));
        // A megabyte of empty messages, 2 bytes each, is refused without decoding.
        let empties: Vec<u8> = std::iter::repeat_n([0x0a, 0x00], 500_000).flatten().collect();
        assert_eq!(check_send_messages_shape(&empties), Err(ShapeError::TooManyMessages));
        assert!(matches!(check_send_messages_shape(&[0x0a, 0x05]), Err(ShapeError::Malformed(_))));
    }

    #[test]
    fn any_repeated_field_is_counted_without_decoding() {
        let upload = |count: usize| {
            v1::UploadKeyPackagesRequest { key_packages: vec![vec![7u8; 3].into(); count], last_resort: vec![1].into() }
                .encode_to_vec()
        };
        assert_eq!(count_field(&upload(5), 1, 100, "key packages"), Ok(5));
        assert_eq!(count_field(&upload(5), 2, 100, "last resort"), Ok(1));
        assert_eq!(
            count_field(&upload(101), 1, 100, "key packages"),
            Err(ShapeError::TooMany { what: "key packages", most: 100 })
        );
        let empties: Vec<u8> = std::iter::repeat_n([0x0a, 0x00], 1_000_000).flatten().collect();
        assert!(matches!(count_field(&empties, 1, 100, "key packages"), Err(ShapeError::TooMany { .. })));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [&[0x2a, 0x05, 0x01][..], &[0x80][..], &[0x0b][..], &[0x2a, 0x01, 0x1a][..], &[0x09, 1, 2][..]] {
            assert!(matches!(check_push_shape(bad), Err(ShapeError::Malformed(_))), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = check_push_shape(&bytes);
        }

        #[test]
        fn a_body_that_decodes_within_the_limits_passes(entries in 0usize..20, recipients in 0usize..20) {
            let shape = check_push_shape(&push(entries, recipients)).expect("within the limits");
            proptest::prop_assert_eq!(shape, PushShape { entries, recipients: entries * recipients });
        }
    }
}
