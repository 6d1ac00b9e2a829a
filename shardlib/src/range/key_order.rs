//! [`KeyOrderRange`]: a half-open range of raw key bytes in lexicographic
//! order, for keyspaces sharded by key order (users `""` to `"n"` on one
//! shard, `"n"` onwards on another).
//!
//! # Text form
//!
//! Like a Rust range of byte strings: `"a".."n"` is `[a, n)`, `"n"..` runs
//! to the end, `.."n"` starts at the beginning (the empty key) and `..` is
//! everything. Inside the quotes, printable characters stand for their UTF-8
//! bytes; `\"`, `\\`, `\n`, `\r`, `\t` and `\xNN` (any byte, two hex digits)
//! are escapes. [`Display`](fmt::Display) is canonical: an empty start is
//! left out, and control characters, whitespace other than a space and bytes
//! that are not UTF-8 are written as `\xNN` (lowercase). Parsing also
//! accepts `""..`, either case in `\xNN`, and spaces around `..`.
//!
//! # Serde form
//!
//! An object `{"start": <bound>, "end": <bound or null>}`: `"start"` may be
//! left out (the beginning) and `"end"` may be null or left out (the end).
//! A bound is a JSON string, taken literally as UTF-8 bytes (no escapes of
//! our own, no magic prefixes), or, for bytes that are not UTF-8, an object
//! `{"hex": "00ff"}`. Writing uses the string form whenever the bytes are
//! UTF-8: `{"start": "a", "end": "n"}`, `{"start": "n", "end": null}`,
//! `{"start": {"hex": "ff00"}, "end": null}`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use super::cover::Span;
use super::{RangeError, quoted, write_quoted};

/// The half-open range `[start, end)` of keys in lexicographic byte order.
/// An empty start is the beginning of the space, an end of `None` its end.
/// Never empty.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyOrderRange {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl KeyOrderRange {
    /// Every key, written `..`.
    pub const FULL: KeyOrderRange = KeyOrderRange { start: Vec::new(), end: None };

    /// The range `[start, end)`; an `end` of `None` runs to the end. Fails
    /// with [`RangeError::Empty`] unless `start < end`.
    pub fn new(start: Vec<u8>, end: Option<Vec<u8>>) -> Result<Self, RangeError> {
        let range = KeyOrderRange { start, end };
        match &range.end {
            Some(end) if *end <= range.start => Err(RangeError::Empty { range: range.to_string() }),
            _ => Ok(range),
        }
    }

    /// The first key of the range (empty: the beginning).
    #[inline]
    pub fn start(&self) -> &[u8] {
        &self.start
    }

    /// The exclusive end; `None` means the end of the space.
    #[inline]
    pub fn end(&self) -> Option<&[u8]> {
        self.end.as_deref()
    }

    /// Whether `key` lies in the range.
    #[inline]
    pub fn contains(&self, key: &[u8]) -> bool {
        self.start.as_slice() <= key && self.end().is_none_or(|end| key < end)
    }

    /// Splits the range into `[start, point)` and `[point, end)`. Fails with
    /// [`RangeError::SplitPointOutside`] unless `start < point < end`.
    pub fn split_at(&self, point: &[u8]) -> Result<(KeyOrderRange, KeyOrderRange), RangeError> {
        if self.start.as_slice() < point && self.end().is_none_or(|end| point < end) {
            let left = KeyOrderRange { start: self.start.clone(), end: Some(point.to_vec()) };
            let right = KeyOrderRange { start: point.to_vec(), end: self.end.clone() };
            Ok((left, right))
        } else {
            Err(RangeError::SplitPointOutside { range: self.to_string(), point: quoted(point) })
        }
    }

    /// Whether one of the two ranges ends exactly where the other starts.
    pub fn is_adjacent_to(&self, other: &KeyOrderRange) -> bool {
        self.end() == Some(other.start()) || other.end() == Some(self.start())
    }

    /// Whether the two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyOrderRange) -> bool {
        let before_end = |key: &[u8], range: &KeyOrderRange| range.end().is_none_or(|end| key < end);
        before_end(&self.start, other) && before_end(&other.start, self)
    }

    /// The single range covering both ranges, which must be adjacent or
    /// overlap. Fails with [`RangeError::NotAdjacent`] if there is a gap.
    pub fn union(&self, other: &KeyOrderRange) -> Result<KeyOrderRange, RangeError> {
        let (left, right) = if self <= other { (self, other) } else { (other, self) };
        if !(self.is_adjacent_to(other) || self.overlaps(other)) {
            return Err(RangeError::NotAdjacent { left: left.to_string(), right: right.to_string() });
        }
        let end = match (&self.end, &other.end) {
            (Some(a), Some(b)) => Some(a.max(b).clone()),
            _ => None,
        };
        Ok(KeyOrderRange { start: left.start.clone(), end })
    }
}

impl Ord for KeyOrderRange {
    /// By start, then by end.
    fn cmp(&self, other: &Self) -> Ordering {
        self.start.cmp(&other.start).then_with(|| match (&self.end, &other.end) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
    }
}

impl PartialOrd for KeyOrderRange {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Span for KeyOrderRange {
    type Point = Vec<u8>;

