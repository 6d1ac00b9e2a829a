//! The cutover pause of a range move, as a writer sees it: how long writes
//! to the moving range wait while shardd freezes the range, fences the old
//! owner and hands the range over.
//!
//! The program starts etcd, two PostgreSQL servers (A: database `s1`, B:
//! database `s2`; `shardkit-tests`' fixtures, removed at the end) and
//! shardd in-process on that etcd, creates keyspace `users` (one range `-`
//! on `s1`, table `users (id BIGINT PRIMARY KEY, payload TEXT, keyspace_id
//! BIGINT)` with its `(keyspace_id, id)` index on both) and loads `--rows`
//! users `0..rows` on `s1`, with their real keyspace ids. Then:
//!
//! - **Writer**: a [`TopologyWatcher`] on the same etcd and a
//!   [`ShardedPool`] following it (as a service would run them), on a tokio
//!   runtime of its own. Open loop at `--rate` writes per second: every
//!   `1/rate` a new task upserts one user picked pseudo-randomly among the
//!   loaded ones (all inside the moving range) through
//!   [`ShardedPool::execute_for_key`] (`INSERT … ON CONFLICT (id) DO UPDATE`),
//!   so a slow write never delays the next one. Each write's latency is
//!   taken from the call to its return (also kept: the delay between the
//!   write's scheduled instant and its call, which shows whether the
//!   generator kept up).
//! - **Moves**, `--moves` times, after `--warmup-ms` of writes: a move job of
//!   range `-` to the other shard (`s1 → s2`, then back, …), polled every
//!   20 ms until it ends, then `--settle-ms` of writes before the next.
//!   With `--fresh-targets` every move goes to a new, empty database
//!   instead (`s1 → s2 → s3 …`, on A and B in turn, each added to the
//!   keyspace before its move, the writer's pools connected to it), so that
//!   no target ever owned the range before (no fence left there by an
//!   earlier move).
//!
//! Per move it reports the writes that started between the job's request
//! and its end seen by polling: their p50, p99 and longest latency, the
//! phase in which the longest one started, the longest one not overlapping
//! the cutover (fence → hand-over spans of the job), and shardd's own
//! `cutover_ms` (freeze → hand-over written). Then the medians over moves.
//! Every write must succeed; failures are counted and shown.
//!
//! # Usage
//!
//! ```text
//! cargo build --release -p shardkit-benches --bins
//! target/release/cutover [--moves 5] [--rows 50000] [--rate 1000] [--batch-rows 10000]
//!     [--warmup-ms 1000] [--settle-ms 500] [--pool-connections 10] [--shared-buffers 128MB]
//!     [--pg-settings NAME=VALUE,…] [--keep-logs DIR] [--unix-sockets] [--fresh-targets] [--json]
//! ```
//!
//! Markdown tables go to stdout (`--json`: one JSON document instead),
//! progress to stderr; `RUST_LOG=shardd=debug` shows shardd's log. Exit
//! status: 0 done, 1 the run failed, 2 bad flags.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shardkit_benches::moving::{
    Api, Clock, Error, MOVE_PHASES, Transport, create_empty, describe_postgres, init_logging, keep_logs, keyspace_json,
    parse_pg_settings, phase_ms, postgres_options, spans, start_shardd, verdict,
};
use shardkit_benches::system::{FlagError, Flags, Summary, load_average, machine, median, ms, signed_ms};
use shardkit_tests::{EtcdServer, PostgresServer};
use shardlib::sql::{Credentials, PoolOptions, ShardedPool, SqlError};
use shardlib::store::etcd::{EtcdConfig, EtcdStore};
use shardlib::topology::{Partitioning, RangeState};
use shardlib::{ShardKey, Source, TopologyUpdate, TopologyWatcher, WatchOptions};
use tokio::sync::broadcast::error::RecvError;

