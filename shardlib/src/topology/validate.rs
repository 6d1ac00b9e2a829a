//! The rules a topology must follow.

use std::collections::HashSet;

use super::{Keyspace, Partitioning, ShardState, Topology, TopologyError};
use crate::router::KeyspaceRouter;

/// Largest shard weight. Weights multiply ring tokens, so an unbounded
/// weight could make compiling a ring arbitrarily expensive.
pub const MAX_WEIGHT: u32 = 10_000;

/// Longest SQL identifier accepted (PostgreSQL's limit).
const MAX_IDENTIFIER_LEN: usize = 63;

impl Topology {
    /// Checks every rule: names, unique shard ids, table definitions, full
    /// and non-overlapping range coverage, owners that exist and are not
    /// removed, and parameters each placement algorithm accepts. The error
    /// names the keyspace and the shard, range or table at fault.
    pub fn validate(&self) -> Result<(), TopologyError> {
        self.validate_structure()?;
        for (name, keyspace) in &self.keyspaces {
            KeyspaceRouter::compile(name, keyspace)?;
        }
        Ok(())
    }

    /// The checks that do not need the placement built (the router builds it
    /// and checks the rest as it goes).
    pub(crate) fn validate_structure(&self) -> Result<(), TopologyError> {
        if self.cluster.trim().is_empty() {
            return Err(TopologyError::EmptyClusterName);
        }
        for (name, keyspace) in &self.keyspaces {
            validate_keyspace(name.as_str(), keyspace)?;
        }
        Ok(())
    }
}

fn validate_keyspace(name: &str, keyspace: &Keyspace) -> Result<(), TopologyError> {
    if keyspace.shards.is_empty() {
        return Err(TopologyError::NoShards { keyspace: name.to_owned() });
    }
    let mut seen = HashSet::new();
    for shard in &keyspace.shards {
        let invalid = |reason: &str| TopologyError::InvalidShard {
            keyspace: name.to_owned(),
            shard: shard.id.to_string(),
            reason: reason.to_owned(),
        };
        if !seen.insert(shard.id.as_str()) {
            return Err(TopologyError::DuplicateShard { keyspace: name.to_owned(), shard: shard.id.to_string() });
        }
        if shard.primary.is_blank() {
            return Err(invalid("the primary connection string is empty"));
        }
        if shard.replicas.iter().any(|r| r.dsn.is_blank()) {
            return Err(invalid("a replica connection string is empty"));
        }
        if shard.capacity_bytes == Some(0) {
            return Err(invalid("capacity_bytes must be at least 1 when given"));
        }
        if shard.weight == 0 || shard.weight > MAX_WEIGHT {
            return Err(invalid(&format!("weight must be between 1 and {MAX_WEIGHT}, got {}", shard.weight)));
        }
        let labels = std::iter::once(&shard.labels).chain(shard.replicas.iter().map(|r| &r.labels));
        for label in labels.flat_map(|l| [&l.zone, &l.datacenter]).flatten() {
            if label.trim().is_empty() {
                return Err(invalid("a zone or datacenter label is empty"));
            }
        }
    }
    if keyspace.shards.iter().all(|s| s.state == ShardState::Removed) {
        return Err(TopologyError::NoShards { keyspace: name.to_owned() });
    }
    if matches!(keyspace.partitioning, Partitioning::Jump | Partitioning::JumpBack) {
        // Jump-family hashes number buckets by position: only the tail can go.
        let first_removed = keyspace.shards.iter().position(|s| s.state == ShardState::Removed);
        let live_after = first_removed.and_then(|first| {
            keyspace.shards[first..].iter().find(|s| s.state != ShardState::Removed).map(|l| (first, l))
        });
        if let Some((first, live)) = live_after {
            return Err(TopologyError::InvalidShard {
                keyspace: name.to_owned(),
                shard: keyspace.shards[first].id.to_string(),
                reason: format!(
                    "{} can only remove shards at the end of the list, but {} follows it",
                    keyspace.partitioning.algorithm(),
                    live.id
                ),
            });
        }
    }
    validate_tables(name, keyspace)
}

fn validate_tables(name: &str, keyspace: &Keyspace) -> Result<(), TopologyError> {
    let mut tables = HashSet::new();
    for table in &keyspace.tables {
        let invalid = |reason: String| TopologyError::InvalidTable {
            keyspace: name.to_owned(),
            table: table.name.clone(),
            reason,
        };
        check_identifier(&table.name).map_err(|why| invalid(format!("table name {why}")))?;
        if !tables.insert(table.name.as_str()) {
            return Err(invalid("is listed twice".to_owned()));
        }
        if table.key_columns.is_empty() {
            return Err(invalid("has no key columns".to_owned()));
        }
        let mut columns = HashSet::new();
        for column in table.key_columns.iter().chain([&table.keyspace_id_column]) {
            check_identifier(column).map_err(|why| invalid(format!("column {column:?} {why}")))?;
            if !columns.insert(column.as_str()) {
                return Err(invalid(format!("column {column:?} is used twice")));
            }
        }
    }
    Ok(())
}

/// SQL identifiers reaching queries are restricted to a safe alphabet, so
/// quoting them can never be subverted.
fn check_identifier(ident: &str) -> Result<(), &'static str> {
    let mut bytes = ident.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok {
        return Err("must start with a letter or '_'");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err("may only contain letters, digits and '_'");
    }
    if ident.len() > MAX_IDENTIFIER_LEN {
        return Err("is longer than 63 bytes");
    }
    Ok(())
}
