//! The PostgreSQL backend.
//!
//! Rows travel as COPY text: the source's `COPY (SELECT …) TO STDOUT` is
//! streamed, without decoding, into `COPY … FROM STDIN` on the target (the
//! replay stages its rows the same way in a temporary table, then upserts).
//! That handles every column type at the speed of a `psql | psql` pipe. A
//! copy step reads a span of several chunks in key order in one query and
//! commits it chunk by chunk ([`EngineOptions::copy_span_rows`]): rows are
//! rarely stored in keyspace-id order, and small chunks would each read
//! pages from all over the table. COPY takes no parameters, so the values that bound a chunk
//! are fetched as text and inlined as quoted literals with a cast to the
//! column's type.
//!
//! DDL on the source (triggers) runs with `lock_timeout`: creating a
//! trigger waits for the transactions that already wrote to the table — that
//! wait is what makes their rows visible to the copy, or rejected by the
//! fence — but it also queues every later writer behind it, so it gives up
//! quickly and is retried a bounded number of times.
//!
//! The control tables live in the schema that is current for the mover's
//! connections (normally `public`); the trigger functions name them with
//! that schema, so they work whatever `search_path` a writer uses.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;

use futures_util::TryStreamExt;
use shardlib::sql::sqlx::{
    self, AssertSqlSafe, Connection as _, PgConnection, PgPool, Postgres, Row as _,
    pool::PoolConnection,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use shardlib::topology::{Shard, Table};
use shardlib::{KeyRange, KeyspaceId, ShardId};

use super::common::{
    Column, Cursor, Ends, FenceFate, Interval, Meta, capture_name, check_spec, chunk_condition, compare_rows,
    compare_tables, db_error, describe, fence_fate, fence_message, fence_name, group_fences, in_intervals, intervals,
    json_array, q, quoted, sql_string, subtract, table, table_index,
};
use super::{
    ChangedKey, CopyStep, EngineError, EngineOptions, Mismatch, MoveSpec, Precheck, RangeStats, ReplayStep, Verified,
};

/// Replays of at most this many keys per table go as one JSON value
/// instead of through COPY and a staging table (see `replay_as_json`).
const SMALL_REPLAY: usize = 2_000;

/// How many times DDL is attempted when it runs into `lock_timeout`.
const DDL_ATTEMPTS: u32 = 20;

/// Bytes collected from the source's COPY before they are sent on.
const PIPE_CHUNK: usize = 256 * 1024;

/// Buffers of [`PIPE_CHUNK`] bytes in flight between source and target.
const PIPE_DEPTH: usize = 4;

/// Connections per shard: the steps use at most two at a time.
const MAX_CONNECTIONS: u32 = 4;

/// SQLSTATEs after which DDL is retried: lock timeout, deadlock, and the
/// unique violations of two sessions creating the same table at once.
const RETRY_STATES: [&str; 4] = ["55P03", "40P01", "23505", "42P07"];

/// What the source's COPY hands to the target's side.
#[derive(Debug)]
enum Piece {
    /// COPY data: whole rows.
    Rows(Vec<u8>),
    /// A chunk ends here: commit it.
    Commit,
}

/// The outcome of [`PgEngine::copy_span`].
#[derive(Debug)]
enum Span {
    /// The rows copied.
    Copied(u64),
    /// The rows committed before a transaction met a row the target holds
    /// under another keyspace id.
    Conflict(u64),
}

/// Reads `copy_out` (a `COPY … TO STDOUT`) on the source and sends the
/// data on in buffers of about [`PIPE_CHUNK`] bytes, with a
/// [`Piece::Commit`] after every `split` rows (the server sends one row per
/// message). When the receiver is gone (the target failed and reports its
/// error) it still reads to the end, so that the connection stays usable.
async fn read_copy(
    src: &mut PgConnection,
    copy_out: &str,
    out: tokio::sync::mpsc::Sender<Piece>,
    split: Option<u64>,
) -> Result<(), sqlx::Error> {
    let mut stream = src.copy_out_raw(copy_out).await?;
    let mut buf = Vec::with_capacity(PIPE_CHUNK + 4096);
    let (mut rows, mut open) = (0u64, true);
    while let Some(row) = stream.try_next().await? {
        if !open {
            continue;
        }
        buf.extend_from_slice(&row);
        rows += 1;
        let cut = split.is_some_and(|n| rows % n == 0);
        if buf.len() >= PIPE_CHUNK || cut {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(PIPE_CHUNK + 4096));
            open = out.send(Piece::Rows(full)).await.is_ok() && (!cut || out.send(Piece::Commit).await.is_ok());
        }
    }
    if open && !buf.is_empty() {
        let _ = out.send(Piece::Rows(buf)).await;
    }
    Ok(())
}

/// Dollar-quote tag of the trigger functions' bodies.
const BODY_TAG: &str = "$shardkit$";

/// Why streaming rows from the source to the target failed.
#[derive(Debug)]
enum PipeError {
    /// The source's COPY failed.
    Source(sqlx::Error),
    /// The target's COPY failed.
    Target(sqlx::Error),
}

impl PipeError {
    fn into_error(self, engine: &PgEngine, what: &str) -> EngineError {
        match self {
            PipeError::Source(e) => engine.source.err(what, e),
            PipeError::Target(e) => engine.target.err(what, e),
        }
    }
}

/// One shard of a PostgreSQL move.
#[derive(Debug)]
struct Side {
    shard: ShardId,
    pool: PgPool,
    /// The quoted schema of the control tables and trigger functions.
    schema: String,
}

impl Side {
    async fn open(shard: &Shard, options: &EngineOptions) -> Result<Side, EngineError> {
        let conn_opts = connect_options(shard)?;
        let what = format!("connecting to {}", shard.primary.redacted());
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(options.connect_timeout)
            .connect_with(conn_opts);
        let pool = tokio::time::timeout(options.connect_timeout, pool)
            .await
            .map_err(|_| db_error(&shard.id, &what, format!("no connection within {:?}", options.connect_timeout)))?
            .map_err(|e| db_error(&shard.id, &what, e))?;
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await
            .map_err(|e| db_error(&shard.id, &what, e))?;
        let schema = schema.ok_or_else(|| {
            db_error(&shard.id, &what, "no current schema (search_path names no existing schema): set one for the user")
        })?;
        Ok(Side { shard: shard.id.clone(), pool, schema: q(&schema) })
    }

    fn err(&self, what: impl Display, error: impl Display) -> EngineError {
        db_error(&self.shard, what, error)
    }

    async fn conn(&self) -> Result<PoolConnection<Postgres>, EngineError> {
        self.pool.acquire().await.map_err(|e| self.err("getting a connection", e))
    }