const USAGE: &str = "usage: cutover [--moves N] [--rows N] [--rate N] [--batch-rows N] [--warmup-ms MS]
               [--settle-ms MS] [--pool-connections N] [--shared-buffers SIZE]
               [--pg-settings NAME=VALUE,…] [--keep-logs DIR] [--unix-sockets] [--fresh-targets] [--json]

  --moves             moves of the range, back and forth between the two servers (5)
  --rows              users in the moving range (50000)
  --rate              writes per second, open loop (1000)
  --batch-rows        the jobs' rows per chunk (10000, shardd's default)
  --warmup-ms         writes before the first move (1000)
  --settle-ms         writes between moves (500)
  --pool-connections  connections per shard pool of the writer (10, PoolOptions' default)
  --shared-buffers    PostgreSQL shared_buffers of both servers (128MB)
  --pg-settings       more postgresql.conf settings of both servers, name=value,… (for diagnosis)
  --keep-logs         copy both servers' logs into this directory at the end
  --unix-sockets      reach the servers (shardd and writer) by their Unix sockets, not TCP (for diagnosis)
  --fresh-targets     move to a new, empty database each time (s1 → s2 → s3 …, alternating servers)
                      instead of back and forth, so that no target ever held the range before
  --json              print one JSON document instead of the tables";

/// The cluster name in etcd.
const CLUSTER: &str = "cutover";

/// The keyspace.
const KEYSPACE: &str = "users";

/// The target: the longest write during a move.
const TARGET_LONGEST_MS: f64 = 100.0;

/// How often a job is polled.
const POLL: Duration = Duration::from_millis(20);

/// How long one job may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// The payload of a write: this many characters (as the copy benchmark's rows).
const PAYLOAD: usize = 84;

#[derive(Debug, Clone)]
struct Settings {
    moves: usize,
    rows: i64,
    rate: u32,
    batch_rows: u64,
    warmup: Duration,
    settle: Duration,
    pool_connections: u32,
    shared_buffers: String,
    pg_settings: Vec<(String, String)>,
    keep_logs: Option<std::path::PathBuf>,
    transport: Transport,
    fresh_targets: bool,
    json: bool,
}

impl Settings {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Settings>, FlagError> {
        let mut flags = Flags::parse(args)?;
        if flags.switch("help")? {
            return Ok(None);
        }
        let settings = Settings {
            moves: flags.value("moves", 5)?,
            rows: flags.value("rows", 50_000)?,
            rate: flags.value("rate", 1_000)?,
            batch_rows: flags.value("batch-rows", 10_000)?,
            warmup: Duration::from_millis(flags.value("warmup-ms", 1_000)?),
            settle: Duration::from_millis(flags.value("settle-ms", 500)?),
            pool_connections: flags.value("pool-connections", PoolOptions::default().max_connections)?,
            shared_buffers: flags.text("shared-buffers")?.unwrap_or_else(|| "128MB".to_owned()),
            pg_settings: parse_pg_settings(&flags.text("pg-settings")?.unwrap_or_default())?,
            keep_logs: flags.text("keep-logs")?.map(Into::into),
            transport: if flags.switch("unix-sockets")? { Transport::Unix } else { Transport::Tcp },
            fresh_targets: flags.switch("fresh-targets")?,
            json: flags.switch("json")?,
        };
        flags.finish()?;
        if settings.moves == 0 || settings.rows <= 0 || settings.rate == 0 || settings.batch_rows == 0 {
            return Err(FlagError("--moves, --rows, --rate and --batch-rows must be at least 1".to_owned()));
        }
        if settings.pool_connections == 0 {
            return Err(FlagError("--pool-connections must be at least 1".to_owned()));
        }
        Ok(Some(settings))
    }
}

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(Some(settings)) => settings,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cutover: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cutover: {e}");
            ExitCode::from(1)
        }
    }
}

/// One write as the writer saw it.
#[derive(Debug, Clone)]
struct Sample {
    /// When the open loop meant to issue it.
    intended: Instant,
    /// When `execute_for_key` was called.
    started: Instant,
    /// When it returned.
    finished: Instant,
    /// Why it failed, if it did.
    error: Option<String>,
}

impl Sample {
    fn latency_ms(&self) -> f64 {
        ms(self.finished - self.started)
    }
}

/// The moving range in one topology update, as the writer's watcher
/// received it.
#[derive(Debug, Clone)]
struct Seen {
    /// `TopologyUpdate::received`.
    received: Instant,
    /// The range's owner.
    owner: String,
    /// Whether the range was frozen.
    frozen: bool,
}

/// Records the moving range's owner and state in every update the watcher
/// installs, until the watcher stops.
async fn record_updates(
    mut updates: tokio::sync::broadcast::Receiver<Arc<TopologyUpdate>>,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
) {
    loop {
        match updates.recv().await {
            Ok(update) => {
                let Ok(keyspace) = update.topology.keyspace(KEYSPACE) else { continue };
                let Partitioning::HashRange { ranges } = &keyspace.partitioning else { continue };
                let Some(range) = ranges.first() else { continue };
                let entry = Seen {
                    received: update.received,
                    owner: range.shard.to_string(),
                    frozen: range.state == RangeState::Frozen,
                };
                seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(entry);
            }
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => break,
        }
    }
}

