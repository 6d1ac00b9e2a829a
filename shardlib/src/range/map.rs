//! [`RangeMap`]: which owner holds each keyspace id, as a cover of the
//! keyspace-id space by [`KeyRange`]s.
//!
//! # Lookup
//!
//! The starts of the ranges are kept sorted in one `Vec<u64>`. A radix index
//! with `2^b` slots records, for each value of the top `b` bits of a
//! keyspace id, the range that holds the first id with those bits, where
//! `b = ceil(log2(ranges)) + 3`, at most 20 (8 slots per range, at most
//! 4 MiB). A lookup reads two neighbouring slots; if they agree (most of the
//! time) that is the answer, else it binary searches only the starts between
//! them, never more than a plain binary search would. Nothing is allocated
//! and only integer comparisons are made.
//!
//! Mutations (`split`, `merge`) rebuild the index in `O(ranges)`; a router
//! compiles a map once per topology change and then only reads it.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::RangeError;
use super::cover::Cover;
use super::keyrange::KeyRange;
use crate::key::KeyspaceId;

/// Radix slots per range, as a power of two: 2^3 = 8.
const INDEX_EXTRA_BITS: u32 = 3;
/// The largest radix index: 2^20 slots (4 MiB), reached at 131,073 ranges.
const MAX_INDEX_BITS: u32 = 20;

/// A sorted, gap-free, non-overlapping cover of the keyspace-id space
/// `[0, 2^64)` by [`KeyRange`]s, each owned by an `O` (a shard index in the
/// router, a shard id in the topology).
///
/// Serde writes the map as a JSON object from canonical range name to owner,
/// in range order (`{"-80": 0, "80-": 1}`), and validates it on reading like
/// [`RangeMap::new`].
#[derive(Clone)]
pub struct RangeMap<O> {
    cover: Cover<KeyRange, O>,
    /// `index[b]` is the range holding the first id whose top bits are `b`;
    /// the last slot is the last range.
    index: Box<[u32]>,
    /// `64 - b`.
    shift: u32,
}

impl<O> RangeMap<O> {
    /// Builds a map from `(range, owner)` pairs in any order. They must cover
    /// `[0, 2^64)` exactly once: the first range starts at 0, each range
    /// starts where the previous one ends, and the last one runs to the end.
    /// Fails with [`RangeError::Gap`] or [`RangeError::Overlap`] naming the
    /// first offending ranges (an empty list is a gap named `-`).
    pub fn new(assignments: Vec<(KeyRange, O)>) -> Result<Self, RangeError> {
        Ok(Self::from_cover(Cover::new(assignments)?))
    }

    /// Builds a map from valid starts (sorted, distinct, the first 0) and
    /// their owners, merging neighbours with equal owners.
    pub(crate) fn from_starts_coalesced(starts_owners: impl IntoIterator<Item = (u64, O)>) -> Self
    where
        O: PartialEq,
    {
        let mut cover = Cover { starts: Vec::new(), owners: Vec::new() };
        for (start, owner) in starts_owners {
            debug_assert!(cover.starts.last().is_none_or(|&last| last < start));
            if cover.owners.last() != Some(&owner) {
                cover.starts.push(start);
                cover.owners.push(owner);
            }
        }
        debug_assert_eq!(cover.starts.first(), Some(&0));
        Self::from_cover(cover)
    }

    fn from_cover(cover: Cover<KeyRange, O>) -> Self {
        let (index, shift) = build_index(&cover.starts);
        RangeMap { cover, index, shift }
    }

    fn reindex(&mut self) {
        (self.index, self.shift) = build_index(&self.cover.starts);
    }

    /// The position of the range holding `id`.
    #[inline]
    fn position(&self, id: u64) -> usize {
        let slot = (id >> self.shift) as usize;
        let lo = self.index[slot] as usize;
        let hi = self.index[slot + 1] as usize;
        if lo == hi {
            return lo;
        }
        lo + self.cover.starts[lo + 1..hi + 1].partition_point(|&start| start <= id)
    }

    /// The owner of `id`. Never allocates.
    #[inline]
    pub fn lookup(&self, id: KeyspaceId) -> &O {
        &self.cover.owners[self.position(id.0)]
    }

