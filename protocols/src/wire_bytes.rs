//! Serde for a byte string as one block (`#[serde(with = "crate::wire_bytes")]`).
//!
//! Serde treats a `Vec<u8>` as a sequence and moves it one byte at a time. Postcard
//! writes a sequence of bytes and a byte string identically (a varint length, then the
//! bytes), so this changes no wire format; it only moves the bytes as one block, which
//! matters for envelope payloads, the bulk of every link's traffic.

use std::fmt;

use serde::de::Visitor;
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
        Ok(bytes.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct AsSequence {
        tag: u16,
        payload: Vec<u8>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct AsBlock {
        tag: u16,
        #[serde(with = "crate::wire_bytes")]
        payload: Vec<u8>,
    }

    #[test]
    fn the_wire_format_is_unchanged_both_ways() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let old = postcard::to_stdvec(&AsSequence {
                tag: 9,
                payload: payload.clone(),
            })
            .unwrap();
            let new = postcard::to_stdvec(&AsBlock {
                tag: 9,
                payload: payload.clone(),
            })
            .unwrap();
            assert_eq!(old, new, "length {len}");
            let back: AsBlock = postcard::from_bytes(&old).unwrap();
            assert_eq!(back.payload, payload);
        }
    }
}
