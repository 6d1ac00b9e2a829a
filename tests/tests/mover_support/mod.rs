//! Shared pieces of the move tests: a `users` keyspace on real databases,
//! shardd in-process on a real etcd, a workload of concurrent writers that
//! remembers every acknowledged write, and the exactly-once check.
//!
//! Included by the tests crate and by shardd's crash tests
//! (`#[path]`), so it names sqlx through shardlib's re-export.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardlib::sql::{Credentials, PoolOptions, ShardedPool, SqlError, schema, sqlx};
use shardlib::store::etcd::{EtcdConfig, EtcdStore};
use shardlib::topology::Table;
use shardlib::watch::{Source, TopologyWatcher, WatchOptions};
use shardlib::{KeyspaceId, ShardKey, Topology};
use sqlx::AssertSqlSafe;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub type TestResult<T = ()> = Result<T, Box<dyn Error + Send + Sync>>;

/// How long any one wait may take on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Logs of in-process servers on stderr when `MOVER_TEST_LOG` holds a
/// filter (e.g. `shardd=debug`).
pub fn init_logs() {
    if let Ok(filter) = std::env::var("MOVER_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
}

/// Runs a blocking fixture call off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> shardkit_tests::Result<T> + Send + 'static,
) -> TestResult<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// The `users` table of the test keyspace.
pub fn users_table() -> Table {
    Table { name: "users".into(), key_columns: vec!["id".into()], keyspace_id_column: "keyspace_id".into() }
}

/// A SQLite DSN for a file in `dir`.
pub fn sqlite_dsn(dir: &std::path::Path, name: &str) -> String {
    format!("sqlite://{}?mode=rwc", dir.join(name).display())
}

/// Creates `users (id BIGINT PRIMARY KEY, name TEXT, keyspace_id BIGINT)`
/// with its keyspace-id index in the database at `dsn`.
pub async fn create_users(dsn: &str) -> TestResult {
    let pool = any_pool(dsn).await?;
    let table = users_table();
    let create = format!(
        "CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, name TEXT NOT NULL, {})",
        schema::keyspace_id_column(&table)?
    );
    sqlx::query(AssertSqlSafe(create)).execute(&pool).await?;
    sqlx::query(AssertSqlSafe(schema::keyspace_id_index(&table, &[])?)).execute(&pool).await?;
    if dsn.starts_with("sqlite") {
        // Writers and the mover use the file at once.
        sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await?;
    }
    pool.close().await;
    Ok(())
}

/// A one-connection pool for checks.
pub async fn any_pool(dsn: &str) -> TestResult<sqlx::AnyPool> {
    sqlx::any::install_default_drivers();
    Ok(sqlx::pool::PoolOptions::<sqlx::Any>::new().max_connections(2).connect(dsn).await?)
}