/// One move as the program saw it.
#[derive(Debug, Clone)]
struct Move {
    from: String,
    to: String,
    job: Value,
    requested: Instant,
    ended: Instant,
}

fn run(settings: &Settings) -> Result<(), Error> {
    let started = Instant::now();
    let clock = Clock::now();
    let machine = machine();
    let load_at_start = load_average().unwrap_or_default();

    eprintln!("cutover: starting etcd and two PostgreSQL servers");
    let etcd = EtcdServer::start()?;
    let options = postgres_options(&settings.shared_buffers, &settings.pg_settings);
    let a = PostgresServer::start_with(&options)?;
    let b = PostgresServer::start_with(&options)?;
    let postgres = describe_postgres(&a);
    create_empty(&a, "s1")?;
    create_empty(&b, "s2")?;
    let (s1, s2) = (settings.transport.dsn(&a, "s1"), settings.transport.dsn(&b, "s2"));

    let shardd_runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("shardd").enable_all().build()?;
    let mut config = shardd::Config {
        store: shardd::StoreKind::Etcd,
        cluster: CLUSTER.into(),
        listen: "127.0.0.1:0".parse()?,
        lease_ttl: shardd::config::HumanDuration::from_secs(2),
        ..shardd::Config::default()
    };
    config.etcd.endpoints = vec![etcd.endpoint()];
    config.mover.batch_rows = settings.batch_rows;
    let server = start_shardd(&shardd_runtime, config)?;

    // The writer's (and the program's) runtime, apart from shardd's.
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("writer").enable_all().build()?;
    let api = Api::new(server.url());
    runtime.block_on(api.create_keyspace(KEYSPACE, keyspace_json(&[("s1", &s1), ("s2", &s2)], &[("-", "s1")])))?;
    let seed = runtime.block_on(async {
        let snapshot = server.store().snapshot().await?;
        let keyspace = snapshot.topology.keyspace(KEYSPACE)?;
        Ok::<u64, Error>(keyspace.seed)
    })?;
    eprintln!("cutover: loading {} users into A/s1", settings.rows);
    runtime.block_on(preload(&s1, settings.rows, seed))?;
    a.psql("s1", "VACUUM (ANALYZE) users")?;

    let (watcher, pools) = runtime.block_on(follow(&etcd.endpoint(), settings.pool_connections))?;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = runtime.spawn(record_updates(watcher.updates(), seen.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let (samples_tx, mut samples_rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let period = Duration::from_secs_f64(1.0 / f64::from(settings.rate));
    let generator = runtime.spawn(generate(pools.clone(), settings.rows, period, stop.clone(), samples_tx));
    eprintln!("cutover: writing at {} writes/s; first move in {:?}", settings.rate, settings.warmup);
    std::thread::sleep(settings.warmup);

    // The shards: (id, server, database). Shard k (from 1) lives on A when
    // k is odd, on B when even.
    let mut shards: Vec<(String, &PostgresServer, String)> =
        vec![("s1".into(), &a, "s1".into()), ("s2".into(), &b, "s2".into())];
    let mut moves = Vec::with_capacity(settings.moves);
    for n in 0..settings.moves {
        let (from, to) = if settings.fresh_targets {
            (format!("s{}", n + 1), format!("s{}", n + 2))
        } else if n % 2 == 0 {
            ("s1".to_owned(), "s2".to_owned())
        } else {
            ("s2".to_owned(), "s1".to_owned())
        };
        if !shards.iter().any(|(id, _, _)| *id == to) {
            let server = if (n + 2) % 2 == 1 { &a } else { &b };
            create_empty(server, &to)?;
            let dsn = settings.transport.dsn(server, &to);
            runtime.block_on(add_shard(&api, &watcher, &pools, &to, &dsn))?;
            shards.push((to.clone(), server, to.clone()));
            std::thread::sleep(settings.settle);
        }
        let requested = Instant::now();
        let request = json!({ "kind": "move", "ranges": ["-"], "to": to, "batch_rows": settings.batch_rows });
        let (job, ended) = runtime.block_on(async {
            let id = api.create_job(KEYSPACE, &request).await?;
            api.wait_finished("cutover", &id, POLL, JOB_TIMEOUT).await
        })?;
        if job["status"] != "succeeded" {
            return Err(format!("move {} ({from} → {to}) ended {}: {}", n + 1, job["status"], job["error"]).into());
        }
        eprintln!(
            "cutover: move {} {from} → {to}: {:.2} s, cutover_ms {}",
            n + 1,
            ms(ended - requested) / 1e3,
            job["cutover_ms"]
        );
        moves.push(Move { from, to, job, requested, ended });
        std::thread::sleep(settings.settle);
    }

    stop.store(true, Ordering::Relaxed);
    let samples = runtime.block_on(async {
        generator.await?;
        let mut samples = Vec::new();
        // Every write task holds a sender: this ends when the last one is done.
        let collect = async {
            while let Some(sample) = samples_rx.recv().await {
                samples.push(sample);
            }
        };
        tokio::time::timeout(Duration::from_secs(120), collect)
            .await
            .map_err(|_| "writes still running 120 s after the writer stopped")?;
        Ok::<_, Error>(samples)
    })?;
    let owner = moves.last().map_or("s1", |m| m.to.as_str());
    for (id, server, db) in &shards {
        let rows = count(server, db)?;
        let expected = if id == owner { settings.rows as u64 } else { 0 };
        if rows != expected {
            return Err(format!("after the moves shard {id} holds {rows} rows, expected {expected}").into());
        }
    }
    if let Some(dir) = &settings.keep_logs {
        keep_logs(dir, &[("postgres-a", &a), ("postgres-b", &b)])?;
    }
    runtime.block_on(watcher.shutdown());
    recorder.abort();
    let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    drop(pools);
    drop(runtime);
    shardd_runtime.block_on(server.shutdown())?;
    drop(shardd_runtime);

    let analyses: Vec<Analysis> = moves.iter().map(|m| Analysis::of(m, &samples, &seen, &clock)).collect();
    let load_at_end = load_average().unwrap_or_default();
    let all_failed = samples.iter().filter(|s| s.error.is_some()).count();
    let context = Context {
        machine,
        postgres,
        load_at_start,
        load_at_end,
        writes: samples.len(),
        failed: all_failed,
        first_error: samples.iter().find_map(|s| s.error.clone()),
        max_lag_ms: samples.iter().map(|s| signed_ms(s.started, s.intended)).fold(0.0, f64::max),
    };
    if settings.json {
        print_json(settings, &context, &moves, &analyses);
    } else {
        print_tables(settings, &context, &moves, &analyses);
    }
    eprintln!("cutover: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Adds shard `id` to the keyspace and waits until the writer's pools have
/// it, connected.
async fn add_shard(
    api: &Api,
    watcher: &TopologyWatcher,
    pools: &ShardedPool,
    id: &str,
    dsn: &str,
) -> Result<(), Error> {
    let (status, body) =
        api.post(&format!("/v1/keyspaces/{KEYSPACE}/shards"), &json!({ "id": id, "primary": dsn })).await?;
    if status != 201 {
        return Err(format!("adding shard {id}: {status} {body}").into());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pools.shards().iter().any(|(_, shard)| shard.as_str() == id) {
        if Instant::now() > deadline {
            return Err(format!("the writer never saw shard {id} (epoch {})", watcher.epoch()).into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(error) = pools.connect_all().await.first() {
        return Err(format!("connecting to shard {id}: {error}").into());
    }
    Ok(())
}

fn count(server: &PostgresServer, db: &str) -> Result<u64, Error> {
    Ok(server.psql(db, "SELECT count(*) FROM users")?.trim().parse()?)
}

/// The payload of write `n` (or of the initial row `n`).
fn payload(n: u64) -> String {
    format!("{n:0>PAYLOAD$}")
}

/// Loads users `0..rows` into `dsn` with their keyspace ids (seed `seed`).
async fn preload(dsn: &str, rows: i64, seed: u64) -> Result<(), Error> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(dsn).await?;
    let mut first = 0;
    while first < rows {
        let ids: Vec<i64> = (first..(first + 10_000).min(rows)).collect();
        let kids: Vec<i64> = ids.iter().map(|&id| (id as u64).keyspace_id(seed).to_sql()).collect();
        let payloads: Vec<String> = ids.iter().map(|&id| payload(id as u64)).collect();
        sqlx::query(
            "INSERT INTO users (id, keyspace_id, payload) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])",
        )
        .bind(&ids)
        .bind(&kids)
        .bind(&payloads)
        .execute(&pool)
        .await?;
        first += ids.len() as i64;
    }
    pool.close().await;
    Ok(())
}

/// A watcher on etcd and shard pools following it, connected.
async fn follow(endpoint: &str, connections: u32) -> Result<(TopologyWatcher, Arc<ShardedPool>), Error> {
    let store = EtcdStore::connect(EtcdConfig::new(vec![endpoint.to_owned()], CLUSTER)).await?;
    let options = WatchOptions { initial_load_timeout: Duration::from_secs(60), ..WatchOptions::named("writer") };
    let watcher = TopologyWatcher::start(Source::store(store), options).await?;
    // The library's defaults (write_wait 2 s), as a service would start.
    let options = PoolOptions { max_connections: connections, ..PoolOptions::default() };
    let pools = Arc::new(ShardedPool::new(&watcher.current().topology, options, Credentials::none())?);
    pools.follow(&watcher);
    let errors = pools.connect_all().await;
    if let Some(error) = errors.first() {
        return Err(format!("connecting the writer's pools: {error}").into());
    }
    Ok((watcher, pools))
}

/// SplitMix64's finalizer: spreads consecutive write numbers over the keys.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The open loop: one write task every `period` until `stop`.
async fn generate(
    pools: Arc<ShardedPool>,
    rows: i64,
    period: Duration,
    stop: Arc<AtomicBool>,
    samples: tokio::sync::mpsc::UnboundedSender<Sample>,
) {
    let origin = tokio::time::Instant::now();
    let mut ticker = tokio::time::interval_at(origin, period);
    // Late ticks fire at once: the average rate holds even after a stall.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let intended = (origin + period * n as u32).into_std();
        n += 1;
        let id = (mix(n) % rows as u64) as i64;
        let (pools, samples) = (pools.clone(), samples.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let result = upsert(&pools, id, payload(n)).await;
            let finished = Instant::now();
            let error = result.err().map(|e| e.to_string());
            let _ = samples.send(Sample { intended, started, finished, error });
        });
    }
}

/// Upserts user `id`, routed by its key.
async fn upsert(pools: &ShardedPool, id: i64, payload: String) -> Result<(), SqlError> {
    pools
        .execute_for_key(KEYSPACE, &(id as u64), move |mut tx, keyspace_id| {
            let payload = payload.clone();
            async move {
                sqlx::query(
                    "INSERT INTO users (id, payload, keyspace_id) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET payload = excluded.payload",
                )
                .bind(id)
                .bind(payload)
                .bind(keyspace_id)
                .execute(&mut *tx)
                .await?;
                Ok((tx, ()))
            }
        })
        .await
}

/// What one move did to the writes.
#[derive(Debug, Clone)]
struct Analysis {
    job_s: f64,
    writes: usize,
    failed: usize,
    rate: f64,
    latency: Option<Summary>,
    /// The phase in which the longest write started.
    longest_phase: String,
    /// The longest write that succeeded.
    longest_ok_ms: f64,
    /// The longest write that did not overlap fence → hand-over.
    longest_outside_ms: f64,
    /// The job's fence phase (freeze, database fence, drain, check).
    fence_ms: Option<f64>,
    /// From the start of the job's fence phase until the writer's watcher
    /// installed the frozen range.
    freeze_seen_ms: Option<f64>,
    /// From the writer's watcher installing the frozen range to its
    /// installing the range on the target.
    pause_seen_ms: Option<f64>,
    /// Writes that overlapped fence → hand-over, and the longest of them.
    overlapping: usize,
    cutover_ms: Option<f64>,
    phases: BTreeMap<String, f64>,
    /// The longest write that began in each phase.
    longest_by_phase: BTreeMap<String, f64>,
    /// The longest delay between a write's scheduled instant and its call.
    max_lag_ms: f64,
}

impl Analysis {
    fn of(m: &Move, samples: &[Sample], seen: &[Seen], clock: &Clock) -> Analysis {
        let during: Vec<&Sample> =
            samples.iter().filter(|s| s.started >= m.requested && s.started <= m.ended).collect();
        let mut latencies: Vec<f64> = during.iter().map(|s| s.latency_ms()).collect();
        let latency = Summary::of(&mut latencies);
        let spans = spans(&m.job);
        let window = {
            let fence = spans.iter().find(|s| s.phase == "fence").map(|s| s.started_ms as f64);
            let handed = spans.iter().rev().find(|s| s.phase == "hand_over").map(|s| s.finished_ms as f64);
            fence.zip(handed)
        };
        let overlaps = |s: &Sample| {
            window.is_some_and(|(from, to)| clock.unix_ms(s.finished) >= from && clock.unix_ms(s.started) <= to)
        };
        let longest = during.iter().max_by(|x, y| x.latency_ms().total_cmp(&y.latency_ms()));
        let longest_phase = longest
            .and_then(|s| {
                let at = clock.unix_ms(s.started);
                spans.iter().find(|span| span.started_ms as f64 <= at && at < span.finished_ms as f64 + 1.0)
            })
            .map_or_else(|| "–".to_owned(), |span| span.phase.clone());
        let job_s = ms(m.ended - m.requested) / 1e3;
        let mut longest_by_phase = BTreeMap::new();
        for sample in &during {
            let at = clock.unix_ms(sample.started);
            let phase = spans
                .iter()
                .find(|span| span.started_ms as f64 <= at && at < span.finished_ms as f64 + 1.0)
                .map_or("–", |span| span.phase.as_str());
            let longest = longest_by_phase.entry(phase.to_owned()).or_insert(0.0f64);
            *longest = longest.max(sample.latency_ms());
        }
        let fence = spans.iter().find(|s| s.phase == "fence");
        let frozen = seen.iter().find(|s| s.received >= m.requested && s.frozen && s.owner == m.from);
        let handed =
            frozen.and_then(|f| seen.iter().find(|s| s.received >= f.received && !s.frozen && s.owner == m.to));
        Analysis {
            longest_ok_ms: during.iter().filter(|s| s.error.is_none()).map(|s| s.latency_ms()).fold(0.0, f64::max),
            fence_ms: fence.map(|f| f.ms()),
            freeze_seen_ms: frozen.zip(fence).map(|(f, span)| clock.unix_ms(f.received) - span.started_ms as f64),
            pause_seen_ms: frozen.zip(handed).map(|(f, h)| ms(h.received - f.received)),
            job_s,
            writes: during.len(),
            failed: during.iter().filter(|s| s.error.is_some()).count(),
            rate: during.len() as f64 / job_s.max(1e-9),
            latency,
            longest_phase,
            longest_outside_ms: during.iter().filter(|s| !overlaps(s)).map(|s| s.latency_ms()).fold(0.0, f64::max),
            overlapping: during.iter().filter(|s| overlaps(s)).count(),
            cutover_ms: m.job["cutover_ms"].as_f64(),
            phases: phase_ms(&m.job),
            longest_by_phase,
            max_lag_ms: during.iter().map(|s| signed_ms(s.started, s.intended)).fold(0.0, f64::max),
        }
    }

    fn longest(&self) -> f64 {
        self.latency.map_or(f64::NAN, |l| l.max)
    }
}

/// What the report says besides the moves.
struct Context {
    machine: String,
    postgres: String,
    load_at_start: String,
    load_at_end: String,
    writes: usize,
    failed: usize,
    first_error: Option<String>,
    max_lag_ms: f64,
}

fn med(values: impl IntoIterator<Item = f64>) -> f64 {
    median(&values.into_iter().collect::<Vec<_>>()).unwrap_or(f64::NAN)
}

fn opt(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"))
}

fn print_tables(settings: &Settings, context: &Context, moves: &[Move], analyses: &[Analysis]) {
    println!("## Cutover: writes at {} writes/s to a range while it moves\n", settings.rate);
    println!(
        "Machine: {}. Load average at start: {}; at the end: {}.\n",
        context.machine, context.load_at_start, context.load_at_end
    );
    println!(
        "Servers: etcd, shardd (in-process, on that etcd), two local {}, reached by {}.\n",
        context.postgres,
        settings.transport.describe()
    );
    println!(
        "Range `-` of keyspace `users`: {} rows of about 100 bytes, moved {} ({} moves, `batch_rows` {}). Writer: a `TopologyWatcher` on etcd and a `ShardedPool` following it \
         (`PoolOptions::default()` but {} connections per shard; `write_wait` {} ms), upserting random users of the \
         range, open loop; latency from the `execute_for_key` call to its return; every write that started between \
         the job's request and its end.\n",
        settings.rows,
        if settings.fresh_targets {
            "each time to a new, empty database, on the two servers in turn"
        } else {
            "back and forth between the two servers"
        },
        settings.moves,
        settings.batch_rows,
        settings.pool_connections,
        PoolOptions::default().write_wait.as_millis()
    );
    println!(
        "| move | | job | writes | failed | writes/s | p50 | p99 | **longest** | longest that succeeded | longest began in | longest not overlapping the cutover | **`cutover_ms`** (shardd) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for (i, (m, a)) in moves.iter().zip(analyses).enumerate() {
        let (p50, p99) = a.latency.map_or((f64::NAN, f64::NAN), |l| (l.p50, l.p99));
        println!(
            "| {} | {} → {} | {:.2} s | {} | {} | {:.0} | {p50:.1} ms | {p99:.1} ms | **{:.0} ms** | {:.0} ms | {} | {:.0} ms | **{} ms** |",
            i + 1,
            m.from,
            m.to,
            a.job_s,
            a.writes,
            a.failed,
            a.rate,
            a.longest(),
            a.longest_ok_ms,
            a.longest_phase,
            a.longest_outside_ms,
            opt(a.cutover_ms),
        );
    }
    let m = Medians::of(analyses);
    println!(
        "| **median** | | {:.2} s | | | | **{:.1} ms** | **{:.1} ms** | **{:.0} ms** | {:.0} ms | | {:.0} ms | **{:.0} ms** |",
        m.job_s, m.p50, m.p99, m.longest, m.longest_ok, m.outside, m.cutover
    );
    println!(
        "\nAll writes: {} ({} failed{}); the longest delay between a write's scheduled instant and its call: {:.1} ms.\n",
        context.writes,
        context.failed,
        context.first_error.as_deref().map_or(String::new(), |e| format!("; first error: {e}")),
        context.max_lag_ms
    );

    println!("### Where the pause goes (ms)\n");
    println!(
        "`fence` is the job's fence phase (freeze in the topology, fence triggers on the source, drain of the change \
         log, check of the rows changed since verification); `cutover_ms` adds the hand-over write. The writer's \
         columns use the instants its watcher installed the frozen range and then the range on the target.\n"
    );
    println!(
        "| move | `fence` phase | `cutover_ms` | fence phase start → writer has the freeze | writer: freeze → hand-over installed | writes overlapping the cutover | longest write |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, a) in analyses.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} |",
            i + 1,
            opt(a.fence_ms),
            opt(a.cutover_ms),
            opt(a.freeze_seen_ms),
            opt(a.pause_seen_ms),
            a.overlapping,
            a.longest()
        );
    }
    println!(
        "| **median** | {:.0} | {:.0} | {:.0} | {:.0} | | {:.0} |\n",
        m.fence, m.cutover, m.freeze_seen, m.pause_seen, m.longest
    );

    println!("### The moves' phases (ms)\n");
    let names: Vec<String> = (1..=analyses.len()).map(|i| format!("move {i}")).collect();
    println!("| phase | {} | median |", names.join(" | "));
    println!("|---|{}---:|", "---:|".repeat(analyses.len()));
    for phase in MOVE_PHASES {
        let values: Vec<f64> = analyses.iter().map(|a| a.phases.get(phase).copied().unwrap_or(0.0)).collect();
        let each: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
        println!("| {phase} | {} | {:.0} |", each.join(" | "), med(values.iter().copied()));
    }
    let ids: Vec<&str> = moves.iter().map(|m| m.job["id"].as_str().unwrap_or("?")).collect();
    println!("\nJobs: {}.\n", ids.join(", "));

    println!("### The longest write by the phase it began in (ms)\n");
    println!("| phase | {} | median |", names.join(" | "));
    println!("|---|{}---:|", "---:|".repeat(analyses.len()));
    for phase in MOVE_PHASES {
        let values: Vec<Option<f64>> = analyses.iter().map(|a| a.longest_by_phase.get(phase).copied()).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let each: Vec<String> = values.iter().map(|v| opt(*v)).collect();
        println!("| {phase} | {} | {:.0} |", each.join(" | "), med(values.iter().flatten().copied()));
    }
    println!();

    let worst = analyses.iter().map(Analysis::longest).fold(f64::NAN, f64::max);
    println!("### Target\n");
    println!("| target | measured | |");
    println!("|---|---:|---|");
    println!(
        "| longest write during a move ≤ {TARGET_LONGEST_MS:.0} ms (median of moves) | {:.0} ms | {} |",
        m.longest,
        verdict(m.longest <= TARGET_LONGEST_MS)
    );
    println!("| … in every move (worst move) | {worst:.0} ms | {} |", verdict(worst <= TARGET_LONGEST_MS));
    println!("| no write fails | {} failed | {} |\n", context.failed, verdict(context.failed == 0));
}

struct Medians {
    job_s: f64,
    p50: f64,
    p99: f64,
    longest: f64,
    longest_ok: f64,
    outside: f64,
    cutover: f64,
    fence: f64,
    freeze_seen: f64,
    pause_seen: f64,
}

impl Medians {
    fn of(analyses: &[Analysis]) -> Medians {
        Medians {
            job_s: med(analyses.iter().map(|a| a.job_s)),
            p50: med(analyses.iter().map(|a| a.latency.map_or(f64::NAN, |l| l.p50))),
            p99: med(analyses.iter().map(|a| a.latency.map_or(f64::NAN, |l| l.p99))),
            longest: med(analyses.iter().map(Analysis::longest)),
            longest_ok: med(analyses.iter().map(|a| a.longest_ok_ms)),
            outside: med(analyses.iter().map(|a| a.longest_outside_ms)),
            cutover: med(analyses.iter().filter_map(|a| a.cutover_ms)),
            fence: med(analyses.iter().filter_map(|a| a.fence_ms)),
            freeze_seen: med(analyses.iter().filter_map(|a| a.freeze_seen_ms)),
            pause_seen: med(analyses.iter().filter_map(|a| a.pause_seen_ms)),
        }
    }
}

fn print_json(settings: &Settings, context: &Context, moves: &[Move], analyses: &[Analysis]) {
    let m = Medians::of(analyses);
    let per_move: Vec<Value> = moves
        .iter()
        .zip(analyses)
        .map(|(mv, a)| {
            json!({
                "from": mv.from,
                "to": mv.to,
                "job_id": mv.job["id"],
                "job_s": a.job_s,
                "writes": a.writes,
                "failed": a.failed,
                "writes_per_s": a.rate,
                "p50_ms": a.latency.map(|l| l.p50),
                "p99_ms": a.latency.map(|l| l.p99),
                "longest_ms": a.latency.map(|l| l.max),
                "longest_succeeded_ms": a.longest_ok_ms,
                "longest_began_in": a.longest_phase,
                "longest_not_overlapping_cutover_ms": a.longest_outside_ms,
                "writes_overlapping_cutover": a.overlapping,
                "cutover_ms": a.cutover_ms,
                "fence_phase_ms": a.fence_ms,
                "fence_start_to_freeze_seen_ms": a.freeze_seen_ms,
                "freeze_seen_to_hand_over_seen_ms": a.pause_seen_ms,
                "max_schedule_lag_ms": a.max_lag_ms,
                "phases_ms": a.phases,
                "longest_by_phase_ms": a.longest_by_phase,
            })
        })
        .collect();
    let doc = json!({
        "benchmark": "cutover",
        "machine": context.machine,
        "postgres": context.postgres,
        "transport": settings.transport.describe(),
        "fresh_targets": settings.fresh_targets,
        "rows": settings.rows,
        "rate": settings.rate,
        "batch_rows": settings.batch_rows,
        "pool_connections": settings.pool_connections,
        "moves": per_move,
        "median": {
            "job_s": m.job_s,
            "p50_ms": m.p50,
            "p99_ms": m.p99,
            "longest_ms": m.longest,
            "longest_succeeded_ms": m.longest_ok,
            "longest_not_overlapping_cutover_ms": m.outside,
            "cutover_ms": m.cutover,
            "fence_phase_ms": m.fence,
            "fence_start_to_freeze_seen_ms": m.freeze_seen,
            "freeze_seen_to_hand_over_seen_ms": m.pause_seen,
        },
        "writes": context.writes,
        "failed": context.failed,
        "first_error": context.first_error,
        "max_schedule_lag_ms": context.max_lag_ms,
        "target_longest_ms": TARGET_LONGEST_MS,
        "target_met": m.longest <= TARGET_LONGEST_MS,
    });
    println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
}