    fn lower(&self) -> &Vec<u8> {
        &self.start
    }
    fn upper(&self) -> Option<&Vec<u8>> {
        self.end.as_ref()
    }
    fn from_bounds(start: Vec<u8>, end: Option<Vec<u8>>) -> Self {
        KeyOrderRange { start, end }
    }
    fn origin() -> Vec<u8> {
        Vec::new()
    }
    fn point_text(point: &Vec<u8>) -> String {
        quoted(point)
    }
}

impl fmt::Display for KeyOrderRange {
    /// The canonical text form: `"a".."n"`, `"n"..`, `.."n"`, `..`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.start.is_empty() {
            write_quoted(f, &self.start)?;
        }
        f.write_str("..")?;
        match &self.end {
            Some(end) => write_quoted(f, end),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for KeyOrderRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyOrderRange({self})")
    }
}

/// Reads a double-quoted byte string at the start of `text`; returns the
/// bytes and the rest of the text.
fn parse_quoted<'t>(name: &str, text: &'t str) -> Result<(Vec<u8>, &'t str), RangeError> {
    let bad = |reason: &str| RangeError::invalid_name(name, reason);
    let mut chars = text.char_indices();
    let mut out = Vec::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &text[i + 1..])),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('"') => out.push(b'"'),
                Some('\\') => out.push(b'\\'),
                Some('n') => out.push(b'\n'),
                Some('r') => out.push(b'\r'),
                Some('t') => out.push(b'\t'),
                Some('x') => {
                    let hex: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                    match u8::from_str_radix(&hex, 16) {
                        Ok(byte) if hex.len() == 2 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => out.push(byte),
                        _ => return Err(bad("\\x must be followed by two hex digits")),
                    }
                }
                _ => return Err(bad("unknown escape; use \\\", \\\\, \\n, \\r, \\t or \\xNN")),
            },
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Err(bad("unterminated string: missing closing '\"'"))
}

impl FromStr for KeyOrderRange {
    type Err = RangeError;

    /// Reads the text form: `"a".."n"`, `"n"..`, `.."n"`, `""..`, `..`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| RangeError::invalid_name(name, reason);
        let mut rest = name.trim_start_matches(' ');
        let start = match rest.strip_prefix('"') {
            Some(after) => {
                let (bytes, tail) = parse_quoted(name, after)?;
                rest = tail.trim_start_matches(' ');
                bytes
            }
            None => Vec::new(),
        };
        rest = rest
            .strip_prefix("..")
            .ok_or_else(|| bad("expected \"start\"..\"end\", e.g. \"a\"..\"n\", \"n\".. or ..\"n\""))?
            .trim_start_matches(' ');
        let end = match rest.strip_prefix('"') {
            Some(after) => {
                let (bytes, tail) = parse_quoted(name, after)?;
                rest = tail;
                Some(bytes)
            }
            None => None,
        };
        if !rest.trim_end_matches(' ').is_empty() {
            return Err(bad("unexpected text after the range"));
        }
        KeyOrderRange::new(start, end)
    }
}

/// One bound in serde form: a string if UTF-8, else `{"hex": "…"}`.
pub(crate) struct BoundRef<'a>(pub(crate) &'a [u8]);

impl Serialize for BoundRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("hex", &hex)?;
                map.end()
            }
        }
    }
}

/// A bound read from serde form.
#[derive(Default)]
pub(crate) struct BoundBuf(pub(crate) Vec<u8>);

