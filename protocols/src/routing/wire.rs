//! What routers say to each other, and how compactly.
//!
//! At 1000 nodes every table has 1000 rows and every departure or return of a node
//! changes a row on every node, so the size of one advert decides the mesh's control
//! traffic. Destinations therefore travel by the sender's own number for them (a
//! [`Tag`], a byte or two) once a neighbor can be expected to have learned it, with a
//! 6-byte [`ShortId`] in tables to neighbors that know the mesh, and tables are split
//! into [`BUCKETS`] buckets so that a neighbor who missed something fetches one bucket,
//! not the table.
//!
//! At 1% loss a neighbor misses an update every few seconds, so nearly every periodic
//! digest finds a bucket or two that differ: the buckets' size is what a lost update
//! costs. With 16 buckets the resent buckets were a quarter of the routing bytes at 1000
//! nodes; with 64 and 2-byte fingerprints the digest is 128 bytes every 16 s a link and
//! a resent bucket a sixty-fourth of the table.

use serde::{Deserialize, Serialize};

use crate::{NodeId, ShortId};

/// Buckets a table is split into for digests and partial resends.
pub const BUCKETS: usize = 64;

/// A set of buckets, bit `b` for bucket `b`.
pub type BucketMask = u64;

/// Every bucket.
pub const ALL_BUCKETS: BucketMask = u64::MAX;

/// The bucket a destination's row belongs to.
pub fn bucket(destination: ShortId) -> usize {
    (mix(destination.as_u64()) >> 58) as usize % BUCKETS
}

/// A sender's number for a destination: its own index of it, which its neighbors
/// learn once and then read in place of the destination's id. Tag 0 is always the
/// sender itself.
pub type Tag = u32;

/// Tags are refused from here up: a receiver keeps a slot for every tag below the
/// highest it learned from a neighbor, and no router of a real mesh numbers a million
/// destinations.
pub const MAX_TAG: Tag = 1 << 20;

/// How a destination is named on the wire, besides the sender's [`Tag`] for it: in full
/// where the receiver may not know it yet (a new link, a route not advertised before),
/// by short id in tables to a neighbor that knew the mesh before, and by the tag alone
/// once the receiver has learned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    Tag,
    Short(ShortId),
    Full(NodeId),
}

/// A destination as named on the wire: the sender's tag, and what else `name` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    pub tag: Tag,
    pub name: Name,
}

impl Destination {
    pub fn tag(tag: Tag) -> Destination {
        Destination {
            tag,
            name: Name::Tag,
        }
    }

    pub fn short(tag: Tag, short: ShortId) -> Destination {
        Destination {
            tag,
            name: Name::Short(short),
        }
    }

    pub fn full(tag: Tag, id: NodeId) -> Destination {
        Destination {
            tag,
            name: Name::Full(id),
        }
    }

    /// The short id, when the name carries one.
    pub fn short_id(&self) -> Option<ShortId> {
        match self.name {
            Name::Tag => None,
            Name::Short(short) => Some(short),
            Name::Full(id) => Some(ShortId::of(&id)),
        }
    }
}

/// One advertised route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    pub destination: Destination,
    pub seqno: u32,
    pub metric: u16,
}

/// The two low bits of an advert's head: which name follows the tag.
const FORM_TAG: u64 = 0;
const FORM_SHORT: u64 = 1;
const FORM_FULL: u64 = 2;

