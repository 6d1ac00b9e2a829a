//! The SQLite backend.
//!
//! The target's connection ATTACHes the source file as `src`, so copies,
//! replays and verification are single statements over both files
//! (`INSERT INTO main.t SELECT … FROM src.t …`, `EXCEPT` both ways): no row
//! passes through Rust, and every column type survives. Triggers, the change
//! log and deletes on the source go through a connection of its own.
//!
//! Positions in key order (a chunk's bounds) are fetched as SQL literals
//! (`quote()`, and 17 significant digits for reals) and inlined, so that a
//! bound compares exactly as the stored value.
//!
//! Tables must live in the `main` database of each file: SQLite triggers
//! only reach tables of their own database. With the default rollback
//! journal a long read of the source holds off its writers; use WAL mode for
//! shards that are written during a move.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;

use shardlib::sql::sqlx::{
    self, AssertSqlSafe, Connection as _, Row as _, SqliteConnection,
    sqlite::{SqliteConnectOptions, SqliteRow},
};
use shardlib::topology::{Shard, Table};
use shardlib::{KeyRange, KeyspaceId, ShardId};
use tokio::sync::Mutex;

use super::common::{
    Column, Cursor, Ends, FenceFate, Meta, capture_name, check_spec, chunk_condition, compare_rows, compare_tables,
    db_error, describe, fence_fate, fence_message, fence_name, group_fences, in_intervals, intervals, json_array, q,
    sql_string, table, table_index,
};
use super::{
    ChangedKey, CopyStep, EngineError, EngineOptions, Mismatch, MoveSpec, Precheck, RangeStats, ReplayStep, Verified,
};

/// The suffixes of the three triggers (insert, update, delete) that
/// implement one capture or fence on a table.
const TRIGGER_SUFFIXES: [&str; 3] = ["_i", "_u", "_d"];

/// One shard of a SQLite move: a connection and the file.
#[derive(Debug)]
struct Side {
    shard: ShardId,
    conn: Mutex<SqliteConnection>,
}

impl Side {
    fn err(&self, what: impl Display, error: impl Display) -> EngineError {
        db_error(&self.shard, what, error)
    }
}

/// A SQLite source and target, connected; the target's connection has the
/// source attached as `src`.
#[derive(Debug)]
pub struct SqliteEngine {
    source: Side,
    target: Side,
}

/// Parses a shard's DSN and opens it (bounded by the connect timeout).
/// Returns the connection and the database file.
async fn open(shard: &Shard, options: &EngineOptions) -> Result<(SqliteConnection, PathBuf), EngineError> {
    let what = format!("opening {}", shard.primary.redacted());
    let opts = SqliteConnectOptions::from_str(shard.primary.expose()).map_err(|e| db_error(&shard.id, &what, e))?;
    let file = opts.get_filename().to_owned();
    if file.as_os_str().is_empty() || file.to_str().is_some_and(|f| f == ":memory:" || f.contains("mode=memory")) {
        return Err(EngineError::Precheck(format!(
            "shard {} ({}) is an in-memory SQLite database: the mover needs a file",
            shard.id,
            shard.primary.redacted()
        )));
    }
    let conn = tokio::time::timeout(options.connect_timeout, SqliteConnection::connect_with(&opts))
        .await
        .map_err(|_| db_error(&shard.id, &what, format!("not open within {:?}", options.connect_timeout)))?
        .map_err(|e| db_error(&shard.id, &what, e))?;
    Ok((conn, file))
}

/// Runs one statement without parameters.
async fn exec(conn: &mut SqliteConnection, sql: String) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(AssertSqlSafe(sql)).execute(conn).await?.rows_affected())
}

/// The bare quoted name of `table` (SQLite tables must be in `main`) and
/// its quoted keyspace-id column.
fn names(table: &Table) -> Result<(String, String), EngineError> {
    let bare = match table.name.split_once('.') {
        None => table.name.as_str(),
        Some(("main", bare)) => bare,
        Some(_) => {
            return Err(EngineError::Precheck(format!(
                "table {}: SQLite tables must be in the main database (no schema prefix)",
                table.name
            )));
        }
    };
    let name = shardlib::sql::schema::quote_ident(bare)
        .map_err(|e| EngineError::Precheck(format!("table {}: {e}", table.name)))?;
    let kid = shardlib::sql::schema::quote_ident(&table.keyspace_id_column)
        .map_err(|e| EngineError::Precheck(format!("table {}: keyspace id column: {e}", table.name)))?;
    Ok((name, kid))
}

