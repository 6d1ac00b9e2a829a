//! The data plane of a move: everything the mover does inside the shard
//! databases, for PostgreSQL and SQLite (both ends of a move use the same
//! engine).
//!
//! The job runner ([`super::runner`]) calls these steps in order; every step
//! is idempotent, so that a new leader can repeat the step the old one died
//! in. See docs/MIGRATION.md for the protocol and why it is safe.
//!
//! Objects the engine creates in the shard databases (all prefixed
//! `shardkit_`):
//!
//! - `shardkit_changes` (source): the change log. Capture triggers insert
//!   one row per changed row of a moving range: `(id, job, tbl, pk)`, where
//!   `pk` is the primary key as a JSON array. It records *which* rows
//!   changed, not their content: a replay re-reads the current row from the
//!   source, so replays are idempotent and their order does not matter.
//! - `shardkit_bypass` (both): an always-empty table. The mover inserts a
//!   row into it inside its own transactions (and deletes it before
//!   commit) to pass fences; no other session can ever see that row.
//! - capture triggers `shardkit_cap_<job>_<n>` and fence triggers
//!   `shardkit_fence_<job>_<n>` (`n` = the table's index in the keyspace).

mod common;
mod postgres;
mod sqlite;

use std::time::Duration;

use shardlib::KeyRange;
use shardlib::ShardId;
use shardlib::topology::{Shard, Table};

/// What a move is about, as the engine needs it.
#[derive(Clone, Debug)]
pub struct MoveSpec {
    /// The job's id: `[a-z0-9_]{1,24}`, used in trigger and function names.
    pub job: String,
    /// The keyspace's name (for messages only).
    pub keyspace: String,
    /// The keyspace's managed tables, in declared order.
    pub tables: Vec<Table>,
    /// The ranges that move (non-empty; each one whole assignment).
    pub ranges: Vec<KeyRange>,
}

/// A changed row, as recorded in the change log: the table's index in
/// [`MoveSpec::tables`] and the primary key as a JSON array (text).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChangedKey {
    /// Index of the table in [`MoveSpec::tables`].
    pub table: usize,
    /// The primary key, a JSON array in the database's rendering.
    pub pk: String,
}

/// What the precheck found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Precheck {
    /// Rows in the moving ranges on the source, over all tables.
    pub rows: u64,
    /// Estimated bytes of those rows.
    pub bytes: u64,
}

/// One step of the copy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CopyStep {
    /// Rows copied by this step.
    pub rows: u64,
    /// Whether this table is now copied completely.
    pub table_done: bool,
}

/// One step of the replay.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayStep {
    /// Change-log entries consumed.
    pub entries: u64,
    /// The distinct rows re-read from the source and written to (or
    /// deleted from) the target.
    pub keys: Vec<ChangedKey>,
}

/// A difference found by verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The table.
    pub table: String,
    /// Which rows or chunk (e.g. `keyspace_id 12..=40: 100 rows vs 99`).
    pub what: String,
}

/// The result of a verification.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verified {
    /// Rows compared.
    pub rows: u64,
    /// Chunks (or key batches) compared.
    pub chunks: u64,
    /// Every difference (empty when source and target agree).
    pub mismatches: Vec<Mismatch>,
}

/// An error of the data plane. Messages name the shard and table and never
/// contain a password.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A database could not be reached or a statement failed.
    #[error("shard {shard}: {message}")]
    Database {
        /// The shard.
        shard: ShardId,
        /// What went wrong (redacted).
        message: String,
    },
    /// The databases are not fit for the move (schema mismatch, no primary
    /// key, rows already on the target, different engines, …). Nothing was
    /// changed.
    #[error("{0}")]
    Precheck(String),
}

/// Connection settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long a DDL statement (trigger creation) waits for a table lock
    /// before it gives up and retries (PostgreSQL `lock_timeout`).
    pub lock_timeout: Duration,
    /// Rows a PostgreSQL copy step reads from the source in one query, in
    /// key order, committing them in chunks of `batch_rows` (rounded down to
    /// whole chunks; at most `batch_rows` means one chunk per step). Rows
    /// are rarely stored in keyspace-id order, so a chunk of a few thousand
    /// rows touches pages all over the table; reading a span that is a good
    /// part of the table makes the copy's reads nearly sequential (with 10k
    /// chunks of a 1M-row table: 0.5× a `psql | psql` pipe's rate with one
    /// chunk per step, 0.85× with 250k-row spans).
    pub copy_span_rows: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            connect_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_millis(500),
            copy_span_rows: 250_000,
        }
    }
}