    /// A control object's qualified name.
    fn control(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    /// Whether the control table `name` exists.
    async fn has_control(&self, conn: &mut PgConnection, name: &str) -> Result<bool, EngineError> {
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(self.control(name))
            .fetch_one(conn)
            .await
            .map_err(|e| self.err(format_args!("looking up {name}"), e))
    }

    /// Inserts (`on`) or deletes the bypass row inside the caller's
    /// transaction, so that its writes pass fences. A database without the
    /// bypass table has no fences either.
    async fn bypass(&self, conn: &mut PgConnection, on: bool) -> Result<(), EngineError> {
        self.bypass_raw(conn, on).await.map_err(|e| self.err("writing shardkit_bypass", e))
    }

    /// [`Side::bypass`] with sqlx's error.
    async fn bypass_raw(&self, conn: &mut PgConnection, on: bool) -> Result<(), sqlx::Error> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(self.control("shardkit_bypass"))
            .fetch_one(&mut *conn)
            .await?;
        if exists {
            let sql = if on {
                format!("INSERT INTO {} VALUES (1)", self.control("shardkit_bypass"))
            } else {
                format!("DELETE FROM {}", self.control("shardkit_bypass"))
            };
            sqlx::query(AssertSqlSafe(sql)).execute(conn).await?;
        }
        Ok(())
    }

    /// The table's columns and primary key, `None` if it does not exist.
    async fn meta(&self, conn: &mut PgConnection, table: &Table) -> Result<Option<Meta>, EngineError> {
        let (name, kid) = quoted(table)?;
        let rows = sqlx::query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '', \
                    array_position(i.indkey::int2[], a.attnum) \
             FROM pg_attribute a \
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(&name)
        .fetch_all(conn)
        .await
        .map_err(|e| self.err(format_args!("reading the columns of table {}", table.name), e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::new();
        let mut pk: Vec<(i32, Column)> = Vec::new();
        for row in rows {
            let column = Column { name: row.get(0), ty: row.get(1), generated: row.get(2) };
            if let Some(position) = row.get::<Option<i32>, _>(3) {
                pk.push((position, column.clone()));
            }
            columns.push(column);
        }
        pk.sort_by_key(|(position, _)| *position);
        Ok(Some(Meta { table: name, kid, columns, pk: pk.into_iter().map(|(_, c)| c).collect() }))
    }

    /// The table's metadata; a missing table is an error of this step.
    async fn meta_required(&self, conn: &mut PgConnection, table: &Table) -> Result<Meta, EngineError> {
        self.meta(conn, table).await?.ok_or_else(|| self.err(format_args!("table {}", table.name), "does not exist"))
    }

    /// Runs DDL statements in one transaction with `lock_timeout`,
    /// retrying when a lock is not granted in time.
    async fn ddl(
        &self,
        what: &str,
        statements: &[String],
        lock_timeout: std::time::Duration,
    ) -> Result<(), EngineError> {
        let mut attempt = 1;
        loop {
            let result = async {
                let mut conn = self.pool.acquire().await?;
                let mut tx = conn.begin().await?;
                let timeout = format!("SET LOCAL lock_timeout = {}", lock_timeout.as_millis().max(1));
                sqlx::raw_sql(AssertSqlSafe(timeout)).execute(&mut *tx).await?;
                for statement in statements {
                    sqlx::raw_sql(AssertSqlSafe(statement.clone())).execute(&mut *tx).await?;
                }
                tx.commit().await
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(sqlx::Error::Database(e))
                    if attempt < DDL_ATTEMPTS && e.code().is_some_and(|c| RETRY_STATES.contains(&c.as_ref())) =>
                {
                    tracing::info!(shard = %self.shard, attempt, "{what}: {}; retrying", e.message());
                    attempt += 1;
                }
                Err(e) => return Err(self.err(what, e)),
            }
        }
    }

    /// Statements creating the control tables that exist on both sides.
    fn control_tables(&self, with_changes: bool) -> Vec<String> {
        let mut statements = Vec::new();
        if with_changes {
            statements.push(format!(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, job text NOT NULL, tbl integer NOT NULL, \
                 pk jsonb NOT NULL)",
                self.control("shardkit_changes")
            ));
            statements.push(format!(
                "CREATE INDEX IF NOT EXISTS shardkit_changes_job_id ON {} (job, id)",
                self.control("shardkit_changes")
            ));
        }
        statements.push(format!("CREATE TABLE IF NOT EXISTS {} (x integer)", self.control("shardkit_bypass")));
        statements.push(format!(
            "CREATE TABLE IF NOT EXISTS {} (job text NOT NULL, tbl text NOT NULL, trg text NOT NULL, lo bigint NOT NULL, \
             hi bigint NOT NULL)",
            self.control("shardkit_fences")
        ));
        statements
    }

    /// Deletes up to `batch` rows of the moving ranges, past fences.
    async fn delete_step(&self, spec: &MoveSpec, batch: u64) -> Result<u64, EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let mut conn = self.conn().await?;
        for t in spec.tables.iter().rev() {
            let meta = self.meta_required(&mut conn, t).await?;
            // By ctid: `pk IN (SELECT … LIMIT n)` makes PostgreSQL hash the
            // batch and scan the whole table for it, every batch (measured:
            // 130–190 ms per 10k rows against 5 ms this way). The ctids come
            // from an index range scan; rows updated meanwhile (new ctid)
            // are simply left for the next batch.
            let sql = format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {range} LIMIT {batch})) \
                 AND {range}",
                table = meta.table,
                range = in_intervals(&meta.kid, &ivs),
            );
            let mut tx = conn.begin().await.map_err(|e| self.err("beginning a transaction", e))?;
            self.bypass(&mut tx, true).await?;
            let deleted = sqlx::query(AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(format_args!("deleting rows of table {}", t.name), e))?
                .rows_affected();
            self.bypass(&mut tx, false).await?;
            tx.commit().await.map_err(|e| self.err(format_args!("deleting rows of table {}", t.name), e))?;
            if deleted > 0 {
                return Ok(deleted);
            }
        }
        Ok(0)
    }
}

/// The shard's DSN as sqlx options (URL, with `?host=/dir` for sockets),
/// with enough `work_mem` to sort a copy span in memory.
fn connect_options(shard: &Shard) -> Result<PgConnectOptions, EngineError> {
    let options = shard
        .primary
        .expose()
        .parse::<PgConnectOptions>()
        .map_err(|e| db_error(&shard.id, format_args!("parsing the DSN {}", shard.primary.redacted()), e))?;
    Ok(options.application_name("shardkit-mover").options([("work_mem", "64MB")]))
}

