//! Helpers of the data-moving programs `src/bin/copy_rate.rs` and
//! `src/bin/cutover.rs`: the benchmark table and its keyspace, PostgreSQL
//! servers configured for measuring, shardd in-process, its job API over
//! HTTP, and the phases of a finished job.
//!
//! Both programs move the rows of one table,
//!
//! ```sql
//! CREATE TABLE users (id BIGINT NOT NULL, payload TEXT NOT NULL, keyspace_id BIGINT NOT NULL);
//! -- after loading:
//! ALTER TABLE users ADD PRIMARY KEY (id);
//! CREATE INDEX users_keyspace_id_idx ON users (keyspace_id, id);
//! ```
//!
//! following the `keyspace_id` convention of `shardlib::sql::schema` (the
//! index is built by that module's DDL), between databases on two local
//! PostgreSQL servers started with `shardkit-tests`' fixture.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use shardkit_tests::{PostgresOptions, PostgresServer};
use shardlib::sql::schema;
use shardlib::topology::Table;

/// The error type of the programs.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The table moved.
pub const TABLE: &str = "users";

/// The keyspace's table: `users`, key `id`, keyspace id in `keyspace_id`.
pub fn users_table() -> Table {
    Table { name: TABLE.into(), key_columns: vec!["id".into()], keyspace_id_column: "keyspace_id".into() }
}

/// `CREATE TABLE users (…)` without constraints, for a bulk load.
pub fn create_table_sql() -> Result<String, Error> {
    let table = users_table();
    Ok(format!(
        "CREATE TABLE {} (id BIGINT NOT NULL, payload TEXT NOT NULL, {})",
        schema::quote_table(&table.name)?,
        schema::keyspace_id_column(&table)?
    ))
}

/// The primary key and the `(keyspace_id, id)` index, one statement each.
pub fn constraints_sql() -> Result<[String; 2], Error> {
    let table = users_table();
    Ok([
        format!("ALTER TABLE {} ADD PRIMARY KEY (id)", schema::quote_table(&table.name)?),
        schema::keyspace_id_index(&table, &[])?,
    ])
}

/// Creates database `db` on `server` with an empty `users` table, its
/// primary key and its keyspace-id index (a move's target, or the
/// baseline's).
pub fn create_empty(server: &PostgresServer, db: &str) -> Result<(), Error> {
    server.create_database(db)?;
    let [pk, index] = constraints_sql()?;
    server.psql(db, &format!("{}; {pk}; {index}", create_table_sql()?))?;
    Ok(())
}

/// The PostgreSQL settings of the benchmark servers, on top of the
/// fixture's (`fsync = off`, `full_page_writes = off`, loopback only):
/// `shared_buffers` as given (the fixture's 16 MB is sized for many test
/// servers at once, not for measuring), then `extra` (for diagnosis, such
/// as `log_min_duration_statement`).
pub fn postgres_options(shared_buffers: &str, extra: &[(String, String)]) -> PostgresOptions {
    let mut settings = vec![("shared_buffers".to_owned(), shared_buffers.to_owned())];
    settings.extend(extra.iter().cloned());
    PostgresOptions { settings, ..PostgresOptions::default() }
}

/// Parses `--pg-settings name=value,name=value`.
pub fn parse_pg_settings(text: &str) -> Result<Vec<(String, String)>, crate::system::FlagError> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| match part.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.trim().to_owned())),
            _ => Err(crate::system::FlagError(format!("--pg-settings: {part:?} is not name=value"))),
        })
        .collect()
}

/// Copies each server's log to `dir/<name>.log` (the fixture removes its
/// directory when the server is dropped).
pub fn keep_logs(dir: &std::path::Path, servers: &[(&str, &PostgresServer)]) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    for (name, server) in servers {
        std::fs::copy(server.log_path(), dir.join(format!("{name}.log")))?;
    }
    Ok(())
}

/// One line describing a server: version and the settings that matter here.
pub fn describe_postgres(server: &PostgresServer) -> String {
    let show = |name: &str| server.psql("postgres", &format!("SHOW {name}")).unwrap_or_else(|_| "?".into());
    format!(
        "PostgreSQL {} (shared_buffers {}, fsync {}, synchronous_commit {}, full_page_writes {})",
        show("server_version"),
        show("shared_buffers"),
        show("fsync"),
        show("synchronous_commit"),
        show("full_page_writes")
    )
}