    /// The range holding `id`, and its owner.
    #[inline]
    pub fn lookup_range(&self, id: KeyspaceId) -> (KeyRange, &O) {
        let i = self.position(id.0);
        (self.cover.range(i), &self.cover.owners[i])
    }

    /// The ranges in order, with their owners.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (KeyRange, &O)> + ExactSizeIterator + '_ {
        self.cover.iter()
    }

    /// The ranges in order.
    pub fn ranges(&self) -> impl DoubleEndedIterator<Item = KeyRange> + ExactSizeIterator + '_ {
        (0..self.len()).map(|i| self.cover.range(i))
    }

    /// The number of ranges (at least 1).
    #[inline]
    pub fn len(&self) -> usize {
        self.cover.len()
    }

    /// Always `false`: a map covers the whole space, so it has a range.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The owner of exactly `range`, if it is one of the map's ranges.
    pub fn find(&self, range: &KeyRange) -> Option<&O> {
        self.cover.find(range)
    }

    /// Splits `range` (one of the map's ranges) at `at`, strictly inside it:
    /// `[start, at)` keeps its owner, `[at, end)` goes to `right_owner`.
    /// Fails, leaving the map unchanged, with [`RangeError::UnknownRange`]
    /// or [`RangeError::SplitPointOutside`].
    pub fn split(&mut self, range: KeyRange, at: u64, right_owner: O) -> Result<(), RangeError> {
        self.cover.split(&range, at, right_owner)?;
        self.reindex();
        Ok(())
    }

    /// Joins two neighbouring ranges of the map, `left` ending where `right`
    /// starts, into one.
    ///
    /// Both must have the same owner, which keeps the joined range: a merge
    /// only changes bookkeeping and never moves data. To join ranges of
    /// different owners, first move one of them with [`RangeMap::assign`].
    /// Fails, leaving the map unchanged, with [`RangeError::UnknownRange`],
    /// [`RangeError::NotAdjacent`] or [`RangeError::OwnerMismatch`].
    pub fn merge(&mut self, left: KeyRange, right: KeyRange) -> Result<(), RangeError>
    where
        O: PartialEq,
    {
        self.cover.merge(&left, &right)?;
        self.reindex();
        Ok(())
    }

    /// Gives `range` (one of the map's ranges) to `owner` and returns the
    /// previous owner. Fails, leaving the map unchanged, with
    /// [`RangeError::UnknownRange`].
    pub fn assign(&mut self, range: KeyRange, owner: O) -> Result<O, RangeError> {
        self.cover.assign(&range, owner)
    }

    /// The same ranges with owners mapped by `f`.
    pub fn map_owners<P>(&self, f: impl FnMut(&O) -> P) -> RangeMap<P> {
        RangeMap { cover: self.cover.map_owners(f), index: self.index.clone(), shift: self.shift }
    }

    /// The spans of the space whose owner differs between `self` and
    /// `other`, in order, as `(span, owner in self, owner in other)`.
    /// Neighbouring spans with the same pair of owners are joined, so that
    /// comparing a layout with its successor lists exactly the moves.
    pub fn diff<'a>(&'a self, other: &'a RangeMap<O>) -> Vec<(KeyRange, &'a O, &'a O)>
    where
        O: PartialEq,
    {
        let ends = |map: &RangeMap<O>, i: usize| map.cover.starts.get(i + 1).map_or(1u128 << 64, |&s| u128::from(s));
        let mut out: Vec<(KeyRange, &O, &O)> = Vec::new();
        let (mut i, mut j, mut at) = (0, 0, 0u128);
        while at < 1 << 64 {
            let (a, b) = (&self.cover.owners[i], &other.cover.owners[j]);
            let (end_i, end_j) = (ends(self, i), ends(other, j));
            let end = end_i.min(end_j);
            if a != b {
                let end64 = u64::try_from(end).ok();
                match out.last_mut() {
                    Some((span, x, y)) if span.end() == Some(at as u64) && *x == a && *y == b => {
                        *span = KeyRange::new(span.start(), end64).expect("a span grows to the right");
                    }
                    _ => out.push((KeyRange::new(at as u64, end64).expect("a span is non-empty"), a, b)),
                }
            }
            i += usize::from(end_i == end);
            j += usize::from(end_j == end);
            at = end;
        }
        out
    }
}

