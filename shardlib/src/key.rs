//! Keys and keyspace ids.
//!
//! Every key is turned into a 64-bit *keyspace id* before placement:
//! `xxh3_64(canonical_bytes(key), seed)`, where the seed belongs to the
//! keyspace (0 by default). The canonical bytes are:
//!
//! | key type                         | canonical bytes                                  |
//! |----------------------------------|--------------------------------------------------|
//! | `u64`, `u32`, `u16`, `u8`        | the value widened to u64, 8 bytes big-endian     |
//! | `i64`, `i32`, `i16`, `i8`        | the value widened to i64, 8 bytes big-endian (two's complement) |
//! | `str`, `String`                  | the UTF-8 bytes, no terminator                   |
//! | `[u8]`, `Vec<u8>`, `[u8; N]`     | the bytes as they are                            |
//! | [`Uuid`]                          | the 16 bytes in RFC 4122 (network) order         |
//! | tuples `(A, B)`, `(A, B, C)`, [`Key::Composite`] | for each part: its length as u32 big-endian, then its canonical bytes |
//!
//! The exact rule, with test vectors for other languages, is in
//! `docs/HASHING.md`; `tests/golden.rs` pins it.

use std::fmt;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

/// A point of the keyspace-id space `[0, 2^64)`: the hash of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyspaceId(pub u64);

impl KeyspaceId {
    /// The smallest keyspace id.
    pub const MIN: KeyspaceId = KeyspaceId(0);
    /// The largest keyspace id.
    pub const MAX: KeyspaceId = KeyspaceId(u64::MAX);

    /// Hashes canonical key bytes with a keyspace seed.
    #[inline]
    pub fn from_canonical_bytes(bytes: &[u8], seed: u64) -> Self {
        KeyspaceId(xxh3_64_with_seed(bytes, seed))
    }

    /// The value stored in a database's `keyspace_id BIGINT` column.
    ///
    /// The top bit is flipped before the cast to `i64`, so that the order of
    /// keyspace ids is the order of the stored values: any range of keyspace
    /// ids is one index range, never two.
    #[inline]
    pub const fn to_sql(self) -> i64 {
        (self.0 ^ (1 << 63)) as i64
    }

    /// The inverse of [`KeyspaceId::to_sql`].
    #[inline]
    pub const fn from_sql(stored: i64) -> Self {
        KeyspaceId((stored as u64) ^ (1 << 63))
    }
}

impl fmt::Display for KeyspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u64> for KeyspaceId {
    fn from(v: u64) -> Self {
        KeyspaceId(v)
    }
}

/// A value that can be routed: it has canonical bytes, and so a keyspace id.
///
/// Implemented for integers, strings, byte strings, [`Uuid`], tuples of up to
/// four parts, and the dynamic [`Key`].
pub trait ShardKey {
    /// Feeds the key's canonical bytes to `sink`, in one or more pieces whose
    /// concatenation is the canonical encoding.
    fn feed(&self, sink: &mut dyn FnMut(&[u8]));

    /// The exact number of canonical bytes.
    fn canonical_len(&self) -> usize;

    /// The keyspace id of this key under `seed`. Never allocates.
    #[inline]
    fn keyspace_id(&self, seed: u64) -> KeyspaceId {
        let mut hasher = Xxh3::with_seed(seed);
        self.feed(&mut |piece| hasher.update(piece));
        KeyspaceId(hasher.digest())
    }

    /// Calls `f` with the canonical bytes in one slice. Keys whose encoding
    /// is one piece (integers, strings, bytes, UUIDs) never allocate;
    /// composite keys collect their parts into a vector first.
    #[inline]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.canonical_bytes())
    }

    /// The canonical bytes, collected into a vector (allocates; for tools and tests).
    fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.canonical_len());
        self.feed(&mut |piece| out.extend_from_slice(piece));
        out
    }
}

impl<K: ShardKey + ?Sized> ShardKey for &K {
    #[inline]
    fn feed(&self, sink: &mut dyn FnMut(&[u8])) {
        (**self).feed(sink)
    }
    #[inline]
    fn canonical_len(&self) -> usize {
        (**self).canonical_len()
    }
    #[inline]
    fn keyspace_id(&self, seed: u64) -> KeyspaceId {
        (**self).keyspace_id(seed)
    }
    #[inline]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        (**self).with_bytes(f)
    }
}