/// The table's columns and primary key on `conn`'s main database, `None`
/// if it does not exist. Declared types are compared in upper case.
async fn meta(shard: &ShardId, conn: &mut SqliteConnection, table: &Table) -> Result<Option<Meta>, EngineError> {
    let (name, kid) = names(table)?;
    let bare = name.trim_matches('"').to_owned();
    let rows = sqlx::query("SELECT name, upper(type), pk, hidden FROM pragma_table_xinfo(?1, 'main') ORDER BY cid")
        .bind(&bare)
        .fetch_all(conn)
        .await
        .map_err(|e| db_error(shard, format_args!("reading the columns of table {}", table.name), e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut columns = Vec::new();
    let mut pk = Vec::new();
    for row in rows {
        let hidden: i64 = row.get(3);
        let column = Column { name: row.get(0), ty: row.get(1), generated: hidden != 0 };
        let position: i64 = row.get(2);
        if position > 0 {
            pk.push((position, column.clone()));
        }
        columns.push(column);
    }
    pk.sort_by_key(|(position, _)| *position);
    Ok(Some(Meta { table: name, kid, columns, pk: pk.into_iter().map(|(_, c)| c).collect() }))
}

async fn meta_required(shard: &ShardId, conn: &mut SqliteConnection, table: &Table) -> Result<Meta, EngineError> {
    meta(shard, conn, table)
        .await?
        .ok_or_else(|| db_error(shard, format_args!("table {}", table.name), "does not exist"))
}

/// Whether `main` has an object of `kind` named `name`.
async fn exists(shard: &ShardId, conn: &mut SqliteConnection, kind: &str, name: &str) -> Result<bool, EngineError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM main.sqlite_schema WHERE type = ?1 AND name = ?2)")
        .bind(kind)
        .bind(name)
        .fetch_one(conn)
        .await
        .map_err(|e| db_error(shard, format_args!("looking up {name}"), e))
}

/// Inserts (`on`) or deletes the bypass row of `main` inside the caller's
/// transaction. A database without the bypass table has no fences either.
async fn bypass(side: &Side, conn: &mut SqliteConnection, on: bool) -> Result<(), EngineError> {
    if !exists(&side.shard, conn, "table", "shardkit_bypass").await? {
        return Ok(());
    }
    let sql = if on { "INSERT INTO main.shardkit_bypass VALUES (1)" } else { "DELETE FROM main.shardkit_bypass" };
    sqlx::query(sql).execute(conn).await.map_err(|e| side.err("writing shardkit_bypass", e))?;
    Ok(())
}

/// Runs statements in one transaction.
async fn run_all(
    side: &Side,
    conn: &mut SqliteConnection,
    what: &str,
    statements: Vec<String>,
) -> Result<(), EngineError> {
    let mut tx = conn.begin().await.map_err(|e| side.err(what, e))?;
    for statement in statements {
        sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut *tx).await.map_err(|e| side.err(what, e))?;
    }
    tx.commit().await.map_err(|e| side.err(what, e))
}

/// Statements creating the control tables (`with_changes`: also the log).
fn control_tables(with_changes: bool) -> Vec<String> {
    let mut statements = Vec::new();
    if with_changes {
        statements.push(
            "CREATE TABLE IF NOT EXISTS main.shardkit_changes (id INTEGER PRIMARY KEY AUTOINCREMENT, \
             job TEXT NOT NULL, tbl INTEGER NOT NULL, pk TEXT NOT NULL)"
                .to_owned(),
        );
        statements
            .push("CREATE INDEX IF NOT EXISTS main.shardkit_changes_job_id ON shardkit_changes (job, id)".to_owned());
    }
    statements.push("CREATE TABLE IF NOT EXISTS main.shardkit_bypass (x INTEGER)".to_owned());
    statements.push(
        "CREATE TABLE IF NOT EXISTS main.shardkit_fences (job TEXT NOT NULL, tbl TEXT NOT NULL, trg TEXT NOT NULL, \
         lo INTEGER NOT NULL, hi INTEGER NOT NULL)"
            .to_owned(),
    );
    statements
}

/// `quote(c)` (17 digits for reals) of every order column: the position of
/// a row as SQL literals.
fn literal_list(meta: &Meta) -> String {
    let parts: Vec<String> = meta
        .order()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c = q(&c.name);
            format!("CASE typeof({c}) WHEN 'real' THEN printf('%!.17g', {c}) ELSE quote({c}) END AS shardkit_{i}")
        })
        .collect();
    parts.join(", ")
}

/// Runs a query returning one row of literals (see [`literal_list`]).
async fn fetch_cursor(
    side: &Side,
    conn: &mut SqliteConnection,
    sql: String,
    t: &Table,
) -> Result<Option<Cursor>, EngineError> {
    let row: Option<SqliteRow> = sqlx::query(AssertSqlSafe(sql))
        .fetch_optional(conn)
        .await
        .map_err(|e| side.err(format_args!("reading key positions of table {}", t.name), e))?;
    let Some(row) = row else { return Ok(None) };
    let literals: Vec<String> = (0..row.len()).map(|i| row.get(i)).collect();
    Cursor::new(&literals[0].clone(), literals, format_args!("table {} on shard {}", t.name, side.shard)).map(Some)
}

/// `SELECT json_extract(value, '$[0]'), … FROM json_each(?1)`: the keys of a
/// JSON array of primary keys, bound as parameter 1.
fn key_select(meta: &Meta) -> String {
    let parts: Vec<String> = (0..meta.pk.len()).map(|i| format!("json_extract(value, '$[{i}]')")).collect();
    format!("SELECT {} FROM json_each(?1)", parts.join(", "))
}

