//! Serde for keyspace seeds: a u64 that TOML (whose integers are i64) cannot
//! always hold. Seeds up to `i64::MAX` are written as integers, larger ones
//! as decimal strings; both forms are read back.

use serde::{Deserialize, Deserializer, Serializer};

pub(super) fn serialize<S: Serializer>(seed: &u64, s: S) -> Result<S::Ok, S::Error> {
    match i64::try_from(*seed) {
        Ok(small) => s.serialize_i64(small),
        Err(_) => s.serialize_str(&seed.to_string()),
    }
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Int(u64),
        Text(String),
    }
    match Repr::deserialize(d)? {
        Repr::Int(v) => Ok(v),
        Repr::Text(t) => {
            t.parse().map_err(|_| serde::de::Error::custom(format!("seed {t:?} is not an unsigned 64-bit integer")))
        }
    }
}
