//! Identifiers with types of their own, so that a shard id is never mistaken
//! for a keyspace name or an epoch.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest accepted shard id or keyspace name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks a name used as a shard id or keyspace name: 1 to 64 characters
/// from `[A-Za-z0-9_.-]`, not starting with `.` or `-`. Such names are safe in
/// etcd keys, URLs, file names and log lines without escaping.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), InvalidName> {
    let reason = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("is longer than 64 bytes")
    } else if name.starts_with(['.', '-']) {
        Some("starts with '.' or '-'")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        Some("may only contain letters, digits, '_', '.' and '-'")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(InvalidName { kind, name: name.to_owned(), reason }),
    }
}

/// A shard id or keyspace name was rejected by [`validate_name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name:?}: {reason}")]
pub struct InvalidName {
    /// What was being named ("shard id", "keyspace name").
    pub kind: &'static str,
    /// The rejected name.
    pub name: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
                let name = name.into();
                validate_name($kind, &name)?;
                Ok($name(name))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The id of a shard: one database (a primary with its replicas).
    ShardId,
    "shard id"
);

name_type!(
    /// The name of a keyspace: a set of tables sharded by one key.
    KeyspaceName,
    "keyspace name"
);

/// A topology version. Every change of the topology makes a larger epoch; in
/// etcd it is the store's revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(ShardId::new("shard-0").is_ok());
        assert!(ShardId::new("eu_west.1").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", "ü", &"x".repeat(65)] {
            let err = ShardId::new(bad).unwrap_err();
            assert_eq!(err.kind, "shard id");
        }
        let err: Result<KeyspaceName, _> = serde_json::from_str("\"a/b\"");
        assert!(err.unwrap_err().to_string().contains("invalid keyspace name"));
    }
}
