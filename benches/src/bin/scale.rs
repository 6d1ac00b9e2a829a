//! A keyspace of a million hash ranges in etcd: how long it takes to store,
//! to load and to compile, and how much memory that takes.
//!
//! The program starts its own etcd (the `shardkit-tests` fixture: free
//! ports, a temporary directory removed at the end) and then:
//!
//! 1. **Store**: builds a `hash_range` keyspace of `--ranges` equal ranges
//!    over `--shards` shards (range `i` on shard `i % shards`, so that every
//!    chunk names many owners, as after many moves) and writes it with
//!    [`TopologyStore::put_keyspace`] into the empty store: validation,
//!    chunking, the chunk transactions and the final flip of the meta
//!    document.
//! 2. **Load + compile**, `--loads` times, each in a *fresh process* (this
//!    program run again with `--load-from`), so that the figures hold no
//!    cache and no memory of the store step: connect a new [`EtcdStore`],
//!    take a [`TopologyStore::snapshot`], [`Router::compile`] it, and check
//!    the router against the keyspace. The child reads its `VmRSS` and
//!    `VmHWM` (`/proc/self/status`) after each step.
//! 3. **Where the time goes**, in the same child, after the figures above
//!    were taken: the raw etcd range reads of the chunks (same page size as
//!    the store), a second snapshot, [`RangeMap::new`] alone, and a clone of
//!    the topology (what a watch event costs).
//!
//! # Usage
//!
//! ```text
//! cargo build --release -p shardkit-benches --bins
//! target/release/scale [--ranges 1000000] [--shards 64] [--loads 3]
//! ```
//!
//! Markdown tables go to stdout, progress to stderr. Exit status: 0 done,
//! 1 the run failed, 2 bad flags.

use std::collections::BTreeMap;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use shardkit_benches::system::{
    FlagError, Flags, Memory, load_average, machine, median, mib, ms, shard_ids, uniform_keyspace,
};
use shardkit_tests::EtcdServer;
use shardlib::store::etcd::etcd_client::GetOptions;
use shardlib::store::etcd::{EtcdConfig, EtcdStore};
use shardlib::store::{Expect, Fence, TopologyStore};
use shardlib::topology::Partitioning;
use shardlib::{KeyRange, KeyspaceId, KeyspaceName, RangeMap, Router, Topology};

const USAGE: &str = "usage: scale [--ranges N] [--shards N] [--loads N]

  --ranges  hash ranges of the keyspace (1000000)
  --shards  shards they are spread over (64)
  --loads   load+compile runs, each in a fresh process (3)";

/// The cluster name in etcd.
const CLUSTER: &str = "bench";

/// The keyspace stored.
const KEYSPACE: &str = "users";

/// Chunks per etcd read, as the store reads them (`read::CHUNK_PAGE`).
const CHUNK_PAGE: i64 = 8;

/// The targets: load + compile time and resident memory after it.
const TARGET_LOAD_COMPILE: Duration = Duration::from_secs(1);
const TARGET_RSS_MIB: f64 = 200.0;

/// The marker of the line a load child reports on.
const RESULT: &str = "RESULT";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What the program was asked to do.
enum Mode {
    /// The whole benchmark.
    Run { ranges: u32, shards: u32, loads: usize },
    /// One load + compile of a stored keyspace, in this fresh process.
    Load { endpoint: String, ranges: u32, shards: u32 },
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Mode>, FlagError> {
    let mut flags = Flags::parse(args)?;
    if flags.switch("help")? {
        return Ok(None);
    }
    let ranges = flags.value("ranges", 1_000_000u32)?;
    let shards = flags.value("shards", 64u32)?;
    let mode = match flags.text("load-from")? {
        Some(endpoint) => Mode::Load { endpoint, ranges, shards },
        None => Mode::Run { ranges, shards, loads: flags.value("loads", 3)? },
    };
    flags.finish()?;
    if ranges == 0 || shards == 0 {
        return Err(FlagError("--ranges and --shards must be at least 1".to_owned()));
    }
    Ok(Some(mode))
}

fn main() -> ExitCode {
    let mode = match parse(std::env::args().skip(1)) {
        Ok(Some(mode)) => mode,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("scale: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match mode {
        Mode::Run { ranges, shards, loads } => run(ranges, shards, loads),
        Mode::Load { endpoint, ranges, shards } => load_child(&endpoint, ranges, shards),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
            ExitCode::from(1)
        }
    }
}

/// Times `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let value = f();
    (value, started.elapsed())
}

