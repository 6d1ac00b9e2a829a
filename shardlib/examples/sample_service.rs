//! A small service that links shardlib, for the first-run demo
//! (`examples/first-run.sh`).
//!
//! It follows shardd's topology through the watcher's shardd source
//! (`GET /v1/watch`), keeps one sqlx pool per shard ([`ShardedPool`]) and
//! writes users through [`ShardedPool::execute_for_key`], which routes each
//! write to the shard that owns the key *now*, waits while a range is frozen
//! for a cutover and retries once on the new owner after a database fence.
//!
//! ```text
//! sample_service init    --shardd URL --keyspace users
//! sample_service run     --shardd URL --keyspace users --rows N --rate R --state FILE
//!                        [--progress FILE] [--stop-file FILE] [--writers W]
//! sample_service verify  --shardd URL --keyspace users [--state FILE] [--save FILE]
//! sample_service summary --before FILE --after FILE --state FILE
//!                        [--rebalance-start FILE --rebalance-end FILE]
//! ```
//!
//! - `init` creates the keyspace's `users` table, with its `keyspace_id`
//!   column and index, in every shard database of the current topology
//!   (idempotent: run it again after adding a shard) and puts SQLite files
//!   in WAL mode, since the service and shardd's mover use them at once.
//! - `run` loads users `1..=N`, then upserts and deletes random users at `R`
//!   operations per second until SIGINT, SIGTERM or the stop file. Each
//!   writer task owns its own keys and retries an operation until it is
//!   acknowledged, so the service knows the acknowledged state of every
//!   key; on stop it saves that state to the state file (JSON). The
//!   progress file (`key=value` lines, rewritten about five times a second)
//!   says how far it got.
//! - `verify` reads every shard database and prints rows and a checksum per
//!   shard. It checks that every row is on the shard that owns its keyspace
//!   id, exactly once, with the right `keyspace_id`, and, given the state
//!   file, that the rows are exactly the acknowledged state. Exit code 1 on
//!   any problem.
//! - `summary` compares two saved `verify` results.
//!
//! The checksum of a set of rows is the wrapping sum of xxh3 over each
//! row's `id` and `name`: it does not depend on the order of the rows or on
//! which shard holds them, so the shards' checksums add up to the checksum
//! of the whole table and of the acknowledged state.
//!
//! Build it with `cargo build --release -p shardlib --example sample_service
//! --features sql,shardd-source`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shardlib::sql::sqlx::{self, AssertSqlSafe};
use shardlib::sql::{Credentials, PoolOptions, ShardedPool, SqlError, schema};
use shardlib::topology::{Keyspace, Partitioning, RangeState, ShardState, Table};
use shardlib::watch::{Source, TopologyWatcher, WatchOptions};
use shardlib::{KeyspaceId, Topology};

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// A write that took longer than this waited for something (a cutover).
const SLOW_WRITE: Duration = Duration::from_millis(50);
/// How long one operation is retried before the service gives up on it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

const USAGE: &str = "\
usage: sample_service init    --shardd URL --keyspace KS
       sample_service run     --shardd URL --keyspace KS --rows N --rate OPS --state FILE
                              [--progress FILE] [--stop-file FILE] [--writers W]
       sample_service verify  --shardd URL --keyspace KS [--state FILE] [--save FILE]
       sample_service summary --before FILE --after FILE --state FILE
                              [--rebalance-start FILE --rebalance-end FILE]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sample_service: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match command.as_str() {
            "init" => init(&Flags::parse(rest, &["shardd", "keyspace"])?).await,
            "run" => {
                let known = ["shardd", "keyspace", "rows", "rate", "state", "progress", "stop-file", "writers"];
                run(&Flags::parse(rest, &known)?).await
            }
            "verify" => verify(&Flags::parse(rest, &["shardd", "keyspace", "state", "save"])?).await,
            "summary" => {
                let known = ["before", "after", "state", "rebalance-start", "rebalance-end"];
                summary(&Flags::parse(rest, &known)?)
            }
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                Ok(true)
            }
            other => Err(format!("unknown command {other:?}\n{USAGE}").into()),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("sample_service {command}: {error}");
            ExitCode::from(2)
        }
    }
}

