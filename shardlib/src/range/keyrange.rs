//! [`KeyRange`]: a half-open range of keyspace ids, named the Vitess way.
//!
//! # Names
//!
//! A range is written `<start>-<end>`. Each bound is a hexadecimal byte
//! string (an even number of digits, at most 16, either case) left-justified
//! into 8 big-endian bytes, so `80` is `0x8000_0000_0000_0000` and `8000` is
//! the same point. An empty start is 0; an empty end is 2^64, the end of the
//! space:
//!
//! | name    | range                                       |
//! |---------|---------------------------------------------|
//! | `-`     | the whole space `[0, 2^64)`                 |
//! | `-80`   | `[0, 0x8000000000000000)`                   |
//! | `80-c0` | `[0x8000000000000000, 0xc000000000000000)`  |
//! | `c0-`   | `[0xc000000000000000, 2^64)`                |
//!
//! [`Display`](fmt::Display) prints the canonical name: lowercase, trailing
//! zero bytes dropped, a start of 0 and an end of 2^64 left empty. Serde
//! reads and writes the name as a string.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::RangeError;
use super::cover::Span;
use crate::key::KeyspaceId;

/// The half-open range `[start, end)` of keyspace ids; an end of `None`
/// stands for 2^64. Never empty.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRange {
    start: u64,
    end: Option<u64>,
}

impl KeyRange {
    /// The whole keyspace-id space, named `-`.
    pub const FULL: KeyRange = KeyRange { start: 0, end: None };

    /// The range `[start, end)`, where an `end` of `None` means 2^64.
    /// Fails with [`RangeError::Empty`] unless `start < end`.
    pub fn new(start: u64, end: Option<u64>) -> Result<Self, RangeError> {
        let range = KeyRange { start, end };
        match end {
            Some(end) if end <= start => Err(RangeError::Empty { range: range.to_string() }),
            _ => Ok(range),
        }
    }

    /// The first keyspace id of the range.
    #[inline]
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// The exclusive end; `None` means 2^64.
    #[inline]
    pub const fn end(&self) -> Option<u64> {
        self.end
    }

    /// The last keyspace id of the range (inclusive), e.g. for SQL's
    /// `BETWEEN`.
    #[inline]
    pub const fn last(&self) -> u64 {
        match self.end {
            Some(end) => end - 1,
            None => u64::MAX,
        }
    }

    /// The exclusive end as a `u128`, 2^64 for an open end.
    #[inline]
    const fn end_wide(&self) -> u128 {
        match self.end {
            Some(end) => end as u128,
            None => 1 << 64,
        }
    }

    /// Whether `id` lies in the range.
    #[inline]
    pub const fn contains(&self, id: KeyspaceId) -> bool {
        self.start <= id.0
            && match self.end {
                Some(end) => id.0 < end,
                None => true,
            }
    }

    /// The number of keyspace ids in the range, from 1 to 2^64.
    #[inline]
    pub const fn width(&self) -> u128 {
        self.end_wide() - self.start as u128
    }

    /// The point halfway through the range, rounded down:
    /// `start + width / 2`. It is strictly inside the range (a valid
    /// [`KeyRange::split_at`] point) whenever the width is at least 2.
    #[inline]
    pub const fn midpoint(&self) -> u64 {
        (self.start as u128 + self.width() / 2) as u64
    }

    /// `n` ranges of equal width (to within one id) that cover the whole
    /// space in order: range `i` starts at `⌊i · 2^64 / n⌋`. For a power of
    /// two these are the usual Vitess names (`n = 4`: `-40`, `40-80`, `80-c0`,
    /// `c0-`). Empty for `n = 0`.
    pub fn uniform(n: u32) -> Vec<KeyRange> {
        let start = |i: u32| ((u128::from(i) << 64) / u128::from(n)) as u64;
        (0..n).map(|i| KeyRange { start: start(i), end: (i + 1 < n).then(|| start(i + 1)) }).collect()
    }

    /// Splits the range into `[start, point)` and `[point, end)`. Fails with
    /// [`RangeError::SplitPointOutside`] unless `start < point < end`.
    pub fn split_at(&self, point: u64) -> Result<(KeyRange, KeyRange), RangeError> {
        if self.start < point && (point as u128) < self.end_wide() {
            Ok((KeyRange { start: self.start, end: Some(point) }, KeyRange { start: point, end: self.end }))
        } else {
            Err(RangeError::SplitPointOutside { range: self.to_string(), point: <Self as Span>::point_text(&point) })
        }
    }

    /// Whether one of the two ranges ends exactly where the other starts.
    #[inline]
    pub const fn is_adjacent_to(&self, other: &KeyRange) -> bool {
        matches!(self.end, Some(end) if end == other.start) || matches!(other.end, Some(end) if end == self.start)
    }

    /// Whether the two ranges share at least one keyspace id.
    #[inline]
    pub const fn overlaps(&self, other: &KeyRange) -> bool {
        (self.start as u128) < other.end_wide() && (other.start as u128) < self.end_wide()
    }