/// A keyspace definition for `POST /v1/keyspaces`: the `users` table,
/// `shards` as (id, DSN), `ranges` as (range, owner).
pub fn keyspace_json(shards: &[(&str, &str)], ranges: &[(&str, &str)]) -> Value {
    let shards: Vec<Value> = shards.iter().map(|(id, dsn)| json!({ "id": id, "primary": dsn })).collect();
    let ranges: Vec<Value> = ranges.iter().map(|(range, shard)| json!({ "range": range, "shard": shard })).collect();
    json!({
        "tables": [{ "name": TABLE, "key_columns": ["id"] }],
        "shards": shards,
        "partitioning": { "algorithm": "hash_range", "ranges": ranges },
    })
}

/// Starts shardd in-process on `runtime` (its tasks run on that runtime's
/// workers) and waits until it leads.
pub fn start_shardd(runtime: &tokio::runtime::Runtime, config: shardd::Config) -> Result<shardd::Handle, Error> {
    runtime.block_on(async {
        let handle = shardd::Server::start(config).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !handle.is_leader() {
            if Instant::now() > deadline {
                return Err::<_, Error>("shardd did not become the leader within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(handle)
    })
}

/// Installs shardd's logger (to stderr) when `RUST_LOG` is set, so that
/// `RUST_LOG=shardd=debug` shows the mover's steps.
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some()
        && let Err(e) = shardd::logging::init(&shardd::config::LogOptions::default())
    {
        eprintln!("logging: {e}");
    }
}

/// shardd's API over HTTP.
#[derive(Clone, Debug)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    /// The API at `base` (e.g. `http://127.0.0.1:41234`).
    pub fn new(base: impl Into<String>) -> Api {
        Api { base: base.into(), client: reqwest::Client::new() }
    }

    /// POST `body`; returns (status, body).
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), Error> {
        let response = self.client.post(format!("{}{path}", self.base)).json(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GET; returns (status, body).
    pub async fn get(&self, path: &str) -> Result<(u16, Value), Error> {
        let response = self.client.get(format!("{}{path}", self.base)).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Creates keyspace `name`; fails unless 201.
    pub async fn create_keyspace(&self, name: &str, keyspace: Value) -> Result<(), Error> {
        let (status, body) = self.post("/v1/keyspaces", &json!({ "name": name, "keyspace": keyspace })).await?;
        if status != 201 {
            return Err(format!("creating keyspace {name}: {status} {body}").into());
        }
        Ok(())
    }

    /// Creates a job; returns its id. Fails unless 201.
    pub async fn create_job(&self, keyspace: &str, request: &Value) -> Result<String, Error> {
        let (status, body) = self.post(&format!("/v1/keyspaces/{keyspace}/jobs"), request).await?;
        if status != 201 {
            return Err(format!("creating job {request}: {status} {body}").into());
        }
        Ok(body["id"].as_str().ok_or("the created job has no id")?.to_owned())
    }

    /// The job `id`.
    pub async fn job(&self, id: &str) -> Result<Value, Error> {
        let (status, body) = self.get(&format!("/v1/jobs/{id}")).await?;
        if status != 200 {
            return Err(format!("reading job {id}: {status} {body}").into());
        }
        Ok(body)
    }

    /// Polls job `id` every `every` until it has ended (bounded by
    /// `timeout`); returns it and the instant the end was seen. Phase
    /// changes are written to stderr (`program: job …`).
    pub async fn wait_finished(
        &self,
        program: &str,
        id: &str,
        every: Duration,
        timeout: Duration,
    ) -> Result<(Value, Instant), Error> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut phase = String::new();
        loop {
            let job = self.job(id).await?;
            if matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return Ok((job, Instant::now()));
            }
            let now = job["phase"].as_str().unwrap_or("?");
            if now != phase {
                phase = now.to_owned();
                eprintln!(
                    "{program}: job {id} at {:.1} s: {phase} (rows copied {})",
                    started.elapsed().as_secs_f64(),
                    job["progress"]["rows_copied"]
                );
            }
            if Instant::now() > deadline {
                return Err(format!("job {id} did not end within {timeout:?}; last seen: {job}").into());
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// One span of a job's `phases`, in Unix milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    /// The phase's name (`copy`, `fence`, …).
    pub phase: String,
    /// When it started.
    pub started_ms: u64,
    /// When it ended.
    pub finished_ms: u64,
}

impl Span {
    /// Its length in milliseconds.
    pub fn ms(&self) -> f64 {
        self.finished_ms.saturating_sub(self.started_ms) as f64
    }
}

/// The finished spans of a job's `phases`, in order.
pub fn spans(job: &Value) -> Vec<Span> {
    job["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|span| {
            Some(Span {
                phase: span["phase"].as_str()?.to_owned(),
                started_ms: span["started_at_ms"].as_u64()?,
                finished_ms: span["finished_at_ms"].as_u64()?,
            })
        })
        .collect()
}

/// Milliseconds spent in each phase of `job` (summed if a phase ran twice).
pub fn phase_ms(job: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for span in spans(job) {
        *out.entry(span.phase.clone()).or_insert(0.0) += span.ms();
    }
    out
}

/// The phases a move runs through, in order (for tables).
pub const MOVE_PHASES: [&str; 9] =
    ["pending", "precheck", "capture", "copy", "catch_up", "verify", "fence", "hand_over", "cleanup"];

/// Unix milliseconds ↔ [`Instant`], from one reading of both clocks (the
/// job's timestamps are Unix milliseconds; the programs time with `Instant`).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    unix_ms: f64,
    instant: Instant,
}

impl Clock {
    /// Reads both clocks now.
    pub fn now() -> Clock {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        Clock { unix_ms, instant: Instant::now() }
    }

    /// `instant` in Unix milliseconds.
    pub fn unix_ms(&self, instant: Instant) -> f64 {
        self.unix_ms + crate::system::signed_ms(instant, self.instant)
    }
}

/// How the programs reach the servers: TCP on 127.0.0.1 (as to a database
/// on another host), or the Unix socket (for diagnosis: no Nagle's
/// algorithm, no TCP stack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP to 127.0.0.1.
    Tcp,
    /// The server's Unix socket.
    Unix,
}

impl Transport {
    /// `"TCP (127.0.0.1)"` or `"Unix sockets"`, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP (127.0.0.1)",
            Transport::Unix => "Unix sockets",
        }
    }

    /// A connection string for `server`'s database `db`.
    pub fn dsn(self, server: &PostgresServer, db: &str) -> String {
        match self {
            Transport::Tcp => server.dsn(db),
            Transport::Unix => {
                let dir: String = server
                    .socket_dir()
                    .to_string_lossy()
                    .bytes()
                    .map(|b| if b == b'/' { "%2F".to_owned() } else { char::from(b).to_string() })
                    .collect();
                format!("postgres://{}@localhost:{}/{db}?host={dir}", server.user(), server.port())
            }
        }
    }

    /// `psql` invocation arguments for `server`'s database `db`, as the
    /// baseline pipe uses them (no psqlrc, quiet, the fixture's superuser).
    pub fn psql_args(self, server: &PostgresServer, db: &str) -> String {
        let host = match self {
            Transport::Tcp => server.host().to_owned(),
            Transport::Unix => server.socket_dir().to_string_lossy().into_owned(),
        };
        format!(
            "{} --no-psqlrc --quiet --set ON_ERROR_STOP=1 --host {host} --port {} --username {} --dbname {db}",
            server.bin_dir().join("psql").display(),
            server.port(),
            server.user()
        )
    }
}

