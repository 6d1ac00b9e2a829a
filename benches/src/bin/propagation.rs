//! How long a topology write takes to reach the routers of many watchers.
//!
//! One writer changes a keyspace with [`TopologyStore::put_keyspace`] (one
//! range moves to another shard: a small change, one etcd transaction),
//! `--writes` times, one every `--interval-ms` so that the figures are
//! latencies and not queueing; then, if `--burst` is not 0, that many
//! writes back to back. `--watchers` [`TopologyWatcher`]s follow the store,
//! each with its own etcd connection ([`Source::Store`] of its own
//! [`EtcdStore`]). The same runs against the embedded [`LocalStore`] (one
//! store shared in-process, as shardd's embedded store is) for comparison.
//!
//! # What is measured
//!
//! Everything runs in one process, on one monotonic clock. The writer runs
//! on a thread and tokio runtime of its own (as another process would), so
//! that the watchers' work does not delay its timestamps; the watchers share
//! a multi-threaded runtime. For each write the writer takes the instant
//! just before the `put_keyspace` call and the instant it returned. For each
//! watcher, a task reads [`TopologyWatcher::updates`] and notes, per epoch:
//!
//! - `TopologyUpdate::received`: taken by the watcher when the change
//!   reached it, *before* it compiled and swapped the router (see
//!   `shardlib/src/watch/state.rs`, `Ctx::install`). A lower bound of the
//!   swap.
//! - the instant the subscriber task woke with the update. Updates are
//!   broadcast *after* the swap, so this is an upper bound of the swap (it
//!   adds the subscriber's wake-up).
//!
//! Latencies are signed: a watcher may see a change before the writer's
//! call returns (etcd sends the watch event and the write's response
//! independently; the local store notifies its watchers before it returns).
//!
//! # Usage
//!
//! ```text
//! cargo build --release -p shardkit-benches --bins
//! target/release/propagation [--stores etcd,local] [--watchers 100] [--writes 200]
//!     [--interval-ms 20] [--warmup 10] [--burst 200] [--ranges 256] [--shards 16]
//!     [--local-memory] [--csv samples.csv]
//! ```
//!
//! It starts its own etcd (`$ETCD_BIN`, else `etcd` on `$PATH`, else
//! `/usr/bin/etcd`) on free ports in a temporary directory, removed at the
//! end, and prints Markdown tables on stdout (progress on stderr). Exit
//! status: 0 done, 1 the run failed, 2 bad flags.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shardkit_benches::system::{
    FlagError, Flags, Summary, TempDir, cpu_time, load_average, machine, ms, signed_ms, uniform_keyspace,
};
use shardkit_tests::EtcdServer;
use shardlib::store::etcd::{EtcdConfig, EtcdStore};
use shardlib::store::local::LocalStore;
use shardlib::store::{Expect, Fence, TopologyStore};
use shardlib::topology::{Keyspace, Partitioning};
use shardlib::{Epoch, KeyspaceName, ShardId, Source, TopologyUpdate, TopologyWatcher, WatchOptions};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinSet;

const USAGE: &str = "usage: propagation [--stores etcd,local] [--watchers N] [--writes N] [--interval-ms MS]
                   [--warmup N] [--burst N] [--ranges N] [--shards N] [--local-memory] [--csv PATH]

  --stores       which stores to measure, comma-separated (etcd,local)
  --watchers     watchers following the store, each with its own connection (100)
  --writes       paced writes measured, after the warm-up ones (200)
  --interval-ms  time between paced writes (20)
  --warmup       paced writes made first and left out of the figures (10)
  --burst        writes back to back after the paced ones; 0: none (200)
  --ranges       ranges of the keyspace written (256)
  --shards       shards of the keyspace (16)
  --local-memory the local store in memory only, not in a file
  --csv          also write every (write, watcher) sample to PATH";

/// The cluster name in the stores.
const CLUSTER: &str = "bench";

/// The keyspace written.
const KEYSPACE: &str = "users";

/// How long every watcher may take to reach the last epoch of a phase.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The pause between the paced and the burst phase.
const BETWEEN_PHASES: Duration = Duration::from_millis(500);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The validated command line.
#[derive(Debug, Clone)]
struct Settings {
    stores: Vec<StoreKind>,
    watchers: usize,
    writes: usize,
    interval: Duration,
    warmup: usize,
    burst: usize,
    ranges: u32,
    shards: u32,
    local_memory: bool,
    csv: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Etcd,
    Local,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Etcd => "etcd",
            StoreKind::Local => "local",
        }
    }
}