/// The two databases of a move, connected.
pub enum Engine {
    /// Both shards are PostgreSQL.
    Postgres(postgres::PgEngine),
    /// Both shards are SQLite files.
    Sqlite(sqlite::SqliteEngine),
}

/// Rows and estimated bytes of some tables in one range of one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeStats {
    /// Rows, over all tables.
    pub rows: u64,
    /// Estimated bytes of those rows.
    pub bytes: u64,
}

/// Which engine a shard's DSN names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Postgres,
    Sqlite,
}

impl Kind {
    fn of(shard: &Shard) -> Result<Kind, EngineError> {
        let dsn = shard.primary.expose();
        if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
            Ok(Kind::Postgres)
        } else if dsn.starts_with("sqlite:") {
            Ok(Kind::Sqlite)
        } else {
            Err(EngineError::Precheck(format!(
                "shard {} ({}): the mover supports postgres:// and sqlite: DSNs only",
                shard.id,
                shard.primary.redacted()
            )))
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Sqlite => "sqlite",
        }
    }
}

/// Calls the same method on whichever backend the engine is.
macro_rules! dispatch {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self {
            Engine::Postgres(engine) => engine.$method($($arg),*).await,
            Engine::Sqlite(engine) => engine.$method($($arg),*).await,
        }
    };
}

impl Engine {
    /// Connects to both shards' primaries (each bounded by
    /// [`EngineOptions::connect_timeout`]). Fails with
    /// [`EngineError::Precheck`] when they use different engines.
    pub async fn connect(source: &Shard, target: &Shard, options: &EngineOptions) -> Result<Engine, EngineError> {
        match (Kind::of(source)?, Kind::of(target)?) {
            (Kind::Postgres, Kind::Postgres) => {
                Ok(Engine::Postgres(postgres::PgEngine::connect(source, target, options).await?))
            }
            (Kind::Sqlite, Kind::Sqlite) => {
                Ok(Engine::Sqlite(sqlite::SqliteEngine::connect(source, target, options).await?))
            }
            (a, b) => Err(EngineError::Precheck(format!(
                "cannot move: source shard {} is {}, target {} is {}: moves need the same engine",
                source.id,
                a.name(),
                target.id,
                b.name()
            ))),
        }
    }

    /// Checks, without changing anything, that the move can start: every
    /// table exists on both shards with the same columns (names and types)
    /// and primary key, a 64-bit keyspace-id column and an index starting
    /// with it; the target holds no rows in the moving ranges (unless this
    /// job's capture is installed already, i.e. the job resumes). Returns
    /// the rows and estimated bytes to copy.
    pub async fn precheck(&self, spec: &MoveSpec) -> Result<Precheck, EngineError> {
        dispatch!(self, precheck(spec))
    }

    /// Creates the control tables and this job's capture triggers on the
    /// source (PostgreSQL: waits for in-flight writers of each table, so
    /// that every row written before is visible to the copy).
    pub async fn install_capture(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        dispatch!(self, install_capture(spec))
    }

    /// Copies the next chunk of at most `batch_rows` rows of table number
    /// `table`, in (keyspace id, primary key) order, in one target
    /// transaction; on PostgreSQL, the next chunks up to
    /// [`EngineOptions::copy_span_rows`] rows, each in its own transaction
    /// (so [`CopyStep::rows`] may exceed `batch_rows`). It resumes after the
    /// last row the target holds in the moving ranges, so it needs no
    /// checkpoint; for the same reason, replay only after every table is
    /// copied (a replayed row beyond the copy's position would make the copy
    /// skip the rows before it).
    pub async fn copy_step(&self, spec: &MoveSpec, table: usize, batch_rows: u64) -> Result<CopyStep, EngineError> {
        dispatch!(self, copy_step(spec, table, batch_rows))
    }

    /// Change-log entries of this job not replayed yet.
    pub async fn backlog(&self, spec: &MoveSpec) -> Result<u64, EngineError> {
        dispatch!(self, backlog(spec))
    }

    /// Replays up to `max_entries` change-log entries: re-reads the current
    /// rows of their keys from the source and upserts them on the target
    /// (or deletes keys that are gone or left the ranges), then deletes
    /// exactly the entries read.
    pub async fn replay_step(&self, spec: &MoveSpec, max_entries: u64) -> Result<ReplayStep, EngineError> {
        dispatch!(self, replay_step(spec, max_entries))
    }

