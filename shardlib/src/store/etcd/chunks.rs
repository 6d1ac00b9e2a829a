//! Range chunks: the ranges of a keyspace, a few thousand per etcd value.
//!
//! Ranges are contiguous, so a range is stored as its start, its owner and
//! whether it is frozen; its end is the next range's start. A start is a
//! byte string: for `hash_range` keyspaces the 8 big-endian bytes of the
//! keyspace id with trailing zero bytes dropped (the bound of the Vitess
//! name: `0x4000…` is `40`), for `key_order` keyspaces the key itself.
//!
//! A chunk is the text
//!
//! ```text
//! shardkit-chunk 1
//! owners s0 s1 s7
//! - 0
//! 4000000000000000 1
//! 8000000000000000 2 f
//! ```
//!
//! one line per range: the start in hex (`-` for the empty start), the
//! owner as an index into the chunk's `owners` line, and `f` if frozen.
//! About 20 bytes per range for a million ranges.
//!
//! Each chunk holds the ranges whose start lies between its *boundary*
//! and the next chunk's. Rewriting a keyspace keeps the boundaries, so that
//! a split, merge or move rewrites only the chunk that holds it; a chunk
//! grown past [`MAX_CHUNK_BYTES`] is cut into chunks of about
//! [`TARGET_CHUNK_BYTES`], and a chunk left with no range disappears.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::id::ShardId;

/// The size chunks are cut to.
pub(super) const TARGET_CHUNK_BYTES: usize = 64 * 1024;

/// A chunk larger than this is cut when it is rewritten.
pub(super) const MAX_CHUNK_BYTES: usize = 192 * 1024;

const HEADER: &str = "shardkit-chunk 1\n";
const OWNERS: &str = "owners";

/// One range: its start, owner and state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// The start (see the module docs).
    pub(super) start: Vec<u8>,
    /// The owning shard.
    pub(super) owner: ShardId,
    /// Whether writes to the range are frozen.
    pub(super) frozen: bool,
}

/// A chunk's boundary and encoded content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Chunk {
    /// The lowest start the chunk may hold.
    pub(super) boundary: Vec<u8>,
    /// The encoded ranges.
    pub(super) bytes: Vec<u8>,
}

/// Builds one chunk's text, range by range.
struct Encoder<'a> {
    owners: Vec<&'a str>,
    index: HashMap<&'a str, usize>,
    owners_len: usize,
    body: String,
}

impl<'a> Encoder<'a> {
    fn new() -> Self {
        Encoder { owners: Vec::new(), index: HashMap::new(), owners_len: 0, body: String::new() }
    }

    fn push(&mut self, entry: &'a Entry) {
        let owner = entry.owner.as_str();
        let next = self.owners.len();
        let index = *self.index.entry(owner).or_insert(next);
        if index == next {
            self.owners.push(owner);
            self.owners_len += owner.len() + 1;
        }
        if entry.start.is_empty() {
            self.body.push('-');
        } else {
            push_hex(&mut self.body, &entry.start);
        }
        let _ = write!(self.body, " {index}");
        if entry.frozen {
            self.body.push_str(" f");
        }
        self.body.push('\n');
    }

    fn len(&self) -> usize {
        HEADER.len() + OWNERS.len() + self.owners_len + 1 + self.body.len()
    }

    fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    fn finish(self) -> Vec<u8> {
        let mut out = String::with_capacity(self.len());
        out.push_str(HEADER);
        out.push_str(OWNERS);
        for owner in &self.owners {
            out.push(' ');
            out.push_str(owner);
        }
        out.push('\n');
        out.push_str(&self.body);
        out.into_bytes()
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

/// Encodes `entries` as one chunk.
pub(super) fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut encoder = Encoder::new();
    for entry in entries {
        encoder.push(entry);
    }
    encoder.finish()
}

/// Checks a chunk's header and owners line; returns the owners and the
/// range lines that follow. The error says what is wrong, without the content.
fn split_header(bytes: &[u8]) -> Result<(Vec<ShardId>, &str), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "chunk is not utf-8".to_owned())?;
    let body = text.strip_prefix(HEADER).ok_or("chunk does not start with the chunk header")?;
    let (owners_line, lines) = body.split_once('\n').ok_or("chunk has no owners line")?;
    let mut names = owners_line.split(' ');
    if names.next() != Some(OWNERS) {
        return Err("chunk has no owners line".to_owned());
    }
    let owners = names.map(ShardId::new).collect::<Result<Vec<_>, _>>().map_err(|e| format!("chunk owner: {e}"))?;
    Ok((owners, lines))
}

