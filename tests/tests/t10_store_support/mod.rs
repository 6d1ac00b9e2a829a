//! Helpers of the store suite (`t10_store.rs`): stores on both backends,
//! keyspaces to write, bounded waits, and the etcd member-restart scenario.

pub mod clients;

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt as _;
use shardkit_tests::{EtcdCluster, EtcdServer};
use shardlib::store::etcd::{EtcdConfig, EtcdStore};
use shardlib::store::local::LocalStore;
use shardlib::store::{Expect, Fence, StoreError, TopologyStore, WatchEvent, WatchStream};
use shardlib::topology::{
    Dsn, KeyOrderAssignment, Keyspace, Labels, Partitioning, RangeAssignment, RangeState, Shard, ShardState, Table,
};
use shardlib::{Epoch, KeyOrderRange, KeyRange, KeyType, KeyspaceName, ShardId};

/// What a test returns.
pub type TestResult = Result<(), SendError>;

/// An error that can cross tasks.
pub type SendError = Box<dyn Error + Send + Sync>;

/// The longest any single step may take on a loaded machine.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Awaits `future` for at most [`STEP_TIMEOUT`].
pub async fn within<T>(future: impl Future<Output = T>) -> Result<T, SendError> {
    tokio::time::timeout(STEP_TIMEOUT, future).await.map_err(|_| format!("no answer within {STEP_TIMEOUT:?}").into())
}

/// The next event of a watch; an error if it fails, ends or is late.
pub async fn next_event(stream: &mut WatchStream) -> Result<WatchEvent, SendError> {
    match within(stream.next()).await? {
        Some(Ok(event)) => Ok(event),
        Some(Err(e)) => Err(format!("watch failed: {e}").into()),
        None => Err("watch ended".into()),
    }
}

/// A local store in a new temporary directory (kept alive by the guard).
pub fn local_store() -> Result<(LocalStore, tempfile::TempDir), SendError> {
    let dir = tempfile::tempdir()?;
    let store = LocalStore::open(dir.path().join("topology.json"), "t10")?;
    Ok((store, dir))
}

/// An etcd store on a new etcd server (kept alive by the guard).
pub async fn etcd_store() -> Result<(EtcdStore, EtcdServer), SendError> {
    let etcd = tokio::task::spawn_blocking(EtcdServer::start).await??;
    let store = EtcdStore::connect(EtcdConfig::new([etcd.endpoint()], "t10")).await?;
    Ok((store, etcd))
}

/// A keyspace name.
pub fn name(name: &str) -> KeyspaceName {
    KeyspaceName::new(name).expect("a valid keyspace name")
}

fn shards(count: usize) -> Vec<Shard> {
    (0..count)
        .map(|i| Shard {
            id: ShardId::new(format!("s{i}")).expect("valid"),
            primary: Dsn::new(format!("postgres://app:secret@db{i}:5432/users")),
            replicas: Vec::new(),
            labels: Labels::default(),
            weight: 1,
            capacity_bytes: None,
            state: ShardState::Serving,
        })
        .collect()
}

fn tables() -> Vec<Table> {
    vec![Table {
        name: "users".to_owned(),
        key_columns: vec!["user_id".to_owned()],
        keyspace_id_column: "keyspace_id".to_owned(),
    }]
}

/// A `hash_range` keyspace of `shards` shards and `ranges` equal ranges,
/// owned round robin.
pub fn keyspace(shards_count: usize, ranges: u32) -> Keyspace {
    let shards = shards(shards_count);
    let ranges = KeyRange::uniform(ranges)
        .into_iter()
        .enumerate()
        .map(|(i, range)| RangeAssignment {
            range,
            shard: shards[i % shards.len()].id.clone(),
            state: if i % 97 == 5 { RangeState::Frozen } else { RangeState::Serving },
        })
        .collect();
    Keyspace {
        seed: 7,
        key_type: KeyType::U64,
        tables: tables(),
        shards,
        partitioning: Partitioning::HashRange { ranges },
    }
}

/// A keyspace placed by a hash ring: no ranges to store.
pub fn ring_keyspace(shards_count: usize) -> Keyspace {
    Keyspace {
        seed: 0,
        key_type: KeyType::Str,
        tables: Vec::new(),
        shards: shards(shards_count),
        partitioning: Partitioning::Ring { vnodes: 64 },
    }
}

/// A `key_order` keyspace of three ranges, one with a start that is not UTF-8.
pub fn key_order_keyspace() -> Keyspace {
    let shards = shards(2);
    let bounds: [&[u8]; 2] = [b"n", &[0xff, 0x00]];
    let range = |start: &[u8], end: Option<&[u8]>| KeyOrderRange::new(start.to_vec(), end.map(<[u8]>::to_vec));
    let ranges = [range(b"", Some(bounds[0])), range(bounds[0], Some(bounds[1])), range(bounds[1], None)];
    let ranges = ranges
        .into_iter()
        .enumerate()
        .map(|(i, r)| KeyOrderAssignment {
            range: r.expect("valid"),
            shard: shards[i % 2].id.clone(),
            state: RangeState::Serving,
        })
        .collect();
    Keyspace {
        seed: 0,
        key_type: KeyType::Str,
        tables: tables(),
        shards,
        partitioning: Partitioning::KeyOrder { ranges },
    }
}