/// `(pk) NOT IN (pending keys of table n)`, or `1` without a change log.
fn not_pending(meta: &Meta, spec: &MoveSpec, n: usize, has_log: bool) -> String {
    if !has_log {
        return "1".to_owned();
    }
    let parts: Vec<String> = (0..meta.pk.len()).map(|i| format!("json_extract(pk, '$[{i}]')")).collect();
    format!(
        "({}) NOT IN (SELECT {} FROM src.shardkit_changes WHERE job = {} AND tbl = {n})",
        meta.pk_list(""),
        parts.join(", "),
        sql_string(&spec.job)
    )
}

/// Deletes up to `batch` rows of the moving ranges from `main`, past fences.
async fn delete_step(side: &Side, spec: &MoveSpec, batch: u64) -> Result<u64, EngineError> {
    check_spec(spec)?;
    let ivs = intervals(spec);
    let mut conn = side.conn.lock().await;
    for t in spec.tables.iter().rev() {
        let meta = meta_required(&side.shard, &mut conn, t).await?;
        let range = in_intervals(&meta.kid, &ivs);
        let sql = format!(
            "DELETE FROM main.{table} WHERE {range} AND ({pk}) IN (SELECT {pk} FROM main.{table} WHERE {range} LIMIT {batch})",
            table = meta.table,
            pk = meta.pk_list(""),
        );
        let what = format!("deleting rows of table {}", t.name);
        let mut tx = conn.begin().await.map_err(|e| side.err(&what, e))?;
        bypass(side, &mut tx, true).await?;
        let deleted = exec(&mut tx, sql).await.map_err(|e| side.err(&what, e))?;
        bypass(side, &mut tx, false).await?;
        tx.commit().await.map_err(|e| side.err(&what, e))?;
        if deleted > 0 {
            return Ok(deleted);
        }
    }
    Ok(0)
}

impl SqliteEngine {
    /// Opens both files; the target's connection attaches the source.
    pub(super) async fn connect(source: &Shard, target: &Shard, options: &EngineOptions) -> Result<Self, EngineError> {
        let (src, src_file) = open(source, options).await?;
        let (mut tgt, tgt_file) = open(target, options).await?;
        let same = match (std::fs::canonicalize(&src_file), std::fs::canonicalize(&tgt_file)) {
            (Ok(a), Ok(b)) => a == b,
            _ => src_file == tgt_file,
        };
        if same {
            return Err(EngineError::Precheck(format!(
                "source shard {} and target shard {} are the same SQLite file",
                source.id, target.id
            )));
        }
        let path = src_file
            .to_str()
            .ok_or_else(|| EngineError::Precheck(format!("shard {}: the SQLite file name is not UTF-8", source.id)))?;
        sqlx::query("ATTACH DATABASE ?1 AS src")
            .bind(path)
            .execute(&mut tgt)
            .await
            .map_err(|e| db_error(&target.id, format_args!("attaching the source shard {}", source.id), e))?;
        Ok(SqliteEngine {
            source: Side { shard: source.id.clone(), conn: Mutex::new(src) },
            target: Side { shard: target.id.clone(), conn: Mutex::new(tgt) },
        })
    }