/// Decodes a chunk. The error says what is wrong, without the content.
pub(super) fn decode(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let (owners, lines) = split_header(bytes)?;
    let mut entries: Vec<Entry> = Vec::with_capacity(lines.len() / 20);
    for (number, line) in lines.lines().enumerate() {
        let bad = |what: &str| format!("chunk line {}: {what}", number + 3);
        let mut fields = line.split(' ');
        let start = match fields.next() {
            Some("-") => Vec::new(),
            Some(hex) => super::layout::unhex(hex).filter(|b| !b.is_empty()).ok_or_else(|| bad("bad start"))?,
            None => return Err(bad("empty line")),
        };
        let owner = fields.next().and_then(|i| i.parse::<usize>().ok()).and_then(|i| owners.get(i));
        let owner = owner.ok_or_else(|| bad("bad owner index"))?.clone();
        let frozen = match fields.next() {
            None => false,
            Some("f") => true,
            Some(_) => return Err(bad("bad flag")),
        };
        if fields.next().is_some() {
            return Err(bad("extra fields"));
        }
        if entries.last().is_some_and(|last| last.start >= start) {
            return Err(bad("starts are not increasing"));
        }
        entries.push(Entry { start, owner, frozen });
    }
    Ok(entries)
}

/// Decodes a chunk of a `hash_range` keyspace without allocating per
/// range: calls `push(start, owner, frozen)` for each line, the start as
/// the keyspace id (see [`super::meta`]: big-endian bytes with trailing zero
/// bytes dropped, so at most 16 hex digits). Checks what [`decode`] checks.
pub(super) fn decode_hash(bytes: &[u8], mut push: impl FnMut(u64, &ShardId, bool)) -> Result<(), String> {
    let (owners, lines) = split_header(bytes)?;
    let mut last: Option<u64> = None;
    for (number, line) in lines.lines().enumerate() {
        let bad = |what: &str| format!("chunk line {}: {what}", number + 3);
        let mut fields = line.split(' ');
        let start = match fields.next() {
            Some("-") => 0,
            Some(hex) if !hex.is_empty() && hex.len() <= 16 && hex.len().is_multiple_of(2) => {
                let value = u64::from_str_radix(hex, 16).map_err(|_| bad("bad start"))?;
                // `0x40` is `0x4000_0000_0000_0000`.
                value << (64 - 4 * hex.len() as u32)
            }
            _ => return Err(bad("bad start")),
        };
        let owner = fields.next().and_then(|i| i.parse::<usize>().ok()).and_then(|i| owners.get(i));
        let owner = owner.ok_or_else(|| bad("bad owner index"))?;
        let frozen = match fields.next() {
            None => false,
            Some("f") => true,
            Some(_) => return Err(bad("bad flag")),
        };
        if fields.next().is_some() {
            return Err(bad("extra fields"));
        }
        if last.is_some_and(|last| last >= start) {
            return Err(bad("starts are not increasing"));
        }
        last = Some(start);
        push(start, owner, frozen);
    }
    Ok(())
}

