//! Pieces both backends share: the moving ranges as bounds of the stored
//! `keyspace_id` column, names of the objects the engine creates, quoting of
//! the few literals that end up in SQL text, the schema comparison of the
//! precheck and error construction.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;

use shardlib::ShardId;
use shardlib::sql::schema::{quote_ident, quote_table};
use shardlib::topology::{Table, redact};

use super::{EngineError, Mismatch, MoveSpec};

/// Inclusive bounds of the stored `keyspace_id` column: rows of a moving
/// range are exactly `keyspace_id BETWEEN lo AND hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Interval {
    pub lo: i64,
    pub hi: i64,
}

impl Interval {
    /// Whether `other` lies entirely inside this interval.
    pub fn contains(&self, other: &Interval) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }

    /// Whether the two intervals share a value.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }
}

/// The moving ranges as sorted, merged intervals, so that adjacent ranges
/// become one index range and every query walks them in key order.
pub(super) fn intervals(spec: &MoveSpec) -> Vec<Interval> {
    let mut all: Vec<Interval> = spec
        .ranges
        .iter()
        .map(|&range| {
            let (lo, hi) = shardlib::sql::schema::sql_bounds(range);
            Interval { lo, hi }
        })
        .collect();
    all.sort_by_key(|iv| iv.lo);
    let mut merged: Vec<Interval> = Vec::with_capacity(all.len());
    for iv in all {
        match merged.last_mut() {
            Some(last) if last.hi == i64::MAX || iv.lo <= last.hi + 1 => last.hi = last.hi.max(iv.hi),
            _ => merged.push(iv),
        }
    }
    merged
}

/// `("kid" BETWEEN a AND b OR "kid" BETWEEN c AND d)`, with `kid` already
/// quoted (and qualified if needed).
pub(super) fn in_intervals(kid: &str, intervals: &[Interval]) -> String {
    let parts: Vec<String> = intervals.iter().map(|iv| format!("{kid} BETWEEN {} AND {}", iv.lo, iv.hi)).collect();
    format!("({})", parts.join(" OR "))
}

/// A string literal: single quotes doubled (both engines treat backslashes
/// literally: PostgreSQL with `standard_conforming_strings`, the default).
pub(super) fn sql_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Checks what every step relies on: a valid job id (it becomes part of
/// trigger names), at least one table and one range.
pub(super) fn check_spec(spec: &MoveSpec) -> Result<(), EngineError> {
    let valid = (1..=24).contains(&spec.job.len())
        && spec.job.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(EngineError::Precheck(format!("invalid job id {:?}: use 1 to 24 of [a-z0-9_]", spec.job)));
    }
    if spec.tables.is_empty() {
        return Err(EngineError::Precheck(format!("keyspace {} has no tables to move", spec.keyspace)));
    }
    if spec.ranges.is_empty() {
        return Err(EngineError::Precheck(format!("job {} moves no range", spec.job)));
    }
    Ok(())
}

/// The table of `spec` at `index`.
pub(super) fn table(spec: &MoveSpec, index: usize) -> Result<&Table, EngineError> {
    spec.tables.get(index).ok_or_else(|| {
        EngineError::Precheck(format!(
            "keyspace {} has no table number {index} ({} tables)",
            spec.keyspace,
            spec.tables.len()
        ))
    })
}

/// Name of the capture trigger (and PostgreSQL function) of table `n`.
pub(super) fn capture_name(job: &str, n: usize) -> String {
    format!("shardkit_cap_{job}_{n}")
}

/// Name of the fence trigger (and PostgreSQL function) of table `n`.
pub(super) fn fence_name(job: &str, n: usize) -> String {
    format!("shardkit_fence_{job}_{n}")
}

/// The message of a fenced write (after [`shardlib::sql::FENCE_MESSAGE_PREFIX`]).
pub(super) fn fence_message(spec: &MoveSpec) -> String {
    let ranges: Vec<String> = spec.ranges.iter().map(ToString::to_string).collect();
    let noun = if ranges.len() == 1 { "range" } else { "ranges" };
    format!(
        "{}: keyspace {} {noun} {} moved by job {}",
        shardlib::sql::FENCE_MESSAGE_PREFIX,
        spec.keyspace,
        ranges.join(","),
        spec.job
    )
}

/// A column as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Column {
    /// The column's name (unquoted).
    pub name: String,
    /// Its type: PostgreSQL `format_type`, SQLite's declared type.
    pub ty: String,
    /// Whether the database computes it (generated column): never copied.
    pub generated: bool,
}

