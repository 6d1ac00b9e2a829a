//! [`KeyOrderMap`]: which owner holds each key, as a cover of the space of
//! byte strings by [`KeyOrderRange`]s.
//!
//! The same structure and rules as [`RangeMap`](super::RangeMap), over raw
//! key bytes in lexicographic order instead of keyspace ids. A lookup is a
//! binary search over the sorted range starts, comparing byte slices; it
//! never allocates.

use std::fmt;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::RangeError;
use super::cover::Cover;
use super::key_order::{BoundBuf, BoundRef, KeyOrderRange};

/// A sorted, gap-free, non-overlapping cover of all byte strings by
/// [`KeyOrderRange`]s, each owned by an `O`.
///
/// Serde writes the map as a list of `{"start": …, "end": …, "owner": …}`
/// objects in range order (bounds as in [`KeyOrderRange`]'s serde form) and
/// validates it on reading like [`KeyOrderMap::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeyOrderMap<O> {
    cover: Cover<KeyOrderRange, O>,
}

impl<O> KeyOrderMap<O> {
    /// Builds a map from `(range, owner)` pairs in any order. They must cover
    /// all keys exactly once: the first range starts at the empty key, each
    /// range starts where the previous one ends, and the last one runs to the
    /// end. Fails with [`RangeError::Gap`] or [`RangeError::Overlap`] naming
    /// the first offending ranges (an empty list is a gap named `..`).
    pub fn new(assignments: Vec<(KeyOrderRange, O)>) -> Result<Self, RangeError> {
        Ok(KeyOrderMap { cover: Cover::new(assignments)? })
    }

    /// The position of the range holding `key`.
    #[inline]
    fn position(&self, key: &[u8]) -> usize {
        // The first start is the empty key, so at least one start is <= key.
        self.cover.starts.partition_point(|start| start.as_slice() <= key) - 1
    }

    /// The owner of `key`. Never allocates.
    #[inline]
    pub fn lookup(&self, key: &[u8]) -> &O {
        &self.cover.owners[self.position(key)]
    }

    /// The range holding `key` (a copy of its bounds), and its owner.
    #[inline]
    pub fn lookup_range(&self, key: &[u8]) -> (KeyOrderRange, &O) {
        let i = self.position(key);
        (self.cover.range(i), &self.cover.owners[i])
    }

    /// The bounds of the range holding `key` (start, and end or `None` for
    /// the end of the space), and its owner. Unlike
    /// [`KeyOrderMap::lookup_range`] this borrows the bounds: no allocation.
    #[inline]
    pub fn lookup_bounds(&self, key: &[u8]) -> (&[u8], Option<&[u8]>, &O) {
        let i = self.position(key);
        let end = self.cover.starts.get(i + 1).map(Vec::as_slice);
        (&self.cover.starts[i], end, &self.cover.owners[i])
    }

    /// The ranges in order, with their owners.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (KeyOrderRange, &O)> + ExactSizeIterator + '_ {
        self.cover.iter()
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
    pub fn find(&self, range: &KeyOrderRange) -> Option<&O> {
        self.cover.find(range)
    }

    /// Splits `range` (one of the map's ranges) at `at`, strictly inside it:
    /// `[start, at)` keeps its owner, `[at, end)` goes to `right_owner`.
    /// Fails, leaving the map unchanged, with [`RangeError::UnknownRange`]
    /// or [`RangeError::SplitPointOutside`].
    pub fn split(&mut self, range: &KeyOrderRange, at: &[u8], right_owner: O) -> Result<(), RangeError> {
        self.cover.split(range, at.to_vec(), right_owner)
    }

    /// Joins two neighbouring ranges of the map, `left` ending where `right`
    /// starts, into one. Both must have the same owner, which keeps the
    /// joined range (move one first with [`KeyOrderMap::assign`]). Fails,
    /// leaving the map unchanged, with [`RangeError::UnknownRange`],
    /// [`RangeError::NotAdjacent`] or [`RangeError::OwnerMismatch`].
    pub fn merge(&mut self, left: &KeyOrderRange, right: &KeyOrderRange) -> Result<(), RangeError>
    where
        O: PartialEq,
    {
        self.cover.merge(left, right)
    }

    /// Gives `range` (one of the map's ranges) to `owner` and returns the
    /// previous owner. Fails, leaving the map unchanged, with
    /// [`RangeError::UnknownRange`].
    pub fn assign(&mut self, range: &KeyOrderRange, owner: O) -> Result<O, RangeError> {
        self.cover.assign(range, owner)
    }

    /// The same ranges with owners mapped by `f`.
    pub fn map_owners<P>(&self, f: impl FnMut(&O) -> P) -> KeyOrderMap<P> {
        KeyOrderMap { cover: self.cover.map_owners(f) }
    }
}

impl<O: fmt::Debug> fmt::Debug for KeyOrderMap<O> {
    /// Formats as `{.."n": owner, "n"..: owner}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cover.fmt_debug(f)
    }
}

