//! The topology watcher against real sources: the embedded `LocalStore`,
//! etcd servers and clusters started by the fixtures, and shardd run
//! in-process (its `/v1/watch` event stream).
//!
//! Every wait is bounded (60 s, for a loaded 2-core machine) and polls a
//! condition or waits on the watcher itself (`wait_for_epoch`, the update
//! stream); nothing sleeps to synchronise.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardkit_tests::{EtcdCluster, EtcdServer};
use shardlib::store::etcd::etcd_client::CompactionOptions;
use shardlib::store::etcd::{EtcdConfig, EtcdStore};
use shardlib::store::local::LocalStore;
use shardlib::store::{Change, Expect, Fence, StoreError, TopologyStore};
use shardlib::topology::Keyspace;
use shardlib::watch::{Source, TopologyUpdate, TopologyWatcher, UpdateKind, WatchError, WatchOptions};
use shardlib::{Epoch, KeyspaceName, Topology};
use tokio::sync::broadcast;

type TestResult = Result<(), Box<dyn Error>>;

/// The bound of every wait.
const DEADLINE: Duration = Duration::from_secs(60);

/// The cluster name in every store.
const CLUSTER: &str = "t11";

fn users() -> KeyspaceName {
    KeyspaceName::new("users").unwrap()
}

/// How many shards version `v` of `users` has.
fn shards_of(v: u64) -> usize {
    1 + (v % 4) as usize
}

/// Version `v` of keyspace `users`: [`shards_of`]`(v)` shards with jump
/// hashing and seed `v`, so that every version differs from the previous one.
fn keyspace(v: u64) -> Keyspace {
    let shards: Vec<String> =
        (0..shards_of(v)).map(|i| format!("{{ id = \"s{i}\", primary = \"postgres://db{i}/users\" }}")).collect();
    let text = format!(
        "cluster = \"{CLUSTER}\"\n[keyspaces.users]\nseed = {v}\nshards = [{}]\npartitioning = {{ algorithm = \"jump\" }}\n",
        shards.join(", ")
    );
    Topology::from_toml(&text).unwrap().keyspaces.remove("users").unwrap()
}