impl<'de> Deserialize<'de> for BoundBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoundVisitor;
        impl<'de> Visitor<'de> for BoundVisitor {
            type Value = BoundBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key as a string, or as {\"hex\": \"…\"}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BoundBuf, E> {
                Ok(BoundBuf(v.as_bytes().to_vec()))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<BoundBuf, E> {
                Ok(BoundBuf(v.to_vec()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BoundBuf, A::Error> {
                use serde::de::Error;
                let (Some((key, hex)), None) = (map.next_entry::<String, String>()?, map.next_key::<String>()?) else {
                    return Err(A::Error::custom("a key object must have exactly one field, \"hex\""));
                };
                if key != "hex" {
                    return Err(A::Error::custom(format!("unknown key field {key:?}; expected \"hex\"")));
                }
                crate::key::decode_hex(&hex)
                    .map(BoundBuf)
                    .map_err(|why| A::Error::custom(format!("invalid hex key {hex:?}: {why}")))
            }
        }
        deserializer.deserialize_any(BoundVisitor)
    }
}

#[derive(Serialize)]
struct RangeRef<'a> {
    start: BoundRef<'a>,
    end: Option<BoundRef<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeBuf {
    #[serde(default)]
    start: BoundBuf,
    #[serde(default)]
    end: Option<BoundBuf>,
}

impl Serialize for KeyOrderRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RangeRef { start: BoundRef(&self.start), end: self.end().map(BoundRef) }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for KeyOrderRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let buf = RangeBuf::deserialize(deserializer)?;
        KeyOrderRange::new(buf.start.0, buf.end.map(|b| b.0)).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(start: &str, end: Option<&str>) -> KeyOrderRange {
        KeyOrderRange::new(start.into(), end.map(Into::into)).unwrap()
    }

    #[test]
    fn text_form_round_trips() {
        for (range, text) in [
            (k("a", Some("n")), r#""a".."n""#),
            (k("n", None), r#""n".."#),
            (k("", Some("n")), r#".."n""#),
            (KeyOrderRange::FULL, ".."),
            (k("a\"b\\c", Some("z\n\t\r")), r#""a\"b\\c".."z\n\t\r""#),
            (k("é", Some("日本")), r#""é".."日本""#),
            (KeyOrderRange::new(vec![0xff, 0], Some(vec![0xff, 1, b' '])).unwrap(), r#""\xff\x00".."\xff\x01 ""#),
            (k("\u{85}", Some("\u{3000}")), r#""\xc2\x85".."\xe3\x80\x80""#),
        ] {
            assert_eq!(range.to_string(), text);
            assert_eq!(text.parse::<KeyOrderRange>().unwrap(), range, "{text}");
        }
        assert_eq!(r#"""..  "n" "#.parse::<KeyOrderRange>().unwrap(), k("", Some("n")));
        assert_eq!(r#""\xFF".."#.parse::<KeyOrderRange>().unwrap(), KeyOrderRange::new(vec![0xff], None).unwrap());
    }

    #[test]
    fn bad_text_is_rejected_with_the_name() {
        for (bad, why) in [
            (r#""a""n""#, "expected"),
            (r#""a"..n"#, "unexpected text"),
            (r#""a.."#, "unterminated"),
            (r#""\q"..  "#, "unknown escape"),
            (r#""\x4"..  "#, "two hex digits"),
            (r#""\x+1"..  "#, "two hex digits"),
            ("a..n", "expected"),
        ] {
            let err = bad.parse::<KeyOrderRange>().unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&format!("{bad:?}")) && text.contains(why), "{bad}: {text}");
        }
        let err = r#""n".."a""#.parse::<KeyOrderRange>().unwrap_err();
        assert_eq!(err.to_string(), r#"range "n".."a" is empty: its start is not below its end"#);
        let err = KeyOrderRange::new(b"a".to_vec(), Some(Vec::new())).unwrap_err();
        assert_eq!(err.to_string(), r#"range "a".."" is empty: its start is not below its end"#);
    }

    #[test]
    fn geometry() {
        let am = k("a", Some("m"));
        assert!(am.contains(b"a") && am.contains(b"lzzz") && !am.contains(b"m") && !am.contains(b""));
        assert!(KeyOrderRange::FULL.contains(b"") && KeyOrderRange::FULL.contains(&[0xff; 9]));
        let (left, right) = am.split_at(b"f").unwrap();
        assert_eq!((left.clone(), right.clone()), (k("a", Some("f")), k("f", Some("m"))));
        assert!(left.is_adjacent_to(&right) && right.is_adjacent_to(&left));
        assert_eq!(right.union(&left).unwrap(), am);
        assert!(am.split_at(b"a").is_err() && am.split_at(b"m").is_err());
        assert!(am.split_at(b"a\0").is_ok());
        let err = am.split_at(b"z").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"cannot split range "a".."m" at "z": the point must lie strictly inside the range"#
        );
        let err = k("a", Some("b")).union(&k("c", None)).unwrap_err();
        assert!(err.to_string().contains(r#""a".."b" and "c".. are"#), "{err}");
        assert_eq!(k("a", Some("c")).union(&k("b", None)).unwrap(), k("a", None));
    }

    #[test]
    fn serde_form() {
        let json = |r: &KeyOrderRange| serde_json::to_string(r).unwrap();
        assert_eq!(json(&k("a", Some("n"))), r#"{"start":"a","end":"n"}"#);
        assert_eq!(json(&k("n", None)), r#"{"start":"n","end":null}"#);
        let binary = KeyOrderRange::new(vec![0xff, 0], None).unwrap();
        assert_eq!(json(&binary), r#"{"start":{"hex":"ff00"},"end":null}"#);
        let read = |s: &str| serde_json::from_str::<KeyOrderRange>(s);
        assert_eq!(read(r#"{"start":{"hex":"FF00"}}"#).unwrap(), binary);
        assert_eq!(read(r#"{"end":"n"}"#).unwrap(), k("", Some("n")));
        assert_eq!(read(r#"{"start":"0xff"}"#).unwrap(), k("0xff", None), "strings are literal");
        assert!(read(r#"{"start":"n","end":"a"}"#).unwrap_err().to_string().contains(r#""n".."a""#));
        assert!(read(r#"{"start":{"hex":"f"}}"#).is_err());
        assert!(read(r#"{"start":{"base64":"AA=="}}"#).is_err());
        assert!(read(r#"{"start":"a","stop":"b"}"#).is_err());
    }
}