    pub(super) async fn precheck(&self, spec: &MoveSpec) -> Result<Precheck, EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let ranges = spec.ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let ends = Ends { source: &self.source.shard, target: &self.target.shard };
        let mut tgt = self.target.conn.lock().await;
        let mut src = self.source.conn.lock().await;
        let mut total = Precheck::default();
        for (n, t) in spec.tables.iter().enumerate() {
            let smeta = meta(&self.source.shard, &mut src, t).await?;
            let tmeta = meta(&self.target.shard, &mut tgt, t).await?;
            let (smeta, tmeta) = match (smeta, tmeta) {
                (Some(s), Some(t)) => (s, t),
                (s, _) => {
                    let (end, shard) =
                        if s.is_none() { ("source", &self.source.shard) } else { ("target", &self.target.shard) };
                    return Err(EngineError::Precheck(format!(
                        "table {} does not exist on {end} shard {shard}: create it with the same columns and primary \
                         key on both shards",
                        t.name
                    )));
                }
            };
            compare_tables(&ends, t, &smeta, &tmeta, |ty| ty.contains("INT"))?;
            if let Some(blob) = smeta.pk.iter().find(|c| c.ty.contains("BLOB")) {
                return Err(EngineError::Precheck(format!(
                    "table {}: primary key column {} is a BLOB, which the change log (JSON) cannot hold",
                    t.name, blob.name
                )));
            }
            let bare = smeta.table.trim_matches('"').to_owned();
            for (side, conn) in [(&self.source, &mut src), (&self.target, &mut tgt)] {
                let indexed: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pragma_index_list(?1, 'main') AS l \
                       WHERE l.partial = 0 AND (SELECT name FROM pragma_index_info(l.name, 'main') WHERE seqno = 0) = ?2)",
                )
                .bind(&bare)
                .bind(&t.keyspace_id_column)
                .fetch_one(&mut **conn)
                .await
                .map_err(|e| side.err(format_args!("reading the indexes of table {}", t.name), e))?;
                if !indexed {
                    let pk: Vec<&str> = smeta.pk.iter().map(|c| c.name.as_str()).collect();
                    let create = shardlib::sql::schema::keyspace_id_index(t, &pk).unwrap_or_default();
                    return Err(EngineError::Precheck(format!(
                        "table {} on shard {} has no index whose first column is {}: the copy reads it in that \
                         order; create one: {create}",
                        t.name, side.shard, t.keyspace_id_column
                    )));
                }
            }
            let trigger = format!("{}{}", capture_name(&spec.job, n), TRIGGER_SUFFIXES[0]);
            let resumed = exists(&self.source.shard, &mut src, "trigger", &trigger).await?;
            let range = in_intervals(&smeta.kid, &ivs);
            if !resumed {
                let sql = format!("SELECT count(*) FROM main.{} WHERE {range}", smeta.table);
                let rows: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(&mut *tgt)
                    .await
                    .map_err(|e| self.target.err(format_args!("counting rows of table {}", t.name), e))?;
                if rows > 0 {
                    return Err(EngineError::Precheck(format!(
                        "target shard {} already has {rows} rows of table {} in range {ranges}: they would be \
                         overwritten; delete them (or move from the shard that owns them) first",
                        self.target.shard, t.name
                    )));
                }
            }
            let sizes: Vec<String> =
                smeta.columns.iter().map(|c| format!("ifnull(length({}), 0)", q(&c.name))).collect();
            let sql = format!(
                "SELECT count(*), ifnull(sum({}), 0) FROM main.{} WHERE {range}",
                sizes.join(" + "),
                smeta.table
            );
            let (rows, bytes): (i64, i64) = sqlx::query_as(AssertSqlSafe(sql))
                .fetch_one(&mut *src)
                .await
                .map_err(|e| self.source.err(format_args!("counting rows of table {}", t.name), e))?;
            total.rows += rows as u64;
            total.bytes += bytes as u64;
        }
        Ok(total)
    }

    pub(super) async fn install_capture(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let mut tgt = self.target.conn.lock().await;
        let mut src = self.source.conn.lock().await;
        run_all(&self.target, &mut tgt, "creating control tables", control_tables(false)).await?;
        let mut statements = control_tables(true);
        for (n, t) in spec.tables.iter().enumerate() {
            let meta = meta_required(&self.source.shard, &mut src, t).await?;
            let base = capture_name(&spec.job, n);
            let old_in = in_intervals(&format!("OLD.{}", meta.kid), &ivs);
            let new_in = in_intervals(&format!("NEW.{}", meta.kid), &ivs);
            let changed: Vec<String> = meta.pk.iter().map(|c| format!("OLD.{0} IS NOT NEW.{0}", q(&c.name))).collect();
            let log = |row: &str, condition: &str| {
                format!(
                    "INSERT INTO shardkit_changes (job, tbl, pk) SELECT {}, {n}, json_array({}) WHERE {condition};",
                    sql_string(&spec.job),
                    meta.pk_list(&format!("{row}."))
                )
            };
            let [ins, upd, del] = TRIGGER_SUFFIXES.map(|suffix| format!("main.{}", q(&format!("{base}{suffix}"))));
            let table = &meta.table;
            statements.push(format!(
                "CREATE TRIGGER IF NOT EXISTS {ins} AFTER INSERT ON {table} BEGIN {} END",
                log("NEW", &new_in)
            ));
            statements.push(format!(
                "CREATE TRIGGER IF NOT EXISTS {upd} AFTER UPDATE ON {table} BEGIN {} {} END",
                log("OLD", &old_in),
                log("NEW", &format!("{new_in} AND (NOT {old_in} OR {})", changed.join(" OR ")))
            ));
            statements.push(format!(
                "CREATE TRIGGER IF NOT EXISTS {del} AFTER DELETE ON {table} BEGIN {} END",
                log("OLD", &old_in)
            ));
        }
        run_all(&self.source, &mut src, "installing the change capture", statements).await
    }

    pub(super) async fn copy_step(
        &self,
        spec: &MoveSpec,
        index: usize,
        batch_rows: u64,
    ) -> Result<CopyStep, EngineError> {
        check_spec(spec)?;
        let t = table(spec, index)?;
        let batch = batch_rows.max(1);
        let ivs = intervals(spec);
        let mut tgt = self.target.conn.lock().await;
        let meta = {
            let mut src = self.source.conn.lock().await;
            meta_required(&self.source.shard, &mut src, t).await?
        };
        let side = &self.target;
        // The resume point: the last row (in key order) the target has.
        let mut start = (0, None);
        for (i, iv) in ivs.iter().enumerate().rev() {
            let sql = format!(
                "SELECT {} FROM main.{} WHERE {} BETWEEN {} AND {} ORDER BY {} LIMIT 1",
                literal_list(&meta),
                meta.table,
                meta.kid,
                iv.lo,
                iv.hi,
                meta.order_list("", " DESC")
            );
            let cursor = fetch_cursor(side, &mut tgt, sql, t).await?;
            if cursor.is_some() {
                start = (i, cursor);
                break;
            }
        }
        let (first, mut resume) = start;
        let cols = meta.copy_list("");
        for (i, iv) in ivs.iter().enumerate().skip(first) {
            let condition = chunk_condition(&meta, *iv, resume.take().as_ref(), None);
            let select = format!(
                "SELECT {cols} FROM src.{table} WHERE {condition} ORDER BY {order} LIMIT {batch}",
                table = meta.table,
                order = meta.order_list("", ""),
            );
            // A row the target holds already under another keyspace id (it
            // changed on the source after it was copied) fails the plain
            // insert; the chunk is then upserted.
            let insert = format!("INSERT INTO main.{} ({cols}) {select}", meta.table);
            let upsert = format!(
                "INSERT INTO main.{} ({cols}) SELECT * FROM ({select}) WHERE 1 ON CONFLICT ({}) {}",
                meta.table,
                meta.pk_list(""),
                meta.update_set().map(|set| format!("DO UPDATE SET {set}")).unwrap_or_else(|| "DO NOTHING".into())
            );
            let what = format!("copying rows of table {}", t.name);
            let mut rows = 0;
            for (attempt, sql) in [insert, upsert].into_iter().enumerate() {
                let mut tx = tgt.begin().await.map_err(|e| side.err(&what, e))?;
                bypass(side, &mut tx, true).await?;
                match exec(&mut tx, sql).await {
                    Ok(n) => rows = n,
                    Err(sqlx::Error::Database(e)) if attempt == 0 && e.is_unique_violation() => continue,
                    Err(e) => return Err(side.err(&what, e)),
                }
                bypass(side, &mut tx, false).await?;
                tx.commit().await.map_err(|e| side.err(&what, e))?;
                break;
            }
            let last = i + 1 == ivs.len();
            if rows == batch {
                return Ok(CopyStep { rows, table_done: false });
            }
            if rows > 0 || last {
                return Ok(CopyStep { rows, table_done: last });
            }
        }
        Ok(CopyStep { rows: 0, table_done: true })
    }

    pub(super) async fn backlog(&self, spec: &MoveSpec) -> Result<u64, EngineError> {
        check_spec(spec)?;
        let mut src = self.source.conn.lock().await;
        if !exists(&self.source.shard, &mut src, "table", "shardkit_changes").await? {
            return Ok(0);
        }
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM main.shardkit_changes WHERE job = ?1")
            .bind(&spec.job)
            .fetch_one(&mut *src)
            .await
            .map_err(|e| self.source.err("counting the change log", e))?;
        Ok(n as u64)
    }

    pub(super) async fn replay_step(&self, spec: &MoveSpec, max_entries: u64) -> Result<ReplayStep, EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let mut tgt = self.target.conn.lock().await;
        let mut src = self.source.conn.lock().await;
        let mut metas = Vec::new();
        for t in &spec.tables {
            metas.push(meta_required(&self.source.shard, &mut src, t).await?);
        }
        let side = &self.target;
        let what = "replaying changes";
        // One read transaction over both files: the log and the rows it
        // names are read in the same snapshot of the source.
        let mut tx = tgt.begin().await.map_err(|e| side.err(what, e))?;
        let entries: Vec<(i64, i64, String)> =
            sqlx::query_as("SELECT id, tbl, pk FROM src.shardkit_changes WHERE job = ?1 ORDER BY id LIMIT ?2")
                .bind(&spec.job)
                .bind(max_entries.min(i64::MAX as u64) as i64)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| side.err("reading the change log", e))?;
        if entries.is_empty() {
            tx.commit().await.map_err(|e| side.err(what, e))?;
            return Ok(ReplayStep::default());
        }
        let mut keys: BTreeSet<ChangedKey> = BTreeSet::new();
        for (_, tbl, pk) in &entries {
            let table = usize::try_from(*tbl).unwrap_or(usize::MAX);
            table_index(spec, table, &self.source.shard)?;
            keys.insert(ChangedKey { table, pk: pk.clone() });
        }
        bypass(side, &mut tx, true).await?;
        for (n, (t, meta)) in spec.tables.iter().zip(&metas).enumerate() {
            let pks: Vec<&str> = keys.iter().filter(|k| k.table == n).map(|k| k.pk.as_str()).collect();
            if pks.is_empty() {
                continue;
            }
            let json = json_array(pks);
            let (table, cols, pk) = (&meta.table, meta.copy_list(""), meta.pk_list(""));
            let range = in_intervals(&meta.kid, &ivs);
            let keysel = key_select(meta);
            let delete = format!(
                "DELETE FROM main.{table} WHERE {range} AND ({pk}) IN ({keysel}) \
                 AND ({pk}) NOT IN (SELECT {pk} FROM src.{table} WHERE {range} AND ({pk}) IN ({keysel}))"
            );
            let action = match meta.update_set() {
                Some(set) => format!("DO UPDATE SET {set}"),
                None => "DO NOTHING".to_owned(),
            };
            let upsert = format!(
                "INSERT INTO main.{table} ({cols}) SELECT {cols} FROM src.{table} WHERE {range} AND ({pk}) IN ({keysel}) \
                 ON CONFLICT ({pk}) {action}"
            );
            let what = format!("replaying changes of table {}", t.name);
            for sql in [delete, upsert] {
                sqlx::query(AssertSqlSafe(sql)).bind(&json).execute(&mut *tx).await.map_err(|e| side.err(&what, e))?;
            }
        }
        bypass(side, &mut tx, false).await?;
        tx.commit().await.map_err(|e| side.err(what, e))?;
        // Exactly the entries read.
        let ids =
            json_array(entries.iter().map(|(id, _, _)| id.to_string()).collect::<Vec<_>>().iter().map(String::as_str));
        sqlx::query("DELETE FROM main.shardkit_changes WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(ids)
            .execute(&mut *src)
            .await
            .map_err(|e| self.source.err("deleting replayed change-log entries", e))?;
        Ok(ReplayStep { entries: entries.len() as u64, keys: keys.into_iter().collect() })
    }

    pub(super) async fn verify_all(&self, spec: &MoveSpec, chunk_rows: u64) -> Result<Verified, EngineError> {
        check_spec(spec)?;
        let chunk = chunk_rows.max(1);
        let ivs = intervals(spec);
        let mut tgt = self.target.conn.lock().await;
        let (metas, has_log) = {
            let mut src = self.source.conn.lock().await;
            let mut metas = Vec::new();
            for t in &spec.tables {
                metas.push(meta_required(&self.source.shard, &mut src, t).await?);
            }
            (metas, exists(&self.source.shard, &mut src, "table", "shardkit_changes").await?)
        };
        let side = &self.target;
        let what = "verifying";
        // One read transaction: one snapshot of the source for the pending
        // set, the chunk bounds and the comparison.
        let mut tx = tgt.begin().await.map_err(|e| side.err(what, e))?;
        let mut verified = Verified::default();
        for (n, (t, meta)) in spec.tables.iter().zip(&metas).enumerate() {
            let (table, cols) = (&meta.table, meta.copy_list(""));
            let np = not_pending(meta, spec, n, has_log);
            for iv in &ivs {
                let mut after: Option<Cursor> = None;
                loop {
                    let base = chunk_condition(meta, *iv, after.as_ref(), None);
                    let sql = format!(
                        "SELECT {} FROM src.{table} WHERE {base} ORDER BY {} LIMIT 1 OFFSET {}",
                        literal_list(meta),
                        meta.order_list("", ""),
                        chunk - 1
                    );
                    let upto = fetch_cursor(side, &mut tx, sql, t).await?;
                    let cond = format!("{} AND {np}", chunk_condition(meta, *iv, after.as_ref(), upto.as_ref()));
                    let sql = format!(
                        "SELECT (SELECT count(*) FROM src.{table} WHERE {cond}), \
                                (SELECT count(*) FROM main.{table} WHERE {cond}), \
                                (SELECT count(*) FROM (SELECT {cols} FROM src.{table} WHERE {cond} \
                                                       EXCEPT SELECT {cols} FROM main.{table} WHERE {cond})), \
                                (SELECT count(*) FROM (SELECT {cols} FROM main.{table} WHERE {cond} \
                                                       EXCEPT SELECT {cols} FROM src.{table} WHERE {cond}))"
                    );
                    let (source, target, missing, extra): (i64, i64, i64, i64) = sqlx::query_as(AssertSqlSafe(sql))
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| side.err(format_args!("comparing table {}", t.name), e))?;
                    verified.chunks += 1;
                    verified.rows += source as u64;
                    if missing > 0 || extra > 0 || source != target {
                        verified.mismatches.push(Mismatch {
                            table: t.name.clone(),
                            what: format!(
                                "chunk after {} up to {}: {source} rows on source, {target} on target; {missing} \
                                 source rows not on the target, {extra} target rows not on the source",
                                describe(&after),
                                describe(&upto)
                            ),
                        });
                    }
                    match upto {
                        Some(upto) => after = Some(upto),
                        None => break,
                    }
                }
            }
        }
        tx.commit().await.map_err(|e| side.err(what, e))?;
        Ok(verified)
    }

    pub(super) async fn verify_keys(&self, spec: &MoveSpec, keys: &[ChangedKey]) -> Result<Verified, EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let mut tgt = self.target.conn.lock().await;
        let mut verified = Verified::default();
        for (n, t) in spec.tables.iter().enumerate() {
            let pks: BTreeSet<&str> = keys.iter().filter(|k| k.table == n).map(|k| k.pk.as_str()).collect();
            if pks.is_empty() {
                continue;
            }
            let meta = {
                let mut src = self.source.conn.lock().await;
                meta_required(&self.source.shard, &mut src, t).await?
            };
            let json = json_array(pks.iter().copied());
            let (table, cols, pk) = (&meta.table, meta.copy_list(""), meta.pk_list(""));
            let cond = format!("{} AND ({pk}) IN ({})", in_intervals(&meta.kid, &ivs), key_select(&meta));
            let mut sides = Vec::new();
            for (a, b) in [("src", "main"), ("main", "src")] {
                let sql = format!(
                    "SELECT json_array({pk}) FROM (SELECT {cols} FROM {a}.{table} WHERE {cond} \
                     EXCEPT SELECT {cols} FROM {b}.{table} WHERE {cond})"
                );
                let differing: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
                    .bind(&json)
                    .fetch_all(&mut *tgt)
                    .await
                    .map_err(|e| self.target.err(format_args!("comparing rows of table {}", t.name), e))?;
                // Rows only one side has (or has differently), by key.
                sides.push(differing.into_iter().map(|k| (k, a.to_owned())).collect::<BTreeMap<_, _>>());
            }
            verified.chunks += 1;
            verified.rows += pks.len() as u64;
            compare_rows(&t.name, &sides[0], &sides[1], &mut verified.mismatches);
        }
        Ok(verified)
    }

    pub(super) async fn install_fence(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let mut src = self.source.conn.lock().await;
        let message = sql_string(&fence_message(spec));
        let mut statements = control_tables(false);
        for (n, t) in spec.tables.iter().enumerate() {
            let (table, kid) = names(t)?;
            let base = fence_name(&spec.job, n);
            let old_in = in_intervals(&format!("OLD.{kid}"), &ivs);
            let new_in = in_intervals(&format!("NEW.{kid}"), &ivs);
            let [ins, upd, del] = TRIGGER_SUFFIXES.map(|suffix| format!("main.{}", q(&format!("{base}{suffix}"))));
            let unless = "NOT EXISTS (SELECT 1 FROM shardkit_bypass)";
            let body = format!("BEGIN SELECT RAISE(ABORT, {message}); END");
            for (trigger, event, condition) in [
                (ins, "INSERT", new_in.clone()),
                (upd, "UPDATE", format!("({old_in} OR {new_in})")),
                (del, "DELETE", old_in.clone()),
            ] {
                statements.push(format!(
                    "CREATE TRIGGER IF NOT EXISTS {trigger} BEFORE {event} ON {table} WHEN {condition} AND {unless} {body}"
                ));
            }
            statements.push(format!(
                "DELETE FROM main.shardkit_fences WHERE job = {} AND tbl = {}",
                sql_string(&spec.job),
                sql_string(&t.name)
            ));
            for iv in &ivs {
                statements.push(format!(
                    "INSERT INTO main.shardkit_fences (job, tbl, trg, lo, hi) VALUES ({}, {}, {}, {}, {})",
                    sql_string(&spec.job),
                    sql_string(&t.name),
                    sql_string(&base),
                    iv.lo,
                    iv.hi
                ));
            }
        }
        run_all(&self.source, &mut src, "installing the fence", statements).await
    }

    pub(super) async fn drop_fence(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        check_spec(spec)?;
        let mut src = self.source.conn.lock().await;
        let mut statements = drop_triggers((0..spec.tables.len()).map(|n| fence_name(&spec.job, n)));
        if exists(&self.source.shard, &mut src, "table", "shardkit_fences").await? {
            statements.push(format!("DELETE FROM main.shardkit_fences WHERE job = {}", sql_string(&spec.job)));
        }
        run_all(&self.source, &mut src, "dropping the fence", statements).await
    }

    pub(super) async fn drop_target_fences(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let side = &self.target;
        let mut tgt = side.conn.lock().await;
        if !exists(&side.shard, &mut tgt, "table", "shardkit_fences").await? {
            return Ok(());
        }
        let names: Vec<&str> = spec.tables.iter().map(|t| t.name.as_str()).collect();
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT job, tbl, trg, lo, hi FROM main.shardkit_fences WHERE tbl IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::to_string(&names).unwrap_or_default())
        .fetch_all(&mut *tgt)
        .await
        .map_err(|e| side.err("reading shardkit_fences", e))?;
        let mut statements = Vec::new();
        for ((job, tbl, trg), fence) in group_fences(rows) {
            match fence_fate(&fence, &ivs) {
                FenceFate::Keep => {}
                FenceFate::Partial => tracing::warn!(
                    shard = %side.shard, job, table = tbl,
                    "fence {trg} only partly overlaps the moved ranges; left in place"
                ),
                FenceFate::Drop => {
                    statements.extend(drop_triggers([trg]));
                    statements.push(format!(
                        "DELETE FROM main.shardkit_fences WHERE job = {} AND tbl = {}",
                        sql_string(&job),
                        sql_string(&tbl)
                    ));
                }
            }
        }
        run_all(side, &mut tgt, "dropping fences of earlier moves", statements).await
    }

    pub(super) async fn drop_capture(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        check_spec(spec)?;
        let mut src = self.source.conn.lock().await;
        let mut statements = drop_triggers((0..spec.tables.len()).map(|n| capture_name(&spec.job, n)));
        if exists(&self.source.shard, &mut src, "table", "shardkit_changes").await? {
            statements.push(format!("DELETE FROM main.shardkit_changes WHERE job = {}", sql_string(&spec.job)));
        }
        run_all(&self.source, &mut src, "dropping the change capture", statements).await
    }

    pub(super) async fn cleanup_source_step(&self, spec: &MoveSpec, batch_rows: u64) -> Result<u64, EngineError> {
        delete_step(&self.source, spec, batch_rows.max(1)).await
    }

    pub(super) async fn clean_target_step(&self, spec: &MoveSpec, batch_rows: u64) -> Result<u64, EngineError> {
        delete_step(&self.target, spec, batch_rows.max(1)).await
    }

    pub(super) async fn close(self) {
        let _ = self.source.conn.into_inner().close().await;
        let _ = self.target.conn.into_inner().close().await;
    }
}