/// Memory now, as `(rss, hwm)` in MiB (NaN where unknown).
fn memory() -> (f64, f64) {
    Memory::now().map_or((f64::NAN, f64::NAN), |m| (mib(m.rss_kib), mib(m.hwm_kib)))
}

fn run(ranges: u32, shards: u32, loads: usize) -> Result<(), Error> {
    println!("## Scale: a keyspace of {ranges} hash ranges over {shards} shards in etcd\n");
    println!("Machine: {}. Load average at start: {}.\n", machine(), load_average().unwrap_or_default());
    let etcd = EtcdServer::start()?;
    eprintln!("scale: etcd at {}", etcd.endpoint());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let name = KeyspaceName::new(KEYSPACE)?;

    let start_memory = memory();
    let (keyspace, build) = timed(|| uniform_keyspace(ranges, shards));
    let keyspace = keyspace?;
    let built_memory = memory();
    let mut topology = Topology::new(CLUSTER);
    topology.keyspaces.insert(name.clone(), keyspace);
    let (validated, validate) = timed(|| topology.validate());
    validated?;
    let keyspace = topology.keyspaces.remove(&name).ok_or("the keyspace went missing")?;

    eprintln!("scale: storing {ranges} ranges");
    let stored = runtime.block_on(async {
        let store = EtcdStore::connect(EtcdConfig::new([etcd.endpoint()], CLUSTER)).await?;
        let started = Instant::now();
        let epoch = store.put_keyspace(&name, &keyspace, Expect::Absent, &Fence::None).await?;
        let took = started.elapsed();
        let stats = store.write_stats();
        let status = store.client().status().await?;
        Ok::<_, Error>((epoch, took, stats, status.db_size()))
    })?;
    let (epoch, store_time, stats, db_size) = stored;
    let stored_memory = memory();
    drop(keyspace);

    println!("### Store (one `put_keyspace` into an empty etcd, in this process)\n");
    println!("| step | time | VmRSS after | VmHWM after |");
    println!("|---|---:|---:|---:|");
    println!("| process start (runtime, etcd fixture) | – | {:.0} MiB | {:.0} MiB |", start_memory.0, start_memory.1);
    println!(
        "| build the keyspace in memory | {:.0} ms | {:.0} MiB | {:.0} MiB |",
        ms(build),
        built_memory.0,
        built_memory.1
    );
    println!("| `Topology::validate` (alone, for reference) | {:.0} ms | – | – |", ms(validate));
    println!(
        "| **`put_keyspace`** (validate, chunk, write, flip) | **{:.0} ms** | {:.0} MiB | {:.0} MiB |",
        ms(store_time),
        stored_memory.0,
        stored_memory.1
    );
    println!(
        "\nWritten at epoch {epoch} in {stats:?}; etcd's database is {:.1} MiB after the write.\n",
        db_size as f64 / (1024.0 * 1024.0)
    );

    let mut results = Vec::with_capacity(loads);
    for i in 0..loads {
        eprintln!("scale: load + compile {} of {loads}, in a fresh process", i + 1);
        results.push(spawn_load(&etcd.endpoint(), ranges, shards)?);
    }
    print_loads(&results);
    drop(runtime);
    drop(etcd);
    Ok(())
}

/// Runs one load child and reads its result line.
fn spawn_load(endpoint: &str, ranges: u32, shards: u32) -> Result<BTreeMap<String, f64>, Error> {
    let exe = std::env::current_exe()?;
    let output = Command::new(exe)
        .args(["--load-from", endpoint, "--ranges", &ranges.to_string(), "--shards", &shards.to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!("the load process failed ({})", output.status).into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix(RESULT)).ok_or("the load process reported nothing")?;
    line.split_whitespace()
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("bad result field {pair:?}"))?;
            Ok((key.to_owned(), value.parse::<f64>().map_err(|e| format!("bad result field {pair:?}: {e}"))?))
        })
        .collect()
}