/// `keyspace` with its first range split at its midpoint, the right half
/// given to `owner` (which must be one of its shards).
pub fn split_first(keyspace: &Keyspace, owner: &str) -> Keyspace {
    let mut next = keyspace.clone();
    let Partitioning::HashRange { ranges } = &mut next.partitioning else { panic!("a hash_range keyspace") };
    let first = ranges[0].range;
    let (left, right) = first.split_at(first.midpoint()).expect("the first range is wide enough");
    ranges[0].range = left;
    let shard = ShardId::new(owner).expect("valid");
    ranges.insert(1, RangeAssignment { range: right, shard, state: RangeState::Serving });
    next
}

/// Writes `next` over `version`, retrying while etcd is unavailable. A
/// write that failed in flight may have been applied: the store is read to
/// find out, so that each version is counted exactly once.
async fn write_through_outage(
    store: &EtcdStore,
    keyspace: &KeyspaceName,
    next: &Keyspace,
    version: Epoch,
) -> Result<Epoch, SendError> {
    for _ in 0..100 {
        match store.put_keyspace(keyspace, next, Expect::Version(version), &Fence::None).await {
            Ok(epoch) => return Ok(epoch),
            Err(e @ (StoreError::Unavailable { .. } | StoreError::Conflict { .. })) => {
                if let Ok(snapshot) = store.snapshot().await {
                    if snapshot.topology.keyspaces.get(keyspace) == Some(next) {
                        return Ok(snapshot.versions[keyspace]);
                    }
                    if matches!(e, StoreError::Conflict { .. }) {
                        return Err(format!("write lost: {e}").into());
                    }
                }
                // Back off before retrying against the remaining members.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err("etcd stayed unavailable".into())
}

/// Reads the watch until it has delivered `target`, reopening it from the
/// last delivered epoch whenever it fails (as a watcher does).
async fn drain_until(
    store: &EtcdStore,
    stream: &mut WatchStream,
    seen: &mut Vec<Epoch>,
    last: &mut Epoch,
    target: Epoch,
) -> Result<usize, SendError> {
    let mut reconnects = 0;
    while *last < target {
        match within(stream.next()).await? {
            Some(Ok(event)) => {
                *last = event.snapshot.topology.epoch;
                seen.push(*last);
            }
            Some(Err(e)) if e.is_transient() && reconnects < 50 => {
                reconnects += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                *stream = store.watch(*last);
            }
            Some(Err(e)) => return Err(format!("watch failed: {e}").into()),
            None if reconnects < 50 => {
                reconnects += 1;
                *stream = store.watch(*last);
            }
            None => return Err("watch keeps ending".into()),
        }
    }
    Ok(reconnects)
}

/// A three-member cluster; each member in turn is killed and restarted
/// while writes continue. The watch, reopened from its last epoch whenever
/// it fails, must see every written version exactly once, in order.
pub async fn watch_across_member_restarts() -> TestResult {
    let mut cluster = Some(tokio::task::spawn_blocking(|| EtcdCluster::start(3)).await??);
    let endpoints = cluster.as_ref().expect("started").endpoints();
    let store = EtcdStore::connect(EtcdConfig::new(endpoints, "t10")).await?;
    let users = name("users");
    let start = store.snapshot().await?.topology.epoch;
    let mut stream = store.watch(start);
    let mut current = keyspace(4, 4);
    let mut written = vec![store.put_keyspace(&users, &current, Expect::Absent, &Fence::None).await?];
    let (mut seen, mut last, mut reconnects) = (Vec::new(), start, 0);
    // The watch runs before the first member goes down.
    let first = written[0];
    reconnects += drain_until(&store, &mut stream, &mut seen, &mut last, first).await?;
    let write = |current: &mut Keyspace, step: usize| {
        *current = split_first(current, &format!("s{}", step % 4));
        current.clone()
    };
    for member in 0..3 {
        for phase in 0..3 {
            for step in 0..3 {
                let next = write(&mut current, member * 9 + phase * 3 + step);
                let version = *written.last().expect("written");
                written.push(write_through_outage(&store, &users, &next, version).await?);
            }
            let mut members = cluster.take().expect("cluster");
            members = tokio::task::spawn_blocking(move || {
                match phase {
                    0 => members.kill_member(member)?,
                    1 => members.restart_member(member)?,
                    _ => {}
                }
                Ok::<_, shardkit_tests::FixtureError>(members)
            })
            .await??;
            cluster = Some(members);
        }
        let target = *written.last().expect("written");
        reconnects += drain_until(&store, &mut stream, &mut seen, &mut last, target).await?;
    }
    eprintln!("member restarts: {} versions, {reconnects} watch reconnects", written.len());
    assert_eq!(seen, written, "every version once, in order");
    assert!(reconnects >= 1, "the member serving the watch was killed at some point");
    Ok(())
}