/// A PostgreSQL source and target, connected.
#[derive(Debug)]
pub struct PgEngine {
    source: Side,
    target: Side,
    options: EngineOptions,
}

/// The quoted literal of a value fetched as text, cast to its column type.
fn literal(value: &str, ty: &str) -> String {
    format!("{}::{ty}", sql_string(value))
}

/// `SELECT (e->>0)::t0, (e->>1)::t1 FROM jsonb_array_elements(<json>) AS e`:
/// the keys of a JSON array of primary keys.
fn key_select(meta: &Meta, json: &str) -> String {
    let parts: Vec<String> = meta.pk.iter().enumerate().map(|(i, c)| format!("(e->>{i})::{}", c.ty)).collect();
    format!("SELECT {} FROM jsonb_array_elements({json}) AS e", parts.join(", "))
}

impl PgEngine {
    /// Connects both primaries.
    pub(super) async fn connect(source: &Shard, target: &Shard, options: &EngineOptions) -> Result<Self, EngineError> {
        let (source, target) = tokio::try_join!(Side::open(source, options), Side::open(target, options))?;
        Ok(PgEngine { source, target, options: options.clone() })
    }

    fn ends(&self) -> Ends<'_> {
        Ends { source: &self.source.shard, target: &self.target.shard }
    }

    pub(super) async fn precheck(&self, spec: &MoveSpec) -> Result<Precheck, EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let ranges = spec.ranges.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let (mut src, mut tgt) = tokio::try_join!(self.source.conn(), self.target.conn())?;
        let mut total = Precheck::default();
        for (n, t) in spec.tables.iter().enumerate() {
            let mut metas = Vec::new();
            for (end, side, conn) in [("source", &self.source, &mut src), ("target", &self.target, &mut tgt)] {
                let Some(meta) = side.meta(conn, t).await? else {
                    return Err(EngineError::Precheck(format!(
                        "table {} does not exist on {end} shard {}: create it with the same columns and primary key \
                         on both shards",
                        t.name, side.shard
                    )));
                };
                metas.push(meta);
            }
            let (smeta, tmeta) = (&metas[0], &metas[1]);
            compare_tables(&self.ends(), t, smeta, tmeta, |ty| ty == "bigint")?;
            for (side, conn) in [(&self.source, &mut src), (&self.target, &mut tgt)] {
                let indexed: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_index i \
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                       WHERE i.indrelid = to_regclass($1) AND a.attname = $2 AND i.indisvalid AND i.indpred IS NULL)",
                )
                .bind(&smeta.table)
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
            let resumed: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2)",
            )
            .bind(&smeta.table)
            .bind(capture_name(&spec.job, n))
            .fetch_one(&mut *src)
            .await
            .map_err(|e| self.source.err(format_args!("reading the triggers of table {}", t.name), e))?;
            let range = in_intervals(&smeta.kid, &ivs);
            if !resumed {
                let sql = format!("SELECT count(*) FROM {} WHERE {range}", smeta.table);
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
            let sql = format!(
                "SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0)::int8 FROM {} AS t WHERE {range}",
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
        self.target
            .ddl("creating control tables", &self.target.control_tables(false), self.options.lock_timeout)
            .await?;
        let ivs = intervals(spec);
        let s = &self.source;
        let mut statements = s.control_tables(true);
        for (n, t) in spec.tables.iter().enumerate() {
            let (name, kid) = quoted(t)?;
            let meta = s.meta_required(&mut *s.conn().await?, t).await?;
            let function = s.control(&q(&capture_name(&spec.job, n)));
            let trigger = q(&capture_name(&spec.job, n));
            let old_in = in_intervals(&format!("OLD.{kid}"), &ivs);
            let new_in = in_intervals(&format!("NEW.{kid}"), &ivs);
            let changed: Vec<String> =
                meta.pk.iter().map(|c| format!("OLD.{0} IS DISTINCT FROM NEW.{0}", q(&c.name))).collect();
            let log = |row: &str| {
                format!(
                    "INSERT INTO {} (job, tbl, pk) VALUES ({}, {n}, jsonb_build_array({}));",
                    s.control("shardkit_changes"),
                    sql_string(&spec.job),
                    meta.pk_list(&format!("{row}."))
                )
            };
            let body = format!(
                "BEGIN\n\
                   IF TG_OP <> 'INSERT' AND {old_in} THEN {old} END IF;\n\
                   IF TG_OP <> 'DELETE' AND {new_in} AND (TG_OP = 'INSERT' OR NOT {old_in} OR {changed}) THEN {new} END IF;\n\
                   RETURN NULL;\n\
                 END",
                old = log("OLD"),
                new = log("NEW"),
                changed = changed.join(" OR "),
            );
            statements.push(function_sql(&function, &body)?);
            statements.push(format!("DROP TRIGGER IF EXISTS {trigger} ON {name}"));
            statements.push(format!(
                "CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {name} FOR EACH ROW EXECUTE FUNCTION {function}()"
            ));
        }
        s.ddl("installing the change capture", &statements, self.options.lock_timeout).await
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
        let span = batch.saturating_mul((self.options.copy_span_rows / batch).max(1));
        let ivs = intervals(spec);
        let (mut src, mut tgt) = tokio::try_join!(self.source.conn(), self.target.conn())?;
        let meta = self.source.meta_required(&mut src, t).await?;
        let (first, mut resume) = self.resume_point(&mut tgt, &meta, &ivs, t).await?;
        for (i, iv) in ivs.iter().enumerate().skip(first) {
            let after = resume.take();
            let base = chunk_condition(&meta, *iv, after.as_ref(), None);
            let upto = self.bound(&mut src, &meta, &base, span, t).await?;
            let condition = chunk_condition(&meta, *iv, after.as_ref(), upto.as_ref());
            let rows = match self.copy_span(&mut src, &mut tgt, &meta, &condition, batch, t).await? {
                Span::Copied(rows) => rows,
                Span::Conflict(rows) => {
                    let upserted = self.upsert_chunk(&mut src, &mut tgt, &meta, &ivs, batch, t).await?;
                    return Ok(CopyStep { rows: rows + upserted, table_done: false });
                }
            };
            let last = i + 1 == ivs.len();
            if upto.is_some() {
                return Ok(CopyStep { rows, table_done: false });
            }
            if rows > 0 || last {
                return Ok(CopyStep { rows, table_done: last });
            }
        }
        Ok(CopyStep { rows: 0, table_done: true })
    }

    /// Where the copy resumes: the interval and the last row (in key order)
    /// the target holds in the moving ranges (none: from the start).
    async fn resume_point(
        &self,
        tgt: &mut PgConnection,
        meta: &Meta,
        ivs: &[Interval],
        t: &Table,
    ) -> Result<(usize, Option<Cursor>), EngineError> {
        for (i, iv) in ivs.iter().enumerate().rev() {
            let sql = format!(
                "SELECT {} FROM {} WHERE {} BETWEEN {} AND {} ORDER BY {} LIMIT 1",
                self.text_list(meta),
                meta.table,
                meta.kid,
                iv.lo,
                iv.hi,
                meta.order_list("", " DESC")
            );
            if let Some(cursor) = self.fetch_cursor(&self.target, tgt, meta, &sql, t).await? {
                return Ok((i, Some(cursor)));
            }
        }
        Ok((0, None))
    }

    /// `kid::text, pk1::text, …` for fetching a cursor.
    fn text_list(&self, meta: &Meta) -> String {
        // Aliased: an output column named like the table's would take its
        // place in ORDER BY, which would then sort text.
        let texts = meta.order().into_iter().enumerate().map(|(i, c)| format!("{}::text AS shardkit_{i}", q(&c.name)));
        texts.collect::<Vec<_>>().join(", ")
    }

    /// Runs a query returning one row of text values of the order columns.
    async fn fetch_cursor(
        &self,
        side: &Side,
        conn: &mut PgConnection,
        meta: &Meta,
        sql: &str,
        t: &Table,
    ) -> Result<Option<Cursor>, EngineError> {
        let row = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .fetch_optional(conn)
            .await
            .map_err(|e| side.err(format_args!("reading key positions of table {}", t.name), e))?;
        let Some(row) = row else { return Ok(None) };
        let texts: Vec<String> = (0..row.len()).map(|i| row.get(i)).collect();
        let literals = meta.order().iter().zip(&texts).map(|(c, text)| literal(text, &c.ty)).collect();
        Cursor::new(&texts[0], literals, format_args!("table {} on shard {}", t.name, side.shard)).map(Some)
    }

    /// The last row of the chunk of `batch` rows that starts at `condition`,
    /// `None` when fewer rows are left (an index-only keyset scan).
    async fn bound(
        &self,
        conn: &mut PgConnection,
        meta: &Meta,
        condition: &str,
        batch: u64,
        t: &Table,
    ) -> Result<Option<Cursor>, EngineError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY {} OFFSET {} LIMIT 1",
            self.text_list(meta),
            meta.table,
            meta.order_list("", ""),
            batch - 1
        );
        self.fetch_cursor(&self.source, conn, meta, &sql, t).await
    }

    /// Copies the rows matching `condition`, read in key order in one
    /// source query, into the target in transactions of `batch` rows: each
    /// commit leaves the target with a prefix of the rows in key order, so a
    /// crash anywhere leaves a valid resume point. Reading a span of several
    /// chunks at once matters when rows are not stored in key order: a chunk
    /// of a few thousand rows then touches most of the table's pages.
    ///
    /// A row the target holds already under another keyspace id (its
    /// keyspace id changed on the source after it was copied) fails a
    /// transaction with a unique violation: [`Span::Conflict`] tells the
    /// caller to upsert the next chunk instead.
    async fn copy_span(
        &self,
        src: &mut PoolConnection<Postgres>,
        tgt: &mut PoolConnection<Postgres>,
        meta: &Meta,
        condition: &str,
        batch: u64,
        t: &Table,
    ) -> Result<Span, EngineError> {
        let what = format!("copying rows of table {}", t.name);
        let cols = meta.copy_list("");
        let copy_out = format!(
            "COPY (SELECT {cols} FROM {} WHERE {condition} ORDER BY {}) TO STDOUT",
            meta.table,
            meta.order_list("", "")
        );
        let copy_in = format!("COPY {} ({cols}) FROM STDIN", meta.table);
        let (sender, receiver) = tokio::sync::mpsc::channel(PIPE_DEPTH);
        let mut rows = 0;
        let (read, write) = tokio::join!(
            read_copy(src, &copy_out, sender, Some(batch)),
            self.write_chunks(tgt, &copy_in, receiver, &mut rows)
        );
        match (read, write) {
            (Ok(()), Ok(())) => Ok(Span::Copied(rows)),
            (Ok(()), Err(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                tracing::info!(shard = %self.target.shard, table = t.name, "{what}: {}; upserting a chunk", e.message());
                Ok(Span::Conflict(rows))
            }
            (read, write) => {
                // A COPY cut short may leave a connection mid-protocol.
                src.close_on_drop();
                tgt.close_on_drop();
                Err(match (read, write) {
                    (Err(e), _) => self.source.err(&what, e),
                    (_, Err(e)) => self.target.err(&what, e),
                    _ => unreachable!("handled above"),
                })
            }
        }
    }

    /// Writes [`Piece`]s into `copy_in` on the target, in one transaction
    /// (past fences) per [`Piece::Commit`]; counts the rows committed.
    async fn write_chunks(
        &self,
        conn: &mut PgConnection,
        copy_in: &str,
        mut input: tokio::sync::mpsc::Receiver<Piece>,
        rows: &mut u64,
    ) -> Result<(), sqlx::Error> {
        let mut next = input.recv().await;
        while next.is_some() {
            let mut tx = conn.begin().await?;
            self.target.bypass_raw(&mut tx, true).await?;
            let mut copy = tx.copy_in_raw(copy_in).await?;
            loop {
                match next.take() {
                    Some(Piece::Rows(buf)) => {
                        copy.send(buf).await?;
                        next = input.recv().await;
                    }
                    Some(Piece::Commit) => {
                        next = input.recv().await;
                        break;
                    }
                    None => break,
                }
            }
            let copied = copy.finish().await?;
            self.target.bypass_raw(&mut tx, false).await?;
            tx.commit().await?;
            *rows += copied;
        }
        Ok(())
    }

    /// Copies the next `batch` rows after the target's last one by staging
    /// and upserting them, in one transaction.
    async fn upsert_chunk(
        &self,
        src: &mut PoolConnection<Postgres>,
        tgt: &mut PoolConnection<Postgres>,
        meta: &Meta,
        ivs: &[Interval],
        batch: u64,
        t: &Table,
    ) -> Result<u64, EngineError> {
        let what = format!("copying rows of table {}", t.name);
        let (i, after) = self.resume_point(tgt, meta, ivs, t).await?;
        let base = chunk_condition(meta, ivs[i], after.as_ref(), None);
        let upto = self.bound(src, meta, &base, batch, t).await?;
        let condition = chunk_condition(meta, ivs[i], after.as_ref(), upto.as_ref());
        let mut tx = tgt.begin().await.map_err(|e| self.target.err(&what, e))?;
        self.target.bypass(&mut tx, true).await?;
        let stage = self.stage(src, &mut tx, meta, 0, &condition, &what).await?;
        let rows = self.upsert_from(&mut tx, meta, &stage, &what).await?;
        self.target.bypass(&mut tx, false).await?;
        tx.commit().await.map_err(|e| self.target.err(&what, e))?;
        Ok(rows)
    }

    /// Copies the source rows matching `condition` into a new temporary
    /// table `shardkit_stage_<n>` (dropped at commit) in the target
    /// transaction `tx`; returns its name.
    async fn stage(
        &self,
        src: &mut PgConnection,
        tx: &mut PgConnection,
        meta: &Meta,
        n: usize,
        condition: &str,
        what: &str,
    ) -> Result<String, EngineError> {
        let cols = meta.copy_list("");
        let create = format!(
            "CREATE TEMP TABLE shardkit_stage_{n} ON COMMIT DROP AS SELECT {cols} FROM {} WITH NO DATA",
            meta.table
        );
        sqlx::raw_sql(AssertSqlSafe(create)).execute(&mut *tx).await.map_err(|e| self.target.err(what, e))?;
        let stage = format!("pg_temp.shardkit_stage_{n}");
        let copy_out = format!("COPY (SELECT {cols} FROM {} WHERE {condition}) TO STDOUT", meta.table);
        let copy_in = format!("COPY {stage} ({cols}) FROM STDIN");
        self.pipe(src, &copy_out, tx, &copy_in).await.map_err(|e| e.into_error(self, what))?;
        Ok(stage)
    }

    /// Upserts the staged rows into the table and drops the stage.
    async fn upsert_from(
        &self,
        tx: &mut PgConnection,
        meta: &Meta,
        stage: &str,
        what: &str,
    ) -> Result<u64, EngineError> {
        let cols = meta.copy_list("");
        let action = match meta.update_set() {
            Some(set) => format!("DO UPDATE SET {set}"),
            None => "DO NOTHING".to_owned(),
        };
        let upsert = format!(
            "INSERT INTO {} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {stage} ON CONFLICT ({}) {action}",
            meta.table,
            meta.pk_list("")
        );
        let rows = sqlx::raw_sql(AssertSqlSafe(upsert))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.target.err(what, e))?
            .rows_affected();
        sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {stage}")))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.target.err(what, e))?;
        Ok(rows)
    }

    /// Streams `copy_out` on the source into `copy_in` on the target, both
    /// at once, without decoding, in the caller's target transaction (which
    /// must be rolled back on an error).
    async fn pipe(
        &self,
        src: &mut PgConnection,
        copy_out: &str,
        tgt: &mut PgConnection,
        copy_in: &str,
    ) -> Result<u64, PipeError> {
        let (sender, mut receiver) = tokio::sync::mpsc::channel(PIPE_DEPTH);
        let write = async move {
            let mut copy = tgt.copy_in_raw(copy_in).await?;
            while let Some(piece) = receiver.recv().await {
                if let Piece::Rows(buf) = piece {
                    copy.send(buf).await?;
                }
            }
            copy.finish().await
        };
        let (read, write) = tokio::join!(read_copy(src, copy_out, sender, None), write);
        read.map_err(PipeError::Source)?;
        write.map_err(PipeError::Target)
    }

    pub(super) async fn backlog(&self, spec: &MoveSpec) -> Result<u64, EngineError> {
        check_spec(spec)?;
        let s = &self.source;
        let mut conn = s.conn().await?;
        if !s.has_control(&mut conn, "shardkit_changes").await? {
            return Ok(0);
        }
        let sql = format!("SELECT count(*) FROM {} WHERE job = $1", s.control("shardkit_changes"));
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(&spec.job)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| s.err("counting the change log", e))?;
        Ok(n as u64)
    }

    pub(super) async fn replay_step(&self, spec: &MoveSpec, max_entries: u64) -> Result<ReplayStep, EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let (mut src, mut tgt) = tokio::try_join!(self.source.conn(), self.target.conn())?;
        let s = &self.source;
        // The log is read before the rows: a change committed later has an
        // entry this step does not delete.
        let sql = format!(
            "SELECT id, tbl, pk::text FROM {} WHERE job = $1 ORDER BY id LIMIT $2",
            s.control("shardkit_changes")
        );
        let entries: Vec<(i64, i32, String)> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(&spec.job)
            .bind(max_entries.min(i64::MAX as u64) as i64)
            .fetch_all(&mut *src)
            .await
            .map_err(|e| s.err("reading the change log", e))?;
        if entries.is_empty() {
            return Ok(ReplayStep::default());
        }
        let mut keys: BTreeSet<ChangedKey> = BTreeSet::new();
        for (_, tbl, pk) in &entries {
            let table = usize::try_from(*tbl).unwrap_or(usize::MAX);
            table_index(spec, table, &s.shard)?;
            keys.insert(ChangedKey { table, pk: pk.clone() });
        }
        let what = "replaying changes";
        let mut tx = tgt.begin().await.map_err(|e| self.target.err(what, e))?;
        self.target.bypass(&mut tx, true).await?;
        for (n, t) in spec.tables.iter().enumerate() {
            let pks: Vec<&str> = keys.iter().filter(|k| k.table == n).map(|k| k.pk.as_str()).collect();
            if pks.is_empty() {
                continue;
            }
            let meta = s.meta_required(&mut src, t).await?;
            let json = json_array(pks);
            let what = format!("replaying changes of table {}", t.name);
            let keys_literal = key_select(&meta, &format!("{}::jsonb", sql_string(&json)));
            let condition = format!("{} AND ({}) IN ({keys_literal})", in_intervals(&meta.kid, &ivs), meta.pk_list(""));
            if keys.iter().filter(|k| k.table == n).count() <= SMALL_REPLAY {
                self.replay_as_json(&mut src, &mut tx, &meta, &ivs, &condition, &json, &what).await?;
                continue;
            }
            let stage = match self.stage(&mut src, &mut tx, &meta, n, &condition, &what).await {
                Ok(stage) => stage,
                Err(e) => {
                    drop(tx);
                    src.close_on_drop();
                    tgt.close_on_drop();
                    return Err(e);
                }
            };
            // Keys the source no longer has in the ranges go; the rest is upserted.
            let matches: Vec<String> = meta.pk.iter().map(|c| format!("s.{0} = d.{0}", q(&c.name))).collect();
            let delete = format!(
                "DELETE FROM {} AS d WHERE {} AND ({}) IN ({}) AND NOT EXISTS (SELECT 1 FROM {stage} AS s WHERE {})",
                meta.table,
                in_intervals(&format!("d.{}", meta.kid), &ivs),
                meta.pk_list("d."),
                key_select(&meta, "$1::jsonb"),
                matches.join(" AND ")
            );
            sqlx::query(AssertSqlSafe(delete))
                .bind(&json)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.target.err(&what, e))?;
            self.upsert_from(&mut tx, &meta, &stage, &what).await?;
        }
        self.target.bypass(&mut tx, false).await?;
        tx.commit().await.map_err(|e| self.target.err(what, e))?;
        // Exactly the entries read: entries of transactions that were still
        // in flight become visible later and are replayed then.
        let ids: Vec<i64> = entries.iter().map(|(id, _, _)| *id).collect();
        let sql = format!("DELETE FROM {} WHERE id = ANY($1)", s.control("shardkit_changes"));
        sqlx::query(AssertSqlSafe(sql))
            .bind(&ids)
            .execute(&mut *src)
            .await
            .map_err(|e| s.err("deleting replayed change-log entries", e))?;
        Ok(ReplayStep { entries: entries.len() as u64, keys: keys.into_iter().collect() })
    }

    /// A small replay without COPY: the source's rows travel as one JSON
    /// value (`json_agg`), and the target reads them back with
    /// `json_populate_recordset` into the table's row type. Small replays
    /// are what the fence waits for, and a `COPY … FROM STDIN` ends with a
    /// lone `CopyDone` message that TCP's Nagle algorithm holds until the
    /// server's delayed ACK (~40 ms; sqlx does not set `TCP_NODELAY`), and
    /// needs a temporary table besides.
    #[allow(clippy::too_many_arguments)]
    async fn replay_as_json(
        &self,
        src: &mut PgConnection,
        tx: &mut PgConnection,
        meta: &Meta,
        ivs: &[Interval],
        condition: &str,
        keys_json: &str,
        what: &str,
    ) -> Result<(), EngineError> {
        let cols = meta.copy_list("");
        let read = format!(
            "SELECT COALESCE(json_agg(r), '[]'::json)::text FROM (SELECT {cols} FROM {} WHERE {condition}) AS r",
            meta.table
        );
        let rows: String =
            sqlx::query_scalar(AssertSqlSafe(read)).fetch_one(&mut *src).await.map_err(|e| self.source.err(what, e))?;
        let incoming = format!("json_populate_recordset(NULL::{}, $2::json)", meta.table);
        let matches: Vec<String> = meta.pk.iter().map(|c| format!("s.{0} = d.{0}", q(&c.name))).collect();
        let delete = format!(
            "DELETE FROM {} AS d WHERE {} AND ({}) IN ({}) AND NOT EXISTS (SELECT 1 FROM {incoming} AS s WHERE {})",
            meta.table,
            in_intervals(&format!("d.{}", meta.kid), ivs),
            meta.pk_list("d."),
            key_select(meta, "$1::jsonb"),
            matches.join(" AND ")
        );
        sqlx::query(AssertSqlSafe(delete))
            .bind(keys_json)
            .bind(&rows)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.target.err(what, e))?;
        let action = match meta.update_set() {
            Some(set) => format!("DO UPDATE SET {set}"),
            None => "DO NOTHING".to_owned(),
        };
        let upsert = format!(
            "INSERT INTO {} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {incoming} ON CONFLICT ({}) {action}",
            meta.table,
            meta.pk_list("")
        );
        sqlx::query(AssertSqlSafe(upsert))
            .bind(keys_json)
            .bind(&rows)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.target.err(what, e))?;
        Ok(())
    }

    pub(super) async fn verify_all(&self, spec: &MoveSpec, chunk_rows: u64) -> Result<Verified, EngineError> {
        check_spec(spec)?;
        let chunk = chunk_rows.max(1);
        let ivs = intervals(spec);
        let (mut src, mut tgt) = tokio::try_join!(self.source.conn(), self.target.conn())?;
        let s = &self.source;
        let what = "verifying";
        // One snapshot of the source for the pending set, the boundaries and
        // the checksums.
        let mut stx =
            src.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(|e| s.err(what, e))?;
        let has_log = s.has_control(&mut stx, "shardkit_changes").await?;
        let mut verified = Verified::default();
        for (n, t) in spec.tables.iter().enumerate() {
            let meta = s.meta_required(&mut stx, t).await?;
            let pending: String = if has_log {
                let sql = format!(
                    "SELECT coalesce(jsonb_agg(DISTINCT pk), '[]'::jsonb)::text FROM {} WHERE job = $1 AND tbl = $2",
                    s.control("shardkit_changes")
                );
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .bind(&spec.job)
                    .bind(n as i32)
                    .fetch_one(&mut *stx)
                    .await
                    .map_err(|e| s.err("reading the change log", e))?
            } else {
                "[]".to_owned()
            };
            let row_text = format!("ROW({})::text", meta.copy_list(""));
            let not_pending = format!("({}) NOT IN ({})", meta.pk_list(""), key_select(&meta, "$1::jsonb"));
            for iv in &ivs {
                let mut after: Option<Cursor> = None;
                loop {
                    let base = chunk_condition(&meta, *iv, after.as_ref(), None);
                    let upto = self.bound(&mut stx, &meta, &base, chunk, t).await?;
                    let condition = chunk_condition(&meta, *iv, after.as_ref(), upto.as_ref());
                    let sql = format!(
                        "SELECT count(*), coalesce(sum(hashtextextended({row_text}, 0)), 0)::text FROM {} \
                         WHERE {condition} AND {not_pending}",
                        meta.table
                    );
                    let source = sqlx::query_as::<_, (i64, String)>(AssertSqlSafe(sql.clone()))
                        .bind(&pending)
                        .fetch_one(&mut *stx);
                    let target =
                        sqlx::query_as::<_, (i64, String)>(AssertSqlSafe(sql)).bind(&pending).fetch_one(&mut *tgt);
                    let (source, target) = tokio::join!(source, target);
                    let source = source.map_err(|e| s.err(format_args!("checksumming table {}", t.name), e))?;
                    let target =
                        target.map_err(|e| self.target.err(format_args!("checksumming table {}", t.name), e))?;
                    verified.chunks += 1;
                    verified.rows += source.0 as u64;
                    if source != target {
                        let detail = if source.0 != target.0 {
                            format!("{} rows on source, {} on target", source.0, target.0)
                        } else {
                            format!("{} rows on both, contents differ", source.0)
                        };
                        verified.mismatches.push(Mismatch {
                            table: t.name.clone(),
                            what: format!("chunk after {} up to {}: {detail}", describe(&after), describe(&upto)),
                        });
                    }
                    match upto {
                        Some(upto) => after = Some(upto),
                        None => break,
                    }
                }
            }
        }
        stx.commit().await.map_err(|e| s.err(what, e))?;
        Ok(verified)
    }

    pub(super) async fn verify_keys(&self, spec: &MoveSpec, keys: &[ChangedKey]) -> Result<Verified, EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let (mut src, mut tgt) = tokio::try_join!(self.source.conn(), self.target.conn())?;
        let mut verified = Verified::default();
        for (n, t) in spec.tables.iter().enumerate() {
            let pks: BTreeSet<&str> = keys.iter().filter(|k| k.table == n).map(|k| k.pk.as_str()).collect();
            if pks.is_empty() {
                continue;
            }
            let meta = self.source.meta_required(&mut src, t).await?;
            let json = json_array(pks.iter().copied());
            let sql = format!(
                "SELECT jsonb_build_array({})::text, md5(ROW({})::text) FROM {} WHERE {} AND ({}) IN ({})",
                meta.pk_list(""),
                meta.copy_list(""),
                meta.table,
                in_intervals(&meta.kid, &ivs),
                meta.pk_list(""),
                key_select(&meta, "$1::jsonb")
            );
            let source =
                sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql.clone())).bind(&json).fetch_all(&mut *src);
            let target = sqlx::query_as::<_, (String, String)>(AssertSqlSafe(sql)).bind(&json).fetch_all(&mut *tgt);
            let (source, target) = tokio::join!(source, target);
            let what = format_args!("comparing rows of table {}", t.name);
            let source: BTreeMap<String, String> = source.map_err(|e| self.source.err(what, e))?.into_iter().collect();
            let target: BTreeMap<String, String> = target.map_err(|e| self.target.err(what, e))?.into_iter().collect();
            verified.chunks += 1;
            verified.rows += pks.len() as u64;
            compare_rows(&t.name, &source, &target, &mut verified.mismatches);
        }
        Ok(verified)
    }

    pub(super) async fn install_fence(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let s = &self.source;
        let message = fence_message(spec).replace('%', "%%");
        let mut statements = s.control_tables(false);
        for (n, t) in spec.tables.iter().enumerate() {
            let (name, kid) = quoted(t)?;
            let base = fence_name(&spec.job, n);
            let function = s.control(&q(&base));
            let trigger = q(&base);
            statements.push(function_sql(&function, &fence_body(s, &kid, &ivs, &message))?);
            statements.push(format!("DROP TRIGGER IF EXISTS {trigger} ON {name}"));
            statements.push(format!(
                "CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE OR DELETE ON {name} FOR EACH ROW EXECUTE FUNCTION {function}()"
            ));
            statements.push(format!(
                "DELETE FROM {} WHERE job = {} AND tbl = {}",
                s.control("shardkit_fences"),
                sql_string(&spec.job),
                sql_string(&t.name)
            ));
            for iv in &ivs {
                statements.push(format!(
                    "INSERT INTO {} (job, tbl, trg, lo, hi) VALUES ({}, {}, {}, {}, {})",
                    s.control("shardkit_fences"),
                    sql_string(&spec.job),
                    sql_string(&t.name),
                    sql_string(&base),
                    iv.lo,
                    iv.hi
                ));
            }
        }
        s.ddl("installing the fence", &statements, self.options.lock_timeout).await
    }

    pub(super) async fn drop_fence(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        check_spec(spec)?;
        let s = &self.source;
        let mut statements = Vec::new();
        for (n, t) in spec.tables.iter().enumerate() {
            let (name, _) = quoted(t)?;
            let base = fence_name(&spec.job, n);
            statements.push(format!("DROP TRIGGER IF EXISTS {} ON {name}", q(&base)));
            statements.push(format!("DROP FUNCTION IF EXISTS {}()", s.control(&q(&base))));
        }
        if s.has_control(&mut *s.conn().await?, "shardkit_fences").await? {
            statements.push(format!(
                "DELETE FROM {} WHERE job = {}",
                s.control("shardkit_fences"),
                sql_string(&spec.job)
            ));
        }
        s.ddl("dropping the fence", &statements, self.options.lock_timeout).await
    }

    pub(super) async fn drop_target_fences(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        check_spec(spec)?;
        let ivs = intervals(spec);
        let tg = &self.target;
        let mut conn = tg.conn().await?;
        if !tg.has_control(&mut conn, "shardkit_fences").await? {
            return Ok(());
        }
        let names: Vec<String> = spec.tables.iter().map(|t| t.name.clone()).collect();
        let sql = format!("SELECT job, tbl, trg, lo, hi FROM {} WHERE tbl = ANY($1)", tg.control("shardkit_fences"));
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(&names)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| tg.err("reading shardkit_fences", e))?;
        drop(conn);
        let mut statements = Vec::new();
        for ((job, tbl, trg), fence) in group_fences(rows) {
            match fence_fate(&fence, &ivs) {
                FenceFate::Keep => {}
                FenceFate::Partial => {
                    // Part of an older fence's ranges comes back: narrow it
                    // to the rest (same trigger, new body, new rows).
                    let Some(table) = spec.tables.iter().find(|t| t.name == tbl) else { continue };
                    let (_, kid) = quoted(table)?;
                    let rest = subtract(&fence, &ivs);
                    let message =
                        format!("{}: range moved by job {job}", shardlib::sql::FENCE_MESSAGE_PREFIX).replace('%', "%%");
                    statements.push(function_sql(&tg.control(&q(&trg)), &fence_body(tg, &kid, &rest, &message))?);
                    statements.push(format!(
                        "DELETE FROM {} WHERE job = {} AND tbl = {}",
                        tg.control("shardkit_fences"),
                        sql_string(&job),
                        sql_string(&tbl)
                    ));
                    for iv in &rest {
                        statements.push(format!(
                            "INSERT INTO {} (job, tbl, trg, lo, hi) VALUES ({}, {}, {}, {}, {})",
                            tg.control("shardkit_fences"),
                            sql_string(&job),
                            sql_string(&tbl),
                            sql_string(&trg),
                            iv.lo,
                            iv.hi
                        ));
                    }
                    tracing::info!(shard = %tg.shard, job, table = tbl, "fence {trg} narrowed to the ranges not moving back");
                }
                FenceFate::Drop => {
                    let table = spec.tables.iter().find(|t| t.name == tbl).map(quoted).transpose()?;
                    if let Some((name, _)) = table {
                        statements.push(format!("DROP TRIGGER IF EXISTS {} ON {name}", q(&trg)));
                    }
                    statements.push(format!("DROP FUNCTION IF EXISTS {}()", tg.control(&q(&trg))));
                    statements.push(format!(
                        "DELETE FROM {} WHERE job = {} AND tbl = {}",
                        tg.control("shardkit_fences"),
                        sql_string(&job),
                        sql_string(&tbl)
                    ));
                }
            }
        }
        if statements.is_empty() {
            return Ok(());
        }
        tg.ddl("dropping fences of earlier moves", &statements, self.options.lock_timeout).await
    }

    pub(super) async fn drop_capture(&self, spec: &MoveSpec) -> Result<(), EngineError> {
        check_spec(spec)?;
        let s = &self.source;
        let mut statements = Vec::new();
        for (n, t) in spec.tables.iter().enumerate() {
            let (name, _) = quoted(t)?;
            let base = capture_name(&spec.job, n);
            statements.push(format!("DROP TRIGGER IF EXISTS {} ON {name}", q(&base)));
            statements.push(format!("DROP FUNCTION IF EXISTS {}()", s.control(&q(&base))));
        }
        if s.has_control(&mut *s.conn().await?, "shardkit_changes").await? {
            statements.push(format!(
                "DELETE FROM {} WHERE job = {}",
                s.control("shardkit_changes"),
                sql_string(&spec.job)
            ));
        }
        s.ddl("dropping the change capture", &statements, self.options.lock_timeout).await
    }

    pub(super) async fn cleanup_source_step(&self, spec: &MoveSpec, batch_rows: u64) -> Result<u64, EngineError> {
        self.source.delete_step(spec, batch_rows.max(1)).await
    }

    pub(super) async fn clean_target_step(&self, spec: &MoveSpec, batch_rows: u64) -> Result<u64, EngineError> {
        self.target.delete_step(spec, batch_rows.max(1)).await
    }

    pub(super) async fn close(self) {
        tokio::join!(self.source.pool.close(), self.target.pool.close());
    }
}