/// What the engine needs to know about a table on one shard.
#[derive(Clone, Debug)]
pub(super) struct Meta {
    /// The quoted table name.
    pub table: String,
    /// The quoted keyspace-id column.
    pub kid: String,
    /// All columns, in the table's order.
    pub columns: Vec<Column>,
    /// The primary key's columns, in key order.
    pub pk: Vec<Column>,
}

impl Meta {
    /// The columns that are copied: all but generated ones, quoted, comma
    /// separated, optionally prefixed with `alias.`.
    pub fn copy_list(&self, alias: &str) -> String {
        let cols = self.columns.iter().filter(|c| !c.generated);
        cols.map(|c| format!("{alias}{}", q(&c.name))).collect::<Vec<_>>().join(", ")
    }

    /// The columns that are copied, unquoted.
    pub fn copied(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.generated)
    }

    /// The key order of a move: the keyspace-id column, then the primary
    /// key's other columns (a table may include the keyspace id in its key).
    pub fn order(&self) -> Vec<&Column> {
        let kid = self.columns.iter().find(|c| q(&c.name) == self.kid);
        kid.into_iter().chain(self.pk.iter().filter(|c| q(&c.name) != self.kid)).collect()
    }

    /// The quoted order columns, comma separated, with a prefix and suffix
    /// per column (`"d."`, `" DESC"`).
    pub fn order_list(&self, prefix: &str, suffix: &str) -> String {
        self.order().iter().map(|c| format!("{prefix}{}{suffix}", q(&c.name))).collect::<Vec<_>>().join(", ")
    }

    /// The quoted primary-key columns, comma separated, with a prefix.
    pub fn pk_list(&self, prefix: &str) -> String {
        self.pk.iter().map(|c| format!("{prefix}{}", q(&c.name))).collect::<Vec<_>>().join(", ")
    }

    /// `c = EXCLUDED.c, …` for the copied columns outside the primary key
    /// (`None` when every copied column is part of the key).
    pub fn update_set(&self) -> Option<String> {
        let sets: Vec<String> = self
            .copied()
            .filter(|c| !self.pk.iter().any(|k| k.name == c.name))
            .map(|c| format!("{0} = excluded.{0}", q(&c.name)))
            .collect();
        (!sets.is_empty()).then(|| sets.join(", "))
    }
}

/// Quotes a name that came from the catalog (always valid, but quoted the
/// same way as configured names). Names with a double quote cannot be
/// configured, so doubling is enough here.
pub(super) fn q(name: &str) -> String {
    quote_ident(name).unwrap_or_else(|_| format!("\"{}\"", name.replace('"', "\"\"")))
}

/// The quoted table name and keyspace-id column of `table`.
pub(super) fn quoted(table: &Table) -> Result<(String, String), EngineError> {
    let name = quote_table(&table.name).map_err(|e| EngineError::Precheck(format!("table {}: {e}", table.name)))?;
    let kid = quote_ident(&table.keyspace_id_column)
        .map_err(|e| EngineError::Precheck(format!("table {}: keyspace id column: {e}", table.name)))?;
    Ok((name, kid))
}

/// One end of a move, for messages.
pub(super) struct Ends<'a> {
    pub source: &'a ShardId,
    pub target: &'a ShardId,
}

