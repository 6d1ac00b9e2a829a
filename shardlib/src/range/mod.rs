//! Range maps: which shard owns which part of a keyspace.
//!
//! Two kinds of ranges cover a keyspace, and both come with a map that owns
//! every point of the space exactly once:
//!
//! - [`KeyRange`] and [`RangeMap`]: half-open ranges `[start, end)` of the
//!   keyspace-id space `[0, 2^64)`, named the Vitess way (`-80`, `80-c0`,
//!   `c0-`, `-`). This is how managed keyspaces are sharded: splitting a
//!   range reshards, moving a range rebalances.
//! - [`KeyOrderRange`] and [`KeyOrderMap`]: half-open ranges of raw key bytes
//!   in lexicographic order (users `""` to `"n"` on one shard, `"n"` onwards
//!   on another), for keyspaces that need range scans. Written
//!   `"a".."n"`, `"n"..`, `.."n"` and `..`.
//!
//! A map is always a sorted, gap-free, non-overlapping cover of its whole
//! space: [`RangeMap::new`] and [`KeyOrderMap::new`] refuse anything else
//! with a [`RangeError`] that names the offending ranges, and every mutation
//! (`split`, `merge`, `assign`) either keeps the cover valid or fails and
//! leaves the map unchanged.
//!
//! Lookups never allocate. A [`RangeMap`] keeps a small radix index over the
//! top bits of the range starts, so that a lookup is an index load plus a
//! binary search over the (usually one or two) starts of one bucket.

use std::fmt;

mod cover;
mod key_order;
mod key_order_map;
mod keyrange;
mod map;

pub use key_order::KeyOrderRange;
pub use key_order_map::KeyOrderMap;
pub use keyrange::KeyRange;
pub use map::RangeMap;

/// A range, a range name or a range map was invalid, or a mutation of a map
/// did not apply. Every message names the range (or span) at fault, in its
/// text form (`80-c0` for a [`KeyRange`], `"a".."n"` for a [`KeyOrderRange`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// A range's text form could not be read.
    #[error("invalid range name {name:?}: {reason}")]
    InvalidName {
        /// The text that was given.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A range whose start is not below its end (it would hold no point).
    #[error("range {range} is empty: its start is not below its end")]
    Empty {
        /// The empty range, in text form.
        range: String,
    },
    /// Part of the space is covered by no range of a map.
    #[error("range map has a gap: {missing} is not covered{}", gap_context(.after, .before))]
    Gap {
        /// The uncovered span, in range text form.
        missing: String,
        /// The range that ends where the gap starts, if any.
        after: Option<String>,
        /// The range that starts where the gap ends, if any.
        before: Option<String>,
    },
    /// Two ranges of a map share points.
    #[error("ranges {first} and {second} overlap")]
    Overlap {
        /// The range that starts first.
        first: String,
        /// The range that starts second (possibly equal to `first`).
        second: String,
    },
    /// A mutation named a range that is not exactly one of the map's ranges.
    #[error("range {range} is not in the map")]
    UnknownRange {
        /// The range that was asked for.
        range: String,
    },
    /// Two ranges that were to be joined do not touch: `left` does not end
    /// where `right` starts.
    #[error("ranges {left} and {right} are not adjacent: {left} does not end where {right} starts")]
    NotAdjacent {
        /// The range expected on the left.
        left: String,
        /// The range expected on the right.
        right: String,
    },
    /// A split point that is not strictly inside the range to split.
    #[error("cannot split range {range} at {point}: the point must lie strictly inside the range")]
    SplitPointOutside {
        /// The range that was to be split.
        range: String,
        /// The split point, as `0x` and 16 hex digits for keyspace ids, or as
        /// a quoted byte string for key-order ranges.
        point: String,
    },
    /// A merge of two ranges with different owners: move one range first
    /// (`assign`), so that a merge never silently moves data.
    #[error("cannot merge ranges {left} and {right}: they have different owners")]
    OwnerMismatch {
        /// The left range.
        left: String,
        /// The right range.
        right: String,
    },
    /// A map with more ranges than its `u32` range indexes can count.
    #[error("range map would hold {count} ranges ({range} included), more than the 4294967295 supported")]
    TooManyRanges {
        /// How many ranges the map would hold.
        count: u64,
        /// A range of the map (the one being added, or the first).
        range: String,
    },
}

/// The neighbours of a gap, for [`RangeError::Gap`]'s message.
fn gap_context(after: &Option<String>, before: &Option<String>) -> String {
    match (after, before) {
        (Some(a), Some(b)) => format!(" (between ranges {a} and {b})"),
        (Some(a), None) => format!(" (after range {a}, the last one)"),
        (None, Some(b)) => format!(" (before range {b}, the first one)"),
        (None, None) => " (the map has no ranges)".to_owned(),
    }
}

impl RangeError {
    /// Shorthand for an [`RangeError::InvalidName`].
    pub(crate) fn invalid_name(name: &str, reason: impl Into<String>) -> Self {
        RangeError::InvalidName { name: name.to_owned(), reason: reason.into() }
    }
}

/// Writes `bytes` as the inside of a double-quoted string: printable
/// characters as they are, `"` and `\` escaped with `\`, `\n`, `\r`, `\t`,
/// and every other byte (control characters, whitespace other than a space,
/// bytes that are not UTF-8) as `\xNN`.
pub(crate) fn write_quoted(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("\"")?;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        write!(f, "\\x{b:02x}")?;
                    }
                }
                c => write!(f, "{c}")?,
            }
        }
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    f.write_str("\"")
}

/// `bytes` in the quoted form of [`write_quoted`].
pub(crate) fn quoted(bytes: &[u8]) -> String {
    struct Quoted<'a>(&'a [u8]);
    impl fmt::Display for Quoted<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_quoted(f, self.0)
        }
    }
    Quoted(bytes).to_string()
}
