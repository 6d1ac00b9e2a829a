//! Online moves end to end: shardd (in-process) on a real etcd, shards on
//! two real PostgreSQL servers (and SQLite files), services writing through
//! `ShardedPool` the whole time. Afterwards every row exists exactly once,
//! on its owner, with the last acknowledged content.

mod mover_support;

use std::time::Duration;

use mover_support::*;
use serde_json::json;
use shardd::{Config, Server, StoreKind};
use shardkit_tests::{EtcdServer, PostgresServer};
use shardlib::sql::{Credentials, ShardedPool, SqlError};

/// shardd on `etcd`, cluster `cluster`.
async fn shardd(etcd: &EtcdServer, cluster: &str) -> TestResult<shardd::Handle> {
    init_logs();
    let mut config = Config {
        store: StoreKind::Etcd,
        cluster: cluster.into(),
        listen: "127.0.0.1:0".parse()?,
        lease_ttl: shardd::config::HumanDuration::from_secs(2),
        ..Config::default()
    };
    config.etcd.endpoints = vec![etcd.endpoint()];
    config.mover.batch_rows = 2_000;
    let handle = Server::start(config).await?;
    let deadline = std::time::Instant::now() + DEADLINE;
    while !handle.is_leader() {
        if std::time::Instant::now() > deadline {
            return Err("shardd never became the leader".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(handle)
}

struct Setup {
    _etcd: EtcdServer,
    _pg: Vec<PostgresServer>,
    server: shardd::Handle,
    api: Api,
    shards: Vec<(&'static str, String)>,
    endpoint: String,
    cluster: String,
}

impl Setup {
    fn shard_list(&self) -> Vec<(&str, &str)> {
        self.shards.iter().map(|(id, dsn)| (*id, dsn.as_str())).collect()
    }
}

/// etcd, two PostgreSQL servers (s1 on the first, s2 and s3 on the second),
/// shardd, and keyspace `users` with `ranges`, preloaded with `rows` users.
async fn postgres_setup(cluster: &str, ranges: &[(&str, &str)], rows: i64) -> TestResult<Setup> {
    let etcd = blocking(EtcdServer::start).await?;
    let (a, b) = blocking(|| {
        let a = PostgresServer::start()?;
        let b = PostgresServer::start()?;
        a.create_database("s1")?;
        for db in ["s2", "s3"] {
            b.create_database(db)?;
        }
        Ok((a, b))
    })
    .await?;
    let shards = vec![("s1", a.dsn("s1")), ("s2", b.dsn("s2")), ("s3", b.dsn("s3"))];
    setup(etcd, vec![a, b], shards, cluster, ranges, rows).await
}

async fn setup(
    etcd: EtcdServer,
    pg: Vec<PostgresServer>,
    shards: Vec<(&'static str, String)>,
    cluster: &str,
    ranges: &[(&str, &str)],
    rows: i64,
) -> TestResult<Setup> {
    for (_, dsn) in &shards {
        create_users(dsn).await?;
    }
    // Preload each row on its owner.
    let topology_ranges: Vec<(shardlib::KeyRange, &str)> =
        ranges.iter().map(|(r, s)| Ok::<_, shardlib::range::RangeError>((r.parse()?, *s))).collect::<Result<_, _>>()?;
    for (shard, dsn) in &shards {
        let mine: Vec<i64> =
            (0..rows).filter(|id| topology_ranges.iter().any(|(r, s)| s == shard && r.contains(kid(*id)))).collect();
        preload(dsn, &mine).await?;
    }
    let server = shardd(&etcd, cluster).await?;
    let api = Api::new(server.url());
    let shard_refs: Vec<(&str, &str)> = shards.iter().map(|(id, dsn)| (*id, dsn.as_str())).collect();
    api.create_keyspace("users", keyspace(&shard_refs, ranges)).await?;
    let endpoint = etcd.endpoint();
    Ok(Setup { _etcd: etcd, _pg: pg, server, api, shards, endpoint, cluster: cluster.into() })
}

/// Runs `requests` (jobs, one after the other) under a workload of
/// `ops_per_second` starting from the acknowledged state `initial`, then
/// checks exactly-once placement. Returns the jobs and the final state.
async fn moves_under_writes(
    setup: &Setup,
    initial: &Model,
    ops_per_second: u64,
    requests: &[serde_json::Value],
) -> TestResult<(Vec<serde_json::Value>, Model)> {
    let (watcher, pools) = follow(&setup.endpoint, &setup.cluster, "writers").await?;
    let rows = initial.len() as i64 - 2_000;
    let spec = WorkloadSpec { keyspace: "users".into(), writers: 16, keys: 0..rows + 2_000, ops_per_second };
    let workload = Workload::start(pools.clone(), spec, initial);
    let mut jobs = Vec::new();
    for request in requests {
        let id = setup.api.create_job("users", request.clone()).await?;
        let job = setup.api.wait_finished(&id).await?;
        assert_eq!(job["status"], "succeeded", "job {id}: {job:#}");
        jobs.push(job);
    }
    // Writes continue on the new layout for a moment (bounded by ops, not time).
    let after = workload.ops.load(std::sync::atomic::Ordering::Relaxed) + 200;
    let deadline = std::time::Instant::now() + DEADLINE;
    while workload.ops.load(std::sync::atomic::Ordering::Relaxed) < after && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (model, ops, rate) = workload.stop().await?;
    eprintln!("workload: {ops} acknowledged operations at {rate:.0} ops/s");
    let topology = setup.server.store().snapshot().await?.topology;
    let rows_seen = check_exactly_once(&topology, "users", SEED, &setup.shard_list(), &model).await?;
    eprintln!("checked {rows_seen} rows: each exactly once, on its owner, as acknowledged");
    watcher.shutdown().await;
    Ok((jobs, model))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_under_a_thousand_writes_per_second_loses_and_duplicates_nothing() -> TestResult {
    let rows = 20_000;
    let setup = postgres_setup("t22-move", &[("-80", "s1"), ("80-", "s1")], rows).await?;
    let (jobs, _) =
        moves_under_writes(&setup, &start(rows), 1_600, &[json!({ "kind": "move", "ranges": ["80-"], "to": "s2" })])
            .await?;
    let job = &jobs[0];
    eprintln!("move: cutover {} ms, progress {}", job["cutover_ms"], job["progress"]);
    assert!(job["progress"]["rows_copied"].as_u64().unwrap_or(0) > 0);
    let topology = setup.server.store().snapshot().await?.topology;
    let ranges = serde_json::to_value(&topology.keyspaces["users"].partitioning)?;
    assert_eq!(ranges["ranges"][1], json!({ "range": "80-", "shard": "s2" }));
    setup.server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_at_the_median_then_merge_back_under_writes() -> TestResult {
    let rows = 6_000;
    let setup = postgres_setup("t22-split", &[("-", "s1")], rows).await?;
    let (jobs, model) = moves_under_writes(
        &setup,
        &start(rows),
        600,
        &[json!({ "kind": "split", "range": "-", "at": "median", "to": "s3" })],
    )
    .await?;
    let split_at = jobs[0]["split_at"].as_str().ok_or("split_at missing")?.to_owned();
    // The median of the data, not of the hash space: each half holds about half the rows.
    let topology = setup.server.store().snapshot().await?.topology;
    let ks = serde_json::to_value(&topology.keyspaces["users"].partitioning)?;
    assert_eq!(ks["ranges"].as_array().map(Vec::len), Some(2), "{ks}");
    let left = ks["ranges"][0]["range"].as_str().unwrap().to_owned();
    let right = ks["ranges"][1]["range"].as_str().unwrap().to_owned();
    assert_eq!(ks["ranges"][1]["shard"], "s3");
    let on_s3 = count(&setup.shards[2].1).await?;
    let on_s1 = count(&setup.shards[0].1).await?;
    let share = on_s3 as f64 / (on_s1 + on_s3) as f64;
    assert!((0.4..=0.6).contains(&share), "split at {split_at}: s1 {on_s1} rows, s3 {on_s3} rows");

    let (merged, _) =
        moves_under_writes(&setup, &model, 600, &[json!({ "kind": "merge", "ranges": [left, right] })]).await?;
    assert_eq!(merged[0]["status"], "succeeded");
    let topology = setup.server.store().snapshot().await?.topology;
    let ks = serde_json::to_value(&topology.keyspaces["users"].partitioning)?;
    assert_eq!(ks["ranges"], json!([{ "range": "-", "shard": "s1" }]));
    assert_eq!(count(&setup.shards[2].1).await?, 0, "the merge moved every row back to s1");
    setup.server.shutdown().await?;
    Ok(())
}

/// The preloaded rows plus 2,000 keys the writers may insert.
fn start(rows: i64) -> Model {
    let mut model = initial_model(0..rows);
    model.extend((rows..rows + 2_000).map(|id| (id, None)));
    model
}

async fn count(dsn: &str) -> TestResult<i64> {
    let pool = any_pool(dsn).await?;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM users").fetch_one(&pool).await?;
    pool.close().await;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_with_the_old_topology_is_fenced_and_writes_nothing_on_the_old_owner() -> TestResult {
    let rows = 2_000;
    let setup = postgres_setup("t22-stale", &[("-80", "s1"), ("80-", "s1")], rows).await?;
    // A client that loads the topology once and never follows it.
    let before = setup.server.store().snapshot().await?.topology;
    let stale = ShardedPool::new(&before, pool_options(), Credentials::none())?;
    let id = setup.api.create_job("users", json!({ "kind": "move", "ranges": ["80-"], "to": "s2" })).await?;
    let job = setup.api.wait_finished(&id).await?;
    assert_eq!(job["status"], "succeeded", "{job:#}");

    let moved_key = (rows..rows + 1_000).find(|id| kid(*id).0 >= 0x8000_0000_0000_0000).unwrap();
    let s1 = &setup.shards[0].1;
    let s1_before = count(s1).await?;
    match apply(&stale, "users", moved_key, Some("stale")).await {
        Err(SqlError::Fenced { shard, .. }) => assert_eq!(shard.as_str(), "s1"),
        other => panic!("a stale write must be fenced, got {other:?}"),
    }
    // Updates and deletes of moved rows are fenced too.
    let existing = (0..rows).find(|id| kid(*id).0 >= 0x8000_0000_0000_0000).unwrap();
    assert!(matches!(apply(&stale, "users", existing, None).await, Err(SqlError::Fenced { .. })));
    assert_eq!(count(s1).await?, s1_before);
    let pool = any_pool(s1).await?;
    let (on_old,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM users WHERE keyspace_id >= 0").fetch_one(&pool).await?;
    assert_eq!(on_old, 0, "zero rows of the moved range remain on the old owner");
    // Keys the old owner still owns are written normally.
    let kept = (rows..rows + 1_000).find(|id| kid(*id).0 < 0x8000_0000_0000_0000).unwrap();
    apply(&stale, "users", kept, Some("fine")).await?;
    setup.server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_shards_move_under_writes() -> TestResult {
    let rows = 3_000;
    let dir = tempfile::tempdir()?;
    let etcd = blocking(EtcdServer::start).await?;
    let shards = vec![
        ("s1", sqlite_dsn(dir.path(), "s1.db")),
        ("s2", sqlite_dsn(dir.path(), "s2.db")),
        ("s3", sqlite_dsn(dir.path(), "s3.db")),
    ];
    let setup = setup(etcd, Vec::new(), shards, "t22-sqlite", &[("-80", "s1"), ("80-", "s1")], rows).await?;
    moves_under_writes(&setup, &start(rows), 300, &[json!({ "kind": "move", "ranges": ["80-"], "to": "s2" })]).await?;
    setup.server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_refused_before_anything_changes() -> TestResult {
    let setup = postgres_setup("t22-bad", &[("-80", "s1"), ("80-", "s2")], 500).await?;
    let epoch = setup.server.store().snapshot().await?.topology.epoch;
    let cases = [
        (json!({ "kind": "move", "ranges": ["80-c0"], "to": "s3" }), 404, "range_not_found"),
        (json!({ "kind": "move", "ranges": ["-80"], "to": "s1" }), 400, "invalid_input"),
        (json!({ "kind": "move", "ranges": ["-80"], "to": "s9" }), 404, "shard_not_found"),
        (json!({ "kind": "split", "range": "-80", "at": "zz" }), 400, "invalid_input"),
        (json!({ "kind": "split", "range": "-80", "at": "90" }), 400, "invalid_input"),
        (json!({ "kind": "merge", "ranges": ["-80"] }), 400, "invalid_input"),
    ];
    for (request, status, code) in cases {
        let (got, body) = setup.api.post("/v1/keyspaces/users/jobs", &request).await?;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)), "{request}: {body}");
    }
    // A schema mismatch on the target: precheck fails, nothing changes.
    let s3 = &setup.shards[2].1;
    let pool = any_pool(s3).await?;
    sqlx::query("ALTER TABLE users ADD COLUMN extra TEXT").execute(&pool).await?;
    let (got, body) =
        setup.api.post("/v1/keyspaces/users/jobs", &json!({ "kind": "move", "ranges": ["-80"], "to": "s3" })).await?;
    assert_eq!(got, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("extra"), "{body}");
    // A table without a primary key.
    sqlx::query("ALTER TABLE users DROP COLUMN extra").execute(&pool).await?;
    sqlx::query("ALTER TABLE users DROP CONSTRAINT users_pkey").execute(&pool).await?;
    let (got, body) =
        setup.api.post("/v1/keyspaces/users/jobs", &json!({ "kind": "move", "ranges": ["-80"], "to": "s3" })).await?;
    assert_eq!(got, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("primary key"), "{body}");
    // A second job on a range already moving.
    let first = setup
        .api
        .create_job("users", json!({ "kind": "move", "ranges": ["80-"], "to": "s1", "rows_per_second": 1 }))
        .await?;
    let (got, body) =
        setup.api.post("/v1/keyspaces/users/jobs", &json!({ "kind": "move", "ranges": ["80-"], "to": "s3" })).await?;
    assert_eq!((got, body["error"]["code"].as_str()), (409, Some("range_busy")), "{body}");
    let (got, body) = setup.api.post(&format!("/v1/jobs/{first}/cancel"), &json!({})).await?;
    assert_eq!(got, 202, "{body}");
    let job = setup.api.wait_finished(&first).await?;
    assert_eq!(job["status"], "cancelled", "{job:#}");
    // Nothing but the cancelled job changed the topology.
    let after = setup.server.store().snapshot().await?.topology;
    let ks = serde_json::to_value(&after.keyspaces["users"].partitioning)?;
    assert_eq!(ks["ranges"], json!([{ "range": "-80", "shard": "s1" }, { "range": "80-", "shard": "s2" }]));
    assert!(after.epoch >= epoch);
    // No room: a target whose capacity_bytes the move would exceed.
    let (got, body) = setup
        .api
        .post(
            "/v1/keyspaces/users/shards",
            &json!({ "id": "s5", "primary": setup.shards[2].1, "capacity_bytes": 1000 }),
        )
        .await?;
    assert_eq!(got, 201, "{body}");
    sqlx::query("ALTER TABLE users ADD PRIMARY KEY (id)").execute(&pool).await?;
    let (got, body) =
        setup.api.post("/v1/keyspaces/users/jobs", &json!({ "kind": "move", "ranges": ["-80"], "to": "s5" })).await?;
    assert_eq!((got, body["error"]["code"].as_str()), (422, Some("precheck_failed")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or("").contains("no room on shard s5"), "{body}");
    // An unreachable database: 503 naming the shard, never the password.
    drop(pool);
    let (got, body) = setup
        .api
        .post("/v1/keyspaces/users/shards", &json!({ "id": "s4", "primary": "postgres://app:secretpw@127.0.0.1:1/x" }))
        .await?;
    assert_eq!(got, 201, "{body}");
    let (got, body) =
        setup.api.post("/v1/keyspaces/users/jobs", &json!({ "kind": "move", "ranges": ["-80"], "to": "s4" })).await?;
    assert_eq!((got, body["error"]["code"].as_str()), (503, Some("database_unavailable")), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("s4") && !message.contains("secretpw"), "{message}");
    setup.server.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn part_of_a_range_moving_back_narrows_the_old_fence() -> TestResult {
    let rows = 2_000;
    let setup = postgres_setup("t22-back", &[("-80", "s1"), ("80-", "s1")], rows).await?;
    let stale =
        ShardedPool::new(&setup.server.store().snapshot().await?.topology, pool_options(), Credentials::none())?;
    // 80- leaves s1 (s1 keeps a fence on 80-), is split on s2, and c0- comes back to s1.
    for request in [
        json!({ "kind": "move", "ranges": ["80-"], "to": "s2" }),
        json!({ "kind": "split", "range": "80-", "at": "c0" }),
        json!({ "kind": "move", "ranges": ["c0-"], "to": "s1" }),
    ] {
        let id = setup.api.create_job("users", request.clone()).await?;
        let job = setup.api.wait_finished(&id).await?;
        assert_eq!(job["status"], "succeeded", "{request}: {job:#}");
    }
    let (watcher, pools) = follow(&setup.endpoint, &setup.cluster, "after-back").await?;
    // Writes to c0- on s1, its owner again, go through: the old fence was narrowed.
    let back = (rows..rows + 1_000).find(|id| kid(*id).0 >= 0xc000_0000_0000_0000).unwrap();
    apply(&pools, "users", back, Some("home again")).await?;
    assert_eq!(pools.pool_for("users", &(back as u64))?.shard().as_str(), "s1");
    // 80-c0 stays fenced on s1 for a client that still routes it there.
    let away =
        (rows..rows + 1_000).find(|id| (0x8000_0000_0000_0000..0xc000_0000_0000_0000).contains(&kid(*id).0)).unwrap();
    assert!(matches!(apply(&stale, "users", away, Some("stale")).await, Err(SqlError::Fenced { .. })));
    watcher.shutdown().await;
    setup.server.shutdown().await?;
    Ok(())
}