/// The precheck's comparison of one table on both shards: primary keys
/// equal, same columns with the same types, a usable keyspace-id column.
/// `int_type` tells whether a declared type is fit for the keyspace id.
pub(super) fn compare_tables(
    ends: &Ends<'_>,
    table: &Table,
    source: &Meta,
    target: &Meta,
    int_type: impl Fn(&str) -> bool,
) -> Result<(), EngineError> {
    let fail = |msg: String| Err(EngineError::Precheck(format!("table {}: {msg}", table.name)));
    for (shard, meta) in [(ends.source, source), (ends.target, target)] {
        if meta.pk.is_empty() {
            return fail(format!(
                "has no primary key on shard {shard}; the mover identifies rows by primary key: add one"
            ));
        }
        match meta.columns.iter().find(|c| c.name == table.keyspace_id_column) {
            None => {
                return fail(format!("has no keyspace id column {} on shard {shard}", table.keyspace_id_column));
            }
            Some(c) if !int_type(&c.ty) => {
                return fail(format!(
                    "keyspace id column {} on shard {shard} is {}, not a 64-bit integer (bigint)",
                    c.name, c.ty
                ));
            }
            Some(_) => {}
        }
    }
    let names = |m: &Meta| m.pk.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    if names(source) != names(target) {
        return fail(format!(
            "primary key ({}) on source shard {} differs from ({}) on target shard {}",
            names(source).join(", "),
            ends.source,
            names(target).join(", "),
            ends.target
        ));
    }
    for column in &source.columns {
        match target.columns.iter().find(|c| c.name == column.name) {
            None => {
                return fail(format!(
                    "column {} exists on source shard {} but not on target shard {}",
                    column.name, ends.source, ends.target
                ));
            }
            Some(other) if other.ty != column.ty || other.generated != column.generated => {
                let describe = |c: &Column| format!("{}{}", c.ty, if c.generated { " (generated)" } else { "" });
                return fail(format!(
                    "column {} is {} on source shard {} but {} on target shard {}",
                    column.name,
                    describe(column),
                    ends.source,
                    describe(other),
                    ends.target
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = target.columns.iter().find(|c| !source.columns.iter().any(|s| s.name == c.name)) {
        return fail(format!(
            "column {} exists on target shard {} but not on source shard {}",
            extra.name, ends.target, ends.source
        ));
    }
    Ok(())
}

/// A database error on `shard` while doing `what`, with any password in
/// the text redacted.
pub(super) fn db_error(shard: &ShardId, what: impl Display, error: impl Display) -> EngineError {
    EngineError::Database { shard: shard.clone(), message: redact(&format!("{what}: {error}")) }
}

/// `[a, b, c]`: the JSON array of the given JSON texts.
pub(super) fn json_array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(","))
}

/// A position in key order: a row's keyspace-id value and the SQL
/// literals of its order columns ([`Meta::order`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Cursor {
    /// The stored keyspace id.
    pub kid: i64,
    /// Literals of the keyspace id and the rest of the key.
    pub literals: Vec<String>,
}

impl Cursor {
    /// A cursor from literals whose first one is the keyspace id as text
    /// (`what` names the row for the error).
    pub fn new(kid: &str, literals: Vec<String>, what: impl Display) -> Result<Cursor, EngineError> {
        let kid = kid
            .parse()
            .map_err(|_| EngineError::Precheck(format!("{what}: keyspace id {kid:?} is not a 64-bit integer")))?;
        Ok(Cursor { kid, literals })
    }
}

/// The condition of a chunk in `iv`: rows after `after` and up to `upto`
/// in key order (either may be open).
///
/// The keyspace id's bounds are narrowed to the chunk's: planners cannot
/// estimate row comparisons, and would scan the whole table for a chunk
/// without them.
pub(super) fn chunk_condition(meta: &Meta, iv: Interval, after: Option<&Cursor>, upto: Option<&Cursor>) -> String {
    let order = meta.order_list("", "");
    let lo = after.map_or(iv.lo, |c| c.kid.max(iv.lo));
    let hi = upto.map_or(iv.hi, |c| c.kid.min(iv.hi));
    let mut condition = format!("{} BETWEEN {lo} AND {hi}", meta.kid);
    if let Some(after) = after {
        condition += &format!(" AND ({order}) > ({})", after.literals.join(", "));
    }
    if let Some(upto) = upto {
        condition += &format!(" AND ({order}) <= ({})", upto.literals.join(", "));
    }
    condition
}

/// A cursor for messages: its literals, or "the range bound".
pub(super) fn describe(cursor: &Option<Cursor>) -> String {
    cursor.as_ref().map(|c| format!("({})", c.literals.join(", "))).unwrap_or_else(|| "the range bound".to_owned())
}

/// Checks that a change-log entry names a table of the spec.
pub(super) fn table_index(spec: &MoveSpec, index: usize, shard: &ShardId) -> Result<(), EngineError> {
    if index >= spec.tables.len() {
        return Err(db_error(
            shard,
            "reading the change log",
            format!(
                "an entry names table number {index}, but keyspace {} has {} tables",
                spec.keyspace,
                spec.tables.len()
            ),
        ));
    }
    Ok(())
}

/// Compares rows by key (text or hash per key) and records every difference.
pub(super) fn compare_rows(
    table: &str,
    source: &BTreeMap<String, String>,
    target: &BTreeMap<String, String>,
    mismatches: &mut Vec<Mismatch>,
) {
    let keys: BTreeSet<&String> = source.keys().chain(target.keys()).collect();
    for key in keys {
        let what = match (source.get(key), target.get(key)) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(_), Some(_)) => "differs between source and target",
            (Some(_), None) => "is missing on the target",
            (None, Some(_)) => "is on the target but not on the source",
            (None, None) => continue,
        };
        mismatches.push(Mismatch { table: table.to_owned(), what: format!("row {key} {what}") });
    }
}