/// `--name value` flags.
struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: &[String], known: &[&str]) -> Result<Flags> {
        let mut flags = HashMap::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let name = arg.strip_prefix("--").filter(|name| known.contains(name));
            let Some(name) = name else {
                return Err(format!("unexpected argument {arg:?}\n{USAGE}").into());
            };
            let value = args.next().ok_or_else(|| format!("--{name} needs a value"))?;
            flags.insert(name.to_owned(), value.clone());
        }
        Ok(Flags(flags))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.get(name).ok_or_else(|| format!("--{name} is required\n{USAGE}").into())
    }

    fn number(&self, name: &str, default: Option<u64>) -> Result<u64> {
        match (self.get(name), default) {
            (Some(value), _) => value.parse().map_err(|_| format!("--{name}: not a number: {value:?}").into()),
            (None, Some(default)) => Ok(default),
            (None, None) => Err(format!("--{name} is required\n{USAGE}").into()),
        }
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.get(name).map(PathBuf::from)
    }
}

// ---------------------------------------------------------------------------
// Topology and shard pools

/// Follows shardd's topology; fails unless it has the keyspace.
async fn watch(flags: &Flags, name: &str) -> Result<(TopologyWatcher, String)> {
    let url = flags.required("shardd")?.trim_end_matches('/').to_owned();
    let keyspace = flags.required("keyspace")?.to_owned();
    let options = WatchOptions { initial_load_timeout: Duration::from_secs(20), ..WatchOptions::named(name) };
    let watcher = TopologyWatcher::start(Source::shardd(url.clone(), None), options)
        .await
        .map_err(|error| format!("cannot follow the topology of shardd at {url}: {error}"))?;
    if !watcher.current().topology.keyspaces.keys().any(|ks| ks.as_str() == keyspace) {
        return Err(format!("shardd at {url} has no keyspace {keyspace:?}").into());
    }
    Ok((watcher, keyspace))
}

fn keyspace_of<'t>(topology: &'t Topology, keyspace: &str) -> Result<&'t Keyspace> {
    topology
        .keyspaces
        .iter()
        .find(|(name, _)| name.as_str() == keyspace)
        .map(|(_, ks)| ks)
        .ok_or_else(|| format!("the topology has no keyspace {keyspace:?}").into())
}

/// The keyspace's `users` table as declared in the topology.
fn users_table(keyspace: &Keyspace) -> Result<Table> {
    keyspace
        .tables
        .iter()
        .find(|t| t.name == "users")
        .cloned()
        .ok_or_else(|| "the keyspace declares no `users` table".into())
}

/// The shards that may hold rows (not removed), in topology order.
fn live_shards(keyspace: &Keyspace) -> Vec<String> {
    keyspace.shards.iter().filter(|s| s.state != ShardState::Removed).map(|s| s.id.to_string()).collect()
}

/// The ranges each shard owns, as text.
fn ranges_by_shard(keyspace: &Keyspace) -> HashMap<String, Vec<String>> {
    let mut owned: HashMap<String, Vec<String>> = HashMap::new();
    if let Partitioning::HashRange { ranges } = &keyspace.partitioning {
        for assignment in ranges {
            owned.entry(assignment.shard.to_string()).or_default().push(assignment.range.to_string());
        }
    }
    owned
}

fn pool_options() -> PoolOptions {
    PoolOptions {
        max_connections: 8,
        connect_timeout: Duration::from_secs(10),
        acquire_timeout: Duration::from_secs(30),
        // A cutover pauses writes to its ranges for milliseconds; wait
        // generously on a loaded machine.
        write_wait: Duration::from_secs(10),
    }
}