    /// Compares source and target over the moving ranges, in chunks of
    /// `chunk_rows` rows, skipping rows with pending change-log entries
    /// (read in the same source snapshot). Nothing else may write to the
    /// target meanwhile.
    pub async fn verify_all(&self, spec: &MoveSpec, chunk_rows: u64) -> Result<Verified, EngineError> {
        dispatch!(self, verify_all(spec, chunk_rows))
    }

    /// Compares exactly the rows of `keys` on both shards (a key missing on
    /// both matches).
    pub async fn verify_keys(&self, spec: &MoveSpec, keys: &[ChangedKey]) -> Result<Verified, EngineError> {
        dispatch!(self, verify_keys(spec, keys))
    }

    /// Installs this job's fence on the source: every write whose old or
    /// new row lies in a moving range fails (SQLSTATE
    /// [`FENCE_SQLSTATE`](shardlib::sql::FENCE_SQLSTATE) /
    /// [`FENCE_MESSAGE_PREFIX`](shardlib::sql::FENCE_MESSAGE_PREFIX)),
    /// except the mover's own.
    pub async fn install_fence(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        dispatch!(self, install_fence(spec))
    }

    /// Removes this job's fence from the source (cancel).
    pub async fn drop_fence(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        dispatch!(self, drop_fence(spec))
    }

    /// Drops, on the target, the fences of earlier moves (of any job) that
    /// lie inside the moving ranges: the target owns those rows again.
    /// Fences reaching beyond the moving ranges stay, with a warning.
    pub async fn drop_target_fences(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        dispatch!(self, drop_target_fences(spec))
    }

    /// Drops this job's capture triggers and change-log entries.
    pub async fn drop_capture(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        dispatch!(self, drop_capture(spec))
    }

    /// Deletes up to `batch_rows` rows of the moving ranges from the source
    /// (past the fence); returns the rows deleted, 0 once none are left.
    pub async fn cleanup_source_step(&self, spec: &MoveSpec, batch_rows: u64) -> Result<u64, EngineError> {
        dispatch!(self, cleanup_source_step(spec, batch_rows))
    }

    /// Deletes up to `batch_rows` rows of the moving ranges from the target
    /// (cancel); returns the rows deleted, 0 once none are left.
    pub async fn clean_target_step(&self, spec: &MoveSpec, batch_rows: u64) -> Result<u64, EngineError> {
        dispatch!(self, clean_target_step(spec, batch_rows))
    }

    /// Closes the connections.
    pub async fn close(self) {
        dispatch!(self, close())
    }
}

/// Rows and estimated bytes of `tables` in `range` on `shard` (a
/// short-lived connection).
pub async fn range_stats(
    shard: &Shard,
    tables: &[Table],
    range: KeyRange,
    options: &EngineOptions,
) -> Result<RangeStats, EngineError> {
    match Kind::of(shard)? {
        Kind::Postgres => postgres::range_stats(shard, tables, range, options).await,
        Kind::Sqlite => sqlite::range_stats(shard, tables, range, options).await,
    }
}

/// The keyspace id of the median row (by keyspace id) of the first table
/// in `range` on `shard`, `None` when the range is empty: a split point
/// that halves the rows.
pub async fn median_keyspace_id(
    shard: &Shard,
    tables: &[Table],
    range: KeyRange,
    options: &EngineOptions,
) -> Result<Option<u64>, EngineError> {
    match Kind::of(shard)? {
        Kind::Postgres => postgres::median_keyspace_id(shard, tables, range, options).await,
        Kind::Sqlite => sqlite::median_keyspace_id(shard, tables, range, options).await,
    }
}

/// `count` evenly spaced quantiles of the keyspace ids of the first table's
/// rows in `range`, ascending: the `i`-th (from 1) has about `i/(count+1)`
/// of the rows before it (fewer when the range has fewer rows). Empty when
/// the range is empty. The rebalance planner splits ranges at these.
pub async fn keyspace_id_quantiles(
    shard: &Shard,
    tables: &[Table],
    range: KeyRange,
    count: usize,
    options: &EngineOptions,
) -> Result<Vec<u64>, EngineError> {
    match Kind::of(shard)? {
        Kind::Postgres => postgres::keyspace_id_quantiles(shard, tables, range, count, options).await,
        Kind::Sqlite => sqlite::keyspace_id_quantiles(shard, tables, range, count, options).await,
    }
}