    /// Whether every keyspace id of `other` is in `self`.
    #[inline]
    pub const fn contains_range(&self, other: &KeyRange) -> bool {
        self.start <= other.start && other.end_wide() <= self.end_wide()
    }

    /// The single range covering both ranges, which must be adjacent or
    /// overlap. Fails with [`RangeError::NotAdjacent`] if there is a gap
    /// between them.
    pub fn union(&self, other: &KeyRange) -> Result<KeyRange, RangeError> {
        if !(self.is_adjacent_to(other) || self.overlaps(other)) {
            let (left, right) = if self.start <= other.start { (self, other) } else { (other, self) };
            return Err(RangeError::NotAdjacent { left: left.to_string(), right: right.to_string() });
        }
        let start = self.start.min(other.start);
        let end = if self.end_wide() >= other.end_wide() { self.end } else { other.end };
        Ok(KeyRange { start, end })
    }
}

impl Ord for KeyRange {
    /// By start, then by end.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.start, self.end_wide()).cmp(&(other.start, other.end_wide()))
    }
}

impl PartialOrd for KeyRange {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Span for KeyRange {
    type Point = u64;

    fn lower(&self) -> &u64 {
        &self.start
    }
    fn upper(&self) -> Option<&u64> {
        self.end.as_ref()
    }
    fn from_bounds(start: u64, end: Option<u64>) -> Self {
        KeyRange { start, end }
    }
    fn origin() -> u64 {
        0
    }
    fn point_text(point: &u64) -> String {
        format!("{point:#018x}")
    }
}

/// Writes a bound as left-justified hex bytes without trailing zero bytes.
fn write_bound(f: &mut fmt::Formatter<'_>, value: u64) -> fmt::Result {
    if value == 0 {
        return Ok(());
    }
    let zero_bytes = value.trailing_zeros() / 8;
    let digits = 16 - 2 * zero_bytes as usize;
    write!(f, "{:0digits$x}", value >> (8 * zero_bytes))
}

impl fmt::Display for KeyRange {
    /// The canonical Vitess name: `-80`, `80-c0`, `c0-`, `-`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_bound(f, self.start)?;
        f.write_str("-")?;
        match self.end {
            // Only an invalid range (in an error message) can end at 0.
            Some(0) => f.write_str("00"),
            Some(end) => write_bound(f, end),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRange({self})")
    }
}

/// Reads one bound of a name: `None` for an empty bound.
fn parse_bound(name: &str, bound: &str) -> Result<Option<u64>, RangeError> {
    if bound.is_empty() {
        return Ok(None);
    }
    if !bound.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RangeError::invalid_name(name, format!("bound {bound:?} is not hexadecimal")));
    }
    if !bound.len().is_multiple_of(2) {
        return Err(RangeError::invalid_name(name, format!("bound {bound:?} has an odd number of hex digits")));
    }
    if bound.len() > 16 {
        return Err(RangeError::invalid_name(name, format!("bound {bound:?} has more than 16 hex digits")));
    }
    let value =
        u64::from_str_radix(bound, 16).map_err(|e| RangeError::invalid_name(name, format!("bound {bound:?}: {e}")))?;
    Ok(Some(if bound.len() == 16 { value } else { value << (64 - 4 * bound.len()) }))
}

impl FromStr for KeyRange {
    type Err = RangeError;

    /// Reads a Vitess name such as `-80`, `80-c0`, `c0-` or `-`
    /// (case-insensitive; `8000-` is the same range as `80-`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let Some((start, end)) = name.split_once('-') else {
            return Err(RangeError::invalid_name(name, "missing '-' between start and end (e.g. -80, 80-c0, c0-)"));
        };
        if end.contains('-') {
            return Err(RangeError::invalid_name(name, "more than one '-'"));
        }
        let start = parse_bound(name, start)?.unwrap_or(0);
        let end = parse_bound(name, end)?;
        KeyRange::new(start, end)
    }
}