/// What to do with a fence found on the target.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FenceFate {
    /// Does not touch the moved ranges.
    Keep,
    /// Overlaps them but reaches beyond: narrowed to what is left.
    Partial,
    /// Lies inside them: the target owns these rows now.
    Drop,
}

/// `fence` without `moved`: what an older fence must still cover when part
/// of its ranges comes back (sorted, disjoint).
pub(super) fn subtract(fence: &[Interval], moved: &[Interval]) -> Vec<Interval> {
    let mut left: Vec<Interval> = fence.to_vec();
    for m in moved {
        let mut next = Vec::with_capacity(left.len() + 1);
        for f in left {
            if !f.overlaps(m) {
                next.push(f);
                continue;
            }
            if f.lo < m.lo {
                next.push(Interval { lo: f.lo, hi: m.lo - 1 });
            }
            if f.hi > m.hi {
                next.push(Interval { lo: m.hi + 1, hi: f.hi });
            }
        }
        left = next;
    }
    left.sort_by_key(|iv| iv.lo);
    left
}

/// Groups rows of `shardkit_fences` by (job, table, trigger).
pub(super) fn group_fences(
    rows: Vec<(String, String, String, i64, i64)>,
) -> BTreeMap<(String, String, String), Vec<Interval>> {
    let mut fences: BTreeMap<(String, String, String), Vec<Interval>> = BTreeMap::new();
    for (job, tbl, trg, lo, hi) in rows {
        fences.entry((job, tbl, trg)).or_default().push(Interval { lo, hi });
    }
    fences
}

/// Whether a fence (its intervals) lies inside the moved intervals.
pub(super) fn fence_fate(fence: &[Interval], moved: &[Interval]) -> FenceFate {
    let overlaps = fence.iter().any(|f| moved.iter().any(|m| m.overlaps(f)));
    let contained = fence.iter().all(|f| moved.iter().any(|m| m.contains(f)));
    match (overlaps, contained) {
        (false, _) => FenceFate::Keep,
        (true, true) => FenceFate::Drop,
        (true, false) => FenceFate::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracting_moved_intervals_leaves_the_rest() {
        let iv = |lo, hi| Interval { lo, hi };
        assert_eq!(subtract(&[iv(0, 100)], &[iv(20, 30)]), vec![iv(0, 19), iv(31, 100)]);
        assert_eq!(subtract(&[iv(0, 100)], &[iv(0, 100)]), vec![]);
        assert_eq!(subtract(&[iv(0, 100)], &[iv(50, 200)]), vec![iv(0, 49)]);
        assert_eq!(subtract(&[iv(0, 10), iv(20, 30)], &[iv(5, 25)]), vec![iv(0, 4), iv(26, 30)]);
    }

    fn spec(ranges: &[&str]) -> MoveSpec {
        MoveSpec {
            job: "j1".into(),
            keyspace: "users".into(),
            tables: vec![],
            ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn adjacent_ranges_merge() {
        let ivs = intervals(&spec(&["a0-c0", "80-a0", "e0-"]));
        assert_eq!(ivs.len(), 2);
        assert_eq!(ivs[0].lo, shardlib::sql::schema::sql_bounds("80-a0".parse().unwrap()).0);
        assert_eq!(ivs[1].hi, i64::MAX);
        let all = intervals(&spec(&["-80", "80-"]));
        assert_eq!(all, vec![Interval { lo: i64::MIN, hi: i64::MAX }]);
    }

    #[test]
    fn fences_inside_the_moved_ranges_are_dropped() {
        let iv = |lo, hi| Interval { lo, hi };
        let moved = [iv(0, 100), iv(200, 300)];
        assert_eq!(fence_fate(&[iv(10, 20)], &moved), FenceFate::Drop);
        assert_eq!(fence_fate(&[iv(0, 100), iv(250, 300)], &moved), FenceFate::Drop);
        assert_eq!(fence_fate(&[iv(101, 199)], &moved), FenceFate::Keep);
        assert_eq!(fence_fate(&[iv(50, 150)], &moved), FenceFate::Partial);
        assert_eq!(fence_fate(&[iv(10, 20), iv(120, 130)], &moved), FenceFate::Partial);
    }

    #[test]
    fn literals_and_messages() {
        assert_eq!(sql_string("it's"), "'it''s'");
        assert_eq!(fence_message(&spec(&["80-c0"])), "shardkit fenced: keyspace users range 80-c0 moved by job j1");
        let mut bad = spec(&["80-"]);
        bad.job = "J-1".into();
        assert!(check_spec(&bad).is_err());
    }
}