/// Builds the radix index over `starts` (sorted, distinct, the first 0).
fn build_index(starts: &[u64]) -> (Box<[u32]>, u32) {
    let n = starts.len();
    let ceil_log2 = usize::BITS - n.saturating_sub(1).leading_zeros();
    let bits = (ceil_log2 + INDEX_EXTRA_BITS).min(MAX_INDEX_BITS);
    let shift = 64 - bits;
    let slots = 1usize << bits;
    let mut index = Vec::with_capacity(slots + 1);
    let mut i = 0;
    for slot in 0..slots {
        let first = (slot as u64) << shift;
        while i + 1 < n && starts[i + 1] <= first {
            i += 1;
        }
        index.push(i as u32);
    }
    index.push((n - 1) as u32);
    (index.into_boxed_slice(), shift)
}

impl<O: PartialEq> PartialEq for RangeMap<O> {
    fn eq(&self, other: &Self) -> bool {
        self.cover == other.cover
    }
}

impl<O: Eq> Eq for RangeMap<O> {}

impl<O: fmt::Debug> fmt::Debug for RangeMap<O> {
    /// Formats as `{-80: owner, 80-: owner}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cover.fmt_debug(f)
    }
}

impl<O: Serialize> Serialize for RangeMap<O> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (range, owner) in self.iter() {
            map.serialize_entry(&range, owner)?;
        }
        map.end()
    }
}