impl Settings {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Settings>, FlagError> {
        let mut flags = Flags::parse(args)?;
        if flags.switch("help")? {
            return Ok(None);
        }
        let stores = flags
            .text("stores")?
            .unwrap_or_else(|| "etcd,local".to_owned())
            .split(',')
            .map(|s| match s.trim() {
                "etcd" => Ok(StoreKind::Etcd),
                "local" => Ok(StoreKind::Local),
                other => Err(FlagError(format!("--stores: unknown store {other:?} (etcd, local)"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let settings = Settings {
            stores,
            watchers: flags.value("watchers", 100)?,
            writes: flags.value("writes", 200)?,
            interval: Duration::from_millis(flags.value("interval-ms", 20)?),
            warmup: flags.value("warmup", 10)?,
            burst: flags.value("burst", 200)?,
            ranges: flags.value("ranges", 256)?,
            shards: flags.value("shards", 16)?,
            local_memory: flags.switch("local-memory")?,
            csv: flags.text("csv")?.map(Into::into),
        };
        flags.finish()?;
        if settings.watchers == 0 || settings.writes == 0 {
            return Err(FlagError("--watchers and --writes must be at least 1".to_owned()));
        }
        if settings.shards < 2 || settings.ranges == 0 {
            return Err(FlagError("--shards must be at least 2 and --ranges at least 1".to_owned()));
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
            eprintln!("propagation: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("propagation: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(settings: &Settings) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("## Propagation: topology write → router swapped in {} watchers\n", settings.watchers);
    println!("Machine: {}.\n", machine());
    println!(
        "Keyspace `{KEYSPACE}`: `hash_range`, {} ranges on {} shards; each write moves one range to another shard. \
         {} paced writes (one every {} ms, after {} warm-up writes left out){}.\n",
        settings.ranges,
        settings.shards,
        settings.writes,
        settings.interval.as_millis(),
        settings.warmup,
        if settings.burst > 0 { format!(", then {} writes back to back", settings.burst) } else { String::new() },
    );
    let mut summaries = Vec::new();
    for &kind in &settings.stores {
        eprintln!("propagation: measuring the {} store", kind.name());
        let outcome = match kind {
            StoreKind::Etcd => {
                let etcd = EtcdServer::start()?;
                eprintln!("propagation: etcd at {}", etcd.endpoint());
                let spec = StoreSpec::Etcd(Box::new(EtcdConfig::new([etcd.endpoint()], CLUSTER)));
                let outcome = measure(&runtime, settings, &spec, etcd.pid());
                drop(etcd);
                outcome?
            }
            StoreKind::Local => {
                let dir = TempDir::new("shardkit-propagation-")?;
                let store = if settings.local_memory {
                    LocalStore::in_memory(CLUSTER)?
                } else {
                    LocalStore::open(dir.path().join("topology.json"), CLUSTER)?
                };
                measure(&runtime, settings, &StoreSpec::Local(store), None)?
            }
        };
        for phase in &outcome {
            print_phase(settings, kind, phase);
        }
        summaries.extend(outcome.into_iter().map(|phase| (kind, phase)));
    }
    print_summary(settings, &summaries);
    if let Some(path) = &settings.csv {
        write_csv(path, &summaries)?;
        eprintln!("propagation: samples written to {}", path.display());
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// How to reach the store under test.
#[derive(Clone)]
enum StoreSpec {
    /// Each user connects on its own.
    Etcd(Box<EtcdConfig>),
    /// One store, shared in-process.
    Local(LocalStore),
}

impl StoreSpec {
    /// A store handle: a new etcd connection, or the shared local store.
    async fn open(&self) -> Result<Arc<dyn TopologyStore>, Error> {
        Ok(match self {
            StoreSpec::Etcd(config) => Arc::new(EtcdStore::connect((**config).clone()).await?),
            StoreSpec::Local(store) => Arc::new(store.clone()),
        })
    }
}

/// One write as the writer saw it.
#[derive(Debug, Clone, Copy)]
struct Write {
    epoch: Epoch,
    /// Just before the `put_keyspace` call.
    called: Instant,
    /// When it returned.
    returned: Instant,
}

/// One update as a watcher's subscriber saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    epoch: Epoch,
    /// `TopologyUpdate::received`: the change reached the watcher (before
    /// it compiled and swapped the router).
    received: Instant,
    /// The subscriber woke with it (after the swap).
    woke: Instant,
}

/// What one watcher's subscriber collected.
#[derive(Debug, Default)]
struct Collected {
    seen: Vec<Seen>,
    lagged: u64,
}

/// A request to the writer thread: make `count` writes, one every
/// `interval` (none: back to back).
struct Series {
    count: usize,
    interval: Duration,
    reply: mpsc::Sender<Result<Vec<Write>, String>>,
}

/// The writer: a thread with a tokio runtime (and, for etcd, a connection)
/// of its own, which owns the keyspace and writes it on request.
struct Writer {
    requests: Option<tokio::sync::mpsc::UnboundedSender<Series>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread, which creates the keyspace; returns the epoch of
    /// that first write.
    fn start(spec: StoreSpec, keyspace: Keyspace) -> Result<(Writer, Epoch), Error> {
        let (requests, mut incoming) = tokio::sync::mpsc::unbounded_channel::<Series>();
        let (ready_tx, ready) = mpsc::channel::<Result<Epoch, String>>();
        let thread = std::thread::Builder::new().name("writer".to_owned()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("writer runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut state = match WriterState::create(&spec, keyspace).await {
                    Ok(state) => state,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(state.version));
                // Waiting asynchronously keeps the runtime (and so the etcd
                // connection) running between series.
                while let Some(series) = incoming.recv().await {
                    let result = state.series(series.count, series.interval).await.map_err(|e| e.to_string());
                    let _ = series.reply.send(result);
                }
            });
        })?;
        let writer = Writer { requests: Some(requests), thread: Some(thread) };
        let epoch = ready.recv().map_err(|_| "the writer thread stopped")??;
        Ok((writer, epoch))
    }

    /// Makes `count` writes (blocks until they are done).
    fn series(&self, count: usize, interval: Duration) -> Result<Vec<Write>, Error> {
        let (reply, answer) = mpsc::channel();
        let requests = self.requests.as_ref().ok_or("the writer has stopped")?;
        requests.send(Series { count, interval, reply }).map_err(|_| "the writer thread stopped")?;
        Ok(answer.recv().map_err(|_| "the writer thread stopped")??)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread's state.
struct WriterState {
    store: Arc<dyn TopologyStore>,
    name: KeyspaceName,
    keyspace: Keyspace,
    shard_ids: Vec<ShardId>,
    /// The keyspace's version, compared by the next write.
    version: Epoch,
    /// How many writes were made: picks the next range to move.
    made: usize,
}

impl WriterState {
    async fn create(spec: &StoreSpec, keyspace: Keyspace) -> Result<WriterState, Error> {
        let store = spec.open().await?;
        let name = KeyspaceName::new(KEYSPACE)?;
        let version = store.put_keyspace(&name, &keyspace, Expect::Absent, &Fence::None).await?;
        let shard_ids = keyspace.shards.iter().map(|s| s.id.clone()).collect();
        Ok(WriterState { store, name, keyspace, shard_ids, version, made: 0 })
    }

    /// Moves the next range to the next shard, and writes the keyspace.
    async fn write(&mut self) -> Result<Write, Error> {
        let Partitioning::HashRange { ranges } = &mut self.keyspace.partitioning else {
            return Err("the keyspace is not hash_range".into());
        };
        // A stride that is prime to any power of two visits every range.
        let index = (self.made * 7919) % ranges.len();
        let owner = self.shard_ids.iter().position(|s| *s == ranges[index].shard).unwrap_or(0);
        ranges[index].shard = self.shard_ids[(owner + 1) % self.shard_ids.len()].clone();
        self.made += 1;
        let expect = Expect::Version(self.version);
        let called = Instant::now();
        let epoch = self.store.put_keyspace(&self.name, &self.keyspace, expect, &Fence::None).await?;
        let returned = Instant::now();
        self.version = epoch;
        Ok(Write { epoch, called, returned })
    }

    async fn series(&mut self, count: usize, interval: Duration) -> Result<Vec<Write>, Error> {
        let mut writes = Vec::with_capacity(count);
        let mut ticks = tokio::time::interval(interval.max(Duration::from_nanos(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..count {
            if !interval.is_zero() {
                ticks.tick().await;
            }
            writes.push(self.write().await?);
        }
        Ok(writes)
    }
}

/// The figures of one phase (paced or burst) of one store.
#[derive(Debug)]
struct Phase {
    /// `paced` or `burst`.
    kind: &'static str,
    label: String,
    writes: usize,
    /// From the first write's call to the last write's return, ms.
    writing: Option<f64>,
    /// From the first write's call to the last swap of any of its writes
    /// in any watcher, ms.
    drained: Option<f64>,
    /// `put_keyspace`: call → return.
    call: Option<Summary>,
    /// Return → the change reached the watcher (before the swap).
    received: Option<Summary>,
    /// Return → the subscriber woke with the update (after the swap).
    swapped: Option<Summary>,
    /// Call → the subscriber woke.
    swapped_from_call: Option<Summary>,
    /// Per write: return → the last watcher's subscriber woke.
    last_watcher: Option<Summary>,
    /// Every sample, per write.
    rows: Vec<Row>,
    /// (write, watcher) pairs whose epoch the watcher never installed.
    missing: usize,
    /// (write, watcher) pairs whose epoch was skipped for a newer one.
    coalesced: usize,
    lagged: u64,
    watchers: usize,
    /// CPU time per write of this process (watchers, subscribers, writer)
    /// and of etcd, in ms, from the first write to the last swap.
    cpu_ours: Option<f64>,
    cpu_etcd: Option<f64>,
    /// The load averages before and after the phase.
    load: (String, String),
}

/// The samples of one write, for `--csv`.
#[derive(Debug)]
struct Row {
    epoch: Epoch,
    /// `put_keyspace`: call → return, ms.
    call: f64,
    /// Per watcher: return → received and return → swapped, ms (NaN when
    /// the watcher never installed the epoch).
    watchers: Vec<(f64, f64)>,
}

/// CPU time and load average at the start of a phase.
struct Mark {
    ours: Option<Duration>,
    etcd: Option<Duration>,
    load: String,
}

impl Mark {
    fn now(etcd: Option<u32>) -> Mark {
        Mark {
            ours: cpu_time(None),
            etcd: etcd.and_then(|pid| cpu_time(Some(pid))),
            load: load_average().unwrap_or_default(),
        }
    }

    /// Fills in the phase's CPU time per write and load averages, from
    /// this mark to `end`.
    fn close_at(self, end: Mark, mut phase: Phase) -> Phase {
        let per_write = |from: Option<Duration>, to: Option<Duration>| {
            Some(ms(to?.checked_sub(from?)?) / phase.writes.max(1) as f64)
        };
        phase.cpu_ours = per_write(self.ours, end.ours);
        phase.cpu_etcd = per_write(self.etcd, end.etcd);
        phase.load = (self.load, end.load);
        phase
    }
}

/// Runs both phases against one store.
fn measure(
    runtime: &tokio::runtime::Runtime,
    settings: &Settings,
    spec: &StoreSpec,
    etcd: Option<u32>,
) -> Result<Vec<Phase>, Error> {
    let (writer, first) = Writer::start(spec.clone(), uniform_keyspace(settings.ranges, settings.shards)?)?;
    eprintln!("propagation: keyspace written at epoch {first}; starting {} watchers", settings.watchers);
    let watchers = runtime.block_on(start_watchers(spec, settings.watchers))?;
    let subscribers: Vec<_> = watchers.iter().map(|w| runtime.spawn(collect(w.updates()))).collect();
    runtime.block_on(settle(&watchers, first))?;

    eprintln!("propagation: {} paced writes", settings.warmup + settings.writes);
    // Warm-up writes: measured like the others, left out of the figures.
    writer.series(settings.warmup, settings.interval)?;
    let paced_mark = Mark::now(etcd);
    let paced = writer.series(settings.writes, settings.interval)?;
    runtime.block_on(settle(&watchers, paced.last().map_or(first, |w| w.epoch)))?;
    let paced_end = Mark::now(etcd);
    let mut bursts = Vec::new();
    let mut burst_mark = None;
    if settings.burst > 0 {
        std::thread::sleep(BETWEEN_PHASES);
        eprintln!("propagation: {} writes back to back", settings.burst);
        burst_mark = Some(Mark::now(etcd));
        bursts = writer.series(settings.burst, Duration::ZERO)?;
        runtime.block_on(settle(&watchers, bursts.last().map_or(first, |w| w.epoch)))?;
    }
    let burst_end = Mark::now(etcd);
    drop(writer);

    let collected: Vec<Collected> = runtime.block_on(async {
        for watcher in watchers {
            watcher.shutdown().await;
        }
        let mut all = Vec::with_capacity(subscribers.len());
        for subscriber in subscribers {
            all.push(subscriber.await.unwrap_or_default());
        }
        all
    });
    let paced_label = format!("paced, one write every {} ms", settings.interval.as_millis());
    let mut phases = vec![paced_mark.close_at(paced_end, analyse("paced", paced_label, &paced, &collected))];
    if let Some(mark) = burst_mark {
        let label = format!("burst of {} writes back to back", bursts.len());
        phases.push(mark.close_at(burst_end, analyse("burst", label, &bursts, &collected)));
    }
    Ok(phases)
}

/// Starts `count` watchers, each on its own store handle, concurrently.
async fn start_watchers(spec: &StoreSpec, count: usize) -> Result<Vec<TopologyWatcher>, Error> {
    let mut starting = JoinSet::new();
    for i in 0..count {
        let spec = spec.clone();
        starting.spawn(async move {
            let store = spec.open().await?;
            let options = WatchOptions::named(format!("bench-{i:03}"));
            let watcher = TopologyWatcher::start(Source::Store(store), options).await?;
            Ok::<_, Error>((i, watcher))
        });
    }
    let mut watchers: Vec<Option<TopologyWatcher>> = (0..count).map(|_| None).collect();
    while let Some(started) = starting.join_next().await {
        let (i, watcher) = started??;
        watchers[i] = Some(watcher);
    }
    Ok(watchers.into_iter().flatten().collect())
}

/// Waits until every watcher has installed `epoch`.
async fn settle(watchers: &[TopologyWatcher], epoch: Epoch) -> Result<(), Error> {
    for watcher in watchers {
        watcher.wait_for_epoch(epoch, SETTLE_TIMEOUT).await?;
    }
    Ok(())
}

/// Notes every update of one watcher until it stops.
async fn collect(mut updates: broadcast::Receiver<Arc<TopologyUpdate>>) -> Collected {
    let mut collected = Collected::default();
    loop {
        match updates.recv().await {
            Ok(update) => {
                let woke = Instant::now();
                collected.seen.push(Seen { epoch: update.epoch, received: update.received, woke });
            }
            Err(RecvError::Lagged(n)) => collected.lagged += n,
            Err(RecvError::Closed) => return collected,
        }
    }
}

fn analyse(kind: &'static str, label: String, writes: &[Write], collected: &[Collected]) -> Phase {
    let mut received = Vec::with_capacity(writes.len() * collected.len());
    let mut swapped = Vec::with_capacity(writes.len() * collected.len());
    let mut swapped_from_call = Vec::with_capacity(writes.len() * collected.len());
    let mut last_watcher = Vec::with_capacity(writes.len());
    let (mut missing, mut coalesced) = (0, 0);
    let mut rows = Vec::with_capacity(writes.len());
    let mut latest = None::<Instant>;
    for write in writes {
        let mut last = None::<f64>;
        let mut row = Vec::with_capacity(collected.len());
        for watcher in collected {
            let at = watcher.seen.partition_point(|s| s.epoch < write.epoch);
            let Some(seen) = watcher.seen.get(at) else {
                missing += 1;
                row.push((f64::NAN, f64::NAN));
                continue;
            };
            if seen.epoch != write.epoch {
                coalesced += 1;
            }
            let after_return = signed_ms(seen.woke, write.returned);
            received.push(signed_ms(seen.received, write.returned));
            swapped.push(after_return);
            swapped_from_call.push(signed_ms(seen.woke, write.called));
            row.push((signed_ms(seen.received, write.returned), after_return));
            last = Some(last.map_or(after_return, |l| l.max(after_return)));
            latest = Some(latest.map_or(seen.woke, |l| l.max(seen.woke)));
        }
        last_watcher.extend(last);
        rows.push(Row { epoch: write.epoch, call: signed_ms(write.returned, write.called), watchers: row });
    }
    let mut calls: Vec<f64> = writes.iter().map(|w| signed_ms(w.returned, w.called)).collect();
    let (first, last) = (writes.first(), writes.last());
    let writing = first.zip(last).map(|(first, last)| signed_ms(last.returned, first.called));
    let drained = first.zip(latest).map(|(first, latest)| signed_ms(latest, first.called));
    Phase {
        writing,
        drained,
        kind,
        label,
        writes: writes.len(),
        call: Summary::of(&mut calls),
        received: Summary::of(&mut received),
        swapped: Summary::of(&mut swapped),
        swapped_from_call: Summary::of(&mut swapped_from_call),
        last_watcher: Summary::of(&mut last_watcher),
        rows,
        missing,
        coalesced,
        lagged: collected.iter().map(|c| c.lagged).sum(),
        watchers: collected.len(),
        cpu_ours: None,
        cpu_etcd: None,
        load: Default::default(),
    }
}

/// The p99 propagation target (return → router swapped), in ms.
const TARGET_P99_MS: f64 = 20.0;

fn print_phase(settings: &Settings, kind: StoreKind, phase: &Phase) {
    let store = match (kind, settings.local_memory) {
        (StoreKind::Etcd, _) => "etcd (one connection per watcher)".to_owned(),
        (StoreKind::Local, false) => "local store (file, shared in-process)".to_owned(),
        (StoreKind::Local, true) => "local store (in memory, shared in-process)".to_owned(),
    };
    println!("### {store}: {}, {} watchers, {} writes\n", phase.label, phase.watchers, phase.writes);
    println!("| interval | samples | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    let rows = [
        ("`put_keyspace`: call → return", &phase.call),
        ("return → change reached the watcher (before compile and swap)", &phase.received),
        ("**return → router swapped** (subscriber woke)", &phase.swapped),
        ("call → router swapped (subscriber woke)", &phase.swapped_from_call),
        ("return → router swapped in the *last* watcher, per write", &phase.last_watcher),
    ];
    for (name, summary) in rows {
        match summary {
            Some(s) => println!("| {name} | {} | {:.2} | {:.2} | {:.2} |", s.count, s.p50, s.p99, s.max),
            None => println!("| {name} | 0 | – | – | – |"),
        }
    }
    println!(
        "\nMissing (write, watcher) pairs: {}; coalesced into a newer epoch: {}; lagged updates: {}.",
        phase.missing, phase.coalesced, phase.lagged
    );
    if let (Some(writing), Some(drained)) = (phase.writing, phase.drained) {
        print!(
            "The writes took {writing:.0} ms from the first call to the last return; every watcher had swapped \
             in the last of them {drained:.0} ms after the first call"
        );
        if phase.kind == "burst" {
            let updates = (phase.writes * phase.watchers - phase.missing) as f64;
            print!(" ({:.0} router updates per second over all watchers)", updates / (drained / 1e3));
        }
        println!(".");
    }
    let cpu = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1} ms"));
    println!(
        "CPU time per write: this process (the {} watchers, their subscribers, the writer) {}, etcd {}. \
         Load average before {}, after {}.\n",
        phase.watchers,
        cpu(phase.cpu_ours),
        cpu(phase.cpu_etcd),
        phase.load.0,
        phase.load.1
    );
}

fn print_summary(settings: &Settings, phases: &[(StoreKind, Phase)]) {
    println!("### Summary: return → router swapped, all (write, watcher) pairs\n");
    println!("| store | writes | watchers | p50 ms | p99 ms | last watcher p99 ms | target p99 ≤ {TARGET_P99_MS} ms |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for (kind, phase) in phases {
        let store = match (kind, settings.local_memory) {
            (StoreKind::Etcd, _) => "etcd",
            (StoreKind::Local, false) => "local (file)",
            (StoreKind::Local, true) => "local (memory)",
        };
        let (p50, p99) = phase.swapped.map_or((f64::NAN, f64::NAN), |s| (s.p50, s.p99));
        let last = phase.last_watcher.map_or(f64::NAN, |s| s.p99);
        let paced = phase.kind == "paced";
        let verdict = match (paced, p99 <= TARGET_P99_MS) {
            (false, _) => "n/a (queueing)",
            (true, true) => "met",
            (true, false) => "missed",
        };
        println!("| {store} | {} | {} | {p50:.2} | {p99:.2} | {last:.2} | {verdict} |", phase.label, phase.watchers);
    }
    println!();
}

/// Writes every sample: one line per (write, watcher).
fn write_csv(path: &std::path::Path, phases: &[(StoreKind, Phase)]) -> Result<(), Error> {
    use std::fmt::Write as _;
    let mut out = String::from("store,phase,write,epoch,call_ms,watcher,received_ms,swapped_ms\n");
    for (kind, phase) in phases {
        for (write, Row { epoch, call, watchers }) in phase.rows.iter().enumerate() {
            for (watcher, (received, swapped)) in watchers.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{},{},{write},{epoch},{call:.4},{watcher},{received:.4},{swapped:.4}",
                    kind.name(),
                    phase.kind
                );
            }
        }
    }
    std::fs::write(path, out)?;
    Ok(())
}