/// On the wire as `seqno · 4 + form` (a varint), the tag (a varint), the id bytes the
/// form calls for (none, [`ShortId`]'s, or 32) and the metric. The seqno's spare bits
/// say which form follows, where an enum tag took a byte of every advert; and most
/// adverts name their destination by the tag alone, a byte or two where a short id took
/// six: at 1000 nodes under churn a node sends about a hundred adverts a second.
impl Serialize for Advert {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let form = match self.destination.name {
            Name::Tag => FORM_TAG,
            Name::Short(_) => FORM_SHORT,
            Name::Full(_) => FORM_FULL,
        };
        let elements = if form == FORM_TAG { 3 } else { 4 };
        let mut tuple = serializer.serialize_tuple(elements)?;
        tuple.serialize_element(&(u64::from(self.seqno) << 2 | form))?;
        tuple.serialize_element(&self.destination.tag)?;
        match &self.destination.name {
            Name::Tag => {}
            Name::Short(short) => tuple.serialize_element(short)?,
            Name::Full(id) => tuple.serialize_element(id)?,
        }
        tuple.serialize_element(&self.metric)?;
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Advert {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AdvertVisitor;
        impl<'de> serde::de::Visitor<'de> for AdvertVisitor {
            type Value = Advert;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an advert: seqno and form, tag, name, metric")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Advert, A::Error> {
                use serde::de::Error;
                let missing = |i| A::Error::invalid_length(i, &self);
                let head: u64 = seq.next_element()?.ok_or_else(|| missing(0))?;
                let seqno = u32::try_from(head >> 2)
                    .map_err(|_| A::Error::custom("advert seqno beyond 32 bits"))?;
                let tag: Tag = seq.next_element()?.ok_or_else(|| missing(1))?;
                if tag >= MAX_TAG {
                    return Err(A::Error::custom("advert tag out of range"));
                }
                let name = match head & 3 {
                    FORM_TAG => Name::Tag,
                    FORM_SHORT => Name::Short(seq.next_element()?.ok_or_else(|| missing(2))?),
                    FORM_FULL => Name::Full(seq.next_element()?.ok_or_else(|| missing(2))?),
                    _ => return Err(A::Error::custom("unknown advert form")),
                };
                let metric = seq.next_element()?.ok_or_else(|| missing(3))?;
                Ok(Advert {
                    destination: Destination { tag, name },
                    seqno,
                    metric,
                })
            }
        }
        // The longest form's element count; postcard reads only what the visitor asks.
        deserializer.deserialize_tuple(4, AdvertVisitor)
    }
}

/// Per-bucket fingerprints of a table: wrapping sums of [`advert_hash`], two bytes each.
/// Two tables that differ in a bucket share its fingerprint with probability 2⁻¹⁶; the
/// next change to the bucket tells them apart again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest(pub [u16; BUCKETS]);

impl Default for Digest {
    fn default() -> Self {
        Digest([0; BUCKETS])
    }
}

/// On the wire as `2 · BUCKETS` raw bytes: fingerprints are uniformly random, so varints
/// would spend nearly three bytes on each.
impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = self.0.iter().flat_map(|f| f.to_le_bytes()).collect();
        crate::wire_bytes::serialize(&bytes, serializer)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = crate::wire_bytes::deserialize(deserializer)?;
        if bytes.len() != 2 * BUCKETS {
            return Err(serde::de::Error::invalid_length(
                bytes.len(),
                &"two bytes for each bucket",
            ));
        }
        let mut digest = Digest::default();
        for (f, pair) in digest.0.iter_mut().zip(bytes.chunks_exact(2)) {
            *f = u16::from_le_bytes([pair[0], pair[1]]);
        }
        Ok(digest)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoutingMessage {
    /// Routes that changed. `serial` increases with every update and table a router
    /// sends, so a late copy of an older message never overwrites a newer advert.
    ///
    /// The periodic refresh is an update too, carrying the fingerprints of the sender's
    /// whole advertised table after these adverts. A neighbor whose record of it matches
    /// takes that as a refresh of every route in the bucket; one that differs asks for
    /// the buckets that differ. In a steady mesh the refresh is ~100 bytes a link instead
    /// of the table.
    ///
    /// `incarnation` tells the sender's runs apart: its tags are its own numbering,
    /// which starts afresh when its router does, so what a receiver learned of them
    /// holds only while the incarnation stays the same.
    Update {
        serial: u32,
        incarnation: u8,
        adverts: Vec<Advert>,
        digest: Option<Digest>,
    },
    /// The sender's whole advertised table for the buckets in `buckets`: a destination
    /// in those buckets that is not listed is no longer routed through the sender.
    Table {
        serial: u32,
        incarnation: u8,
        buckets: BucketMask,
        adverts: Vec<Advert>,
    },
    /// "Please send me your table for these buckets": on a new link whose neighbor's
    /// table we dropped before the link counted, and when a digest or an unknown short
    /// id shows that we missed something. `full` asks for full ids: needed on a new link
    /// and for short ids we could not place; a lost update is repaired by short ids, at
    /// a quarter of the size.
    TableRequest { buckets: BucketMask, full: bool },
    /// "Please name these tags of yours in full": they came in adverts whose naming we
    /// missed. Answered with an update naming each.
    NameRequest { tags: Vec<Tag> },
    /// Seqno requests, all that one step of the sender's router had for the receiver.
    SeqnoRequests(Vec<SeqnoRequest>),
}