fn print_loads(results: &[BTreeMap<String, f64>]) {
    let column = |key: &str| -> Vec<f64> { results.iter().map(|r| r.get(key).copied().unwrap_or(f64::NAN)).collect() };
    let cells = |key: &str, precision: usize| -> String {
        let values = column(key);
        let each: Vec<String> = values.iter().map(|v| format!("{v:.precision$}")).collect();
        let median = median(&values).map_or("–".to_owned(), |m| format!("{m:.precision$}"));
        format!("{} | **{median}**", each.join(" | "))
    };
    let runs: Vec<String> = (1..=results.len()).map(|i| format!("run {i}")).collect();
    let header = format!("| measure | {} | median |", runs.join(" | "));
    let rule = format!("|---|{}---:|", "---:|".repeat(results.len()));

    println!("### Load + compile, each run in a fresh process\n");
    println!("{header}\n{rule}");
    let rows = [
        ("connect (`EtcdStore::connect`), ms", "connect_ms", 1),
        ("**load**: `snapshot()`, ms", "snapshot_ms", 0),
        ("**compile**: `Router::compile`, ms", "compile_ms", 0),
        ("**load + compile**, ms", "load_compile_ms", 0),
        ("VmRSS after connect, MiB", "rss_connected", 0),
        ("VmRSS after load, MiB", "rss_loaded", 0),
        ("**VmRSS after load + compile**, MiB", "rss_compiled", 0),
        ("**VmHWM after load + compile** (peak), MiB", "hwm_compiled", 0),
        ("VmRSS with the router only (snapshot dropped), MiB", "rss_router_only", 0),
    ];
    for (name, key, precision) in rows {
        println!("| {name} | {} |", cells(key, precision));
    }

    println!("\n### Where the load's time goes (same processes, measured after the figures above)\n");
    println!("{header}\n{rule}");
    let rows = [
        ("etcd range reads of the chunks alone (8 per request, as `snapshot`), ms", "raw_read_ms", 0),
        ("… bytes read, MiB", "raw_read_mib", 1),
        ("… requests", "raw_read_requests", 0),
        ("a second `snapshot()` on a new connection, ms", "snapshot2_ms", 0),
        ("`snapshot()` minus raw reads (decode, assemble, build the topology), ms", "decode_ms", 0),
        ("`RangeMap::new` alone (sort check + radix index), ms", "range_map_ms", 0),
        ("`Router::compile` minus `RangeMap::new` (owner lookup, validation), ms", "compile_rest_ms", 0),
        ("clone of the loaded topology (what each watch event costs), ms", "clone_ms", 0),
    ];
    for (name, key, precision) in rows {
        println!("| {name} | {} |", cells(key, precision));
    }

    let load_compile = median(&column("load_compile_ms")).unwrap_or(f64::NAN);
    let rss = median(&column("rss_compiled")).unwrap_or(f64::NAN);
    let hwm = median(&column("hwm_compiled")).unwrap_or(f64::NAN);
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    println!("\n### Targets\n");
    println!("| target | measured (median) | |");
    println!("|---|---:|---|");
    println!(
        "| load + compile < {} ms | {load_compile:.0} ms | {} |",
        TARGET_LOAD_COMPILE.as_millis(),
        verdict(load_compile < ms(TARGET_LOAD_COMPILE))
    );
    println!(
        "| resident < {TARGET_RSS_MIB} MiB after load + compile | {rss:.0} MiB | {} |",
        verdict(rss < TARGET_RSS_MIB)
    );
    println!(
        "| peak (VmHWM) < {TARGET_RSS_MIB} MiB during load + compile | {hwm:.0} MiB | {} |",
        verdict(hwm < TARGET_RSS_MIB)
    );
    println!("\nLoad average at the end: {}.\n", load_average().unwrap_or_default());
}

