//! Unit tests of the watcher with the sources that need no server: a file,
//! and topologies fed straight to the task's install step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use super::state::{Ctx, Incoming, Shared};
use super::*;
use crate::id::KeyspaceName;
use crate::router::{Router, SharedRouter};
use crate::store::Change;
use crate::topology::{Partitioning, Topology, TopologyError};

const DEADLINE: Duration = Duration::from_secs(60);

/// A topology with keyspace `users` over `shards` shards (jump hash).
fn toml(epoch: u64, shards: usize) -> String {
    let list: Vec<String> =
        (0..shards).map(|i| format!("{{ id = \"s{i}\", primary = \"sqlite:///tmp/s{i}.db\" }}")).collect();
    format!(
        "cluster = \"unit\"\nepoch = {epoch}\n[keyspaces.users]\nshards = [{}]\npartitioning = {{ algorithm = \"jump\" }}\n",
        list.join(", ")
    )
}

/// Ranges that leave a gap: parses, but does not validate.
fn invalid_toml(epoch: u64) -> String {
    format!(
        "cluster = \"unit\"\nepoch = {epoch}\n[keyspaces.users]\nshards = [{{ id = \"s0\", primary = \"sqlite:///x\" }}]\n\
         partitioning = {{ algorithm = \"hash_range\", ranges = [{{ range = \"-80\", shard = \"s0\" }}] }}\n"
    )
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("shardlib-watch-{}-{tag}-{n}.toml", std::process::id())))
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn users(name: &str) -> KeyspaceName {
    KeyspaceName::new(name).unwrap()
}

#[tokio::test]
async fn a_file_loads_reloads_and_skips_what_is_invalid() {
    let file = TempFile::new("reload");
    file.write(&toml(1, 2));
    let watcher = TopologyWatcher::start(Source::file(file.path()), WatchOptions::named("file")).await.unwrap();
    assert_eq!(watcher.epoch(), Epoch(1));
    assert!(watcher.is_connected() && watcher.staleness().is_none());
    let first = watcher.current();
    assert_eq!(
        (first.kind, first.changes.clone()),
        (UpdateKind::Initial, vec![Change::KeyspaceCreated(users("users"))])
    );
    let before = watcher.router().load().route("users", &7u64).unwrap().clone();
    let mut updates = watcher.updates();
    let mut latest = watcher.subscribe();
    assert!(!latest.has_changed().unwrap(), "a new subscriber has seen the installed update");

    // Invalid: refused, routing unchanged, the error kept.
    file.write(&invalid_toml(2));
    let err = watcher.reload().await.unwrap_err();
    assert!(matches!(&err, WatchError::File { source: TopologyError::Range { .. }, .. }), "{err}");
    assert_eq!(watcher.epoch(), Epoch(1));
    assert_eq!(watcher.router().load().route("users", &7u64).unwrap(), &before);
    assert!(watcher.last_error().unwrap().to_string().contains("users"), "{:?}", watcher.last_error());
    assert!(watcher.is_connected(), "an invalid file is not a lost source");

    // Older: refused.
    file.write(&toml(0, 5));
    assert!(matches!(watcher.reload().await, Err(WatchError::Stale(_))));

    // Newer and valid: installed, with what changed.
    file.write(&toml(3, 4));
    assert_eq!(watcher.reload().await.unwrap(), Epoch(3));
    let update = updates.recv().await.unwrap();
    assert_eq!((update.epoch, update.kind), (Epoch(3), UpdateKind::Reload));
    assert_eq!(update.changes, vec![Change::KeyspaceUpdated(users("users"))]);
    assert_eq!(watcher.router().load().keyspace("users").unwrap().shards().len(), 4);
    latest.changed().await.unwrap();
    assert_eq!(latest.borrow_and_update().epoch, Epoch(3), "refused files never reached subscribers");

    // Unreadable: the source counts as lost until a read succeeds again.
    std::fs::remove_file(file.path()).unwrap();
    assert!(matches!(watcher.reload().await, Err(WatchError::File { source: TopologyError::Io { .. }, .. })));
    assert!(!watcher.is_connected());
    assert!(watcher.staleness().is_some());
    assert_eq!(watcher.epoch(), Epoch(3));
    file.write(&toml(3, 4));
    assert_eq!(watcher.reload().await.unwrap(), Epoch(3));
    assert!(watcher.is_connected() && watcher.staleness().is_none());
    watcher.shutdown().await;
}