/// Writes version `v` of `users`, retrying while the store fails (a client
/// that just saw its server restart, a cluster electing a new leader), for
/// at most [`DEADLINE`].
async fn put(store: &dyn TopologyStore, v: u64) -> Epoch {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match store.put_keyspace(&users(), &keyspace(v), Expect::Any, &Fence::None).await {
            Ok(epoch) => return epoch,
            Err(e) if Instant::now() < deadline && !matches!(e, StoreError::Invalid(_)) => {
                eprintln!("writing version {v} of users failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("writing version {v} of users: {e}"),
        }
    }
}

/// Writes versions `from..to`; returns their epochs.
async fn put_series(store: &dyn TopologyStore, versions: std::ops::Range<u64>) -> Vec<Epoch> {
    let mut epochs = Vec::new();
    for v in versions {
        epochs.push(put(store, v).await);
    }
    epochs
}

/// Polls `condition` every 20 ms until it holds, for at most [`DEADLINE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {DEADLINE:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next `n` updates of a receiver, each within [`DEADLINE`].
async fn next_updates(rx: &mut broadcast::Receiver<Arc<TopologyUpdate>>, n: usize) -> Vec<Arc<TopologyUpdate>> {
    let mut updates = Vec::with_capacity(n);
    for i in 0..n {
        let update = tokio::time::timeout(DEADLINE, rx.recv()).await;
        let update = update.unwrap_or_else(|_| panic!("timed out waiting for update {} of {n}", i + 1));
        updates.push(update.expect("the update stream failed"));
    }
    updates
}

/// Asserts that `updates` are the watch events of `epochs`, in order.
fn assert_changes_at(updates: &[Arc<TopologyUpdate>], epochs: &[Epoch]) {
    let seen: Vec<(Epoch, UpdateKind)> = updates.iter().map(|u| (u.epoch, u.kind)).collect();
    let expected: Vec<(Epoch, UpdateKind)> = epochs.iter().map(|e| (*e, UpdateKind::Change)).collect();
    assert_eq!(seen, expected);
    for update in updates {
        assert_eq!(update.changes, vec![Change::KeyspaceUpdated(users())], "at epoch {}", update.epoch);
    }
}

/// The number of shards of `users` that the watcher routes to.
fn routed_shards(watcher: &TopologyWatcher) -> usize {
    watcher.router().load().keyspace("users").unwrap().shards().len()
}

fn options(name: &str) -> WatchOptions {
    WatchOptions { initial_load_timeout: DEADLINE, ..WatchOptions::named(name) }
}

async fn etcd_store(endpoints: Vec<String>) -> Result<EtcdStore, StoreError> {
    EtcdStore::connect(EtcdConfig::new(endpoints, CLUSTER)).await
}

/// Starts a fixture server without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A watcher on `store` sees each of 20 writes, in order, as one update.
async fn sees_every_version(watcher_store: Arc<dyn TopologyStore>, writer: &dyn TopologyStore) -> TestResult {
    let first = put(writer, 0).await;
    let watcher = TopologyWatcher::start(Source::Store(watcher_store), options("every-version")).await?;
    assert!(watcher.epoch() >= first);
    assert_eq!(watcher.current().kind, UpdateKind::Initial);
    assert_eq!(watcher.current().changes, vec![Change::KeyspaceCreated(users())]);
    assert!(watcher.is_connected() && watcher.staleness().is_none());

    let mut updates = watcher.updates();
    let epochs = put_series(writer, 1..21).await;
    watcher.wait_for_epoch(*epochs.last().unwrap(), DEADLINE).await?;
    assert_changes_at(&next_updates(&mut updates, epochs.len()).await, &epochs);
    assert!(updates.try_recv().is_err(), "no update beyond the writes");
    assert_eq!(routed_shards(&watcher), shards_of(20));
    let update = watcher.current();
    assert!(update.received_at <= std::time::SystemTime::now());
    assert_eq!(update.topology.keyspace("users")?.seed, 20);
    watcher.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_watcher_sees_every_version_in_order() -> TestResult {
    let store = Arc::new(LocalStore::in_memory(CLUSTER)?);
    sees_every_version(store.clone(), &*store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watcher_sees_every_version_in_order() -> TestResult {
    let etcd = blocking(EtcdServer::start)?;
    let writer = etcd_store(vec![etcd.endpoint()]).await?;
    let watched = etcd_store(vec![etcd.endpoint()]).await?;
    sees_every_version(Arc::new(watched), &writer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_survives_an_etcd_outage_and_staleness_resets() -> TestResult {
    let mut etcd = blocking(EtcdServer::start)?;
    let writer = etcd_store(vec![etcd.endpoint()]).await?;
    let first = put(&writer, 1).await;
    let watched = etcd_store(vec![etcd.endpoint()]).await?;
    let watcher = TopologyWatcher::start(Source::store(watched), options("outage")).await?;
    watcher.wait_for_epoch(first, DEADLINE).await?;
    let mut updates = watcher.updates();
    let shard_before = watcher.router().load().route("users", &42u64)?.clone();

    blocking(|| etcd.stop())?;
    eventually("the watcher to notice that etcd is gone", || !watcher.is_connected()).await;
    let stale = watcher.staleness().expect("stale while disconnected");
    eventually("staleness to grow", || watcher.staleness().is_some_and(|s| s >= stale + Duration::from_millis(300)))
        .await;
    // Routing goes on with the last good topology.
    assert_eq!(watcher.router().load().route("users", &42u64)?, &shard_before);
    assert_eq!(watcher.epoch(), first);
    let error = watcher.last_error().expect("the outage is reported");
    assert!(error.is_unavailable(), "{error}");

    blocking(|| etcd.restart())?;
    eventually("the watcher to reconnect", || watcher.is_connected()).await;
    assert_eq!(watcher.staleness(), None);
    let epochs = put_series(&writer, 2..7).await;
    watcher.wait_for_epoch(*epochs.last().unwrap(), DEADLINE).await?;
    assert_changes_at(&next_updates(&mut updates, epochs.len()).await, &epochs);
    assert!(updates.try_recv().is_err(), "no update beyond the writes");
    assert_eq!(routed_shards(&watcher), shards_of(6));
    watcher.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resumes_where_it_stopped_and_rereads_after_compaction() -> TestResult {
    let mut cluster = blocking(|| EtcdCluster::start(3))?;
    let endpoints = cluster.endpoints();
    // The watcher talks to member 0 only; writes go through the others.
    let writer = etcd_store(endpoints[1..].to_vec()).await?;
    let first = put(&writer, 1).await;
    let watched = etcd_store(vec![endpoints[0].clone()]).await?;
    let watcher = TopologyWatcher::start(Source::store(watched), options("resume")).await?;
    watcher.wait_for_epoch(first, DEADLINE).await?;
    let mut updates = watcher.updates();

    // Member 0 down: changes made meanwhile arrive, one by one, on resuming.
    blocking(|| cluster.stop_member(0))?;
    eventually("the watcher to lose member 0", || !watcher.is_connected()).await;
    let missed = put_series(&writer, 2..5).await;
    assert_eq!(watcher.epoch(), first, "nothing arrives while member 0 is down");
    blocking(|| cluster.restart_member(0))?;
    watcher.wait_for_epoch(*missed.last().unwrap(), DEADLINE).await?;
    assert_changes_at(&next_updates(&mut updates, missed.len()).await, &missed);
    assert!(watcher.is_connected());

    // Member 0 down again, and the history it would resume from compacted:
    // one update with the whole topology, then changes as before.
    blocking(|| cluster.stop_member(0))?;
    eventually("the watcher to lose member 0 again", || !watcher.is_connected()).await;
    let compacted = put_series(&writer, 5..8).await;
    let newest = *compacted.last().unwrap();
    let options = CompactionOptions::new().with_physical();
    writer.client().compact(newest.0 as i64, Some(options)).await?;
    blocking(|| cluster.restart_member(0))?;
    let update = watcher.wait_for_epoch(newest, DEADLINE).await?;
    assert_eq!((update.epoch, update.kind), (newest, UpdateKind::Resync));
    assert_eq!(update.changes, vec![Change::KeyspaceUpdated(users())]);
    assert_eq!(update.topology, writer.snapshot().await?.topology);
    let resync = next_updates(&mut updates, 1).await;
    assert_eq!((resync[0].epoch, resync[0].kind), (newest, UpdateKind::Resync));
    assert_eq!(routed_shards(&watcher), shards_of(7));

    let after = put_series(&writer, 8..10).await;
    watcher.wait_for_epoch(*after.last().unwrap(), DEADLINE).await?;
    assert_changes_at(&next_updates(&mut updates, after.len()).await, &after);
    assert!(updates.try_recv().is_err(), "no update beyond the writes");
    watcher.shutdown().await;
    Ok(())
}

/// 50 watchers, one store each from `connect`, all see each of 20 writes.
async fn fifty_watchers_converge(
    writer: &dyn TopologyStore,
    mut connect: impl AsyncFnMut() -> Result<Arc<dyn TopologyStore>, StoreError>,
) -> TestResult {
    let first = put(writer, 0).await;
    let mut watchers = Vec::new();
    for i in 0..50 {
        let source = Source::Store(connect().await?);
        let watcher = TopologyWatcher::start(source, options(&format!("fifty-{i}"))).await?;
        watcher.wait_for_epoch(first, DEADLINE).await?;
        let updates = watcher.updates();
        watchers.push((watcher, updates));
    }
    let epochs = put_series(writer, 1..21).await;
    let newest = *epochs.last().unwrap();
    for (watcher, updates) in &mut watchers {
        watcher.wait_for_epoch(newest, DEADLINE).await?;
        assert_changes_at(&next_updates(updates, epochs.len()).await, &epochs);
        assert!(updates.try_recv().is_err(), "{}: no update beyond the writes", watcher.name());
        assert_eq!(routed_shards(watcher), shards_of(20));
    }
    for (watcher, _) in watchers {
        watcher.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_watchers_converge_on_every_change_from_the_local_store() -> TestResult {
    let store = Arc::new(LocalStore::in_memory(CLUSTER)?);
    let shared: Arc<dyn TopologyStore> = store.clone();
    fifty_watchers_converge(&*store, async || Ok(Arc::clone(&shared))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_watchers_converge_on_every_change_from_etcd() -> TestResult {
    let etcd = blocking(EtcdServer::start)?;
    let writer = etcd_store(vec![etcd.endpoint()]).await?;
    let endpoint = etcd.endpoint();
    fifty_watchers_converge(&writer, async || {
        let store: Arc<dyn TopologyStore> = Arc::new(etcd_store(vec![endpoint.clone()]).await?);
        Ok(store)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_gives_up_at_its_deadline_and_a_lazy_watcher_catches_up() -> TestResult {
    let mut etcd = blocking(EtcdServer::start)?;
    let writer = etcd_store(vec![etcd.endpoint()]).await?;
    let written = put(&writer, 3).await;
    let watched: Arc<dyn TopologyStore> = Arc::new(etcd_store(vec![etcd.endpoint()]).await?);
    blocking(|| etcd.stop())?;

    let started = Instant::now();
    let quick = WatchOptions {
        initial_load_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(1),
        ..WatchOptions::named("deadline")
    };
    let err = TopologyWatcher::start(Source::Store(Arc::clone(&watched)), quick).await.unwrap_err();
    assert!(started.elapsed() < DEADLINE);
    match &err {
        WatchError::InitialLoad { last: Some(last), .. } => assert!(last.is_unavailable(), "{err}"),
        other => panic!("expected an initial-load error, got {other}"),
    }
    assert!(err.to_string().starts_with("no topology loaded within "), "{err}");

    let watcher = TopologyWatcher::start_lazy(Source::Store(watched), options("lazy"))?;
    assert!(!watcher.is_loaded() && !watcher.is_connected());
    assert!(watcher.router().load().route("users", "a").is_err(), "nothing to route before the first load");
    assert!(watcher.staleness().is_some());
    blocking(|| etcd.restart())?;
    let update = watcher.wait_for_epoch(written, DEADLINE).await?;
    assert_eq!(update.kind, UpdateKind::Initial);
    assert!(watcher.is_connected());
    assert_eq!(routed_shards(&watcher), shards_of(3));
    watcher.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_refuse_invalid_topologies_so_watchers_never_see_them() -> TestResult {
    // The watcher's skip-invalid path is tested with files and unit tests
    // (shardlib's watch::tests); here, the premise: no store accepts one.
    let store = LocalStore::in_memory(CLUSTER)?;
    let mut broken = keyspace(1);
    broken.shards.clear();
    let err = store.put_keyspace(&users(), &broken, Expect::Any, &Fence::None).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    Ok(())
}

/// A shardd on the local store in `path`, listening on `listen`.
fn shardd_config(path: &std::path::Path, listen: std::net::SocketAddr) -> shardd::Config {
    shardd::Config {
        cluster: CLUSTER.to_owned(),
        store: shardd::StoreKind::Local,
        local: shardd::config::LocalOptions { path: path.to_owned() },
        listen,
        api_token: Some(shardd::config::Secret::new(SHARDD_TOKEN)),
        ..shardd::Config::default()
    }
}

const SHARDD_TOKEN: &str = "t11-token";

/// Opens the local store file once shardd has let go of it.
async fn open_local(path: &std::path::Path) -> LocalStore {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match LocalStore::open(path, CLUSTER) {
            Ok(store) => return store,
            Err(e) if Instant::now() < deadline => {
                eprintln!("opening {} failed, retrying: {e}", path.display());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("opening {}: {e}", path.display()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shardd_watcher_follows_resumes_and_resyncs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("topology.json");
    let server = shardd::Server::start(shardd_config(&path, "127.0.0.1:0".parse()?)).await?;
    let addr = server.addr();
    let first = put(&**server.store(), 0).await;

    let source = Source::shardd(server.url(), Some(SHARDD_TOKEN.to_owned()));
    let watcher = TopologyWatcher::start(source, options("shardd")).await?;
    assert!(watcher.epoch() >= first);
    assert_eq!(watcher.current().kind, UpdateKind::Initial);
    assert_eq!(watcher.source_kind(), "shardd");
    let mut updates = watcher.updates();
    let epochs = put_series(&**server.store(), 1..11).await;
    watcher.wait_for_epoch(*epochs.last().unwrap(), DEADLINE).await?;
    assert_changes_at(&next_updates(&mut updates, epochs.len()).await, &epochs);

    // shardd goes away: routing goes on; on its return the watcher resumes
    // after the last epoch it saw.
    let shard_before = watcher.router().load().route("users", &42u64)?.clone();
    server.shutdown().await?;
    eventually("the watcher to notice that shardd is gone", || !watcher.is_connected()).await;
    let stale = watcher.staleness().expect("stale while disconnected");
    eventually("staleness to grow", || watcher.staleness().is_some_and(|s| s > stale)).await;
    assert_eq!(watcher.router().load().route("users", &42u64)?, &shard_before);
    let server = shardd::Server::start(shardd_config(&path, addr)).await?;
    let epochs = put_series(&**server.store(), 11..14).await;
    watcher.wait_for_epoch(*epochs.last().unwrap(), DEADLINE).await?;
    assert_changes_at(&next_updates(&mut updates, epochs.len()).await, &epochs);
    assert!(watcher.is_connected() && watcher.staleness().is_none());

    // Changes made while shardd was down are beyond its history when it
    // comes back (the local store keeps none across a restart): one resync.
    server.shutdown().await?;
    eventually("the watcher to notice that shardd is gone again", || !watcher.is_connected()).await;
    let store = open_local(&path).await;
    let newest = *put_series(&store, 14..17).await.last().unwrap();
    drop(store);
    let server = shardd::Server::start(shardd_config(&path, addr)).await?;
    // The resync is read at shardd's current epoch, which its election on
    // restart may have moved past the last keyspace change.
    let update = watcher.wait_for_epoch(newest, DEADLINE).await?;
    assert_eq!(update.kind, UpdateKind::Resync);
    assert!(update.epoch >= newest, "{} < {newest}", update.epoch);
    assert_eq!(update.changes, vec![Change::KeyspaceUpdated(users())]);
    assert_eq!(next_updates(&mut updates, 1).await[0].epoch, update.epoch);
    assert_eq!(routed_shards(&watcher), shards_of(16));

    let after = put_series(&**server.store(), 17..19).await;
    watcher.wait_for_epoch(*after.last().unwrap(), DEADLINE).await?;
    assert_changes_at(&next_updates(&mut updates, after.len()).await, &after);
    assert!(updates.try_recv().is_err(), "no update beyond the writes");
    watcher.shutdown().await;
    server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shardd_watcher_without_the_token_reports_why() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = shardd::Server::start(shardd_config(&dir.path().join("t.json"), "127.0.0.1:0".parse()?)).await?;
    let options = WatchOptions { initial_load_timeout: Duration::from_secs(2), ..WatchOptions::named("no-token") };
    let err = TopologyWatcher::start(Source::shardd(server.url(), None), options).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains(SHARDD_TOKEN));
    server.shutdown().await?;
    Ok(())
}

/// Sends `signal` to the etcd server's process.
fn signal_etcd(etcd: &EtcdServer, signal: rustix::process::Signal) {
    let pid = etcd.pid().and_then(|pid| rustix::process::Pid::from_raw(pid as i32)).expect("etcd runs");
    rustix::process::kill_process(pid, signal).expect("signalling etcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_is_noticed_by_the_health_check() -> TestResult {
    use rustix::process::Signal;

    let etcd = blocking(EtcdServer::start)?;
    let writer = etcd_store(vec![etcd.endpoint()]).await?;
    let first = put(&writer, 1).await;
    let watched = etcd_store(vec![etcd.endpoint()]).await?;
    let options = WatchOptions {
        health_check_interval: Some(Duration::from_millis(300)),
        request_timeout: Duration::from_secs(1),
        ..options("frozen")
    };
    let watcher = TopologyWatcher::start(Source::store(watched), options).await?;
    watcher.wait_for_epoch(first, DEADLINE).await?;
    let mut updates = watcher.updates();

    // SIGSTOP: connections stay open, nothing answers. The watch stream
    // says nothing; the health probe times out.
    signal_etcd(&etcd, Signal::STOP);
    let frozen = Instant::now();
    eventually("the watcher to notice that etcd is frozen", || !watcher.is_connected()).await;
    eprintln!("a frozen etcd was noticed after {:?}", frozen.elapsed());
    signal_etcd(&etcd, Signal::CONT);
    eventually("the watcher to reconnect", || watcher.is_connected()).await;
    let epochs = put_series(&writer, 2..5).await;
    watcher.wait_for_epoch(*epochs.last().unwrap(), DEADLINE).await?;
    assert_changes_at(&next_updates(&mut updates, epochs.len()).await, &epochs);
    watcher.shutdown().await;
    Ok(())
}
