//! Field-level access to protobuf bytes, so fields we do not know survive a rewrite.
//!
//! prost decodes `meta.Data` for reading but drops unknown fields, and a newer
//! InfluxDB may add some. Writing therefore works on the wire form: a message is
//! split into its field records, the records we own are re-encoded, and every
//! other record (node-local parts, unknown fields) is copied byte for byte.

use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, skip_field};
use prost::encoding::{DecodeContext, WireType};

/// Why bytes are not a well-formed protobuf message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A key, varint or field value does not decode.
    #[error("malformed protobuf")]
    Decode(#[from] prost::DecodeError),
    /// A length prefix claims more bytes than the message holds.
    #[error("a length-delimited field of {claimed} bytes runs past the end of its message ({left} left)")]
    Truncated {
        /// The length the prefix claims.
        claimed: u64,
        /// The bytes left in the message.
        left: usize,
    },
    /// A string field holds bytes that are not UTF-8.
    #[error("string field {number} is not UTF-8")]
    NotUtf8 {
        /// The field number.
        number: u32,
        /// The conversion's error.
        #[source]
        source: std::string::FromUtf8Error,
    },
}

/// One field record of a message, as it sits in the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    /// The field number.
    pub number: u32,
    /// The whole record: key and value (a length prefix included).
    pub record: &'a [u8],
    /// A length-delimited field's payload (a nested message, a string); empty
    /// for other wire types.
    pub payload: &'a [u8],
    /// Whether the record is length-delimited.
    pub delimited: bool,
}

/// Splits a message into its field records, in order.
pub(crate) fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, WireError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let start = rest;
        let (number, wire_type) = decode_key(&mut rest)?;
        let delimited = wire_type == WireType::LengthDelimited;
        let payload = if delimited {
            let len = decode_varint(&mut rest)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|n| *n <= rest.len())
                .ok_or(WireError::Truncated {
                    claimed: len,
                    left: rest.len(),
                })?;
            let (payload, after) = rest.split_at(len);
            rest = after;
            payload
        } else {
            skip_field(wire_type, number, &mut rest, DecodeContext::default())?;
            &[][..]
        };
        let consumed = start.len() - rest.len();
        out.push(Field {
            number,
            record: &start[..consumed],
            payload,
            delimited,
        });
    }
    Ok(out)
}

/// The string in field `number` of a message (the last one wins, as in protobuf).
pub(crate) fn string_field(fields: &[Field<'_>], number: u32) -> Result<String, WireError> {
    let bytes = fields
        .iter()
        .rev()
        .find(|f| f.number == number && f.delimited)
        .map(|f| f.payload)
        .unwrap_or_default();
    String::from_utf8(bytes.to_vec()).map_err(|source| WireError::NotUtf8 { number, source })
}

/// Appends a length-delimited record (a nested message or a string).
pub(crate) fn put_bytes(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// Appends a varint record (uint64, uint32, bool, and int32/int64 as two's complement).
pub(crate) fn put_varint(out: &mut Vec<u8>, number: u32, value: u64) {
    encode_key(number, WireType::Varint, out);
    encode_varint(value, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_records_of_every_wire_type() {
        let mut buf = Vec::new();
        put_varint(&mut buf, 1, 300);
        put_bytes(&mut buf, 2, b"hello");
        encode_key(3, WireType::SixtyFourBit, &mut buf);
        buf.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        encode_key(4, WireType::ThirtyTwoBit, &mut buf);
        buf.extend_from_slice(&[1, 2, 3, 4]);
        encode_key(5, WireType::StartGroup, &mut buf);
        put_varint(&mut buf, 1, 7);
        encode_key(5, WireType::EndGroup, &mut buf);
        let fields = fields(&buf).unwrap();
        let numbers: Vec<u32> = fields.iter().map(|f| f.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5]);
        assert_eq!(fields[1].payload, b"hello");
        assert!(fields[1].delimited);
        let joined: Vec<u8> = fields.iter().flat_map(|f| f.record.to_vec()).collect();
        assert_eq!(joined, buf);
        assert_eq!(string_field(&fields, 2).unwrap(), "hello");
    }

    #[test]
    fn a_string_that_is_not_utf8_keeps_its_cause() {
        let mut buf = Vec::new();
        put_bytes(&mut buf, 1, &[0xff, 0xfe]);
        let err = string_field(&fields(&buf).unwrap(), 1).unwrap_err();
        assert!(matches!(err, WireError::NotUtf8 { number: 1, .. }));
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn rejects_truncated_input() {
        let mut buf = Vec::new();
        put_bytes(&mut buf, 2, b"hello");
        buf.pop();
        assert!(matches!(
            fields(&buf),
            Err(WireError::Truncated {
                claimed: 5,
                left: 4
            })
        ));
        assert!(matches!(fields(&[0x08]), Err(WireError::Decode(_))));
        assert!(matches!(fields(&[0x00]), Err(WireError::Decode(_))));
    }
}