#[tokio::test]
async fn start_fails_at_once_on_a_bad_file() {
    let file = TempFile::new("missing");
    let err = TopologyWatcher::start(Source::file(file.path()), WatchOptions::default()).await.unwrap_err();
    assert!(matches!(&err, WatchError::File { source: TopologyError::Io { .. }, .. }), "{err}");
    file.write(&invalid_toml(1));
    let err = TopologyWatcher::start(Source::file(file.path()), WatchOptions::default()).await.unwrap_err();
    assert!(err.to_string().starts_with("topology file "), "{err}");
}

#[tokio::test]
async fn a_lazy_watcher_routes_nothing_until_loaded() {
    let file = TempFile::new("lazy");
    let watcher = TopologyWatcher::start_lazy(Source::file(file.path()), WatchOptions::named("lazy")).unwrap();
    let err = watcher.wait_for_epoch(Epoch(1), Duration::from_millis(50)).await.unwrap_err();
    assert!(matches!(err, WatchError::Timeout { wanted: Epoch(1), installed: Epoch(0), .. }), "{err}");
    assert!(!watcher.is_loaded());
    assert_eq!(watcher.current().kind, UpdateKind::Placeholder);
    assert!(watcher.router().load().route("users", "a").is_err());
    assert!(watcher.staleness().is_some());

    file.write(&toml(4, 1));
    assert_eq!(watcher.reload().await.unwrap(), Epoch(4));
    let update = watcher.wait_for_epoch(Epoch(4), DEADLINE).await.unwrap();
    assert_eq!(update.kind, UpdateKind::Reload);
    assert_eq!(watcher.router().load().route("users", "a").unwrap().as_str(), "s0");
    drop(watcher);
}

#[test]
fn starting_needs_a_runtime_and_sane_options() {
    let err = TopologyWatcher::start_lazy(Source::file("/nonexistent"), WatchOptions::default()).unwrap_err();
    assert!(matches!(err, WatchError::NoRuntime));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let options = WatchOptions { request_timeout: Duration::ZERO, ..WatchOptions::default() };
    let err = runtime.block_on(TopologyWatcher::start(Source::file("/nonexistent"), options)).unwrap_err();
    assert!(matches!(err, WatchError::InvalidOptions { .. }), "{err}");
}

/// A task context without a task, to feed topologies straight in.
fn context() -> (Ctx, Arc<Shared>, watch::Sender<bool>, mpsc::Sender<state::Command>) {
    let placeholder = TopologyUpdate::placeholder();
    let router = Arc::new(SharedRouter::new(Router::compile(&placeholder.topology).unwrap()));
    let shared = Arc::new(Shared::new("unit".into(), "test", router));
    let (updates, _) = watch::channel(Arc::new(placeholder));
    let (events, _) = broadcast::channel(16);
    let (stop, stop_rx) = watch::channel(false);
    let (commands, commands_rx) = mpsc::channel(1);
    let ctx = Ctx::new(Arc::clone(&shared), WatchOptions::default(), updates, events, stop_rx, commands_rx);
    (ctx, shared, stop, commands)
}

fn change(topology: Topology, changes: Vec<Change>) -> Incoming {
    Incoming {
        topology: Arc::new(topology),
        versions: BTreeMap::new(),
        changes: Some(changes),
        kind: UpdateKind::Change,
    }
}