/// A word for a met or missed target.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_phase_times_come_from_the_job() {
        let job = json!({ "phases": [
            { "phase": "copy", "started_at_ms": 1000, "finished_at_ms": 3500 },
            { "phase": "fence", "started_at_ms": 3500, "finished_at_ms": 3520 },
            { "phase": "cleanup", "started_at_ms": 3520, "finished_at_ms": null },
        ]});
        assert_eq!(spans(&job).len(), 2);
        let ms = phase_ms(&job);
        assert_eq!(ms["copy"], 2500.0);
        assert_eq!(ms["fence"], 20.0);
        assert!(!ms.contains_key("cleanup"));
    }

    #[test]
    fn pg_settings_parse() {
        let parsed = parse_pg_settings("log_min_duration_statement=1, log_lock_waits=on").unwrap();
        assert_eq!(parsed[1], ("log_lock_waits".to_owned(), "on".to_owned()));
        assert!(parse_pg_settings("nonsense").is_err());
        assert!(parse_pg_settings("").unwrap().is_empty());
    }

    #[test]
    fn ddl_follows_the_keyspace_id_convention() {
        let create = create_table_sql().unwrap();
        assert!(create.contains("\"keyspace_id\" BIGINT NOT NULL"), "{create}");
        let [pk, index] = constraints_sql().unwrap();
        assert!(pk.contains("PRIMARY KEY (id)"));
        assert!(index.contains("(\"keyspace_id\", \"id\")"), "{index}");
    }
}