fn shard_id(id: &str) -> Result<shardlib::ShardId> {
    shardlib::ShardId::new(id).map_err(|error| format!("shard id {id:?}: {error}").into())
}

// ---------------------------------------------------------------------------
// init

async fn init(flags: &Flags) -> Result<bool> {
    let (watcher, keyspace) = watch(flags, "sample-service-init").await?;
    let topology = Arc::clone(&watcher.current().topology);
    let ks = keyspace_of(&topology, &keyspace)?;
    let table = users_table(ks)?;
    let pools = ShardedPool::new(&topology, pool_options(), Credentials::none())?;
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, {})",
        schema::quote_table(&table.name)?,
        schema::keyspace_id_column(&table)?
    );
    let index = schema::keyspace_id_index(&table, &[])?;
    for shard in live_shards(ks) {
        let pool = pools.shard(&keyspace, &shard_id(&shard)?)?;
        let db = pool.pool();
        if pool.dsn().expose().starts_with("sqlite") {
            sqlx::query("PRAGMA journal_mode=WAL").execute(db).await.map_err(|e| pool.error(e))?;
        }
        sqlx::query(AssertSqlSafe(create.clone())).execute(db).await.map_err(|e| pool.error(e))?;
        sqlx::query(AssertSqlSafe(index.clone())).execute(db).await.map_err(|e| pool.error(e))?;
        println!("  {shard}: table {} ready ({})", table.name, pool.dsn().redacted());
    }
    watcher.shutdown().await;
    Ok(true)
}

// ---------------------------------------------------------------------------
// run

/// What the service last had acknowledged for a user: its name, or deleted.
type Model = BTreeMap<i64, Option<String>>;

/// The state file.
#[derive(Serialize, Deserialize)]
struct State {
    keyspace: String,
    /// Rows loaded at the start (users `1..=loaded`).
    loaded: u64,
    /// Writes acknowledged after the load.
    writes: u64,
    /// Writes (after the load) that took longer than 50 ms.
    slow_writes: u64,
    /// The longest acknowledged write, in milliseconds.
    max_write_ms: f64,
    /// Topology epochs the service installed while it ran.
    topology_changes: u64,
    /// Users whose last operation was given up on: their state is unknown.
    uncertain: Vec<i64>,
    /// The acknowledged state: id → name, or null when deleted.
    rows: Model,
}

/// Counters shared by the writers.
#[derive(Default)]
struct Counters {
    loaded: AtomicU64,
    writes: AtomicU64,
    slow: AtomicU64,
    max_micros: AtomicU64,
    topology_changes: AtomicU64,
    writing: AtomicBool,
}