/// One load + compile in this fresh process; prints the result line.
fn load_child(endpoint: &str, ranges: u32, shards: u32) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut out = BTreeMap::<&str, f64>::new();
    let config = EtcdConfig::new([endpoint.to_owned()], CLUSTER);

    let (store, connect) = timed(|| runtime.block_on(EtcdStore::connect(config.clone())));
    let store = store?;
    out.insert("connect_ms", ms(connect));
    out.insert("rss_connected", memory().0);

    let (snapshot, load) = timed(|| runtime.block_on(store.snapshot()));
    let snapshot = snapshot?;
    out.insert("snapshot_ms", ms(load));
    out.insert("rss_loaded", memory().0);

    let (router, compile) = timed(|| Router::compile(&snapshot.topology));
    let router = router?;
    out.insert("compile_ms", ms(compile));
    out.insert("load_compile_ms", ms(load + compile));
    let (rss, hwm) = memory();
    out.insert("rss_compiled", rss);
    out.insert("hwm_compiled", hwm);

    check(&snapshot.topology, &router, ranges, shards)?;
    drop(store);

    // The breakdown. The peak above is taken; what follows may raise it.
    let keyspace = snapshot.topology.keyspace(KEYSPACE)?;
    let Partitioning::HashRange { ranges: assignments } = &keyspace.partitioning else {
        return Err("the keyspace is not hash_range".into());
    };
    let pairs: Vec<(KeyRange, u32)> = assignments.iter().enumerate().map(|(i, a)| (a.range, i as u32)).collect();
    let (cloned, clone) = timed(|| (*snapshot.topology).clone());
    out.insert("clone_ms", ms(clone));
    drop(cloned);
    let (map, range_map) = timed(|| RangeMap::new(pairs));
    drop(map?);
    out.insert("range_map_ms", ms(range_map));
    out.insert("compile_rest_ms", ms(compile) - ms(range_map));
    // What a service keeps: the router alone (freed memory that the
    // allocator keeps for reuse still counts as resident).
    drop(snapshot);
    out.insert("rss_router_only", memory().0);

    let (raw, raw_time) = timed(|| runtime.block_on(raw_read(endpoint)));
    let (bytes, requests) = raw?;
    out.insert("raw_read_ms", ms(raw_time));
    out.insert("raw_read_mib", bytes as f64 / (1024.0 * 1024.0));
    out.insert("raw_read_requests", requests as f64);
    out.insert("decode_ms", ms(load) - ms(raw_time));

    let second = runtime.block_on(async {
        let store = EtcdStore::connect(config).await?;
        let started = Instant::now();
        let snapshot = store.snapshot().await?;
        Ok::<_, Error>((started.elapsed(), snapshot))
    });
    let (second, snapshot) = second?;
    out.insert("snapshot2_ms", ms(second));
    drop(snapshot);
    drop(router);

    let fields: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v:.3}")).collect();
    println!("{RESULT} {}", fields.join(" "));
    Ok(())
}

/// Checks the loaded topology and its router: the number of ranges, and
/// the owner of every 997th range's start.
fn check(topology: &Topology, router: &Router, ranges: u32, shards: u32) -> Result<(), Error> {
    let keyspace = topology.keyspace(KEYSPACE)?;
    let Partitioning::HashRange { ranges: loaded } = &keyspace.partitioning else {
        return Err("the loaded keyspace is not hash_range".into());
    };
    if loaded.len() != ranges as usize {
        return Err(format!("loaded {} ranges, stored {ranges}", loaded.len()).into());
    }
    let ids = shard_ids(shards)?;
    let compiled = router.keyspace(KEYSPACE)?;
    for (i, range) in KeyRange::uniform(ranges).iter().enumerate().step_by(997) {
        let owner = compiled.route_id(KeyspaceId(range.start()));
        if owner != Some(&ids[i % ids.len()]) {
            return Err(format!("range {range} routes to {owner:?}, stored on {}", ids[i % ids.len()]).into());
        }
    }
    Ok(())
}

/// Reads every chunk of the keyspace with the plain etcd client, page by
/// page at one revision as the store does; returns the bytes and requests.
async fn raw_read(endpoint: &str) -> Result<(usize, usize), Error> {
    let mut client = shardlib::store::etcd::etcd_client::Client::connect([endpoint], None).await?;
    let prefix = format!("/{CLUSTER}/ranges/{KEYSPACE}/");
    let mut end = prefix.clone().into_bytes();
    *end.last_mut().ok_or("empty prefix")? += 1;
    let (mut bytes, mut requests, mut revision) = (0, 0, 0);
    let mut from = prefix.into_bytes();
    loop {
        let options = GetOptions::new().with_range(end.clone()).with_limit(CHUNK_PAGE).with_revision(revision);
        let response = client.get(from.clone(), Some(options)).await?;
        requests += 1;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        for kv in response.kvs() {
            bytes += kv.key().len() + kv.value().len();
        }
        let Some(last) = response.kvs().last() else { break };
        if !response.more() {
            break;
        }
        from = last.key().to_vec();
        from.push(0);
    }
    Ok((bytes, requests))
}
