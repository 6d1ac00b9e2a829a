//! The topology store suite, written once and run against both backends:
//! [`LocalStore`] on a file in a temporary directory, and [`EtcdStore`] on
//! a real etcd started by the fixtures (one server per test, so that a
//! compaction in one test cannot touch another).
//!
//! Each case is an `async fn(Arc<dyn TopologyStore>)` (the client
//! registration cases live in `t10_store_support/clients.rs`); the `suite!` macro makes
//! one `#[tokio::test]` per case and backend (`local::case`, `etcd::case`).
//! The etcd-only cases (a million ranges, a member restart) follow; the
//! etcd-only client case (an outage) is in `t10_store_support/clients.rs`.

mod t10_store_support;

use std::sync::Arc;

use futures_util::StreamExt as _;
use shardlib::Epoch;
use shardlib::store::{Change, Expect, Fence, StoreError, TopologyStore, WatchStream};
use t10_store_support::clients::{
    clients_expire_when_their_holder_dies, clients_register_update_list_and_close,
    clients_replaced_registrations_stay_with_the_new_holder, clients_watchers_register_and_report_their_epoch,
};
use t10_store_support::{
    STEP_TIMEOUT, SendError, TestResult, etcd_store, key_order_keyspace, keyspace, local_store, name, next_event,
    ring_keyspace, split_first, within,
};

/// Runs each case against both backends.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> super::TestResult {
                    let (store, _dir) = super::local_store()?;
                    super::$case(Arc::new(store)).await
                }
            )*
            use std::sync::Arc;
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() -> super::TestResult {
                    let (store, _etcd) = super::etcd_store().await?;
                    super::$case(Arc::new(store)).await
                }
            )*
            use std::sync::Arc;
        }
    };
}

suite!(
    keyspaces_crud_with_increasing_epochs,
    concurrent_writers_exactly_one_wins,
    fenced_writes_change_nothing,
    invalid_topologies_are_rejected,
    watch_delivers_every_version_in_order,
    watch_after_compaction_is_compacted,
    documents_crud_with_cas,
    clients_register_update_list_and_close,
    clients_expire_when_their_holder_dies,
    clients_replaced_registrations_stay_with_the_new_holder,
    clients_watchers_register_and_report_their_epoch,
);

type Store = Arc<dyn TopologyStore>;

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, found: &str) {
    match result {
        Err(StoreError::Conflict { found: f, .. }) if f == found => {}
        other => panic!("expected a conflict finding {found:?}, got {other:?}"),
    }
}