impl<'de, O: Deserialize<'de>> Deserialize<'de> for RangeMap<O> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<O>(std::marker::PhantomData<O>);
        impl<'de, O: Deserialize<'de>> Visitor<'de> for MapVisitor<O> {
            type Value = RangeMap<O>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from key range name to owner, covering the keyspace-id space")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut assignments = Vec::with_capacity(access.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(entry) = access.next_entry::<KeyRange, O>()? {
                    assignments.push(entry);
                }
                RangeMap::new(assignments).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> KeyRange {
        name.parse().unwrap()
    }

    fn map(pairs: &[(&str, u32)]) -> Result<RangeMap<u32>, RangeError> {
        RangeMap::new(pairs.iter().map(|&(name, owner)| (r(name), owner)).collect())
    }

    #[test]
    fn lookup_finds_the_owner() {
        let m = map(&[("c0-", 3), ("-40", 0), ("80-c0", 2), ("40-80", 1)]).unwrap();
        assert_eq!(m.len(), 4);
        for (id, owner) in [(0, 0), ((0x40 << 56) - 1, 0), (0x40 << 56, 1), (1 << 63, 2), (u64::MAX, 3)] {
            assert_eq!(*m.lookup(KeyspaceId(id)), owner, "{id:#x}");
        }
        assert_eq!(m.lookup_range(KeyspaceId(0x90 << 56)), (r("80-c0"), &2));
        let names: Vec<String> = m.ranges().map(|r| r.to_string()).collect();
        assert_eq!(names, ["-40", "40-80", "80-c0", "c0-"]);
        assert_eq!(m.find(&r("80-c0")), Some(&2));
        assert_eq!(m.find(&r("80-")), None);
        let one = map(&[("-", 7)]).unwrap();
        assert_eq!(*one.lookup(KeyspaceId::MAX), 7);
    }

    #[test]
    fn lookup_handles_crowded_slots() {
        // Many ranges inside one radix slot, and empty slots around them.
        let mut pairs: Vec<(KeyRange, u32)> = Vec::new();
        let mut start = 0;
        for (i, end) in (1..100u64).map(|k| k * 3).chain([1 << 40, 1 << 63]).enumerate() {
            pairs.push((KeyRange::new(start, Some(end)).unwrap(), i as u32));
            start = end;
        }
        pairs.push((KeyRange::new(start, None).unwrap(), 999));
        let m = RangeMap::new(pairs.clone()).unwrap();
        for id in (0..400).chain([1 << 39, (1 << 40) - 1, 1 << 40, u64::MAX - 1, u64::MAX]) {
            let expected = pairs.iter().find(|(r, _)| r.contains(KeyspaceId(id))).unwrap();
            assert_eq!(m.lookup_range(KeyspaceId(id)), (expected.0, &expected.1), "{id}");
        }
    }

    #[test]
    fn invalid_covers_are_rejected_naming_ranges() {
        let cases: [(&[(&str, u32)], &str); 7] = [
            (&[], "range map has a gap: - is not covered (the map has no ranges)"),
            (&[("40-", 0)], "range map has a gap: -40 is not covered (before range 40-, the first one)"),
            (&[("-80", 0)], "range map has a gap: 80- is not covered (after range -80, the last one)"),
            (&[("-40", 0), ("80-", 1)], "range map has a gap: 40-80 is not covered (between ranges -40 and 80-)"),
            (&[("-80", 0), ("40-", 1)], "ranges -80 and 40- overlap"),
            (&[("-", 0), ("80-", 1)], "ranges - and 80- overlap"),
            (&[("-80", 0), ("80-", 1), ("80-", 2)], "ranges 80- and 80- overlap"),
        ];
        for (pairs, message) in cases {
            assert_eq!(map(pairs).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn split_merge_assign() {
        let mut m = map(&[("-", 0)]).unwrap();
        m.split(KeyRange::FULL, 1 << 63, 1).unwrap();
        assert_eq!(m, map(&[("-80", 0), ("80-", 1)]).unwrap());
        assert_eq!(*m.lookup(KeyspaceId(1 << 63)), 1);
        let before = m.clone();

        let err = m.split(r("-40"), 1 << 61, 5).unwrap_err();
        assert_eq!(err.to_string(), "range -40 is not in the map");
        let err = m.split(r("80-"), 1 << 63, 5).unwrap_err();
        assert!(err.to_string().contains("cannot split range 80- at 0x8000000000000000"), "{err}");
        let err = m.merge(r("-80"), r("80-")).unwrap_err();
        assert_eq!(err.to_string(), "cannot merge ranges -80 and 80-: they have different owners");
        let err = m.merge(r("80-"), r("-80")).unwrap_err();
        assert!(matches!(err, RangeError::NotAdjacent { .. }), "{err}");
        assert!(m.assign(r("-40"), 3).is_err());
        assert_eq!(m, before, "failed mutations leave the map unchanged");

        assert_eq!(m.assign(r("80-"), 0).unwrap(), 1);
        m.merge(r("-80"), r("80-")).unwrap();
        assert_eq!(m, map(&[("-", 0)]).unwrap());
        assert_eq!(*m.lookup(KeyspaceId(u64::MAX)), 0);
    }

    #[test]
    fn map_owners_and_diff() {
        let a = map(&[("-40", 0), ("40-80", 1), ("80-c0", 1), ("c0-", 2)]).unwrap();
        let b = map(&[("-40", 0), ("40-60", 3), ("60-80", 3), ("80-c0", 3), ("c0-", 2)]).unwrap();
        let moves: Vec<(String, u32, u32)> = a.diff(&b).into_iter().map(|(r, x, y)| (r.to_string(), *x, *y)).collect();
        assert_eq!(moves, [("40-c0".to_owned(), 1, 3)]);
        assert!(a.diff(&a).is_empty());
        let names = a.map_owners(|o| format!("s{o}"));
        assert_eq!(names.lookup(KeyspaceId(u64::MAX)), "s2");
        assert_eq!(format!("{a:?}"), "{-40: 0, 40-80: 1, 80-c0: 1, c0-: 2}");
    }

    #[test]
    fn serde_is_a_map_from_name_to_owner() {
        let m = map(&[("80-", 1), ("-80", 0)]).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"-80":0,"80-":1}"#);
        assert_eq!(serde_json::from_str::<RangeMap<u32>>(&json).unwrap(), m);
        let err = serde_json::from_str::<RangeMap<u32>>(r#"{"-40":0,"80-":1}"#).unwrap_err();
        assert!(err.to_string().contains("40-80 is not covered"), "{err}");
    }
}
