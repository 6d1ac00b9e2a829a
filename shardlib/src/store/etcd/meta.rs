//! The meta document of a keyspace: its settings and shards, and for range
//! partitionings the index of its range chunks (the ranges themselves live
//! in the chunks, see [`super::chunks`]).
//!
//! ```json
//! {
//!   "format": 1,
//!   "keyspace": { "key_type": "u64", "tables": […], "shards": […],
//!                 "partitioning": { "algorithm": "hash_range", "ranges": [] } },
//!   "chunks": { "generation": "5f0c9a1e33b2d407", "ranges": 1000000,
//!               "boundaries": ["", "0a3d70a3d70a3d70", …] }
//! }
//! ```
//!
//! `keyspace` is the keyspace as in a topology file, with its ranges left
//! out when they are chunked; `chunks` names the generation whose chunks
//! hold them, the chunks' boundaries in order (hex), and the number of
//! ranges, which a reader checks.

use serde::{Deserialize, Serialize};

use super::chunks::{self, Entry};
use super::layout::{hex, unhex};
use crate::range::{KeyOrderRange, KeyRange};
use crate::store::StoreError;
use crate::topology::{KeyOrderAssignment, Keyspace, Partitioning, RangeAssignment, RangeState};

/// The format version written and accepted.
const FORMAT: u32 = 1;

/// A keyspace's meta document.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Meta {
    format: u32,
    /// The keyspace, without its ranges when `chunks` is set.
    pub(super) keyspace: Keyspace,
    /// Where the ranges are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) chunks: Option<ChunkIndex>,
}

/// Which chunks hold a keyspace's ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChunkIndex {
    /// The generation (16 hex digits).
    pub(super) generation: String,
    /// How many ranges the chunks hold together.
    pub(super) ranges: u64,
    /// The chunks' boundaries in order, in hex; the first is empty.
    pub(super) boundaries: Vec<String>,
}

impl ChunkIndex {
    /// The boundaries as bytes.
    pub(super) fn boundary_bytes(&self) -> Result<Vec<Vec<u8>>, String> {
        self.boundaries.iter().map(|b| unhex(b).ok_or_else(|| format!("bad chunk boundary {b:?}"))).collect()
    }
}

impl Meta {
    /// A meta document for `keyspace` (which must be without its ranges
    /// when `chunks` is set).
    pub(super) fn new(keyspace: Keyspace, chunks: Option<ChunkIndex>) -> Self {
        Meta { format: FORMAT, keyspace, chunks }
    }

    /// The document as stored.
    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a keyspace always serializes")
    }

    /// Reads a stored document.
    pub(super) fn decode(bytes: &[u8]) -> Result<Meta, String> {
        let meta: Meta = serde_json::from_slice(bytes).map_err(|e| format!("bad keyspace document: {e}"))?;
        if meta.format != FORMAT {
            return Err(format!("keyspace document has format {}, this version reads {FORMAT}", meta.format));
        }
        Ok(meta)
    }
}

/// The index of `chunks` under `generation`.
pub(super) fn index(generation: &str, ranges: usize, chunks: &[chunks::Chunk]) -> ChunkIndex {
    ChunkIndex {
        generation: generation.to_owned(),
        ranges: ranges as u64,
        boundaries: chunks.iter().map(|c| hex(&c.boundary)).collect(),
    }
}

/// The start of a hash range as chunk bytes: big-endian, trailing zero
/// bytes dropped.
fn hash_start(start: u64) -> Vec<u8> {
    // 0 has 64 trailing zero bits: all 8 bytes go, leaving the empty start.
    let len = 8 - (start.trailing_zeros() / 8) as usize;
    start.to_be_bytes()[..len].to_vec()
}

/// The keyspace id of a hash range start in chunk bytes.
fn hash_start_value(bytes: &[u8]) -> Option<u64> {
    let mut full = [0u8; 8];
    full.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(u64::from_be_bytes(full))
}