impl Counters {
    fn acknowledged(&self, took: Duration, loading: bool) {
        if loading {
            self.loaded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        if took > SLOW_WRITE {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
        self.max_micros.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn max_ms(&self) -> f64 {
        self.max_micros.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

async fn run(flags: &Flags) -> Result<bool> {
    let rows = flags.number("rows", None)?.max(1) as i64;
    let rate = flags.number("rate", None)?.max(1);
    let writers = flags.number("writers", Some(8))?.clamp(1, 64) as usize;
    let state_file = PathBuf::from(flags.required("state")?);
    let progress_file = flags.path("progress");
    let stop_file = flags.path("stop-file");

    let (watcher, keyspace) = watch(flags, "sample-service").await?;
    let counters = Arc::new(Counters::default());
    let updates = watcher.updates();
    let changes = tokio::spawn(log_changes(updates, watcher.current(), keyspace.clone(), Arc::clone(&counters)));
    let pools = ShardedPool::new(&watcher.current().topology, pool_options(), Credentials::none())?;
    let follower = pools.follow(&watcher);
    println!(
        "service: following shardd's topology from epoch {}: shard pools for {} shards",
        watcher.epoch(),
        pools.shards().len()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let reporter = tokio::spawn(report(Arc::clone(&counters), rows as u64, progress_file, Arc::clone(&stop)));

    // The initial load, also through execute_for_key: a few tasks, each
    // with its own slice of the users.
    let started = Instant::now();
    println!("service: loading {} users through ShardedPool::execute_for_key", thousands(rows as u64));
    let mut loaders = tokio::task::JoinSet::new();
    let loader_count = 16;
    for l in 0..loader_count {
        let (pools, keyspace, counters) = (pools.clone(), keyspace.clone(), Arc::clone(&counters));
        loaders.spawn(async move {
            for id in (1 + l..=rows).step_by(loader_count as usize) {
                let name = format!("user-{id}");
                write_until_acknowledged(&pools, &keyspace, id, Some(&name), &counters, true).await?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(result) = loaders.join_next().await {
        result??;
    }
    println!(
        "service: loaded {} users in {:.1} s; now writing ~{rate} ops/s (upserts and deletes) until stopped",
        thousands(rows as u64),
        started.elapsed().as_secs_f64()
    );
    counters.writing.store(true, Ordering::Relaxed);

    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let keys: Vec<i64> = (1 + w as i64..=rows).step_by(writers).collect();
        let initial: Model = keys.iter().map(|&id| (id, Some(format!("user-{id}")))).collect();
        let interval = Duration::from_secs_f64(writers as f64 / rate as f64);
        let (pools, keyspace, counters, stop) =
            (pools.clone(), keyspace.clone(), Arc::clone(&counters), Arc::clone(&stop));
        tasks.spawn(writer(pools, keyspace, w, keys, initial, interval, counters, stop));
    }

    wait_for_stop(stop_file.as_deref()).await;
    stop.store(true, Ordering::Relaxed);
    println!("service: stopping; finishing the writes in flight");
    let mut model = Model::new();
    let mut uncertain = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (part, unsure) = result?;
        model.extend(part);
        uncertain.extend(unsure);
    }
    uncertain.sort_unstable();
    let _ = reporter.await;
    follower.abort();
    changes.abort();

    let state = State {
        keyspace,
        loaded: rows as u64,
        writes: counters.writes.load(Ordering::Relaxed),
        slow_writes: counters.slow.load(Ordering::Relaxed),
        max_write_ms: counters.max_ms(),
        topology_changes: counters.topology_changes.load(Ordering::Relaxed),
        uncertain,
        rows: model,
    };
    write_atomically(&state_file, &serde_json::to_vec(&state)?)?;
    println!(
        "service: stopped. {} writes acknowledged after the load; {} took over 50 ms (longest {:.0} ms); \
         {} topology changes followed; state saved to {}",
        thousands(state.writes),
        state.slow_writes,
        state.max_write_ms,
        state.topology_changes,
        state_file.display()
    );
    if !state.uncertain.is_empty() {
        println!("service: gave up on {} writes (users {:?})", state.uncertain.len(), state.uncertain);
    }
    watcher.shutdown().await;
    Ok(state.uncertain.is_empty())
}

/// Waits for SIGINT, SIGTERM or the stop file.
async fn wait_for_stop(stop_file: Option<&Path>) {
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let stop_file_appears = async {
        loop {
            if stop_file.is_some_and(Path::exists) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    #[cfg(unix)]
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => drop(signal.recv().await),
            None => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminated = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
        _ = stop_file_appears => {}
    }
}

/// One writer: owns `keys`, does an upsert or a delete of one of them
/// every `interval`, and retries each until it is acknowledged.
#[allow(clippy::too_many_arguments)]
async fn writer(
    pools: ShardedPool,
    keyspace: String,
    w: usize,
    keys: Vec<i64>,
    mut model: Model,
    interval: Duration,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> (Model, Vec<i64>) {
    let mut uncertain = Vec::new();
    if keys.is_empty() {
        return (model, uncertain);
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ ((w as u64 + 1) << 17);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let id = keys[(rng % keys.len() as u64) as usize];
        seq += 1;
        // One operation in ten deletes; the others insert or update.
        let value = if rng.is_multiple_of(10) { None } else { Some(format!("user-{id}-w{w}-{seq}")) };
        match write_until_acknowledged(&pools, &keyspace, id, value.as_deref(), &counters, false).await {
            Ok(()) => {
                model.insert(id, value);
            }
            Err(error) => {
                eprintln!("service: user {id}: gave up: {error}");
                model.remove(&id);
                uncertain.push(id);
            }
        }
    }
    (model, uncertain)
}

/// Upserts (`Some`) or deletes (`None`) user `id`, retrying until the
/// write is acknowledged (bounded by [`GIVE_UP_AFTER`]).
async fn write_until_acknowledged(
    pools: &ShardedPool,
    keyspace: &str,
    id: i64,
    name: Option<&str>,
    counters: &Counters,
    loading: bool,
) -> Result<(), SqlError> {
    let started = Instant::now();
    loop {
        match write(pools, keyspace, id, name).await {
            Ok(()) => {
                counters.acknowledged(started.elapsed(), loading);
                return Ok(());
            }
            Err(error) if started.elapsed() < GIVE_UP_AFTER => {
                if std::env::var_os("SAMPLE_SERVICE_VERBOSE").is_some() {
                    eprintln!("service: user {id}: {error}; retrying");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// One routed write: the shard that owns `id` now, in one transaction.
async fn write(pools: &ShardedPool, keyspace: &str, id: i64, name: Option<&str>) -> Result<(), SqlError> {
    let name = name.map(str::to_owned);
    pools
        .execute_for_key(keyspace, &(id as u64), move |mut tx, keyspace_id| {
            let name = name.clone();
            async move {
                match name {
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

/// Prints what changed in the keyspace for every installed topology (the
/// watcher's `updates()`: every epoch, in order, none skipped).
async fn log_changes(
    mut updates: tokio::sync::broadcast::Receiver<Arc<shardlib::TopologyUpdate>>,
    first: Arc<shardlib::TopologyUpdate>,
    keyspace: String,
    counters: Arc<Counters>,
) {
    let mut epoch = first.epoch;
    let mut previous = keyspace_of(&first.topology, &keyspace).ok().map(layout);
    loop {
        let update = match updates.recv().await {
            Ok(update) => update,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                println!("service: (missed {missed} topology updates in this log)");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if update.epoch <= epoch {
            continue;
        }
        epoch = update.epoch;
        counters.topology_changes.fetch_add(1, Ordering::Relaxed);
        let Ok(ks) = keyspace_of(&update.topology, &keyspace) else { continue };
        let current = layout(ks);
        if let Some(previous) = &previous {
            let changes = describe(previous, &current);
            if !changes.is_empty() {
                println!("service: epoch {epoch}: {}", changes.join("; "));
            }
        }
        previous = Some(current);
    }
}

/// A keyspace's shards and its ranges → (owner, frozen).
type Layout = (Vec<String>, BTreeMap<String, (String, bool)>);

fn layout(keyspace: &Keyspace) -> Layout {
    let mut ranges = BTreeMap::new();
    if let Partitioning::HashRange { ranges: assignments } = &keyspace.partitioning {
        for a in assignments {
            ranges.insert(a.range.to_string(), (a.shard.to_string(), a.state == RangeState::Frozen));
        }
    }
    (live_shards(keyspace), ranges)
}

/// What changed between two layouts, in words.
fn describe(old: &Layout, new: &Layout) -> Vec<String> {
    let mut changes = Vec::new();
    for shard in new.0.iter().filter(|s| !old.0.contains(s)) {
        changes.push(format!("shard {shard} added"));
    }
    let gone: Vec<&String> = old.1.keys().filter(|r| !new.1.contains_key(*r)).collect();
    let came: Vec<&String> = new.1.keys().filter(|r| !old.1.contains_key(*r)).collect();
    if !gone.is_empty() || !came.is_empty() {
        let names = |ranges: &[&String]| ranges.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" + ");
        changes.push(format!("range {} is now {}", names(&gone), names(&came)));
    }
    for (range, (owner, frozen)) in &new.1 {
        let Some((old_owner, was_frozen)) = old.1.get(range) else { continue };
        if old_owner != owner {
            changes.push(format!("{range} moved {old_owner} → {owner}"));
        }
        match (was_frozen, frozen) {
            (false, true) => changes.push(format!("{range} frozen for its cutover (writes to it wait)")),
            (true, false) => changes.push(format!("{range} writable again")),
            _ => {}
        }
    }
    changes
}

/// Rewrites the progress file until stopped.
async fn report(counters: Arc<Counters>, rows: u64, progress_file: Option<PathBuf>, stop: Arc<AtomicBool>) {
    let Some(path) = progress_file else { return };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let stopping = stop.load(Ordering::Relaxed);
        let phase = match (stopping, counters.writing.load(Ordering::Relaxed)) {
            (true, _) => "stopping",
            (false, true) => "writing",
            (false, false) => "loading",
        };
        let text = format!(
            "phase={phase}\nrows={rows}\nloaded={}\nwrites={}\nslow_writes={}\nmax_write_ms={:.0}\n",
            counters.loaded.load(Ordering::Relaxed),
            counters.writes.load(Ordering::Relaxed),
            counters.slow.load(Ordering::Relaxed),
            counters.max_ms(),
        );
        if let Err(error) = write_atomically(&path, text.as_bytes()) {
            eprintln!("service: cannot write {}: {error}", path.display());
        }
        if stopping {
            return;
        }
    }
}

fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path)
}

// ---------------------------------------------------------------------------
// verify

/// A shard's rows, as `verify` saw them.
#[derive(Serialize, Deserialize)]
struct ShardCount {
    shard: String,
    ranges: Vec<String>,
    rows: u64,
    checksum: u64,
}

/// What `verify --save` writes.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    epoch: u64,
    shards: Vec<ShardCount>,
    rows: u64,
    checksum: u64,
    problems: u64,
}

fn row_hash(id: i64, name: &str) -> u64 {
    let mut bytes = id.to_le_bytes().to_vec();
    bytes.extend_from_slice(name.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

fn model_checksum(model: &Model) -> (u64, u64) {
    model
        .iter()
        .filter_map(|(id, name)| name.as_deref().map(|name| row_hash(*id, name)))
        .fold((0, 0), |(rows, sum), hash| (rows + 1, sum.wrapping_add(hash)))
}

async fn verify(flags: &Flags) -> Result<bool> {
    let state: Option<State> = match flags.path("state") {
        Some(path) => Some(
            serde_json::from_slice(&std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let (watcher, keyspace) = watch(flags, "sample-service-verify").await?;
    let update = watcher.current();
    watcher.shutdown().await;
    let topology = Arc::clone(&update.topology);
    let ks = keyspace_of(&topology, &keyspace)?;
    let router = shardlib::Router::compile(&topology)?;
    let routes = router.keyspace(&keyspace)?;
    let owned = ranges_by_shard(ks);
    let pools = ShardedPool::new(&topology, pool_options(), Credentials::none())?;

    let mut problems = Vec::new();
    let mut seen: HashMap<i64, String> = HashMap::new();
    let mut shards = Vec::new();
    for shard in live_shards(ks) {
        let pool = pools.shard(&keyspace, &shard_id(&shard)?)?;
        let rows: Vec<(i64, String, i64)> = sqlx::query_as("SELECT id, name, keyspace_id FROM users")
            .fetch_all(pool.pool())
            .await
            .map_err(|e| pool.error(e))?;
        let mut checksum = 0u64;
        for (id, name, stored) in &rows {
            checksum = checksum.wrapping_add(row_hash(*id, name));
            let route = routes.lookup(&(*id as u64));
            if *stored != route.keyspace_id.to_sql() {
                problems.push(format!(
                    "user {id} on {shard}: keyspace_id {stored}, expected {}",
                    route.keyspace_id.to_sql()
                ));
            }
            let owner = routes.route_id(KeyspaceId::from_sql(*stored)).map_or("none", |s| s.as_str());
            if owner != shard {
                problems.push(format!("user {id} is on {shard}, but {owner} owns it"));
            }
            if let Some(other) = seen.insert(*id, shard.clone()) {
                problems.push(format!("user {id} exists twice: on {other} and on {shard}"));
            }
            if let Some(state) = &state {
                match state.rows.get(id) {
                    Some(Some(expected)) if expected == name => {}
                    Some(Some(expected)) => {
                        problems.push(format!("user {id} on {shard} is {name:?}, but {expected:?} was acknowledged"))
                    }
                    Some(None) => problems.push(format!("user {id} on {shard} was deleted (acknowledged)")),
                    None if state.uncertain.contains(id) => {}
                    None => problems.push(format!("user {id} on {shard} was never written")),
                }
            }
        }
        let mut ranges = owned.get(&shard).cloned().unwrap_or_default();
        ranges.sort();
        shards.push(ShardCount { shard, ranges, rows: rows.len() as u64, checksum });
    }
    if let Some(state) = &state {
        for (id, value) in &state.rows {
            if let Some(name) = value
                && !seen.contains_key(id)
            {
                problems.push(format!("user {id} is missing (acknowledged {name:?})"));
            }
        }
    }

    let total_rows: u64 = shards.iter().map(|s| s.rows).sum();
    let total_checksum = shards.iter().fold(0u64, |sum, s| sum.wrapping_add(s.checksum));
    let ranges_text = |s: &ShardCount| if s.ranges.is_empty() { "-".to_owned() } else { s.ranges.join(" ") };
    let total_label = format!("(epoch {})", update.epoch);
    let width = shards.iter().map(|s| ranges_text(s).len()).chain([6, total_label.len()]).max().unwrap_or(6);
    println!("  {:<6} {:<width$}  {:>8}  CHECKSUM", "SHARD", "RANGES", "ROWS");
    for s in &shards {
        println!("  {:<6} {:<width$}  {:>8}  {:016x}", s.shard, ranges_text(s), thousands(s.rows), s.checksum);
    }
    println!("  {:<6} {:<width$}  {:>8}  {:016x}", "total", total_label, thousands(total_rows), total_checksum);

    if let Some(state) = &state {
        let (expected_rows, expected_checksum) = model_checksum(&state.rows);
        println!(
            "  the service's acknowledged state: {} rows, checksum {expected_checksum:016x}",
            thousands(expected_rows)
        );
    }
    if let Some(path) = flags.path("save") {
        let snapshot = Snapshot {
            epoch: update.epoch.0,
            shards,
            rows: total_rows,
            checksum: total_checksum,
            problems: problems.len() as u64,
        };
        write_atomically(&path, &serde_json::to_vec_pretty(&snapshot)?)?;
    }
    if !problems.is_empty() {
        println!("PROBLEMS: {}", problems.len());
        for problem in problems.iter().take(20) {
            println!("  {problem}");
        }
        if problems.len() > 20 {
            println!("  … and {} more", problems.len() - 20);
        }
        return Ok(false);
    }
    match &state {
        Some(state) => println!(
            "OK: {} rows, each exactly once on its owner, all {} acknowledged writes present \
             (the last acknowledged value of every user)",
            thousands(total_rows),
            thousands(state.loaded + state.writes)
        ),
        None => println!("OK: {} rows, each exactly once, on the shard that owns it", thousands(total_rows)),
    }
    Ok(true)
}

// ---------------------------------------------------------------------------
// summary

fn read_json<T: for<'de> Deserialize<'de>>(path: &str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(serde_json::from_slice(&bytes).map_err(|e| format!("{path}: {e}"))?)
}

/// A progress file's `key=value` lines.
fn read_progress(path: Option<&str>) -> Result<HashMap<String, f64>> {
    let Some(path) = path else { return Ok(HashMap::new()) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter_map(|(key, value)| value.parse().ok().map(|value| (key.to_owned(), value)))
        .collect())
}

/// Largest over mean, over `shards` (those missing count as empty).
fn peak_to_mean(shards: &[String], rows: &HashMap<&str, u64>) -> f64 {
    let counts: Vec<u64> = shards.iter().map(|s| rows.get(s.as_str()).copied().unwrap_or(0)).collect();
    let mean = counts.iter().sum::<u64>() as f64 / counts.len().max(1) as f64;
    counts.iter().copied().max().unwrap_or(0) as f64 / mean.max(1.0)
}

fn summary(flags: &Flags) -> Result<bool> {
    let before: Snapshot = read_json(flags.required("before")?)?;
    let after: Snapshot = read_json(flags.required("after")?)?;
    let state: State = read_json(flags.required("state")?)?;
    let start = read_progress(flags.get("rebalance-start"))?;
    let end = read_progress(flags.get("rebalance-end"))?;

    let mut shards: Vec<String> = before.shards.iter().map(|s| s.shard.clone()).collect();
    for s in &after.shards {
        if !shards.contains(&s.shard) {
            shards.push(s.shard.clone());
        }
    }
    let rows_before: HashMap<&str, u64> = before.shards.iter().map(|s| (s.shard.as_str(), s.rows)).collect();
    let rows_after: HashMap<&str, u64> = after.shards.iter().map(|s| (s.shard.as_str(), s.rows)).collect();
    let ranges_after: HashMap<&str, usize> = after.shards.iter().map(|s| (s.shard.as_str(), s.ranges.len())).collect();

    println!("  {:<6} {:>8}  {:>8}  {:>7}", "SHARD", "BEFORE", "AFTER", "RANGES");
    for shard in &shards {
        println!(
            "  {:<6} {:>8}  {:>8}  {:>7}",
            shard,
            thousands(rows_before.get(shard.as_str()).copied().unwrap_or(0)),
            thousands(rows_after.get(shard.as_str()).copied().unwrap_or(0)),
            ranges_after.get(shard.as_str()).copied().unwrap_or(0)
        );
    }
    println!("  {:<6} {:>8}  {:>8}", "total", thousands(before.rows), thousands(after.rows));
    println!(
        "  largest shard / mean over {} shards: {:.2} before, {:.2} after",
        shards.len(),
        peak_to_mean(&shards, &rows_before),
        peak_to_mean(&shards, &rows_after)
    );
    let (expected_rows, expected_checksum) = model_checksum(&state.rows);
    let same = expected_rows == after.rows && expected_checksum == after.checksum;
    println!(
        "  after: {} rows, checksum {:016x}; the service's acknowledged state: {} rows, checksum {:016x} — {}",
        thousands(after.rows),
        after.checksum,
        thousands(expected_rows),
        expected_checksum,
        if same { "identical" } else { "DIFFERENT" }
    );
    let during = match (start.get("writes"), end.get("writes")) {
        (Some(a), Some(b)) => format!(", {} of them while the rebalance ran", thousands((b - a).max(0.0) as u64)),
        _ => String::new(),
    };
    let failed = match state.uncertain.len() {
        0 => "none failed".to_owned(),
        n => format!("{n} FAILED"),
    };
    println!("  writes acknowledged after the load: {}{during}; {failed}", thousands(state.writes),);
    println!(
        "  writes that waited over 50 ms: {}, the longest {:.0} ms; topology epochs the service followed live: {}",
        state.slow_writes, state.max_write_ms, state.topology_changes
    );
    let ok = same && after.problems == 0 && before.problems == 0 && state.uncertain.is_empty();
    Ok(ok)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