/// `DROP TRIGGER IF EXISTS` for the three triggers of each base name.
fn drop_triggers(bases: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut statements = Vec::new();
    for base in bases {
        for suffix in TRIGGER_SUFFIXES {
            statements.push(format!("DROP TRIGGER IF EXISTS main.{}", q(&format!("{base}{suffix}"))));
        }
    }
    statements
}

/// Rows and estimated bytes (sum of the values' lengths) of `tables` in
/// `range` on `shard`.
pub(super) async fn range_stats(
    shard: &Shard,
    tables: &[Table],
    range: KeyRange,
    options: &EngineOptions,
) -> Result<RangeStats, EngineError> {
    let (mut conn, _) = open(shard, options).await?;
    let (lo, hi) = shardlib::sql::schema::sql_bounds(range);
    let mut stats = RangeStats::default();
    for t in tables {
        let meta = meta_required(&shard.id, &mut conn, t).await?;
        let sizes: Vec<String> = meta.columns.iter().map(|c| format!("ifnull(length({}), 0)", q(&c.name))).collect();
        let sql = format!(
            "SELECT count(*), ifnull(sum({}), 0) FROM main.{} WHERE {} BETWEEN ?1 AND ?2",
            sizes.join(" + "),
            meta.table,
            meta.kid
        );
        let (rows, bytes): (i64, i64) = sqlx::query_as(AssertSqlSafe(sql))
            .bind(lo)
            .bind(hi)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| db_error(&shard.id, format_args!("measuring table {} in range {range}", t.name), e))?;
        stats.rows += rows as u64;
        stats.bytes += bytes as u64;
    }
    let _ = conn.close().await;
    Ok(stats)
}