#[derive(Serialize)]
struct EntryRef<'a, O> {
    start: BoundRef<'a>,
    end: Option<BoundRef<'a>>,
    owner: &'a O,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryBuf<O> {
    #[serde(default)]
    start: BoundBuf,
    #[serde(default)]
    end: Option<BoundBuf>,
    owner: O,
}

impl<O: Serialize> Serialize for KeyOrderMap<O> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for (i, owner) in self.cover.owners.iter().enumerate() {
            let start = BoundRef(&self.cover.starts[i]);
            let end = self.cover.starts.get(i + 1).map(|end| BoundRef(end));
            seq.serialize_element(&EntryRef { start, end, owner })?;
        }
        seq.end()
    }
}

impl<'de, O: Deserialize<'de>> Deserialize<'de> for KeyOrderMap<O> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SeqVisitor<O>(std::marker::PhantomData<O>);
        impl<'de, O: Deserialize<'de>> Visitor<'de> for SeqVisitor<O> {
            type Value = KeyOrderMap<O>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of {\"start\", \"end\", \"owner\"} covering all keys")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                use serde::de::Error;
                let mut assignments = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(entry) = seq.next_element::<EntryBuf<O>>()? {
                    let range = KeyOrderRange::new(entry.start.0, entry.end.map(|b| b.0)).map_err(A::Error::custom)?;
                    assignments.push((range, entry.owner));
                }
                KeyOrderMap::new(assignments).map_err(A::Error::custom)
            }
        }
        deserializer.deserialize_seq(SeqVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(text: &str) -> KeyOrderRange {
        text.parse().unwrap()
    }

    fn map(pairs: &[(&str, u32)]) -> Result<KeyOrderMap<u32>, RangeError> {
        KeyOrderMap::new(pairs.iter().map(|&(text, owner)| (k(text), owner)).collect())
    }

    #[test]
    fn lookup_by_key_order() {
        let m = map(&[(r#""n".."#, 1), (r#".."n""#, 0)]).unwrap();
        for (key, owner) in [(&b""[..], 0), (b"alice", 0), (b"mzzz", 0), (b"n", 1), (b"nancy", 1), (&[0xff, 0xff], 1)] {
            assert_eq!(*m.lookup(key), owner, "{key:?}");
        }
        assert_eq!(m.lookup_range(b"zed"), (k(r#""n".."#), &1));
        assert_eq!(m.find(&k(r#".."n""#)), Some(&0));
        assert_eq!(format!("{m:?}"), r#"{.."n": 0, "n"..: 1}"#);
    }

    #[test]
    fn invalid_covers_are_rejected_naming_ranges() {
        let cases: [(&[(&str, u32)], &str); 5] = [
            (&[], "range map has a gap: .. is not covered (the map has no ranges)"),
            (&[(r#""a".."#, 0)], r#"range map has a gap: .."a" is not covered (before range "a".., the first one)"#),
            (
                &[(r#".."m""#, 0), (r#""n".."#, 1)],
                r#"range map has a gap: "m".."n" is not covered (between ranges .."m" and "n"..)"#,
            ),
            (&[(r#".."n""#, 0), (r#""m".."#, 1)], r#"ranges .."n" and "m".. overlap"#),
            (&[(r#".."n""#, 0)], r#"range map has a gap: "n".. is not covered (after range .."n", the last one)"#),
        ];
        for (pairs, message) in cases {
            assert_eq!(map(pairs).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn split_merge_assign() {
        let mut m = map(&[("..", 0)]).unwrap();
        m.split(&KeyOrderRange::FULL, b"n", 1).unwrap();
        assert_eq!(m, map(&[(r#".."n""#, 0), (r#""n".."#, 1)]).unwrap());
        let before = m.clone();
        assert!(m.split(&k(r#""n".."#), b"a", 2).is_err());
        assert!(m.split(&k(r#""m".."#), b"x", 2).is_err());
        let err = m.merge(&k(r#".."n""#), &k(r#""n".."#)).unwrap_err();
        assert!(matches!(err, RangeError::OwnerMismatch { .. }), "{err}");
        assert_eq!(m, before);
        assert_eq!(m.assign(&k(r#""n".."#), 0).unwrap(), 1);
        m.merge(&k(r#".."n""#), &k(r#""n".."#)).unwrap();
        assert_eq!(m, map(&[("..", 0)]).unwrap());
        assert_eq!(m.map_owners(|o| o + 1).lookup(b"q"), &1);
    }

    #[test]
    fn serde_is_a_list_of_entries() {
        let mut m = map(&[(r#".."n""#, 0), (r#""n".."#, 1)]).unwrap();
        m.split(&k(r#""n".."#), &[0xff], 2).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"[{"start":"","end":"n","owner":0},{"start":"n","end":{"hex":"ff"},"owner":1},{"start":{"hex":"ff"},"end":null,"owner":2}]"#
        );
        assert_eq!(serde_json::from_str::<KeyOrderMap<u32>>(&json).unwrap(), m);
        let err =
            serde_json::from_str::<KeyOrderMap<u32>>(r#"[{"end":"m","owner":0},{"start":"n","owner":1}]"#).unwrap_err();
        assert!(err.to_string().contains(r#""m".."n" is not covered"#), "{err}");
    }
}