async fn keyspaces_crud_with_increasing_epochs(store: Store) -> TestResult {
    let none = Fence::None;
    let start = store.snapshot().await?;
    assert!(start.topology.keyspaces.is_empty());
    let users = name("users");
    let v1 = keyspace(4, 16);
    let e1 = store.put_keyspace(&users, &v1, Expect::Absent, &none).await?;
    assert!(e1 > start.topology.epoch);
    let snap = store.snapshot().await?;
    assert!(snap.topology.epoch >= e1);
    assert_eq!(snap.versions[&users], e1);
    assert_eq!(snap.topology.keyspace("users")?, &v1);

    // Creating it again conflicts and changes nothing.
    assert_conflict(store.put_keyspace(&users, &v1, Expect::Absent, &none).await, &format!("version {e1}"));

    // An update with the version read.
    let v2 = split_first(&v1, "s3");
    let e2 = store.put_keyspace(&users, &v2, Expect::Version(e1), &none).await?;
    assert!(e2 > e1);
    // A stale update conflicts, naming the version found.
    assert_conflict(store.put_keyspace(&users, &v1, Expect::Version(e1), &none).await, &format!("version {e2}"));

    // Keyspaces without ranges, and key-order ranges.
    let orders = name("orders");
    let e3 = store.put_keyspace(&orders, &ring_keyspace(3), Expect::Absent, &none).await?;
    let events = name("events");
    let e4 = store.put_keyspace(&events, &key_order_keyspace(), Expect::Any, &none).await?;
    assert!(e2 < e3 && e3 < e4);
    let snap = store.snapshot().await?;
    assert_eq!(snap.topology.keyspace("users")?, &v2);
    assert_eq!(snap.topology.keyspace("orders")?, &ring_keyspace(3));
    assert_eq!(snap.topology.keyspace("events")?, &key_order_keyspace());
    let versions: Vec<Epoch> = snap.versions.values().copied().collect();
    assert_eq!(versions, [e4, e3, e2], "events, orders, users");

    // The past stays readable.
    let past = store.snapshot_at(e1).await?;
    assert_eq!(past.topology.epoch, e1);
    assert_eq!(past.topology.keyspaces.len(), 1);
    assert_eq!(past.topology.keyspace("users")?, &v1);

    // Deletes: stale version conflicts, then succeeds, then is not found.
    assert_conflict(store.delete_keyspace(&users, Expect::Version(e1), &none).await, &format!("version {e2}"));
    let e5 = store.delete_keyspace(&users, Expect::Version(e2), &none).await?;
    assert!(e5 > e4);
    let result = store.delete_keyspace(&users, Expect::Any, &none).await;
    assert!(matches!(result, Err(StoreError::NotFound { .. })), "{result:?}");
    assert_conflict(store.delete_keyspace(&users, Expect::Version(e2), &none).await, "absent");
    let snap = store.snapshot().await?;
    assert!(!snap.topology.keyspaces.contains_key("users"));
    assert_eq!(snap.topology.keyspaces.len(), 2);
    Ok(())
}