/// Cuts `entries` (sorted by start) into chunks of about
/// [`TARGET_CHUNK_BYTES`]; the first chunk gets `first_boundary`, the others
/// the start of their first range.
fn pack(entries: &[Entry], first_boundary: &[u8], out: &mut Vec<Chunk>) {
    let mut encoder = Encoder::new();
    let mut boundary = first_boundary.to_vec();
    for entry in entries {
        if encoder.len() >= TARGET_CHUNK_BYTES {
            let full = std::mem::replace(&mut encoder, Encoder::new());
            out.push(Chunk { boundary: std::mem::replace(&mut boundary, entry.start.clone()), bytes: full.finish() });
        }
        encoder.push(entry);
    }
    if !encoder.is_empty() {
        out.push(Chunk { boundary, bytes: encoder.finish() });
    }
}

/// Chunks `entries` (sorted by start, the first one starting at the empty
/// start). With `old` boundaries (sorted, the first one empty), every old
/// chunk keeps its boundary: unchanged ranges give byte-identical chunks.
/// Without, the ranges are packed from scratch.
pub(super) fn plan(entries: &[Entry], old: Option<&[Vec<u8>]>) -> Vec<Chunk> {
    let mut out = Vec::new();
    let old = old.filter(|old| old.first().is_some_and(|first| first.is_empty()));
    let Some(old) = old else {
        pack(entries, &[], &mut out);
        return out;
    };
    for (i, boundary) in old.iter().enumerate() {
        let lo = entries.partition_point(|e| e.start < *boundary);
        let hi = old.get(i + 1).map_or(entries.len(), |next| entries.partition_point(|e| e.start < *next));
        let slice = &entries[lo..hi];
        if slice.is_empty() {
            continue;
        }
        let bytes = encode(slice);
        if bytes.len() <= MAX_CHUNK_BYTES {
            out.push(Chunk { boundary: boundary.clone(), bytes });
        } else {
            pack(slice, boundary, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u64, owners: u64) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                start: if i == 0 { Vec::new() } else { (i * (u64::MAX / n)).to_be_bytes().to_vec() },
                owner: ShardId::new(format!("s{}", i % owners)).unwrap(),
                frozen: i % 7 == 3,
            })
            .collect()
    }

    #[test]
    fn chunks_round_trip() {
        let all = entries(50, 3);
        let bytes = encode(&all);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("shardkit-chunk 1\nowners s0 s1 s2\n- 0\n"), "{text}");
        assert_eq!(decode(&bytes).unwrap(), all);
        for bad in
            ["", "shardkit-chunk 1\n", "shardkit-chunk 1\nowners s0\n- 1\n", "shardkit-chunk 1\nowners s0\n- 0 x\n"]
        {
            assert!(decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let unsorted = "shardkit-chunk 1\nowners s0\n80 0\n40 0\n";
        assert!(decode(unsorted.as_bytes()).unwrap_err().contains("not increasing"));
    }

    #[test]
    fn small_changes_touch_one_chunk() {
        let mut all = entries(20_000, 5);
        let before = plan(&all, None);
        assert!(before.len() > 3, "{}", before.len());
        assert!(before.iter().all(|c| c.bytes.len() <= TARGET_CHUNK_BYTES + 100));
        let joined: Vec<Entry> = before.iter().flat_map(|c| decode(&c.bytes).unwrap()).collect();
        assert_eq!(joined, all);

        // Split one range in the middle: only its chunk changes.
        let at = 10_001;
        let mid = u64::from_be_bytes(all[at].start.clone().try_into().unwrap()) + 5;
        all.insert(
            at + 1,
            Entry { start: mid.to_be_bytes().to_vec(), owner: ShardId::new("s9").unwrap(), frozen: false },
        );
        let boundaries: Vec<Vec<u8>> = before.iter().map(|c| c.boundary.clone()).collect();
        let after = plan(&all, Some(&boundaries));
        assert_eq!(after.len(), before.len());
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1);

        // A chunk that grows too large is cut; one that empties disappears.
        let big = plan(&all, Some(&[Vec::new()]));
        assert!(big.len() >= before.len() && big.len() <= before.len() + 1, "{}", big.len());
        assert!(big.iter().all(|c| c.bytes.len() <= TARGET_CHUNK_BYTES + 100));
        let gone = plan(&all[..1], Some(&boundaries));
        assert_eq!(gone.len(), 1);
    }
}