macro_rules! fixed_width_key {
    ($($t:ty => $wide:ty),* $(,)?) => {$(
        impl ShardKey for $t {
            #[inline]
            fn feed(&self, sink: &mut dyn FnMut(&[u8])) {
                sink(&(<$wide>::from(*self)).to_be_bytes())
            }
            #[inline]
            fn canonical_len(&self) -> usize {
                8
            }
            #[inline]
            fn keyspace_id(&self, seed: u64) -> KeyspaceId {
                KeyspaceId::from_canonical_bytes(&(<$wide>::from(*self)).to_be_bytes(), seed)
            }
            #[inline]
            fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
                f(&(<$wide>::from(*self)).to_be_bytes())
            }
        }
    )*};
}

fixed_width_key!(
    u64 => u64, u32 => u64, u16 => u64, u8 => u64,
    i64 => i64, i32 => i64, i16 => i64, i8 => i64,
);

macro_rules! byte_key {
    ($($t:ty => |$s:ident| $bytes:expr),* $(,)?) => {$(
        impl ShardKey for $t {
            #[inline]
            fn feed(&self, sink: &mut dyn FnMut(&[u8])) {
                let $s = self;
                sink($bytes)
            }
            #[inline]
            fn canonical_len(&self) -> usize {
                let $s = self;
                $bytes.len()
            }
            #[inline]
            fn keyspace_id(&self, seed: u64) -> KeyspaceId {
                let $s = self;
                KeyspaceId::from_canonical_bytes($bytes, seed)
            }
            #[inline]
            fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
                let $s = self;
                f($bytes)
            }
        }
    )*};
}

byte_key!(
    str => |s| s.as_bytes(),
    String => |s| s.as_bytes(),
    [u8] => |s| s,
    Vec<u8> => |s| s.as_slice(),
    Uuid => |s| &s.0,
);

impl<const N: usize> ShardKey for [u8; N] {
    #[inline]
    fn feed(&self, sink: &mut dyn FnMut(&[u8])) {
        sink(self)
    }
    #[inline]
    fn canonical_len(&self) -> usize {
        N
    }
    #[inline]
    fn keyspace_id(&self, seed: u64) -> KeyspaceId {
        KeyspaceId::from_canonical_bytes(self, seed)
    }
    #[inline]
    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(self)
    }
}

/// Feeds one part of a composite key: its length as u32 big-endian, then its bytes.
#[inline]
fn feed_part(part: &dyn ShardKeyDyn, sink: &mut dyn FnMut(&[u8])) {
    let len = u32::try_from(part.canonical_len_dyn()).expect("a key part longer than 4 GiB");
    sink(&len.to_be_bytes());
    part.feed_dyn(sink);
}

/// Object-safe view of [`ShardKey`] used for composite keys.
trait ShardKeyDyn {
    fn feed_dyn(&self, sink: &mut dyn FnMut(&[u8]));
    fn canonical_len_dyn(&self) -> usize;
}

impl<K: ShardKey + ?Sized> ShardKeyDyn for K {
    fn feed_dyn(&self, sink: &mut dyn FnMut(&[u8])) {
        self.feed(sink)
    }
    fn canonical_len_dyn(&self) -> usize {
        self.canonical_len()
    }
}

macro_rules! tuple_key {
    ($($name:ident),+) => {
        impl<$($name: ShardKey),+> ShardKey for ($($name,)+) {
            fn feed(&self, sink: &mut dyn FnMut(&[u8])) {
                #[allow(non_snake_case)]
                let ($($name,)+) = self;
                $(feed_part($name, sink);)+
            }
            fn canonical_len(&self) -> usize {
                #[allow(non_snake_case)]
                let ($($name,)+) = self;
                0 $(+ 4 + $name.canonical_len())+
            }
        }
    };
}

tuple_key!(A, B);
tuple_key!(A, B, C);
tuple_key!(A, B, C, D);

/// A UUID as 16 bytes in RFC 4122 order. Parses from and prints as the
/// hyphenated hexadecimal form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid(pub [u8; 16]);

