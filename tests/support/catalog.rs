//! Catalogs for tests that only need distinct valid `meta.Data` bytes.

#![allow(dead_code)]

/// A valid `meta.Data` (the required fields, no entities) carrying `tag` in
/// an unknown field, so catalogs differ byte for byte while the manager
/// accepts them all.
pub fn meta(tag: &[u8]) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let mut bytes = cflux::influx::Catalog::default().to_meta_bytes();
    encode_key(100, WireType::LengthDelimited, &mut bytes);
    encode_varint(tag.len() as u64, &mut bytes);
    bytes.extend_from_slice(tag);
    bytes
}