impl Serialize for KeyRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = KeyRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key range name such as \"-80\", \"80-c0\" or \"c0-\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str) -> KeyRange {
        name.parse().unwrap()
    }

    #[test]
    fn vitess_names_parse() {
        assert_eq!(r("-"), KeyRange::FULL);
        assert_eq!(r("-80"), KeyRange::new(0, Some(1 << 63)).unwrap());
        assert_eq!(r("80-c0"), KeyRange::new(0x80 << 56, Some(0xc0 << 56)).unwrap());
        assert_eq!(r("c0-"), KeyRange::new(0xc0 << 56, None).unwrap());
        assert_eq!(r("8000-"), r("80-"));
        assert_eq!(r("00-80"), r("-80"));
        assert_eq!(r("A0-C0"), r("a0-c0"));
        assert_eq!(r("0123456789abcdef-"), KeyRange::new(0x0123_4567_89ab_cdef, None).unwrap());
    }

    #[test]
    fn display_is_canonical() {
        for (given, canonical) in [
            ("-", "-"),
            ("-80", "-80"),
            ("00-80", "-80"),
            ("8000-C000", "80-c0"),
            ("80-c0", "80-c0"),
            ("c0-", "c0-"),
            ("0001-0002", "0001-0002"),
            ("-0000000000000001", "-0000000000000001"),
            ("ffffffffffffff00-", "ffffffffffffff-"),
        ] {
            let range = r(given);
            assert_eq!(range.to_string(), canonical, "{given}");
            assert_eq!(r(canonical), range, "{canonical}");
        }
    }

    #[test]
    fn bad_names_are_rejected_with_the_name() {
        for (bad, why) in [
            ("80", "missing '-'"),
            ("", "missing '-'"),
            ("8-", "odd number"),
            ("-800", "odd number"),
            ("x0-", "not hexadecimal"),
            ("+80-", "not hexadecimal"),
            (" 80-", "not hexadecimal"),
            ("-00000000000000000a", "more than 16"),
            ("80-c0-", "more than one"),
        ] {
            let err = bad.parse::<KeyRange>().unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&format!("{bad:?}")) && text.contains(why), "{bad}: {text}");
        }
        for bad in ["80-80", "c0-80", "-00", "80-8000"] {
            let err = bad.parse::<KeyRange>().unwrap_err();
            assert!(matches!(err, RangeError::Empty { .. }), "{bad}: {err}");
            assert!(err.to_string().starts_with("range "), "{err}");
        }
        assert_eq!(
            "c0-80".parse::<KeyRange>().unwrap_err().to_string(),
            "range c0-80 is empty: its start is not below its end"
        );
        assert_eq!(
            KeyRange::new(0, Some(0)).unwrap_err().to_string(),
            "range -00 is empty: its start is not below its end"
        );
    }

    #[test]
    fn geometry() {
        let full = KeyRange::FULL;
        assert_eq!(full.width(), 1 << 64);
        assert_eq!(full.midpoint(), 1 << 63);
        assert_eq!(full.last(), u64::MAX);
        assert!(full.contains(KeyspaceId::MAX) && full.contains(KeyspaceId::MIN));
        let (left, right) = full.split_at(full.midpoint()).unwrap();
        assert_eq!((left, right), (r("-80"), r("80-")));
        assert!(left.is_adjacent_to(&right) && right.is_adjacent_to(&left));
        assert_eq!(left.union(&right).unwrap(), full);
        assert!(!left.contains(KeyspaceId(1 << 63)) && right.contains(KeyspaceId(1 << 63)));
        assert_eq!(r("80-c0").last(), 0xbfff_ffff_ffff_ffff);
        let one = KeyRange::new(5, Some(6)).unwrap();
        assert_eq!((one.width(), one.midpoint()), (1, 5));
        assert!(one.split_at(5).is_err());
        assert!(r("-40").union(&r("80-")).is_err());
        assert_eq!(r("-80").union(&r("40-c0")).unwrap(), r("-c0"));
        assert!(r("-80").contains_range(&r("40-80")) && !r("-80").contains_range(&r("40-c0")));
    }

    #[test]
    fn split_errors_name_the_range_and_point() {
        let err = r("80-c0").split_at(0xc0 << 56).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot split range 80-c0 at 0xc000000000000000: the point must lie strictly inside the range"
        );
        assert!(r("80-c0").split_at(0x80 << 56).is_err());
        assert!(r("c0-").split_at(u64::MAX).is_ok());
        let err = r("-40").union(&r("80-")).unwrap_err();
        assert!(err.to_string().contains("-40 and 80-"), "{err}");
    }

    #[test]
    fn order_is_by_start_then_end() {
        let mut ranges = vec![r("80-"), r("-"), r("-80"), r("40-80"), r("80-c0")];
        ranges.sort();
        assert_eq!(ranges, vec![r("-80"), r("-"), r("40-80"), r("80-c0"), r("80-")]);
    }

    #[test]
    fn serde_uses_the_name() {
        let json = serde_json::to_string(&r("80-c0")).unwrap();
        assert_eq!(json, "\"80-c0\"");
        assert_eq!(serde_json::from_str::<KeyRange>("\"8000-C000\"").unwrap(), r("80-c0"));
        let err = serde_json::from_str::<KeyRange>("\"c0-80\"").unwrap_err();
        assert!(err.to_string().contains("c0-80"), "{err}");
        assert!(serde_json::from_str::<KeyRange>("12").is_err());
    }
}

#[cfg(test)]
mod uniform_tests {
    use super::KeyRange;

    #[test]
    fn uniform_ranges_have_vitess_names_and_cover_the_space() {
        let names: Vec<String> = KeyRange::uniform(4).iter().map(ToString::to_string).collect();
        assert_eq!(names, ["-40", "40-80", "80-c0", "c0-"]);
        assert_eq!(KeyRange::uniform(1), [KeyRange::FULL]);
        assert!(KeyRange::uniform(0).is_empty());
        for n in [3u32, 7, 1000] {
            let ranges = KeyRange::uniform(n);
            assert_eq!(ranges.len(), n as usize);
            assert_eq!(ranges[0].start(), 0);
            assert_eq!(ranges[n as usize - 1].end(), None);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end(), Some(pair[1].start()));
                assert!(pair[0].width().abs_diff(pair[1].width()) <= 1);
            }
        }
    }
}