impl std::str::FromStr for Uuid {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        let hyphens_ok = s.len() == 32 || (s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-'));
        if hex.len() != 32 || !hyphens_ok {
            return Err(KeyParseError::new("uuid", s, "expected 32 hex digits, optionally as 8-4-4-4-12"));
        }
        let bytes = decode_hex(&hex).map_err(|why| KeyParseError::new("uuid", s, why))?;
        let mut out = [0u8; 16];
        out.copy_from_slice(&bytes);
        Ok(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Decodes an even-length string of hexadecimal digits (either case).
pub(crate) fn decode_hex(s: &str) -> Result<Vec<u8>, &'static str> {
    if !s.len().is_multiple_of(2) {
        return Err("odd number of hex digits");
    }
    let digit = |c: u8| -> Result<u8, &'static str> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err("not a hex digit"),
        }
    };
    s.as_bytes().chunks(2).map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

/// A dynamically typed key, for tools (the CLI, JSON APIs) that learn a key's
/// type at run time. Hashes exactly like the static type it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// An unsigned 64-bit integer.
    U64(u64),
    /// A signed 64-bit integer.
    I64(i64),
    /// A UTF-8 string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A UUID.
    Uuid(Uuid),
    /// A composite key: its parts in order.
    Composite(Vec<Key>),
}

impl ShardKey for Key {
    fn feed(&self, sink: &mut dyn FnMut(&[u8])) {
        match self {
            Key::U64(v) => v.feed(sink),
            Key::I64(v) => v.feed(sink),
            Key::Str(v) => v.feed(sink),
            Key::Bytes(v) => v.feed(sink),
            Key::Uuid(v) => v.feed(sink),
            Key::Composite(parts) => parts.iter().for_each(|p| feed_part(p, sink)),
        }
    }

    fn keyspace_id(&self, seed: u64) -> KeyspaceId {
        match self {
            Key::U64(v) => v.keyspace_id(seed),
            Key::I64(v) => v.keyspace_id(seed),
            Key::Str(v) => v.keyspace_id(seed),
            Key::Bytes(v) => v.keyspace_id(seed),
            Key::Uuid(v) => v.keyspace_id(seed),
            Key::Composite(_) => {
                let mut hasher = Xxh3::with_seed(seed);
                self.feed(&mut |piece| hasher.update(piece));
                KeyspaceId(hasher.digest())
            }
        }
    }

    fn with_bytes<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            Key::U64(v) => v.with_bytes(f),
            Key::I64(v) => v.with_bytes(f),
            Key::Str(v) => v.with_bytes(f),
            Key::Bytes(v) => v.with_bytes(f),
            Key::Uuid(v) => v.with_bytes(f),
            Key::Composite(_) => f(&self.canonical_bytes()),
        }
    }

    fn canonical_len(&self) -> usize {
        match self {
            Key::U64(_) | Key::I64(_) => 8,
            Key::Str(v) => v.len(),
            Key::Bytes(v) => v.len(),
            Key::Uuid(_) => 16,
            Key::Composite(parts) => parts.iter().map(|p| 4 + p.canonical_len()).sum(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::U64(v) => write!(f, "{v}"),
            Key::I64(v) => write!(f, "{v}"),
            Key::Str(v) => f.write_str(v),
            Key::Bytes(v) => {
                f.write_str("0x")?;
                v.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            Key::Uuid(v) => write!(f, "{v}"),
            Key::Composite(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// How to read a key given as text (on a command line, in a file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// The text itself, as UTF-8.
    #[default]
    Str,
    /// A decimal unsigned 64-bit integer.
    U64,
    /// A decimal signed 64-bit integer.
    I64,
    /// Hexadecimal bytes, with or without a `0x` prefix.
    Hex,
    /// A UUID, hyphenated or not.
    Uuid,
}

impl KeyType {
    /// All key types, in the order they are documented.
    pub const ALL: [KeyType; 5] = [KeyType::Str, KeyType::U64, KeyType::I64, KeyType::Hex, KeyType::Uuid];

    /// The name used in configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Str => "str",
            KeyType::U64 => "u64",
            KeyType::I64 => "i64",
            KeyType::Hex => "hex",
            KeyType::Uuid => "uuid",
        }
    }

    /// Parses `text` as a key of this type.
    pub fn parse(self, text: &str) -> Result<Key, KeyParseError> {
        match self {
            KeyType::Str => Ok(Key::Str(text.to_owned())),
            KeyType::U64 => {
                text.parse().map(Key::U64).map_err(|e| KeyParseError::new(self.name(), text, e.to_string()))
            }
            KeyType::I64 => {
                text.parse().map(Key::I64).map_err(|e| KeyParseError::new(self.name(), text, e.to_string()))
            }
            KeyType::Hex => {
                let digits = text.strip_prefix("0x").unwrap_or(text);
                decode_hex(digits).map(Key::Bytes).map_err(|why| KeyParseError::new(self.name(), text, why))
            }
            KeyType::Uuid => text.parse().map(Key::Uuid),
        }
    }
}

impl std::str::FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown key type {s:?}; expected one of str, u64, i64, hex, uuid"))
    }
}