/// The keyspace id of the median row of the first table in `range`.
pub(super) async fn median_keyspace_id(
    shard: &Shard,
    tables: &[Table],
    range: KeyRange,
    options: &EngineOptions,
) -> Result<Option<u64>, EngineError> {
    let Some(t) = tables.first() else { return Ok(None) };
    let (table, kid) = names(t)?;
    let (mut conn, _) = open(shard, options).await?;
    let (lo, hi) = shardlib::sql::schema::sql_bounds(range);
    let what = format!("finding the median of table {} in range {range}", t.name);
    let sql = format!(
        "SELECT {kid} FROM main.{table} WHERE {kid} BETWEEN ?1 AND ?2 ORDER BY {kid} \
         LIMIT 1 OFFSET (SELECT count(*) / 2 FROM main.{table} WHERE {kid} BETWEEN ?1 AND ?2)"
    );
    let median: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(lo)
        .bind(hi)
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| db_error(&shard.id, &what, e))?;
    let _ = conn.close().await;
    Ok(median.map(|v| KeyspaceId::from_sql(v).0))
}

/// See [`super::keyspace_id_quantiles`]: the rows at the quantiles' ranks,
/// in one scan (`row_number()` over the range).
pub(super) async fn keyspace_id_quantiles(
    shard: &Shard,
    tables: &[Table],
    range: KeyRange,
    count: usize,
    options: &EngineOptions,
) -> Result<Vec<u64>, EngineError> {
    let Some(t) = tables.first() else { return Ok(Vec::new()) };
    if count == 0 {
        return Ok(Vec::new());
    }
    let (table, kid) = names(t)?;
    let (mut conn, _) = open(shard, options).await?;
    let (lo, hi) = shardlib::sql::schema::sql_bounds(range);
    let what = format!("finding quantiles of table {} in range {range}", t.name);
    let rows: i64 =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM main.{table} WHERE {kid} BETWEEN ?1 AND ?2")))
            .bind(lo)
            .bind(hi)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| db_error(&shard.id, &what, e))?;
    if rows == 0 {
        let _ = conn.close().await;
        return Ok(Vec::new());
    }
    // 1-based ranks; integers computed here, so inlining them is safe.
    let ranks: Vec<String> =
        (1..=count as i64).map(|i| (rows * i / (count as i64 + 1) + 1).min(rows).to_string()).collect();
    let sql = format!(
        "SELECT {kid} FROM (SELECT {kid}, row_number() OVER (ORDER BY {kid}) AS rn FROM main.{table} \
         WHERE {kid} BETWEEN ?1 AND ?2) WHERE rn IN ({}) ORDER BY rn",
        ranks.join(", ")
    );
    let found: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(lo)
        .bind(hi)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| db_error(&shard.id, &what, e))?;
    let _ = conn.close().await;
    let mut points: Vec<u64> = found.into_iter().map(|v| KeyspaceId::from_sql(v).0).collect();
    points.dedup();
    Ok(points)
}