#[tokio::test]
async fn an_invalid_topology_is_skipped_and_its_changes_are_folded_into_the_next() {
    let (mut ctx, shared, _stop, _commands) = context();
    let mut v1 = Topology::from_toml(&toml(1, 2)).unwrap();
    v1.epoch = Epoch(1);
    assert_eq!(ctx.install(change(v1.clone(), vec![])).await.unwrap(), Some(Epoch(1)));

    // Epoch 2 breaks a rule (a keyspace without shards): skipped.
    let mut v2 = v1.clone();
    v2.epoch = Epoch(2);
    let mut orders = v1.keyspaces[&users("users")].clone();
    orders.shards.clear();
    v2.keyspaces.insert(users("orders"), orders);
    let err = ctx.install(change(v2.clone(), vec![Change::KeyspaceCreated(users("orders"))])).await.unwrap_err();
    assert!(matches!(err, WatchError::InvalidTopology { epoch: Epoch(2), source: TopologyError::NoShards { .. } }));
    assert_eq!(shared.router.epoch(), Epoch(1));
    assert_eq!(ctx.position(), Epoch(2), "the watch moves past a skipped epoch");
    assert!(matches!(shared.last_error(), Some(WatchError::InvalidTopology { .. })));

    // Epoch 3 is valid again; its own change list would hide what epoch 2
    // did, so the changes are computed against epoch 1.
    let mut v3 = v1.clone();
    v3.epoch = Epoch(3);
    v3.keyspaces.get_mut(&users("users")).unwrap().partitioning = Partitioning::Rendezvous;
    let mut orders = v1.keyspaces[&users("users")].clone();
    orders.seed = 9;
    v3.keyspaces.insert(users("orders"), orders);
    ctx.install(change(v3, vec![Change::KeyspaceUpdated(users("users"))])).await.unwrap();
    let current = ctx.current();
    assert_eq!(current.epoch, Epoch(3));
    assert_eq!(
        current.changes,
        vec![Change::KeyspaceCreated(users("orders")), Change::KeyspaceUpdated(users("users"))]
    );

    // Replays of seen epochs are ignored.
    assert_eq!(ctx.install(change(v1, vec![])).await.unwrap(), None);
    assert_eq!(shared.router.epoch(), Epoch(3));
}

#[tokio::test]
async fn a_local_store_watcher_sees_every_version_in_order() {
    use crate::store::local::LocalStore;
    use crate::store::{Expect, Fence, TopologyStore};

    let store = Arc::new(LocalStore::in_memory("unit").unwrap());
    let keyspace = |shards| Topology::from_toml(&toml(0, shards)).unwrap().keyspaces[&users("users")].clone();
    let first = store.put_keyspace(&users("users"), &keyspace(1), Expect::Absent, &Fence::None).await.unwrap();
    let watcher = TopologyWatcher::start(Source::Store(store.clone()), WatchOptions::named("local")).await.unwrap();
    assert!(watcher.epoch() >= first);
    assert!(watcher.is_connected());
    let mut updates = watcher.updates();
    let mut written = Vec::new();
    for i in 0..10 {
        written
            .push(store.put_keyspace(&users("users"), &keyspace(1 + i % 3), Expect::Any, &Fence::None).await.unwrap());
    }
    watcher.wait_for_epoch(*written.last().unwrap(), DEADLINE).await.unwrap();
    for &epoch in &written {
        let update = updates.recv().await.unwrap();
        assert_eq!((update.epoch, update.kind), (epoch, UpdateKind::Change));
        assert_eq!(update.changes, vec![Change::KeyspaceUpdated(users("users"))]);
    }
    assert!(updates.try_recv().is_err(), "no update beyond the writes");
    assert_eq!(watcher.router().load().keyspace("users").unwrap().shards().len(), 1, "the last write has 1 shard");

    // A reload at the same epoch changes nothing.
    assert_eq!(watcher.reload().await.unwrap(), watcher.epoch());
    assert!(updates.try_recv().is_err());
    watcher.shutdown().await;
}