/// A key given as text could not be read as the requested type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {text:?} as a {key_type} key: {reason}")]
pub struct KeyParseError {
    /// The requested key type.
    pub key_type: &'static str,
    /// The text that was given.
    pub text: String,
    /// Why it was rejected.
    pub reason: String,
}

impl KeyParseError {
    fn new(key_type: &'static str, text: &str, reason: impl Into<String>) -> Self {
        KeyParseError { key_type, text: text.to_owned(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_hash_as_eight_big_endian_bytes() {
        assert_eq!(7u8.keyspace_id(0), 7u64.keyspace_id(0));
        assert_eq!(7u64.keyspace_id(0), [0, 0, 0, 0, 0, 0, 0, 7u8].keyspace_id(0));
        assert_eq!((-1i32).keyspace_id(3), (-1i64).keyspace_id(3));
        assert_eq!((-1i64).keyspace_id(0), u64::MAX.keyspace_id(0));
    }

    #[test]
    fn streaming_and_one_shot_hashing_agree() {
        for key in ["", "a", "alice", &"x".repeat(300)] {
            let one_shot = key.keyspace_id(42);
            let mut hasher = Xxh3::with_seed(42);
            key.feed(&mut |p| hasher.update(p));
            assert_eq!(one_shot.0, hasher.digest(), "key {key:?}");
        }
    }

    #[test]
    fn composite_keys_frame_every_part() {
        let t = (7u64, "ab");
        let expected: Vec<u8> = [&[0, 0, 0, 8][..], &7u64.to_be_bytes(), &[0, 0, 0, 2], b"ab"].concat();
        assert_eq!(t.canonical_bytes(), expected);
        assert_eq!(t.keyspace_id(0), expected.keyspace_id(0));
        let dynamic = Key::Composite(vec![Key::U64(7), Key::Str("ab".into())]);
        assert_eq!(dynamic.keyspace_id(0), t.keyspace_id(0));
        // Framing keeps ("a","bc") and ("ab","c") apart.
        assert_ne!(("a", "bc").keyspace_id(0), ("ab", "c").keyspace_id(0));
    }

    #[test]
    fn sql_encoding_preserves_order() {
        let ids = [0u64, 1, (1 << 63) - 1, 1 << 63, u64::MAX];
        for w in ids.windows(2) {
            assert!(KeyspaceId(w[0]).to_sql() < KeyspaceId(w[1]).to_sql());
        }
        for id in ids {
            assert_eq!(KeyspaceId::from_sql(KeyspaceId(id).to_sql()).0, id);
        }
        assert_eq!(KeyspaceId(0).to_sql(), i64::MIN);
    }

    #[test]
    fn key_types_parse_and_reject() {
        assert_eq!(KeyType::U64.parse("42").unwrap(), Key::U64(42));
        assert_eq!(KeyType::I64.parse("-42").unwrap(), Key::I64(-42));
        assert_eq!(KeyType::Hex.parse("0x00ff").unwrap(), Key::Bytes(vec![0, 255]));
        let uuid = KeyType::Uuid.parse("123e4567-e89b-12d3-a456-426614174000").unwrap();
        assert_eq!(uuid.to_string(), "123e4567-e89b-12d3-a456-426614174000");
        assert!(KeyType::U64.parse("-1").is_err());
        assert!(KeyType::Hex.parse("abc").is_err());
        assert!(KeyType::Uuid.parse("123e4567e89b12d3a456").is_err());
        assert!("float".parse::<KeyType>().is_err());
    }
}