/// `CREATE OR REPLACE FUNCTION name() RETURNS trigger …` with `body`.
/// The body of a fence trigger function: writes whose old or new keyspace
/// id is in `ivs` fail with the fence SQLSTATE, unless the mover's bypass
/// row is visible.
fn fence_body(side: &Side, kid: &str, ivs: &[Interval], message: &str) -> String {
    format!(
        "BEGIN\n\
           IF ((TG_OP <> 'INSERT' AND {old_in}) OR (TG_OP <> 'DELETE' AND {new_in})) \
              AND NOT EXISTS (SELECT 1 FROM {bypass}) THEN\n\
             RAISE EXCEPTION {message} USING ERRCODE = '{code}';\n\
           END IF;\n\
           IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;\n\
           RETURN NEW;\n\
         END",
        old_in = in_intervals(&format!("OLD.{kid}"), ivs),
        new_in = in_intervals(&format!("NEW.{kid}"), ivs),
        bypass = side.control("shardkit_bypass"),
        message = sql_string(message),
        code = shardlib::sql::FENCE_SQLSTATE,
    )
}

fn function_sql(function: &str, body: &str) -> Result<String, EngineError> {
    if body.contains(BODY_TAG) {
        return Err(EngineError::Precheck(format!("trigger function {function}: names must not contain {BODY_TAG}")));
    }
    Ok(format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS {BODY_TAG}\n{body}\n{BODY_TAG}"
    ))
}