/// Splits a keyspace into the keyspace without its ranges and the ranges as
/// sorted entries, or returns `None` if its partitioning has no ranges.
pub(super) fn split(keyspace: &Keyspace) -> Option<(Keyspace, Vec<Entry>)> {
    let (mut entries, bare) = match &keyspace.partitioning {
        Partitioning::HashRange { ranges } => {
            let entries: Vec<Entry> = ranges
                .iter()
                .map(|r| Entry {
                    start: hash_start(r.range.start()),
                    owner: r.shard.clone(),
                    frozen: r.state == RangeState::Frozen,
                })
                .collect();
            (entries, Partitioning::HashRange { ranges: Vec::new() })
        }
        Partitioning::KeyOrder { ranges } => {
            let entries: Vec<Entry> = ranges
                .iter()
                .map(|r| Entry {
                    start: r.range.start().to_vec(),
                    owner: r.shard.clone(),
                    frozen: r.state == RangeState::Frozen,
                })
                .collect();
            (entries, Partitioning::KeyOrder { ranges: Vec::new() })
        }
        _ => return None,
    };
    if !entries.is_sorted_by(|a, b| a.start < b.start) {
        entries.sort_by(|a, b| a.start.cmp(&b.start));
    }
    let bare = Keyspace {
        seed: keyspace.seed,
        key_type: keyspace.key_type,
        tables: keyspace.tables.clone(),
        shards: keyspace.shards.clone(),
        partitioning: bare,
    };
    Some((bare, entries))
}

/// Puts the ranges back into a keyspace without them: each range ends where
/// the next one starts.
pub(super) fn join(mut keyspace: Keyspace, entries: Vec<Entry>) -> Result<Keyspace, String> {
    let state = |frozen| if frozen { RangeState::Frozen } else { RangeState::Serving };
    match &mut keyspace.partitioning {
        Partitioning::HashRange { ranges } => {
            let starts = entries
                .iter()
                .map(|e| hash_start_value(&e.start).ok_or_else(|| format!("bad range start {}", hex(&e.start))))
                .collect::<Result<Vec<u64>, String>>()?;
            *ranges = Vec::with_capacity(entries.len());
            for (i, entry) in entries.into_iter().enumerate() {
                let range = KeyRange::new(starts[i], starts.get(i + 1).copied()).map_err(|e| e.to_string())?;
                ranges.push(RangeAssignment { range, shard: entry.owner, state: state(entry.frozen) });
            }
        }
        Partitioning::KeyOrder { ranges } => {
            *ranges = Vec::with_capacity(entries.len());
            let mut entries = entries.into_iter().peekable();
            while let Some(entry) = entries.next() {
                let end = entries.peek().map(|next| next.start.clone());
                let range = KeyOrderRange::new(entry.start, end).map_err(|e| e.to_string())?;
                ranges.push(KeyOrderAssignment { range, shard: entry.owner, state: state(entry.frozen) });
            }
        }
        other => return Err(format!("a {} keyspace has no range chunks", other.algorithm())),
    }
    Ok(keyspace)
}

/// Rebuilds a keyspace from its meta and the content of its chunks, given
/// by boundary; checks that every chunk is there, that each holds only
/// starts between its boundary and the next, and the number of ranges.
pub(super) fn assemble<'a>(
    meta: Meta,
    mut chunk: impl FnMut(&[u8]) -> Option<&'a [u8]>,
) -> Result<Keyspace, StoreError> {
    let Some(index) = &meta.chunks else { return Ok(meta.keyspace) };
    let invalid = |message: String| StoreError::Backend { message };
    let boundaries = index.boundary_bytes().map_err(invalid)?;
    if matches!(meta.keyspace.partitioning, Partitioning::HashRange { .. }) {
        return assemble_hash(meta.keyspace, index, &boundaries, chunk).map_err(invalid);
    }
    let mut entries: Vec<Entry> = Vec::with_capacity(index.ranges.min(1 << 24) as usize);
    for (i, boundary) in boundaries.iter().enumerate() {
        let bytes = chunk(boundary).ok_or_else(|| {
            invalid(format!("chunk @{} of generation {} is missing", hex(boundary), index.generation))
        })?;
        let part = chunks::decode(bytes).map_err(|e| invalid(format!("chunk @{}: {e}", hex(boundary))))?;
        let next = boundaries.get(i + 1);
        let outside = part.iter().any(|e| e.start < *boundary || next.is_some_and(|next| e.start >= *next));
        if outside || part.is_empty() {
            return Err(invalid(format!("chunk @{} holds ranges outside its bounds", hex(boundary))));
        }
        entries.extend(part);
    }
    if entries.len() as u64 != index.ranges {
        return Err(invalid(format!("the chunks hold {} ranges, the keyspace has {}", entries.len(), index.ranges)));
    }
    join(meta.keyspace, entries).map_err(invalid)
}