async fn concurrent_writers_exactly_one_wins(store: Store) -> TestResult {
    const WRITERS: usize = 6;
    const ROUNDS: usize = 4;
    let users = name("users");
    // Round 0 races on creation, the others on an update of the same version.
    let mut expect = Expect::Absent;
    for round in 0..ROUNDS {
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            let users = users.clone();
            // Each writer's keyspace differs: the first range goes to its own shard.
            let candidate = split_first(&keyspace(8, 8 + round as u32), &format!("s{writer}"));
            tasks.push(tokio::spawn(async move {
                let result = store.put_keyspace(&users, &candidate, expect, &Fence::None).await;
                (candidate, result)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (candidate, result) = within(task).await??;
            match result {
                Ok(epoch) => winners.push((candidate, epoch)),
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => return Err(format!("round {round}: unexpected error {other}").into()),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins");
        let (winner, epoch) = winners.pop().expect("one winner");
        let snap = store.snapshot().await?;
        assert_eq!(snap.versions[&users], epoch);
        assert_eq!(snap.topology.keyspace("users")?, &winner, "round {round}: the store holds the winner's keyspace");
        expect = Expect::Version(epoch);
    }
    Ok(())
}

async fn fenced_writes_change_nothing(store: Store) -> TestResult {
    let ttl = std::time::Duration::from_secs(10);
    let leadership = store.try_lead("node-a", ttl).await?.ok_or("the first candidate leads")?;
    assert!(store.try_lead("node-b", ttl).await?.is_none(), "only one leader at a time");
    let leader = store.leader().await?.ok_or("a leader is recorded")?;
    assert_eq!(leader.candidate, "node-a");
    assert_eq!(leader.token, leadership.token());
    assert_eq!(&leader.fence(), leadership.fence());

    let users = name("users");
    let v1 = keyspace(2, 4);
    let e1 = store.put_keyspace(&users, &v1, Expect::Absent, leadership.fence()).await?;
    let wrong = Fence::Leader { key: leader.key.clone(), token: leadership.token() + 1000 };
    let v2 = split_first(&v1, "s0");
    let before = store.snapshot().await?;
    let result = store.put_keyspace(&users, &v2, Expect::Version(e1), &wrong).await;
    assert!(matches!(result, Err(StoreError::Fenced { .. })), "{result:?}");
    let result = store.delete_keyspace(&users, Expect::Any, &wrong).await;
    assert!(matches!(result, Err(StoreError::Fenced { .. })), "{result:?}");
    let doc = serde_json::json!({"step": 1});
    let result = store.put_document("jobs", "j1", &doc, Expect::Any, &wrong).await;
    assert!(matches!(result, Err(StoreError::Fenced { .. })), "{result:?}");
    let after = store.snapshot().await?;
    assert_eq!(after.topology.epoch, before.topology.epoch, "nothing was written");
    assert_eq!(after.topology, before.topology);

    // Once resigned, the old fence no longer writes; a new leader has a newer token.
    let old_fence = leadership.fence().clone();
    let old_token = leadership.token();
    within(leadership.resign()).await??;
    assert!(store.leader().await?.is_none());
    let result = store.put_keyspace(&users, &v2, Expect::Version(e1), &old_fence).await;
    assert!(matches!(result, Err(StoreError::Fenced { .. })), "{result:?}");
    let next = store.try_lead("node-b", ttl).await?.ok_or("leadership is free again")?;
    assert!(next.token() > old_token);
    let result = store.put_keyspace(&users, &v2, Expect::Version(e1), &old_fence).await;
    assert!(matches!(result, Err(StoreError::Fenced { .. })), "a deposed leader stays fenced: {result:?}");
    store.put_keyspace(&users, &v2, Expect::Version(e1), next.fence()).await?;
    assert!(!next.is_lost());
    Ok(())
}

async fn invalid_topologies_are_rejected(store: Store) -> TestResult {
    let users = name("users");
    let valid = keyspace(2, 4);
    store.put_keyspace(&users, &valid, Expect::Absent, &Fence::None).await?;
    let before = store.snapshot().await?;

    let mut gap = valid.clone();
    if let shardlib::topology::Partitioning::HashRange { ranges } = &mut gap.partitioning {
        ranges.remove(1);
    }
    let mut unknown_owner = valid.clone();
    if let shardlib::topology::Partitioning::HashRange { ranges } = &mut unknown_owner.partitioning {
        ranges[0].shard = shardlib::ShardId::new("nowhere")?;
    }
    let mut no_shards = ring_keyspace(1);
    no_shards.shards.clear();
    for (what, bad) in [("gap", &gap), ("unknown owner", &unknown_owner), ("no shards", &no_shards)] {
        let result = store.put_keyspace(&users, bad, Expect::Any, &Fence::None).await;
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{what}: {result:?}");
        let result = store.put_keyspace(&name("other"), bad, Expect::Absent, &Fence::None).await;
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{what}: {result:?}");
    }
    let after = store.snapshot().await?;
    assert_eq!(after.topology.epoch, before.topology.epoch, "nothing was written");
    assert_eq!(after, before);
    Ok(())
}

async fn watch_delivers_every_version_in_order(store: Store) -> TestResult {
    let none = Fence::None;
    let start = store.snapshot().await?.topology.epoch;
    // A watch opened before the writes, read while they happen.
    let live = store.watch(start);
    let users = name("users");
    let mut current = keyspace(4, 4);
    let mut expected =
        vec![(store.put_keyspace(&users, &current, Expect::Absent, &none).await?, Some(current.clone()))];
    for step in 0..12 {
        let version = expected.last().expect("written").0;
        current = split_first(&current, &format!("s{}", step % 4));
        let epoch = store.put_keyspace(&users, &current, Expect::Version(version), &none).await?;
        expected.push((epoch, Some(current.clone())));
        // Document writes make epochs but no watch events.
        store.put_document("jobs", "j1", &serde_json::json!({ "step": step }), Expect::Any, &none).await?;
    }
    let last = expected.last().expect("written").0;
    expected.push((store.delete_keyspace(&users, Expect::Version(last), &none).await?, None));

    let check = |mut stream: WatchStream, from: usize| {
        let expected = expected.clone();
        async move {
            for (i, (epoch, keyspace)) in expected.iter().enumerate().skip(from) {
                let event = next_event(&mut stream).await?;
                assert_eq!(event.snapshot.topology.epoch, *epoch, "event {i} in order, none missing");
                assert_eq!(event.snapshot.topology.keyspaces.get("users"), keyspace.as_ref(), "event {i}");
                let change = match (i, keyspace) {
                    (0, _) => Change::KeyspaceCreated(name("users")),
                    (_, Some(_)) => Change::KeyspaceUpdated(name("users")),
                    (_, None) => Change::KeyspaceDeleted(name("users")),
                };
                assert_eq!(event.changes, [change], "event {i}");
                let version = event.snapshot.versions.get("users").copied();
                assert_eq!(version, keyspace.as_ref().map(|_| *epoch), "event {i}");
            }
            Ok::<(), t10_store_support::SendError>(())
        }
    };
    check(live, 0).await?;
    check(store.watch(start), 0).await?;
    // Resuming from any delivered epoch continues right after it.
    check(store.watch(expected[5].0), 6).await?;
    Ok(())
}

async fn watch_after_compaction_is_compacted(store: Store) -> TestResult {
    let users = name("users");
    let mut current = keyspace(2, 2);
    let mut epochs = vec![store.put_keyspace(&users, &current, Expect::Absent, &Fence::None).await?];
    for step in 0..4 {
        current = split_first(&current, &format!("s{}", step % 2));
        let version = *epochs.last().expect("written");
        epochs.push(store.put_keyspace(&users, &current, Expect::Version(version), &Fence::None).await?);
    }
    store.compact(epochs[2]).await?;
    let mut stream = store.watch(epochs[0]);
    match within(stream.next()).await? {
        Some(Err(StoreError::Compacted { requested, oldest })) => {
            assert_eq!(requested, epochs[0]);
            assert_eq!(oldest, epochs[2]);
        }
        other => return Err(format!("expected compacted, got {other:?}").into()),
    }
    assert!(within(stream.next()).await?.is_none(), "the stream ends after the error");
    let result = store.snapshot_at(epochs[1]).await;
    assert!(matches!(result, Err(StoreError::Compacted { .. })), "{result:?}");
    // From the compaction epoch on, everything is still there.
    assert_eq!(store.snapshot_at(epochs[2]).await?.topology.epoch, epochs[2]);
    let mut stream = store.watch(epochs[2]);
    for &epoch in &epochs[3..] {
        assert_eq!(next_event(&mut stream).await?.snapshot.topology.epoch, epoch);
    }
    Ok(())
}

async fn documents_crud_with_cas(store: Store) -> TestResult {
    let none = Fence::None;
    let a = serde_json::json!({ "state": "copying", "progress": 0.5 });
    let b = serde_json::json!({ "state": "done" });
    let v1 = store.put_document("jobs", "move-1", &a, Expect::Absent, &none).await?;
    let doc = store.get_document("jobs", "move-1").await?.ok_or("stored")?;
    assert_eq!((doc.id.as_str(), &doc.value, doc.version), ("move-1", &a, v1));
    assert_conflict(store.put_document("jobs", "move-1", &b, Expect::Absent, &none).await, &format!("version {v1}"));
    let v2 = store.put_document("jobs", "move-1", &b, Expect::Version(v1), &none).await?;
    assert!(v2 > v1);
    assert_conflict(
        store.put_document("jobs", "move-1", &a, Expect::Version(v1), &none).await,
        &format!("version {v2}"),
    );
    let v3 = store.put_document("jobs", "move-0", &a, Expect::Any, &none).await?;
    store.put_document("other", "x", &a, Expect::Any, &none).await?;
    let listed: Vec<(String, Epoch)> =
        store.list_documents("jobs").await?.into_iter().map(|d| (d.id, d.version)).collect();
    assert_eq!(listed, [("move-0".to_owned(), v3), ("move-1".to_owned(), v2)]);

    assert_conflict(
        store.delete_document("jobs", "move-1", Expect::Version(v1), &none).await,
        &format!("version {v2}"),
    );
    store.delete_document("jobs", "move-1", Expect::Version(v2), &none).await?;
    assert!(store.get_document("jobs", "move-1").await?.is_none());
    let result = store.delete_document("jobs", "move-1", Expect::Any, &none).await;
    assert!(matches!(result, Err(StoreError::NotFound { .. })), "{result:?}");
    assert_conflict(store.delete_document("jobs", "move-1", Expect::Version(v2), &none).await, "absent");
    assert_eq!(store.list_documents("jobs").await?.len(), 1);
    assert!(store.list_documents("empty").await?.is_empty());
    let result = store.get_document("jobs", "a/b").await;
    assert!(matches!(result, Err(StoreError::InvalidName(_))), "{result:?}");
    // Documents never show up as topology changes.
    assert!(store.snapshot().await?.topology.keyspaces.is_empty());
    Ok(())
}

/// Keys that sample a big keyspace's ranges: every 9973rd and the last.
fn sample(count: usize) -> Vec<usize> {
    (0..count).step_by(9973).chain([count - 1]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_million_ranges_store_load_watch_and_split_one_chunk() -> TestResult {
    use shardlib::store::etcd::etcd_client::GetOptions;
    let (store, _etcd) = etcd_store().await?;
    let users = name("users");
    let big = keyspace(16, 1_000_000);
    let mut watch = store.watch(Epoch(0));

    let started = std::time::Instant::now();
    let epoch = store.put_keyspace(&users, &big, Expect::Absent, &Fence::None).await?;
    let store_time = started.elapsed();
    let stats = store.write_stats();
    assert!(stats.max_txn_bytes < 1024 * 1024 + 4096, "{stats:?}");
    assert!(stats.max_txn_ops <= 101, "{stats:?}");

    let started = std::time::Instant::now();
    let snap = store.snapshot().await?;
    let load_time = started.elapsed();
    let loaded = snap.topology.keyspace("users")?;
    assert_eq!(loaded, &big, "the whole keyspace reads back");

    let event = next_event(&mut watch).await?;
    assert_eq!(event.snapshot.topology.epoch, epoch);
    let seen = event.snapshot.topology.keyspace("users")?;
    use shardlib::topology::Partitioning::HashRange;
    let (HashRange { ranges: seen }, HashRange { ranges: all }) = (&seen.partitioning, &big.partitioning) else {
        return Err("hash ranges expected".into());
    };
    assert_eq!(seen.len(), 1_000_000);
    for i in sample(all.len()) {
        assert_eq!(seen[i], all[i], "range {i}");
    }

    // What is stored: ~20 bytes per range.
    let mut client = store.client().kv_client().max_decoding_message_size(256 << 20);
    let prefix = format!("{}ranges/", store.prefix());
    let chunks = client.get(prefix, Some(GetOptions::new().with_prefix())).await?;
    let bytes: usize = chunks.kvs().iter().map(|kv| kv.value().len()).sum();
    eprintln!(
        "1M ranges: stored in {store_time:?} ({} txns, largest {} bytes, {} ops), loaded in {load_time:?}, {} chunks, {bytes} bytes",
        stats.txns,
        stats.max_txn_bytes,
        stats.max_txn_ops,
        chunks.kvs().len()
    );
    assert!(bytes < 25_000_000, "{bytes}");

    // Splitting one range rewrites its chunk and the meta document only.
    let mut split = big.clone();
    if let shardlib::topology::Partitioning::HashRange { ranges } = &mut split.partitioning {
        let at = 500_000;
        let range = ranges[at].range;
        let (left, right) = range.split_at(range.midpoint())?;
        ranges[at].range = left;
        let mut added = ranges[at].clone();
        added.range = right;
        added.shard = shardlib::ShardId::new("s15")?;
        ranges.insert(at + 1, added);
    }
    let before = store.write_stats();
    let split_epoch = store.put_keyspace(&users, &split, Expect::Version(epoch), &Fence::None).await?;
    let after = store.write_stats();
    assert_eq!(after.txns, before.txns + 1, "one transaction");
    let options = GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_min_mod_revision(split_epoch.0 as i64)
        .with_max_mod_revision(split_epoch.0 as i64);
    let touched = client.get(store.prefix(), Some(options)).await?;
    assert_eq!(touched.kvs().len(), 2, "the meta document and one chunk");
    let event = next_event(&mut watch).await?;
    assert_eq!(event.snapshot.topology.epoch, split_epoch);
    assert_eq!(event.snapshot.topology.keyspace("users")?, &split);
    assert_eq!(store.snapshot().await?.topology.keyspace("users")?, &split);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_survives_member_restarts() -> TestResult {
    t10_store_support::watch_across_member_restarts().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_persists_and_excludes_other_openers() -> TestResult {
    use shardlib::store::local::LocalStore;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("topology.json");
    let users = name("users");
    let (epoch, doc_epoch) = {
        let store = LocalStore::open(&path, "t10")?;
        let second = LocalStore::open(&path, "t10");
        assert!(matches!(second, Err(StoreError::Unavailable { .. })), "{second:?}");
        let epoch = store.put_keyspace(&users, &keyspace(2, 4), Expect::Absent, &Fence::None).await?;
        let doc = serde_json::json!({ "a": 1 });
        (epoch, store.put_document("jobs", "j1", &doc, Expect::Absent, &Fence::None).await?)
    };
    let store = LocalStore::open(&path, "t10")?;
    let snap = store.snapshot().await?;
    assert_eq!(snap.topology.epoch, doc_epoch, "the revision survives");
    assert_eq!(snap.versions[&users], epoch);
    assert_eq!(snap.topology.keyspace("users")?, &keyspace(2, 4));
    assert_eq!(store.get_document("jobs", "j1").await?.map(|d| d.version), Some(doc_epoch));
    // History is not persisted: watching from before the reopen is compacted,
    // from the last topology change on it works.
    let mut stream = store.watch(Epoch(0));
    assert!(matches!(within(stream.next()).await?, Some(Err(StoreError::Compacted { .. }))));
    let mut stream = store.watch(epoch);
    let next = split_first(&keyspace(2, 4), "s1");
    let e2 = store.put_keyspace(&users, &next, Expect::Version(epoch), &Fence::None).await?;
    assert_eq!(next_event(&mut stream).await?.snapshot.topology.epoch, e2);
    let other = LocalStore::open(dir.path().join("other.json"), "t10")?;
    drop(other);
    let wrong = LocalStore::open(dir.path().join("other.json"), "another");
    assert!(matches!(wrong, Err(StoreError::Backend { .. })), "{wrong:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_errors_name_endpoints_and_hide_passwords() -> TestResult {
    use shardlib::store::etcd::{EtcdConfig, EtcdStore};
    // Nobody listens on a port that was just free.
    let port = shardkit_tests::free_port()?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut config = EtcdConfig::new([endpoint.clone()], "t10");
    config.connect_timeout = std::time::Duration::from_secs(2);
    config.request_timeout = std::time::Duration::from_secs(2);
    match EtcdStore::connect(config).await {
        Err(StoreError::Unavailable { message }) => assert!(message.contains(&endpoint), "{message}"),
        other => return Err(format!("expected unavailable, got {other:?}").into()),
    }

    // Authentication on: a wrong password is refused, and never printed.
    let (store, _etcd) = etcd_store().await?;
    let mut client = store.client();
    client.user_add("root", "right-password", None).await?;
    client.user_grant_role("root", "root").await?;
    client.auth_enable().await?;
    let endpoints = [_etcd.endpoint()];
    let wrong = EtcdConfig::new(endpoints.clone(), "t10").with_user("root", "wrong-password");
    assert!(!format!("{wrong:?}").contains("wrong-password"));
    match EtcdStore::connect(wrong).await {
        Err(e @ StoreError::Unauthorized { .. }) => assert!(!e.to_string().contains("wrong-password"), "{e}"),
        other => return Err(format!("expected unauthorized, got {other:?}").into()),
    }
    let right = EtcdStore::connect(EtcdConfig::new(endpoints, "t10").with_user("root", "right-password")).await?;
    right.put_keyspace(&name("users"), &keyspace(2, 2), Expect::Absent, &Fence::None).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leadership_ends_when_its_key_goes() -> TestResult {
    let (store, _etcd) = etcd_store().await?;
    let ttl = std::time::Duration::from_secs(3);
    let leadership = store.try_lead("node-a", ttl).await?.ok_or("the first candidate leads")?;
    let mut client = store.client();
    client.delete(format!("{}{}", store.prefix(), leadership.info().key), None).await?;
    within(leadership.lost()).await?;
    assert!(leadership.is_lost());
    let result = store.put_keyspace(&name("users"), &keyspace(2, 2), Expect::Absent, leadership.fence()).await;
    assert!(matches!(result, Err(StoreError::Fenced { .. })), "{result:?}");
    let next = store.try_lead("node-b", ttl).await?.ok_or("leadership is free again")?;
    assert!(next.token() > leadership.token());
    within(leadership.resign()).await??;
    assert_eq!(store.leader().await?.map(|l| l.candidate), Some("node-b".to_owned()), "resigning late harms no one");
    Ok(())
}

/// One leadership mechanism: the store's `try_lead`/`leader` and etcd's
/// election API (what shardd campaigns with) share the election
/// `/<cluster>/leader`, so neither can make a second leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_try_lead_and_the_election_api_are_one_election() -> TestResult {
    use shardlib::store::etcd::election;
    use shardlib::store::etcd::etcd_client::GetOptions;

    let (store, _etcd) = etcd_store().await?;
    let ttl = std::time::Duration::from_secs(10);
    let election_name = election::election_name(store.cluster());
    let mut client = store.client();

    // A campaign through the election API (as shardd's) leads: the store
    // reports it, with the fence it writes with, and will not lead too.
    let lease = client.lease_grant(10, None).await?.id();
    let won = within(client.campaign(election_name.as_str(), r#"{"member_id":"m1"}"#, lease)).await??;
    let campaigned = won.leader().ok_or("the campaign won")?.clone();
    let leader = store.leader().await?.ok_or("the store sees the campaign's leader")?;
    assert_eq!(leader.candidate, r#"{"member_id":"m1"}"#);
    assert_eq!(leader.fence(), election::fence(store.cluster(), campaigned.key(), campaigned.rev()));
    assert!(store.try_lead("tool", ttl).await?.is_none(), "try_lead cannot win while a campaigner leads");
    store.put_keyspace(&name("users"), &keyspace(2, 2), Expect::Absent, &leader.fence()).await?;
    let options = shardlib::store::etcd::etcd_client::ResignOptions::new().with_leader(campaigned);
    client.resign(Some(options)).await?;
    assert!(store.leader().await?.is_none());
    let result = store.delete_keyspace(&name("users"), Expect::Any, &leader.fence()).await;
    assert!(matches!(result, Err(StoreError::Fenced { .. })), "a resigned leader is fenced: {result:?}");

    // The store's leadership holds a campaigner back until it resigns.
    let leadership = store.try_lead("tool", ttl).await?.ok_or("the election is free")?;
    let lease = client.lease_grant(10, None).await?.id();
    let mut campaigner = client.clone();
    let campaign_name = election_name.clone();
    let campaign = tokio::spawn(async move { campaigner.campaign(campaign_name, "m2", lease).await });
    let candidates = format!("{election_name}/");
    let options = GetOptions::new().with_prefix().with_count_only();
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while client.get(candidates.as_str(), Some(options.clone())).await?.count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the second candidate never registered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(store.leader().await?.map(|l| l.candidate), Some("tool".to_owned()));
    assert!(!campaign.is_finished(), "a campaign waits while the store's leadership holds");
    let token = leadership.token();
    within(leadership.resign()).await??;
    let next = within(campaign).await???;
    let next = next.leader().ok_or("the campaign won")?;
    assert!(next.rev() > token);
    assert_eq!(store.leader().await?.map(|l| (l.candidate, l.token)), Some(("m2".to_owned(), next.rev())));
    Ok(())
}

/// The generations of chunks stored for a keyspace, and how many chunks.
async fn generations(store: &shardlib::store::etcd::EtcdStore, keyspace: &str) -> Result<Vec<String>, SendError> {
    use shardlib::store::etcd::etcd_client::GetOptions;
    let prefix = format!("{}ranges/{keyspace}/", store.prefix());
    let keys = store.client().get(prefix.clone(), Some(GetOptions::new().with_prefix().with_keys_only())).await?;
    let mut generations: Vec<String> = keys
        .kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix)?.split('/').next().map(str::to_owned))
        .collect();
    generations.dedup();
    Ok(generations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_large_rewrites_race_and_clean_up_generations() -> TestResult {
    let (store, _etcd) = etcd_store().await?;
    let users = name("users");
    let first = keyspace(8, 100_000);
    let epoch = store.put_keyspace(&users, &first, Expect::Absent, &Fence::None).await?;
    assert_eq!(generations(&store, "users").await?.len(), 1);
    let mut watch = store.watch(epoch);
    // An orphan generation, as a writer that crashed midway leaves behind.
    let orphan = format!("{}ranges/users/00000000deadbeef/@", store.prefix());
    store.client().put(orphan, "shardkit-chunk 1\nowners s0\n- 0\n", None).await?;
    assert_eq!(generations(&store, "users").await?.len(), 2);

    // Two writers rewrite every range (too much for one transaction) from
    // the same version: exactly one wins, and only its generation remains.
    let rewrite = |shift: usize| {
        let mut next = first.clone();
        if let shardlib::topology::Partitioning::HashRange { ranges } = &mut next.partitioning {
            for (i, range) in ranges.iter_mut().enumerate() {
                range.shard = shardlib::ShardId::new(format!("s{}", (i + shift) % 8)).expect("valid");
            }
        }
        next
    };
    let candidates = [rewrite(1), rewrite(2)];
    let before = store.write_stats().txns;
    let (a, b) = tokio::join!(
        store.put_keyspace(&users, &candidates[0], Expect::Version(epoch), &Fence::None),
        store.put_keyspace(&users, &candidates[1], Expect::Version(epoch), &Fence::None),
    );
    assert!(store.write_stats().txns >= before + 4, "large writes take several transactions");
    let (winner, won) = match (a, b) {
        (Ok(e), Err(StoreError::Conflict { .. })) => (&candidates[0], e),
        (Err(StoreError::Conflict { .. }), Ok(e)) => (&candidates[1], e),
        other => return Err(format!("expected one winner and one conflict, got {other:?}").into()),
    };
    let snap = store.snapshot().await?;
    assert_eq!(snap.versions[&users], won);
    assert_eq!(snap.topology.keyspace("users")?, winner);
    let event = next_event(&mut watch).await?;
    assert_eq!(event.snapshot.topology.epoch, won, "the watch never shows a half-written keyspace");
    assert_eq!(event.snapshot.topology.keyspace("users")?, winner);
    assert_eq!(generations(&store, "users").await?.len(), 1, "old, orphan and losing generations are gone");

    // Deleting the keyspace deletes its chunks.
    store.delete_keyspace(&users, Expect::Version(won), &Fence::None).await?;
    assert!(generations(&store, "users").await?.is_empty());
    Ok(())
}