/// Opens one connection to `shard` (bounded by the connect timeout).
async fn connect_one(shard: &Shard, options: &EngineOptions) -> Result<PgConnection, EngineError> {
    let opts = connect_options(shard)?;
    let what = format!("connecting to {}", shard.primary.redacted());
    tokio::time::timeout(options.connect_timeout, PgConnection::connect_with(&opts))
        .await
        .map_err(|_| db_error(&shard.id, &what, format!("no connection within {:?}", options.connect_timeout)))?
        .map_err(|e| db_error(&shard.id, &what, e))
}

/// Rows and bytes of `tables` in `range` on `shard`.
pub(super) async fn range_stats(
    shard: &Shard,
    tables: &[Table],
    range: KeyRange,
    options: &EngineOptions,
) -> Result<RangeStats, EngineError> {
    let mut conn = connect_one(shard, options).await?;
    let (lo, hi) = shardlib::sql::schema::sql_bounds(range);
    let mut stats = RangeStats::default();
    for t in tables {
        let (name, kid) = quoted(t)?;
        let sql = format!(
            "SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0)::int8 FROM {name} AS t WHERE {kid} BETWEEN $1 AND $2"
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
    let mut conn = connect_one(shard, options).await?;
    let (name, kid) = quoted(t)?;
    let (lo, hi) = shardlib::sql::schema::sql_bounds(range);
    let what = format!("finding the median of table {} in range {range}", t.name);
    let count: i64 =
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {name} WHERE {kid} BETWEEN $1 AND $2")))
            .bind(lo)
            .bind(hi)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| db_error(&shard.id, &what, e))?;
    if count == 0 {
        return Ok(None);
    }
    let sql = format!("SELECT {kid} FROM {name} WHERE {kid} BETWEEN $1 AND $2 ORDER BY {kid} OFFSET $3 LIMIT 1");
    let median: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(lo)
        .bind(hi)
        .bind(count / 2)
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| db_error(&shard.id, &what, e))?;
    let _ = conn.close().await;
    Ok(median.map(|v| KeyspaceId::from_sql(v).0))
}

/// See [`super::keyspace_id_quantiles`]: one `percentile_disc` over the range.
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
    let mut conn = connect_one(shard, options).await?;
    let (name, kid) = quoted(t)?;
    let (lo, hi) = shardlib::sql::schema::sql_bounds(range);
    let what = format!("finding quantiles of table {} in range {range}", t.name);
    let fractions: Vec<f64> = (1..=count).map(|i| i as f64 / (count as f64 + 1.0)).collect();
    let sql = format!(
        "SELECT percentile_disc($3::float8[]) WITHIN GROUP (ORDER BY {kid}) FROM {name} WHERE {kid} BETWEEN $1 AND $2"
    );
    let found: Option<Vec<i64>> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(lo)
        .bind(hi)
        .bind(fractions)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| db_error(&shard.id, &what, e))?;
    let _ = conn.close().await;
    let mut points: Vec<u64> = found.unwrap_or_default().into_iter().map(|v| KeyspaceId::from_sql(v).0).collect();
    points.dedup();
    Ok(points)
}