/// [`assemble`] for a `hash_range` keyspace: decodes the chunks straight
/// into ranges, with one allocation per range (its owner's id).
fn assemble_hash<'a>(
    mut keyspace: Keyspace,
    index: &ChunkIndex,
    boundaries: &[Vec<u8>],
    mut chunk: impl FnMut(&[u8]) -> Option<&'a [u8]>,
) -> Result<Keyspace, String> {
    let bound = |bytes: &[u8]| hash_start_value(bytes).ok_or_else(|| format!("bad chunk boundary {}", hex(bytes)));
    let count = index.ranges.min(1 << 24) as usize;
    let mut starts: Vec<u64> = Vec::with_capacity(count);
    let mut owners: Vec<(crate::id::ShardId, bool)> = Vec::with_capacity(count);
    for (i, boundary) in boundaries.iter().enumerate() {
        let bytes = chunk(boundary)
            .ok_or_else(|| format!("chunk @{} of generation {} is missing", hex(boundary), index.generation))?;
        let lo = bound(boundary)?;
        let hi = boundaries.get(i + 1).map(|next| bound(next)).transpose()?;
        let before = starts.len();
        let mut outside = false;
        chunks::decode_hash(bytes, |start, owner, frozen| {
            outside |= start < lo || hi.is_some_and(|hi| start >= hi);
            starts.push(start);
            owners.push((owner.clone(), frozen));
        })
        .map_err(|e| format!("chunk @{}: {e}", hex(boundary)))?;
        if outside || starts.len() == before {
            return Err(format!("chunk @{} holds ranges outside its bounds", hex(boundary)));
        }
    }
    if starts.len() as u64 != index.ranges {
        return Err(format!("the chunks hold {} ranges, the keyspace has {}", starts.len(), index.ranges));
    }
    let Partitioning::HashRange { ranges } = &mut keyspace.partitioning else {
        return Err("not a hash_range keyspace".to_owned());
    };
    *ranges = Vec::with_capacity(starts.len());
    for (i, (shard, frozen)) in owners.into_iter().enumerate() {
        let range = KeyRange::new(starts[i], starts.get(i + 1).copied()).map_err(|e| e.to_string())?;
        let state = if frozen { RangeState::Frozen } else { RangeState::Serving };
        ranges.push(RangeAssignment { range, shard, state });
    }
    Ok(keyspace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_starts_drop_trailing_zero_bytes() {
        assert_eq!(hash_start(0), Vec::<u8>::new());
        assert_eq!(hash_start(0x4000_0000_0000_0000), vec![0x40]);
        assert_eq!(hash_start(0x4000_0000_0000_0001), vec![0x40, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(hash_start(0x0100), vec![0, 0, 0, 0, 0, 0, 1]);
        for v in [0, 1, 0x80 << 56, u64::MAX, 0x1234_5600_0000_0000] {
            assert_eq!(hash_start_value(&hash_start(v)), Some(v));
        }
        assert_eq!(hash_start_value(&[0; 9]), None);
        // Byte order of the trimmed form is the order of the ids.
        let mut ids = [5u64, 0x40 << 56, (0x40 << 56) + 1, 0x4001 << 48, u64::MAX, 0];
        let mut bytes: Vec<Vec<u8>> = ids.iter().map(|&v| hash_start(v)).collect();
        ids.sort();
        bytes.sort();
        assert_eq!(bytes, ids.iter().map(|&v| hash_start(v)).collect::<Vec<_>>());
    }
}