/// Inserts users `ids` directly (as the service would, with their
/// keyspace ids) into the database at `dsn`, in one transaction.
pub async fn preload(dsn: &str, ids: &[i64]) -> TestResult {
    let pool = any_pool(dsn).await?;
    let mut tx = pool.begin().await?;
    for &id in ids {
        sqlx::query("INSERT INTO users (keyspace_id, id, name) VALUES ($1, $2, $3)")
            .bind(kid(id).to_sql())
            .bind(id)
            .bind(format!("initial-{id}"))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    pool.close().await;
    Ok(())
}

/// The keyspace definition: `shards` (id, DSN) and `ranges` (range, owner).
pub fn keyspace(shards: &[(&str, &str)], ranges: &[(&str, &str)]) -> Value {
    let shards: Vec<Value> = shards.iter().map(|(id, dsn)| json!({ "id": id, "primary": dsn })).collect();
    let ranges: Vec<Value> = ranges.iter().map(|(range, shard)| json!({ "range": range, "shard": shard })).collect();
    json!({
        "tables": [{ "name": "users", "key_columns": ["id"] }],
        "shards": shards,
        "partitioning": { "algorithm": "hash_range", "ranges": ranges },
    })
}

/// shardd's API, over HTTP.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Api { base: base.into(), client: reqwest::Client::new() }
    }

    /// POST; returns (status, body).
    pub async fn post(&self, path: &str, body: &Value) -> TestResult<(u16, Value)> {
        let response = self.client.post(format!("{}{path}", self.base)).json(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// GET; returns (status, body).
    pub async fn get(&self, path: &str) -> TestResult<(u16, Value)> {
        let response = self.client.get(format!("{}{path}", self.base)).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn create_keyspace(&self, name: &str, keyspace: Value) -> TestResult {
        let (status, body) = self.post("/v1/keyspaces", &json!({ "name": name, "keyspace": keyspace })).await?;
        if status != 201 {
            return Err(format!("creating keyspace {name}: {status} {body}").into());
        }
        Ok(())
    }

    /// Creates a job; fails unless 201.
    pub async fn create_job(&self, keyspace: &str, request: Value) -> TestResult<String> {
        let (status, body) = self.post(&format!("/v1/keyspaces/{keyspace}/jobs"), &request).await?;
        if status != 201 {
            return Err(format!("creating job {request}: {status} {body}").into());
        }
        Ok(body["id"].as_str().ok_or("job without id")?.to_owned())
    }

    pub async fn job(&self, id: &str) -> TestResult<Value> {
        let (status, body) = self.get(&format!("/v1/jobs/{id}")).await?;
        if status != 200 {
            return Err(format!("reading job {id}: {status} {body}").into());
        }
        Ok(body)
    }

    /// Polls the job until `done(job)` holds; bounded by [`DEADLINE`].
    pub async fn wait_job(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> TestResult<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            // The API may be between leaders: errors are retried until the deadline.
            if let Ok(job) = self.job(id).await {
                if done(&job) {
                    return Ok(job);
                }
                if Instant::now() > deadline {
                    return Err(format!("job {id}: {what} not reached within {DEADLINE:?}; last: {job}").into());
                }
            } else if Instant::now() > deadline {
                return Err(format!("job {id}: API unreachable for {DEADLINE:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the job has ended and returns it.
    pub async fn wait_finished(&self, id: &str) -> TestResult<Value> {
        self.wait_job(id, "the end", |job| matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled")))
            .await
    }
}

/// A watcher on the etcd store, and pools following it.
pub async fn follow(endpoint: &str, cluster: &str, name: &str) -> TestResult<(TopologyWatcher, Arc<ShardedPool>)> {
    let store = EtcdStore::connect(EtcdConfig::new(vec![endpoint.to_owned()], cluster)).await?;
    let options = WatchOptions { initial_load_timeout: DEADLINE, ..WatchOptions::named(name) };
    let watcher = TopologyWatcher::start(Source::store(store), options).await?;
    let pools = Arc::new(ShardedPool::new(&watcher.current().topology, pool_options(), Credentials::none())?);
    pools.follow(&watcher);
    Ok((watcher, pools))
}

pub fn pool_options() -> PoolOptions {
    PoolOptions {
        max_connections: 8,
        connect_timeout: Duration::from_secs(30),
        acquire_timeout: Duration::from_secs(30),
        write_wait: Duration::from_secs(10),
    }
}

/// What a writer last had acknowledged for a key: `Some(name)` or deleted.
pub type Model = BTreeMap<i64, Option<String>>;

/// Concurrent writers doing upserts and deletes through [`ShardedPool`]s.
/// Each writer owns a disjoint set of keys and retries an operation until it
/// is acknowledged, so the model holds exactly the acknowledged state.
pub struct Workload {
    stop: CancellationToken,
    tasks: JoinSet<TestResult<(Model, u64)>>,
    pub ops: Arc<AtomicU64>,
    started: Instant,
}

/// Settings of a [`Workload`].
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// Keyspace name.
    pub keyspace: String,
    /// Number of writer tasks.
    pub writers: usize,
    /// Keys of writer `w` are `keys.start + w, keys.start + w + writers, …`.
    pub keys: std::ops::Range<i64>,
    /// Total target rate in operations per second.
    pub ops_per_second: u64,
}

impl Workload {
    /// Starts the writers. `initial` is the state before (preloaded rows).
    pub fn start(pools: Arc<ShardedPool>, spec: WorkloadSpec, initial: &Model) -> Workload {
        let stop = CancellationToken::new();
        let ops = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for w in 0..spec.writers {
            let keys: Vec<i64> = spec.keys.clone().skip(w).step_by(spec.writers).collect();
            let model: Model = keys.iter().map(|k| (*k, initial.get(k).cloned().flatten())).collect();
            let (pools, stop, ops, keyspace) = (pools.clone(), stop.clone(), ops.clone(), spec.keyspace.clone());
            let interval = Duration::from_secs_f64(spec.writers as f64 / spec.ops_per_second.max(1) as f64);
            tasks.spawn(writer(pools, keyspace, w, keys, model, interval, stop, ops));
        }
        Workload { stop, tasks, ops, started: Instant::now() }
    }

    /// Stops the writers; returns the merged model, total operations and
    /// the achieved rate (operations per second).
    pub async fn stop(mut self) -> TestResult<(Model, u64, f64)> {
        self.stop.cancel();
        let mut model = Model::new();
        let mut total = 0;
        while let Some(result) = self.tasks.join_next().await {
            let (part, ops) = result??;
            model.extend(part);
            total += ops;
        }
        let rate = total as f64 / self.started.elapsed().as_secs_f64();
        Ok((model, total, rate))
    }
}

#[allow(clippy::too_many_arguments)]
async fn writer(
    pools: Arc<ShardedPool>,
    keyspace: String,
    w: usize,
    keys: Vec<i64>,
    mut model: Model,
    interval: Duration,
    stop: CancellationToken,
    ops: Arc<AtomicU64>,
) -> TestResult<(Model, u64)> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64 + 1);
    let mut seq = 0u64;
    let mut done = 0u64;
    while !stop.is_cancelled() {
        ticker.tick().await;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let key = keys[(rng % keys.len() as u64) as usize];
        seq += 1;
        // One in five operations deletes; the rest insert or update.
        let value = if rng.is_multiple_of(5) { None } else { Some(format!("w{w}-{seq}")) };
        let deadline = Instant::now() + DEADLINE;
        loop {
            match apply(&pools, &keyspace, key, value.as_deref()).await {
                Ok(()) => break,
                Err(error) if Instant::now() < deadline => {
                    tracing_like(&format!("writer {w}: key {key}: {error}; retrying"));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(error) => return Err(format!("writer {w}: key {key} never acknowledged: {error}").into()),
            }
        }
        model.insert(key, value);
        done += 1;
        ops.fetch_add(1, Ordering::Relaxed);
    }
    Ok((model, done))
}

fn tracing_like(message: &str) {
    if std::env::var_os("MOVER_TEST_VERBOSE").is_some() {
        eprintln!("{message}");
    }
}

/// Upserts (`Some`) or deletes (`None`) user `id`, routed by its key.
pub async fn apply(pools: &ShardedPool, keyspace: &str, id: i64, value: Option<&str>) -> Result<(), SqlError> {
    let value = value.map(str::to_owned);
    pools
        .execute_for_key(keyspace, &(id as u64), move |mut tx, keyspace_id| {
            let value = value.clone();
            async move {
                match value {
                    Some(name) => {
                        sqlx::query(
                            "INSERT INTO users (keyspace_id, id, name) VALUES ($1, $2, $3) \
                             ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                        )
                        .bind(keyspace_id)
                        .bind(id)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(&mut *tx).await?;
                    }
                }
                Ok((tx, ()))
            }
        })
        .await
}

/// The model of preloaded users `ids`.
pub fn initial_model(ids: std::ops::Range<i64>) -> Model {
    ids.map(|id| (id, Some(format!("initial-{id}")))).collect()
}

/// Checks that every row exists exactly once, on the shard that owns its
/// keyspace id in `topology`, with the acknowledged content, and that every
/// deleted key is gone from every shard. `shards` maps shard id → DSN.
pub async fn check_exactly_once(
    topology: &Topology,
    keyspace: &str,
    seed: u64,
    shards: &[(&str, &str)],
    model: &Model,
) -> TestResult<usize> {
    let router = shardlib::Router::compile(topology)?;
    let routes = router.keyspace(keyspace)?;
    let mut seen: HashMap<i64, &str> = HashMap::new();
    let mut problems = Vec::new();
    let mut rows_total = 0;
    for (shard, dsn) in shards {
        let pool = any_pool(dsn).await?;
        let rows: Vec<(i64, String, i64)> =
            sqlx::query_as("SELECT id, name, keyspace_id FROM users").fetch_all(&pool).await?;
        pool.close().await;
        rows_total += rows.len();
        for (id, name, kid) in rows {
            let expected_kid = (id as u64).keyspace_id(seed).to_sql();
            if kid != expected_kid {
                problems.push(format!("user {id} on {shard}: keyspace_id {kid}, expected {expected_kid}"));
            }
            let owner = routes.route_id(KeyspaceId::from_sql(kid)).map_or("none", |s| s.as_str());
            if owner != *shard {
                problems.push(format!("user {id} is on {shard}, but {owner} owns it"));
            }
            if let Some(other) = seen.insert(id, shard) {
                problems.push(format!("user {id} exists twice: on {other} and {shard}"));
            }
            match model.get(&id) {
                Some(Some(expected)) if *expected == name => {}
                Some(Some(expected)) => {
                    problems.push(format!("user {id} on {shard}: {name:?}, acknowledged {expected:?}"))
                }
                Some(None) => problems.push(format!("user {id} on {shard} was deleted (acknowledged)")),
                None => problems.push(format!("user {id} on {shard} was never written")),
            }
        }
    }
    for (id, value) in model {
        if value.is_some() && !seen.contains_key(id) {
            problems.push(format!("user {id} is missing (acknowledged {value:?})"));
        }
    }
    if !problems.is_empty() {
        let count = problems.len();
        problems.truncate(20);
        return Err(format!("{count} problem(s):\n  {}", problems.join("\n  ")).into());
    }
    Ok(rows_total)
}

/// The keyspace seed used by the tests (the keyspaces are created without one).
pub const SEED: u64 = 0;

/// `KeyspaceId` of a user id, as shardlib computes it.
pub fn kid(id: i64) -> KeyspaceId {
    (id as u64).keyspace_id(SEED)
}