/// "Please advertise `destination` with a seqno of at least `seqno`." The destination
/// is named by the receiver's own tag for it, which the asker learned from the
/// receiver's adverts (a request goes only to a neighbor that advertised the
/// destination).
///
/// Requests travel in lists ([`RoutingMessage::SeqnoRequests`]): a neighbor that
/// fails takes the routes to hundreds of destinations with it, and the requests for
/// them mostly go the same way at the same moment. One message each paid framing and
/// sealing four times the size of the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqnoRequest {
    pub destination: Tag,
    pub seqno: u32,
    pub hops_left: u8,
}

/// One row's contribution to its bucket's fingerprint: summed, so the order in which
/// rows are kept does not matter. The destination is mixed before the row's values
/// join it: XORed in raw, a destination whose short id equalled its metric hashed to
/// `mix(0) = 0`, and a neighbor that had missed that row never saw its digest differ.
/// The odd constant (splitmix64's increment) keeps short id 0 off that fixed point.
pub fn advert_hash(destination: ShortId, seqno: u32, metric: u16) -> u16 {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
    let row = u64::from(seqno) << 16 | u64::from(metric);
    (mix(mix(destination.as_u64().wrapping_add(GAMMA)) ^ row) >> 48) as u16
}

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Whether serial `a` is newer than `b`, in serial-number arithmetic (RFC 1982), so that
/// the counter may wrap.
pub fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node id whose short id holds `n`.
    fn id_from(n: u64) -> NodeId {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        NodeId(bytes)
    }

    #[test]
    fn serials_compare_across_the_wrap() {
        assert!(serial_newer(1, 0));
        assert!(!serial_newer(0, 1));
        assert!(!serial_newer(5, 5));
        assert!(serial_newer(2, u32::MAX - 3));
        assert!(!serial_newer(u32::MAX - 3, 2));
    }

    #[test]
    fn adverts_by_tag_are_a_fraction_of_named_ones() {
        let id = NodeId([7; 32]);
        let size = |destination| {
            postcard::to_stdvec(&Advert {
                destination,
                seqno: 3,
                metric: 700,
            })
            .expect("serializes")
            .len()
        };
        // Seqno and form, tag, id, metric.
        assert_eq!(size(Destination::full(300, id)), 1 + 2 + 32 + 2);
        assert_eq!(
            size(Destination::short(300, ShortId::of(&id))),
            1 + 2 + 6 + 2
        );
        assert_eq!(size(Destination::tag(300)), 1 + 2 + 2);
        assert_eq!(size(Destination::tag(100)), 1 + 1 + 2);
    }

    #[test]
    fn adverts_of_every_form_read_back_as_written() {
        let id = NodeId([9; 32]);
        let names = [
            Destination::full(1, id),
            Destination::short(MAX_TAG - 1, ShortId::of(&id)),
            Destination::tag(0),
            Destination::tag(70_000),
        ];
        for destination in names {
            for seqno in [0, 1, 63, 64, u32::MAX] {
                let advert = Advert {
                    destination,
                    seqno,
                    metric: crate::routing::INFINITY,
                };
                let update = RoutingMessage::Update {
                    serial: 5,
                    incarnation: 9,
                    adverts: vec![advert, advert],
                    digest: None,
                };
                let bytes = postcard::to_stdvec(&update).expect("serializes");
                assert_eq!(postcard::from_bytes::<RoutingMessage>(&bytes), Ok(update));
            }
        }
        // A seqno beyond 32 bits is refused, not cut.
        let head = (u64::from(u32::MAX) + 1) << 2 | FORM_SHORT;
        let bytes = postcard::to_stdvec(&(head, 1u32, ShortId::of(&id), 7u16)).expect("bytes");
        assert!(postcard::from_bytes::<Advert>(&bytes).is_err());
        // So are an unknown form, a tag out of range, and an advert cut short.
        let bytes = postcard::to_stdvec(&(3u64, 1u32, 7u16)).expect("bytes");
        assert!(postcard::from_bytes::<Advert>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&(FORM_TAG, MAX_TAG, 7u16)).expect("bytes");
        assert!(postcard::from_bytes::<Advert>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&(1u64 << 2 | FORM_FULL, 1u32, [9u8; 8])).expect("bytes");
        assert!(postcard::from_bytes::<Advert>(&bytes).is_err());
    }

    #[test]
    fn every_row_counts_in_its_digest() {
        // Short ids with structure (consecutive, as in tests, or sharing low bits with
        // metrics) must still change the digest. Among 2-byte fingerprints, zeros (rows
        // invisible in their bucket) and collisions happen by chance, at the rates of
        // random values; a structural flaw (a row hashing to 0 whenever its short id
        // equals its metric, as once) shows as many more.
        let mut zeros = 0;
        let mut seen = std::collections::HashSet::new();
        let mut collisions = 0;
        for short in 0..64u64 {
            for seqno in 0..3 {
                for metric in 0..1024 {
                    let hash = advert_hash(ShortId::of(&id_from(short)), seqno, metric);
                    zeros += usize::from(hash == 0);
                    if seqno == 0 && metric < 64 && !seen.insert(hash) {
                        collisions += 1;
                    }
                }
            }
        }
        // 196,608 rows: 3 zeros expected. 4,096 rows: about 125 collisions expected.
        assert!(zeros <= 12, "{zeros} rows hash to 0");
        assert!(collisions <= 200, "{collisions} collisions");
    }

    #[test]
    fn digests_travel_as_two_bytes_a_bucket() {
        let mut digest = Digest::default();
        for (b, f) in digest.0.iter_mut().enumerate() {
            *f = (b as u16).wrapping_mul(40_503);
        }
        let update = RoutingMessage::Update {
            serial: 1,
            incarnation: 0,
            adverts: Vec::new(),
            digest: Some(digest),
        };
        let bytes = postcard::to_stdvec(&update).expect("serializes");
        // Variant, serial, incarnation, no adverts, Some, length (two bytes as a
        // varint), fingerprints.
        assert_eq!(bytes.len(), 1 + 1 + 1 + 1 + 1 + 2 + 2 * BUCKETS);
        assert_eq!(postcard::from_bytes::<RoutingMessage>(&bytes), Ok(update));
        // A digest of any other length is refused, not padded or cut.
        let short = postcard::to_stdvec(&(0u8, 1u8, 0u8, 0u8, 1u8, 2u8, 7u8, 7u8)).expect("bytes");
        assert!(postcard::from_bytes::<RoutingMessage>(&short).is_err());
    }

    #[test]
    fn buckets_spread_consecutive_ids() {
        let mut used = [0usize; BUCKETS];
        for n in 0..6400u64 {
            used[bucket(ShortId::of(&id_from(n)))] += 1;
        }
        assert!(used.iter().all(|&n| (60..140).contains(&n)), "{used:?}");
    }
}
